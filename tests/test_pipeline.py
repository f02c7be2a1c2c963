"""Ingestion end to end on real components (the extraction worker, the packaged model,
embedded Chroma, the SQLite ledger, BM25): adding, re-running, changing, removing,
duplicates, bad files, failures that change nothing, the ingest lock, ``remove``, and
search with filters.  The PDFs are made by the tests."""

from __future__ import annotations

import io
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from pypdf import PdfWriter

from conftest import make_pdf
from ingest.pipeline import IngestBusy, ingest, ingest_lock
from kb.service import Service
from kb.settings import get_settings
from kb.snapshot import Filters
from kb.text import collapse_whitespace

# --------------------------------------------------------------------------------------
# three small reports with distinct subjects, organisations and years
# --------------------------------------------------------------------------------------
FISHERIES = [
    "Fishers recruited in coastal villages were promised monthly wages of four hundred dollars. "
    "On board the distant-water vessels, captains withheld wages until the end of a two-year contract. "
    "Crew members reported working twenty hours a day while the vessel stayed at sea for months.",
    "Port state inspections found that a third of the crews had their passports confiscated by the captain. "
    "Inspectors recommended that identity documents always remain with the fishers themselves. "
    "Labour inspectors should board vessels together with maritime authorities and interview crew members away from the officers.",
    "Satellite monitoring of vessel movements helped investigators find trawlers that had avoided port for more than a year. "
    "Transshipment of catch at sea allowed these trawlers to escape inspection entirely. "
    "Cooperation between flag states and coastal states remains essential to prosecute vessel owners.",
]
COCOA = [
    "Children as young as ten carried heavy loads and used machetes on cocoa farms in the western region. "
    "Many of them had left primary school to help their families during the harvest season. "
    "Community child protection committees visited farms each week to find children at risk.",
    "School enrolment rose after the programme provided free meals and school kits to families in cocoa-growing villages. "
    "Cooperatives that paid a premium to farmers agreed to monitor child labour on member farms. "
    "The remediation plan for each child was agreed with parents and teachers.",
]
ONLINE = [
    "Traffickers increasingly advertise fake job offers on social media platforms and messaging apps. "
    "Victims recruited for modelling work abroad found themselves forced to run online scams in guarded compounds. "
    "Investigators traced cryptocurrency payments to identify the networks behind the scam centres.",
    "Platform companies removed thousands of fraudulent job advertisements after alerts from law enforcement. "
    "Training cyber units in digital evidence helped secure convictions of the recruiters.",
]
CATALOGUE = (
    "file,title,organisation,year,url,language\n"
    "fisheries.pdf,Forced Labour on Distant-Water Fishing Vessels,ILO,2019,https://example.org/fish,en\n"
    "cocoa.pdf,Child Labour in Cocoa-Growing Communities,UNICEF,2021,,\n"
    "online.pdf,Online Recruitment and Technology-Facilitated Trafficking,UNODC,2023,,\n"
)


def with_page_labels(path: Path, start: int) -> Path:
    writer = PdfWriter(clone_from=io.BytesIO(path.read_bytes()))
    writer.set_page_label(0, len(writer.pages) - 1, style="/D", start=start)
    out = io.BytesIO()
    writer.write(out)
    path.write_bytes(out.getvalue())
    return path


def write_library(folder: Path) -> None:
    with_page_labels(make_pdf(folder / "fisheries.pdf", FISHERIES), 65)
    make_pdf(folder / "cocoa.pdf", COCOA)
    make_pdf(folder / "online.pdf", ONLINE)
    (folder / "catalogue.csv").write_text(CATALOGUE, encoding="utf-8")


def encrypted(data: bytes, **passwords) -> bytes:
    writer = PdfWriter(clone_from=io.BytesIO(data))
    writer.encrypt(**passwords)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def image_only_pdf() -> bytes:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    pdf.rect(20, 20, 150, 200, style="F")
    return bytes(pdf.output())


# --------------------------------------------------------------------------------------
# reading the state of a knowledge base
# --------------------------------------------------------------------------------------


