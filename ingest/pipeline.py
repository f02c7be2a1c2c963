"""Sync folders and files of PDFs with the knowledge base: new, changed, unchanged,
removed, duplicate and failed files; one document at a time, all or nothing.

A thread keeps the extraction worker (a separate process) busy reading the next PDFs,
up to ``settings.extract_read_ahead`` files ahead, while this thread embeds the current
one and a third thread stores the one before (tags, ledger rows, vectors, then the
transaction that makes it visible), so extraction, embedding and storing overlap and the
embedder waits neither for a large file that was read in advance nor for the store.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from ingest.catalogue import CatalogueEntry, describe, load_catalogue
from ingest.extract import TEXT_VERSION, ExtractOptions, Extracted
from ingest.reader import ReadError
from ingest.worker import ExtractionWorker
from kb.keyword import tokenize
from kb.knowledge_base import EmbeddedDocument, KnowledgeBase
from kb.records import DocumentMeta, FileResult
from kb.settings import Settings, get_settings

log = logging.getLogger(__name__)


class IngestBusy(RuntimeError):
    """Another ingest holds the lock on this data folder."""


@dataclass
class Progress:
    """What a progress display needs after each step."""

    files_done: int
    files_total: int
    pages_done: int
    pages_estimate: int
    current: str


@dataclass
class IngestReport:
    results: list[FileResult] = field(default_factory=list)
    seconds: float = 0.0
    embedded: int = 0  # texts newly embedded (identical texts are embedded once)
    repaired: list[str] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for r in self.results if r.status == status)

    @property
    def pages(self) -> int:
        return sum(r.pages for r in self.results if r.status in {"added", "updated"})

    @property
    def chunks(self) -> int:
        return sum(r.chunks for r in self.results if r.status in {"added", "updated"})

    @property
    def failed(self) -> list[FileResult]:
        return [r for r in self.results if r.status == "failed"]

    def summary(self) -> dict:
        return {
            **{s: self.count(s) for s in ("added", "updated", "unchanged", "removed", "duplicate", "failed")},
            "pages": self.pages,
            "chunks": self.chunks,
            "embedded": self.embedded,
            "seconds": round(self.seconds, 2),
        }


@contextmanager
def ingest_lock(path: Path) -> Iterator[None]:
    """One ingest at a time per data folder; a second is refused, not interleaved."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise IngestBusy(
            f"another ingest is already running on {path.parent} (lock {path.name}); wait for it to finish"
        ) from None
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


@dataclass
class _Candidate:
    path: Path
    data: bytes
    doc_id: str
    entry: CatalogueEntry | None
    previous_doc_id: str | None


def _collect(paths: list[Path]) -> tuple[list[Path], list[Path], list[FileResult]]:
    """PDF files to consider, folders being synced, and paths that do not exist."""
    files: list[Path] = []
    folders: list[Path] = []
    missing: list[FileResult] = []
    for raw in paths:
        path = Path(raw).resolve()
        if path.is_dir():
            folders.append(path)
            files.extend(sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() == ".pdf"))
        elif path.is_file():
            files.append(path)
        else:
            missing.append(FileResult(file=Path(raw).name, status="failed", reason=f"no such file or folder: {raw}"))
    return list(dict.fromkeys(files)), folders, missing


def _is_inside(path: str, folder: Path) -> bool:
    return Path(path).parent == folder


def ingest(
    paths: list[Path] | None = None,
    settings: Settings | None = None,
    progress: Callable[[Progress], None] | None = None,
    knowledge_base: KnowledgeBase | None = None,
) -> IngestReport:
    """Bring the knowledge base in line with ``paths`` (default: the documents folder)."""
    settings = settings or get_settings()
    paths = list(paths or [settings.documents_dir])
    started = time.perf_counter()
    report = IngestReport()
    kb = knowledge_base or KnowledgeBase(settings)
    with ingest_lock(settings.lock_path):
        report.repaired = kb.repair()
        kb.mark_dirty(True)
        files, folders, missing = _collect(paths)
        report.results.extend(missing)
        report.results.extend(_remove_vanished(kb, folders, set(map(str, files))))
        catalogues = {folder: load_catalogue(folder) for folder in {f.parent for f in files}}
        candidates = _classify(kb, files, catalogues, report)
        _ingest_candidates(kb, settings, candidates, report, progress)
        report.repaired.extend(kb.repair())  # documents replaced in this run
        kb.mark_dirty(False)
    report.seconds = time.perf_counter() - started
    return report


