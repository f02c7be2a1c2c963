"""One PDF's bytes → cleaned pages, chunks and keyword terms: the CPU-bound half of
ingestion, a pure function so that it can run in a separate, bounded worker process."""

from __future__ import annotations

from dataclasses import dataclass, field

from ingest.chunk import chunk_pages
from ingest.clean import clean_pages
from ingest.reader import read_pdf
from kb.embed import count_tokens_many
from kb.keyword import tokenize
from kb.records import Chunk, Page

# Which reading of PDFs made a document's text and chunks.  Raise it whenever reading,
# cleaning or chunking changes what an unchanged PDF yields, so that libraries read before
# can be told to re-read (``kb rebuild``; texts that come out the same are not embedded again).
#   1: pypdf's text extraction
#   2: PDFium's text, with paragraph gaps from line positions
#   3: words broken by a hyphen at a line end joined again ("organiza-tion")
TEXT_VERSION = 3


@dataclass
class ExtractOptions:
    """The settings extraction needs (plain values, so they cross process boundaries)."""

    chunk_tokens: int = 200
    overlap_tokens: int = 40
    header_footer_lines: int = 3
    header_footer_min_share: float = 0.5
    max_pages: int = 5000
    min_text_chars_per_page: int = 25

    @classmethod
    def from_settings(cls, settings) -> "ExtractOptions":
        return cls(
            chunk_tokens=settings.chunk_tokens,
            overlap_tokens=settings.chunk_overlap_tokens,
            header_footer_lines=settings.header_footer_lines,
            header_footer_min_share=settings.header_footer_min_share,
            max_pages=settings.max_pages,
            min_text_chars_per_page=settings.min_text_chars_per_page,
        )


@dataclass
class Extracted:
    pages: list[Page]
    chunks: list[Chunk]
    terms: list[list[str]]
    info: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    # Each chunk's length in the model's word pieces (what the embedder's context header
    # must leave room for), counted here, on the extraction worker's core, not the model's.
    token_counts: list[int] | None = None


def extract_document(data: bytes, doc_id: str, options: ExtractOptions) -> Extracted:
    """Read, clean and chunk one PDF.  Raises ``ingest.reader.ReadError`` with a reason."""
    content = read_pdf(data, max_pages=options.max_pages, min_chars_per_page=options.min_text_chars_per_page)
    pages = clean_pages(
        content.pages, depth=options.header_footer_lines, min_share=options.header_footer_min_share
    )
    chunks = chunk_pages(
        doc_id, pages, chunk_tokens=options.chunk_tokens, overlap_tokens=options.overlap_tokens
    )
    terms = [tokenize(f"{chunk.heading} {chunk.text}") for chunk in chunks]
    return Extracted(
        pages=pages, chunks=chunks, terms=terms, info=content.info, warnings=content.warnings,
        token_counts=count_tokens_many([chunk.text for chunk in chunks]),
    )