def ledger_rows(settings) -> dict[str, list[tuple]]:
    """Everything the ledger holds that defines visible content (timestamps left out)."""
    db = sqlite3.connect(settings.ledger_path)
    try:
        return {
            "documents": sorted(db.execute(
                "SELECT doc_id, file, title, organisation, year, url, language, pages, chunks, status, warnings FROM documents"
            )),
            "files": sorted(db.execute("SELECT path, name, doc_id, size, status, reason FROM files")),
            "pages": sorted(db.execute("SELECT doc_id, idx, label, text FROM pages")),
            "chunks": sorted(db.execute("SELECT * FROM chunks")),
            "embeddings": sorted(row[0] for row in db.execute("SELECT key FROM embeddings")),
        }
    finally:
        db.close()


def chroma_ids(service: Service) -> set[str]:
    return set(service.kb.store.all_ids())


def ledger_chunk_ids(settings) -> set[str]:
    return {row[0] for row in ledger_rows(settings)["chunks"]}


def result(report, name: str):
    (found,) = [r for r in report.results if r.file == name]
    return found


@pytest.fixture
def service(settings):
    return Service(settings)


# ======================================================================================
# add, re-run, change, remove, duplicates
# ======================================================================================


def test_add_then_a_second_run_embeds_nothing(settings):
    folder = settings.documents_dir
    write_library(folder)

    first = ingest([folder], settings)
    summary = first.summary()
    assert (summary["added"], summary["failed"], summary["unchanged"]) == (3, 0, 0)
    assert summary["pages"] == 7
    assert summary["embedded"] == summary["chunks"] > 0
    assert first.repaired == []

    service = Service(settings)
    documents = {d.file: d for d in service.documents()}
    assert set(documents) == {"fisheries.pdf", "cocoa.pdf", "online.pdf"}
    fish = documents["fisheries.pdf"]
    assert (fish.title, fish.organisation, fish.year, fish.url, fish.pages) == (
        "Forced Labour on Distant-Water Fishing Vessels", "ILO", 2019, "https://example.org/fish", 3,
    )
    assert [(p.index, p.label) for p in service.kb.ledger.pages(fish.doc_id)] == [(1, "65"), (2, "66"), (3, "67")]
    assert chroma_ids(service) == ledger_chunk_ids(settings)
    before = ledger_rows(settings)

    second = ingest([folder], settings)
    assert second.summary()["embedded"] == 0
    assert second.count("unchanged") == 3
    assert all(r.status == "unchanged" for r in second.results)
    assert ledger_rows(settings) == before
    assert chroma_ids(service) == ledger_chunk_ids(settings)


def test_chroma_metadata_matches_the_ledger(service, settings):
    write_library(settings.documents_dir)
    service.ingest([settings.documents_dir])
    stored = service.kb.store.collection.get(include=["metadatas", "documents"])
    documents = {d.doc_id: d for d in service.documents()}
    chunks = {c.chunk_id: c for d in documents for c in service.kb.chunks_of(d)}
    assert set(stored["ids"]) == set(chunks)
    for chunk_id, metadata, text in zip(stored["ids"], stored["metadatas"], stored["documents"]):
        chunk = chunks[chunk_id]
        assert text is None  # texts live in the ledger only
        assert metadata["doc_id"] == chunk.doc_id
        assert metadata["organisation"] == documents[chunk.doc_id].organisation
        assert metadata["year"] == documents[chunk.doc_id].year
        assert (metadata["page_start"], metadata["page_end"]) == (chunk.page_start, chunk.page_end)


