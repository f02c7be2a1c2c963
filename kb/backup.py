"""Backup, restore and rebuild of the knowledge base (embedded mode).

* :func:`export_archive` - a consistent snapshot of the data folder as a ``.tar.gz``: the
  ingest lock is held while the snapshot is taken, so no ingest writes meanwhile; the
  ledger (and Chroma's own SQLite file) are copied with SQLite's backup API, the rest of
  Chroma's folder file by file; a manifest lists every file with its SHA-256.
* :func:`import_archive` - restore such an archive into the data folder.  The archive is
  validated first (member names: no absolute paths, no ``..``, no links or devices; every
  file's hash; the ledger's integrity; Chroma holding exactly the ledger's chunks), then
  swapped in.  A data folder that holds documents is only replaced with ``force``.
* :func:`rebuild` - re-create the whole knowledge base from the documents folder: it is
  built into a fresh folder beside the data folder, reusing the vectors cached in the old
  ledger (so nothing already known is embedded again), checked, and then swapped in; the
  old folder stays in place until the new one is complete.

Swaps use an atomic exchange of the two folders where the system offers one (Linux
``renameat2``), so at every instant the data folder is the old or the new knowledge base.
A process that already has the knowledge base open (the app) keeps reading the old one
until it is restarted.

With ``KB_CHROMA_URL`` set, vectors live on a Chroma server: that server must be backed
up (and restored) with its own tools, so these commands refuse to run.

:func:`content_state` describes everything a knowledge base holds (ledger rows, cached
vector hashes, Chroma ids, metadata, texts and vector hashes) so that two can be compared.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sqlite3
import sys
import tarfile
import tempfile
import time
import zlib
from contextlib import closing
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

from kb.settings import Settings, get_settings

FORMAT = "ct-knowledge-exchange-export"
VERSION = 1
ROOT = "kb-export"  # every member of an archive lives under this folder
MANIFEST = "MANIFEST.json"
MAX_MEMBERS = 200_000  # an export holds a few dozen files; a flood of members is refused
LEDGER = "ledger.sqlite"
CHROMA = "chroma"
#: Not part of a snapshot: regenerable caches, the lock, and SQLite side files (the
#: databases themselves are copied through the backup API).
SKIPPED_TOP = {"models", "ingest.lock"}
SQLITE_SIDE_SUFFIXES = ("-wal", "-shm", "-journal")
CHUNK = 1 << 20


class BackupError(Exception):
    """An export, import or rebuild that cannot be done; ``str()`` is the reason."""


class ServerModeError(BackupError):
    """The vectors live on a Chroma server, which these commands do not cover."""


def _refuse_server_mode(settings: Settings, action: str) -> None:
    if settings.chroma_url:
        raise ServerModeError(
            f"{action} covers the embedded store only: the vectors are on the Chroma server at "
            f"{settings.chroma_url}, which must be backed up and restored with the server's own tools "
            "(unset KB_CHROMA_URL to work on an embedded knowledge base)"
        )


# ======================================================================================
# comparing knowledge bases
# ======================================================================================


def content_state(settings: Settings, *, exclude_paths=(), store=None, ledger_db=None) -> dict:
    """Everything that defines what a knowledge base holds, in a comparable form.

    Ledger rows without their timestamps; the cached vectors as hashes; every Chroma record
    (id, metadata, text and a hash of its vector).  ``exclude_paths`` leaves those files'
    own ledger rows out (a failed file is allowed to change its own row and nothing else).
    ``store`` / ``ledger_db`` reuse an open Chroma collection wrapper / ledger connection.
    """
    excluded = {str(p) for p in exclude_paths}
    own = ledger_db is None
    db = ledger_db or sqlite3.connect(f"file:{settings.ledger_path}?mode=ro", uri=True, timeout=30)

    def rows(sql: str) -> list[tuple]:
        return [tuple(row) for row in db.execute(sql)]

    try:
        state = {
            "documents": rows(
                "SELECT doc_id, file, title, organisation, year, url, language, pages, chunks, status, warnings, "
                "text_version FROM documents"),
            "files": [row for row in rows("SELECT path, name, doc_id, size, status, reason FROM files")
                      if row[0] not in excluded],
            "pages": rows("SELECT doc_id, idx, label, text FROM pages"),
            "chunks": rows("SELECT * FROM chunks"),
            "embeddings": [(key, hashlib.sha256(vector).hexdigest())
                           for key, vector in rows("SELECT key, vector FROM embeddings")],
            "meta": rows("SELECT key, value FROM meta"),
        }
    finally:
        if own:
            db.close()
    state["chroma"] = _chroma_records(settings, store)
    return {name: sorted(values, key=_sort_key) for name, values in state.items()}


def _sort_key(row: tuple) -> str:
    return json.dumps(row, default=str)


def _chroma_records(settings: Settings, store=None) -> list[tuple]:
    opened = None
    if store is None:
        from kb.store import VectorStore

        store = opened = VectorStore(settings)
    try:
        records = []
        offset = 0
        while True:
            page = store.collection.get(include=["metadatas", "documents", "embeddings"], limit=2000, offset=offset)
            for cid, meta, text, vector in zip(page["ids"], page["metadatas"], page["documents"], page["embeddings"]):
                digest = hashlib.sha256(_as_float32_bytes(vector)).hexdigest()
                records.append((cid, json.dumps(meta, sort_keys=True), text, digest))
            if len(page["ids"]) < 2000:
                return records
            offset += 2000
    finally:
        if opened is not None:
            _close_store(opened)


def _as_float32_bytes(vector) -> bytes:
    import numpy as np

    return np.asarray(vector, dtype=np.float32).tobytes()


def _close_store(store) -> None:
    """Release an embedded Chroma client (its shared system goes when unused)."""
    try:
        store.client.close()
    except Exception:
        pass


def _forget_chroma(path: Path) -> None:
    """Drop this process's cached Chroma system for ``path`` (after its folder was
    swapped, a new client must open the files now there, not reuse the old ones)."""
    try:
        from chromadb.api.shared_system_client import SharedSystemClient
    except Exception:
        return
    wanted = {str(path), str(Path(path).resolve())}
    for identifier in list(SharedSystemClient._identifier_to_system):
        if identifier in wanted:
            SharedSystemClient._identifier_to_system.pop(identifier, None)
            SharedSystemClient._identifier_to_refcount.pop(identifier, None)


# ======================================================================================
# folders: copying, swapping
# ======================================================================================


def _sqlite_copy(source: Path, target: Path) -> None:
    """A consistent copy of an SQLite database, whatever other connections are doing,
    as one self-contained file (no write-ahead log beside it)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=60)) as src, closing(
        sqlite3.connect(str(target))
    ) as dst:
        src.backup(dst)
        dst.execute("PRAGMA journal_mode=DELETE")
        check = dst.execute("PRAGMA integrity_check").fetchone()[0]
        if check != "ok":
            raise BackupError(f"the copy of {source.name} failed its integrity check: {check}")


