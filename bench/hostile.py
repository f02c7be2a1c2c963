"""Hostile-corpus benchmark: broken, malicious and misnamed PDFs against the real ingest.

The corpus (``tests/hostile.py``) is generated into a temporary folder: every hostile kind
once (decompression bombs, time bombs, page trees claiming 100,000 pages, cycles, 100,000
levels of nesting, JavaScript, HTML/ZIP/empty files named ``.pdf``) plus seeded truncations
and byte flips of the smallest PDFs of the shared corpus.  A temporary knowledge base is
first filled with a few good generated PDFs; the variants then go through the real
pipeline (extraction worker, model, Chroma, ledger) in one of two modes:

``batch`` (default)
    All variants in one folder, ingested by one ``ingest`` call: the hostile files sit
    between the others, so the run shows that everything else goes on.  Afterwards a
    *reference* knowledge base is built from the good PDFs and the variants that were
    ingested, and nothing else.  The two must be identical (every ledger row, cached
    vector and Chroma record; see ``kb.backup.content_state``) apart from the failed
    files' own lines in the files table, each of which must say ``failed`` with its reason
    and point at no document.  So a failed file changed nothing else.
``alone``
    Each variant ingested alone, one after the other; the knowledge base's full content is
    taken before and after each, and a failed variant may change its own line only.

The ingest runs in a driver process watched from here: a driver that dies is a *crash*,
one that makes no progress within the watchdog time is a *hang*; the file at fault is set
aside, the driver restarted, and the rest goes on.  Printed: variants tried (by kind),
handled cleanly (ingested, or failed with a one-line reason and no other change), stopped
by the time bound / memory bound / refused by a reader safety limit, hangs and crashes
(must be 0), knowledge-base changes caused by failed files (must be 0), time taken and the
peak memory of the extraction workers and of the ingest process.

Command line (from the repository root)::

    python -m bench.hostile [--mutants 200] [--seed N] [--mode batch|alone] [--timeout 30]
                            [--memory-mb 2048] [--corpus ../shared/corpus] [--workdir DIR]
                            [--json]

The exit status is 0 when every property holds, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "tests") not in sys.path:
    sys.path.insert(0, str(REPO / "tests"))

import hostile as corpus_kinds  # noqa: E402  (tests/hostile.py)

DEFAULT_CORPUS = REPO.parent / "shared" / "corpus"
DEFAULT_SEED = 20240501
STARTUP_WATCHDOG_S = 900.0
INGESTED = {"added", "updated", "unchanged", "duplicate"}


# ======================================================================================
# the corpus
# ======================================================================================


def build_corpus(folder: Path, *, corpus: Path | None, mutants: int, seed: int = DEFAULT_SEED,
                 kinds: bool = True) -> tuple[list[corpus_kinds.Variant], Path]:
    """Write the hostile variants into ``folder/variants`` and the good PDFs into
    ``folder/good``.  Returns the variants and the good folder."""
    variants: list[corpus_kinds.Variant] = list(corpus_kinds.hostile_files()) if kinds else []
    if mutants and corpus is not None and Path(corpus).is_dir():
        variants += corpus_kinds.mutants(Path(corpus), mutants, seed=seed)
    corpus_kinds.write_variants(folder / "variants", variants)
    good = folder / "good"
    corpus_kinds.write_good_documents(good)
    return variants, good


# ======================================================================================
# the checks (run in the driver process, or in a test's own process)
# ======================================================================================


def make_settings(data_dir: Path, good: Path, timeout_s: float, memory_mb: int):
    from kb.settings import get_settings

    return get_settings(data_dir=Path(data_dir), documents_dir=Path(good), chroma_url="", llm="",
                        extract_timeout_s=float(timeout_s), extract_memory_mb=int(memory_mb))


def ingest_good(kb, good: Path) -> None:
    from ingest.pipeline import ingest

    if not kb.ledger.ready_documents():
        report = ingest([Path(good)], kb.settings, knowledge_base=kb)
        if report.count("added") != len(corpus_kinds.GOOD_DOCUMENTS):
            raise RuntimeError(f"the good documents did not ingest: {report.summary()}")


def _result_record(result, seconds: float | None = None) -> dict:
    record = {"name": result.file, "status": result.status, "reason": result.reason or "",
              "pages": result.pages, "chunks": result.chunks}
    if seconds is not None:
        record["seconds"] = seconds
    return record


def _own_row_ok(kb, path: Path, reason: str) -> bool:
    """A failed file's own line: failed, with the reason, and pointing at no document."""
    row = kb.ledger.file_row(str(path)) or {}
    return row.get("status") == "failed" and row.get("doc_id") is None and row.get("reason") == reason


