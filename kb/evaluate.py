"""``kb eval``: measure retrieval and answers against a question set, on the current
knowledge base (it ingests nothing).

Question format, one JSON object a line: ``id``, ``question``, ``kind`` (fact, lesson,
synthesis, followup, unanswerable), ``after`` (for a follow-up: the id it follows),
``answers`` (key phrases; a correct answer contains one), ``sources`` (``{"file",
"pages"}`` with 1-based page indices; empty for unanswerable questions).

A retrieved chunk is a hit when it comes from a gold file and its page range touches a
gold page.  Citation validity re-reads the cited PDF page itself.
"""

from __future__ import annotations

import json
import statistics
import time
from collections import defaultdict
from pathlib import Path

from kb.conversation import Turn
from kb.records import Answer, Passage
from kb.verify import quote_parts, verify_against_pdf


def load_questions(path: Path) -> list[dict]:
    questions = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{number}: not valid JSON ({error.msg})") from None
        missing = {"id", "question"} - set(item)
        if missing:
            raise ValueError(f"{path}:{number}: missing {', '.join(sorted(missing))}")
        item.setdefault("kind", "fact")
        item.setdefault("answers", [])
        item.setdefault("sources", [])
        questions.append(item)
    return questions


def conversation_order(questions: list[dict]) -> list[dict]:
    """Each follow-up right after the question it follows (which may come later)."""
    by_id = {q["id"]: q for q in questions}
    children: dict[str, list[dict]] = defaultdict(list)
    roots = []
    for q in questions:
        if q.get("after") and q["after"] in by_id:
            children[q["after"]].append(q)
        else:
            roots.append(q)
    ordered: list[dict] = []

    def visit(q: dict) -> None:
        ordered.append(q)
        for child in children.get(q["id"], []):
            visit(child)

    for q in roots:
        visit(q)
    return ordered


def first_hit_rank(passages: list[Passage], sources: list[dict]) -> int | None:
    for rank, passage in enumerate(passages, start=1):
        for gold in sources:
            if passage.document.file == Path(gold["file"]).name and any(
                passage.chunk.page_start <= page <= passage.chunk.page_end for page in gold.get("pages", [])
            ):
                return rank
    return None


def answer_hits(answer: Answer, phrases: list[str]) -> bool:
    if answer.abstained:
        return False
    text = " ".join(answer.answer.lower().split())
    return any(" ".join(p.lower().split()) in text for p in phrases)


