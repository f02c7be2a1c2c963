"""Backup, restore and rebuild (``kb export``, ``kb import``, ``kb rebuild``; kb/backup.py).

* export → wipe → import gives back the same knowledge base: every ledger row, cached
  vector and Chroma record, the saved briefs, and the same search results;
* import refuses to replace a data folder that holds a knowledge base unless ``--force``,
  and refuses archives with path traversal, links, damaged content or no manifest,
  writing nothing;
* rebuild re-creates the knowledge base from the documents folder with the same chunk ids,
  embedding nothing again; if it fails, the old knowledge base is left as it was;
* all three refuse while an ingest runs, and with a Chroma server.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest

from ingest.pipeline import ingest_lock
from kb import backup
from kb.backup import content_state
from kb.cli import main
from kb.knowledge_base import KnowledgeBase
from kb.service import Service
from conftest import make_pdf
from test_concurrency import QUERIES, TOPICS, document_pages, shared_models, write_documents


def run(capsys, *argv: str) -> tuple[int, object, str]:
    """``kb ARGV`` in this process: exit status, parsed JSON output (or text), stderr."""
    capsys.readouterr()
    status = main(list(argv))
    captured = capsys.readouterr()
    out = json.loads(captured.out) if "--json" in argv and captured.out.strip() else captured.out
    return status, out, captured.err


def search_results(settings) -> list:
    service = Service(settings)
    results = []
    for query in QUERIES:
        results.append([(p.chunk.chunk_id, round(p.score, 5)) for p in service.search(query, k=5)])
    results.append(service.ask(QUERIES[0]).answer)
    return results


def wipe(data_dir: Path) -> None:
    """Everything goes but the (shared, symlinked) models cache."""
    for entry in data_dir.iterdir():
        if entry.name == "models":
            continue
        shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()


@pytest.fixture
def library(settings, tmp_path_factory):
    """A small knowledge base with a saved brief."""
    write_documents(settings.documents_dir, 4)
    shared_models(settings.data_dir, tmp_path_factory.getbasetemp())
    service = Service(settings)
    report = service.ingest()
    assert report.count("added") == 4
    brief = service.briefs().create("Lessons on inspections")
    return settings, brief.id


def siblings(settings) -> list[str]:
    """Temporary folders of imports and rebuilds left beside the data folder."""
    return sorted(p.name for p in settings.data_dir.parent.iterdir() if p.name.startswith(f".{settings.data_dir.name}."))


# --------------------------------------------------------------------------------------
# export and import
# --------------------------------------------------------------------------------------


def test_export_wipe_import_gives_the_same_knowledge_base(library, tmp_path, capsys):
    settings, brief_id = library
    before_results = search_results(settings)
    before = content_state(settings)
    brief_text = (settings.briefs_dir / f"{brief_id}.json").read_text()
    archive = tmp_path / "backup" / "kb.tar.gz"

    status, out, _ = run(capsys, "export", str(archive), "--json")
    assert status == 0 and out["ok"] and out["documents"] == 4 and out["chunks"] == len(before["chunks"])
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert all(name.startswith("kb-export/") for name in names)
    assert "kb-export/ledger.sqlite" in names and "kb-export/MANIFEST.json" in names
    assert not any("/models" in name or name.endswith(("-wal", "-shm", "ingest.lock")) for name in names)

    wipe(settings.data_dir)
    assert Service(settings).search(QUERIES[0]) == []
    status, out, _ = run(capsys, "import", str(archive), "--json")
    assert status == 0 and out["ok"] and out["documents"] == 4 and out["replaced"] is False

    assert content_state(settings) == before  # every row, vector and Chroma record
    assert search_results(settings) == before_results
    assert (settings.briefs_dir / f"{brief_id}.json").read_text() == brief_text
    assert siblings(settings) == []


def test_import_replaces_a_knowledge_base_only_with_force(library, tmp_path, capsys):
    settings, _ = library
    archive = tmp_path / "kb.tar.gz"
    assert run(capsys, "export", str(archive))[0] == 0
    exported = content_state(settings)
    (settings.documents_dir / "cocoa.pdf").unlink()  # the library changes after the backup
    Service(settings).ingest()
    changed = content_state(settings)
    assert changed != exported

    status, _, err = run(capsys, "import", str(archive))
    assert status == 1 and "already holds a knowledge base" in err and "--force" in err
    assert content_state(settings) == changed  # untouched

    status, out, _ = run(capsys, "import", str(archive), "--force", "--json")
    assert status == 0 and out["replaced"] is True
    assert content_state(settings) == exported
    assert siblings(settings) == []


def _archive(path: Path, members: list[tuple[str, bytes | None, str]]) -> Path:
    """A tar.gz with the given members: (name, data, kind) where kind is file, dir or symlink."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data, kind in members:
            info = tarfile.TarInfo(name)
            if kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tar.addfile(info)
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data or b"")
                tar.addfile(info, io.BytesIO(data or b""))
    return path