def integrity(kb) -> dict:
    visible = {row["chunk_id"] for row in kb.ledger.visible_chunk_rows()}
    stored = set(kb.store.all_ids())
    return {"pending": len(kb.ledger.pending_documents()), "missing_in_chroma": len(visible - stored),
            "extra_in_chroma": len(stored - visible)}


def batch_check(kb, variants_dir: Path, good: Path, reference_dir: Path, on_progress=None, heartbeat=None) -> dict:
    """Ingest the whole variants folder in one run, then compare with a reference built
    from the good PDFs and the ingested variants only.  Returns per-file records and the
    comparison."""
    from ingest.pipeline import ingest
    from kb.backup import content_state, seed_embeddings
    from kb.knowledge_base import KnowledgeBase

    ingest_good(kb, good)
    times: dict[str, float] = {}
    last = [time.perf_counter()]

    def progress(step) -> None:
        now = time.perf_counter()
        times[step.current] = now - last[0]
        last[0] = now
        if on_progress:
            on_progress(step.current, times[step.current])

    report = ingest([Path(variants_dir)], kb.settings, knowledge_base=kb, progress=progress)
    records = {r.file: _result_record(r, times.get(r.file)) for r in report.results}
    failed_paths = []
    for record in records.values():
        if record["status"] == "failed":
            path = (Path(variants_dir) / record["name"]).resolve()
            failed_paths.append(path)
            record["own_row_ok"] = _own_row_ok(kb, path, record["reason"])
    ingested_paths = sorted((Path(variants_dir) / r["name"]).resolve() for r in records.values()
                            if r["status"] in INGESTED)

    reference_settings = replace(kb.settings, data_dir=Path(reference_dir))
    reference = KnowledgeBase(reference_settings)
    try:
        seed_embeddings(kb.settings.ledger_path, reference.ledger._db)  # vectors are not made twice
        ingest_good(reference, good)
        if ingested_paths:
            ingest(ingested_paths, reference_settings, knowledge_base=reference,
                   progress=(lambda step: heartbeat()) if heartbeat else None)
        mine = content_state(kb.settings, exclude_paths=failed_paths, store=kb.store, ledger_db=kb.ledger._db)
        theirs = content_state(reference_settings, store=reference.store, ledger_db=reference.ledger._db)
    finally:
        reference.close()
    differing = [table for table in mine if mine[table] != theirs.get(table)]
    return {
        "records": list(records.values()),
        "differing_tables": differing,
        "reference_documents": len(theirs["documents"]),
        "integrity": integrity(kb),
    }


