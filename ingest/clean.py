"""Clean extracted page text: ligatures, line-break hyphens, white space, and running
headers and footers that repeat on most pages of a document."""

from __future__ import annotations

import re
from collections import Counter

from kb.records import Page
from kb.text import collapse_whitespace, join_hyphenated_words, normalise_characters

_SPACES = re.compile(r"[ \t\f\v\u00a0\u2000-\u200b\u202f\u205f\u3000]+")
_MANY_BLANK_LINES = re.compile(r"\n{3,}")
_DIGITS = re.compile(r"\d+")
_ROMAN = r"(?=[ivxlc]+$)c{0,3}(xc|xl|l?x{0,3})(ix|iv|v?i{0,3})"
_PAGE_NUMBER_LINE = re.compile(
    rf"^(page\s*)?(\d{{1,4}}|{_ROMAN})(\s*(of|/)\s*\d+)?$|^[-–—|\s]*\d{{1,4}}[-–—|\s]*$",
    re.IGNORECASE,
)


def normalise_whitespace(text: str) -> str:
    """Collapse runs of spaces, trim every line, keep at most one blank line."""
    lines = [_SPACES.sub(" ", line).strip() for line in text.replace("\r", "\n").split("\n")]
    return _MANY_BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def _line_key(line: str) -> str:
    """A line with digits masked, so 'Page 3' and 'Page 4' count as the same line."""
    return _DIGITS.sub("#", collapse_whitespace(line).lower())


def _edge_lines(lines: list[str], depth: int) -> list[int]:
    """Indices of the first and last ``depth`` non-empty lines."""
    filled = [i for i, line in enumerate(lines) if line.strip()]
    return sorted(set(filled[:depth] + filled[-depth:]))


def find_running_lines(pages: list[list[str]], depth: int, min_share: float) -> set[str]:
    """Keys of lines that repeat at the top or bottom of at least ``min_share`` of pages."""
    if len(pages) < 3:
        return set()
    counts: Counter[str] = Counter()
    for lines in pages:
        keys = {_line_key(lines[i]) for i in _edge_lines(lines, depth)}
        counts.update(key for key in keys if key)
    needed = max(3, min_share * len(pages))
    return {key for key, count in counts.items() if count >= needed}


def clean_pages(pages: list[Page], *, depth: int = 3, min_share: float = 0.5) -> list[Page]:
    """Return cleaned copies of a document's pages (same index and label)."""
    split_pages = [
        normalise_whitespace(join_hyphenated_words(normalise_characters(page.text))).split("\n")
        for page in pages
    ]
    running = find_running_lines(split_pages, depth, min_share)
    cleaned: list[Page] = []
    for page, lines in zip(pages, split_pages):
        edges = set(_edge_lines(lines, depth))
        kept = [
            line
            for i, line in enumerate(lines)
            if not (
                i in edges
                and (_line_key(line) in running or _PAGE_NUMBER_LINE.match(line.strip()))
            )
        ]
        cleaned.append(Page(index=page.index, label=page.label, text="\n".join(kept).strip()))
    return cleaned
