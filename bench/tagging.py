"""How well are passages tagged?  Precision and recall of the theme and passage-type
tagger against hand labels.

The labels (``tests/data/tagging_labels.jsonl``) were written by reading each chunk of a
sample of the shared corpus and deciding its themes and type by hand; each line holds
only ``file``, ``page``, ``chunk_id``, ``themes``, ``type`` and ``sample`` (how the
chunk was drawn: ``random`` = stratified random sample over all documents, ``keyword`` =
drawn among chunks containing a word typical of a rare theme or type, ``section`` =
drawn from sections headed lessons / challenges / conclusions / practices).  No document
text is stored: the chunks are read from a knowledge base of the corpus.

The tagger is run afresh on every labelled chunk (its text and the vector cached in the
ledger; the tags stored in the ledger are ignored), so a change to the taxonomy file or
to the ``theme_*`` / ``passage_type_*`` settings shows at once, without re-ingesting.

Command line (from the repository root)::

    python bench/tagging.py [--labels tests/data/tagging_labels.jsonl]
                            [--corpus ../shared/corpus] [--sample random]
                            [--show-errors THEME_OR_TYPE] [--json]

The knowledge base is the one in ``KB_DATA_DIR`` when that folder holds a ledger;
otherwise the corpus is ingested into a temporary folder (which takes a while) and
removed afterwards.  If neither is available the script says so and exits 0.

Metrics: for each theme and each type, precision = correct tags / tags given and
recall = correct tags / labelled tags; the macro averages are the plain means over the
themes (types) that have at least one labelled or predicted chunk (a precision with no
prediction is left out of the mean).  Labels whose chunk id is not in the knowledge base
(e.g. after a chunking change) are counted and skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

DEFAULT_LABELS = REPO / "tests" / "data" / "tagging_labels.jsonl"
DEFAULT_CORPUS = REPO.parent / "shared" / "corpus"


def load_labels(path: Path) -> list[dict]:
    labels = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        item = json.loads(line)
        missing = {"file", "page", "chunk_id", "themes", "type"} - set(item)
        if missing:
            raise ValueError(f"{path}:{n}: missing {', '.join(sorted(missing))}")
        labels.append(item)
    return labels


def _prf(predicted: list[set[str]], gold: list[set[str]], names: list[str]) -> dict:
    per: dict[str, dict] = {}
    for name in names:
        tp = sum(1 for p, g in zip(predicted, gold) if name in p and name in g)
        fp = sum(1 for p, g in zip(predicted, gold) if name in p and name not in g)
        fn = sum(1 for p, g in zip(predicted, gold) if name not in p and name in g)
        per[name] = {
            "labelled": tp + fn,
            "predicted": tp + fp,
            "precision": tp / (tp + fp) if tp + fp else None,
            "recall": tp / (tp + fn) if tp + fn else None,
        }
    precisions = [v["precision"] for v in per.values() if v["precision"] is not None]
    recalls = [v["recall"] for v in per.values() if v["recall"] is not None]
    return {
        "per_class": per,
        "macro_precision": sum(precisions) / len(precisions) if precisions else None,
        "macro_recall": sum(recalls) / len(recalls) if recalls else None,
    }


def evaluate(kb, labels: list[dict], sample: str | None = None) -> dict:
    """Tag the labelled chunks of ``kb`` afresh and compare with the labels."""
    import numpy as np

    from kb.knowledge_base import chunk_from_row
    from kb.themes import PASSAGE_TYPES, load_taxonomy, tag_chunks

    if sample:
        labels = [l for l in labels if l.get("sample", "random") == sample]
    taxonomy = load_taxonomy(kb.settings)
    ids = [l["chunk_id"] for l in labels]
    rows = {}
    for start in range(0, len(ids), 500):
        part = ids[start : start + 500]
        marks = ",".join("?" * len(part))
        for row in kb.ledger._db.execute(f"SELECT * FROM chunks WHERE chunk_id IN ({marks})", part):
            rows[row["chunk_id"]] = row
    found = [l for l in labels if l["chunk_id"] in rows]
    chunks = [chunk_from_row(rows[l["chunk_id"]]) for l in found]
    cached = kb.ledger.cached_vectors([rows[l["chunk_id"]]["embedding_key"] for l in found])
    vectors = np.vstack([cached[rows[l["chunk_id"]]["embedding_key"]] for l in found]) if found else np.zeros((0, kb.settings.embed_dim), np.float32)
    tags = tag_chunks(chunks, vectors, taxonomy, kb.settings)  # theme vectors from the model: nothing is written
    theme_names = [t for t in taxonomy.ids]
    unknown = sorted({t for l in found for t in l["themes"]} - set(theme_names))
    themes = _prf([set(t) for t, _ in tags], [set(l["themes"]) for l in found], theme_names + unknown)
    types = _prf([{p} - {""} for _, p in tags], [{l["type"]} - {""} for l in found], list(PASSAGE_TYPES))
    none_right = sum(1 for (_, p), l in zip(tags, found) if p == "" and l["type"] == "")
    errors = [
        {"chunk_id": l["chunk_id"], "file": l["file"], "page": l["page"], "labelled_themes": l["themes"],
         "tagged_themes": t, "labelled_type": l["type"], "tagged_type": p}
        for (t, p), l in zip(tags, found)
        if set(t) != set(l["themes"]) or p != l["type"]
    ]
    return {
        "labels": len(labels),
        "evaluated": len(found),
        "missing_chunks": len(labels) - len(found),
        "files": len({l["file"] for l in found}),
        "sample": sample or "all",
        "themes": themes,
        "types": types,
        "type_accuracy": sum(1 for (_, p), l in zip(tags, found) if p == l["type"]) / len(found) if found else None,
        "none_type": {"labelled": sum(1 for l in found if l["type"] == ""), "tagged": sum(1 for _, p in tags if p == ""), "both": none_right},
        "taxonomy": taxonomy.source,
        "errors": errors,
    }


def _fmt(value) -> str:
    return "  n/a" if value is None else f"{value:5.2f}"


def format_report(result: dict, show: str | None = None) -> str:
    lines = [
        f"Tagging quality on {result['evaluated']} hand-labelled chunks from {result['files']} documents "
        f"(sample: {result['sample']}; {result['missing_chunks']} labels not found in the knowledge base)",
        "",
    ]
    for title, key in (("Themes", "themes"), ("Passage types", "types")):
        part = result[key]
        lines.append(f"{title:<28} labelled predicted precision recall")
        for name, v in part["per_class"].items():
            lines.append(f"  {name:<26} {v['labelled']:>8} {v['predicted']:>9} {_fmt(v['precision']):>9} {_fmt(v['recall']):>6}")
        lines.append(f"  {'macro average':<26} {'':>8} {'':>9} {_fmt(part['macro_precision']):>9} {_fmt(part['macro_recall']):>6}")
        lines.append("")
    none = result["none_type"]
    lines.append(f"type accuracy (none included): {_fmt(result['type_accuracy']).strip()}; "
                 f"no type: {none['labelled']} labelled, {none['tagged']} tagged, {none['both']} both")
    if show:
        lines.append("")
        lines.append(f"Disagreements on {show}:")
        for e in result["errors"]:
            if show in set(e["labelled_themes"]) ^ set(e["tagged_themes"]) or show in {e["labelled_type"], e["tagged_type"]} and e["labelled_type"] != e["tagged_type"]:
                lines.append(f"  {e['chunk_id']} ({e['file']} p.{e['page']}): labelled {e['labelled_themes']} / {e['labelled_type'] or '-'}; "
                             f"tagged {e['tagged_themes']} / {e['tagged_type'] or '-'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--labels", type=Path, default=DEFAULT_LABELS)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--sample", choices=["random", "keyword", "section"], help="only labels drawn this way")
    parser.add_argument("--show-errors", metavar="NAME", help="list the disagreements on one theme or type")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    from kb.knowledge_base import KnowledgeBase
    from kb.settings import get_settings

    labels = load_labels(args.labels)
    data_dir = os.environ.get("KB_DATA_DIR", "")
    temporary = None
    if data_dir and (Path(data_dir) / "ledger.sqlite").is_file():
        settings = get_settings()
    else:
        if not args.corpus.is_dir():
            print(f"bench/tagging.py: no knowledge base in KB_DATA_DIR and no corpus at {args.corpus}; nothing to measure")
            return 0
        temporary = tempfile.TemporaryDirectory(prefix="kb-tagging-")
        settings = get_settings(data_dir=Path(temporary.name), chroma_url="")
        from ingest.pipeline import ingest

        print(f"ingesting {args.corpus} into {temporary.name} (set KB_DATA_DIR to reuse a knowledge base)", file=sys.stderr)
        ingest([args.corpus], settings)
    kb = KnowledgeBase(settings)
    try:
        result = evaluate(kb, labels, args.sample)
    finally:
        kb.close()
        if temporary is not None:
            temporary.cleanup()
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "errors" or args.show_errors}, indent=2))
    else:
        print(format_report(result, args.show_errors))
    return 0


if __name__ == "__main__":
    sys.exit(main())