def alone_check(kb, variants_dir: Path, names: list[str], good: Path, emit) -> None:
    """Ingest each named variant alone; ``emit`` gets a record per variant."""
    from ingest.pipeline import ingest
    from kb.backup import content_state

    ingest_good(kb, good)
    for name in names:
        path = (Path(variants_dir) / name).resolve()
        state = dict(settings=kb.settings, exclude_paths=[path], store=kb.store, ledger_db=kb.ledger._db)
        before = content_state(**state)
        emit({"event": "start", "name": name})  # from here on, a death is the ingest's
        started = time.perf_counter()
        try:
            report = ingest([path], kb.settings, knowledge_base=kb)
        except Exception as error:  # an exception escaping ingest: not handled cleanly
            emit({"event": "file", "name": name, "status": "error", "reason": f"{type(error).__name__}: {error}",
                  "traceback": traceback.format_exc()[-2000:], "seconds": time.perf_counter() - started})
            continue
        seconds = time.perf_counter() - started
        emit({"event": "ingested", "name": name})
        if len(report.results) != 1:
            emit({"event": "file", "name": name, "status": "error",
                  "reason": f"expected one result, got {[asdict(r) for r in report.results]}"})
            continue
        record = {"event": "file", **_result_record(report.results[0], seconds)}
        if record["status"] == "failed":
            after = content_state(**state)
            record["changed"] = [table for table in before if before[table] != after[table]]
            record["own_row_ok"] = _own_row_ok(kb, path, record["reason"])
        emit(record)


# ======================================================================================
# the driver (a child process running the ingest)
# ======================================================================================


def _emit(event: dict) -> None:
    sys.__stdout__.write(json.dumps(event, default=str) + "\n")
    sys.__stdout__.flush()


class ChildMemory:
    """Samples the peak resident memory (VmHWM) of this process's children - the extraction
    workers - twice a second.  (``getrusage`` cannot tell: a child forked from a large
    process is charged that process's pages until it execs.)"""

    def __init__(self, interval: float = 0.5):
        import threading

        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)
        self._thread.start()

    def _children(self) -> list[str]:
        found = []
        for task in Path(f"/proc/{os.getpid()}/task").glob("*"):
            try:
                found += (task / "children").read_text().split()
            except OSError:
                pass
        return found

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            for pid in self._children():
                try:
                    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                        if line.startswith("VmHWM:"):
                            self.peak_kb = max(self.peak_kb, int(line.split()[1]))
                except (OSError, ValueError):
                    pass

    def stop(self) -> float:
        self._stop.set()
        return self.peak_kb / 1024


_CHILD_MEMORY: ChildMemory | None = None


