"""Hostile input: every kind of broken, malicious or misnamed "PDF" (``tests/hostile.py``)
is either ingested or refused with a one-line reason, within a time and memory bound,
without stopping the rest of the ingest and without changing anything else in the
knowledge base.

The fast test runs each hostile kind once plus 20 seeded mutants of real PDFs in one
ingest, in this process; the slow test runs the benchmark (``bench/hostile.py``) over the
full corpus of at least 200 mutants, in a watched driver process that counts hangs and
crashes.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
import traceback
import zlib
from dataclasses import replace
from pathlib import Path

import pytest

import hostile
from conftest import CORPUS, REPO
from ingest.extract import ExtractOptions
from ingest.pipeline import ingest
from ingest.reader import ReadError, read_pdf
from ingest.worker import ExtractionWorker
from kb.knowledge_base import KnowledgeBase

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import hostile as bench  # noqa: E402

FAST_TIMEOUT_S = 5.0

# What each hostile kind must come to: a status and a fragment of the reason.
EXPECTED = {
    "bomb-flate-2gib.pdf": ("failed", "decompression bomb"),
    "bomb-double-flate-32gib.pdf": ("failed", "decompression bomb"),
    "bomb-repeated-contents.pdf": ("failed", "decompression bomb"),
    "time-bomb-2000-pages.pdf": ("failed", f"took longer than {FAST_TIMEOUT_S:g} s"),
    "operator-flood.pdf": ("failed", ""),  # time bound here; the reader's token limit with more time
    "claims-100000-pages.pdf": ("failed", "claims 100,000 pages (limit 5,000)"),
    "kids-100000-pages.pdf": ("failed", "claims 100,000 pages (limit 5,000)"),
    "kids-100000-count-1.pdf": ("failed", ""),
    "kids-cycle.pdf": ("failed", "cyclic"),
    "self-references.pdf": (None, ""),  # readable text despite the loops: either outcome is fine
    "deep-kids-indirect.pdf": ("failed", "page tree depth"),
    "deep-kids-inline.pdf": ("failed", ""),
    "deep-array-content.pdf": ("added", ""),  # PDFium steps over the nesting to the text after it
    "deep-array-info.pdf": (None, ""),
    "javascript.pdf": ("added", ""),
    "html-saved-as.pdf": ("failed", "not a PDF: the content is an HTML page"),
    "zip-saved-as.pdf": ("failed", "not a PDF: the content is a ZIP archive"),
    "empty.pdf": ("failed", "empty file (0 bytes)"),
    "text-saved-as.pdf": ("failed", "not a PDF"),
    "noise.pdf": ("failed", "not a PDF"),
}


def shared_models(data_dir: Path, base: Path) -> None:
    """Point the models folder at one folder per test session, so the embedding model is
    loaded once for the session (the embedder is cached per models folder)."""
    shared = base / "shared-models"
    shared.mkdir(exist_ok=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    if not (data_dir / "models").exists():
        (data_dir / "models").symlink_to(shared, target_is_directory=True)


def assert_one_line(reason: str) -> None:
    assert reason.strip() and "\n" not in reason and len(reason) <= 200, reason


# --------------------------------------------------------------------------------------
# the corpus itself
# --------------------------------------------------------------------------------------


def test_the_generated_bombs_are_small_and_really_inflate_to_gigabytes():
    single = hostile.flate_bomb(8 << 20)
    assert zlib.decompress(single) == b" " * (8 << 20)  # valid stream, checksum included
    stream = hostile.flate_bomb(2 << 30)
    assert len(stream) < 3 << 20  # 2 GiB in under 3 MB
    inflater = zlib.decompressobj()
    head = inflater.decompress(stream[: 64 << 10], 256 << 20)
    assert len(head) > 50 << 20 and not head.strip()  # 64 KB of it give > 50 MB of spaces
    kinds = {v.name: v for v in hostile.hostile_files()}
    assert set(kinds) == set(EXPECTED)
    assert len(kinds["bomb-double-flate-32gib.pdf"].data) < 200 << 10
    assert b"/Count 100000" in kinds["claims-100000-pages.pdf"].data
    assert kinds["kids-100000-pages.pdf"].data.count(b"3 0 R") >= 100_000
    assert b"/OpenAction" in kinds["javascript.pdf"].data and b"/JS" in kinds["javascript.pdf"].data


def test_mutants_are_seeded_and_distinct(corpus):
    first = hostile.mutants(corpus, 30, seed=5)
    again = hostile.mutants(corpus, 30, seed=5)
    other = hostile.mutants(corpus, 30, seed=6)
    assert [v.data for v in first] == [v.data for v in again]
    assert [v.data for v in first] != [v.data for v in other]
    assert len({v.data for v in first}) == 30
    assert {v.kind for v in first} == {"truncation", "byte flips"}


# --------------------------------------------------------------------------------------
# the bounds
# --------------------------------------------------------------------------------------


def test_a_page_count_claim_is_refused_without_walking_the_page_tree(monkeypatch):
    from pypdf._doc_common import PdfDocCommon

    def walked(*args, **kwargs):
        raise AssertionError("the page tree was walked")

    monkeypatch.setattr(PdfDocCommon, "_flatten", walked)
    for data in (hostile.claims_pages(100_000), hostile.many_kids(100_000)):
        started = time.perf_counter()
        with pytest.raises(ReadError) as refused:
            read_pdf(data, max_pages=ExtractOptions().max_pages)
        assert str(refused.value) == "refused: the file claims 100,000 pages (limit 5,000)"
        assert time.perf_counter() - started < 5
    monkeypatch.undo()
    content = read_pdf(hostile.claims_pages(3), max_pages=5)  # a small lie is not refused: one page
    assert len(content.pages) == 1


def test_the_worker_stops_a_time_bomb_itself_and_carries_on():
    with ExtractionWorker(ExtractOptions(), timeout_s=2, memory_mb=2048) as worker:
        worker.submit(hostile.time_bomb(2000), "bomb")
        pid = worker._process.pid
        started = time.perf_counter()
        with pytest.raises(ReadError, match=r"reading took longer than 2 s: stopped and skipped"):
            worker.result()
        assert time.perf_counter() - started < 30
        worker.submit(hostile.simple_pdf(), "good")
        assert len(worker.result().chunks) == 1
        assert worker._process.pid == pid  # stopped by its own timer: no restart was needed


def test_a_worker_that_cannot_answer_is_killed_and_replaced():
    with ExtractionWorker(ExtractOptions(), timeout_s=1, memory_mb=2048) as worker:
        worker.submit(hostile.simple_pdf(), "warm-up")
        worker.result()
        worker.submit(hostile.time_bomb(50), "frozen")
        frozen = worker._process.pid
        os.kill(frozen, signal.SIGSTOP)  # a hang no signal handler inside can break
        with pytest.raises(ReadError, match="took longer than 1 s"):
            worker.result()
        worker.submit(hostile.time_bomb(50), "crashed")
        os.kill(worker._process.pid, signal.SIGKILL)
        with pytest.raises(ReadError, match=r"the reader crashed on this file \(exit code -9\)"):
            worker.result()
        worker.submit(hostile.simple_pdf(), "good")
        assert len(worker.result().chunks) == 1
    with pytest.raises(ProcessLookupError):
        os.kill(frozen, 0)


def test_the_memory_bound_refuses_a_bomb_even_without_the_readers_own_limits():
    with ExtractionWorker(ExtractOptions(), timeout_s=30, memory_mb=300) as worker:
        worker.submit(hostile.bomb_single(2), "bomb")
        with pytest.raises(ReadError, match=r"needs more memory than allowed \(300 MB\) to read: refused"):
            worker.result()


def test_a_worker_dies_with_the_process_that_started_it(tmp_path):
    script = (
        "import sys, time\n"
        f"sys.path.insert(0, {str(REPO / 'tests')!r})\n"
        "import hostile\n"
        "from ingest.extract import ExtractOptions\n"
        "from ingest.worker import ExtractionWorker\n"
        "worker = ExtractionWorker(ExtractOptions(), timeout_s=600, memory_mb=2048)\n"
        "worker.submit(hostile.time_bomb(2000), 'bomb')\n"
        "print(worker._process.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True)
    worker_pid = int(parent.stdout.readline())
    time.sleep(1.0)
    os.kill(worker_pid, 0)  # busy with the bomb
    parent.kill()
    parent.wait(timeout=10)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and _alive(worker_pid):
        time.sleep(0.2)
    if _alive(worker_pid):
        os.kill(worker_pid, signal.SIGKILL)
        pytest.fail("the extraction worker outlived the ingest that started it")


def _alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped by whoever adopted it does not count)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def test_the_ingest_process_never_inflates_anything_itself(settings, tmp_path, monkeypatch):
    """Bombs are only ever opened in the bounded worker: this process calls no
    decompressor and its memory does not grow."""
    warm_up = tmp_path / "warm-up"  # whatever the ingest imports lazily is imported now
    warm_up.mkdir()
    (warm_up / "empty.pdf").write_bytes(b"")
    ingest([warm_up], replace(settings, data_dir=tmp_path / "warm-up-data"))
    folder = settings.documents_dir
    for variant in hostile.hostile_files():
        if variant.kind == "decompression bomb":
            (folder / variant.name).write_bytes(variant.data)
    calls = []

    def spy(name, original):
        def called(*args, **kwargs):
            calls.append((name, "".join(traceback.format_stack(limit=8))))
            return original(*args, **kwargs)
        return called

    for name in ("decompress", "decompressobj"):
        monkeypatch.setattr(zlib, name, spy(name, getattr(zlib, name)))
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    report = ingest([folder], settings)
    peak_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert report.count("failed") == 3
    for failure in report.failed:
        assert "decompression bomb" in failure.reason
    assert not calls, f"this process decompressed something: {calls[0][1]}"
    assert peak_after - peak_before < 100 * 1024  # KiB: less than 100 MB more than ever before


# --------------------------------------------------------------------------------------
# the fast subset: every kind once and 20 mutants, in one ingest
# --------------------------------------------------------------------------------------


def test_every_hostile_kind_and_twenty_mutants_are_handled_cleanly(settings, tmp_path, tmp_path_factory):
    variants = list(hostile.hostile_files())
    if CORPUS.is_dir():
        variants += hostile.mutants(CORPUS, 20, seed=bench.DEFAULT_SEED, sources=2)  # two small PDFs: quick
    variants_dir = tmp_path / "variants"
    hostile.write_variants(variants_dir, variants)
    good = hostile.write_good_documents(tmp_path / "good")[0].parent
    shared_models(settings.data_dir, tmp_path_factory.getbasetemp())
    shared_models(tmp_path / "reference", tmp_path_factory.getbasetemp())
    kb = KnowledgeBase(replace(settings, extract_timeout_s=FAST_TIMEOUT_S))

    started = time.perf_counter()
    outcome = bench.batch_check(kb, variants_dir, good, tmp_path / "reference")
    seconds = time.perf_counter() - started

    records = {r["name"]: r for r in outcome["records"]}
    assert set(records) == {v.name for v in variants}, "a file got no result"
    for name, record in records.items():
        assert record["status"] in {"added", "failed"}, record
        if record["status"] == "failed":
            assert_one_line(record["reason"])
            assert record["own_row_ok"], f"{name}: its own ledger line is wrong"
        assert (record.get("seconds") or 0) < FAST_TIMEOUT_S + 60, record
    for name, (status, fragment) in EXPECTED.items():
        record = records[name]
        if status:
            assert record["status"] == status, record
        assert fragment in record["reason"], record
    assert outcome["differing_tables"] == [], "a failed file changed the knowledge base"
    assert outcome["integrity"] == {"pending": 0, "missing_in_chroma": 0, "extra_in_chroma": 0}
    ingested = sum(r["status"] == "added" for r in records.values())
    assert outcome["reference_documents"] == ingested + len(hostile.GOOD_DOCUMENTS)
    print(f"\n{len(variants)} variants in {seconds:.0f} s: {ingested} ingested, {len(variants) - ingested} refused")


def test_a_failed_file_alone_changes_nothing_but_its_own_line(settings, tmp_path, tmp_path_factory):
    """The per-file form of the check (the slow benchmark's ``alone`` mode), on a few kinds."""
    chosen = [v for v in hostile.hostile_files() if v.name in {"bomb-flate-2gib.pdf", "kids-cycle.pdf"}]
    variants_dir = tmp_path / "variants"
    hostile.write_variants(variants_dir, chosen)
    good = hostile.write_good_documents(tmp_path / "good")[0].parent
    shared_models(settings.data_dir, tmp_path_factory.getbasetemp())
    kb = KnowledgeBase(settings)
    events = []
    bench.alone_check(kb, variants_dir, [v.name for v in chosen], good, events.append)
    files = [e for e in events if e["event"] == "file"]
    assert [e["name"] for e in files] == [v.name for v in chosen]
    for event in files:
        assert event["status"] == "failed" and event["changed"] == [] and event["own_row_ok"], event


# --------------------------------------------------------------------------------------
# the full corpus, through the benchmark's watched driver process
# --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_full_hostile_corpus(corpus, tmp_path):
    variants, good = bench.build_corpus(tmp_path, corpus=corpus, mutants=200)
    assert len(variants) >= 200
    summary = bench.run(variants, good, tmp_path, mode="batch", timeout_s=30)
    print("\n" + bench.format_summary(summary))
    assert summary["variants"] >= 200
    assert summary["hangs"] == 0 and summary["crashes"] == 0
    assert summary["kb_changes_by_failed_files"] == 0 and summary["differing_tables"] == []
    assert summary["handled_cleanly"] == summary["variants"]
    assert bench.properties_hold(summary)
