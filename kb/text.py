"""Small text helpers shared by ingestion, answers and checks: character normalisation,
line-break hyphen repair, white space, and splitting passages into sentences."""

from __future__ import annotations

import re
import unicodedata

_HYPHEN_BREAK = re.compile(r"(\w)[-\u00ad]\n[ \t]*([a-z])")
# Characters that NFKC leaves alone but that we still want as plain text.
_CHARACTER_FIXES = str.maketrans({"\u00ad": "", "\ufffe": "", "\u200e": "", "\u200f": ""})


def normalise_characters(text: str) -> str:
    """Unicode NFKC (turns ligatures like 'ﬁ' into 'fi') and drop invisible characters."""
    return unicodedata.normalize("NFKC", text).translate(_CHARACTER_FIXES)


def join_hyphenated_words(text: str) -> str:
    """'traf-\\nficking' → 'trafficking' (only when the next line starts in lower case)."""
    return _HYPHEN_BREAK.sub(r"\1\2", text)


def collapse_whitespace(text: str) -> str:
    """All white space, line breaks included, as single spaces."""
    return " ".join(text.split())


def normalise_for_matching(text: str) -> str:
    """The form in which a quote is looked for in a page: characters normalised,
    hyphenation repaired, white space collapsed, case folded."""
    text = join_hyphenated_words(normalise_characters(text).replace("\r", "\n"))
    return collapse_whitespace(text).casefold()


# --- sentences ---------------------------------------------------------------------------
_BULLETS = re.compile(r"\s+(?:[»•▪●◦■□➢➤✓]|(?<=[a-z.;:)])\s*o)\s+")
_END = re.compile(r"(?<=[.!?])[\"'”’)]*\s+(?=[\"'“‘(]?[A-Z0-9])")
_ABBREVIATION_BEFORE = re.compile(
    r"(?:\b(?:e\.g|i\.e|etc|cf|al|approx|art|arts|no|nos|para|paras|p|pp|vol|fig|Mr|Mrs|Ms|Dr|St|Inc|Ltd|Co|vs|U\.S|U\.K|U\.N)\.|\b[A-Z]\.)$"
)


def split_sentences(text: str) -> list[str]:
    """Split a passage into sentences and bullet items, keeping the words as they stand."""
    pieces: list[str] = []
    for block in _BULLETS.split(text):
        start = 0
        for match in _END.finditer(block):
            candidate = block[start : match.start()].rstrip()
            if _ABBREVIATION_BEFORE.search(candidate):
                continue
            if candidate.strip():
                pieces.append(candidate.strip())
            start = match.end()
        rest = block[start:].strip()
        if rest:
            pieces.append(rest)
    return pieces
