"""The ledger: a small SQLite database of documents, files, pages, chunks and cached
embeddings.  It is the single authority on what is *visible*: a document's chunks count
only once its row says ``ready``, which is set in one transaction after every chunk is
stored.  A crash before that leaves a ``pending`` row that the next ingest cleans up.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from kb.records import Chunk, DocumentMeta, Page

SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    doc_id TEXT PRIMARY KEY,
    file TEXT NOT NULL,
    title TEXT NOT NULL,
    organisation TEXT NOT NULL DEFAULT '',
    year INTEGER,
    url TEXT NOT NULL DEFAULT '',
    language TEXT NOT NULL DEFAULT 'en',
    pages INTEGER NOT NULL DEFAULT 0,
    chunks INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL,              -- pending | ready
    warnings TEXT NOT NULL DEFAULT '[]',
    added_at REAL NOT NULL,
    text_version INTEGER NOT NULL DEFAULT 0  -- ingest.extract.TEXT_VERSION that read it
);
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY,             -- absolute path of the source file
    name TEXT NOT NULL,                -- its base name, as cited
    doc_id TEXT,                       -- the document its bytes are (last good version)
    size INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL,              -- ok | duplicate | failed
    reason TEXT NOT NULL DEFAULT '',
    checked_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS pages (
    doc_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    label TEXT NOT NULL,
    text TEXT NOT NULL,
    PRIMARY KEY (doc_id, idx)
);
CREATE TABLE IF NOT EXISTS chunks (
    chunk_id TEXT PRIMARY KEY,
    doc_id TEXT NOT NULL,
    ordinal INTEGER NOT NULL,
    page_start INTEGER NOT NULL,
    page_end INTEGER NOT NULL,
    label_start TEXT NOT NULL,
    label_end TEXT NOT NULL,
    heading TEXT NOT NULL DEFAULT '',
    text TEXT NOT NULL,
    terms TEXT NOT NULL DEFAULT '',    -- keyword-index terms, space separated
    themes TEXT NOT NULL DEFAULT '[]',
    passage_type TEXT NOT NULL DEFAULT '',
    embedding_key TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_by_doc ON chunks (doc_id, ordinal);
CREATE TABLE IF NOT EXISTS embeddings (
    key TEXT PRIMARY KEY,              -- backend + content hash of the embedded text
    vector BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


class Ledger:
    """Thin, explicit access to the ledger database."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), timeout=30, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=30000")
        self._db.executescript(SCHEMA)
        self._add_missing_columns()
        # One connection serves every thread (an ingest stores one document while it
        # embeds the next; the app answers from several): transactions take turns.
        self._writing = threading.RLock()

    def _add_missing_columns(self) -> None:
        """Bring a ledger made by an earlier version up to date (columns only ever added)."""
        if "text_version" in self._columns("documents"):
            return
        try:
            with self._db:
                self._db.execute("ALTER TABLE documents ADD COLUMN text_version INTEGER NOT NULL DEFAULT 0")
        except sqlite3.OperationalError:
            if "text_version" not in self._columns("documents"):
                raise
            # another process opening the same ledger added it first

    def _columns(self, table: str) -> set[str]:
        return {row["name"] for row in self._db.execute(f"PRAGMA table_info({table})")}

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """All statements inside happen together or not at all (and no other thread's
        statements slip in between them)."""
        with self._writing, self._db:
            yield self._db

    # --- generation: bumped whenever visible content changes --------------------------
    def generation(self) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key='generation'").fetchone()
        return int(row["value"]) if row else 0

    @staticmethod
    def bump_generation(db: sqlite3.Connection) -> None:
        db.execute(
            "INSERT INTO meta(key, value) VALUES('generation', '1') ON CONFLICT(key) "
            "DO UPDATE SET value = CAST(value AS INTEGER) + 1"
        )

    def get_meta(self, key: str, default: str = "") -> str:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row["value"] if row else default

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (key, value),
            )

    # --- documents ----------------------------------------------------------------------
    def document(self, doc_id: str) -> DocumentMeta | None:
        row = self._db.execute("SELECT * FROM documents WHERE doc_id=?", (doc_id,)).fetchone()
        return _document_from_row(row) if row else None

    def document_status(self, doc_id: str) -> str | None:
        row = self._db.execute("SELECT status FROM documents WHERE doc_id=?", (doc_id,)).fetchone()
        return row["status"] if row else None

    def ready_documents(self) -> list[DocumentMeta]:
        rows = self._db.execute(
            "SELECT * FROM documents WHERE status='ready' ORDER BY organisation, title"
        ).fetchall()
        return [_document_from_row(row) for row in rows]

    def document_rows(self) -> list[dict]:
        return [dict(row) for row in self._db.execute("SELECT * FROM documents ORDER BY file")]

    def pending_documents(self) -> list[str]:
        rows = self._db.execute("SELECT doc_id FROM documents WHERE status='pending'").fetchall()
        return [row["doc_id"] for row in rows]

    def write_pending_document(
        self,
        meta: DocumentMeta,
        pages: list[Page],
        chunks: list[Chunk],
        keys: list[str],
        chunk_terms: list[list[str]],
        warnings: list[str],
    ) -> None:
        """Store a document's pages and chunks, not yet visible (status ``pending``)."""
        with self.transaction() as db:
            _delete_document_rows(db, meta.doc_id)
            db.execute(
                "INSERT INTO documents(doc_id, file, title, organisation, year, url, language, pages, "
                "chunks, status, warnings, added_at, text_version) VALUES(?,?,?,?,?,?,?,?,?, 'pending', ?, ?, ?)",
                (
                    meta.doc_id, meta.file, meta.title, meta.organisation, meta.year, meta.url,
                    meta.language, meta.pages, meta.chunks, json.dumps(warnings), time.time(),
                    meta.text_version,
                ),
            )
            db.executemany(
                "INSERT INTO pages(doc_id, idx, label, text) VALUES(?,?,?,?)",
                [(meta.doc_id, p.index, p.label, p.text) for p in pages],
            )
            db.executemany(
                "INSERT INTO chunks(chunk_id, doc_id, ordinal, page_start, page_end, label_start, "
                "label_end, heading, text, terms, themes, passage_type, embedding_key) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (
                        c.chunk_id, c.doc_id, c.ordinal, c.page_start, c.page_end, c.label_start,
                        c.label_end, c.heading, c.text, " ".join(terms), json.dumps(c.themes),
                        c.passage_type, key,
                    )
                    for c, key, terms in zip(chunks, keys, chunk_terms)
                ],
            )

    def delete_document(self, doc_id: str) -> None:
        with self.transaction() as db:
            _delete_document_rows(db, doc_id)
            self.bump_generation(db)

    def rename_document_file(self, doc_id: str, name: str) -> None:
        with self.transaction() as db:
            db.execute("UPDATE documents SET file=? WHERE doc_id=?", (name, doc_id))
            self.bump_generation(db)

    def update_document_meta(self, doc_id: str, **fields) -> None:
        allowed = {"title", "organisation", "year", "url", "language"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"cannot edit {', '.join(sorted(unknown))}")
        if not fields:
            return
        assignments = ", ".join(f"{name}=?" for name in fields)
        with self.transaction() as db:
            db.execute(f"UPDATE documents SET {assignments} WHERE doc_id=?", (*fields.values(), doc_id))
            self.bump_generation(db)

    # --- files ----------------------------------------------------------------------------
    def file_rows(self) -> list[dict]:
        return [dict(row) for row in self._db.execute("SELECT * FROM files ORDER BY name")]

    def file_row(self, path: str) -> dict | None:
        row = self._db.execute("SELECT * FROM files WHERE path=?", (path,)).fetchone()
        return dict(row) if row else None

    @staticmethod
    def put_file(db: sqlite3.Connection, path: str, name: str, doc_id: str | None, size: int, status: str, reason: str = "") -> None:
        db.execute(
            "INSERT INTO files(path, name, doc_id, size, status, reason, checked_at) VALUES(?,?,?,?,?,?,?) "
            "ON CONFLICT(path) DO UPDATE SET name=excluded.name, doc_id=excluded.doc_id, size=excluded.size, "
            "status=excluded.status, reason=excluded.reason, checked_at=excluded.checked_at",
            (path, name, doc_id, size, status, reason, time.time()),
        )

    def record_file(self, path: str, name: str, doc_id: str | None, size: int, status: str, reason: str = "") -> None:
        with self.transaction() as db:
            self.put_file(db, path, name, doc_id, size, status, reason)

    def forget_file(self, path: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM files WHERE path=?", (path,))

    def referenced_doc_ids(self) -> set[str]:
        rows = self._db.execute("SELECT DISTINCT doc_id FROM files WHERE doc_id IS NOT NULL").fetchall()
        return {row["doc_id"] for row in rows}

    # --- pages and chunks -------------------------------------------------------------
    def page_text(self, doc_id: str, index: int) -> str | None:
        row = self._db.execute("SELECT text FROM pages WHERE doc_id=? AND idx=?", (doc_id, index)).fetchone()
        return row["text"] if row else None

    def page_label(self, doc_id: str, index: int) -> str:
        row = self._db.execute("SELECT label FROM pages WHERE doc_id=? AND idx=?", (doc_id, index)).fetchone()
        return row["label"] if row else str(index)

    def pages(self, doc_id: str) -> list[Page]:
        rows = self._db.execute("SELECT * FROM pages WHERE doc_id=? ORDER BY idx", (doc_id,)).fetchall()
        return [Page(index=row["idx"], label=row["label"], text=row["text"]) for row in rows]

    def chunk_ids(self, doc_id: str) -> list[str]:
        rows = self._db.execute("SELECT chunk_id FROM chunks WHERE doc_id=? ORDER BY ordinal", (doc_id,))
        return [row["chunk_id"] for row in rows]

    def visible_chunk_rows(self) -> list[sqlite3.Row]:
        """Every chunk of every ready document, in a stable order."""
        return self._db.execute(
            "SELECT c.* FROM chunks c JOIN documents d ON d.doc_id = c.doc_id "
            "WHERE d.status='ready' ORDER BY c.doc_id, c.ordinal"
        ).fetchall()

    def set_chunk_tags(self, tags: dict[str, tuple[list[str], str]]) -> None:
        with self.transaction() as db:
            db.executemany(
                "UPDATE chunks SET themes=?, passage_type=? WHERE chunk_id=?",
                [(json.dumps(themes), ptype, cid) for cid, (themes, ptype) in tags.items()],
            )
            self.bump_generation(db)

    # --- embedding cache --------------------------------------------------------------
    def cached_vectors(self, keys: list[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        for start in range(0, len(keys), 500):
            batch = keys[start : start + 500]
            marks = ",".join("?" * len(batch))
            for row in self._db.execute(f"SELECT key, vector FROM embeddings WHERE key IN ({marks})", batch):
                found[row["key"]] = np.frombuffer(row["vector"], dtype=np.float32)
        return found

    def cache_vectors(self, vectors: dict[str, np.ndarray]) -> None:
        with self.transaction() as db:
            db.executemany(
                "INSERT OR IGNORE INTO embeddings(key, vector) VALUES(?, ?)",
                [(key, np.asarray(v, dtype=np.float32).tobytes()) for key, v in vectors.items()],
            )

    # --- counts ---------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        row = self._db.execute(
            "SELECT COUNT(*) AS documents, COALESCE(SUM(pages),0) AS pages, COALESCE(SUM(chunks),0) AS chunks "
            "FROM documents WHERE status='ready'"
        ).fetchone()
        return dict(row)


def _delete_document_rows(db: sqlite3.Connection, doc_id: str) -> None:
    db.execute("DELETE FROM chunks WHERE doc_id=?", (doc_id,))
    db.execute("DELETE FROM pages WHERE doc_id=?", (doc_id,))
    db.execute("DELETE FROM documents WHERE doc_id=?", (doc_id,))


def _document_from_row(row: sqlite3.Row) -> DocumentMeta:
    return DocumentMeta(
        doc_id=row["doc_id"],
        file=row["file"],
        title=row["title"],
        organisation=row["organisation"],
        year=row["year"],
        url=row["url"],
        language=row["language"],
        pages=row["pages"],
        chunks=row["chunks"],
        text_version=row["text_version"],
    )
