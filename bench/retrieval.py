"""Retrieval quality: our hybrid retrieval against the LangChain tutorial's, side by side.

On the development questions (default ``../shared/eval/dev.jsonl``) over the same corpus
(default ``../shared/corpus``):

* ours: ``kb.evaluate.run_eval`` (the same code as ``kb eval``) on the knowledge base in
  ``KB_DATA_DIR`` when that folder already holds documents, otherwise on one built from the
  corpus in a temporary folder; recall@1/5/10 and MRR@10 over the answerable questions,
  plus retrieval latency p50/p95 (``Service.search``, query embedding included) and full
  answer latency p50/p95 (``Service.ask``);
* the tutorial (``bench/tutorial.py``): ``similarity_search(question, k=10)`` on its Chroma
  store, built from the same PDFs (or reused from ``--tutorial-dir`` when that folder
  already holds one).

A retrieved passage is a hit when it comes from a gold file and its pages touch a gold page
(for the tutorial: its one page).  Follow-up questions are resolved by our conversation
handling; the tutorial asks them verbatim, as it has no memory.  ``os.getloadavg()`` is
recorded with the figures.

Command line (from the repository root)::

    [KB_DATA_DIR=DIR] python bench/retrieval.py [--corpus ../shared/corpus]
        [--questions ../shared/eval/dev.jsonl] [--k 10] [--tutorial-dir DIR]
        [--skip-tutorial] [--json]

If the corpus or the questions are missing the script says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import kb.settings  # noqa: E402,F401 - the offline environment (no downloads, no telemetry), set on import

DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus"
DEFAULT_QUESTIONS = ROOT.parent / "shared" / "eval" / "dev.jsonl"
KEYS = ("n", "recall@1", "recall@5", "recall@10", "mrr@10")


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def has_documents(settings) -> bool:
    if not settings.ledger_path.is_file():
        return False
    from kb.knowledge_base import KnowledgeBase

    kb = KnowledgeBase(settings)
    try:
        return bool(kb.ledger.ready_documents())
    finally:
        kb.close()


def ours(corpus: Path, questions: list[dict], k: int, scratch: Path) -> dict:
    from kb.evaluate import run_eval
    from kb.service import Service
    from kb.settings import get_settings

    settings = get_settings()
    built = None
    if not (os.environ.get("KB_DATA_DIR") and has_documents(settings)):
        settings = get_settings(data_dir=scratch / "kb", chroma_url="")
        service = Service(settings)
        started = time.perf_counter()
        report = service.ingest([corpus])
        built = {"seconds": round(time.perf_counter() - started, 2), **report.summary()}
    service = Service(settings)
    before = loadavg()
    result = run_eval(service, questions, k=k)
    rows = [r for r in result["rows"] if r["answerable"]]
    return {
        "data_dir": str(settings.data_dir),
        "chroma": settings.chroma_url or str(settings.chroma_dir),
        "backend": settings.embed_backend,
        "query_backend": settings.query_backend,
        "built": built,
        "documents": service.stats()["documents"],
        "chunks": service.stats()["chunks"],
        "n": len(rows),
        **{key: result[key] for key in ("recall@1", "recall@5", "recall@10", "mrr@10")},
        "retrieval_p50_ms": result["retrieval_p50_ms"],
        "retrieval_p95_ms": result["retrieval_p95_ms"],
        "answer_p50_ms": result["p50_ms"],
        "answer_p95_ms": result["p95_ms"],
        "answer_hit": result["answer_hit"],
        "by_kind": {kind: {key: figures[key] for key in KEYS} for kind, figures in result["by_kind"].items()},
        "loadavg_before": before,
        "loadavg_after": loadavg(),
    }


def tutorial(corpus: Path, questions: list[dict], k: int, folder: Path | None, scratch: Path) -> dict:
    from bench.tutorial import evaluate_tutorial_retrieval, make_embeddings, run_tutorial_ingest

    pdfs = sorted(corpus.glob("*.pdf"))
    built = None
    if folder and (folder / "chroma.sqlite3").is_file():
        import chromadb.config
        from langchain_chroma import Chroma

        store = Chroma(
            persist_directory=str(folder),
            embedding_function=make_embeddings(),
            client_settings=chromadb.config.Settings(anonymized_telemetry=False),
        )
    else:
        stats = run_tutorial_ingest(pdfs, folder or scratch / "tutorial")
        built = dict(stats)
        store = stats.pipeline
    before = loadavg()
    result = evaluate_tutorial_retrieval(store, questions, k=k)
    return {
        "folder": str(folder or "(temporary)"),
        "built": built,
        **{key: result[key] for key in KEYS},
        "retrieval_p50_ms": result["p50_ms"],
        "retrieval_p95_ms": result["p95_ms"],
        "by_kind": {kind: {key: figures[key] for key in KEYS} for kind, figures in result["by_kind"].items()},
        "loadavg_before": before,
        "loadavg_after": loadavg(),
    }


def format_report(report: dict) -> str:
    a, b = report["ours"], report.get("tutorial")
    lines = [
        f"Retrieval on {report['questions']} ({a['n']} answerable questions), k={report['k']}",
        f"  ours: {a['documents']} documents, {a['chunks']} chunks in {a['data_dir']} ({a['backend']})",
        "",
        f"  {'':<22}{'ours':>10}{'tutorial':>10}",
    ]
    for key in ("recall@1", "recall@5", "recall@10", "mrr@10", "retrieval_p50_ms", "retrieval_p95_ms"):
        theirs = "-" if b is None else b[key]
        lines.append(f"  {key:<22}{a[key]:>10}{theirs:>10}")
    lines.append(f"  {'answer_p50_ms':<22}{a['answer_p50_ms']:>10}{'-':>10}")
    lines.append(f"  {'answer_p95_ms':<22}{a['answer_p95_ms']:>10}{'-':>10}")
    lines.append("")
    lines.append(f"  by kind (recall@5 ours / tutorial):")
    for kind, figures in a["by_kind"].items():
        theirs = b["by_kind"].get(kind, {}).get("recall@5", "-") if b else "-"
        if figures["n"]:
            lines.append(f"    {kind:<14} n={figures['n']:<4} {figures['recall@5']} / {theirs}")
    lines.append(f"  load average: ours {a['loadavg_before']} -> {a['loadavg_after']}"
                 + (f"; tutorial {b['loadavg_before']} -> {b['loadavg_after']}" if b else ""))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--questions", type=Path, default=DEFAULT_QUESTIONS)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--tutorial-dir", type=Path, help="reuse (or build and keep) the tutorial's Chroma folder here")
    parser.add_argument("--skip-tutorial", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    for path in (args.corpus, args.questions):
        if not path.exists():
            print(f"skipped: {path} not found")
            return 0

    from kb.evaluate import load_questions

    questions = load_questions(args.questions)
    report: dict = {"corpus": str(args.corpus.resolve()), "questions": str(args.questions.resolve()), "k": args.k,
                    "cpus": os.cpu_count(), "loadavg_start": loadavg()}
    scratch = Path(tempfile.mkdtemp(prefix="kb-bench-retrieval-"))
    try:
        report["ours"] = ours(args.corpus, questions, args.k, scratch)
        if not args.skip_tutorial:
            report["tutorial"] = tutorial(args.corpus, questions, args.k, args.tutorial_dir, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report["loadavg_end"] = loadavg()
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