def _manifest(files: dict[str, bytes]) -> bytes:
    import hashlib

    listed = {name: {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()} for name, data in files.items()}
    return json.dumps({"format": backup.FORMAT, "version": backup.VERSION, "files": listed}).encode()


@pytest.mark.parametrize(
    "members, fragment",
    [
        ([("kb-export/../escaped.txt", b"x", "file")], "outside the data folder"),
        ([("/tmp/escaped-absolute.txt", b"x", "file")], "outside the data folder"),
        ([("kb-export/chroma/../../escaped.txt", b"x", "file")], "outside the data folder"),
        ([("kb-export/ledger.sqlite", None, "symlink")], "is a link"),
        ([("elsewhere/ledger.sqlite", b"x", "file")], "not part of a knowledge-base export"),
        ([("kb-export/models/evil.onnx", b"x", "file")], "not something an export contains"),
        ([("kb-export/ledger.sqlite", b"x", "file")], "MANIFEST.json is missing"),
    ],
)
def test_import_refuses_unsafe_archives_and_writes_nothing(settings, tmp_path, capsys, members, fragment):
    archive = _archive(tmp_path / "evil.tar.gz", [("kb-export/MANIFEST.json", _manifest({}), "file")] * (
        "MANIFEST" not in fragment) + members)
    status, _, err = run(capsys, "import", str(archive))
    assert status == 1 and fragment in err, err
    assert "refused" in err or "not" in err
    for escaped in (tmp_path / "escaped.txt", Path("/tmp/escaped-absolute.txt"), settings.data_dir.parent / "escaped.txt"):
        assert not escaped.exists()
    assert not settings.ledger_path.exists()
    assert siblings(settings) == []


def test_import_refuses_damaged_or_foreign_archives(settings, tmp_path, capsys):
    KnowledgeBase(settings).close()  # an empty knowledge base is enough to export
    archive = tmp_path / "kb.tar.gz"
    assert run(capsys, "export", str(archive))[0] == 0
    wipe(settings.data_dir)

    with tarfile.open(archive) as tar:  # the same archive with one file's bytes changed
        members = [(m, tar.extractfile(m).read() if m.isfile() else None) for m in tar.getmembers()]
    tampered = tmp_path / "tampered.tar.gz"
    with tarfile.open(tampered, "w:gz") as tar:
        for member, data in members:
            if member.name == "kb-export/ledger.sqlite":
                data = data[:-1] + bytes([data[-1] ^ 0xFF])
            tar.addfile(member, io.BytesIO(data) if data is not None else None)
    status, _, err = run(capsys, "import", str(tampered))
    assert status == 1 and "ledger.sqlite: content differs from the manifest" in err

    foreign = tmp_path / "photos.tar.gz"
    foreign.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    status, _, err = run(capsys, "import", str(foreign))
    assert status == 1 and "not a knowledge-base export" in err

    status, _, err = run(capsys, "import", str(tmp_path / "missing.tar.gz"))
    assert status == 1 and "no such archive" in err
    assert not settings.ledger_path.exists() and siblings(settings) == []

    assert run(capsys, "import", str(archive))[0] == 0  # the good one still restores


def test_export_and_rebuild_wait_for_no_ingest(settings, tmp_path, capsys):
    KnowledgeBase(settings).close()
    with ingest_lock(settings.lock_path):
        status, _, err = run(capsys, "export", str(tmp_path / "kb.tar.gz"))
        assert status == 2 and "already running" in err
        status, _, err = run(capsys, "rebuild")
        assert status == 2 and "already running" in err
    assert not (tmp_path / "kb.tar.gz").exists()