def _is_sqlite_side_file(path: Path) -> bool:
    return path.name.endswith(SQLITE_SIDE_SUFFIXES)


def _looks_like_sqlite(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(16) == b"SQLite format 3\x00"
    except OSError:
        return False


def _copy_tree(source: Path, target: Path) -> None:
    """Copy a folder: SQLite databases through the backup API, other files as they are,
    symbolic links left out."""
    for folder, dirs, files in os.walk(source, followlinks=False):
        relative = Path(folder).relative_to(source)
        (target / relative).mkdir(parents=True, exist_ok=True)
        dirs[:] = [d for d in dirs if not (Path(folder) / d).is_symlink()]
        for name in files:
            path = Path(folder) / name
            if path.is_symlink() or _is_sqlite_side_file(path):
                continue
            if _looks_like_sqlite(path):
                _sqlite_copy(path, target / relative / name)
            else:
                shutil.copy2(path, target / relative / name)


def _link_or_copy_tree(source: Path, target: Path) -> None:
    """Hard links where possible (same file system: instant, no space), else copies."""
    if source.is_symlink():
        target.symlink_to(os.readlink(source), target_is_directory=True)
        return
    for folder, dirs, files in os.walk(source):
        relative = Path(folder).relative_to(source)
        (target / relative).mkdir(parents=True, exist_ok=True)
        for name in files:
            try:
                os.link(Path(folder) / name, target / relative / name)
            except OSError:
                shutil.copy2(Path(folder) / name, target / relative / name)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False if unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    result = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    if result == 0:
        return True
    return False


def _swap_in(new: Path, target: Path) -> Path | None:
    """Put folder ``new`` in the place of ``target``.  Returns where the old folder now is
    (None if there was none).  Atomic where the system allows."""
    if not target.exists():
        new.rename(target)
        return None
    if _exchange(new, target):
        return new  # ``new`` now names the old folder
    old = target.with_name(f".{target.name}.old-{int(time.time())}-{os.getpid()}")
    target.rename(old)
    new.rename(target)
    return old


def _sibling_temp(target: Path, purpose: str) -> Path:
    """A new folder beside ``target`` (same file system, so it can be swapped in), with
    the permissions ``target`` has (or would get)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{target.name}.{purpose}-", dir=target.parent))
    if target.is_dir():
        mode = target.stat().st_mode & 0o7777
    else:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o777 & ~umask
    os.chmod(folder, mode)
    return folder


def _remove_stale(target: Path, purpose: str) -> None:
    """Leftovers of an interrupted import or rebuild (only run under the ingest lock)."""
    for stale in target.parent.glob(f".{target.name}.{purpose}-*"):
        shutil.rmtree(stale, ignore_errors=True)


def _ledger_counts(path: Path) -> dict:
    if not path.is_file():
        return {"documents": 0, "files": 0, "chunks": 0}
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)) as db:
        try:
            return {
                "documents": db.execute("SELECT COUNT(*) FROM documents WHERE status='ready'").fetchone()[0],
                "files": db.execute("SELECT COUNT(*) FROM files").fetchone()[0],
                "chunks": db.execute(
                    "SELECT COUNT(*) FROM chunks c JOIN documents d ON d.doc_id=c.doc_id WHERE d.status='ready'"
                ).fetchone()[0],
            }
        except sqlite3.DatabaseError:
            return {"documents": 0, "files": 1, "chunks": 0}  # unreadable: treat as holding something


def holds_knowledge(settings: Settings) -> bool:
    """Whether the data folder holds anything worth keeping: documents or files in the
    ledger, saved briefs, or removed source files (caches and an empty ledger do not count)."""
    data = settings.data_dir
    if not data.is_dir():
        return False
    counts = _ledger_counts(settings.ledger_path)
    if counts["documents"] or counts["files"]:
        return True
    for folder in (settings.briefs_dir, data / "removed"):
        if folder.is_dir() and any(folder.iterdir()):
            return True
    return False


# ======================================================================================
# export
# ======================================================================================


@dataclass
class ExportResult:
    archive: Path
    documents: int
    chunks: int
    files: int
    bytes: int
    seconds: float


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def snapshot_into(settings: Settings, staging: Path) -> dict:
    """Copy the data folder's content into ``staging`` (the caller holds the ingest lock)."""
    data = settings.data_dir
    _sqlite_copy(settings.ledger_path, staging / LEDGER)
    if settings.chroma_dir.is_dir():
        _copy_tree(settings.chroma_dir, staging / CHROMA)
    for entry in sorted(data.iterdir()):
        if entry.name in SKIPPED_TOP or entry.name in {LEDGER, CHROMA} or entry.is_symlink():
            continue
        if entry.name.startswith(LEDGER) and _is_sqlite_side_file(entry):
            continue
        if entry.is_dir():
            _copy_tree(entry, staging / entry.name)
        elif entry.is_file():
            shutil.copy2(entry, staging / entry.name)
    return _ledger_counts(staging / LEDGER)


def export_archive(archive: Path, settings: Settings | None = None) -> ExportResult:
    """Write a consistent snapshot of the data folder to ``archive`` (``.tar.gz``)."""
    from ingest.pipeline import ingest_lock

    settings = settings or get_settings()
    _refuse_server_mode(settings, "kb export")
    started = time.perf_counter()
    if not settings.ledger_path.is_file():
        raise BackupError(f"nothing to export: there is no knowledge base in {settings.data_dir}")
    archive = Path(archive).resolve()
    if archive.is_relative_to(settings.data_dir.resolve()):
        raise BackupError("the archive cannot be written inside the data folder it is a copy of")
    archive.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".kb-export-", dir=archive.parent))
    try:
        with ingest_lock(settings.lock_path):  # no ingest writes while the snapshot is taken
            counts = snapshot_into(settings, staging)
        files = {}
        for path in sorted(p for p in staging.rglob("*") if p.is_file()):
            files[path.relative_to(staging).as_posix()] = {"size": path.stat().st_size, "sha256": _hash_file(path)}
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "collection": settings.collection,
            "embed_backend": settings.embed_backend,
            "documents": counts["documents"],
            "chunks": counts["chunks"],
            "files": files,
        }
        partial = archive.with_name(f".{archive.name}.part")
        with tarfile.open(partial, "w:gz", compresslevel=6) as tar:
            blob = json.dumps(manifest, indent=1, sort_keys=True).encode()
            info = tarfile.TarInfo(f"{ROOT}/{MANIFEST}")
            info.size, info.mtime, info.mode = len(blob), int(time.time()), 0o644
            tar.addfile(info, io.BytesIO(blob))
            for name in files:
                tar.add(staging / name, arcname=f"{ROOT}/{name}", recursive=False)
        os.replace(partial, archive)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        leftover = archive.with_name(f".{archive.name}.part")
        if leftover.exists():
            leftover.unlink()
    return ExportResult(archive, counts["documents"], counts["chunks"], len(files), archive.stat().st_size,
                        time.perf_counter() - started)