def _memory() -> dict:
    return {"worker_max_rss_mb": _CHILD_MEMORY.stop() if _CHILD_MEMORY else 0.0,
            "driver_max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def drive(plan_path: Path) -> None:
    global _CHILD_MEMORY
    sys.stdout = sys.stderr  # only our JSON lines go to stdout
    _CHILD_MEMORY = ChildMemory()
    plan = json.loads(Path(plan_path).read_text())
    from kb.knowledge_base import KnowledgeBase

    settings = make_settings(plan["data_dir"], plan["good_dir"], plan["timeout_s"], plan["memory_mb"])
    kb = KnowledgeBase(settings)
    ingest_good(kb, Path(plan["good_dir"]))
    _emit({"event": "ready"})
    if plan["mode"] == "alone":
        alone_check(kb, Path(plan["variants_dir"]), plan["files"], Path(plan["good_dir"]), _emit)
        _emit({"event": "done", "integrity": integrity(kb), **_memory()})
        return
    variants = Path(plan["variants_dir"])
    pending = sorted(p.name for p in variants.glob("*.pdf")
                     if (kb.ledger.file_row(str(p.resolve())) or {}).get("status") != "ok")
    _emit({"event": "candidates", "names": pending})
    outcome = batch_check(kb, variants, Path(plan["good_dir"]), Path(plan["reference_dir"]),
                          on_progress=lambda name, seconds: _emit({"event": "progress", "name": name}),
                          heartbeat=lambda: _emit({"event": "heartbeat"}))
    _emit({"event": "done", **outcome, **_memory()})


# ======================================================================================
# the watcher
# ======================================================================================


@dataclass
class Outcome:
    name: str
    kind: str
    note: str
    size: int
    status: str = ""  # added | failed | hang | crash | error | ...
    reason: str = ""
    seconds: float = 0.0
    changed: list[str] = field(default_factory=list)
    own_row_ok: bool = True

    @property
    def ingested(self) -> bool:
        return self.status in INGESTED

    @property
    def clean(self) -> bool:
        if self.ingested:
            return True
        return (
            self.status == "failed" and bool(self.reason.strip()) and "\n" not in self.reason
            and len(self.reason) <= 200 and not self.changed and self.own_row_ok
        )


class _Driver:
    def __init__(self, plan: dict, work: Path):
        self.plan_path = work / f"plan-{time.time_ns()}.json"
        self.plan_path.write_text(json.dumps(plan))
        self.log = (work / "driver.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.hostile", "--driver", str(self.plan_path)],
            cwd=str(REPO), stdout=subprocess.PIPE, stderr=self.log, start_new_session=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1", "ANONYMIZED_TELEMETRY": "False", "KB_CHROMA_URL": ""},
        )
        self.buffer = b""

    def next_event(self, timeout: float) -> dict | None:
        """The next JSON line, None on timeout; {"event": "exit"} when the driver is gone."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self.process.stdout], [], [], left)
            if not ready:
                return None
            block = os.read(self.process.stdout.fileno(), 1 << 20)
            if not block:
                return {"event": "exit", "code": self.process.wait()}
            self.buffer += block
        line, self.buffer = self.buffer.split(b"\n", 1)
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            return {"event": "noise", "line": line[:200].decode("utf-8", "replace")}

    def kill(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=30)
        self.close()

    def close(self) -> None:
        if self.process.stdout:
            self.process.stdout.close()
        self.log.close()


def run(variants: list[corpus_kinds.Variant], good: Path, work: Path, *, mode: str = "batch",
        timeout_s: float = 30.0, memory_mb: int = 2048, watchdog_s: float | None = None, progress=None) -> dict:
    """Put every variant through the ingest in a watched driver process; return the figures."""
    work = Path(work)
    watchdog_s = watchdog_s or (2 * timeout_s + 300.0)
    outcomes = [Outcome(v.name, v.kind, v.note, len(v.data)) for v in variants]
    by_name = {o.name: o for o in outcomes}
    variants_dir, quarantine = work / "variants", work / "set-aside"
    plan = {"mode": mode, "data_dir": str(work / "data"), "reference_dir": str(work / "reference"),
            "good_dir": str(good), "variants_dir": str(variants_dir), "timeout_s": timeout_s, "memory_mb": memory_mb}
    remaining = [v.name for v in variants]
    finals: list[dict] = []
    comparison: dict = {}
    restarts = 0
    started = time.perf_counter()
    while remaining:
        driver = _Driver({**plan, "files": remaining}, work)
        event = driver.next_event(STARTUP_WATCHDOG_S)
        if not event or event.get("event") != "ready":
            driver.kill()
            raise RuntimeError(f"the ingest driver did not start: {event}; see {work / 'driver.log'}")
        candidates: list[str] = []
        current: str | None = None
        culprit: tuple[str, str] | None = None
        while True:
            event = driver.next_event(watchdog_s)
            kind = event.get("event") if event else "timeout"
            if kind == "candidates":
                candidates = list(event["names"])
                current = candidates[0] if candidates else None
            elif kind == "progress":  # batch: one file done; the next one is under way
                done = event["name"]
                if done in candidates:
                    candidates.remove(done)
                current = candidates[0] if candidates else None
                if progress and done in by_name:
                    progress(done)
            elif kind == "heartbeat":
                current = None  # the variants are done; the reference is being built
            elif kind == "start":
                current = event["name"]
            elif kind == "ingested":
                current = None
            elif kind == "file":
                _apply(by_name[event["name"]], event)
                if progress:
                    progress(event["name"])
            elif kind == "done":
                finals.append(event)
                for record in event.get("records", []):
                    _apply(by_name[record["name"]], record)
                comparison = {k: event[k] for k in ("differing_tables", "reference_documents") if k in event}
                driver.process.wait(timeout=120)
                driver.close()
                break
            elif kind in {"timeout", "exit"}:
                if kind == "timeout":
                    driver.kill()
                else:
                    driver.close()
                if not current:
                    raise RuntimeError(f"the benchmark driver failed outside ingest ({event}); see {work / 'driver.log'}")
                culprit = (current, "hang" if kind == "timeout" else "crash")
                break
        if culprit:
            name, status = culprit
            by_name[name].status = status
            by_name[name].reason = (f"no progress within {watchdog_s:.0f} s" if status == "hang"
                                    else f"the ingest process died (exit code {event.get('code')})")
            quarantine.mkdir(exist_ok=True)
            if (variants_dir / name).exists():
                (variants_dir / name).replace(quarantine / name)
            restarts += 1
        done_names = {o.name for o in outcomes if o.status}
        remaining = [] if not culprit and mode == "batch" else [n for n in remaining if n not in done_names]
    return summarise(outcomes, finals, comparison, time.perf_counter() - started, restarts, mode, timeout_s, memory_mb)


def _apply(outcome: Outcome, record: dict) -> None:
    outcome.status = record.get("status", "")
    outcome.reason = record.get("reason", "") or ""
    outcome.seconds = float(record.get("seconds") or 0.0)
    outcome.changed = list(record.get("changed", []))
    outcome.own_row_ok = bool(record.get("own_row_ok", True))


def _reason_group(reason: str) -> str:
    text = reason.split(" (")[0]
    for marker in (" on page ", ": skipped"):
        text = text.split(marker)[0]
    return text[:90]


def summarise(outcomes: list[Outcome], finals: list[dict], comparison: dict, seconds: float, restarts: int,
              mode: str, timeout_s: float, memory_mb: int) -> dict:
    failed = [o for o in outcomes if o.status == "failed"]
    state = {"pending": 0, "missing_in_chroma": 0, "extra_in_chroma": 0}
    for final in finals:
        for key in state:
            state[key] = max(state[key], final["integrity"][key])
    differing = comparison.get("differing_tables", [])
    if mode == "batch":  # the reference comparison covers every failed file at once
        changes = len(failed) if differing else 0
        changes += sum(not o.own_row_ok for o in failed) if not differing else 0
    else:
        changes = sum(bool(o.changed) or not o.own_row_ok for o in failed)
    return {
        "mode": mode,
        "variants": len(outcomes),
        "by_kind": dict(sorted(Counter(o.kind for o in outcomes).items())),
        "handled_cleanly": sum(o.clean for o in outcomes) if not differing else 0,
        "ingested": sum(o.ingested for o in outcomes),
        "failed_with_reason": sum(o.clean for o in failed),
        "stopped_by_time_bound": sum("took longer than" in o.reason for o in failed),
        "stopped_by_memory_bound": sum("more memory than allowed" in o.reason for o in failed),
        "refused_by_reader_limits": sum(o.reason.startswith("refused") for o in failed),
        "hangs": sum(o.status == "hang" for o in outcomes),
        "crashes": sum(o.status in {"crash", "error"} for o in outcomes),
        "unreported": sum(not o.status for o in outcomes),
        "kb_changes_by_failed_files": changes,
        "differing_tables": differing,
        "reference_documents": comparison.get("reference_documents"),
        "not_clean": [asdict(o) for o in outcomes if not o.clean],
        "integrity": state,
        "driver_restarts": restarts,
        "seconds": round(seconds, 1),
        "slowest": max(((round(o.seconds, 2), o.name) for o in outcomes), default=(0.0, "")),
        "reasons": dict(Counter(_reason_group(o.reason) for o in failed).most_common()),
        "hostile_kinds": {o.name: {"status": o.status, "reason": o.reason, "seconds": round(o.seconds, 2)}
                          for o in outcomes if not o.name.startswith("mutant-")},
        "worker_max_rss_mb": round(max((f["worker_max_rss_mb"] for f in finals), default=0.0)),
        "driver_max_rss_mb": round(max((f["driver_max_rss_mb"] for f in finals), default=0.0)),
        "timeout_s": timeout_s,
        "memory_mb": memory_mb,
    }


def properties_hold(summary: dict) -> bool:
    return (
        summary["handled_cleanly"] == summary["variants"]
        and summary["hangs"] == 0
        and summary["crashes"] == 0
        and summary["unreported"] == 0
        and summary["kb_changes_by_failed_files"] == 0
        and not summary["differing_tables"]
        and not any(summary["integrity"].values())
    )


def format_summary(s: dict) -> str:
    check = ("failed files' effect: the KB equals one built from the good and ingested files alone "
             f"({s['reference_documents']} documents), tables differing: {s['differing_tables'] or 'none'}"
             if s["mode"] == "batch" else "each failed file ingested alone; full KB content compared before/after")
    lines = [
        f"mode:                               {s['mode']}  ({check})",
        f"variants tried:                     {s['variants']}  ({', '.join(f'{k} {n}' for k, n in s['by_kind'].items())})",
        f"handled cleanly:                    {s['handled_cleanly']} / {s['variants']}"
        f"  ({s['ingested']} ingested, {s['failed_with_reason']} failed with a one-line reason)",
        f"  stopped by the time bound:        {s['stopped_by_time_bound']}  (timeout {s['timeout_s']:g} s)",
        f"  stopped by the memory bound:      {s['stopped_by_memory_bound']}  (limit {s['memory_mb']} MB)",
        f"  refused by reader safety limits:  {s['refused_by_reader_limits']}",
        f"hangs:                              {s['hangs']}",
        f"crashes of the ingest process:      {s['crashes']}",
        f"KB changes caused by failed files:  {s['kb_changes_by_failed_files']}",
        f"final KB integrity:                 {s['integrity']['pending']} pending documents, "
        f"{s['integrity']['missing_in_chroma']} chunks missing in Chroma, {s['integrity']['extra_in_chroma']} extra",
        f"time taken:                         {s['seconds']:.0f} s  (slowest file: {s['slowest'][1]}, {s['slowest'][0]:.1f} s)",
        f"peak memory (RSS):                  extraction worker {s['worker_max_rss_mb']} MB, "
        f"ingest process {s['driver_max_rss_mb']} MB",
        "",
        "hostile kinds:",
    ]
    for name, info in s["hostile_kinds"].items():
        lines.append(f"  {name:<30} {info['status']:<7} {info['seconds']:6.2f} s  {info['reason']}")
    lines += ["", "failure reasons (all variants):"]
    for reason, count in s["reasons"].items():
        lines.append(f"  {count:>4}  {reason}")
    for bad in s["not_clean"]:
        lines.append(f"NOT CLEAN: {bad['name']}: {bad['status']} {bad['reason']} changed={bad['changed']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hostile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--mutants", type=int, default=200, help="truncations and byte flips of real PDFs")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--mode", choices=["batch", "alone"], default="batch")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--timeout", type=float, default=30.0, help="extraction time bound per file, seconds")
    parser.add_argument("--memory-mb", type=int, default=2048, help="address-space bound of the extraction worker")
    parser.add_argument("--workdir", type=Path, help="keep everything here instead of a temporary folder")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--driver", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.driver:
        drive(args.driver)
        return 0
    if args.mutants and not args.corpus.is_dir():
        print(f"note: no corpus at {args.corpus}; only the generated hostile kinds are tried", file=sys.stderr)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="kb-hostile-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        variants, good = build_corpus(work, corpus=args.corpus, mutants=args.mutants, seed=args.seed)

        def progress(name: str) -> None:
            if not args.json:
                print(f"  done: {name}", file=sys.stderr, flush=True)

        summary = run(variants, good, work, mode=args.mode, timeout_s=args.timeout, memory_mb=args.memory_mb,
                      progress=progress)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    summary["seed"] = args.seed
    summary["mutants"] = args.mutants
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print(format_summary(summary))
    return 0 if properties_hold(summary) else 1


if __name__ == "__main__":
    sys.exit(main())