def test_server_mode_is_refused_with_a_clear_message(settings, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("KB_CHROMA_URL", "http://127.0.0.1:9")
    for argv in (["export", str(tmp_path / "kb.tar.gz")], ["import", str(tmp_path / "kb.tar.gz")], ["rebuild"]):
        status, _, err = run(capsys, *argv)
        assert status == 2 and "backed up and restored with the server's own tools" in err, err


# --------------------------------------------------------------------------------------
# rebuild
# --------------------------------------------------------------------------------------


def test_rebuild_gives_the_same_chunk_ids_and_embeds_nothing_again(library, capsys):
    settings, brief_id = library
    before = content_state(settings)
    before_results = search_results(settings)
    status, out, _ = run(capsys, "rebuild", "--json")
    assert status == 0 and out["ok"], out
    assert out["documents"] == 4 and out["embedded"] == 0 and out["reused_vectors"] >= len(before["chunks"])
    assert out["failed"] == [] and out["dropped"] == []
    after = content_state(settings)
    for table in ("documents", "files", "pages", "chunks", "embeddings", "chroma"):
        assert after[table] == before[table], table
    assert [row[0] for row in after["chunks"]] == [row[0] for row in before["chunks"]]
    assert search_results(settings) == before_results
    assert (settings.briefs_dir / f"{brief_id}.json").is_file()
    assert siblings(settings) == []


def test_rebuild_follows_the_documents_folder_and_drops_stale_vectors(library, capsys):
    settings, _ = library
    (settings.documents_dir / "cocoa.pdf").unlink()
    topic, sentence = TOPICS[4]
    make_pdf(settings.documents_dir / f"{topic}.pdf", document_pages(topic, sentence))
    status, out, _ = run(capsys, "rebuild", "--json")
    assert status == 0
    files = {row[1] for row in content_state(settings)["files"]}
    assert files == {f"{topic}.pdf" for topic, _ in TOPICS[:5]} - {"cocoa.pdf"}
    assert out["embedded"] > 0  # the new report only
    state = content_state(settings)
    assert {row[0] for row in state["embeddings"]} == {row[-1] for row in state["chunks"]}


def test_a_failed_rebuild_leaves_the_old_knowledge_base(library, tmp_path, capsys, monkeypatch):
    settings, _ = library
    before = content_state(settings)

    empty = tmp_path / "empty-documents"  # a wrong KB_DOCUMENTS_DIR does not wipe the library
    empty.mkdir()
    monkeypatch.setenv("KB_DOCUMENTS_DIR", str(empty))
    status, _, err = run(capsys, "rebuild")
    assert status == 1 and "holds no PDF" in err and "4 documents" in err
    assert content_state(settings) == before
    monkeypatch.setenv("KB_DOCUMENTS_DIR", str(settings.documents_dir))

    def broken(kb):
        raise backup.BackupError("the rebuilt vector store does not match its ledger (simulated)")

    monkeypatch.setattr(backup, "_check_built", broken)
    status, _, err = run(capsys, "rebuild")
    assert status == 1 and "simulated" in err
    assert content_state(settings) == before
    assert siblings(settings) == []


def test_a_library_read_by_an_earlier_reader_is_told_to_rebuild(library, capsys):
    """A ledger made before the reading version was recorded (no column) is brought up to
    date when opened; its documents count as read by an earlier version, which `kb stats`
    and `kb ingest` say, until `kb rebuild` re-reads them (embedding nothing again here:
    the same PDFs give the same passages)."""
    import sqlite3

    from ingest.extract import TEXT_VERSION

    settings, _ = library
    with sqlite3.connect(settings.ledger_path) as db:
        db.execute("ALTER TABLE documents DROP COLUMN text_version")
    stats = Service(settings).stats()
    assert len(stats["read_by_older_version"]) == 4
    assert stats["older_version_note"].startswith("4 documents were read by an earlier version")
    status, out, _ = run(capsys, "stats")
    assert status == 0 and "kb rebuild" in out
    status, out, _ = run(capsys, "ingest")
    assert status == 0 and "4 unchanged" in out and "note: 4 documents" in out
    status, out, _ = run(capsys, "ingest", "--json")
    assert status == 0 and out["older_version_note"].startswith("4 documents")

    status, out, _ = run(capsys, "rebuild", "--json")
    assert status == 0 and out["ok"] and out["embedded"] == 0, out
    stats = Service(settings).stats()
    assert stats["read_by_older_version"] == [] and stats["older_version_note"] == ""
    assert {doc.text_version for doc in KnowledgeBase(settings).ledger.ready_documents()} == {TEXT_VERSION}
    status, out, _ = run(capsys, "stats")
    assert "kb rebuild" not in out


def test_two_processes_bringing_an_old_ledger_up_to_date_at_once(tmp_path, monkeypatch):
    """The app and `kb ingest` may open an old ledger at the same moment: the one that finds
    the column already added by the other carries on."""
    import sqlite3

    from kb.ledger import Ledger

    path = tmp_path / "ledger.sqlite"
    Ledger(path).close()
    with sqlite3.connect(path) as db:
        db.execute("ALTER TABLE documents DROP COLUMN text_version")
    columns = Ledger._columns

    def the_other_process_was_quicker(self, table):
        found = columns(self, table)
        if "text_version" not in found:
            with sqlite3.connect(path) as other:
                other.execute("ALTER TABLE documents ADD COLUMN text_version INTEGER NOT NULL DEFAULT 0")
        return found

    monkeypatch.setattr(Ledger, "_columns", the_other_process_was_quicker)
    ledger = Ledger(path)
    assert "text_version" in columns(ledger, "documents")
    ledger.close()
