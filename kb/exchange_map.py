"""The exchange map and theme briefs: what each organisation has learned about each theme.

* :func:`exchange_map` counts, for every theme × organisation, the passages of the chosen
  types (by default lessons, recommendations and practices) the library holds: the
  numbers behind ``kb map`` and the app's heat map.
* :func:`map_cell_passages` lists the passages behind one cell, as citations.
* :func:`build_theme_brief` assembles a :class:`kb.brief.Brief` for one theme: per
  organisation a heading and its lessons and recommendations, each quoted and cited; it
  exports like any other brief (``to_markdown`` / ``to_docx`` / ``to_pdf``) and can be
  saved with ``service.briefs().save(brief)``.
* :func:`register_commands` adds ``kb retag`` and ``kb map`` to the command line.

Everything reads the service's current snapshot (only ready documents), so counts and
lists agree with what search shows.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass

from kb.records import Chunk, Citation, DocumentMeta, cite

MAP_TYPES: tuple[str, ...] = ("lesson", "recommendation", "practice")
BRIEF_TYPES: tuple[str, ...] = ("lesson", "recommendation")
UNKNOWN_ORGANISATION = "(unknown)"
_PLURALS = {
    "lesson": "lessons learned",
    "practice": "good practices",
    "recommendation": "recommendations",
    "finding": "findings",
    "definition": "definitions and legal provisions",
}


_DETAIL = re.compile(r"\s*\([^()]*\)\s*$")


def organisation_of(document: DocumentMeta) -> str:
    """The organisation a document counts for on the map: its main name, without the
    detail in brackets that catalogues add ("IOM (Central Evaluation Division)" and
    "IOM (evaluation by PPMI Group)" are both IOM), so the map has one column per
    organisation rather than one per office or contractor."""
    name = document.organisation.strip()
    return _DETAIL.sub("", name).strip() or name or UNKNOWN_ORGANISATION


def _taxonomy(service):
    from kb.themes import TaxonomyError, load_taxonomy

    try:
        return load_taxonomy(service.settings)
    except TaxonomyError:
        return None


def theme_labels(service) -> dict[str, str]:
    """Theme id -> label for the library as it is now (see :func:`_theme_labels`)."""
    return _theme_labels(service, service.searcher.snapshot().chunks)


def _theme_labels(service, chunks: list[Chunk]) -> dict[str, str]:
    """Theme id -> label: the taxonomy's themes in order, then any id still stored on
    passages that the taxonomy no longer has (until ``kb retag``)."""
    taxonomy = _taxonomy(service)
    labels = dict(taxonomy.labels()) if taxonomy else {}
    for chunk in chunks:
        for theme in chunk.themes:
            labels.setdefault(theme, theme)
    return labels


def _tagged(service, theme_id: str, organisation: str | None, types: tuple[str, ...]) -> list[tuple[Chunk, DocumentMeta]]:
    snapshot = service.searcher.snapshot()
    found = []
    for chunk in snapshot.chunks:
        if chunk.passage_type not in types or theme_id not in chunk.themes:
            continue
        document = snapshot.documents[chunk.doc_id]
        if organisation is not None and organisation_of(document).casefold() != organisation.casefold():
            continue
        found.append((chunk, document))
    found.sort(key=lambda pair: (organisation_of(pair[1]).casefold(), -(pair[1].year or 0), pair[1].title, pair[0].ordinal))
    return found


# ======================================================================================
# The map
# ======================================================================================


def exchange_map(service, types: tuple[str, ...] | list[str] = MAP_TYPES) -> dict:
    """Counts of passages of ``types`` per theme and organisation.

    Returns ``{"themes": {theme_id: {"label": str, "organisations": {org: count},
    "total": int, "by_type": {org: {type: count}}}}, "organisations": [org, ...],
    "types": [...]}``; every theme of the taxonomy and every organisation of the library
    is present (zeros included) so a heat map shows the gaps as well.
    """
    types = tuple(types)
    snapshot = service.searcher.snapshot()
    organisations = sorted({organisation_of(d) for d in snapshot.documents.values()}, key=str.casefold)
    labels = _theme_labels(service, snapshot.chunks)
    themes = {
        theme: {
            "label": label,
            "organisations": {org: 0 for org in organisations},
            "total": 0,
            "by_type": {org: {t: 0 for t in types} for org in organisations},
        }
        for theme, label in labels.items()
    }
    for chunk in snapshot.chunks:
        if chunk.passage_type not in types:
            continue
        org = organisation_of(snapshot.documents[chunk.doc_id])
        for theme in chunk.themes:
            entry = themes[theme]
            entry["organisations"][org] += 1
            entry["by_type"][org][chunk.passage_type] += 1
            entry["total"] += 1
    return {"themes": themes, "organisations": organisations, "types": list(types)}


def format_map(table: dict, width: int = 110) -> str:
    """The map as a plain-text table; organisations are numbered columns with a legend."""
    organisations = table["organisations"]
    themes = table["themes"]
    if not organisations:
        return "The library is empty: add documents and ingest them first."
    label_width = min(44, max([len(v["label"]) for v in themes.values()] + [5]))
    header = f"{'theme':<{label_width}} " + " ".join(f"{f'[{i}]':>5}" for i in range(1, len(organisations) + 1)) + f" {'total':>6}"
    lines = [
        f"Passages by theme and organisation ({', '.join(table['types'])})",
        "",
        header,
        "-" * len(header),
    ]
    for theme, entry in themes.items():
        label = entry["label"] if len(entry["label"]) <= label_width else entry["label"][: label_width - 1] + "…"
        counts = " ".join(f"{entry['organisations'][org]:>5}" for org in organisations)
        lines.append(f"{label:<{label_width}} {counts} {entry['total']:>6}")
    lines.append("")
    legend = [f"[{i}] {org}" for i, org in enumerate(organisations, start=1)]
    line = ""
    for item in legend:
        if line and len(line) + 3 + len(item) > width:
            lines.append(line)
            line = ""
        line = f"{line}   {item}" if line else item
    if line:
        lines.append(line)
    return "\n".join(lines)


# ======================================================================================
# Cell passages and theme briefs
# ======================================================================================


def cue_sentence(text: str, passage_type: str) -> str:
    """The sentence of a passage that best carries its type (the one to quote), or ""."""
    from kb.text import split_sentences
    from kb.themes import passage_type_scores

    best, best_score = "", 0.0
    for sentence in split_sentences(text):
        words = len(sentence.split())
        if words < 5 or words > 90:
            continue
        score = passage_type_scores(sentence).get(passage_type, 0.0) if passage_type else 0.0
        if score > best_score:
            best, best_score = sentence, score
    return best


def passage_citation(service, chunk: Chunk, document: DocumentMeta, n: int = 1) -> Citation:
    """A citation of a stored passage: quote = its cue sentence (or the passage text),
    page = the page of the quote (or of the passage start) with its printed label."""
    from kb.verify import page_of_quote

    quote = cue_sentence(chunk.text, chunk.passage_type)
    page = chunk.page_start
    if quote:
        found = page_of_quote(service.kb.ledger, chunk.doc_id, chunk.page_start, chunk.page_end, quote)
        if found is None:
            quote = ""  # never quote what the page does not hold
        else:
            page = found
    citation = cite(n, chunk, document, page=page, quote=quote or chunk.text)
    if page not in (chunk.page_start, chunk.page_end):  # a middle page of a long chunk
        citation.page_label = service.kb.ledger.page_label(chunk.doc_id, page)
    return citation


def map_cell_passages(
    service, theme_id: str, organisation: str | None, types: tuple[str, ...] | list[str] = MAP_TYPES
) -> list[Citation]:
    """The passages counted in one cell of the map, as citations numbered from 1
    (``organisation=None``: the theme's whole row)."""
    pairs = _tagged(service, theme_id, organisation, tuple(types))
    return [passage_citation(service, chunk, document, n) for n, (chunk, document) in enumerate(pairs, start=1)]


@dataclass
class _Section:
    organisation: str
    citations: list[Citation]


def build_theme_brief(service, theme_id: str, types: tuple[str, ...] | list[str] = BRIEF_TYPES, title: str = ""):
    """A brief on one theme: per organisation (alphabetical) a heading, then its
    lessons and recommendations on the theme (most recent documents first), each a
    quoted and cited passage noted with its type.  Not saved: pass it to
    ``service.briefs().save(brief)`` to keep it."""
    from kb.brief import heading_item, new_brief, note_item, passage_item
    from kb.themes import PASSAGE_TYPE_LABELS

    types = tuple(types)
    snapshot = service.searcher.snapshot()
    label = _theme_labels(service, snapshot.chunks).get(theme_id)
    if label is None:
        raise KeyError(f"no theme {theme_id!r}")
    brief = new_brief(title or f"Theme brief: {label}")
    pairs = _tagged(service, theme_id, None, types)
    sections: dict[str, _Section] = {}
    n = 0
    for chunk, document in pairs:
        n += 1
        org = organisation_of(document)
        section = sections.setdefault(org, _Section(org, []))
        section.citations.append(passage_citation(service, chunk, document, n))
    names = [_PLURALS.get(t, t) for t in types]
    kinds = ", ".join(names[:-1]) + (" and " if len(names) > 1 else "") + names[-1] if names else "passages"
    if not sections:
        none_of = kinds.replace(" and ", " or ")
        brief.add(note_item(f"The library holds no {none_of} tagged with the theme “{label}” yet."))
        return brief
    brief.add(note_item(
        f"{kinds[0].upper()}{kinds[1:]} on “{label}” from {len(sections)} organisation"
        f"{'s' if len(sections) != 1 else ''} ({n} passage{'s' if n != 1 else ''}), quoted from the library."
    ))
    by_chunk = {c.chunk_id: c for c, _ in pairs}
    for section in sections.values():
        brief.add(heading_item(section.organisation))
        for citation in section.citations:
            kind = by_chunk[citation.chunk_id].passage_type
            brief.add(passage_item(citation, note=PASSAGE_TYPE_LABELS.get(kind, kind)))
    return brief


# ======================================================================================
# Command line: kb retag, kb map
# ======================================================================================


def cmd_retag(args) -> int:
    from ingest.pipeline import IngestBusy
    from kb.knowledge_base import KnowledgeBase
    from kb.settings import get_settings
    from kb.themes import TaxonomyError

    settings = get_settings()
    kb = KnowledgeBase(settings)
    try:
        report = kb.retag()
    except (TaxonomyError, IngestBusy) as error:
        print(f"kb retag: {error}", file=sys.stderr)
        return 2
    finally:
        kb.close()
    if args.json:
        print(json.dumps(report.to_dict(), ensure_ascii=False, indent=2))
        return 0
    print(f"re-tagged {report.chunks} passages with {report.taxonomy}: {report.changed} changed")
    print("\nPassages per theme:")
    for theme, count in report.themes.items():
        print(f"  {theme:<30} {count:>6}")
    print("\nPassages per type:")
    for kind, count in report.types.items():
        print(f"  {kind or '(none)':<30} {count:>6}")
    return 0


def cmd_map(args) -> int:
    from kb.service import Service
    from kb.settings import get_settings

    table = exchange_map(Service(get_settings()), types=tuple(args.type or MAP_TYPES))
    if args.json:
        print(json.dumps(table, ensure_ascii=False, indent=2))
    else:
        print(format_map(table))
    return 0


def register_commands(commands) -> None:
    """Add ``retag`` and ``map`` to the ``kb`` command's subparsers."""
    p = commands.add_parser("retag", help="re-tag every passage with themes and types (after editing the taxonomy)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_retag)

    p = commands.add_parser("map", help="themes × organisations: how many lessons, recommendations and practices the library holds")
    p.add_argument("--type", action="append", choices=["lesson", "practice", "recommendation", "finding", "definition"],
                   help="count passages of this type (repeatable; default: lesson, recommendation, practice)")
    p.add_argument("--json", action="store_true", help="the table as JSON, with theme ids as keys")
    p.set_defaults(run=cmd_map)
