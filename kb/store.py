"""The Chroma side of the knowledge base: one collection of chunk vectors, embedded
(``PersistentClient`` in the data folder) or on a server (``HttpClient`` when
``KB_CHROMA_URL`` is set).  Telemetry is off and the embedding function is always ours, so
Chroma never downloads its default model."""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import urlparse

import numpy as np

from kb.embed import MODEL_NAME, get_embedder
from kb.records import Chunk, DocumentMeta
from kb.settings import Settings

ADD_BATCH = 512
#: Collection metadata key naming the ledger a (server-side) collection belongs to.
OWNER_KEY = "kb_ledger_id"


class StoreOwnershipError(RuntimeError):
    """The Chroma collection belongs to another ledger (server mode): using it from this
    data folder would let ingest's clean-up delete the other ledger's vectors."""


def _chroma():
    import chromadb
    from chromadb.api.types import EmbeddingFunction
    from chromadb.utils.embedding_functions import register_embedding_function

    return chromadb, EmbeddingFunction, register_embedding_function


def _make_embedding_function_class():
    _, EmbeddingFunction, register = _chroma()

    class PackagedMiniLM(EmbeddingFunction):
        """Chroma embedding function backed by the packaged model (never downloads)."""

        def __init__(self, backend: str = "torch", data_dir: str = ".kb"):
            self.backend = backend
            self.data_dir = data_dir

        def __call__(self, input):  # noqa: A002 - Chroma's protocol names it so
            from kb.settings import get_settings

            settings = get_settings(embed_backend=self.backend)
            return [v for v in get_embedder(settings).embed(list(input))]

        @staticmethod
        def name() -> str:
            return "kb-packaged-minilm"

        def get_config(self) -> dict[str, Any]:
            return {"backend": self.backend, "model": MODEL_NAME}

        @staticmethod
        def build_from_config(config: dict[str, Any]) -> "PackagedMiniLM":
            return PackagedMiniLM(backend=config.get("backend", "torch"))

        def default_space(self) -> str:
            return "cosine"

    try:
        register(PackagedMiniLM)
    except ValueError:  # already registered in this process
        pass
    return PackagedMiniLM


_EF_CLASS = None
_EF_LOCK = threading.Lock()


def embedding_function(settings: Settings):
    global _EF_CLASS
    with _EF_LOCK:
        if _EF_CLASS is None:
            _EF_CLASS = _make_embedding_function_class()
    return _EF_CLASS(backend=settings.embed_backend)


def make_client(settings: Settings):
    """An embedded or server Chroma client, telemetry off."""
    chromadb, _, _ = _chroma()
    from chromadb.config import Settings as ChromaSettings

    chroma_settings = ChromaSettings(anonymized_telemetry=False, allow_reset=False)
    if settings.chroma_url:
        url = urlparse(settings.chroma_url)
        if url.scheme not in {"http", "https"} or not url.hostname:
            raise ValueError(f"KB_CHROMA_URL must look like http://host:port, not {settings.chroma_url!r}")
        return chromadb.HttpClient(
            host=url.hostname,
            port=url.port or (443 if url.scheme == "https" else 8000),
            ssl=url.scheme == "https",
            settings=chroma_settings,
        )
    settings.chroma_dir.mkdir(parents=True, exist_ok=True)
    return chromadb.PersistentClient(path=str(settings.chroma_dir), settings=chroma_settings)


def chunk_metadata(chunk: Chunk, document: DocumentMeta) -> dict[str, Any]:
    """What Chroma stores beside each vector: enough to filter on."""
    meta: dict[str, Any] = {
        "doc_id": chunk.doc_id,
        "organisation": document.organisation or "",
        "year": int(document.year or 0),
        "page_start": chunk.page_start,
        "page_end": chunk.page_end,
        "passage_type": chunk.passage_type or "",
    }
    for theme in chunk.themes:
        meta[f"theme_{theme}"] = True
    return meta


