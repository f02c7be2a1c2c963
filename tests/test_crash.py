"""Kill ``kb ingest`` at random moments, over and over, changing the documents folder
between runs; then let one run finish and compare the knowledge base with one built by a
single uninterrupted run: the same chunk ids in Chroma, the same ledger rows, the same
keyword terms.

The moments are seeded: some fall in the first seconds (start-up, repair, model load),
some at a random time, and most just after the ingest has committed something to the
ledger (so they land inside embedding, Chroma writes and ledger transactions, whatever
the speed of the machine)."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, make_pdf

pytestmark = pytest.mark.slow

SEED = 1234
MIN_KILLS = 20
MAX_RUNS = 45
DOCUMENTS = 8

SUBJECTS = [
    "Labour inspectors", "Border officials", "Shelter staff", "Prosecutors", "Community volunteers",
    "Social workers", "Police investigators", "Recruitment agencies", "Fishing crews", "Trade unions",
]
VERBS = ["reported", "identified", "documented", "referred", "interviewed", "monitored", "assisted", "supported"]
OBJECTS = [
    "migrant workers with unpaid wages", "children working on cocoa farms", "victims of debt bondage",
    "women recruited through online advertisements", "crew members held on distant-water vessels",
    "domestic workers whose passports were confiscated", "survivors awaiting compensation",
    "families affected by forced begging", "seasonal labourers in construction",
]
PLACES = ["in the northern provinces", "at the main seaport", "along the eastern border", "in three districts",
          "during the second quarter", "in the capital", "across the region", "at two transit centres"]


def kb_script() -> Path:
    script = Path(sys.executable).with_name("kb")
    if not script.is_file():
        script = REPO / ".venv" / "bin" / "kb"
    if not script.is_file():
        pytest.skip("the kb console script is not installed")
    return script


def document_pages(number: int, version: int) -> list[str]:
    """Pages of report ``number`` in ``version``: different text for every pair."""
    rng = random.Random(number * 1000 + version)
    pages = []
    for page in range(1, rng.randint(5, 8) + 1):
        paragraphs = []
        for k in range(3):
            sentences = " ".join(
                f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(PLACES)}."
                for _ in range(rng.randint(3, 5))
            )
            paragraphs.append(f"Report {number} version {version}, case {page}.{k}: {sentences}")
        pages.append("\n".join(paragraphs))
    return pages


def write_document(folder: Path, number: int, version: int) -> None:
    make_pdf(folder / f"report-{number:02d}.pdf", document_pages(number, version), footer="Page {n}")


# --------------------------------------------------------------------------------------
# running and killing
# --------------------------------------------------------------------------------------


def environment(data_dir: Path) -> dict[str, str]:
    env = {**os.environ, "KB_DATA_DIR": str(data_dir), "KB_CHROMA_URL": "", "KB_LLM": ""}
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


def start(script: Path, folder: Path, data_dir: Path, log: Path) -> subprocess.Popen:
    with log.open("ab") as handle:
        return subprocess.Popen(
            [str(script), "ingest", str(folder), "--json"],
            env=environment(data_dir), stdout=handle, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the extraction worker dies with it
        )


def kill(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=30)


def ledger_signature(data_dir: Path) -> tuple:
    """Changes whenever the ingest commits to the ledger (WAL file size and time)."""
    signature = []
    for name in ("ledger.sqlite", "ledger.sqlite-wal"):
        try:
            stat = (data_dir / name).stat()
            signature.append((stat.st_size, stat.st_mtime_ns))
        except FileNotFoundError:
            signature.append(None)
    return tuple(signature)


def run_and_kill(script, folder, data_dir, log, rng: random.Random) -> tuple[bool, str]:
    """Start an ingest and SIGKILL it at a seeded random moment.  Returns whether it was
    killed (it may finish first) and how the moment was chosen."""
    mode = rng.choices(["early", "time", "commit"], weights=[3, 3, 4])[0]
    delay = rng.uniform(0.0, 3.0) if mode == "early" else rng.uniform(0.0, 8.0)
    commits, after = rng.randint(1, 6), rng.uniform(0.0, 0.6)
    process = start(script, folder, data_dir, log)
    started = time.monotonic()
    if mode == "commit":
        last, seen = ledger_signature(data_dir), 0
        while seen < commits and process.poll() is None and time.monotonic() - started < 180:
            time.sleep(0.02)
            now = ledger_signature(data_dir)
            if now != last:
                seen, last = seen + 1, now
        time.sleep(after)
        moment = f"{after:.2f} s after commit {seen}"
    else:
        while process.poll() is None and time.monotonic() - started < delay:
            time.sleep(0.02)
        moment = f"{delay:.2f} s after start"
    if process.poll() is not None:
        note = f"finished before {moment} (exit {process.returncode}, {time.monotonic() - started:.1f} s)"
        if process.returncode != 0:  # a run left alone must succeed: every file here is good
            note += "\n" + "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        return False, note
    kill(process)
    return True, f"killed {moment} ({time.monotonic() - started:.1f} s)"


def run_to_completion(script, folder, data_dir, log) -> dict:
    process = subprocess.run(
        [str(script), "ingest", str(folder), "--json"],
        env=environment(data_dir), capture_output=True, text=True, timeout=600,
    )
    with log.open("a") as handle:
        handle.write(process.stdout + process.stderr)
    assert process.returncode == 0, f"ingest failed (exit {process.returncode}):\n{process.stderr[-3000:]}"
    return json.loads(process.stdout)


# --------------------------------------------------------------------------------------
# what the knowledge base holds
# --------------------------------------------------------------------------------------


def ledger_state(data_dir: Path) -> dict[str, list]:
    db = sqlite3.connect(data_dir / "ledger.sqlite")
    try:
        return {
            "documents": sorted(db.execute(
                "SELECT doc_id, file, title, organisation, year, url, language, pages, chunks, status, warnings "
                "FROM documents")),
            "files": sorted(db.execute("SELECT path, name, doc_id, size, status, reason FROM files")),
            "pages": sorted(db.execute("SELECT doc_id, idx, label, text FROM pages")),
            "chunks": sorted(tuple(row) for row in db.execute("SELECT * FROM chunks")),
            "chunk columns": [row[1] for row in db.execute("PRAGMA table_info(chunks)")],
            "terms": sorted(db.execute("SELECT chunk_id, terms FROM chunks")),
            "embedding keys": sorted(r[0] for r in db.execute("SELECT key FROM embeddings")),
            "chunk keys": sorted(r[0] for r in db.execute("SELECT embedding_key FROM chunks")),
            "meta": dict(db.execute("SELECT key, value FROM meta WHERE key='dirty'")),
        }
    finally:
        db.close()


def chunk_differences(crashed: dict, clean: dict) -> list[str]:
    """Column by column, what differs between the chunk rows of two ledgers."""
    columns = clean["chunk columns"]
    mine = {row[0]: row for row in crashed["chunks"]}
    theirs = {row[0]: row for row in clean["chunks"]}
    found = [f"only after the kills: {cid}" for cid in sorted(set(mine) - set(theirs))]
    found += [f"only in the clean run: {cid}" for cid in sorted(set(theirs) - set(mine))]
    for cid in sorted(set(mine) & set(theirs)):
        for name, a, b in zip(columns, mine[cid], theirs[cid]):
            if a != b:
                found.append(f"{cid} {name}: {a!r:.120} (after kills) != {b!r:.120} (clean)")
    return found


def chroma_state(data_dir: Path) -> dict[str, str]:
    """Chunk id → document id of every vector in the Chroma collection."""
    from kb.settings import get_settings
    from kb.store import VectorStore

    store = VectorStore(get_settings(data_dir=data_dir, chroma_url=""))
    stored = store.collection.get(include=["metadatas"])
    return {cid: meta["doc_id"] for cid, meta in zip(stored["ids"], stored["metadatas"])}


def keyword_vocabulary(data_dir: Path) -> set[str]:
    from kb.knowledge_base import KnowledgeBase
    from kb.settings import get_settings
    from kb.snapshot import Snapshot

    kb = KnowledgeBase(get_settings(data_dir=data_dir, chroma_url=""))
    try:
        snapshot = Snapshot(kb)  # needs a cached vector for every visible chunk
        assert snapshot.vectors.shape[0] == len(snapshot.chunks)
        return set(snapshot.keyword.vocabulary)
    finally:
        kb.close()


# --------------------------------------------------------------------------------------
# the test
# --------------------------------------------------------------------------------------


def test_killed_ingests_resume_to_the_same_knowledge_base(tmp_path):
    script = kb_script()
    rng = random.Random(SEED)
    folder, stash = tmp_path / "documents", tmp_path / "stash"
    folder.mkdir()
    stash.mkdir()
    crashed, clean = tmp_path / "crashed", tmp_path / "clean"
    versions = {n: 0 for n in range(DOCUMENTS)}
    for n in range(DOCUMENTS):
        write_document(folder, n, 0)

    logs = tmp_path / "logs"
    logs.mkdir()
    history: list[str] = []
    failures: list[str] = []
    kills = runs = 0
    started = time.monotonic()
    while kills < MIN_KILLS and runs < MAX_RUNS:
        if runs:  # change the folder so that every run has work to do: new versions, removals, returns
            for n in rng.sample(range(DOCUMENTS), rng.randint(1, 2)):
                versions[n] += 1
                if (folder / f"report-{n:02d}.pdf").exists():
                    write_document(folder, n, versions[n])
            present = sorted(folder.glob("*.pdf"))
            stashed = sorted(stash.glob("*.pdf"))
            if stashed and rng.random() < 0.5:
                shutil.move(str(stashed[0]), folder / stashed[0].name)
            elif len(present) > DOCUMENTS - 2 and rng.random() < 0.4:
                victim = rng.choice(present)
                shutil.move(str(victim), stash / victim.name)
        run_log = logs / f"run-{runs:02d}.log"
        killed, note = run_and_kill(script, folder, crashed, run_log, rng)
        runs += 1
        kills += killed
        history.append(f"run {runs}: {note}")
        if not killed and "exit 0" not in note:
            failures.append(history[-1])
    assert kills >= MIN_KILLS, f"only {kills} kills in {runs} runs:\n" + "\n".join(history)
    loop_seconds = time.monotonic() - started
    log = logs / "complete.log"

    final = run_to_completion(script, folder, crashed, log)
    assert final["summary"]["failed"] == 0
    reference = run_to_completion(script, folder, clean, log)
    assert reference["summary"]["failed"] == 0
    assert reference["repaired"] == []
    context = f"after {kills} kills in {runs} runs ({loop_seconds:.0f} s):\n" + "\n".join(history)

    crashed_ledger, clean_ledger = ledger_state(crashed), ledger_state(clean)
    assert crashed_ledger["meta"] == clean_ledger["meta"] == {"dirty": "0"}
    for table in ("documents", "files", "pages", "terms"):
        assert crashed_ledger[table] == clean_ledger[table], f"ledger {table} differ {context}"
    differences = chunk_differences(crashed_ledger, clean_ledger)
    assert not differences, "ledger chunks differ:\n" + "\n".join(differences[:10]) + f"\n{context}"
    assert len(clean_ledger["documents"]) == len(list(folder.glob("*.pdf")))
    assert all(row[9] == "ready" for row in crashed_ledger["documents"])
    assert set(crashed_ledger["chunk keys"]) <= set(crashed_ledger["embedding keys"]), "a chunk has no cached vector"

    crashed_chroma, clean_chroma = chroma_state(crashed), chroma_state(clean)
    assert set(crashed_chroma) == set(clean_chroma), f"Chroma ids differ {context}"
    assert crashed_chroma == clean_chroma
    assert set(clean_chroma) == {row[0] for row in clean_ledger["chunks"]}

    assert keyword_vocabulary(crashed) == keyword_vocabulary(clean)
    print(f"\n{context}\nfinal run {final['summary']}\nclean run {reference['summary']}")

    # and a further run finds nothing to do
    again = run_to_completion(script, folder, crashed, log)
    assert again["summary"]["embedded"] == 0 and again["repaired"] == []
    assert {r["status"] for r in again["files"]} == {"unchanged"}

    assert not failures, "an ingest started after a kill failed by itself:\n" + "\n\n".join(failures)
