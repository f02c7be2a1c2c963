"""Citation checks shared by the answerers and by ``kb eval``: a quoted sentence must be
found in the text of the cited page.

Matching repairs only what PDF extraction breaks (ligatures, line-break hyphens, white
space, case); the words themselves must be there as quoted.
"""

from __future__ import annotations

import functools
from pathlib import Path

from kb.text import normalise_for_matching
from kb.ledger import Ledger

QUOTE_JOINER = " … "  # between several sentences quoted from one passage


def quote_parts(quote: str) -> list[str]:
    return [part for part in quote.split(QUOTE_JOINER) if part.strip()]


def found_in(quote: str, page_text: str) -> bool:
    """Every sentence of ``quote`` occurs in ``page_text`` (after normalisation)."""
    page = normalise_for_matching(page_text)
    parts = quote_parts(quote)
    return bool(parts) and all(normalise_for_matching(part) in page for part in parts)


def page_of_quote(ledger: Ledger, doc_id: str, first: int, last: int, sentence: str) -> int | None:
    """The page (within ``first..last``) of the stored text that holds ``sentence``."""
    wanted = normalise_for_matching(sentence)
    for index in range(first, last + 1):
        text = ledger.page_text(doc_id, index)
        if text is not None and wanted in normalise_for_matching(text):
            return index
    return None


def verify_against_ledger(ledger: Ledger, doc_id: str, page: int, quote: str) -> bool:
    text = ledger.page_text(doc_id, page)
    return text is not None and found_in(quote, text)


@functools.lru_cache(maxsize=64)
def _pdf_pages(path: str, modified: float) -> tuple[str, ...]:
    from ingest.reader import ReadError, page_texts

    try:
        return tuple(page_texts(Path(path).read_bytes()))
    except (ReadError, OSError):
        return ()


def verify_against_pdf(pdf_path: Path, page: int, quote: str) -> bool:
    """Re-read the PDF itself and look for the quote on that page (1-based)."""
    pdf_path = Path(pdf_path)
    if not pdf_path.is_file():
        return False
    pages = _pdf_pages(str(pdf_path), pdf_path.stat().st_mtime)
    return 1 <= page <= len(pages) and found_in(quote, pages[page - 1])