# ======================================================================================
# import
# ======================================================================================


@dataclass
class ImportResult:
    data_dir: Path
    documents: int
    chunks: int
    replaced: bool
    seconds: float
    notes: list[str] = field(default_factory=list)


def _member_path(name: str) -> PurePosixPath:
    """The path of an archive member inside ``ROOT``, or ``BackupError`` if unsafe."""
    if not name or "\x00" in name or "\\" in name:
        raise BackupError(f"refused: unsafe member name {name!r} in the archive")
    path = PurePosixPath(name)
    if path.is_absolute() or any(part in {"..", ""} for part in path.parts) or name.startswith("/"):
        raise BackupError(f"refused: member {name!r} would be written outside the data folder")
    if not path.parts or path.parts[0] != ROOT:
        raise BackupError(f"refused: member {name!r} is not part of a knowledge-base export")
    inside = PurePosixPath(*path.parts[1:]) if len(path.parts) > 1 else PurePosixPath(".")
    if inside.parts and inside.parts[0] in SKIPPED_TOP:
        raise BackupError(f"refused: member {name!r} is not something an export contains")
    return inside


def validate_members(tar: tarfile.TarFile) -> list[tuple[tarfile.TarInfo, PurePosixPath]]:
    """Check every member before anything is written; the regular files to extract."""
    seen: set[PurePosixPath] = set()
    wanted: list[tuple[tarfile.TarInfo, PurePosixPath]] = []
    for count, member in enumerate(tar, start=1):
        if count > MAX_MEMBERS:
            raise BackupError(f"refused: the archive has more than {MAX_MEMBERS:,} members")
        inside = _member_path(member.name)
        if member.isdir():
            continue
        if not member.isfile():
            kind = "link" if (member.issym() or member.islnk()) else "special file"
            raise BackupError(f"refused: member {member.name!r} is a {kind}; an export holds only files")
        if inside in seen:
            raise BackupError(f"refused: member {member.name!r} appears twice")
        if str(inside) == ".":
            raise BackupError(f"refused: member {member.name!r} has no file name")
        seen.add(inside)
        wanted.append((member, inside))
    return wanted


