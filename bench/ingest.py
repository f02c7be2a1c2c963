"""Ingest throughput: our pipeline against the LangChain tutorial, and against raw embedding.

A cold ingest of a corpus folder (default ``../shared/corpus``; ``--corpus`` repeated: several, together) into a fresh temporary data
folder (so the embedding cache is empty), with ``ingest.pipeline.ingest``:

* pages/s, chunks/s and seconds for the ingest itself; the model load (and, for the ONNX
  backends, the one-off export into the fresh folder) is timed apart, before it;
* peak memory: ``ru_maxrss`` of the ingesting process (``RUSAGE_SELF``) and of the PDF
  extraction worker, a child process: its ``VmHWM`` sampled from ``/proc`` while it runs,
  and ``RUSAGE_CHILDREN`` (which on Linux also counts the parent's memory at the fork, so
  it overstates the worker);
* end-to-end against raw embedding: the very texts the ingest embedded (distinct texts,
  context header included, in the ingest's order) embedded again with
  ``kb.embed.get_embedder(settings).embed`` in batches on the same, already loaded model.
  ``raw_over_ingest = raw embed seconds / ingest seconds``: 1.0 would mean everything but
  the model (reading PDFs, chunking, tagging, storing) costs nothing;
* the tutorial pipeline (``bench/tutorial.py``: PyPDFLoader, 1000/200 character splitter,
  HuggingFaceEmbeddings on PyTorch, ``Chroma.from_documents``) on the same files, and the
  ratio of the two.

Each pipeline runs in its own child process, so peak memory figures do not mix.  The
embedding backend is ``KB_EMBED_BACKEND`` (``onnx-int8`` by default; ``onnx``, ``torch``);
the tutorial always embeds with PyTorch, as the
tutorial does.  ``os.getloadavg()`` is recorded before and after each phase: on a shared
machine compare figures only together with their load.

Command line (from the repository root)::

    python bench/ingest.py [--corpus ../shared/corpus ...] [--limit-files N] [--json]
                           [--skip-tutorial] [--skip-raw] [--raw-batch 256]
                           [--keep DIR] [--keep-tutorial DIR] [--repeats N]

``--repeats N`` runs each pipeline N times, taking turns (ours, tutorial, ours, ...), each
cold into a fresh folder, and reports the fastest run of each with every run's time beside
it; raw embedding is timed in each of our runs and its fastest time set against our fastest
ingest.  On a shared machine a single run can be slowed by whatever else runs meanwhile.

``--keep DIR`` writes our knowledge base into ``DIR`` (which must be empty or absent) and
leaves it there (for ``bench/retrieval.py`` and ``bench/query.py`` with ``KB_DATA_DIR``);
``--keep-tutorial DIR`` does the same for the tutorial's Chroma folder.  If the corpus folder
is missing the script says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import kb.settings  # noqa: E402,F401 - the offline environment (no downloads, no telemetry), set on import

DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus"


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def maxrss_mb(who: int) -> float:
    """Peak resident memory in MB (Linux reports KiB)."""
    return round(resource.getrusage(who).ru_maxrss / 1024.0, 1)


def folder_mb(path: Path) -> float:
    total = sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())
    return round(total / 1e6, 1)


def pdf_files(corpus: Path, limit: int | None) -> list[Path]:
    files = sorted(p for p in corpus.iterdir() if p.suffix.lower() == ".pdf")
    return files[:limit] if limit else files


def machine() -> dict:
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


# --------------------------------------------------------------------------------------
# phases (each runs in its own child process)
# --------------------------------------------------------------------------------------


class ChildMemory:
    """Samples the peak resident memory (``VmHWM``) of this process's children while they
    run: ``RUSAGE_CHILDREN`` alone overstates a fork-and-exec'd worker, because Linux
    counts the parent's resident memory at the moment of the fork into the child's peak."""

    def __init__(self, interval: float = 0.25):
        import threading

        self.interval = interval
        self.peaks: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = str(os.getpid())
        while not self._stop.is_set():
            for entry in Path("/proc").iterdir():
                if not entry.name.isdigit():
                    continue
                try:
                    fields = dict(
                        line.split(":", 1) for line in (entry / "status").read_text().splitlines() if ":" in line
                    )
                except OSError:
                    continue
                if fields.get("PPid", "").strip() == me and "VmHWM" in fields:
                    peak = int(fields["VmHWM"].split()[0]) / 1024.0
                    self.peaks[int(entry.name)] = max(self.peaks.get(int(entry.name), 0.0), peak)
            self._stop.wait(self.interval)

    def __enter__(self) -> "ChildMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_mb(self) -> float:
        return round(max(self.peaks.values(), default=0.0), 1)


def embedded_texts(settings) -> list[str]:
    """The distinct texts the ingest embedded, in ingest order (what ``embed_document`` sent
    to the model: the context header and the chunk text)."""
    from kb.knowledge_base import KnowledgeBase, embedding_text

    kb = KnowledgeBase(settings)
    try:
        documents = {d.doc_id: d for d in kb.ledger.ready_documents()}
        order = kb.ledger._db.execute(
            "SELECT doc_id FROM documents WHERE status='ready' ORDER BY added_at, rowid"
        ).fetchall()
        texts: dict[str, None] = {}
        for (doc_id,) in order:
            for chunk in kb.chunks_of(doc_id):
                texts.setdefault(embedding_text(chunk, documents[doc_id]), None)
        return list(texts)
    finally:
        kb.close()


def phase_ours(files: list[Path], data_dir: Path, raw: bool, raw_batch: int) -> dict:
    from ingest.pipeline import ingest
    from kb.embed import get_embedder
    from kb.settings import get_settings

    settings = get_settings(data_dir=data_dir, chroma_url="")
    result: dict = {"backend": settings.embed_backend, "data_dir": str(data_dir), "loadavg_before": loadavg()}
    started = time.perf_counter()
    embedder = get_embedder(settings)
    embedder.embed(["warm-up sentence"])
    result["model_seconds"] = round(time.perf_counter() - started, 2)

    with ChildMemory() as children:
        report = ingest(list(files), settings)
    summary = report.summary()
    seconds = report.seconds
    result.update(
        files=len(files),
        added=summary["added"],
        failed=summary["failed"],
        duplicate=summary["duplicate"],
        pages=summary["pages"],
        chunks=summary["chunks"],
        embedded_texts=summary["embedded"],
        seconds=round(seconds, 2),
        pages_per_s=round(summary["pages"] / seconds, 2) if seconds else 0.0,
        chunks_per_s=round(summary["chunks"] / seconds, 2) if seconds else 0.0,
        seconds_with_model=round(seconds + result["model_seconds"], 2),
        peak_rss_mb_self=maxrss_mb(resource.RUSAGE_SELF),
        peak_rss_mb_children=maxrss_mb(resource.RUSAGE_CHILDREN),
        peak_rss_mb_worker_sampled=children.peak_mb,
        disk_mb=folder_mb(data_dir),
        loadavg_after_ingest=loadavg(),
        failures=[{"file": r.file, "reason": r.reason} for r in report.failed],
    )
    if raw:
        texts = embedded_texts(settings)
        started = time.perf_counter()
        for start in range(0, len(texts), raw_batch):
            embedder.embed(texts[start : start + raw_batch])
        raw_seconds = time.perf_counter() - started
        result["raw_embed"] = {
            "texts": len(texts),
            "batch": raw_batch,
            "seconds": round(raw_seconds, 2),
            "texts_per_s": round(len(texts) / raw_seconds, 2) if raw_seconds else 0.0,
            "raw_over_ingest": round(raw_seconds / seconds, 3) if seconds else None,
            "loadavg_after": loadavg(),
        }
    return result


def phase_tutorial(files: list[Path], persist_dir: Path) -> dict:
    from bench.tutorial import run_tutorial_ingest

    before = loadavg()
    stats = dict(run_tutorial_ingest(list(files), persist_dir))
    stats.update(
        loadavg_before=before,
        loadavg_after=loadavg(),
        peak_rss_mb_self=maxrss_mb(resource.RUSAGE_SELF),
        disk_mb=folder_mb(persist_dir),
        seconds_without_model=round(stats["seconds"] - stats["model_seconds"], 2),
        backend="torch (HuggingFaceEmbeddings)",
    )
    return stats


def best_of(runs: list[dict]) -> dict:
    """The fastest of repeated runs of one pipeline, with every run's time beside it (the
    usual way to time code on a shared machine: interference only ever adds time).  Raw
    embedding is timed in each run of ours; the fastest raw time is set against the fastest
    ingest."""
    best = dict(min(runs, key=lambda run: run["seconds"]))
    best["runs"] = len(runs)
    best["seconds_each_run"] = [run["seconds"] for run in runs]
    raws = [run["raw_embed"] for run in runs if run.get("raw_embed")]
    if raws:
        raw = dict(min(raws, key=lambda r: r["seconds"]))
        raw["seconds_each_run"] = [r["seconds"] for r in raws]
        raw["raw_over_ingest"] = round(raw["seconds"] / best["seconds"], 3) if best["seconds"] else None
        best["raw_embed"] = raw
    return best


def run_phase(args: list[str]) -> dict:
    """Run one phase of this script in a child process and return its JSON."""
    process = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), *args], cwd=ROOT, capture_output=True, text=True
    )
    if process.returncode != 0:
        raise RuntimeError(f"phase {args[:2]} failed ({process.returncode}):\n{process.stderr[-4000:]}")
    return json.loads(process.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------


def format_report(report: dict) -> str:
    ours = report["ours"]
    lines = [
        f"Ingest benchmark: {report['corpus']} ({ours['files']} files)",
        f"  machine: {report['machine']['cpus']} cpus; load average at start {report['loadavg_start']}",
        *([f"  fastest of {ours['runs']} runs each (ours: {ours['seconds_each_run']} s)"] if ours.get("runs", 1) > 1 else []),
        f"  ours ({ours['backend']}): {ours['pages']} pages, {ours['chunks']} chunks in {ours['seconds']} s"
        f" = {ours['pages_per_s']} pages/s, {ours['chunks_per_s']} chunks/s"
        f"  (+ {ours['model_seconds']} s model load; {ours['failed']} failed)",
        f"        peak memory {ours['peak_rss_mb_self']} MB (ingest process), "
        f"{ours['peak_rss_mb_worker_sampled']} MB (extraction worker, sampled; RUSAGE_CHILDREN says "
        f"{ours['peak_rss_mb_children']} MB); data folder {ours['disk_mb']} MB;"
        f" load {ours['loadavg_before']} -> {ours['loadavg_after_ingest']}",
    ]
    raw = ours.get("raw_embed")
    if raw:
        lines.append(
            f"  raw embedding of the same {raw['texts']} texts: {raw['seconds']} s ({raw['texts_per_s']} texts/s);"
            f" raw/ingest = {raw['raw_over_ingest']} (share of ingest time that is embedding)"
        )
    tutorial = report.get("tutorial")
    if tutorial:
        lines += [
            f"  tutorial: {tutorial['pages']} pages, {tutorial['chunks']} chunks in {tutorial['seconds']} s"
            f" = {tutorial['pages_per_s']} pages/s, {tutorial['chunks_per_s']} chunks/s"
            f" (load {tutorial['load_seconds']} s, split {tutorial['split_seconds']} s,"
            f" model {tutorial['model_seconds']} s, embed+index {tutorial['embed_seconds']} s)",
            *([f"        each run: {tutorial['seconds_each_run']} s"] if tutorial.get("runs", 1) > 1 else []),
            f"        peak memory {tutorial['peak_rss_mb_self']} MB; Chroma folder {tutorial['disk_mb']} MB;"
            f" load {tutorial['loadavg_before']} -> {tutorial['loadavg_after']}",
        ]
        ratio = report["ratio"]
        lines.append(
            f"  ours vs tutorial, pages/s incl. model load: {ratio['pages_per_s_with_model']}x;"
            f" excl. model load: {ratio['pages_per_s_without_model']}x"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, action="append",
                        help=f"a folder of PDFs (repeatable: all are ingested together; default {DEFAULT_CORPUS})")
    parser.add_argument("--limit-files", type=int, default=None, metavar="N")
    parser.add_argument("--skip-tutorial", action="store_true")
    parser.add_argument("--skip-raw", action="store_true")
    parser.add_argument("--raw-batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=1,
                        help="run each pipeline N times, taking turns, and report the fastest run of each")
    parser.add_argument("--keep", type=Path, help="build our knowledge base here and keep it")
    parser.add_argument("--keep-tutorial", type=Path, help="build the tutorial's Chroma folder here and keep it")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--phase", choices=["ours", "tutorial"], help=argparse.SUPPRESS)
    parser.add_argument("--target", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.repeats < 1:
        parser.error("--repeats must be 1 or more")
    corpora = args.corpus or [DEFAULT_CORPUS]
    missing = [str(corpus) for corpus in corpora if not corpus.is_dir()]
    if missing:
        print(f"skipped: {', '.join(missing)} not found")
        return 0
    files = [path for corpus in corpora for path in pdf_files(corpus, None)][: args.limit_files]
    if not files:
        print(f"skipped: no PDF files in {', '.join(str(c) for c in corpora)}")
        return 0

    if args.phase == "ours":
        print(json.dumps(phase_ours(files, args.target, not args.skip_raw, args.raw_batch)))
        return 0
    if args.phase == "tutorial":
        print(json.dumps(phase_tutorial(files, args.target)))
        return 0

    for keep in (args.keep, args.keep_tutorial):
        if keep and keep.exists() and any(keep.iterdir()):
            parser.error(f"{keep} is not empty: a cold ingest needs an empty folder")
    common = [part for corpus in corpora for part in ("--corpus", str(corpus))]
    common += ["--limit-files", str(args.limit_files)] if args.limit_files else []
    report: dict = {"corpus": ", ".join(str(c.resolve()) for c in corpora), "machine": machine(), "loadavg_start": loadavg()}
    scratch = Path(tempfile.mkdtemp(prefix="kb-bench-ingest-"))
    try:
        extra = ["--skip-raw"] if args.skip_raw else []
        ours_runs, tutorial_runs = [], []
        for attempt in range(args.repeats):  # the pipelines take turns, so load hits both alike
            ours_dir = args.keep if (args.keep and attempt == 0) else scratch / f"ours-{attempt}"
            ours_runs.append(run_phase(["--phase", "ours", "--target", str(ours_dir), "--raw-batch", str(args.raw_batch), *extra, *common]))
            if not args.skip_tutorial:
                tutorial_dir = args.keep_tutorial if (args.keep_tutorial and attempt == 0) else scratch / f"tutorial-{attempt}"
                tutorial_runs.append(run_phase(["--phase", "tutorial", "--target", str(tutorial_dir), *common]))
        report["ours"] = best_of(ours_runs)
        if tutorial_runs:
            report["tutorial"] = best_of(tutorial_runs)
            ours, tutorial = report["ours"], report["tutorial"]
            with_model = ours["pages"] / ours["seconds_with_model"] if ours["seconds_with_model"] else 0
            without_model = ours["pages_per_s"]
            tutorial_without = tutorial["pages"] / tutorial["seconds_without_model"] if tutorial["seconds_without_model"] else 0
            report["ratio"] = {
                "pages_per_s_with_model": round(with_model / tutorial["pages_per_s"], 2) if tutorial["pages_per_s"] else None,
                "pages_per_s_without_model": round(without_model / tutorial_without, 2) if tutorial_without else None,
                "note": "ours / tutorial; >1 means our pipeline is faster (it also tags, keeps pages and BM25 terms)",
            }
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report["loadavg_end"] = loadavg()
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
