"""The shared corpus, ingested once for the module (a few minutes): every file is read
with its catalogue metadata and page count, printed page labels survive, chunks fit the
model, development questions find their gold pages, and ``kb ask`` quotes what is on the
cited page.  The corpus is only read; the knowledge base lives in a temporary folder."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from kb.cli import main
from kb.embed import MAX_WORD_PIECES, count_tokens
from kb.knowledge_base import embedding_text
from kb.settings import get_settings
from kb.text import collapse_whitespace
from kb.verify import found_in, verify_against_pdf

pytestmark = pytest.mark.slow

GLOTIP = "unodc-glotip-2024-ch2-africa.pdf"


def manifest(corpus: Path) -> dict[str, dict[str, str]]:
    with (corpus / "MANIFEST.tsv").open(newline="", encoding="utf-8") as handle:
        return {row["file"]: row for row in csv.DictReader(handle, delimiter="\t")}


def questions(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    from conftest import CORPUS

    if not CORPUS.is_dir():
        pytest.skip(f"the shared corpus is not at {CORPUS}")
    from kb.service import Service

    data = tmp_path_factory.mktemp("corpus-kb") / "data"
    settings = get_settings(data_dir=data, documents_dir=CORPUS, chroma_url="", llm="")
    service = Service(settings)
    report = service.ingest([CORPUS])
    return service, report


@pytest.fixture
def service(ingested):
    return ingested[0]


def test_every_file_is_ingested_with_its_pages(ingested, corpus):
    service, report = ingested
    rows = manifest(corpus)
    assert report.failed == [], [(r.file, r.reason) for r in report.failed]
    assert report.count("added") == len(rows) == len(list(corpus.glob("*.pdf")))
    documents = {d.file: d for d in service.documents()}
    assert set(documents) == set(rows)
    for name, row in rows.items():
        assert documents[name].pages == int(row["pages"]), name
        assert len(service.kb.ledger.pages(documents[name].doc_id)) == int(row["pages"])
    assert service.stats()["pages"] == sum(int(r["pages"]) for r in rows.values())


def test_title_organisation_and_year_come_from_the_manifest(service, corpus):
    rows = manifest(corpus)
    for document in service.documents():
        row = rows[document.file]
        assert document.title == row["title"], document.file
        assert document.organisation == row["organisation"], document.file
        assert document.year == int(row["year"]), document.file


def test_printed_page_labels_of_the_africa_chapter(service, corpus):
    (document,) = [d for d in service.documents() if d.file == GLOTIP]
    pages = service.kb.ledger.pages(document.doc_id)
    assert (pages[0].index, pages[0].label) == (1, "65")
    assert [p.label for p in pages] == [str(65 + i) for i in range(len(pages))]
    assert service.kb.ledger.page_label(document.doc_id, 1) == "65"


def test_chunks_fit_the_model_and_lie_on_their_pages(service):
    limit = service.settings.chunk_tokens
    for document in service.documents():
        pages = {p.index: collapse_whitespace(p.text) for p in service.kb.ledger.pages(document.doc_id)}
        for chunk in service.kb.chunks_of(document.doc_id):
            assert count_tokens(chunk.text) <= limit, chunk.chunk_id
            assert count_tokens(embedding_text(chunk, document)) <= MAX_WORD_PIECES - 2, chunk.chunk_id
            span = collapse_whitespace(" ".join(pages[i] for i in range(chunk.page_start, chunk.page_end + 1)))
            assert collapse_whitespace(chunk.text) in span, chunk.chunk_id


def test_chroma_holds_exactly_the_visible_chunks(service):
    ledger_ids = {row["chunk_id"] for row in service.kb.ledger.visible_chunk_rows()}
    assert set(service.kb.store.all_ids()) == ledger_ids
    assert len(ledger_ids) == service.stats()["chunks"]


def test_development_questions_find_a_gold_page_in_the_top_five(service, dev_questions):
    answerable = [
        q for q in questions(dev_questions)
        if q.get("sources") and q.get("kind") not in {"followup", "unanswerable"}
    ]
    hits, misses = [], []
    for question in answerable:
        passages = service.search(question["question"], k=5)
        hit = any(
            passage.document.file == Path(gold["file"]).name
            and any(passage.chunk.page_start <= page <= passage.chunk.page_end for page in gold.get("pages", []))
            for passage in passages
            for gold in question["sources"]
        )
        (hits if hit else misses).append(question["id"])
    assert len(hits) >= 10, f"{len(hits)} of {len(answerable)} hit; missed {misses}"


def test_ask_quotes_what_is_on_the_cited_page(service, corpus, dev_questions, monkeypatch, capsys):
    monkeypatch.setenv("KB_DATA_DIR", str(service.settings.data_dir))
    monkeypatch.setenv("KB_DOCUMENTS_DIR", str(corpus))
    monkeypatch.delenv("KB_CHROMA_URL", raising=False)
    monkeypatch.delenv("KB_LLM", raising=False)
    facts = [q for q in questions(dev_questions) if q.get("kind") == "fact" and q.get("sources")][:6]
    answered = 0
    for question in facts:
        capsys.readouterr()
        assert main(["ask", question["question"], "--json"]) == 0
        answer = json.loads(capsys.readouterr().out)
        assert answer["question"] == question["question"]
        if answer["abstained"]:
            continue
        answered += 1
        assert answer["citations"]
        for citation in answer["citations"]:
            page_text = service.kb.ledger.page_text(citation["doc_id"], citation["page"])
            assert found_in(citation["quote"], page_text), (question["id"], citation["quote"])
            assert verify_against_pdf(corpus / citation["file"], citation["page"], citation["quote"]), (
                question["id"], citation["file"], citation["page"], citation["quote"],
            )
            assert citation["page_label"] == service.kb.ledger.page_label(citation["doc_id"], citation["page"])
    assert answered >= 1, "every development fact question was declined"


def test_a_second_ingest_of_the_corpus_embeds_nothing(service, corpus):
    report = service.ingest([corpus])
    summary = report.summary()
    assert summary["embedded"] == 0 and summary["failed"] == 0
    assert summary["unchanged"] == len(list(corpus.glob("*.pdf")))