def _remove_vanished(kb: KnowledgeBase, folders: list[Path], present: set[str]) -> list[FileResult]:
    """Files of a synced folder that are gone from disk leave the knowledge base."""
    results = []
    for row in kb.ledger.file_rows():
        if row["path"] in present or not any(_is_inside(row["path"], f) for f in folders):
            continue
        kb.ledger.forget_file(row["path"])
        if row["status"] == "ok":
            results.append(FileResult(file=row["name"], status="removed", doc_id=row["doc_id"] or ""))
    return results


def _classify(
    kb: KnowledgeBase,
    files: list[Path],
    catalogues: dict[Path, dict[str, CatalogueEntry]],
    report: IngestReport,
) -> list[_Candidate]:
    """Hash every file and decide: unchanged, duplicate, or to be ingested."""
    owners = {row["doc_id"]: row["name"] for row in kb.ledger.file_rows() if row["status"] == "ok"}
    candidates: list[_Candidate] = []
    seen_in_run: dict[str, str] = {}
    for path in files:
        try:
            data = path.read_bytes()
        except OSError as error:
            report.results.append(FileResult(file=path.name, status="failed", reason=f"cannot read the file: {error.strerror}"))
            continue
        doc_id = hashlib.sha256(data).hexdigest()
        row = kb.ledger.file_row(str(path))
        previous = row["doc_id"] if row else None
        owner = owners.get(doc_id) or seen_in_run.get(doc_id)
        if row and row["status"] == "ok" and previous == doc_id and kb.ledger.document_status(doc_id) == "ready":
            report.results.append(FileResult(file=path.name, status="unchanged", doc_id=doc_id))
        elif owner and owner != path.name:
            kb.ledger.record_file(str(path), path.name, None, len(data), "duplicate", f"same content as {owner}")
            report.results.append(
                FileResult(file=path.name, status="duplicate", doc_id=doc_id, reason=f"same content as {owner}; stored once")
            )
        elif kb.ledger.document_status(doc_id) == "ready":  # known bytes under a path not yet recorded
            kb.ledger.record_file(str(path), path.name, doc_id, len(data), "ok")
            document = kb.ledger.document(doc_id)
            if document and document.file not in {r["name"] for r in kb.ledger.file_rows() if r["doc_id"] == doc_id}:
                kb.ledger.rename_document_file(doc_id, path.name)  # its first file is gone: cite this one
            report.results.append(FileResult(file=path.name, status="unchanged", doc_id=doc_id))
        else:
            seen_in_run[doc_id] = path.name
            entry = catalogues.get(path.parent, {}).get(path.name)
            candidates.append(_Candidate(path, data, doc_id, entry, previous))
    return candidates