def test_a_changed_file_replaces_its_old_chunks(service, settings):
    folder = settings.documents_dir
    path = make_pdf(folder / "cocoa.pdf", COCOA)
    service.ingest([folder])
    (old,) = service.documents()
    old_ids = set(service.kb.ledger.chunk_ids(old.doc_id))
    assert old_ids and old_ids <= chroma_ids(service)

    make_pdf(path, ["Cooperatives replaced child workers with paid adult harvesters on every farm. " * 2, COCOA[1]])
    report = service.ingest([folder])
    assert report.count("updated") == 1 and report.summary()["added"] == 0
    (new,) = service.documents()
    assert new.doc_id != old.doc_id and new.file == "cocoa.pdf"
    assert service.kb.ledger.document(old.doc_id) is None
    assert not old_ids & chroma_ids(service), "old vectors left in Chroma"
    assert not old_ids & ledger_chunk_ids(settings), "old chunks left in the ledger"
    assert chroma_ids(service) == ledger_chunk_ids(settings) == set(service.kb.ledger.chunk_ids(new.doc_id))
    top = service.search("paid adult harvesters replaced child workers")[0]
    assert top.document.doc_id == new.doc_id
    assert all("machetes" not in p.text for p in service.search("children used machetes"))


def test_a_file_removed_from_the_folder_leaves_the_knowledge_base(service, settings):
    folder = settings.documents_dir
    write_library(folder)
    service.ingest([folder])
    gone = {d.file: d for d in service.documents()}["online.pdf"]
    gone_ids = set(service.kb.ledger.chunk_ids(gone.doc_id))

    (folder / "online.pdf").unlink()
    report = service.ingest([folder])
    assert result(report, "online.pdf").status == "removed"
    assert report.count("unchanged") == 2 and report.summary()["embedded"] == 0
    assert {d.file for d in service.documents()} == {"fisheries.pdf", "cocoa.pdf"}
    assert not gone_ids & chroma_ids(service)
    assert not gone_ids & ledger_chunk_ids(settings)
    assert service.kb.ledger.pages(gone.doc_id) == []
    assert all(p.document.file != "online.pdf" for p in service.search("fake job offers on social media"))


def test_ingesting_single_files_does_not_remove_the_others(service, settings):
    folder = settings.documents_dir
    write_library(folder)
    service.ingest([folder])
    report = service.ingest([folder / "cocoa.pdf"])
    assert [r.status for r in report.results] == ["unchanged"]
    assert len(service.documents()) == 3


def test_same_bytes_under_two_names_are_stored_once(service, settings):
    folder = settings.documents_dir
    make_pdf(folder / "cocoa.pdf", COCOA)
    shutil.copyfile(folder / "cocoa.pdf", folder / "copy-of-cocoa.pdf")

    report = service.ingest([folder])
    assert result(report, "cocoa.pdf").status == "added"
    duplicate = result(report, "copy-of-cocoa.pdf")
    assert duplicate.status == "duplicate"
    assert "same content as cocoa.pdf" in duplicate.reason
    assert report.summary()["failed"] == 0
    (document,) = service.documents()
    assert len(chroma_ids(service)) == document.chunks == len(ledger_chunk_ids(settings))
    assert service.stats()["duplicates"] == [{"file": "copy-of-cocoa.pdf", "reason": "same content as cocoa.pdf"}]

    again = service.ingest([folder])
    assert again.summary()["embedded"] == 0 and again.summary()["added"] == 0
    assert result(again, "copy-of-cocoa.pdf").status == "duplicate"
    assert len(service.documents()) == 1


def test_the_copy_keeps_the_document_when_the_original_goes(service, settings):
    folder = settings.documents_dir
    make_pdf(folder / "cocoa.pdf", COCOA)
    shutil.copyfile(folder / "cocoa.pdf", folder / "copy-of-cocoa.pdf")
    service.ingest([folder])
    ids = chroma_ids(service)

    (folder / "cocoa.pdf").unlink()
    report = service.ingest([folder])
    assert report.summary()["embedded"] == 0
    (document,) = service.documents()
    assert chroma_ids(service) == ids  # the content stays, not re-embedded
    assert service.source_path(document.doc_id) == folder / "copy-of-cocoa.pdf"
    passage = service.search("children used machetes on cocoa farms")[0]
    assert passage.document.file == "copy-of-cocoa.pdf", "citations name a file that is no longer in the library"


# ======================================================================================
# bad files
# ======================================================================================

