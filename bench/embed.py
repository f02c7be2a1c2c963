"""Embedding backends compared: throughput and agreement with the torch reference.

Takes ~200 real passages of about 200-235 word pieces (the size ingestion produces) from
the PDFs in the corpus folder, then for each backend (``torch``, ``onnx``, ``onnx-int8``
by default):

* the first-use cost: for the ONNX backends the one-off export (fp32) and quantisation
  (int8) into a fresh models folder, as ``OnnxEmbedder.export_seconds`` reports it;
* throughput in passages per second, best of ``--repeats`` timed rounds (the backends
  take turns in each round, so a burst of load elsewhere hurts them alike);
* cosine to the torch vectors of the same passages (mean and minimum) and how many of
  each passage's 10 nearest neighbours among the others torch and the backend share
  (a proxy for retrieval agreement).

The load average (``os.getloadavg()``) is recorded before and after every round: on a
shared machine compare figures only with their load.

Command line (from the repository root)::

    python bench/embed.py [--corpus ../shared/corpus] [--passages 200] [--repeats 3]
                          [--backends torch,onnx,onnx-int8] [--batch-size 0 (the backend's own)]
                          [--models-dir DIR] [--json]

Without ``--models-dir`` the ONNX files are exported into a temporary folder that is
removed afterwards, so the export time is always measured.  If the corpus folder is
missing (or holds no PDF) the script says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import kb.settings  # noqa: E402,F401 - the offline environment (no downloads, no telemetry), set on import

import numpy as np  # noqa: E402

DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus"
BACKENDS = ("torch", "onnx", "onnx-int8")


# --------------------------------------------------------------------------------------
# passages
# --------------------------------------------------------------------------------------


def _pdf_words(path: Path, max_pages: int) -> list[str]:
    """Words of up to ``max_pages`` pages spread evenly over the document."""
    import pypdf

    from kb.text import join_hyphenated_words, normalise_characters

    reader = pypdf.PdfReader(str(path))
    count = len(reader.pages)
    if count > max_pages:
        picks = sorted({round(i * (count - 1) / (max_pages - 1)) for i in range(max_pages)})
    else:
        picks = list(range(count))
    pages = []
    for index in picks:
        try:
            pages.append(reader.pages[index].extract_text() or "")
        except Exception:  # a damaged page is simply skipped
            continue
    return join_hyphenated_words(normalise_characters("\n".join(pages))).split()


def _mostly_words(text: str) -> bool:
    letters = sum(ch.isalpha() for ch in text)
    return letters >= 0.6 * max(1, len(text.replace(" ", "")))


def load_passages(
    corpus: Path, count: int = 200, low: int = 200, high: int = 235, max_pages: int = 6
) -> list[str]:
    """``count`` passages of about ``low``..``high`` word pieces (special tokens
    included), chunked by words, taken in turn from every PDF in ``corpus``."""
    from kb.embed import load_tokenizer

    tokenizer = load_tokenizer()
    low, high = low - 2, high - 2  # [CLS] and [SEP]
    per_document: list[list[str]] = []
    for path in sorted(Path(corpus).glob("*.pdf")):
        try:
            words = _pdf_words(path, max_pages)
        except Exception as error:
            print(f"  skipped {path.name}: {error}", file=sys.stderr)
            continue
        if not words:
            continue
        # Word pieces add up over white-space separated words for this BERT tokenizer.
        pieces = [len(e.ids) for e in tokenizer.encode_batch(words, add_special_tokens=False)]
        chunks, current, size = [], [], 0
        limit = high
        for word, n in zip(words, pieces):
            if size + n > limit:
                text = " ".join(current)
                if size >= low and _mostly_words(text):
                    chunks.append(text)
                current, size = [], 0
                # spread the sizes over low..high, deterministically
                limit = low + 8 + (len(chunks) * 37 + len(per_document) * 11) % (high - low - 7)
            current.append(word)
            size += n
        per_document.append(chunks)
    passages: list[str] = []
    turn = 0
    while len(passages) < count and any(per_document):
        for chunks in per_document:
            if chunks and len(passages) < count:
                # alternate between the start and the middle of each document
                passages.append(chunks.pop(len(chunks) // 2 if turn % 2 else 0))
        turn += 1
    return passages


# --------------------------------------------------------------------------------------
# measurements
# --------------------------------------------------------------------------------------


def cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    found = set(re.findall(r"\b(avx2|avx512f|avx512_vnni|avx_vnni|amx_int8)\b", text))
    return sorted(found)


def _load() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def _neighbour_overlap(reference: np.ndarray, other: np.ndarray, k: int = 10) -> float:
    """Mean share of each row's k nearest rows (by cosine) that both sets agree on."""
    if len(reference) <= k:
        return float("nan")

    def top(vectors):
        sims = vectors @ vectors.T
        np.fill_diagonal(sims, -np.inf)
        return np.argsort(-sims, axis=1)[:, :k]

    a, b = top(reference), top(other)
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(a, b)]))


def _make(backend: str, settings):
    started = time.perf_counter()
    if backend == "torch":
        from kb.embed import TorchEmbedder

        embedder = TorchEmbedder(settings)
        export = None
    else:
        from kb.onnx_embed import OnnxEmbedder

        embedder = OnnxEmbedder(settings, quantised=backend == "onnx-int8")
        export = embedder.export_seconds
    return embedder, time.perf_counter() - started, export