def _ingest_candidates(
    kb: KnowledgeBase,
    settings: Settings,
    candidates: list[_Candidate],
    report: IngestReport,
    progress: Callable[[Progress], None] | None,
) -> None:
    if not candidates:
        return
    # Open the vector store (importing Chroma takes seconds) while the first file is read.
    threading.Thread(target=_open_store, args=(kb,), name="open-store", daemon=True).start()
    options = ExtractOptions.from_settings(settings)
    pages_done = 0
    average_pages = 20
    storing: Future | None = None  # the previous document, being stored

    def finish_storing() -> None:
        nonlocal storing
        if storing is not None:
            done, storing = storing, None
            report.results.append(done.result())  # an error storing it is raised here

    with ExtractionWorker(options, settings.extract_timeout_s, settings.extract_memory_mb) as worker, \
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="store") as store_thread:
        extractions = _read_ahead(worker, candidates, settings.extract_read_ahead)
        for position, (candidate, extracted, failure) in enumerate(extractions):
            if extracted is None:
                finish_storing()
                _record_failure(kb, candidate, failure, report)
            else:
                # The model embeds this document while the thread stores the one before.
                embedded, terms = _embed(kb, candidate, extracted, report)
                finish_storing()
                storing = store_thread.submit(_store, kb, candidate, extracted, embedded, terms)
                pages_done += len(extracted.pages)
                average_pages = max(1, pages_done // (position + 1))
            if progress:
                remaining = len(candidates) - position - 1
                progress(Progress(position + 1, len(candidates), pages_done, pages_done + remaining * average_pages, candidate.path.name))
        finish_storing()
        # (Leaving early, the store thread's pool still waits for the document it is on.)


def _open_store(kb: KnowledgeBase) -> None:
    try:
        kb.store
    except Exception as error:  # reported where the store is really needed
        log.debug("opening the vector store ahead failed: %s", error)


_END = object()


def _read_ahead(
    worker: ExtractionWorker, candidates: list[_Candidate], ahead: int
) -> Iterator[tuple[_Candidate, Extracted | None, str]]:
    """``(candidate, extracted or None, failure reason)`` for each candidate, in order.

    A thread drives the worker, keeping up to ``ahead`` finished extractions waiting, so
    reading PDFs (the worker's core) and embedding (the caller's) run at the same time.
    When the caller stops early (an error, Ctrl-C) the thread stops after the file it is
    on; the worker itself is closed by the caller's ``with`` block.
    """
    finished: queue.Queue = queue.Queue(maxsize=max(1, ahead))
    stop = threading.Event()

    def hand_over(item) -> None:
        while not stop.is_set():
            try:
                finished.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def drive() -> None:
        try:
            for candidate in candidates:
                if stop.is_set():
                    return
                worker.submit(candidate.data, candidate.doc_id)
                try:
                    hand_over((candidate, worker.result(), ""))
                except ReadError as error:
                    hand_over((candidate, None, str(error)))
        except BaseException as error:  # noqa: BLE001 - re-raised in the caller's thread
            hand_over(error)
        finally:
            hand_over(_END)

    driver = threading.Thread(target=drive, name="extraction-read-ahead", daemon=True)
    driver.start()
    try:
        while True:
            item = finished.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        if driver.is_alive() and threading.current_thread() is not driver:
            driver.join(timeout=0.5)  # it may be waiting on the worker: closing the worker ends that


def _record_failure(kb: KnowledgeBase, candidate: _Candidate, reason: str, report: IngestReport) -> None:
    """A failed file changes nothing but its own line in the ledger (an older good
    version of the same file, if any, stays in the knowledge base)."""
    kb.ledger.record_file(
        str(candidate.path), candidate.path.name, candidate.previous_doc_id, len(candidate.data), "failed", reason
    )
    report.results.append(FileResult(file=candidate.path.name, status="failed", doc_id=candidate.doc_id, reason=reason))


def _embed(
    kb: KnowledgeBase, candidate: _Candidate, extracted: Extracted, report: IngestReport
) -> tuple[EmbeddedDocument, list[list[str]]]:
    """A document's description, keyword terms and vectors: everything before storing."""
    described = describe(candidate.path.name, candidate.entry, extracted.info)
    meta = DocumentMeta(
        doc_id=candidate.doc_id,
        file=candidate.path.name,
        pages=len(extracted.pages),
        chunks=len(extracted.chunks),
        text_version=TEXT_VERSION,
        **described,
    )
    title_terms = tokenize(meta.title)
    terms = [title_terms + chunk_terms for chunk_terms in extracted.terms]
    embedded = kb.embed_document(meta, extracted.chunks, extracted.token_counts)
    report.embedded += embedded.newly_embedded
    return embedded, terms


def _store(
    kb: KnowledgeBase, candidate: _Candidate, extracted: Extracted, embedded: EmbeddedDocument, terms: list[list[str]]
) -> FileResult:
    """Write an embedded document and make it visible (in the store thread)."""
    kb.store_document(
        embedded, extracted.pages, terms, extracted.warnings,
        str(candidate.path), candidate.path.name, len(candidate.data),
    )
    status = "updated" if candidate.previous_doc_id and candidate.previous_doc_id != candidate.doc_id else "added"
    meta = embedded.meta
    return FileResult(
        file=candidate.path.name, status=status, doc_id=candidate.doc_id, pages=meta.pages,
        chunks=meta.chunks, warnings=extracted.warnings,
    )


def remove(kb: KnowledgeBase, target: str) -> list[str]:
    """Remove a document by doc id (or a unique prefix) or file name.  Returns file names.

    The documents folder is the source of truth, so the source file leaves it too: it is
    moved (not deleted) into ``<data dir>/removed/``, from where it can be put back.
    """
    target = target.strip()
    rows = kb.ledger.file_rows()
    by_id = len(target) >= 6  # an id prefix must be long enough to mean one document
    matches = {
        r["doc_id"]
        for r in rows
        if r["doc_id"] and (r["name"] == target or (by_id and r["doc_id"].startswith(target)))
    }
    if not matches:
        raise KeyError(f"no document matches {target!r} (give a file name or a document id)")
    if len(matches) > 1:
        raise KeyError(f"{target!r} matches {len(matches)} documents; give more of the document id")
    (doc_id,) = matches
    with ingest_lock(kb.settings.lock_path):
        names = [r["name"] for r in rows if r["doc_id"] == doc_id]
        trash = kb.settings.data_dir / "removed"
        for r in rows:
            if r["doc_id"] == doc_id:
                source = Path(r["path"])
                if source.is_file():
                    trash.mkdir(parents=True, exist_ok=True)
                    source.replace(trash / f"{time.strftime('%Y%m%d-%H%M%S')}-{source.name}")
                kb.ledger.forget_file(r["path"])
        kb.mark_dirty(True)  # a crash between ledger and Chroma leaves vectors for repair()
        kb.remove_document(doc_id)
        kb.mark_dirty(False)
    return names