def _read_archive(archive: Path, staging: Path) -> dict:
    """Validate and unpack ``archive`` into ``staging``; returns its manifest."""
    try:
        tar = tarfile.open(archive, "r:*")
    except (tarfile.TarError, OSError, EOFError) as error:
        raise BackupError(f"not a knowledge-base export ({' '.join(str(error).split())[:120]})") from None
    with tar:
        try:
            members = validate_members(tar)
        except (tarfile.TarError, EOFError, OSError, ValueError) as error:
            raise BackupError(f"the archive is damaged ({' '.join(str(error).split())[:120]})") from None
        names = {str(inside): member for member, inside in members}
        if MANIFEST not in names:
            raise BackupError(f"not a knowledge-base export: {ROOT}/{MANIFEST} is missing")
        try:
            manifest = json.loads(tar.extractfile(names[MANIFEST]).read(1 << 24))
        except (ValueError, tarfile.TarError, EOFError, OSError) as error:
            raise BackupError(f"the archive's manifest is unreadable ({error})") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise BackupError("not a knowledge-base export: unknown manifest format")
        if manifest.get("version") != VERSION:
            raise BackupError(f"export format version {manifest.get('version')!r} is not supported (expected {VERSION})")
        listed = manifest.get("files")
        if not isinstance(listed, dict):
            raise BackupError("the archive's manifest lists no files")
        present = set(names) - {MANIFEST}
        if present != set(listed):
            missing, extra = sorted(set(listed) - present), sorted(present - set(listed))
            raise BackupError(f"the archive does not match its manifest (missing {missing[:3]}, unexpected {extra[:3]})")
        if LEDGER not in listed:
            raise BackupError("the archive holds no ledger")
        total = sum(int(entry.get("size", 0)) for entry in listed.values())
        free = shutil.disk_usage(staging).free
        if total > free:
            raise BackupError(f"not enough disk space to restore: {total / 1e6:.0f} MB needed, {free / 1e6:.0f} MB free")
        for name in sorted(present):
            member, expected = names[name], listed[name]
            if member.size != expected.get("size"):
                raise BackupError(f"{name}: size differs from the manifest")
            target = staging.joinpath(*PurePosixPath(name).parts)
            if not target.resolve().is_relative_to(staging.resolve()):
                raise BackupError(f"refused: member {name!r} would be written outside the data folder")
            target.parent.mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha256()
            try:
                source = tar.extractfile(member)
                with target.open("wb") as out:
                    for block in iter(lambda: source.read(CHUNK), b""):
                        digest.update(block)
                        out.write(block)
            except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
                raise BackupError(f"the archive is damaged ({' '.join(str(error).split())[:120]})") from None
            if digest.hexdigest() != expected.get("sha256"):
                raise BackupError(f"{name}: content differs from the manifest (damaged archive)")
    return manifest


