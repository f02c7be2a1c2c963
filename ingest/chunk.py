"""Pages → chunks sized in the embedding model's own word pieces, each with its page range
(index and printed label) and, where one can be found, its section heading.

A document's cleaned pages are joined into one text with known page offsets and split with
LangChain's recursive splitter (paragraphs, then lines, then sentences, then words), so a
passage may run across a page break but never across documents.
"""

from __future__ import annotations

import bisect
import functools
import re
from dataclasses import dataclass

from langchain_text_splitters import RecursiveCharacterTextSplitter

from kb.text import collapse_whitespace
from kb.embed import count_tokens
from kb.records import Chunk, Page

PAGE_SEPARATOR = "\n\n"
_NUMBERED_HEADING = re.compile(r"^(\d+(\.\d+){0,3}\.?|[A-Z]\.|[IVX]+\.)\s+[A-Z]")
_SENTENCE_END = re.compile(r"[.;,:!?]$")


@dataclass
class _Heading:
    offset: int
    text: str


def looks_like_heading(line: str, previous: str) -> bool:
    """A short line without closing punctuation, in capitals, title case or numbered,
    standing after a blank line or a finished sentence."""
    line = line.strip()
    words = line.split()
    if not (3 <= len(line) <= 90 and 1 <= len(words) <= 12) or _SENTENCE_END.search(line):
        return False
    if previous.strip() and not previous.strip().endswith((".", ":", "?", "!")):
        return False
    letters = [w for w in words if w[0].isalpha()]
    if not letters:
        return False
    if _NUMBERED_HEADING.match(line):
        return True
    if line.isupper() and len(line) > 4:
        return True
    small = {"and", "of", "the", "in", "for", "to", "on", "a", "an", "with", "by", "at", "or"}
    capitalised = sum(1 for w in letters if w[0].isupper() or w.lower() in small)
    return letters[0][0].isupper() and capitalised == len(letters) and len(letters) >= 2


def _find_headings(text: str) -> list[_Heading]:
    headings: list[_Heading] = []
    offset = 0
    previous = ""
    for line in text.split("\n"):
        if looks_like_heading(line, previous):
            headings.append(_Heading(offset, collapse_whitespace(line)))
        previous = line
        offset += len(line) + 1
    return headings


_BLANK_LINES = re.compile(r"\n[ \t]*\n\s*")


def make_splitter(chunk_tokens: int, overlap_tokens: int) -> RecursiveCharacterTextSplitter:
    """The recursive splitter, measuring length in model word pieces.

    The splitter measures most pieces more than once (when splitting, then when merging);
    each distinct piece is tokenised once (half the tokeniser calls of a corpus ingest).
    """
    return RecursiveCharacterTextSplitter(
        chunk_size=chunk_tokens,
        chunk_overlap=overlap_tokens,
        length_function=functools.lru_cache(maxsize=65536)(count_tokens),
        separators=["\n\n", "\n", ". ", "; ", ", ", " ", ""],
        keep_separator="end",
        strip_whitespace=True,
    )


def chunk_id(doc_id: str, page_start: int, page_end: int, ordinal: int) -> str:
    """Chunk names carry their document and page range: ``<doc>-p3-4-c0012``."""
    return f"{doc_id[:16]}-p{page_start}-{page_end}-c{ordinal:04d}"


def chunk_pages(
    doc_id: str, pages: list[Page], *, chunk_tokens: int = 200, overlap_tokens: int = 40
) -> list[Chunk]:
    """Split one document's cleaned pages into chunks."""
    starts: list[int] = []
    parts: list[str] = []
    offset = 0
    for page in pages:
        # Blank lines (paragraph gaps) are not split points: chunks filled to their size
        # retrieve better than paragraph-aligned ones, which are often half empty.
        page_text = _BLANK_LINES.sub("\n", page.text)
        starts.append(offset)
        parts.append(page_text)
        offset += len(page_text) + len(PAGE_SEPARATOR)
    text = PAGE_SEPARATOR.join(parts)
    headings = _find_headings(text)
    heading_offsets = [h.offset for h in headings]

    def page_at(position: int) -> Page:
        return pages[max(0, bisect.bisect_right(starts, position) - 1)]

    splitter = make_splitter(chunk_tokens, overlap_tokens)
    chunks: list[Chunk] = []
    cursor = 0
    for piece in splitter.split_text(text):
        # Pieces come in order, so each is found at or after the previous start.  (The
        # splitter's own start_index assumes the overlap is in characters; ours is in
        # word pieces, so it is located here instead.)
        start = text.find(piece, cursor)
        if start < 0:
            start = max(0, text.find(piece))
        cursor = start + 1
        body = collapse_whitespace(piece)
        if len(body) < 20:  # stray page furniture, not a passage
            continue
        first = page_at(start)
        last = page_at(start + len(piece) - 1)
        at = bisect.bisect_right(heading_offsets, start) - 1
        heading = headings[at].text if at >= 0 and first.index - page_at(headings[at].offset).index <= 5 else ""
        ordinal = len(chunks)
        chunks.append(
            Chunk(
                chunk_id=chunk_id(doc_id, first.index, last.index, ordinal),
                doc_id=doc_id,
                ordinal=ordinal,
                text=body,
                page_start=first.index,
                page_end=last.index,
                label_start=first.label,
                label_end=last.label,
                heading=heading,
            )
        )
    return chunks
