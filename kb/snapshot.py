"""An in-memory view of the visible chunks, rebuilt only when the ledger's generation
changes: chunk records, their documents, filter columns, the BM25 index and the chunk
vectors (for exact search inside a filter and for scoring answer sentences)."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass

import numpy as np

from kb.keyword import KeywordIndex
from kb.knowledge_base import KnowledgeBase, chunk_from_row
from kb.mentions import OrganisationNames
from kb.records import Chunk, DocumentMeta


@dataclass
class Filters:
    """Restrict retrieval; every field is optional and they combine with AND."""

    organisations: list[str] | None = None
    year_from: int | None = None
    year_to: int | None = None
    documents: list[str] | None = None  # doc ids (or unique prefixes) or file names
    themes: list[str] | None = None  # any of these themes
    passage_types: list[str] | None = None  # any of these passage types

    def is_empty(self) -> bool:
        return not any(
            [self.organisations, self.year_from, self.year_to, self.documents, self.themes, self.passage_types]
        )


_URL = re.compile(r"https?://|www\.")
_YEAR = re.compile(r"\b(?:19|20)\d{2}\b")
_CITATION_CUE = re.compile(
    r"\b(?:Retrieved|Reporting|Accessed|et al\.|Source:|E-mail communication|Interview with|Report #?\d)"
)


def reference_density(text: str) -> float:
    """How much a passage reads like a list of references or footnotes (0 = not at all):
    URLs, years and citation phrases per word.  Such passages rarely answer anything."""
    words = len(text.split()) or 1
    return (3 * len(_URL.findall(text)) + len(_YEAR.findall(text)) + 2 * len(_CITATION_CUE.findall(text))) / words


class Snapshot:
    """Everything retrieval reads, for one generation of the ledger."""

    def __init__(self, kb: KnowledgeBase):
        ledger = kb.ledger
        self.generation = ledger.generation()
        rows = ledger.visible_chunk_rows()
        self.documents: dict[str, DocumentMeta] = {d.doc_id: d for d in ledger.ready_documents()}
        self.chunks: list[Chunk] = [chunk_from_row(r) for r in rows]
        self.row_of: dict[str, int] = {c.chunk_id: i for i, c in enumerate(self.chunks)}
        self.keyword = KeywordIndex(
            [r["terms"].split() for r in rows], k1=kb.settings.bm25_k1, b=kb.settings.bm25_b
        )
        doc_ids = sorted(self.documents)
        self.doc_ids = doc_ids
        position = {d: i for i, d in enumerate(doc_ids)}
        self.doc_of_row = np.array([position[c.doc_id] for c in self.chunks], dtype=np.int32)
        penalty = kb.settings.reference_penalty
        self.prior = np.array(
            [max(0.5, 1.0 - penalty * reference_density(c.text)) for c in self.chunks], dtype=np.float32
        )
        self.organisation_names = OrganisationNames(d.organisation for d in self.documents.values())
        self.year_of_row = np.array([self.documents[c.doc_id].year or 0 for c in self.chunks], dtype=np.int32)
        cached = ledger.cached_vectors([r["embedding_key"] for r in rows])
        dim = kb.settings.embed_dim
        self.vectors = (
            np.vstack([cached[r["embedding_key"]] for r in rows]).astype(np.float32)
            if rows
            else np.zeros((0, dim), np.float32)
        )

    def __len__(self) -> int:
        return len(self.chunks)

    def resolve_documents(self, targets: list[str]) -> set[str]:
        found = set()
        for target in targets:
            for doc in self.documents.values():
                if doc.doc_id.startswith(target) or doc.file == target:
                    found.add(doc.doc_id)
        return found

    def rows_of_organisations(self, organisations) -> np.ndarray:
        """Boolean row mask: the chunks of documents whose organisation is one of
        ``organisations`` (in any case)."""
        wanted = {o.casefold() for o in organisations}
        allowed = np.array([self.documents[d].organisation.casefold() in wanted for d in self.doc_ids], dtype=bool)
        return allowed[self.doc_of_row] if len(allowed) else np.zeros(len(self.chunks), dtype=bool)

    def mask(self, filters: Filters | None) -> np.ndarray | None:
        """Boolean row mask for ``filters`` (None when nothing is filtered)."""
        if filters is None or filters.is_empty():
            return None
        keep = np.ones(len(self.chunks), dtype=bool)
        if filters.organisations:
            keep &= self.rows_of_organisations(filters.organisations)
        if filters.year_from:
            keep &= self.year_of_row >= filters.year_from
        if filters.year_to:
            keep &= self.year_of_row <= filters.year_to
        if filters.documents:
            wanted_docs = self.resolve_documents(filters.documents)
            allowed = np.array([d in wanted_docs for d in self.doc_ids], dtype=bool)
            keep &= allowed[self.doc_of_row] if len(allowed) else keep
        if filters.themes:
            wanted_themes = set(filters.themes)
            keep &= np.array([bool(wanted_themes & set(c.themes)) for c in self.chunks], dtype=bool)
        if filters.passage_types:
            wanted_types = set(filters.passage_types)
            keep &= np.array([c.passage_type in wanted_types for c in self.chunks], dtype=bool)
        return keep

    def dense_top(self, vector: np.ndarray, n: int, mask: np.ndarray | None) -> list[tuple[int, float]]:
        """Exact cosine search over the (masked) chunk vectors: rows and similarities."""
        if not len(self.chunks):
            return []
        vector = np.asarray(vector, dtype=np.float32)
        if mask is None:
            rows, similarities = None, self.vectors @ vector
        else:
            rows = np.flatnonzero(mask)
            if not rows.size:
                return []
            similarities = self.vectors[rows] @ vector
        n = min(n, similarities.size)
        best = np.argpartition(-similarities, n - 1)[:n]
        best = best[np.argsort(-similarities[best], kind="stable")]
        return [(int(i if rows is None else rows[i]), float(similarities[i])) for i in best]


class SnapshotCache:
    """Hands out the current snapshot, rebuilding it when the ledger has changed."""

    def __init__(self, kb: KnowledgeBase):
        self.kb = kb
        self._snapshot: Snapshot | None = None
        self._lock = threading.Lock()

    def get(self) -> Snapshot:
        generation = self.kb.ledger.generation()
        with self._lock:
            if self._snapshot is None or self._snapshot.generation != generation:
                self._snapshot = Snapshot(self.kb)
            return self._snapshot
