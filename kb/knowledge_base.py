"""The knowledge base as one object: the ledger (what is visible), the Chroma collection
(vectors) and the embedder, with the few operations that must keep them consistent.

Consistency rules, in one place:
  * a document's chunks are written while its ledger row says ``pending`` and become
    visible in one ledger transaction that marks it ``ready`` (and points its file at it);
  * every read path (search, stats) trusts only ``ready`` rows, so a half-written
    document is never seen;
  * ``repair()`` removes what an interrupted run left behind: pending documents,
    vectors without a ready ledger row, and documents no file refers to any more;
  * so a collection must have one ledger only: on a Chroma server (where the collection
    lives apart from the data folder) it is bound to the ledger that first opened it, and
    any other ledger is refused (``kb.store.StoreOwnershipError``).
"""

from __future__ import annotations

import functools
import json
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from kb.embed import MAX_WORD_PIECES, count_tokens, count_tokens_many, get_embedder, get_query_embedder, text_key
from kb.ledger import Ledger
from kb.records import Chunk, DocumentMeta, Page
from kb.settings import Settings, get_settings


@dataclass
class EmbeddedDocument:
    """A document between the model and the store: its chunks' vectors and cache keys,
    the text-only half of their tags, and how many texts were newly embedded."""

    meta: DocumentMeta
    chunks: list[Chunk]
    vectors: np.ndarray
    keys: list[str]
    text_tags: tuple  # what kb.themes.tag_text_part gave
    newly_embedded: int


def embedding_text(chunk: Chunk, document: DocumentMeta, text_tokens: int | None = None) -> str:
    """What the model embeds for a chunk: a short context header, then the passage.

    The header (title and section heading) lets a question that names a country or an
    organisation find passages that do not repeat the name themselves.  It is cut, in the
    model's own word pieces, to what the passage leaves of the model's input limit, so the
    passage itself is never truncated.  ``text_tokens`` is ``count_tokens(chunk.text)``
    when known.
    """
    if text_tokens is None:
        text_tokens = count_tokens(chunk.text)
    budget = MAX_WORD_PIECES - 2 - text_tokens - 2  # specials, two line breaks
    parts = []
    for extra, limit in ((document.title, 30), (chunk.heading, 15)):
        piece, used = _header_piece(" ".join(extra.split()), min(limit, budget))
        if piece:
            parts.append(piece)
            budget -= used
    return "\n".join([*parts, chunk.text])


@functools.lru_cache(maxsize=4096)
def _header_piece(text: str, limit: int) -> tuple[str, int]:
    """:func:`_first_word_pieces` and its length in word pieces, remembered: every chunk
    of a document repeats its title, and sections repeat their heading."""
    piece = _first_word_pieces(text, limit)
    return piece, (count_tokens(piece) if piece else 0)


def _first_word_pieces(text: str, limit: int) -> str:
    """The longest start of ``text`` (cut at a word) that is at most ``limit`` word pieces."""
    if limit <= 0 or not text:
        return ""
    if count_tokens(text) <= limit:
        return text
    words = text.split()
    while words and count_tokens(" ".join(words)) > limit:
        words.pop()
    return " ".join(words)


def older_version_note(count: int) -> str:
    """What to tell staff when ``count`` documents were read by an earlier version of the
    PDF reading (their words, paragraphs and chunks may differ from what it reads now)."""
    if not count:
        return ""
    documents = "1 document was" if count == 1 else f"{count} documents were"
    return (
        f"{documents} read by an earlier version of the PDF reader (or before versions were "
        "recorded): `kb rebuild` re-reads every document, embedding again only the passages "
        "whose text changed."
    )


