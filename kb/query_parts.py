"""Multi-part questions: "How many inspectors does Bangladesh have, and how many would it
need?" asks two things, and the passage that answers one part is often a poor match for
the whole.  Retrieval therefore also searches with each part on its own
(:meth:`kb.search.Searcher.search`), and a passage that answers a part well gains a share
of that score.  Deterministic: the parts are found by punctuation and by "and" before a
question word.
"""

from __future__ import annotations

import re

_QUESTION_WORD = (
    r"(?:what|how|why|which|who|whom|where|when|did|do|does|is|are|should|could|can|"
    r"were|was|has|have|would)\b"
)
_PART_BOUNDARY = re.compile(
    r"\s+[-–—]+\s+"  # a dash between clauses
    r"|[?.!]\s+"  # one sentence after another
    r"|;\s+"
    rf"|,?\s+and\s+(?={_QUESTION_WORD})",  # "..., and what ..."
    re.IGNORECASE,
)
MIN_PART_WORDS = 4  # shorter pieces ("is that enough?") say too little to search with
MAX_PARTS = 4  # a pasted paragraph is not searched sentence by sentence: the first few count


def question_parts(question: str) -> list[str]:
    """The parts of a question that asks several things, or ``[]`` when it asks one."""
    pieces = (piece.strip(" ?.!,;:") for piece in _PART_BOUNDARY.split(question))
    parts = [piece for piece in pieces if len(piece.split()) >= MIN_PART_WORDS]
    return parts[:MAX_PARTS] if len(parts) >= 2 else []
