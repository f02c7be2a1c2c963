"""The ``kb`` command: JSON output schemas and exit statuses of ingest, ask, stats,
search and remove, run in-process through ``kb.cli.main``; and the installed console
script run once as a real process."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, ingest_with_cli, make_pdf
from ingest.pipeline import ingest_lock
from kb.cli import main
from kb.ledger import Ledger
from kb.verify import found_in, verify_against_pdf
from test_pipeline import COCOA, FISHERIES, ONLINE, with_page_labels, write_library

SUMMARY_KEYS = {"added", "updated", "unchanged", "removed", "duplicate", "failed", "pages", "chunks", "embedded", "seconds"}
FILE_KEYS = {"file", "status", "doc_id", "pages", "chunks", "reason", "warnings"}
CITATION_KEYS = {"n", "doc_id", "file", "title", "organisation", "year", "page", "page_label", "text", "score", "quote"}


def run(capsys, *argv: str) -> tuple[int, object]:
    """``kb ARGV`` in this process: exit status and the parsed JSON it printed."""
    capsys.readouterr()
    status = main(list(argv))
    out = capsys.readouterr().out
    return status, json.loads(out) if "--json" in argv else out


@pytest.fixture(scope="module")
def library_env(tmp_path_factory):
    """A library ingested once through the command line; tests point KB_* at it."""
    return ingest_with_cli(tmp_path_factory.mktemp("cli-library"), write_library)


@pytest.fixture
def library(library_env, monkeypatch, capsys):
    for key, value in library_env.items():
        monkeypatch.setenv(key, value)
    capsys.readouterr()
    return Path(library_env["KB_DATA_DIR"])


# ======================================================================================
# kb ingest
# ======================================================================================


def test_ingest_json_schema(settings, capsys):
    folder = settings.documents_dir
    make_pdf(folder / "cocoa.pdf", COCOA)
    make_pdf(folder / "online.pdf", ONLINE)

    status, output = run(capsys, "ingest", "--json")  # default: the documents folder
    assert status == 0
    assert set(output) == {"summary", "files", "repaired", "older_version_note"}
    assert output["older_version_note"] == ""  # read by this version
    assert set(output["summary"]) == SUMMARY_KEYS
    assert output["summary"]["added"] == 2 and output["summary"]["failed"] == 0
    assert output["summary"]["embedded"] == output["summary"]["chunks"] > 0
    assert isinstance(output["summary"]["seconds"], (int, float))
    assert output["repaired"] == []
    for row in output["files"]:
        assert set(row) == FILE_KEYS
        assert row["status"] == "added" and len(row["doc_id"]) == 64 and row["pages"] == 2 and row["chunks"] >= 1
    assert {row["file"] for row in output["files"]} == {"cocoa.pdf", "online.pdf"}

    status, again = run(capsys, "ingest", str(folder), "--json")
    assert status == 0
    assert again["summary"]["embedded"] == 0 and again["summary"]["unchanged"] == 2


def test_ingest_exits_1_when_a_file_failed(settings, capsys):
    folder = settings.documents_dir
    make_pdf(folder / "cocoa.pdf", COCOA)
    (folder / "empty.pdf").write_bytes(b"")
    (folder / "page.pdf").write_bytes(b"<html><body>404</body></html>")

    status, output = run(capsys, "ingest", "--json")
    assert status == 1
    assert output["summary"]["failed"] == 2 and output["summary"]["added"] == 1
    reasons = {row["file"]: row["reason"] for row in output["files"] if row["status"] == "failed"}
    assert reasons == {"empty.pdf": "empty file (0 bytes)", "page.pdf": "not a PDF: the content is an HTML page"}

    status, text = run(capsys, "ingest")  # the plain report names each failure and its reason
    assert status == 1
    assert "empty.pdf: empty file (0 bytes)" in text
    assert "0 added" in text and "2 failed" in text


def test_ingest_exits_2_while_another_ingest_runs(settings, capsys):
    make_pdf(settings.documents_dir / "cocoa.pdf", COCOA)
    with ingest_lock(settings.lock_path):
        assert main(["ingest", "--json"]) == 2
    assert "another ingest is already running" in capsys.readouterr().err


# ======================================================================================
# kb ask
# ======================================================================================


def test_ask_json_schema_and_citations(library, capsys):
    question = "Who kept the passports of the fishing crews?"
    status, output = run(capsys, "ask", question, "--json")
    assert status == 0
    assert {"question", "answer", "citations", "abstained"} <= set(output)
    assert output["question"] == question
    assert output["abstained"] is False
    assert isinstance(output["answer"], str) and "[1]" in output["answer"]
    citations = output["citations"]
    assert citations
    assert [c["n"] for c in citations] == list(range(1, len(citations) + 1))
    ledger = Ledger(library / "ledger.sqlite")
    try:
        for citation in citations:
            assert CITATION_KEYS <= set(citation)
            assert isinstance(citation["page"], int) and citation["page"] >= 1
            assert isinstance(citation["page_label"], str)
            assert isinstance(citation["score"], float)
            assert len(citation["doc_id"]) == 64
            assert citation["quote"] and f"[{citation['n']}]" in output["answer"]
            # page is the 1-based PDF page holding the quote; page_label is what is printed on it
            assert found_in(citation["quote"], ledger.page_text(citation["doc_id"], citation["page"]))
            assert citation["page_label"] == ledger.page_label(citation["doc_id"], citation["page"])
            assert citation["quote"].split(" … ")[0] in citation["text"]
        fisheries = [c for c in citations if c["file"] == "fisheries.pdf"]
        assert fisheries, "the answer should come from the fisheries report"
        for citation in fisheries:
            assert citation["page_label"] == str(64 + citation["page"])  # labels start at 65
            assert (citation["title"], citation["organisation"], citation["year"]) == (
                "Forced Labour on Distant-Water Fishing Vessels", "ILO", 2019,
            )
            pdf = Path(os.environ["KB_DOCUMENTS_DIR"]) / "fisheries.pdf"
            assert verify_against_pdf(pdf, citation["page"], citation["quote"])
        assert any("passports" in c["quote"] for c in fisheries)
    finally:
        ledger.close()


def test_ask_with_a_filter(library, capsys):
    status, output = run(capsys, "ask", "What helped children stay in school?", "--organisation", "UNICEF", "--json")
    assert status == 0
    assert output["citations"] and {c["organisation"] for c in output["citations"]} == {"UNICEF"}


def test_ask_abstains_when_nothing_answers(library, capsys):
    status, output = run(capsys, "ask", "What is the boiling point of mercury in kelvin?", "--json")
    assert status == 0
    assert output["abstained"] is True
    assert output["citations"] == []


def test_ask_on_an_empty_library(settings, capsys):
    status, output = run(capsys, "ask", "What works against forced labour?", "--json")
    assert status == 0
    assert output["abstained"] is True and output["citations"] == []


def test_plain_ask_prints_sources_with_printed_page(library, capsys):
    status, text = run(capsys, "ask", "Who kept the passports of the fishing crews?")
    assert status == 0
    assert "Sources:" in text
    assert re.search(
        r"\[1\] ILO, Forced Labour on Distant-Water Fishing Vessels \(2019\), p\. 6[5-7] \(PDF page [1-3]\) — fisheries\.pdf",
        text,
    ), text


# ======================================================================================
# kb search, kb stats
# ======================================================================================


def test_search_json(library, capsys):
    status, output = run(capsys, "search", "school meals for families in cocoa villages", "--k", "3", "--json")
    assert status == 0
    assert output["query"] == "school meals for families in cocoa villages"
    assert 1 <= len(output["passages"]) <= 3
    top = output["passages"][0]
    assert top["file"] == "cocoa.pdf" and top["organisation"] == "UNICEF"
    assert {"n", "doc_id", "page", "page_label", "text", "score", "chunk_id"} <= set(top)


def test_stats_json(settings, capsys):
    folder = settings.documents_dir
    write_library(folder)
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4\n%%EOF")
    assert main(["ingest", "--json"]) == 1

    status, stats = run(capsys, "stats", "--json")
    assert status == 0
    assert (stats["documents"], stats["pages"]) == (3, 7)
    assert stats["chunks"] == sum(o["chunks"] for o in stats["by_organisation"].values()) >= 3
    assert set(stats["by_organisation"]) == {"ILO", "UNICEF", "UNODC"}
    assert stats["by_organisation"]["ILO"]["documents"] == 1 and stats["by_organisation"]["ILO"]["pages"] == 3
    assert set(stats["by_organisation"]["UNICEF"]) == {"documents", "pages", "chunks"}
    (failed,) = stats["failed"]
    assert failed["file"] == "broken.pdf" and failed["path"] == str(folder / "broken.pdf")
    assert failed["reason"].startswith("corrupt")
    assert stats["data_dir"] == str(settings.data_dir)

    status, text = run(capsys, "stats")
    assert "3 documents, 7 pages" in text and "broken.pdf: corrupt" in text


# ======================================================================================
# kb remove
# ======================================================================================


def test_remove(settings, capsys):
    folder = settings.documents_dir
    make_pdf(folder / "cocoa.pdf", COCOA)
    make_pdf(folder / "online.pdf", ONLINE)
    assert main(["ingest", "--json"]) == 0

    status, output = run(capsys, "remove", "online.pdf", "--json")
    assert (status, output) == (0, {"removed": ["online.pdf"]})
    assert not (folder / "online.pdf").exists()
    assert [p.name.endswith("-online.pdf") for p in (settings.data_dir / "removed").iterdir()] == [True]
    status, stats = run(capsys, "stats", "--json")
    assert stats["documents"] == 1

    status, output = run(capsys, "remove", "online.pdf", "--json")
    assert status == 1 and output["removed"] == [] and "no document matches" in output["error"]
    assert main(["remove", "nothing-like-this.pdf"]) == 1
    assert "kb remove: no document matches" in capsys.readouterr().err


# ======================================================================================
# the installed console script
# ======================================================================================


def test_console_script_runs_as_a_process(settings, capsys):
    script = Path(sys.executable).with_name("kb")
    if not script.is_file():
        script = REPO / ".venv" / "bin" / "kb"
    if not script.is_file():
        pytest.skip("the kb console script is not installed")
    folder = settings.documents_dir
    with_page_labels(make_pdf(folder / "fisheries.pdf", FISHERIES), 65)
    assert main(["ingest", "--json"]) == 0  # embedded here, so the process below needs no model
    shutil.copyfile(folder / "fisheries.pdf", folder / "fisheries-copy.pdf")
    (folder / "truncated.pdf").write_bytes((folder / "fisheries.pdf").read_bytes()[:900])

    environment = {**os.environ, "KB_DATA_DIR": str(settings.data_dir), "KB_DOCUMENTS_DIR": str(folder)}
    process = subprocess.run(
        [str(script), "ingest", str(folder), "--json"],
        env=environment, cwd=settings.data_dir.parent, capture_output=True, text=True, timeout=300,
    )
    assert process.returncode == 1, process.stderr
    output = json.loads(process.stdout)
    statuses = {row["file"]: row["status"] for row in output["files"]}
    assert statuses == {"fisheries.pdf": "unchanged", "fisheries-copy.pdf": "duplicate", "truncated.pdf": "failed"}
    assert output["summary"]["failed"] == 1 and output["summary"]["embedded"] == 0

    process = subprocess.run(
        [str(script), "stats", "--json"], env=environment, capture_output=True, text=True, timeout=300
    )
    assert process.returncode == 0, process.stderr
    stats = json.loads(process.stdout)
    assert stats["documents"] == 1 and [f["file"] for f in stats["failed"]] == ["truncated.pdf"]