def run(args) -> dict:
    from kb.settings import get_settings

    corpus = Path(args.corpus)
    result: dict = {
        "corpus": str(corpus),
        "machine": {
            "cpus": os.cpu_count(),
            "cpu_flags": cpu_flags(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
        },
        "load_at_start": _load(),
    }
    started = time.perf_counter()
    passages = load_passages(corpus, args.passages)
    result["passages"] = len(passages)
    result["passage_seconds"] = round(time.perf_counter() - started, 1)
    if not passages:
        result["error"] = f"no usable passages in {corpus}"
        return result
    from kb.embed import load_tokenizer

    sizes = [len(e.ids) for e in load_tokenizer().encode_batch(passages)]
    result["word_pieces"] = {"min": min(sizes), "mean": round(float(np.mean(sizes)), 1), "max": max(sizes)}

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if "torch" not in backends:
        backends.insert(0, "torch")  # the reference for the cosines
    with tempfile.TemporaryDirectory(prefix="kb-bench-embed-") as scratch:
        data_dir = Path(args.models_dir).parent if args.models_dir else Path(scratch)
        settings = replace(get_settings(), data_dir=data_dir, embed_batch_size=args.batch_size)
        if args.models_dir and settings.models_dir.resolve() != Path(args.models_dir).resolve():
            raise SystemExit("--models-dir must be a folder named 'models'")
        embedders, rows = {}, {}
        for backend in backends:  # onnx before onnx-int8: int8 reuses the fp32 export
            embedder, seconds, export = _make(backend, settings)
            embedders[backend] = embedder
            embedder.embed(passages[:8])  # warm-up: allocations, thread pools
            rows[backend] = {
                "load_seconds": round(seconds, 2),
                "export_seconds": None if export is None else round(export, 2),
            }
            if hasattr(embedder, "describe"):
                rows[backend]["model_file"] = Path(embedder.describe()["model_file"]).name
        best = {b: float("inf") for b in backends}
        vectors = {}
        rounds = []
        for round_no in range(args.repeats):
            before = _load()
            times = {}
            for backend in backends:
                t0 = time.perf_counter()
                vectors[backend] = embedders[backend].embed(passages)
                times[backend] = time.perf_counter() - t0
                best[backend] = min(best[backend], times[backend])
            rounds.append(
                {
                    "load_before": before,
                    "load_after": _load(),
                    "passages_per_s": {b: round(len(passages) / t, 1) for b, t in times.items()},
                }
            )
            if not args.json:
                figures = ", ".join(f"{b} {len(passages) / t:.1f}/s" for b, t in times.items())
                print(f"  round {round_no + 1}: {figures}  (load {before} -> {_load()})", flush=True)
        reference = vectors["torch"]
        for backend in backends:
            cosines = (vectors[backend] * reference).sum(axis=1)
            vec = vectors[backend]
            rows[backend].update(
                {
                    "passages_per_s": round(len(passages) / best[backend], 1),
                    "best_seconds": round(best[backend], 2),
                    "cosine_mean": round(float(cosines.mean()), 5),
                    "cosine_min": round(float(cosines.min()), 5),
                    "top10_overlap": round(_neighbour_overlap(reference, vec), 3),
                    "shape": list(vec.shape),
                    "dtype": str(vec.dtype),
                }
            )
        torch_rate = rows["torch"]["passages_per_s"]
        for backend in backends:
            rows[backend]["speed_vs_torch"] = round(rows[backend]["passages_per_s"] / torch_rate, 2)
    result["backends"] = rows
    result["rounds"] = rounds
    result["load_at_end"] = _load()
    return result


def _print(result: dict) -> None:
    m = result["machine"]
    print(
        f"\n{result['passages']} passages from {result['corpus']} "
        f"(word pieces {result['word_pieces']}; extracted in {result['passage_seconds']} s)"
    )
    print(f"CPU: {m['cpus']} cores, flags {', '.join(m['cpu_flags']) or '?'}")
    print(f"load average: start {result['load_at_start']}, end {result['load_at_end']}\n")
    header = f"{'backend':10s} {'pass/s':>7s} {'x torch':>7s} {'cos mean':>9s} {'cos min':>8s} {'top10':>6s} {'first use':>10s}"
    print(header)
    print("-" * len(header))
    for name, row in result["backends"].items():
        export = "" if row["export_seconds"] is None else f"{row['export_seconds']:.1f} s"
        print(
            f"{name:10s} {row['passages_per_s']:7.1f} {row['speed_vs_torch']:7.2f} "
            f"{row['cosine_mean']:9.5f} {row['cosine_min']:8.5f} {row['top10_overlap']:6.3f} {export:>10s}"
        )
    print(
        "\npass/s: best of the rounds; first use: export (onnx) or quantisation (onnx-int8, "
        "after the fp32 export) into an empty models folder; top10: shared nearest neighbours."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default=str(DEFAULT_CORPUS), help="folder of PDFs")
    parser.add_argument("--passages", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds; the best counts")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--batch-size", type=int, default=0, help="0: each backend's own batch size")
    parser.add_argument(
        "--models-dir", default="", help="reuse this 'models' folder (default: a fresh temporary one)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    corpus = Path(args.corpus)
    if not corpus.is_dir() or not any(corpus.glob("*.pdf")):
        message = f"corpus folder {corpus} is missing or holds no PDF: nothing to benchmark"
        print(json.dumps({"skipped": message}) if args.json else message)
        return 0
    if not args.json:
        print(f"extracting passages from {corpus} ...", flush=True)
    result = run(args)
    if "error" in result:
        print(json.dumps(result) if args.json else result["error"])
        return 0
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