def _check_restored(settings: Settings) -> dict:
    """The restored ledger is intact and Chroma holds exactly its visible chunks."""
    try:
        with closing(sqlite3.connect(f"file:{settings.ledger_path}?mode=ro", uri=True)) as db:
            check = db.execute("PRAGMA integrity_check").fetchone()[0]
            if check != "ok":
                raise BackupError(f"the archive's ledger is damaged: {check}")
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            needed = {"documents", "files", "pages", "chunks", "embeddings", "meta"}
            if not needed <= tables:
                raise BackupError(f"the archive's ledger lacks tables: {', '.join(sorted(needed - tables))}")
            visible = {row[0] for row in db.execute(
                "SELECT c.chunk_id FROM chunks c JOIN documents d ON d.doc_id=c.doc_id WHERE d.status='ready'")}
    except sqlite3.DatabaseError as error:
        raise BackupError(f"the archive's ledger is not a readable database ({error})") from None
    from kb.store import VectorStore

    try:
        store = VectorStore(settings)
        try:
            stored = set(store.all_ids())
        finally:
            _close_store(store)
    except Exception as error:  # whatever Chroma raises for a damaged folder
        raise BackupError(f"the archive's vector store cannot be read ({' '.join(str(error).split())[:120]})") from None
    finally:
        _forget_chroma(settings.chroma_dir)
    if not visible <= stored:
        raise BackupError(f"the archive's vector store lacks {len(visible - stored)} of the ledger's chunks")
    return _ledger_counts(settings.ledger_path)


