"""Document metadata: ``catalogue.csv``, ``MANIFEST.tsv`` (the shared corpora's format),
the csv overriding the manifest field by field, then the PDF's own metadata, then the
file name."""

from __future__ import annotations

import io

import pytest
from pypdf import PdfWriter

from conftest import CORPUS, make_pdf
from ingest.catalogue import (
    CatalogueEntry,
    describe,
    load_catalogue,
    organisation_from_file_name,
    title_from_file_name,
    write_catalogue_entry,
)
from ingest.reader import read_pdf

MANIFEST_HEADER = [
    "file", "organisation", "title", "year", "pages", "bytes", "sha256",
    "source_repo", "source_path", "source_commit", "text_chars",
]


def write_manifest(folder, rows: list[dict]) -> None:
    lines = ["\t".join(MANIFEST_HEADER)]
    for row in rows:
        lines.append("\t".join(str(row.get(column, "")) for column in MANIFEST_HEADER))
    (folder / "MANIFEST.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_csv(folder, text: str, *, bom: bool = False) -> None:
    (folder / "catalogue.csv").write_text(("\ufeff" if bom else "") + text, encoding="utf-8")


# --------------------------------------------------------------------------------------
# catalogue.csv
# --------------------------------------------------------------------------------------


def test_catalogue_csv_is_read(tmp_path):
    write_csv(
        tmp_path,
        "file,title,organisation,year,url,language\n"
        "ilo-fisheries.pdf,Caught at Sea: Forced Labour in Fisheries,ILO,2013,https://ilo.org/caught,en\n"
        'unodc-glotip.pdf,"Global Report on Trafficking in Persons, 2024",UNODC,2024,,\n',
    )
    entries = load_catalogue(tmp_path)
    assert set(entries) == {"ilo-fisheries.pdf", "unodc-glotip.pdf"}
    fisheries = entries["ilo-fisheries.pdf"]
    assert fisheries == CatalogueEntry(
        file="ilo-fisheries.pdf", title="Caught at Sea: Forced Labour in Fisheries", organisation="ILO",
        year=2013, url="https://ilo.org/caught", language="en",
    )
    assert entries["unodc-glotip.pdf"].title == "Global Report on Trafficking in Persons, 2024"
    assert entries["unodc-glotip.pdf"].url == ""


def test_catalogue_csv_with_byte_order_mark_odd_header_and_paths(tmp_path):
    write_csv(
        tmp_path,
        " File , Title ,ORGANISATION,Year\n"
        "reports/iom-returns.pdf,  Return and Reintegration  ,IOM,published 2021\n",
        bom=True,
    )
    entry = load_catalogue(tmp_path)["iom-returns.pdf"]
    assert (entry.title, entry.organisation, entry.year) == ("Return and Reintegration", "IOM", 2021)


def test_american_spelling_of_organisation(tmp_path):
    write_csv(tmp_path, "file,title,organization\na.pdf,A Title,UNICEF\n")
    assert load_catalogue(tmp_path)["a.pdf"].organisation == "UNICEF"


def test_rows_without_a_file_name_and_unreadable_years_are_harmless(tmp_path):
    write_csv(tmp_path, "file,title,year\n,Orphan row,2020\nb.pdf,Undated,n.d.\n")
    entries = load_catalogue(tmp_path)
    assert list(entries) == ["b.pdf"]
    assert entries["b.pdf"].year is None


def test_a_row_with_an_unquoted_comma_does_not_stop_the_catalogue(tmp_path):
    """Staff edit catalogue.csv by hand; a title with an unquoted comma gives a row with
    more fields than the header.  The other rows must still be read (and ingestion must
    not crash on it)."""
    write_csv(
        tmp_path,
        "file,title,organisation,year\n"
        "a.pdf,Trafficking, a global report,UNODC,2020\n"
        "b.pdf,Child Labour in Cocoa,UNICEF,2021\n",
    )
    entries = load_catalogue(tmp_path)
    assert entries["b.pdf"].title == "Child Labour in Cocoa"
    assert entries["b.pdf"].organisation == "UNICEF"
    assert "a.pdf" in entries


def test_no_catalogue_at_all(tmp_path):
    assert load_catalogue(tmp_path) == {}


# --------------------------------------------------------------------------------------
# MANIFEST.tsv
# --------------------------------------------------------------------------------------


def test_manifest_in_the_shared_corpus_format_is_read(tmp_path):
    write_manifest(
        tmp_path,
        [
            {
                "file": "unodc-glotip-2024-ch2-africa.pdf", "organisation": "UNODC",
                "title": "Global Report on Trafficking in Persons 2024, Chapter 2: Trafficking in persons in and from Africa; a global responsibility",
                "year": 2024, "pages": 45, "bytes": 3018410, "sha256": "cc9eeec6", "source_repo": "x/y",
                "source_path": "data/pdf/GLOTIP2024_Chapter_2.pdf", "source_commit": "bc8d5e67",
                "text_chars": "yes (157846 chars; 1/45 pages <50 chars)",
            },
            {
                "file": "usdol-ilab-findings-2021-ghana.pdf", "organisation": "US DOL (ILAB)",
                "title": "2021 Findings on the Worst Forms of Child Labor: Ghana", "year": 2022,
            },
        ],
    )
    entries = load_catalogue(tmp_path)
    glotip = entries["unodc-glotip-2024-ch2-africa.pdf"]
    assert glotip.organisation == "UNODC" and glotip.year == 2024
    assert glotip.title.startswith("Global Report on Trafficking in Persons 2024, Chapter 2")
    ghana = entries["usdol-ilab-findings-2021-ghana.pdf"]
    assert (ghana.organisation, ghana.year) == ("US DOL (ILAB)", 2022)


def test_manifest_symbol_and_source_url_columns(tmp_path):
    (tmp_path / "MANIFEST.tsv").write_text(
        "file\tun_symbol\tsource_url\tyear\n"
        "s-2025-85.pdf\tS/2025/85\thttps://docs.un.org/S/2025/85\t2025\n",
        encoding="utf-8",
    )
    entry = load_catalogue(tmp_path)["s-2025-85.pdf"]
    assert entry.title == "S/2025/85"
    assert entry.url == "https://docs.un.org/S/2025/85"
    assert entry.organisation == "UN"  # a UN document symbol: a UN document


@pytest.mark.skipif(not (CORPUS / "MANIFEST.tsv").is_file(), reason="the shared corpus is absent")
def test_the_shared_corpus_manifest():
    entries = load_catalogue(CORPUS)
    pdfs = sorted(p.name for p in CORPUS.glob("*.pdf"))
    assert sorted(entries) == pdfs
    assert all(e.title and e.organisation and e.year for e in entries.values())
    assert entries["saarc-convention-trafficking-women-children-prostitution-2002.pdf"].organisation == "SAARC"


# --------------------------------------------------------------------------------------
# both: the csv wins field by field
# --------------------------------------------------------------------------------------


def test_catalogue_csv_overrides_the_manifest_field_by_field(tmp_path):
    write_manifest(
        tmp_path,
        [
            {"file": "a.pdf", "organisation": "IOM", "title": "Manifest Title A", "year": 2019},
            {"file": "b.pdf", "organisation": "ILO", "title": "Manifest Title B", "year": 2018},
        ],
    )
    write_csv(
        tmp_path,
        "file,title,organisation,year,url,language\n"
        "a.pdf,Corrected Title A,,,https://example.org/a,fr\n"  # empty fields keep the manifest's
        "c.pdf,Only In Csv,UNHCR,2022,,\n",
    )
    entries = load_catalogue(tmp_path)
    a = entries["a.pdf"]
    assert (a.title, a.organisation, a.year, a.url, a.language) == (
        "Corrected Title A", "IOM", 2019, "https://example.org/a", "fr"
    )
    assert entries["b.pdf"].title == "Manifest Title B"
    assert entries["c.pdf"].organisation == "UNHCR"


def test_write_catalogue_entry_adds_and_replaces_rows(tmp_path):
    write_manifest(tmp_path, [{"file": "a.pdf", "organisation": "IOM", "title": "From Manifest", "year": 2019}])
    write_catalogue_entry(tmp_path, CatalogueEntry(file="a.pdf", title="Staff Title", organisation="IOM", year=2020))
    write_catalogue_entry(tmp_path, CatalogueEntry(file="b.pdf", title="Second", organisation="ILO"))
    write_catalogue_entry(tmp_path, CatalogueEntry(file="a.pdf", title="Staff Title, revised", organisation="IOM", year=2020))
    entries = load_catalogue(tmp_path)
    assert entries["a.pdf"].title == "Staff Title, revised"
    assert entries["a.pdf"].year == 2020
    assert entries["b.pdf"].organisation == "ILO"
    assert (tmp_path / "catalogue.csv").read_text(encoding="utf-8").splitlines()[0] == (
        "file,title,organisation,year,url,language"
    )
    assert not list(tmp_path.glob("*.tmp"))


# --------------------------------------------------------------------------------------
# falling back: catalogue, then the PDF's metadata, then the file name
# --------------------------------------------------------------------------------------


def _pdf_info(tmp_path, name: str, *, strip_info: bool = False, **kwargs) -> dict:
    path = make_pdf(tmp_path / name, ["Recruiters confiscated passports on arrival at the worksite."], **kwargs)
    data = path.read_bytes()
    if strip_info:
        writer = PdfWriter(clone_from=io.BytesIO(data))
        writer.metadata = None
        out = io.BytesIO()
        writer.write(out)
        data = out.getvalue()
    return read_pdf(data).info


def test_catalogue_entry_wins_over_pdf_metadata(tmp_path):
    info = _pdf_info(tmp_path, "ilo-2013.pdf", title="Untitled Draft v3", author="jsmith")
    entry = CatalogueEntry(file="ilo-2013.pdf", title="Caught at Sea", organisation="ILO", year=2013, url="https://ilo.org")
    described = describe("ilo-2013.pdf", entry, info)
    assert described == {
        "title": "Caught at Sea", "organisation": "ILO", "year": 2013, "url": "https://ilo.org", "language": "en",
    }


def test_pdf_metadata_when_there_is_no_catalogue_entry(tmp_path):
    info = _pdf_info(tmp_path, "scan0042.pdf", title="Trafficking in Persons in Fisheries", author="Pacific Islands Forum")
    described = describe("scan0042.pdf", None, info)
    assert described["title"] == "Trafficking in Persons in Fisheries"
    assert described["organisation"] == "Pacific Islands Forum"
    assert described["year"] == int(info["year"])


def test_catalogue_fields_left_empty_fall_back_to_the_pdf(tmp_path):
    info = _pdf_info(tmp_path, "x.pdf", title="Title From The PDF", author="OSCE")
    described = describe("x.pdf", CatalogueEntry(file="x.pdf", year=2016), info)
    assert (described["title"], described["organisation"], described["year"]) == ("Title From The PDF", "OSCE", 2016)


def test_file_name_when_the_pdf_has_no_metadata(tmp_path):
    info = _pdf_info(tmp_path, "unodc-forced-labour-fisheries-2019.pdf", strip_info=True)
    assert info == {}
    described = describe("unodc-forced-labour-fisheries-2019.pdf", None, info)
    assert described["title"] == "Unodc Forced Labour Fisheries 2019"
    assert described["organisation"] == "UNODC"
    assert described["year"] == 2019
    assert described["language"] == "en"


@pytest.mark.parametrize("author", ["David Haken", "Theresa Nguyen DUBITSKY", "jsmith", "Erica.Deel", "DGAACS User", "Unknown"])
def test_a_person_login_or_program_in_the_author_field_is_no_organisation(tmp_path, author):
    # UN documents often carry the name of whoever made the PDF; the file name says more
    info = _pdf_info(tmp_path, "A_80_48.en.pdf", title="Report of the Committee", author=author)
    assert describe("A_80_48.en.pdf", None, info)["organisation"] == "UN"
    assert describe("annual-report.pdf", None, info)["organisation"] == ""


def test_a_known_file_name_beats_a_bare_acronym_in_the_author_field(tmp_path):
    info = _pdf_info(tmp_path, "x.pdf", title="Title From The PDF", author="ODS")
    assert describe("unodc-report-2020.pdf", None, info)["organisation"] == "UNODC"
    assert describe("report.pdf", None, info)["organisation"] == "ODS"


def test_a_file_name_left_in_the_pdf_title_is_not_a_title(tmp_path):
    info = _pdf_info(tmp_path, "iom_return_study.pdf", title="Final_report_v2.docx")
    assert describe("iom_return_study.pdf", None, info)["title"] == "Iom Return Study"


@pytest.mark.parametrize(
    "name, title, organisation",
    [
        ("usdol-ilab-findings-2021-ghana.pdf", "Usdol Ilab Findings 2021 Ghana", "US DOL"),
        ("ILO_Forced_Labour_Report.pdf", "ILO Forced Labour Report", "ILO"),
        ("some report.pdf", "Some Report", ""),
        ("A_39_361.en.pdf", "A 39 361 En", "UN"),
        ("E_ICEF_2025_12.pdf", "E ICEF 2025 12", "UN"),
        ("DP-FPA_2025_1.pdf", "DP FPA 2025 1", "UN"),
        ("E_learning_2020.pdf", "E Learning 2020", ""),
    ],
)
def test_title_and_organisation_from_file_names(name, title, organisation):
    assert title_from_file_name(name) == title
    assert organisation_from_file_name(name) == organisation