class VectorStore:
    """The chunk vectors in one Chroma collection (cosine space)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.client = make_client(settings)
        self.collection = self.client.get_or_create_collection(
            name=settings.collection,
            embedding_function=embedding_function(settings),
            configuration={"hnsw": {"space": "cosine"}},
        )

    def claim(self, ledger_id: str) -> None:
        """Bind the collection to the ledger ``ledger_id``; refuse one bound to another.

        Used in server mode, where the collection lives apart from the data folder: the
        ledger decides what is visible and ingest deletes vectors the ledger does not
        know, so two ledgers writing one collection would erase each other's documents.
        A collection with no owner yet (new, or made before this check) is adopted.
        """
        owner = (self.collection.metadata or {}).get(OWNER_KEY)
        if owner == ledger_id:
            return
        if not owner:
            metadata = dict(self.collection.metadata or {})
            metadata[OWNER_KEY] = ledger_id
            self.collection.modify(metadata=metadata)
            fresh = self.client.get_collection(self.settings.collection, embedding_function=embedding_function(self.settings))
            owner = (fresh.metadata or {}).get(OWNER_KEY)  # another ledger may have won a race
            if owner == ledger_id:
                self.collection = fresh
                return
        where = self.settings.chroma_url or str(self.settings.chroma_dir)
        raise StoreOwnershipError(
            f"the Chroma collection {self.settings.collection!r} at {where} belongs to another ledger "
            f"({owner}), not to the one in {self.settings.data_dir} ({ledger_id}). Every instance that "
            "shares a Chroma server must share one data folder (KB_DATA_DIR); use another KB_COLLECTION "
            "for a separate knowledge base."
        )

    def add(self, chunks: list[Chunk], document: DocumentMeta, vectors: np.ndarray) -> None:
        """Vectors and filter metadata only.  The chunk texts live in the ledger, which is
        where everything reads them from.  Stored here as well, Chroma indexes them for
        full-text search on every add: adding the corpus's 2,571 chunks took 2.3 s of CPU
        instead of 0.8 s (on the cores the model embeds on) and 24 MB of disk instead of
        6.7 MB."""
        for start in range(0, len(chunks), ADD_BATCH):
            batch = chunks[start : start + ADD_BATCH]
            self.collection.upsert(
                ids=[c.chunk_id for c in batch],
                embeddings=np.asarray(vectors[start : start + len(batch)], dtype=np.float32),
                metadatas=[chunk_metadata(c, document) for c in batch],
            )

    def update_metadata(self, chunks: list[Chunk], document: DocumentMeta) -> None:
        for start in range(0, len(chunks), ADD_BATCH):
            batch = chunks[start : start + ADD_BATCH]
            self.collection.update(
                ids=[c.chunk_id for c in batch], metadatas=[chunk_metadata(c, document) for c in batch]
            )

    def delete_ids(self, ids: list[str]) -> None:
        for start in range(0, len(ids), ADD_BATCH):
            self.collection.delete(ids=ids[start : start + ADD_BATCH])

    def delete_document(self, doc_id: str) -> None:
        self.collection.delete(where={"doc_id": doc_id})

    def all_ids(self) -> list[str]:
        ids: list[str] = []
        offset = 0
        while True:
            page = self.collection.get(include=[], limit=5000, offset=offset)
            ids.extend(page["ids"])
            if len(page["ids"]) < 5000:
                return ids
            offset += 5000

    def count(self) -> int:
        return self.collection.count()

    def query(self, vector: np.ndarray, n: int, where: dict | None = None) -> list[tuple[str, float]]:
        """Nearest chunk ids with cosine similarity, best first.

        Chroma returns fewer than ``n`` (none for an empty collection) by itself, so there
        is no ``count()`` first: on a server that would be a second round trip per query."""
        result = self.collection.query(
            query_embeddings=[np.asarray(vector, dtype=np.float32)],
            n_results=max(1, n),
            where=where or None,
            include=["distances"],
        )
        ids = result["ids"][0]
        distances = result["distances"][0]
        return [(cid, 1.0 - float(d)) for cid, d in zip(ids, distances)]
