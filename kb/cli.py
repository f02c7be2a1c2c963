"""The ``kb`` command: parsing arguments and printing results, nothing else.

Every job the app does can be scripted here, and ``--json`` gives machine-readable output.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, replace
from pathlib import Path

from kb.settings import get_settings


def _filters(args):
    from kb.snapshot import Filters

    return Filters(
        organisations=args.organisation or None,
        year_from=args.year_from,
        year_to=args.year_to,
        documents=args.document or None,
        themes=args.theme or None,
        passage_types=args.type or None,
    )


def _add_filter_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--organisation", action="append", help="only this organisation (repeatable)")
    parser.add_argument("--year-from", type=int, help="only documents from this year on")
    parser.add_argument("--year-to", type=int, help="only documents up to this year")
    parser.add_argument("--document", action="append", help="only this document: file name or id prefix (repeatable)")
    parser.add_argument("--theme", action="append", help="only passages tagged with this theme id (repeatable)")
    parser.add_argument("--type", action="append", help="only passages of this type: lesson, practice, recommendation, finding, definition")


def _print_json(value) -> None:
    print(json.dumps(value, ensure_ascii=False, indent=2, default=str))


def _service(args):
    from kb.service import Service

    overrides = {}
    if getattr(args, "k", None):
        overrides["answer_candidate_passages"] = args.k
    return Service(get_settings(**overrides))


# --- commands ------------------------------------------------------------------------------
def cmd_ingest(args) -> int:
    from ingest.pipeline import IngestBusy
    from kb.service import Service

    service = Service(get_settings())
    paths = [Path(p) for p in args.paths] or None
    bar = None
    if not args.json and sys.stderr.isatty() or args.progress:
        from tqdm import tqdm

        bar = tqdm(total=0, unit="page", desc="ingesting", file=sys.stderr, dynamic_ncols=True)

    def progress(step) -> None:
        if bar is not None:
            bar.total = max(step.pages_estimate, step.pages_done)
            bar.n = step.pages_done
            bar.set_postfix_str(f"{step.files_done}/{step.files_total} files: {step.current[:40]}")
            bar.refresh()

    try:
        report = service.ingest(paths, progress=progress)
    except IngestBusy as error:
        print(f"kb ingest: {error}", file=sys.stderr)
        return 2
    finally:
        if bar is not None:
            bar.close()
    older_version_note = service.stats()["older_version_note"]
    if args.json:
        _print_json({
            "summary": report.summary(), "files": [asdict(r) for r in report.results],
            "repaired": report.repaired, "older_version_note": older_version_note,
        })
    else:
        for note in report.repaired:
            print(f"repaired: {note}")
        for result in report.results:
            if result.status in {"added", "updated"}:
                print(f"{result.status:>9}  {result.file}  ({result.pages} pages, {result.chunks} chunks)")
                for warning in result.warnings:
                    print(f"           warning: {warning}")
            elif result.status != "unchanged":
                print(f"{result.status:>9}  {result.file}: {result.reason}" if result.reason else f"{result.status:>9}  {result.file}")
        s = report.summary()
        print(
            f"\n{s['added']} added, {s['updated']} updated, {s['unchanged']} unchanged, {s['removed']} removed, "
            f"{s['duplicate']} duplicate, {s['failed']} failed; {s['pages']} pages, {s['chunks']} chunks "
            f"({s['embedded']} newly embedded) in {s['seconds']:.1f} s"
        )
        if older_version_note:
            print(f"\nnote: {older_version_note}")
    return 1 if report.failed else 0


def cmd_ask(args) -> int:
    service = _service(args)
    answer = service.ask(args.question, filters=_filters(args))
    if args.json:
        _print_json(answer.to_dict())
        return 0
    print(answer.answer)
    listed = answer.related if answer.abstained else answer.citations
    if listed:
        print("\nRelated reading:" if answer.abstained else "\nSources:")
    for c in listed:
        page = f"p. {c.page_label}" + (f" (PDF page {c.page})" if c.page_label != str(c.page) else "")
        print(f"[{c.n}] {c.organisation}, {c.title} ({c.year or 'n.d.'}), {page} — {c.file}")
        if c.quote:
            print(f"     “{c.quote}”")
    for note in answer.notes:
        if not note.startswith("relevance"):
            print(f"\nnote: {note}")
    return 0


def cmd_search(args) -> int:
    service = _service(args)
    passages = service.search(args.query, k=args.k or 5, filters=_filters(args))
    rows = [
        {
            "n": n, "doc_id": p.document.doc_id, "file": p.document.file, "title": p.document.title,
            "organisation": p.document.organisation, "year": p.document.year, "page": p.chunk.page_start,
            "page_label": p.chunk.label_start, "text": p.chunk.text, "score": round(p.score, 6),
            "dense_score": p.dense_score, "keyword_score": p.keyword_score, "chunk_id": p.chunk.chunk_id,
        }
        for n, p in enumerate(passages, start=1)
    ]
    if args.json:
        _print_json({"query": args.query, "passages": rows})
    else:
        for row in rows:
            print(f"[{row['n']}] {row['organisation']}, {row['title']} ({row['year']}), p. {row['page_label']}  score {row['score']:.4f}")
            print(f"     {row['text'][:300]}")
    return 0


def cmd_stats(args) -> int:
    from kb.service import Service

    stats = Service(get_settings()).stats()
    if args.json:
        _print_json(stats)
        return 0
    print(f"{stats['documents']} documents, {stats['pages']} pages, {stats['chunks']} chunks  ({stats['data_dir']})")
    for organisation, counts in stats["by_organisation"].items():
        print(f"  {organisation:<50} {counts['documents']:>4} docs {counts['pages']:>6} pages {counts['chunks']:>7} chunks")
    if stats["failed"]:
        print("\nFailed files:")
        for failure in stats["failed"]:
            print(f"  {failure['file']}: {failure['reason']}")
    if stats["duplicates"]:
        print("\nDuplicates (stored once):")
        for duplicate in stats["duplicates"]:
            print(f"  {duplicate['file']}: {duplicate['reason']}")
    if stats["older_version_note"]:
        print(f"\nnote: {stats['older_version_note']}")
    return 0


def cmd_remove(args) -> int:
    from ingest.pipeline import IngestBusy
    from kb.service import Service

    try:
        names = Service(get_settings()).remove(args.document)
    except (KeyError, IngestBusy) as error:
        message = error.args[0] if error.args else str(error)
        if args.json:
            _print_json({"removed": [], "error": message})
        else:
            print(f"kb remove: {message}", file=sys.stderr)
        return 1
    if args.json:
        _print_json({"removed": names})
    else:
        print(f"removed {', '.join(names)} (source file moved to {get_settings().data_dir / 'removed'})")
    return 0


def cmd_eval(args) -> int:
    from kb.evaluate import format_report, load_questions, public, run_eval
    from kb.service import Service

    try:
        questions = load_questions(Path(args.questions))
    except (OSError, ValueError) as error:
        print(f"kb eval: {error}", file=sys.stderr)
        return 2
    service = Service(get_settings())
    if not service.stats()["documents"]:
        print("kb eval: the knowledge base is empty; run `kb ingest` first", file=sys.stderr)
        return 2
    result = run_eval(service, questions, k=args.k)
    if args.json:
        output = public(result)
        if args.show_misses:
            from kb.evaluate import misses

            output["misses"] = misses(result)
        _print_json(output)
    else:
        print(format_report(result, show_misses=args.show_misses))
    return 0


# --- parser ----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kb",
        description="Counter-Trafficking Knowledge Exchange: cited lessons learned from published reports.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("ingest", help="sync PDFs (default: the documents folder) into the knowledge base")
    p.add_argument("paths", nargs="*", help="PDF files or folders (default: KB_DOCUMENTS_DIR, ./documents)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--progress", action="store_true", help="show the progress bar even when not on a terminal")
    p.set_defaults(run=cmd_ingest)

    p = commands.add_parser("ask", help="ask a question; the answer cites document, organisation, year and page")
    p.add_argument("question")
    p.add_argument("--k", type=int, help="passages to draw the answer from")
    _add_filter_arguments(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_ask)

    p = commands.add_parser("search", help="the best passages for a query, with their scores")
    p.add_argument("query")
    p.add_argument("--k", type=int, default=5)
    _add_filter_arguments(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_search)

    p = commands.add_parser("stats", help="documents, pages and chunks by organisation; failed files")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_stats)

    p = commands.add_parser("remove", help="remove a document (file name or document id)")
    p.add_argument("document")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_remove)

    p = commands.add_parser("eval", help="measure retrieval and answers on a question set (JSONL)")
    p.add_argument("questions")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--json", action="store_true")
    p.add_argument("--show-misses", action="store_true", help="list each missed question with what was retrieved")
    p.set_defaults(run=cmd_eval)

    for register in _EXTRA_COMMANDS:
        register(commands)
    return parser


_EXTRA_COMMANDS: list = []


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from kb.settings import SettingsError

    try:
        return args.run(args)
    except SettingsError as error:
        print(f"kb: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


__all__ = ["main", "build_parser", "replace"]
_EXTRA_COMMANDS.append(__import__("kb.backup", fromlist=["register_commands"]).register_commands)
from kb.exchange_map import register_commands; _EXTRA_COMMANDS.append(register_commands)  # noqa: E402,E702


if __name__ == "__main__":
    sys.exit(main())
