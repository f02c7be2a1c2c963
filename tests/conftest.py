"""Shared fixtures: settings on temporary folders, PDFs made by the tests themselves,
and the real shared corpus (skipped with a reason where it is absent)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
# The ONNX export of the model (the default backend) is made once and shared by every test
# (and every test run on this machine); tests of the export itself use folders of their own.
os.environ.setdefault("KB_MODELS_DIR", str(Path(tempfile.gettempdir()) / f"kb-test-models-{os.getuid()}"))

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CORPUS = SHARED / "corpus"
DEV_QUESTIONS = SHARED / "eval" / "dev.jsonl"


def make_pdf(path: Path, pages: list[str], *, header: str = "", footer: str = "", title: str = "", author: str = "") -> Path:
    """Write a simple text PDF: one string per page (``\\n`` for new lines).

    ``header``/``footer`` are repeated on every page (``{n}`` becomes the page number).
    """
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_auto_page_break(auto=False)
    if title:
        pdf.set_title(title)
    if author:
        pdf.set_author(author)
    for number, text in enumerate(pages, start=1):
        pdf.add_page()
        pdf.set_font("Helvetica", size=11)
        if header:
            pdf.set_xy(10, 8)
            pdf.cell(0, 6, header.format(n=number))
        pdf.set_xy(10, 20)
        pdf.multi_cell(0, 6, text)
        if footer:
            pdf.set_xy(10, 280)
            pdf.cell(0, 6, footer.format(n=number))
    path.parent.mkdir(parents=True, exist_ok=True)
    pdf.output(str(path))
    return path


def ingest_with_cli(base: Path, write_documents, **extra_env: str) -> dict[str, str]:
    """Write a library into ``base/documents`` (``write_documents(folder)``), ingest it with
    ``kb ingest`` in this process, and return the ``KB_*`` variables that point at it."""
    from kb.cli import main

    folder = base / "documents"
    folder.mkdir()
    write_documents(folder)
    env = {"KB_DATA_DIR": str(base / "data"), "KB_DOCUMENTS_DIR": str(folder), "KB_CHROMA_URL": "", "KB_LLM": "", **extra_env}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        assert main(["ingest", "--json"]) == 0
    return env


@pytest.fixture
def settings(tmp_path, monkeypatch):
    """Settings whose data and documents folders are fresh temporary folders."""
    from kb.settings import get_settings

    data = tmp_path / "data"
    documents = tmp_path / "documents"
    documents.mkdir()
    monkeypatch.setenv("KB_DATA_DIR", str(data))
    monkeypatch.setenv("KB_DOCUMENTS_DIR", str(documents))
    monkeypatch.delenv("KB_CHROMA_URL", raising=False)
    monkeypatch.delenv("KB_LLM", raising=False)
    return get_settings()


@pytest.fixture
def corpus() -> Path:
    if not CORPUS.is_dir():
        pytest.skip(f"the shared corpus is not at {CORPUS}")
    return CORPUS


@pytest.fixture
def dev_questions() -> Path:
    if not DEV_QUESTIONS.is_file():
        pytest.skip(f"the development questions are not at {DEV_QUESTIONS}")
    return DEV_QUESTIONS
