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

    def add(self, chunks: list[Chunk], document: DocumentMeta, vectors: np.ndarray) -> None:
        for start in range(0, len(chunks), ADD_BATCH):
            batch = chunks[start : start + ADD_BATCH]
            self.collection.upsert(
                ids=[c.chunk_id for c in batch],
                embeddings=np.asarray(vectors[start : start + len(batch)], dtype=np.float32),
                metadatas=[chunk_metadata(c, document) for c in batch],
                documents=[c.text for c in batch],
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
        """Nearest chunk ids with cosine similarity, best first."""
        total = self.count()
        if total == 0:
            return []
        result = self.collection.query(
            query_embeddings=[np.asarray(vector, dtype=np.float32)],
            n_results=min(n, total),
            where=where or None,
            include=["distances"],
        )
        ids = result["ids"][0]
        distances = result["distances"][0]
        return [(cid, 1.0 - float(d)) for cid, d in zip(ids, distances)]
