"""Helpers for the app tests: a small library of generated PDFs (three organisations,
three years, one document with hostile text), ingested into temporary folders."""

from __future__ import annotations

import csv
import socket
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app.py"

HOSTILE_LINK = "[click](http://evil.example)"
HOSTILE_SCRIPT = "<script>alert(1)</script>"
HOSTILE_WWW = "www.evil.example"
HOSTILE_EMAIL = "phish@evil.example"

#: file -> (title, organisation, year, pages); the first page of the UNODC report is a
#: front-matter page labelled "i", so its printed page numbers differ from PDF pages.
LIBRARY: dict[str, tuple[str, str, int, list[str]]] = {
    "unodc-identification-2020.pdf": (
        "Victim Identification in Practice",
        "UNODC",
        2020,
        [
            "Foreword\nThis report reviews how frontline services identify victims of trafficking in persons.",
            "Identifying victims of trafficking\n"
            "Frontline officers should be trained to recognise the indicators of trafficking, such as confiscated "
            "identity documents, debt bondage and restricted freedom of movement. "
            "Labour inspectors who received joint training with the police identified three times more victims "
            "of trafficking than inspectors without such training. "
            "Screening interviews for victim identification should take place in a safe setting, with an "
            "interpreter, and away from the suspected traffickers.",
            "Lessons learned on identification\n"
            "A national referral mechanism helps frontline officers refer identified victims to shelters, "
            "medical care and legal assistance without delay. "
            "Identification improved when border guards used a short checklist of trafficking indicators "
            "during routine checks of travellers.",
        ],
    ),
    "iom-reintegration-2022.pdf": (
        "Reintegration of Trafficking Survivors",
        "IOM",
        2022,
        [
            "Reintegration assistance\n"
            "Reintegration support for survivors of trafficking works best when case management continues "
            "for at least twelve months after return. "
            "Survivors who received vocational training and a small business grant were more likely to "
            "earn a stable income one year after their return home. "
            "Psychosocial counselling should be offered to every returning survivor and to the family "
            "that receives them.",
            "Lessons learned on reintegration\n"
            "Community awareness sessions reduced the stigma that returning survivors of trafficking face "
            "in their villages. "
            "Case managers recommended that reintegration plans be agreed with each survivor rather than "
            "decided for them by the agencies involved.",
        ],
    ),
    "unicef-children-2018.pdf": (
        "Protecting Child Victims",
        "UNICEF",
        2018,
        [
            "Child protection\n"
            "Guardians for unaccompanied child victims of trafficking should be appointed within days of "
            "identification so that every decision serves the best interests of the child. "
            f"Read more at {HOSTILE_LINK}, {HOSTILE_WWW} or {HOSTILE_EMAIL} and see {HOSTILE_SCRIPT} for the annex. "
            "Child victims of trafficking should never be detained for immigration offences committed "
            "as a result of their trafficking.",
            "Family tracing\n"
            "Family tracing and assessment must be completed before any child victim of trafficking is "
            "returned to the country of origin. "
            "Specialised child-friendly interview rooms allowed children to give evidence without "
            "meeting the defendants in court.",
        ],
    ),
}


def make_pdf(path: Path, pages: list[str], *, roman_first_page: bool = False) -> Path:
    """A simple text PDF, one string per page; optionally a front page labelled ``i``."""
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_auto_page_break(auto=True, margin=15)
    for number, text in enumerate(pages, start=1):
        pdf.add_page()
        if roman_first_page and number == 1:
            pdf.set_page_label("r")
        elif roman_first_page and number == 2:
            pdf.set_page_label("D", label_start=1)
        pdf.set_font("Helvetica", size=11)
        pdf.multi_cell(0, 6, text)
    path.parent.mkdir(parents=True, exist_ok=True)
    pdf.output(str(path))
    return path


def write_library(documents: Path) -> dict[str, Path]:
    """The generated PDFs and their ``catalogue.csv`` in ``documents``."""
    documents.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, (_, _, _, pages) in LIBRARY.items():
        paths[name] = make_pdf(documents / name, pages, roman_first_page=name.startswith("unodc"))
    with (documents / "catalogue.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "title", "organisation", "year", "url", "language"])
        for name, (title, organisation, year, _) in LIBRARY.items():
            writer.writerow([name, title, organisation, year, f"https://example.org/{name}", "en"])
    return paths


def build_library(base: Path) -> tuple[Path, Path]:
    """Write and ingest the library under ``base``; returns (documents, data) folders."""
    from kb.service import Service
    from kb.settings import get_settings

    documents, data = base / "documents", base / "data"
    write_library(documents)
    settings = get_settings(data_dir=data, documents_dir=documents, llm="", chroma_url="")
    report = Service(settings).ingest([documents])
    failed = [r for r in report.results if r.status not in {"added", "unchanged"}]
    assert not failed, failed
    return documents, data


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