BAD_FILES = {
    "empty.pdf": (lambda folder: b"", "empty file"),
    "saved-page.pdf": (lambda folder: b"<!DOCTYPE html><html><body>Not found</body></html>", "not a PDF"),
    "archive.pdf": (lambda folder: _zip_bytes(), "not a PDF: the content is a ZIP archive"),
    "truncated.pdf": (lambda folder: _good_bytes(folder)[: len(_good_bytes(folder)) // 2], "corrupt or truncated PDF"),
    "locked.pdf": (lambda folder: encrypted(_good_bytes(folder), user_password="secret"), "encrypted PDF"),
    "scan.pdf": (lambda folder: image_only_pdf(), "needs OCR"),
}


def _good_bytes(folder: Path) -> bytes:
    return make_pdf(folder.parent / "spare" / "good.pdf", ONLINE).read_bytes()


def _zip_bytes() -> bytes:
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("report.docx", b"PK not really a document")
    return buffer.getvalue()


def test_every_bad_file_is_reported_and_the_good_ones_are_ingested(service, settings):
    folder = settings.documents_dir
    make_pdf(folder / "fisheries.pdf", FISHERIES)
    make_pdf(folder / "cocoa.pdf", COCOA)
    # readable although encrypted: the user password is empty
    (folder / "open-encrypted.pdf").write_bytes(encrypted(_good_bytes(folder), user_password="", owner_password="x"))
    for name, (make, _) in BAD_FILES.items():
        (folder / name).write_bytes(make(folder))
    (folder / "notes.txt").write_text("not a PDF name: ignored")

    report = service.ingest([folder])
    summary = report.summary()
    assert (summary["added"], summary["failed"]) == (3, len(BAD_FILES))
    assert {r.file for r in report.failed} == set(BAD_FILES)
    for failure in report.failed:
        expected = BAD_FILES[failure.file][1]
        assert expected in failure.reason, (failure.file, failure.reason)
        assert "\n" not in failure.reason and len(failure.reason) < 200
    assert {d.file for d in service.documents()} == {"fisheries.pdf", "cocoa.pdf", "open-encrypted.pdf"}
    stats = service.stats()
    assert {f["file"]: f["reason"] for f in stats["failed"]} == {r.file: r.reason for r in report.failed}
    assert service.search("passports confiscated by the captain")[0].document.file == "fisheries.pdf"

    again = service.ingest([folder])  # bad files are tried again and fail again, nothing else moves
    assert again.summary()["failed"] == len(BAD_FILES) and again.summary()["embedded"] == 0


def test_a_missing_path_is_reported(settings):
    report = ingest([settings.documents_dir / "nowhere.pdf"], settings)
    (failure,) = report.failed
    assert "no such file or folder" in failure.reason


def test_a_failed_file_leaves_the_knowledge_base_exactly_as_it_was(service, settings):
    folder = settings.documents_dir
    write_library(folder)
    service.ingest([folder])
    before = ledger_rows(settings)
    ids_before = chroma_ids(service)
    generation = service.kb.ledger.generation()
    cocoa = {d.file: d for d in service.documents()}["cocoa.pdf"]

    good = (folder / "cocoa.pdf").read_bytes()
    (folder / "cocoa.pdf").write_bytes(good[: len(good) // 3])  # a good file replaced by a broken copy
    (folder / "new-but-broken.pdf").write_bytes(b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog")
    report = service.ingest([folder])

    assert report.summary()["failed"] == 2 and report.summary()["embedded"] == 0
    after = ledger_rows(settings)
    for table in ("documents", "pages", "chunks", "embeddings"):
        assert after[table] == before[table], f"{table} changed"
    assert chroma_ids(service) == ids_before
    assert service.kb.ledger.generation() == generation
    files = {row[1]: row for row in after["files"]}
    assert files["cocoa.pdf"][2] == cocoa.doc_id  # the last good version is kept ...
    assert files["cocoa.pdf"][4] == "failed" and "corrupt" in files["cocoa.pdf"][5]  # ... and the failure shown
    assert files["new-but-broken.pdf"][2] is None
    assert [row for row in after["files"] if row[1] not in {"cocoa.pdf", "new-but-broken.pdf"}] == [
        row for row in before["files"] if row[1] != "cocoa.pdf"
    ]
    assert service.search("children used machetes on cocoa farms")[0].document.doc_id == cocoa.doc_id

    (folder / "cocoa.pdf").write_bytes(good)  # put right: back to unchanged, nothing embedded
    fixed = service.ingest([folder])
    assert result(fixed, "cocoa.pdf").status == "unchanged"
    assert fixed.summary()["embedded"] == 0
    assert ledger_rows(settings)["chunks"] == before["chunks"]


def test_the_next_document_is_embedded_while_the_one_before_is_stored(service, settings, monkeypatch):
    """Storing a document (tags, ledger, Chroma) runs in a thread behind the model: the
    store of the first document is held until the second one has been embedded, which
    only happens if the two overlap; everything still ends up stored and visible."""
    import threading

    from kb.knowledge_base import KnowledgeBase

    folder = settings.documents_dir
    write_library(folder)
    second_embedded = threading.Event()
    overlapped: list[bool] = []
    embedded_files: list[str] = []
    real_embed, real_store = KnowledgeBase.embed_document, KnowledgeBase.store_document

    def embed_document(self, meta, chunks, *rest):
        embedded = real_embed(self, meta, chunks, *rest)
        embedded_files.append(meta.file)
        if len(embedded_files) == 2:
            second_embedded.set()
        return embedded

    def store_document(self, embedded, *args):
        if embedded.meta.file == embedded_files[0]:
            overlapped.append(second_embedded.wait(timeout=120))  # generous: a slow machine still overlaps
        return real_store(self, embedded, *args)

    monkeypatch.setattr(KnowledgeBase, "embed_document", embed_document)
    monkeypatch.setattr(KnowledgeBase, "store_document", store_document)
    report = service.ingest([folder])
    assert overlapped == [True]
    assert [r.status for r in report.results] == ["added"] * 3
    assert [r.file for r in report.results] == embedded_files  # results in the order read
    assert {d.file for d in service.documents()} == {"fisheries.pdf", "cocoa.pdf", "online.pdf"}
    assert chroma_ids(service) == ledger_chunk_ids(settings)


def test_a_failure_while_storing_stops_the_ingest_and_shows_nothing_half_written(service, settings, monkeypatch):
    from kb.knowledge_base import KnowledgeBase

    folder = settings.documents_dir
    write_library(folder)
    real_store = KnowledgeBase.store_document

    def store_document(self, embedded, *args):
        if embedded.meta.file == "cocoa.pdf":
            raise OSError("disk full while writing cocoa.pdf")
        return real_store(self, embedded, *args)

    monkeypatch.setattr(KnowledgeBase, "store_document", store_document)
    with pytest.raises(OSError, match="disk full"):
        service.ingest([folder])
    monkeypatch.setattr(KnowledgeBase, "store_document", real_store)
    assert "cocoa.pdf" not in {d.file for d in service.documents()}
    assert chroma_ids(service) == ledger_chunk_ids(settings)  # nothing half-written
    report = service.ingest([folder])  # the next run repairs and completes the library
    assert {d.file for d in service.documents()} == {"fisheries.pdf", "cocoa.pdf", "online.pdf"}
    assert result(report, "cocoa.pdf").status == "added"
    assert chroma_ids(service) == ledger_chunk_ids(settings)


# ======================================================================================
# one ingest at a time
# ======================================================================================


class _ScriptedWorker:
    """Stands in for the extraction worker process: answers each job from a script (a
    string is the reason the file failed), recording the jobs submitted."""

    def __init__(self, outcomes: dict[str, object]):
        self.outcomes = outcomes
        self.submitted: list[str] = []
        self._job = ""

    def submit(self, data: bytes, doc_id: str) -> None:
        self.submitted.append(doc_id)
        self._job = doc_id

    def result(self):
        from ingest.reader import ReadError

        outcome = self.outcomes[self._job]
        if isinstance(outcome, str):
            raise ReadError(outcome)
        return outcome


def _candidates(names: list[str]):
    from ingest.pipeline import _Candidate

    return [_Candidate(Path(f"{name}.pdf"), b"%PDF", name, None, None) for name in names]


def test_read_ahead_keeps_order_passes_failures_and_reads_ahead():
    import threading
    import time

    from ingest.pipeline import _read_ahead

    worker = _ScriptedWorker({"a": ["A"], "b": "file b is encrypted", "c": ["C"], "d": ["D"]})
    before = set(threading.enumerate())
    extractions = _read_ahead(worker, _candidates(["a", "b", "c", "d"]), ahead=3)
    candidate, extracted, failure = next(extractions)
    (driver,) = set(threading.enumerate()) - before
    assert (candidate.doc_id, extracted, failure) == ("a", ["A"], "")
    deadline = time.monotonic() + 30
    while len(worker.submitted) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)  # the thread reads on while the caller "embeds" file a
    assert worker.submitted == ["a", "b", "c", "d"]
    rest = [(c.doc_id, e, f) for c, e, f in extractions]  # runs the generator to its end
    assert rest == [("b", None, "file b is encrypted"), ("c", ["C"], ""), ("d", ["D"], "")]
    driver.join(timeout=30)
    assert not driver.is_alive()


def test_read_ahead_stops_when_the_caller_stops():
    import threading
    import time

    from ingest.pipeline import _read_ahead

    names = [f"doc{i}" for i in range(20)]
    worker = _ScriptedWorker({name: [name] for name in names})
    before = set(threading.enumerate())
    extractions = _read_ahead(worker, _candidates(names), ahead=2)
    next(extractions)
    (driver,) = set(threading.enumerate()) - before
    extractions.close()  # the caller failed (an exception, Ctrl-C): the generator is closed
    driver.join(timeout=30)
    assert not driver.is_alive()
    assert len(worker.submitted) < len(names)  # it stopped reading, it did not run to the end


def test_a_second_ingest_is_refused_while_one_holds_the_lock(settings):
    folder = settings.documents_dir
    make_pdf(folder / "cocoa.pdf", COCOA)
    with ingest_lock(settings.lock_path):
        with pytest.raises(IngestBusy, match="another ingest is already running"):
            ingest([folder], settings)
        assert not settings.ledger_path.exists() or ledger_rows(settings)["files"] == []
    report = ingest([folder], settings)  # free again
    assert report.count("added") == 1


def test_the_lock_holds_across_processes(settings):
    folder = settings.documents_dir
    make_pdf(folder / "cocoa.pdf", COCOA)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, sys, time\n"
         "handle = open(sys.argv[1], 'a+')\n"
         "fcntl.flock(handle, fcntl.LOCK_EX)\n"
         "print('locked', flush=True)\n"
         "time.sleep(60)\n",
         str(settings.lock_path)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(IngestBusy):
            ingest([folder], settings)
    finally:
        holder.kill()
        holder.wait(timeout=10)
    assert ingest([folder], settings).count("added") == 1


# ======================================================================================
# remove
# ======================================================================================


def test_remove_takes_the_document_out_and_moves_the_file_aside(service, settings):
    folder = settings.documents_dir
    write_library(folder)
    service.ingest([folder])
    online = {d.file: d for d in service.documents()}["online.pdf"]
    ids = set(service.kb.ledger.chunk_ids(online.doc_id))
    original = (folder / "online.pdf").read_bytes()

    assert service.remove("online.pdf") == ["online.pdf"]
    assert not (folder / "online.pdf").exists()
    (moved,) = (settings.data_dir / "removed").iterdir()
    assert moved.name.endswith("-online.pdf") and moved.read_bytes() == original
    assert {d.file for d in service.documents()} == {"fisheries.pdf", "cocoa.pdf"}
    assert not ids & chroma_ids(service) and not ids & ledger_chunk_ids(settings)
    assert all(p.document.file != "online.pdf" for p in service.search("fake job offers on social media"))

    report = service.ingest([folder])  # the next sync does not bring it back
    assert {r.status for r in report.results} == {"unchanged"}
    assert len(service.documents()) == 2

    cocoa = {d.file: d for d in service.documents()}["cocoa.pdf"]
    assert service.remove(cocoa.doc_id[:12]) == ["cocoa.pdf"]  # by document id prefix
    with pytest.raises(KeyError, match="no document matches"):
        service.remove("online.pdf")


# ======================================================================================
# search and filters (one library, ingested once)
# ======================================================================================


def ingested_library(tmp_path_factory, name: str, **settings) -> Service:
    """A service over the three reports, ingested into a fresh knowledge base."""
    base = tmp_path_factory.mktemp(name)
    folder = base / "documents"
    folder.mkdir()
    write_library(folder)
    service = Service(get_settings(data_dir=base / "data", documents_dir=folder, chroma_url="", llm="", **settings))
    report = service.ingest([folder])
    assert report.count("added") == 3
    return service


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    return ingested_library(tmp_path_factory, "library")


@pytest.mark.parametrize(
    "query, expected",
    [
        ("captains withheld the wages of fishers at sea", "fisheries.pdf"),
        ("children carrying heavy loads with machetes on cocoa farms", "cocoa.pdf"),
        ("fake job offers advertised on social media", "online.pdf"),
        ("cryptocurrency payments scam centres", "online.pdf"),
    ],
)
def test_search_finds_the_right_document(library, query, expected):
    passages = library.search(query)
    assert passages[0].document.file == expected
    assert passages[0].dense_score is not None and passages[0].keyword_score is not None


def test_search_cites_pages_and_labels(library):
    top = library.search("passports confiscated by the captain during port state inspections")[0]
    assert top.document.file == "fisheries.pdf"
    chunk = top.chunk
    assert chunk.page_start <= 2 <= chunk.page_end  # the sentence is on PDF page 2 ...
    assert (chunk.label_start, chunk.label_end) == (str(64 + chunk.page_start), str(64 + chunk.page_end))  # ... printed 66
    pages = library.kb.ledger.pages(top.document.doc_id)
    assert [(p.index, p.label) for p in pages] == [(1, "65"), (2, "66"), (3, "67")]
    span = collapse_whitespace(" ".join(p.text for p in pages[chunk.page_start - 1 : chunk.page_end]))
    assert collapse_whitespace(chunk.text) in span
    assert "passports confiscated by the captain" in collapse_whitespace(pages[1].text)


def test_chunks_never_cross_documents(library):
    marks = {"fisheries.pdf": "vessel", "cocoa.pdf": "cocoa", "online.pdf": "job"}
    for document in library.documents():
        pages = collapse_whitespace(" ".join(p.text for p in library.kb.ledger.pages(document.doc_id)))
        for chunk in library.kb.chunks_of(document.doc_id):
            assert chunk.doc_id == document.doc_id
            assert collapse_whitespace(chunk.text) in pages
            others = [m for f, m in marks.items() if f != document.file]
            assert not any(m in chunk.text.lower() for m in others), chunk.chunk_id


def test_chroma_and_exact_dense_search_agree(library):
    memory = Service(replace(library.settings, dense_source="memory"))
    for query in ("withheld wages on fishing vessels", "school meals for cocoa families"):
        assert [p.chunk_id for p in library.search(query)][:2] == [p.chunk_id for p in memory.search(query)][:2]


def _files(passages) -> set[str]:
    return {p.document.file for p in passages}


def test_organisation_filter_restricts_both_retrievers(library):
    query = "captains withheld wages on fishing vessels and confiscated passports"  # a fisheries query ...
    passages = library.search(query, filters=Filters(organisations=["unicef"]))  # ... limited to UNICEF
    assert passages and _files(passages) == {"cocoa.pdf"}
    assert all(p.dense_rank is not None for p in passages)
    keyword = library.search("children farms wages", filters=Filters(organisations=["UNICEF"]))
    assert _files(keyword) == {"cocoa.pdf"}
    assert any(p.keyword_rank is not None for p in keyword)


def test_year_filters(library):
    query = "victims recruited and exploited"
    assert _files(library.search(query, k=10, filters=Filters(year_from=2020, year_to=2022))) == {"cocoa.pdf"}
    assert _files(library.search(query, k=10, filters=Filters(year_from=2022))) == {"online.pdf"}
    assert _files(library.search(query, k=10, filters=Filters(year_to=2019))) == {"fisheries.pdf"}
    assert library.search(query, filters=Filters(year_from=2030)) == []


def test_document_filter_by_file_name_and_id(library):
    online = {d.file: d for d in library.documents()}["online.pdf"]
    by_name = library.search("children on cocoa farms", filters=Filters(documents=["online.pdf"]))
    by_id = library.search("children on cocoa farms", filters=Filters(documents=[online.doc_id[:10]]))
    assert _files(by_name) == _files(by_id) == {"online.pdf"}
    both = library.search("wages", k=10, filters=Filters(documents=["online.pdf", "fisheries.pdf"]))
    assert _files(both) <= {"online.pdf", "fisheries.pdf"} and "fisheries.pdf" in _files(both)


def test_filters_combine(library):
    assert library.search("wages", filters=Filters(organisations=["ILO"], year_from=2020)) == []
    assert _files(library.search("wages", filters=Filters(organisations=["ILO", "UNODC"], year_from=2020))) == {
        "online.pdf"
    }


# ======================================================================================
# multi-part questions and the page limit (small chunks: several to a page)
# ======================================================================================


@pytest.fixture(scope="module")
def small_chunks(tmp_path_factory):
    return ingested_library(tmp_path_factory, "small-chunks", chunk_tokens=30, chunk_overlap_tokens=0)


def _rank_of(service: Service, question: str, words: str, part_share: float) -> int:
    searcher = Service(replace(service.settings, part_share=part_share)).searcher
    passages = searcher.search(question, k=12, diversify=False)
    return next(i for i, p in enumerate(passages) if words in p.chunk.text)


@pytest.mark.parametrize(
    "question, second_part",
    [
        (
            "How were captains on distant-water fishing vessels able to withhold the wages of fishers, "
            "and what did the remediation plan for each child involve?",
            "remediation plan",
        ),
        (
            "How many hours a day did fishers work while their vessels stayed at sea for months, "
            "and what did cooperatives agree to do?",
            "Cooperatives",
        ),
    ],
)
def test_each_part_of_a_two_part_question_is_searched(small_chunks, question, second_part):
    # The long first part dominates the whole question's vector and terms; searching the
    # second part on its own lifts the passage that answers it.
    assert _rank_of(small_chunks, question, second_part, 0.3) < _rank_of(small_chunks, question, second_part, 0.0)


def test_every_passage_keeps_the_whole_questions_scores(small_chunks):
    # A passage only a part of the question found still reports the whole question's
    # dense and keyword scores: abstention judges the question, not its parts.
    question = (
        "How were captains on distant-water fishing vessels able to withhold the wages of fishers, "
        "and what did the remediation plan for each child involve?"
    )
    # few candidates per retriever, so that some passages come from a part alone
    searcher = Service(replace(small_chunks.settings, candidates=3)).searcher
    snapshot = searcher.snapshot()
    vector, part_vectors = searcher.embed_question(question)
    assert len(part_vectors) == 2
    bm25 = snapshot.keyword.scores(question)
    passages = searcher.search(question, k=12, diversify=False)
    assert len(passages) > 6  # more than the whole question's own candidates
    for passage in passages:
        row = snapshot.row_of[passage.chunk_id]
        assert passage.dense_score == pytest.approx(float(snapshot.vectors[row] @ vector), abs=1e-5)
        assert passage.keyword_score == pytest.approx(float(bm25[row]), abs=1e-5)


def test_one_page_fills_at_most_max_per_page_slots(small_chunks):
    question = "fishers recruited in coastal villages promised monthly wages, captains withheld wages, twenty hours a day"
    undiversified = small_chunks.searcher.search(question, k=6, diversify=False)
    assert sum(p.chunk.page_start == 1 and p.document.file == "fisheries.pdf" for p in undiversified[:3]) == 3
    for limit in (1, 2):
        searcher = Service(replace(small_chunks.settings, max_per_page=limit)).searcher
        passages = searcher.search(question, k=4)
        pages = [(p.document.file, p.chunk.page_start) for p in passages]
        assert max(pages.count(page) for page in pages) == limit, pages
