"""Document metadata: from a catalogue file in the documents folder where one exists,
else from the PDF's own metadata, else from the file name.

Two catalogue formats are read, both keyed by the PDF's file name:

* ``catalogue.csv`` (ours): ``file,title,organisation,year,url,language`` with a header
  row; every column but ``file`` may be empty.
* ``MANIFEST.tsv`` (as shipped with the shared corpora): tab-separated with a header row
  holding at least ``file``, and optionally ``title``, ``organisation``, ``year``, ``url``
  (or ``source_url``) and ``un_symbol`` (used as the title when there is no title; a row
  with a UN document symbol and no organisation is a UN document).

Where both exist, ``catalogue.csv`` wins field by field.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

CATALOGUE_FILE = "catalogue.csv"
MANIFEST_FILE = "MANIFEST.tsv"
CATALOGUE_COLUMNS = ["file", "title", "organisation", "year", "url", "language"]
_YEAR = re.compile(r"(?<!\d)(19[5-9]\d|20[0-4]\d)(?!\d)")
_KNOWN_ORGANISATIONS = {
    "unodc": "UNODC", "ilo": "ILO", "iom": "IOM", "unicef": "UNICEF", "ohchr": "OHCHR",
    "unhcr": "UNHCR", "osce": "OSCE", "saarc": "SAARC", "usdol": "US DOL", "usdhs": "US DHS",
    "un": "UN", "uk": "UK Government", "eu": "European Union", "oecd": "OECD", "undp": "UNDP",
}
# A UN document symbol as a file name ("A_80_48.en.pdf", "E_ICEF_2025_12.pdf", "DP-FPA_2025_1.pdf").
_UN_SYMBOL_FILE = re.compile(r"^(?:A|S|E|ST|DP|DP-FPA|CEB|CCPR|CRC|CEDAW|CAT|CERD|CMW|HRC)[_-](?:[A-Z]+[_-])*\d")
# The PDF's Author field names an organisation only when it says so ("Pacific Islands
# Forum", "OSCE"); most often it holds the person or program that made the file.
_ORGANISATION_WORD = re.compile(
    r"\b(?:office|organi[sz]ation|nations|council|committee|department|ministry|agency|fund|"
    r"programme|program|bureau|commission|institute|group|campaign|government|secretariat|"
    r"university|foundation|association|cent(?:re|er)|union|network|forum|alliance|coalition|"
    r"services?|society|board|authority|parliament|assembly|initiative|division|bank)\b",
    re.IGNORECASE,
)
_SOFTWARE_AUTHOR_WORDS = {"user", "admin", "administrator", "owner", "author", "unknown", "microsoft", "hp", "adobe"}


@dataclass
class CatalogueEntry:
    file: str
    title: str = ""
    organisation: str = ""
    year: int | None = None
    url: str = ""
    language: str = ""


def _parse_year(value: str | None) -> int | None:
    match = _YEAR.search(value or "")
    return int(match.group(1)) if match else None


def _read_rows(path: Path, delimiter: str) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        return [
            # Fields beyond the header (an unquoted comma) come under the key None as a list: ignored.
            {k.strip().lower(): (v or "").strip() for k, v in row.items() if k is not None}
            for row in csv.DictReader(handle, delimiter=delimiter)
        ]


def _entry_from_row(row: dict[str, str]) -> CatalogueEntry | None:
    name = Path(row.get("file", "")).name
    if not name:
        return None
    return CatalogueEntry(
        file=name,
        title=row.get("title") or row.get("un_symbol", ""),
        organisation=row.get("organisation") or row.get("organization", "") or ("UN" if row.get("un_symbol") else ""),
        year=_parse_year(row.get("year")),
        url=row.get("url") or row.get("source_url", ""),
        language=row.get("language", ""),
    )


def load_catalogue(folder: Path) -> dict[str, CatalogueEntry]:
    """All catalogue entries of a documents folder, by file name (may be empty)."""
    entries: dict[str, CatalogueEntry] = {}
    for name, delimiter in ((MANIFEST_FILE, "\t"), (CATALOGUE_FILE, ",")):
        path = Path(folder) / name
        if not path.is_file():
            continue
        for row in _read_rows(path, delimiter):
            entry = _entry_from_row(row)
            if entry is None:
                continue
            previous = entries.get(entry.file)
            if previous:  # the later file fills in and overrides field by field
                for field_name in ("title", "organisation", "year", "url", "language"):
                    value = getattr(entry, field_name)
                    if value:
                        setattr(previous, field_name, value)
            else:
                entries[entry.file] = entry
    return entries


def write_catalogue_entry(folder: Path, entry: CatalogueEntry) -> None:
    """Add or replace one row of ``catalogue.csv`` (used when staff edit metadata)."""
    path = Path(folder) / CATALOGUE_FILE
    rows: dict[str, dict[str, str]] = {}
    if path.is_file():
        for row in _read_rows(path, ","):
            if row.get("file"):
                rows[Path(row["file"]).name] = row
    rows[entry.file] = {
        "file": entry.file, "title": entry.title, "organisation": entry.organisation,
        "year": str(entry.year or ""), "url": entry.url, "language": entry.language,
    }
    temporary = path.with_suffix(".csv.tmp")
    with temporary.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CATALOGUE_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for name in sorted(rows):
            writer.writerow(rows[name])
    temporary.replace(path)


def title_from_file_name(name: str) -> str:
    stem = Path(name).stem
    words = re.sub(r"[_\-.]+", " ", stem).split()
    return " ".join(w if w.isupper() else w.capitalize() for w in words) or name


def organisation_from_file_name(name: str) -> str:
    if _UN_SYMBOL_FILE.match(Path(name).stem):
        return "UN"
    first = re.split(r"[_\-. ]+", Path(name).stem.lower())[0]
    return _KNOWN_ORGANISATIONS.get(first, "")


def organisation_from_author(author: str) -> tuple[str, str]:
    """What the PDF's Author field says of the organisation: ``(named, acronym)``.

    ``named`` is the field when it names an organisation ("Pacific Islands Forum");
    ``acronym`` when it is a bare acronym ("OSCE"), weaker evidence than a known file
    name.  A person ("David Haken"), a login ("jsmith", "Erica.Deel") or a program
    ("DGAACS User") gives neither.
    """
    author = " ".join(author.split())
    words = author.split()
    if len(author) < 2 or any(w.lower().strip(".") in _SOFTWARE_AUTHOR_WORDS for w in words):
        return "", ""
    if _ORGANISATION_WORD.search(author):
        return author, ""
    if len(words) == 1 and author.isalpha() and author.isupper() and len(author) <= 8:
        return "", author
    return "", ""


def describe(name: str, entry: CatalogueEntry | None, pdf_info: dict[str, str]) -> dict:
    """Title, organisation, year, url and language for a file, by order of trust."""
    entry = entry or CatalogueEntry(file=name)
    pdf_title = pdf_info.get("title", "")
    if pdf_title.lower().endswith((".doc", ".docx", ".pdf", ".indd")) or len(pdf_title) < 4:
        pdf_title = ""  # file names left in the PDF's title field are no title
    named, acronym = organisation_from_author(pdf_info.get("author", ""))
    return {
        "title": entry.title or pdf_title or title_from_file_name(name),
        "organisation": entry.organisation or named or organisation_from_file_name(name) or acronym,
        "year": entry.year or _parse_year(pdf_info.get("year")) or _parse_year(name),
        "url": entry.url,
        "language": entry.language or "en",
    }