def import_archive(archive: Path, settings: Settings | None = None, *, force: bool = False) -> ImportResult:
    """Restore ``archive`` into the data folder (replacing it only with ``force``)."""
    from ingest.pipeline import ingest_lock

    settings = settings or get_settings()
    _refuse_server_mode(settings, "kb import")
    started = time.perf_counter()
    archive = Path(archive)
    if not archive.is_file():
        raise BackupError(f"no such archive: {archive}")
    target = settings.data_dir.resolve()
    settings = replace(settings, data_dir=target)
    if holds_knowledge(settings) and not force:
        raise BackupError(
            f"the data folder {target} already holds a knowledge base; use --force to replace it "
            "(export it first if you may want it back)"
        )
    target.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    with ingest_lock(settings.lock_path):  # no ingest, rebuild or other import meanwhile
        _remove_stale(target, "import")
        staging = _sibling_temp(target, "import")
        try:
            manifest = _read_archive(archive, staging)
            collection = manifest.get("collection") or settings.collection
            if collection != settings.collection:
                raise BackupError(f"the archive's collection is {collection!r} but KB_COLLECTION is {settings.collection!r}")
            counts = _check_restored(replace(settings, data_dir=staging))
            if manifest.get("embed_backend") and manifest["embed_backend"] != settings.embed_backend:
                notes.append(
                    f"the archive was made with the {manifest['embed_backend']} embedding backend; "
                    f"this installation uses {settings.embed_backend}"
                )
            if holds_knowledge(settings) and not force:  # filled in the meantime
                raise BackupError(f"the data folder {target} already holds a knowledge base; use --force to replace it")
            models = target / "models"
            if models.exists() or models.is_symlink():
                _link_or_copy_tree(models, staging / "models")  # caches are kept, not restored
            replaced = holds_knowledge(settings)
            old = _swap_in(staging, target)
        finally:
            if staging.exists() and staging.resolve() != target:
                shutil.rmtree(staging, ignore_errors=True)  # a failed import's, or the old folder
    _forget_chroma(settings.chroma_dir)
    if old is not None and old.exists():
        shutil.rmtree(old, ignore_errors=True)
    return ImportResult(target, counts["documents"], counts["chunks"], replaced, time.perf_counter() - started, notes)


# ======================================================================================
# rebuild
# ======================================================================================


@dataclass
class RebuildResult:
    data_dir: Path
    documents: int
    chunks: int
    failed: list[tuple[str, str]]
    reused_vectors: int
    embedded: int
    dropped: list[str]
    seconds: float


def seed_embeddings(old_ledger: Path, new_ledger_db: sqlite3.Connection) -> int:
    """Copy the old ledger's cached vectors into the new one; returns how many.  (Vectors
    are keyed by backend and a hash of the embedded text, so a copy is as good as new.)"""
    if not old_ledger.is_file():
        return 0
    with closing(sqlite3.connect(f"file:{old_ledger}?mode=ro", uri=True, timeout=60)) as old:
        count = 0
        cursor = old.execute("SELECT key, vector FROM embeddings")
        while True:
            rows = cursor.fetchmany(5000)
            if not rows:
                return count
            with new_ledger_db:
                new_ledger_db.executemany("INSERT OR IGNORE INTO embeddings(key, vector) VALUES(?, ?)", rows)
            count += len(rows)


