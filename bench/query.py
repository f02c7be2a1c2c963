"""Query latency on a built knowledge base (``KB_DATA_DIR``): retrieval and full answers,
unfiltered and filtered, and Chroma's own ``where`` filter for comparison.

Over the development questions (default ``../shared/eval/dev.jsonl``), each question is run
in three modes:

* ``unfiltered``;
* ``organisation``: restricted to the organisation of the question's gold document (for
  an unanswerable question: the organisation with the most chunks);
* ``document``: restricted to the question's gold document (unanswerable: the largest
  document).

For each mode it measures ``Service.search(k=10)`` (query embedding included),
``Searcher.search`` with the query vectors given (the index side alone: the question's and
its parts', see kb/query_parts.py) and ``Service.ask``
(the whole extractive answer), p50/p95/max in ms.  Then, for the dense side alone on the
same query vectors: the path the app takes (Chroma HNSW unfiltered; exact NumPy search
over the snapshot's vectors when filtered) against Chroma's ``query(where=...)`` with the
same filter, with the overlap of their top 60.  Filters that our snapshot supports and
Chroma's metadata cannot express (file names) are given to Chroma as ``doc_id``.

With ``KB_CHROMA_URL`` set every Chroma call goes to that server, so the same script
measures server mode.  The snapshot build (first query after start), the process's resident
memory and ``os.getloadavg()`` are reported too.

Command line (from the repository root)::

    KB_DATA_DIR=DIR python bench/query.py [--questions ../shared/eval/dev.jsonl]
                                          [--repeat 1] [--skip-answers] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import kb.settings  # noqa: E402,F401 - the offline environment (no downloads, no telemetry), set on import

import numpy as np  # noqa: E402

DEFAULT_QUESTIONS = ROOT.parent / "shared" / "eval" / "dev.jsonl"
MODES = ("unfiltered", "organisation", "document")


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024.0, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)


def percentile(values: list[float], share: float) -> float:
    if not values:
        return 0.0
    return float(np.percentile(np.asarray(values, dtype=np.float64), share * 100))


def summary(values: list[float]) -> dict:
    return {
        "n": len(values),
        "p50_ms": round(percentile(values, 0.5), 2),
        "p95_ms": round(percentile(values, 0.95), 2),
        "max_ms": round(max(values), 2) if values else 0.0,
    }


def timed(function, *args, **kwargs) -> tuple[float, object]:
    started = time.perf_counter()
    value = function(*args, **kwargs)
    return (time.perf_counter() - started) * 1000.0, value


def plan(snapshot, questions: list[dict]) -> list[dict]:
    """Each question with its organisation and document filters (from its gold source)."""
    by_file = {d.file: d for d in snapshot.documents.values()}
    chunks_per_doc = Counter(c.doc_id for c in snapshot.chunks)
    chunks_per_org = Counter(snapshot.documents[c.doc_id].organisation for c in snapshot.chunks)
    largest_doc = snapshot.documents[chunks_per_doc.most_common(1)[0][0]]
    biggest_org = chunks_per_org.most_common(1)[0][0]
    planned = []
    for q in questions:
        gold = next((by_file[s["file"]] for s in q.get("sources", []) if s["file"] in by_file), None)
        document = gold or largest_doc
        planned.append(
            {
                "question": q["question"],
                "organisation": document.organisation if gold else biggest_org,
                "doc_id": document.doc_id,
                "file": document.file,
            }
        )
    return planned


def filters_for(mode: str, item: dict):
    from kb.snapshot import Filters

    if mode == "organisation":
        return Filters(organisations=[item["organisation"]])
    if mode == "document":
        return Filters(documents=[item["doc_id"]])
    return None


def chroma_where(mode: str, item: dict) -> dict | None:
    if mode == "organisation":
        return {"organisation": item["organisation"]}
    if mode == "document":
        return {"doc_id": item["doc_id"]}
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=Path, default=DEFAULT_QUESTIONS)
    parser.add_argument("--repeat", type=int, default=1, help="passes over the questions per mode")
    parser.add_argument("--skip-answers", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if not args.questions.is_file():
        print(f"skipped: {args.questions} not found")
        return 0

    from kb.evaluate import load_questions
    from kb.service import Service
    from kb.settings import get_settings

    settings = get_settings()
    if not settings.ledger_path.is_file():
        print(f"no knowledge base in {settings.data_dir}: set KB_DATA_DIR to a built one", file=sys.stderr)
        return 2
    questions = load_questions(args.questions)
    report: dict = {
        "data_dir": str(settings.data_dir),
        "chroma": settings.chroma_url or str(settings.chroma_dir),
        "backend": settings.embed_backend,
        "query_backend": settings.query_backend,
        "cpus": os.cpu_count(),
        "loadavg_start": loadavg(),
        "rss_mb_start": rss_mb(),
    }
    service = Service(settings)
    searcher = service.searcher
    report["snapshot_ms"], snapshot = timed(searcher.snapshot)
    report["snapshot_ms"] = round(report["snapshot_ms"], 1)
    if not len(snapshot):
        print(f"the knowledge base in {settings.data_dir} is empty", file=sys.stderr)
        return 2
    report["rss_mb_after_snapshot"] = rss_mb()
    store = service.kb.store
    report.update(documents=len(snapshot.documents), chunks=len(snapshot), chroma_count=store.count())
    service.search(questions[0]["question"], k=10)  # model, store and indexes warm
    if not args.skip_answers:
        service.ask(questions[0]["question"])
    report["rss_mb_warm"] = rss_mb()

    items = plan(snapshot, questions)
    # Each question's vector and its parts' (a multi-part question is searched part by part).
    embedded = [searcher.embed_question(item["question"]) for item in items]
    vectors = [vector for vector, _ in embedded]
    report["filter_sizes"] = {
        mode: round(float(np.mean([snapshot.mask(filters_for(mode, it)).sum() for it in items])), 1)
        for mode in MODES[1:]
    }

    results: dict = {}
    for mode in MODES:
        search_ms, index_ms, answer_ms = [], [], []
        for _ in range(args.repeat):
            for item, (vector, part_vectors) in zip(items, embedded):
                filters = filters_for(mode, item)
                search_ms.append(timed(service.search, item["question"], k=10, filters=filters)[0])
                index_ms.append(
                    timed(
                        searcher.search, item["question"], k=10, filters=filters,
                        query_vector=vector, part_vectors=part_vectors,
                    )[0]
                )
                if not args.skip_answers:
                    answer_ms.append(timed(service.ask, item["question"], filters=filters)[0])
        results[mode] = {
            "retrieval": summary(search_ms),
            "retrieval_given_vector": summary(index_ms),
            **({"answer": summary(answer_ms)} if answer_ms else {}),
            "loadavg_after": loadavg(),
        }
    report["modes"] = results

    # The dense side alone: the app's plan against Chroma's where filter.
    n = settings.candidates
    dense: dict = {}
    for mode in MODES:
        ours_ms, chroma_ms, overlap = [], [], []
        for _ in range(args.repeat):
            for item, vector in zip(items, vectors):
                mask = snapshot.mask(filters_for(mode, item))
                if mask is None:
                    t, mine = timed(store.query, vector, n)
                    mine_ids = [cid for cid, _ in mine]
                else:
                    t, rows = timed(snapshot.dense_top, vector, n, mask)
                    mine_ids = [snapshot.chunks[r].chunk_id for r, _ in rows]
                ours_ms.append(t)
                t, theirs = timed(store.query, vector, n, chroma_where(mode, item))
                chroma_ms.append(t)
                exact = snapshot.dense_top(vector, n, mask)
                exact_ids = {snapshot.chunks[r].chunk_id for r, _ in exact}
                if exact_ids:
                    overlap.append((len(exact_ids & set(mine_ids)) / len(exact_ids), len(exact_ids & {c for c, _ in theirs}) / len(exact_ids)))
        dense[mode] = {
            "ours": {"plan": "chroma hnsw" if mode == "unfiltered" else "exact numpy over snapshot", **summary(ours_ms),
                     "recall_vs_exact": round(float(np.mean([o[0] for o in overlap])), 4) if overlap else None},
            "chroma_where": {**summary(chroma_ms),
                             "recall_vs_exact": round(float(np.mean([o[1] for o in overlap])), 4) if overlap else None},
        }
    exact_all = [timed(snapshot.dense_top, v, n, None)[0] for v in vectors]
    dense["unfiltered"]["exact_numpy"] = summary(exact_all)
    report["dense"] = dense
    report["rss_mb_end"] = rss_mb()
    report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)
    report["loadavg_end"] = loadavg()
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def format_report(report: dict) -> str:
    lines = [
        f"Query latency on {report['data_dir']} ({report['documents']} documents, {report['chunks']} chunks; "
        f"Chroma: {report['chroma']}; {report['backend']})",
        f"  snapshot build {report['snapshot_ms']} ms; RSS {report['rss_mb_after_snapshot']} MB after snapshot, "
        f"{report['rss_mb_warm']} MB warm; mean chunks kept by filter: {report['filter_sizes']}",
        f"  {'mode':<14}{'search p50':>12}{'p95':>9}{'index p50':>11}{'p95':>9}{'answer p50':>12}{'p95':>9}   load",
    ]
    for mode, r in report["modes"].items():
        answer = r.get("answer", {"p50_ms": "-", "p95_ms": "-"})
        lines.append(
            f"  {mode:<14}{r['retrieval']['p50_ms']:>12}{r['retrieval']['p95_ms']:>9}"
            f"{r['retrieval_given_vector']['p50_ms']:>11}{r['retrieval_given_vector']['p95_ms']:>9}"
            f"{answer['p50_ms']:>12}{answer['p95_ms']:>9}   {r['loadavg_after'][0]}"
        )
    lines.append("  dense side, top 60 (ms; recall against exact search):")
    for mode, d in report["dense"].items():
        lines.append(
            f"    {mode:<14} ours ({d['ours']['plan']}): p50 {d['ours']['p50_ms']} p95 {d['ours']['p95_ms']} "
            f"recall {d['ours']['recall_vs_exact']};  chroma where: p50 {d['chroma_where']['p50_ms']} "
            f"p95 {d['chroma_where']['p95_ms']} recall {d['chroma_where']['recall_vs_exact']}"
        )
    exact = report["dense"]["unfiltered"]["exact_numpy"]
    lines.append(f"    unfiltered exact numpy: p50 {exact['p50_ms']} p95 {exact['p95_ms']}")
    lines.append(f"  load average {report['loadavg_start']} -> {report['loadavg_end']}; peak RSS {report['peak_rss_mb']} MB")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
