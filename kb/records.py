"""Typed records that flow through the project: documents, pages, chunks, passages,
citations and answers.  Plain dataclasses, so they are cheap and easy to serialise."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class DocumentMeta:
    """What we know about one source document (keyed by the SHA-256 of its bytes)."""

    doc_id: str
    file: str
    title: str
    organisation: str = ""
    year: int | None = None
    url: str = ""
    language: str = "en"
    pages: int = 0
    chunks: int = 0
    # which reading of PDFs made its text (ingest.extract.TEXT_VERSION); 0: not recorded
    text_version: int = 0


@dataclass
class Page:
    """One page of a PDF: 1-based index, printed label and cleaned text."""

    index: int
    label: str
    text: str


@dataclass
class Chunk:
    """A passage of one document, small enough for the embedding model."""

    chunk_id: str
    doc_id: str
    ordinal: int
    text: str
    page_start: int
    page_end: int
    label_start: str
    label_end: str
    heading: str = ""
    themes: list[str] = field(default_factory=list)
    passage_type: str = ""


@dataclass
class Passage:
    """A retrieved chunk with the document it belongs to and its retrieval scores."""

    chunk: Chunk
    document: DocumentMeta
    score: float = 0.0  # fused score
    dense_score: float | None = None  # cosine similarity, if the dense retriever found it
    keyword_score: float | None = None  # BM25 score, if the keyword retriever found it
    dense_rank: int | None = None
    keyword_rank: int | None = None

    @property
    def chunk_id(self) -> str:
        return self.chunk.chunk_id

    @property
    def text(self) -> str:
        return self.chunk.text


@dataclass
class Citation:
    """``[n]`` in an answer: where a statement comes from, down to the printed page."""

    n: int
    doc_id: str
    file: str
    title: str
    organisation: str
    year: int | None
    page: int  # 1-based page index (of the quote, or of the passage start)
    page_label: str  # the printed page label
    text: str  # the passage
    score: float = 0.0
    quote: str = ""  # the exact sentence(s) quoted from the passage
    url: str = ""
    chunk_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cite(
    n: int, chunk: Chunk, document: DocumentMeta, *, page: int | None = None, score: float = 0.0, quote: str = ""
) -> Citation:
    """Citation ``[n]`` of ``chunk`` (a passage of ``document``) at ``page`` (default: the
    page the chunk starts on), labelled with that page's printed label where the chunk
    knows it (its first and last page; the page index otherwise)."""
    page = chunk.page_start if page is None else page
    labels = {chunk.page_start: chunk.label_start, chunk.page_end: chunk.label_end}
    return Citation(
        n=n,
        doc_id=document.doc_id,
        file=document.file,
        title=document.title,
        organisation=document.organisation,
        year=document.year,
        page=page,
        page_label=labels.get(page) or str(page),
        text=chunk.text,
        score=score,
        quote=quote,
        url=document.url,
        chunk_id=chunk.chunk_id,
    )


@dataclass
class Answer:
    """What ``kb ask`` returns: the answer text with ``[n]`` markers and its citations."""

    question: str
    answer: str
    citations: list[Citation] = field(default_factory=list)
    abstained: bool = False
    related: list[Citation] = field(default_factory=list)  # related reading when abstaining
    resolved_question: str = ""  # the question after follow-up resolution
    notes: list[str] = field(default_factory=list)  # e.g. sentences removed as unsupported
    backend: str = "extractive"

    def to_dict(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "answer": self.answer,
            "abstained": self.abstained,
            "citations": [c.to_dict() for c in self.citations],
            "related": [c.to_dict() for c in self.related],
            "resolved_question": self.resolved_question or self.question,
            "notes": list(self.notes),
            "backend": self.backend,
        }


@dataclass
class FileResult:
    """The outcome of syncing one file during ingestion."""

    file: str
    status: str  # added | updated | unchanged | removed | failed | duplicate
    doc_id: str = ""
    pages: int = 0
    chunks: int = 0
    reason: str = ""
    warnings: list[str] = field(default_factory=list)
