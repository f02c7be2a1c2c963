"""The store side at scale: synthetic chunk vectors from 10k to 250k, projected to 1M.

Random unit vectors (384-d float32, as all-MiniLM-L6-v2 makes) with chunk-like metadata
(``doc_id``: 50 chunks a document; ``organisation``: one of 10, by document) stand in for a
large corpus.  For each size, in fresh child processes:

* (b) our exact search: ``Snapshot.dense_top`` (the code the app runs) over the matrix in
  memory, top 60; unfiltered and (c) filtered by one organisation (10% of the rows) and by
  one document (50 rows), the row mask built the way ``Snapshot.mask`` builds it; and, as
  ``*_no_copy``, the same search without copying the selected rows first (``dense_top``
  gathers ``vectors[rows]``, which with no filter copies the whole matrix per query);
* (a) Chroma embedded (``PersistentClient``, HNSW, cosine): the time to add the vectors,
  then, in a new process that opens the persisted folder, the first query (index load) and
  query latency unfiltered and (c) with ``where`` on ``organisation`` / ``doc_id``, and the
  recall of its top 60 against exact search;
* with ``--server``: the same queries through ``chroma run`` serving that folder over HTTP,
  and the server's resident memory;
* memory (RSS of each process, and the matrix itself) and the Chroma folder's disk size.

Queries are stored vectors plus noise (a near neighbour exists, as for a real question).
The synthetic collection holds vectors and the two metadata fields only; a real collection
also stores the chunk text (see docs/performance.md for the measured per-chunk size).
Sizes that were not built are projected from the largest measured one (exact search and
``where`` filtering linear in N, HNSW search in log N, memory and disk by the per-chunk
growth between the two largest sizes) and marked so.  ``--from-json FILE`` prints the table
(and projection) of a saved ``--json`` report again.
``os.getloadavg()`` is recorded with every size.

Command line (from the repository root)::

    python bench/scale.py [--sizes 10000,50000,100000,250000] [--project 1000000]
                          [--queries 60] [--server] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ["ANONYMIZED_TELEMETRY"] = "False"

import numpy as np  # noqa: E402

DIM = 384
CHUNKS_PER_DOC = 50
ORGANISATIONS = 10
TOP = 60
SEED = 20240601


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def rss_mb(pid: int | str = "self", field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return round(int(line.split()[1]) / 1024.0, 1)
    return 0.0


def folder_mb(path: Path) -> float:
    return round(sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file()) / 1e6, 1)


def summary(values: list[float]) -> dict:
    array = np.asarray(values, dtype=np.float64)
    return {"p50_ms": round(float(np.percentile(array, 50)), 2), "p95_ms": round(float(np.percentile(array, 95)), 2)}


def data(n: int, queries: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Vectors, doc number per row, organisation per doc, and query vectors (seeded)."""
    rng = np.random.default_rng(SEED)
    vectors = rng.standard_normal((n, DIM), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    doc_of_row = (np.arange(n) // CHUNKS_PER_DOC).astype(np.int32)
    org_of_doc = (np.arange(doc_of_row[-1] + 1) % ORGANISATIONS).astype(np.int32)
    picks = rng.choice(n, size=queries, replace=False)
    noise = rng.standard_normal((queries, DIM), dtype=np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    q = vectors[picks] + 0.8 * noise  # a near neighbour at cosine ~0.78
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return vectors, doc_of_row, org_of_doc, q.astype(np.float32)


def filters(doc_of_row: np.ndarray, org_of_doc: np.ndarray, i: int) -> dict:
    """The organisation and document filters of query ``i`` (as mask inputs and ``where``)."""
    doc = int(i * 7919 % (doc_of_row[-1] + 1))
    org = int(org_of_doc[doc])
    return {"organisation": org, "doc": doc}


def snapshot_mask(doc_of_row: np.ndarray, org_of_doc: np.ndarray, kind: str, f: dict) -> np.ndarray:
    """A boolean row mask, built as ``Snapshot.mask`` builds it (per-document flags, indexed by row)."""
    if kind == "organisation":
        allowed = np.array([o == f["organisation"] for o in org_of_doc.tolist()], dtype=bool)
    else:
        allowed = np.zeros(len(org_of_doc), dtype=bool)
        allowed[f["doc"]] = True
    return allowed[doc_of_row]


def chroma_where(kind: str, f: dict) -> dict | None:
    if kind == "organisation":
        return {"organisation": f"org{f['organisation']}"}
    if kind == "document":
        return {"doc_id": f"d{f['doc']}"}
    return None


def exact_ids(vectors, doc_of_row, org_of_doc, q, i, kind) -> set[int]:
    mask = None if kind == "unfiltered" else snapshot_mask(doc_of_row, org_of_doc, kind, filters(doc_of_row, org_of_doc, i))
    rows = np.flatnonzero(mask) if mask is not None else np.arange(len(vectors))
    sims = vectors[rows] @ q[i]
    best = np.argpartition(-sims, min(TOP, rows.size) - 1)[: min(TOP, rows.size)]
    return set(rows[best].tolist())


# --------------------------------------------------------------------------------------
# child processes
# --------------------------------------------------------------------------------------


def child_numpy_and_build(n: int, queries: int, folder: Path | None) -> dict:
    """Exact search timings, then build the Chroma collection (timed) unless ``folder`` is None."""
    from kb.snapshot import Snapshot

    base = rss_mb()
    vectors, doc_of_row, org_of_doc, q = data(n, queries)
    stand_in = SimpleNamespace(chunks=range(n), vectors=vectors)
    result: dict = {"n": n, "matrix_mb": round(vectors.nbytes / 1e6, 1), "rss_mb_with_matrix": rss_mb(), "rss_mb_base": base}
    Snapshot.dense_top(stand_in, q[0], TOP, None)  # warm
    numpy: dict = {}
    for kind in ("unfiltered", "organisation", "document"):
        times = []
        for i in range(queries):
            started = time.perf_counter()
            mask = None if kind == "unfiltered" else snapshot_mask(doc_of_row, org_of_doc, kind, filters(doc_of_row, org_of_doc, i))
            Snapshot.dense_top(stand_in, q[i], TOP, mask)
            times.append((time.perf_counter() - started) * 1000)
        numpy[kind] = summary(times)
    # The same search without copying the rows: one matrix-vector product over the whole
    # matrix, then the rows of the filter picked from the similarities.
    for kind in ("unfiltered", "organisation"):
        times = []
        for i in range(queries):
            started = time.perf_counter()
            similarities = vectors @ q[i]
            if kind == "organisation":
                rows = np.flatnonzero(snapshot_mask(doc_of_row, org_of_doc, kind, filters(doc_of_row, org_of_doc, i)))
                similarities = similarities[rows]
            best = np.argpartition(-similarities, TOP - 1)[:TOP]
            best[np.argsort(-similarities[best], kind="stable")]
            times.append((time.perf_counter() - started) * 1000)
        numpy[f"{kind}_no_copy"] = summary(times)
    result["numpy"] = numpy
    result["loadavg_after_numpy"] = loadavg()
    result["blas_threads"] = os.environ.get("OPENBLAS_NUM_THREADS", "default")
    if folder is None:
        result["peak_rss_mb"] = rss_mb(field="VmHWM")
        return result

    import chromadb
    from chromadb.config import Settings as ChromaSettings

    client = chromadb.PersistentClient(path=str(folder), settings=ChromaSettings(anonymized_telemetry=False))
    collection = client.get_or_create_collection(
        "scale", configuration={"hnsw": {"space": "cosine"}}, embedding_function=None
    )
    batch = min(5000, client.get_max_batch_size())
    started = time.perf_counter()
    for start in range(0, n, batch):
        end = min(n, start + batch)
        docs = doc_of_row[start:end].tolist()
        collection.add(
            ids=[f"c{i}" for i in range(start, end)],
            embeddings=vectors[start:end],
            metadatas=[{"doc_id": f"d{d}", "organisation": f"org{int(org_of_doc[d])}"} for d in docs],
        )
    add_seconds = time.perf_counter() - started
    result["chroma_add_seconds"] = round(add_seconds, 1)
    result["chroma_add_per_s"] = round(n / add_seconds, 1)
    result["rss_mb_after_build"] = rss_mb()
    result["peak_rss_mb"] = rss_mb(field="VmHWM")
    result["loadavg_after_build"] = loadavg()
    return result


def query_collection(collection, n: int, queries: int) -> dict:
    vectors, doc_of_row, org_of_doc, q = data(n, queries)
    out: dict = {}
    for kind in ("unfiltered", "organisation", "document"):
        times, recall = [], []
        for i in range(queries):
            where = chroma_where(kind, filters(doc_of_row, org_of_doc, i))
            started = time.perf_counter()
            got = collection.query(query_embeddings=[q[i]], n_results=TOP, where=where, include=["distances"])
            times.append((time.perf_counter() - started) * 1000)
            truth = exact_ids(vectors, doc_of_row, org_of_doc, q, i, kind)
            recall.append(len(truth & {int(c[1:]) for c in got["ids"][0]}) / len(truth))
        out[kind] = {**summary(times), "recall": round(float(np.mean(recall)), 4)}
    return out


def child_open_and_query(n: int, queries: int, folder: Path) -> dict:
    """Open the persisted collection in a fresh process: first query, latency, memory."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    base = rss_mb()
    started = time.perf_counter()
    client = chromadb.PersistentClient(path=str(folder), settings=ChromaSettings(anonymized_telemetry=False))
    collection = client.get_collection("scale", embedding_function=None)
    probe = np.ones(DIM, dtype=np.float32) / math.sqrt(DIM)
    collection.query(query_embeddings=[probe], n_results=TOP, include=["distances"])
    first_ms = (time.perf_counter() - started) * 1000
    rss_open = rss_mb()
    result = {"first_query_ms": round(first_ms, 1), "rss_mb_base": base, "rss_mb_after_open": rss_open}
    result["queries"] = query_collection(collection, n, queries)
    result["rss_mb_after_queries"] = rss_mb()
    result["rss_mb_chroma_process"] = round(rss_mb(field="VmHWM") - 0, 1)
    result["loadavg_after"] = loadavg()
    return result


def child_server_query(n: int, queries: int, port: int) -> dict:
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    client = chromadb.HttpClient(host="127.0.0.1", port=port, settings=ChromaSettings(anonymized_telemetry=False))
    collection = client.get_collection("scale", embedding_function=None)
    probe = np.ones(DIM, dtype=np.float32) / math.sqrt(DIM)
    started = time.perf_counter()
    collection.query(query_embeddings=[probe], n_results=TOP, include=["distances"])
    first_ms = (time.perf_counter() - started) * 1000
    return {"first_query_ms": round(first_ms, 1), "queries": query_collection(collection, n, queries), "loadavg_after": loadavg()}


def run_child(*args: str) -> dict:
    process = subprocess.run([sys.executable, str(Path(__file__).resolve()), *args], cwd=ROOT, capture_output=True, text=True)
    if process.returncode != 0:
        raise RuntimeError(f"{args[:2]} failed ({process.returncode}):\n{process.stderr[-4000:]}")
    return json.loads(process.stdout.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(folder: Path, n: int, queries: int) -> dict:
    """Start ``chroma run`` on ``folder``, query it from a child process, stop it."""
    chroma = Path(sys.executable).parent / "chroma"
    port = free_port()
    env = {**os.environ, "ANONYMIZED_TELEMETRY": "False"}
    process = subprocess.Popen(
        [str(chroma), "run", "--path", str(folder), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True,
    )
    try:
        import chromadb
        from chromadb.config import Settings as ChromaSettings

        deadline = time.monotonic() + 120
        while True:
            try:
                chromadb.HttpClient(host="127.0.0.1", port=port, settings=ChromaSettings(anonymized_telemetry=False)).heartbeat()
                break
            except Exception:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("chroma run did not start") from None
                time.sleep(0.3)
        result = run_child("--server-child", str(n), "--queries", str(queries), "--port", str(port))
        result["server_rss_mb"] = rss_mb(process.pid)
        result["server_peak_rss_mb"] = rss_mb(process.pid, "VmHWM")
        return result
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --------------------------------------------------------------------------------------
# projection and report
# --------------------------------------------------------------------------------------


def project(rows: list[dict], target: int) -> dict:
    """Figures at ``target`` chunks, scaled from the largest measured size (marked projected).

    Only the largest size is used: on a shared machine the load differs from one size to
    the next, and a fit through noisy points can even go negative.  Exact search and
    Chroma's ``where`` filtering grow linearly with N; HNSW search with log N; memory and
    disk by the per-chunk growth between the two largest sizes.
    """
    last = max(rows, key=lambda r: r["n"])
    before = sorted(rows, key=lambda r: r["n"])[-2]
    linear_factor = target / last["n"]
    log_factor = math.log(target) / math.log(last["n"])
    out: dict = {"n": target, "projected": True, "from_n": last["n"]}

    def scaled(figures: dict, factor: float) -> dict:
        return {p: round(figures[p] * factor, 1) for p in ("p50_ms", "p95_ms")}

    def grown(value_of) -> float:
        slope = (value_of(last) - value_of(before)) / (last["n"] - before["n"])
        return round(value_of(last) + slope * (target - last["n"]), 1)

    out["numpy"] = {kind: scaled(last["numpy"][kind], linear_factor) for kind in ("unfiltered", "organisation")}
    out["numpy"]["document"] = dict(last["numpy"]["document"])  # 50 rows whatever N (mask building aside)
    queries = last["chroma"]["queries"]
    out["chroma"] = {
        "unfiltered": scaled(queries["unfiltered"], log_factor),
        "organisation": scaled(queries["organisation"], linear_factor),
        "document": scaled(queries["document"], linear_factor),
    }
    if "server" in last:
        served = last["server"]["queries"]
        out["server"] = {
            "unfiltered": scaled(served["unfiltered"], log_factor),
            "organisation": scaled(served["organisation"], linear_factor),
            "document": scaled(served["document"], linear_factor),
        }
        if "server" in before:
            out["server_rss_mb"] = grown(lambda r: r["server"]["server_rss_mb"])
    out["matrix_mb"] = round(target * DIM * 4 / 1e6, 1)
    out["chroma_rss_mb_after_open"] = grown(lambda r: r["chroma"]["rss_mb_after_open"])
    out["chroma_disk_mb"] = grown(lambda r: r["chroma_disk_mb"])
    out["chroma_add_seconds"] = round(last["build"]["chroma_add_seconds"] * linear_factor * log_factor, 1)
    return out


def format_report(report: dict) -> str:
    lines = [
        f"Store side at scale: {DIM}-d float32 unit vectors, top {TOP}; {report['queries']} queries per case; "
        f"{report['cpus']} cpus",
        f"{'chunks':>9} {'':>4} | {'numpy exact p50/p95 (ms)':^35} | {'Chroma HNSW embedded p50/p95 (ms)':^35} |"
        f" {'recall':>6} | {'RSS MB':^17} | {'disk':>6} | {'add s':>6} | load",
        f"{'':>9} {'':>4} | {'all':>11}{'org':>12}{'doc':>12} | {'all':>11}{'where org':>12}{'where doc':>12} |"
        f" {'hnsw':>6} | {'matrix':>8}{'chroma':>9} | {'MB':>6} | {'':>6} |",
    ]

    def pair(d):
        return f"{d['p50_ms']:.1f}/{d['p95_ms']:.1f}"

    for row in report["rows"] + ([report["projection"]] if report.get("projection") else []):
        projected = row.get("projected")
        chroma = row["chroma"] if projected else row["chroma"]["queries"]
        recall = "-" if projected else f"{row['chroma']['queries']['unfiltered']['recall']:.3f}"
        rss = f"{row['matrix_mb']:>8}{(row['chroma_rss_mb_after_open'] if projected else row['chroma']['rss_mb_after_open']):>9}"
        disk = row["chroma_disk_mb"]
        add = row["chroma_add_seconds"] if projected else row["build"]["chroma_add_seconds"]
        load = "" if projected else row["chroma"]["loadavg_after"][0]
        lines.append(
            f"{row['n']:>9} {'proj' if projected else 'meas':>4} | {pair(row['numpy']['unfiltered']):>12}{pair(row['numpy']['organisation']):>13}"
            f"{pair(row['numpy']['document']):>12} | {pair(chroma['unfiltered']):>11}{pair(chroma['organisation']):>13}"
            f"{pair(chroma['document']):>14} | {recall:>6} | {rss} | {disk:>6} | {add:>6} | {load}"
        )
    if any("server" in r for r in report["rows"]):
        lines.append("server mode (chroma run, HTTP), p50/p95 ms, server RSS MB:")
        for row in report["rows"] + ([report["projection"]] if report.get("projection", {}).get("server") else []):
            if "server" not in row:
                continue
            s = row["server"] if row.get("projected") else row["server"]["queries"]
            rss = row.get("server_rss_mb") if row.get("projected") else row["server"]["server_rss_mb"]
            lines.append(
                f"{row['n']:>9} {'proj' if row.get('projected') else 'meas':>4} | all {pair(s['unfiltered'])}  where org {pair(s['organisation'])}"
                f"  where doc {pair(s['document'])} | RSS {rss}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,50000,100000,250000")
    parser.add_argument("--project", type=int, default=1_000_000, help="project the figures to this many chunks (0: no)")
    parser.add_argument("--queries", type=int, default=60)
    parser.add_argument("--server", action="store_true", help="also query each size through chroma run")
    parser.add_argument("--numpy-only", action="store_true", help="only our exact search (no Chroma): fast, any size")
    parser.add_argument("--from-json", type=Path, help="print the table of a saved --json report")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--build-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--open-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--server-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.build_child:
        folder = None if str(args.folder) == "-" else args.folder
        print(json.dumps(child_numpy_and_build(args.build_child, args.queries, folder)))
        return 0
    if args.open_child:
        print(json.dumps(child_open_and_query(args.open_child, args.queries, args.folder)))
        return 0
    if args.server_child:
        print(json.dumps(child_server_query(args.server_child, args.queries, args.port)))
        return 0

    if args.from_json:
        report = json.loads(args.from_json.read_text())
        if args.project and len(report["rows"]) >= 2 and args.project > max(r["n"] for r in report["rows"]):
            report["projection"] = project(report["rows"], args.project)
        print(json.dumps(report, indent=2) if args.json else format_report(report))
        return 0
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    report: dict = {"cpus": os.cpu_count(), "queries": args.queries, "loadavg_start": loadavg(), "rows": [],
                    "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS", "default")}
    if args.numpy_only:
        for n in sizes:
            row = run_child("--build-child", str(n), "--queries", str(args.queries), "--folder", "-")
            report["rows"].append(row)
            print(f"[{n}] done, load {loadavg()}", file=sys.stderr, flush=True)
        report["loadavg_end"] = loadavg()
        if args.json:
            print(json.dumps(report, indent=2))
        else:
            print(f"Exact search only (Snapshot.dense_top), top {TOP}, {args.queries} queries, BLAS threads {report['blas_threads']}")
            print(f"{'chunks':>9} | {'all p50/p95':>14} | {'org p50/p95':>14} | {'doc p50/p95':>12} | {'matrix MB':>9} | {'peak RSS':>8} | load")
            for r in report["rows"]:
                nb = r["numpy"]
                lines = [f"{nb[k]['p50_ms']:.1f}/{nb[k]['p95_ms']:.1f}" for k in ("unfiltered", "organisation", "document")]
                print(f"{r['n']:>9} | {lines[0]:>14} | {lines[1]:>14} | {lines[2]:>12} | {r['matrix_mb']:>9} | {r['peak_rss_mb']:>8} | {r['loadavg_after_numpy'][0]}")
            print("without the row copy (all rows, then pick):")
            for r in report["rows"]:
                nb = r["numpy"]
                print(f"{r['n']:>9} | all {nb['unfiltered_no_copy']['p50_ms']:.1f}/{nb['unfiltered_no_copy']['p95_ms']:.1f}"
                      f" | org {nb['organisation_no_copy']['p50_ms']:.1f}/{nb['organisation_no_copy']['p95_ms']:.1f}")
        return 0
    for n in sizes:
        scratch = Path(tempfile.mkdtemp(prefix=f"kb-bench-scale-{n}-"))
        try:
            folder = scratch / "chroma"
            row: dict = {"n": n}
            build = run_child("--build-child", str(n), "--queries", str(args.queries), "--folder", str(folder))
            row["numpy"] = build.pop("numpy")
            row["matrix_mb"] = build["matrix_mb"]
            row["build"] = build
            row["chroma"] = run_child("--open-child", str(n), "--queries", str(args.queries), "--folder", str(folder))
            row["chroma_disk_mb"] = folder_mb(folder)
            if args.server:
                row["server"] = serve(folder, n, args.queries)
            report["rows"].append(row)
            print(f"[{n}] done, load {loadavg()}: {json.dumps(row)}", file=sys.stderr, flush=True)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    if args.project and len(report["rows"]) >= 2 and args.project > max(sizes):
        report["projection"] = project(report["rows"], args.project)
    report["loadavg_end"] = loadavg()
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