def _percentile(values: list[float], share: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


def _summarise(rows: list[dict]) -> dict:
    answerable = [r for r in rows if r["answerable"]]
    unanswerable = [r for r in rows if not r["answerable"]]
    n = len(answerable)

    def share(items: list, test) -> float | None:
        return round(sum(1 for i in items if test(i)) / len(items), 4) if items else None

    citations = [c for r in rows for c in r["citation_checks"]]
    latencies = [r["answer_ms"] for r in rows]
    return {
        "n": len(rows),
        "answerable": n,
        "recall@1": share(answerable, lambda r: r["rank"] is not None and r["rank"] <= 1),
        "recall@5": share(answerable, lambda r: r["rank"] is not None and r["rank"] <= 5),
        "recall@10": share(answerable, lambda r: r["rank"] is not None and r["rank"] <= 10),
        "mrr@10": round(sum(1 / r["rank"] for r in answerable if r["rank"] and r["rank"] <= 10) / n, 4) if n else None,
        "answer_hit": share(answerable, lambda r: r["hit"]),
        "answered_answerable": share(answerable, lambda r: not r["abstained"]),
        "citation_valid": round(sum(citations) / len(citations), 4) if citations else 1.0,
        "citations_checked": len(citations),
        "abstain_unanswerable": share(unanswerable, lambda r: r["abstained"]),
        "p50_ms": round(_percentile(latencies, 0.5), 1),
        "p95_ms": round(_percentile(latencies, 0.95), 1),
        "retrieval_p50_ms": round(_percentile([r["retrieval_ms"] for r in rows], 0.5), 1),
        "retrieval_p95_ms": round(_percentile([r["retrieval_ms"] for r in rows], 0.95), 1),
    }


def run_eval(service, questions: list[dict], k: int = 10) -> dict:
    """Ask every question (follow-ups in their conversation) and measure."""
    conversations: dict[str, list[Turn]] = {}
    rows: list[dict] = []
    if questions:
        service.search(questions[0]["question"], k=k)  # load model and indexes before timing
    for item in conversation_order(questions):
        history = list(conversations.get(item.get("after") or "", []))
        started = time.perf_counter()
        answer = service.ask(item["question"], history=history)
        answer_ms = (time.perf_counter() - started) * 1000
        resolved = answer.resolved_question or item["question"]
        started = time.perf_counter()
        passages = service.search(resolved, k=k)
        retrieval_ms = (time.perf_counter() - started) * 1000
        conversations[item["id"]] = history + [Turn(item["question"], resolved, answer.answer)]
        checks = []
        if not answer.abstained:
            for citation in answer.citations:
                path = service.source_path(citation.doc_id)
                checks.append(bool(path) and bool(quote_parts(citation.quote)) and verify_against_pdf(path, citation.page, citation.quote))
        rows.append(
            {
                "id": item["id"],
                "kind": item.get("kind", "fact"),
                "question": item["question"],
                "resolved_question": resolved,
                "answerable": bool(item.get("sources")),
                "rank": first_hit_rank(passages, item.get("sources", [])) if item.get("sources") else None,
                "hit": answer_hits(answer, item.get("answers", [])),
                "abstained": answer.abstained,
                "citation_checks": checks,
                "answer_ms": answer_ms,
                "retrieval_ms": retrieval_ms,
                "retrieved": [
                    {"file": p.document.file, "pages": [p.chunk.page_start, p.chunk.page_end], "text": p.chunk.text[:160]}
                    for p in passages[:5]
                ],
                "gold": item.get("sources", []),
                "answer": answer.answer,
            }
        )
    kinds = sorted({r["kind"] for r in rows})
    result = _summarise(rows)
    result["by_kind"] = {kind: _summarise([r for r in rows if r["kind"] == kind]) for kind in kinds}
    result["k"] = k
    result["rows"] = rows
    return result


def misses(result: dict) -> list[dict]:
    """Answerable questions whose gold page is not in the top 5, or whose answer missed."""
    return [r for r in result["rows"] if r["answerable"] and (r["rank"] is None or r["rank"] > 5 or not r["hit"])]


def format_report(result: dict, show_misses: bool = False) -> str:
    keys = ["n", "recall@1", "recall@5", "recall@10", "mrr@10", "answer_hit", "answered_answerable", "citation_valid", "abstain_unanswerable", "p50_ms", "p95_ms", "retrieval_p95_ms"]
    widths = [max(8, len(k)) + 2 for k in keys]  # every column as wide as its name
    header = f"{'kind':<14}" + "".join(f"{k:>{w}}" for k, w in zip(keys, widths))
    lines = [header, "-" * len(header)]

    def line(name: str, figures: dict) -> str:
        cells = []
        for key, width in zip(keys, widths):
            value = figures.get(key)
            cells.append(f"{'-' if value is None else value:>{width}}")
        return f"{name:<14}" + "".join(cells)

    lines.append(line("all", result))
    for kind, figures in result["by_kind"].items():
        lines.append(line(kind, figures))
    if show_misses:
        lines.append("")
        for row in misses(result):
            rank = row["rank"] or "-"
            lines.append(f"MISS {row['id']} ({row['kind']}) rank {rank} hit {row['hit']}: {row['question']}")
            if row["resolved_question"] != row["question"]:
                lines.append(f"    asked as: {row['resolved_question']}")
            lines.append(f"    gold: " + "; ".join(f"{g['file']} p{g['pages']}" for g in row["gold"]))
            for got in row["retrieved"]:
                lines.append(f"    got:  {got['file']} p{got['pages'][0]}-{got['pages'][1]}: {got['text'][:100]}")
    return "\n".join(lines)


def public(result: dict) -> dict:
    """The figures without the per-question rows (for --json)."""
    return {k: v for k, v in result.items() if k != "rows"}


__all__ = ["load_questions", "run_eval", "format_report", "public", "misses", "statistics"]