def rebuild(settings: Settings | None = None, progress=None) -> RebuildResult:
    """Re-create the knowledge base from the documents folder and swap it in."""
    from ingest.pipeline import ingest, ingest_lock
    from kb.knowledge_base import KnowledgeBase

    settings = settings or get_settings()
    _refuse_server_mode(settings, "kb rebuild")
    started = time.perf_counter()
    target = settings.data_dir.resolve()
    documents = Path(settings.documents_dir).resolve()
    if not documents.is_dir():
        raise BackupError(f"the documents folder {documents} does not exist")
    settings = replace(settings, data_dir=target, documents_dir=documents)
    target.mkdir(parents=True, exist_ok=True)
    with ingest_lock(settings.lock_path):  # the old knowledge base stays as it is meanwhile
        known = _ledger_counts(settings.ledger_path)["documents"]
        if known and not any(p.suffix.lower() == ".pdf" for p in documents.iterdir() if p.is_file()):
            raise BackupError(
                f"the documents folder {documents} holds no PDF: refusing to replace a knowledge base of "
                f"{known} documents with an empty one (check KB_DOCUMENTS_DIR)"
            )
        _remove_stale(target, "rebuild")
        _remove_stale(target, "import")
        dropped = _outside_documents(settings, documents)
        fresh = _sibling_temp(target, "rebuild")
        try:
            built = replace(settings, data_dir=fresh)
            models = target / "models"
            if models.exists() or models.is_symlink():
                _link_or_copy_tree(models, fresh / "models")
            kb = KnowledgeBase(built)
            try:
                reused = seed_embeddings(settings.ledger_path, kb.ledger._db)
                report = ingest([documents], built, progress=progress, knowledge_base=kb)
                with kb.ledger.transaction() as db:  # keep only the vectors in use
                    db.execute("DELETE FROM embeddings WHERE key NOT IN (SELECT embedding_key FROM chunks)")
                _check_built(kb)
                counts = kb.ledger.counts()
            finally:
                kb.close()
                if kb._store is not None:
                    _close_store(kb._store)
                _forget_chroma(built.chroma_dir)
            for name in ("briefs", "removed"):  # what the user made or set aside comes along
                if (target / name).is_dir():
                    _copy_tree(target / name, fresh / name)
            old = _swap_in(fresh, target)
        except BaseException:
            shutil.rmtree(fresh, ignore_errors=True)
            raise
    _forget_chroma(settings.chroma_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    failed = [(r.file, r.reason) for r in report.failed]
    return RebuildResult(target, counts["documents"], counts["chunks"], failed, reused, report.embedded, dropped,
                         time.perf_counter() - started)


def _outside_documents(settings: Settings, documents: Path) -> list[str]:
    """Files in the current ledger that are not in the documents folder (a rebuild drops them)."""
    if not settings.ledger_path.is_file():
        return []
    with closing(sqlite3.connect(f"file:{settings.ledger_path}?mode=ro", uri=True, timeout=30)) as db:
        rows = db.execute("SELECT path FROM files WHERE status='ok'").fetchall()
    return sorted(path for (path,) in rows if Path(path).parent != documents)


def _check_built(kb) -> None:
    """Nothing half-done in a freshly built knowledge base: no pending document, every
    visible chunk in Chroma with a cached vector, and nothing else in Chroma."""
    if kb.ledger.pending_documents():
        raise BackupError("the rebuilt knowledge base has half-ingested documents; the old one is kept")
    visible = {row["chunk_id"] for row in kb.ledger.visible_chunk_rows()}
    stored = set(kb.store.all_ids())
    if visible != stored:
        raise BackupError(
            f"the rebuilt vector store does not match its ledger ({len(visible - stored)} missing, "
            f"{len(stored - visible)} extra); the old knowledge base is kept"
        )


# ======================================================================================
# command line
# ======================================================================================


def _print_json(value) -> None:
    print(json.dumps(value, ensure_ascii=False, indent=2, default=str))


def _fail(command: str, error: BaseException, as_json: bool, status: int) -> int:
    message = str(error)
    if as_json:
        _print_json({"ok": False, "error": message})
    else:
        print(f"kb {command}: {message}", file=sys.stderr)
    return status


def cmd_export(args) -> int:
    from ingest.pipeline import IngestBusy

    try:
        result = export_archive(Path(args.archive))
    except ServerModeError as error:
        return _fail("export", error, args.json, 2)
    except IngestBusy as error:
        return _fail("export", error, args.json, 2)
    except (BackupError, OSError, sqlite3.Error) as error:
        return _fail("export", error, args.json, 1)
    if args.json:
        _print_json({"ok": True, "archive": str(result.archive), "documents": result.documents, "chunks": result.chunks,
                     "files": result.files, "bytes": result.bytes, "seconds": round(result.seconds, 2)})
    else:
        print(f"exported {result.documents} documents, {result.chunks} chunks ({result.files} files, "
              f"{result.bytes / 1e6:.1f} MB) to {result.archive} in {result.seconds:.1f} s")
    return 0


def cmd_import(args) -> int:
    from ingest.pipeline import IngestBusy

    try:
        result = import_archive(Path(args.archive), force=args.force)
    except (ServerModeError, IngestBusy) as error:
        return _fail("import", error, args.json, 2)
    except (BackupError, OSError, sqlite3.Error) as error:
        return _fail("import", error, args.json, 1)
    if args.json:
        _print_json({"ok": True, "data_dir": str(result.data_dir), "documents": result.documents,
                     "chunks": result.chunks, "replaced": result.replaced, "notes": result.notes,
                     "seconds": round(result.seconds, 2)})
    else:
        verb = "replaced the knowledge base in" if result.replaced else "restored into"
        print(f"{verb} {result.data_dir}: {result.documents} documents, {result.chunks} chunks "
              f"({result.seconds:.1f} s); restart the app if it is running")
        for note in result.notes:
            print(f"note: {note}")
    return 0


def cmd_rebuild(args) -> int:
    from ingest.pipeline import IngestBusy

    try:
        result = rebuild()
    except (ServerModeError, IngestBusy) as error:
        return _fail("rebuild", error, args.json, 2)
    except (BackupError, OSError, sqlite3.Error) as error:
        return _fail("rebuild", error, args.json, 1)
    if args.json:
        _print_json({"ok": True, "data_dir": str(result.data_dir), "documents": result.documents,
                     "chunks": result.chunks, "failed": [{"file": f, "reason": r} for f, r in result.failed],
                     "reused_vectors": result.reused_vectors, "embedded": result.embedded,
                     "dropped": result.dropped, "seconds": round(result.seconds, 2)})
    else:
        print(f"rebuilt {result.data_dir} from the documents folder: {result.documents} documents, "
              f"{result.chunks} chunks; {result.embedded} texts newly embedded "
              f"({result.reused_vectors} cached vectors reused) in {result.seconds:.1f} s")
        for file, reason in result.failed:
            print(f"   failed  {file}: {reason}")
        for path in result.dropped:
            print(f"  dropped  {path} (not in the documents folder)")
        print("restart the app if it is running")
    return 0


def register_commands(commands) -> None:
    """Add ``export``, ``import`` and ``rebuild`` to the ``kb`` command."""
    p = commands.add_parser("export", help="write a consistent snapshot of the knowledge base to a .tar.gz")
    p.add_argument("archive", help="the archive to write, e.g. kb-backup.tar.gz")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_export)

    p = commands.add_parser("import", help="restore a knowledge base from an archive made by kb export")
    p.add_argument("archive")
    p.add_argument("--force", action="store_true", help="replace a data folder that already holds a knowledge base")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_import)

    p = commands.add_parser("rebuild", help="re-create the knowledge base from the documents folder, then swap it in")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_rebuild)