class KnowledgeBase:
    """Ledger + vector store + embedder for one data folder (or one Chroma server)."""

    def __init__(self, settings: Settings | None = None):
        self.settings = settings or get_settings()
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.ledger = Ledger(self.settings.ledger_path)
        self._store = None
        self._store_lock = threading.Lock()

    @property
    def store(self):
        """The Chroma collection, opened on first use."""
        with self._store_lock:
            if self._store is None:
                from kb.store import VectorStore

                store = VectorStore(self.settings)
                if self.settings.chroma_url:  # a shared server: the collection must be this ledger's
                    store.claim(self.ledger_id())
                self._store = store
            return self._store

    def ledger_id(self) -> str:
        """A random identity of this ledger, made once and kept in its ``meta`` table."""
        existing = self.ledger.get_meta("ledger_id")
        if existing:
            return existing
        with self.ledger.transaction() as db:
            db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES('ledger_id', ?)", (uuid.uuid4().hex,))
        return self.ledger.get_meta("ledger_id")

    @property
    def embedder(self):
        """Embeds passages (``embed_backend``)."""
        return get_embedder(self.settings)

    @property
    def query_embedder(self):
        """Embeds questions and answer sentences (``query_backend``)."""
        return get_query_embedder(self.settings)

    def close(self) -> None:
        self.ledger.close()

    # --- embedding with a content-hash cache ------------------------------------------
    def embedding_key(self, text: str) -> str:
        return f"{self.settings.embed_backend}:{text_key(text)}"

    def embed_cached(self, texts: list[str]) -> tuple[np.ndarray, list[str], int]:
        """Vectors for ``texts``; each distinct text is embedded once, ever.

        Returns the vectors, their cache keys and how many texts were newly embedded.
        """
        keys = [self.embedding_key(t) for t in texts]
        cached = self.ledger.cached_vectors(list(dict.fromkeys(keys)))
        missing = {}
        for key, text in zip(keys, texts):
            if key not in cached and key not in missing:
                missing[key] = text
        if missing:
            vectors = self.embedder.embed(list(missing.values()))
            fresh = dict(zip(missing.keys(), vectors))
            self.ledger.cache_vectors(fresh)
            cached.update(fresh)
        dim = self.settings.embed_dim
        matrix = np.vstack([cached[k] for k in keys]) if keys else np.zeros((0, dim), np.float32)
        return matrix.astype(np.float32), keys, len(missing)

    # --- writing documents ----------------------------------------------------------------
    def embed_document(
        self, meta: DocumentMeta, chunks: list[Chunk], token_counts: list[int] | None = None
    ) -> EmbeddedDocument:
        """Adding a document is ``embed_document`` then ``store_document`` (the ingest runs
        the second in a thread while the next document is embedded).  This is the model's
        half: every chunk's vector (and the text-only half of its tags), nothing written
        but the embedding cache.  ``token_counts``: each chunk's ``count_tokens``, when
        the extraction already counted them."""
        from kb.themes import tag_text_part

        lengths = token_counts if token_counts is not None else count_tokens_many([c.text for c in chunks])
        texts = [embedding_text(c, meta, n) for c, n in zip(chunks, lengths)]
        # The text-only half of tagging runs in a thread while the model embeds (the model
        # releases the interpreter, so the two share the cores instead of taking turns).
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tagging") as pool:
            text_part = pool.submit(tag_text_part, self.settings, chunks)
            vectors, keys, newly_embedded = self.embed_cached(texts)
            return EmbeddedDocument(meta, chunks, vectors, keys, text_part.result(), newly_embedded)

    def store_document(
        self,
        embedded: EmbeddedDocument,
        pages: list[Page],
        terms: list[list[str]],
        warnings: list[str],
        file_path: str,
        file_name: str,
        file_size: int,
    ) -> None:
        """The rest of adding a document: tags, ledger rows (pending), vectors, then one
        transaction that makes it visible.  Safe to run in another thread while the next
        document is embedded (the ledger serialises its transactions)."""
        from kb.themes import tag_new_chunks

        meta, chunks = embedded.meta, embedded.chunks
        tag_new_chunks(self, chunks, embedded.vectors, embedded.text_tags)
        self.ledger.write_pending_document(meta, pages, chunks, embedded.keys, terms, warnings)
        self.store.add(chunks, meta, embedded.vectors)
        with self.ledger.transaction() as db:
            db.execute("UPDATE documents SET status='ready' WHERE doc_id=?", (meta.doc_id,))
            self.ledger.put_file(db, file_path, file_name, meta.doc_id, file_size, "ok")
            self.ledger.bump_generation(db)

    def remove_document(self, doc_id: str) -> None:
        """Hide a document at once (ledger), then delete its vectors."""
        ids = self.ledger.chunk_ids(doc_id)
        self.ledger.delete_document(doc_id)
        if ids:
            self.store.delete_ids(ids)

    def update_metadata(self, doc_id: str, **fields) -> DocumentMeta:
        """Edit title, organisation, year, url or language of a document."""
        if self.ledger.document(doc_id) is None:
            raise KeyError(f"no document {doc_id}")
        self.ledger.update_document_meta(doc_id, **fields)
        document = self.ledger.document(doc_id)
        assert document is not None
        chunks = self.chunks_of(doc_id)
        if chunks:
            self.store.update_metadata(chunks, document)
        return document

    def retag(self):
        """Re-tag every stored chunk with the current taxonomy and settings (ledger and
        Chroma metadata); returns a ``kb.themes.RetagReport``."""
        from kb.themes import retag_knowledge_base

        return retag_knowledge_base(self)

    def chunks_of(self, doc_id: str) -> list[Chunk]:
        rows = self.ledger._db.execute(
            "SELECT * FROM chunks WHERE doc_id=? ORDER BY ordinal", (doc_id,)
        ).fetchall()
        return [chunk_from_row(row) for row in rows]

    # --- repair -----------------------------------------------------------------------------
    def repair(self) -> list[str]:
        """Undo what an interrupted ingest left behind.  Returns what was done, for the log."""
        done: list[str] = []
        for doc_id in self.ledger.pending_documents():
            self.remove_document(doc_id)
            done.append(f"removed half-ingested document {doc_id[:12]}")
        referenced = self.ledger.referenced_doc_ids()
        for document in self.ledger.ready_documents():
            if document.doc_id not in referenced:
                self.remove_document(document.doc_id)
                done.append(f"removed {document.file}: no file refers to it any more")
        if self.ledger.get_meta("dirty") == "1":
            visible = {row["chunk_id"] for row in self.ledger.visible_chunk_rows()}
            orphans = [cid for cid in self.store.all_ids() if cid not in visible]
            if orphans:
                self.store.delete_ids(orphans)
                done.append(f"removed {len(orphans)} vectors of interrupted writes")
        return done

    def mark_dirty(self, dirty: bool) -> None:
        self.ledger.set_meta("dirty", "1" if dirty else "0")

    # --- reading --------------------------------------------------------------------------
    def stats(self) -> dict:
        """Documents, pages and chunks, by organisation; failed files with reasons."""
        documents = self.ledger.ready_documents()
        by_organisation: dict[str, dict[str, int]] = {}
        for doc in documents:
            entry = by_organisation.setdefault(doc.organisation or "(unknown)", {"documents": 0, "pages": 0, "chunks": 0})
            entry["documents"] += 1
            entry["pages"] += doc.pages
            entry["chunks"] += doc.chunks
        files = self.ledger.file_rows()
        from ingest.extract import TEXT_VERSION

        older = sorted(doc.file for doc in documents if doc.text_version < TEXT_VERSION)
        return {
            **self.ledger.counts(),
            "read_by_older_version": older,
            "older_version_note": older_version_note(len(older)),
            "by_organisation": dict(sorted(by_organisation.items())),
            "failed": [{"file": f["name"], "path": f["path"], "reason": f["reason"]} for f in files if f["status"] == "failed"],
            "duplicates": [{"file": f["name"], "reason": f["reason"]} for f in files if f["status"] == "duplicate"],
            "data_dir": str(self.settings.data_dir),
            "chroma": self.settings.chroma_url or str(self.settings.chroma_dir),
            "embed_backend": self.settings.embed_backend,
            "query_backend": self.settings.query_backend,
        }

    def library(self) -> list[dict]:
        """One row per known file, with its document's metadata and status (for staff)."""
        documents = {row["doc_id"]: row for row in self.ledger.document_rows()}
        rows = []
        for file in self.ledger.file_rows():
            doc = documents.get(file["doc_id"] or "", {})
            rows.append(
                {
                    "file": file["name"],
                    "path": file["path"],
                    "doc_id": file["doc_id"] or "",
                    "title": doc.get("title", ""),
                    "organisation": doc.get("organisation", ""),
                    "year": doc.get("year"),
                    "url": doc.get("url", ""),
                    "pages": doc.get("pages", 0),
                    "chunks": doc.get("chunks", 0),
                    "status": file["status"] if file["status"] != "ok" else doc.get("status", "missing"),
                    "reason": file["reason"],
                    "warnings": json.loads(doc.get("warnings", "[]") or "[]"),
                }
            )
        return rows


def chunk_from_row(row) -> Chunk:
    return Chunk(
        chunk_id=row["chunk_id"],
        doc_id=row["doc_id"],
        ordinal=row["ordinal"],
        text=row["text"],
        page_start=row["page_start"],
        page_end=row["page_end"],
        label_start=row["label_start"],
        label_end=row["label_end"],
        heading=row["heading"],
        themes=json.loads(row["themes"] or "[]"),
        passage_type=row["passage_type"] or "",
    )
