"""Small text helpers shared by ingestion, answers and checks: character normalisation,
line-break hyphen repair, white space, and splitting passages into sentences."""

from __future__ import annotations

import re
import unicodedata

_HYPHEN_BREAK = re.compile(r"(\w)[-\u00ad]\n[ \t]*([a-z])")
# Characters that NFKC leaves alone but that we still want as plain text.
_CHARACTER_FIXES = str.maketrans({"\u00ad": "", "\ufffe": "", "\u200e": "", "\u200f": ""})


_SOFT_BREAK = re.compile(r"(\w)\u00ad[ \t]*\n[ \t]*")


def normalise_characters(text: str) -> str:
    """Unicode NFKC (turns ligatures like 'ﬁ' into 'fi') and drop invisible characters;
    a soft hyphen at a line break joins the two halves of the word."""
    text = _SOFT_BREAK.sub(r"\1", unicodedata.normalize("NFKC", text))
    return text.translate(_CHARACTER_FIXES)


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
# A numeric reference marker such as "(1,3,12)" followed by a capitalised word ends a
# table cell or sentence in many reports even without a full stop.
_MARKER_BREAK = re.compile(r"(\(\d+(?:[,–-]\s?\d+)*\))\s+(?=[A-Z][a-z])")
_ABBREVIATION_BEFORE = re.compile(
    r"(?:\b(?:e\.g|i\.e|etc|cf|al|approx|[Aa]rts?|[Nn]os?|[Pp]aras?|p|pp|[Vv]ol|[Ff]igs?|Mr|Mrs|Ms|Dr|St|Inc|Ltd|Co|vs|U\.S|U\.K|U\.N)\.|\b[A-Z]\.)$"
)


def split_sentences(text: str) -> list[str]:
    """Split a passage into sentences and bullet items, keeping the words as they stand."""
    pieces: list[str] = []
    text = _MARKER_BREAK.sub("\\1\n", text)
    for block in re.split(r"\n|" + _BULLETS.pattern, text):
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


# Bullets: the usual marks, a lone "o" (a Wingdings or Courier bullet, as PDFs extract
# it), a private-use symbol-font bullet, or an item number or letter ("a)", "(2)", "3.").
_BULLET_START = re.compile(r"^\s*(?:[»•▪●◦■□➢➤✓\-–\uf0a7\uf0b7\uf0d8\uf0fc]|o(?=\s)|\(?[a-z0-9]{1,2}[.)])\s+")
_CONTINUES = (",", "(", "-", "–", "—", "/", "&", " and", " or", " of", " the", " to", " in", " for")


# A numbered paragraph ("43. On 18 December 2024 ...", as UN reports number every
# paragraph) is prose, not a list item: it runs longer than this many words.
_PARAGRAPH_NUMBER = re.compile(r"^\s*\d{1,3}\.\s+")
NUMBERED_PARAGRAPH_WORDS = 45


def _numbered_paragraph(first_line: str, text: str) -> bool:
    return bool(_PARAGRAPH_NUMBER.match(first_line)) and len(text.split()) > NUMBERED_PARAGRAPH_WORDS


def page_blocks(page_text: str) -> list[tuple[str, bool]]:
    """Join a page's lines into blocks (paragraphs, headings, list items, captions), each
    with whether it is a list item.

    Wrapped prose lines run close to full width; a line much shorter than the page's
    usual line ends its block (a heading, a caption, the last line of a paragraph or of a
    list item), unless it visibly continues (a comma, a hyphen, 'and').  A bullet or an
    item marker always starts a new block.
    """
    lines = [line.strip() for line in page_text.split("\n")]
    lengths = sorted(len(line) for line in lines if line)
    if not lengths:
        return []
    usual = lengths[int(len(lengths) * 0.75)]
    blocks: list[tuple[str, bool]] = []
    current: list[str] = []

    def close() -> None:
        if current:
            text = collapse_whitespace(" ".join(current))
            marked = bool(_BULLET_START.match(current[0]))
            is_item = marked and not _numbered_paragraph(current[0], text)
            blocks.append((_BULLET_START.sub("", text, count=1) if marked else text, is_item))
            current.clear()

    for line in lines:
        if not line:
            close()
            continue
        if current and _BULLET_START.match(line):
            close()
        current.append(line)
        if len(line) < 0.6 * usual and not line.lower().endswith(_CONTINUES):
            close()
    close()
    return [(text, is_item) for text, is_item in blocks if text.strip()]


def page_sentences(page_text: str) -> list[tuple[str, bool, int]]:
    """The sentences of a page in reading order, words as they stand, each with whether
    it belongs to a list item and the number of its block (paragraph, item, heading)."""
    return [
        (sentence, is_item, number)
        for number, (block, is_item) in enumerate(page_blocks(page_text))
        for sentence in split_sentences(block)
    ]
