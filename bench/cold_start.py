"""Cold start to first answer: a fresh process loads the model, the store and the
in-memory indexes once (as the app does with ``st.cache_resource``) and answers one question.

    KB_DATA_DIR=/path/to/a/corpus/kb python bench/cold_start.py [--runs 3] [--json]

Each run is a new Python process, so nothing is warm but the operating system's file cache.
Prints the time of each phase: imports, service, model load, index load, first answer, and
a second answer (warm) for comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

PROBE = r"""
import json, time
t0 = time.perf_counter()
from kb.service import Service
t1 = time.perf_counter()
service = Service()
t2 = time.perf_counter()
service.kb.query_embedder.embed(["warm"])
t3 = time.perf_counter()
service.searcher.snapshot()
t4 = time.perf_counter()
answer = service.ask(QUESTION)
t5 = time.perf_counter()
service.ask(QUESTION + " ")
t6 = time.perf_counter()
print(json.dumps({"imports_s": t1 - t0, "service_s": t2 - t1, "model_s": t3 - t2, "indexes_s": t4 - t3,
                  "first_answer_s": t5 - t4, "total_s": t5 - t0, "warm_answer_s": t6 - t5,
                  "citations": len(answer.citations), "abstained": answer.abstained}))
"""

DEFAULT_QUESTION = "What phone number should people in the US call to report suspected human trafficking?"


def run_once(question: str) -> dict:
    code = PROBE.replace("QUESTION", json.dumps(question))
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ.copy()
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--question", default=DEFAULT_QUESTION)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from kb.service import Service

    stats = Service().stats()
    if not stats["documents"]:
        print(f"skipped: the knowledge base at {stats['data_dir']} is empty (set KB_DATA_DIR)")
        return 0
    runs = [run_once(args.question) for _ in range(args.runs)]
    summary = {
        key: round(statistics.median(r[key] for r in runs), 3)
        for key in ("imports_s", "service_s", "model_s", "indexes_s", "first_answer_s", "total_s", "warm_answer_s")
    }
    summary.update(documents=stats["documents"], chunks=stats["chunks"], runs=args.runs, load_average=os.getloadavg()[0])
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for key, value in summary.items():
            print(f"{key:>16}: {value}")
        print(f"\ncold start to first answer (median of {args.runs}): {summary['total_s']:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
