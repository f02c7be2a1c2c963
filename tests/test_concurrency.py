"""Queries while ingestion writes, two ingests at once, and the app's upload path killed
at random moments.

* Searches and answers run in threads of the process that ingests (the app shares one
  ``Service`` between its sessions and its staff page) and in a separate process while
  ``kb ingest`` writes: no errors, and a document is never seen half-ingested: every
  document that appears in a result is ``ready`` in the ledger with all its chunks, and
  every snapshot the searcher reads holds either all of a document's chunks or none.
* Two ``kb ingest`` processes on one data folder: the second is refused at once with exit
  code 2 and "already running"; the first finishes undisturbed.
* (slow) A process that saves an upload into the documents folder and ingests it, as the
  app's staff page does (``kb.uploads``), is SIGKILLed at seeded random moments; one more
  sync then leaves a knowledge base identical to one built by a single clean run.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import REPO, make_pdf
from kb.backup import content_state
from kb.service import Service

TOPICS = [
    ("fisheries", "Fishers on distant-water vessels had their wages withheld and passports confiscated by captains."),
    ("cocoa", "Children used machetes and carried heavy loads on cocoa farms during the harvest season."),
    ("online", "Traffickers advertised fake modelling jobs on social media and forced victims to run scams."),
    ("domestic", "Domestic workers were locked inside employers' homes and denied their monthly day off."),
    ("brick-kilns", "Families in brick kilns were bound by advance payments that grew with every season."),
    ("construction", "Construction labourers paid recruitment fees and lived in crowded camps near the sites."),
    ("begging", "Children were forced to beg at traffic junctions and hand over their earnings every night."),
    ("garments", "Garment factory workers faced locked exits, unpaid overtime and confiscated identity cards."),
]
QUERIES = [
    "wages withheld on fishing vessels", "children on cocoa farms", "fake job offers on social media",
    "domestic workers locked in homes", "debt bondage in brick kilns", "recruitment fees for construction workers",
    "forced begging at junctions", "garment factory overtime",
]


def document_pages(topic: str, sentence: str, pages: int = 3) -> list[str]:
    """Pages that differ from each other in every line (repeated lines are dropped as
    headers and footers), long enough for a document to make several chunks."""
    places = ["the northern province", "the main seaport", "the eastern border", "the capital", "two districts"]
    actors = ["Labour inspectors", "Social workers", "Police investigators", "Community volunteers", "Prosecutors"]
    result = []
    for page in range(1, pages + 1):
        paragraphs = [
            f"Case {page}.{k} of the {topic} review took place in {places[(page + k) % len(places)]}. {sentence} "
            f"{actors[(page * 3 + k) % len(actors)]} interviewed {page * 7 + k * 3 + 3} people away from their "
            f"employers and referred {page + k + 2} of them to shelters and legal aid. Follow-up visit {page}.{k} "
            f"is planned for month {page + k + 4}, when the {topic} team will check wages, documents and housing."
            for k in range(3)
        ]
        result.append("\n".join(paragraphs))
    return result


def write_documents(folder: Path, count: int = len(TOPICS)) -> None:
    for topic, sentence in TOPICS[:count]:
        make_pdf(folder / f"{topic}.pdf", document_pages(topic, sentence), title=f"Report on {topic}")


def shared_models(data_dir: Path, base: Path) -> None:
    shared = base / "shared-models"
    shared.mkdir(exist_ok=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    if not (data_dir / "models").exists():
        (data_dir / "models").symlink_to(shared, target_is_directory=True)


def kb_script() -> Path:
    script = Path(sys.executable).with_name("kb")
    if not script.is_file():
        pytest.skip("the kb console script is not installed")
    return script


def environment(data_dir: Path, documents: Path) -> dict[str, str]:
    return {**os.environ, "KB_DATA_DIR": str(data_dir), "KB_DOCUMENTS_DIR": str(documents), "KB_CHROMA_URL": "",
            "KB_LLM": "", "HF_HUB_OFFLINE": "1"}


class Observer:
    """Checks what queries return against the ledger, through its own connection
    (committed data only), and counts what it saw."""

    def __init__(self, ledger: Path):
        self.ledger = ledger
        self.errors: list[str] = []
        self.generations: set[int] = set()
        self.documents_seen: set[int] = set()
        self.queries = 0
        self._lock = threading.Lock()

    def _complete(self, doc_ids: set[str]) -> list[str]:
        problems = []
        db = sqlite3.connect(f"file:{self.ledger}?mode=ro", uri=True, timeout=30)
        try:
            for doc_id in doc_ids:
                row = db.execute("SELECT status, chunks FROM documents WHERE doc_id=?", (doc_id,)).fetchone()
                stored = db.execute("SELECT COUNT(*) FROM chunks WHERE doc_id=?", (doc_id,)).fetchone()[0]
                if row is None or row[0] != "ready" or stored != row[1]:
                    problems.append(f"{doc_id[:12]} seen while {row} with {stored} chunks stored")
        finally:
            db.close()
        return problems

    def check_snapshot(self, snapshot) -> None:
        counts: dict[str, int] = {}
        for chunk in snapshot.chunks:
            counts[chunk.doc_id] = counts.get(chunk.doc_id, 0) + 1
        half = [f"{d[:12]}: {counts.get(d, 0)} of {doc.chunks}" for d, doc in snapshot.documents.items()
                if counts.get(d, 0) != doc.chunks]
        with self._lock:
            self.generations.add(snapshot.generation)
            self.documents_seen.add(len(snapshot.documents))
            if half:
                self.errors.append(f"a snapshot holds part of a document: {half}")

    def check_results(self, doc_ids: set[str]) -> None:
        problems = self._complete(doc_ids)
        with self._lock:
            self.queries += 1
            self.errors.extend(problems)

    def error(self, text: str) -> None:
        with self._lock:
            self.errors.append(text)


def query_loop(service: Service, observer: Observer, stop: threading.Event, offset: int) -> None:
    n = offset
    while not stop.is_set():
        query = QUERIES[n % len(QUERIES)]
        n += 1
        try:
            observer.check_snapshot(service.searcher.snapshot())
            if n % 3 == 0:
                answer = service.ask(query)
                seen = {c.doc_id for c in answer.citations + answer.related}
            else:
                seen = {p.document.doc_id for p in service.search(query, k=5)}
            observer.check_results(seen)
            time.sleep(0.01)
        except Exception as error:  # any error while ingest writes is a failure
            observer.error(f"{type(error).__name__}: {error}")
            time.sleep(0.1)


def test_queries_in_threads_while_the_same_service_ingests(settings, tmp_path_factory):
    folder = settings.documents_dir
    write_documents(folder)
    shared_models(settings.data_dir, tmp_path_factory.getbasetemp())
    service = Service(settings)
    service.kb.query_embedder.embed(["warm up"])  # the model loads before the race starts
    assert service.search("anything") == []
    observer = Observer(settings.ledger_path)
    stop = threading.Event()
    threads = [threading.Thread(target=query_loop, args=(service, observer, stop, i)) for i in range(2)]
    for thread in threads:
        thread.start()
    try:
        report = service.ingest([folder])
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=120)
    assert report.count("added") == len(TOPICS) and report.chunks >= len(TOPICS)
    assert observer.errors == []
    assert observer.queries > 5
    assert len(observer.generations) >= 2, "no query ran while the ingest wrote"
    final = service.search(QUERIES[0], k=1)[0]
    assert final.document.file == "fisheries.pdf"
    print(f"\n{observer.queries} queries; snapshots of {sorted(observer.documents_seen)} documents seen")


def test_queries_in_another_process_while_kb_ingest_writes(settings, tmp_path_factory):
    script = kb_script()
    folder = settings.documents_dir
    write_documents(folder)
    shared_models(settings.data_dir, tmp_path_factory.getbasetemp())
    service = Service(settings)  # opened before the ingest starts, as a running app would be
    service.kb.query_embedder.embed(["warm up"])
    assert service.search("anything") == []
    observer = Observer(settings.ledger_path)
    process = subprocess.Popen([str(script), "ingest", str(folder), "--json"], env=environment(settings.data_dir, folder),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stop = threading.Event()
    thread = threading.Thread(target=query_loop, args=(service, observer, stop, 0))
    thread.start()
    try:
        out, err = process.communicate(timeout=900)
    finally:
        stop.set()
        thread.join(timeout=120)
    assert process.returncode == 0, err[-3000:]
    assert json.loads(out)["summary"]["added"] == len(TOPICS)
    assert observer.errors == []
    assert len(observer.generations) >= 2, "no query ran while the ingest wrote"
    # and this process, opened before, now sees everything the other one wrote
    assert {p.document.file for p in service.search(QUERIES[2], k=3)} >= {"online.pdf"}
    assert len(service.searcher.snapshot().documents) == len(TOPICS)


def test_two_ingests_at_once_one_is_refused(settings):
    script = kb_script()
    folder = settings.documents_dir
    write_documents(folder, 4)
    env = environment(settings.data_dir, folder)
    first = subprocess.Popen([str(script), "ingest", "--json"], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:  # wait until the first one holds the lock
            assert first.poll() is None, first.communicate()
            if settings.lock_path.exists():
                with settings.lock_path.open("a+") as handle:
                    try:
                        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        fcntl.flock(handle, fcntl.LOCK_UN)
                    except BlockingIOError:
                        break
            time.sleep(0.05)
        second = subprocess.run([str(script), "ingest"], env=env, capture_output=True, text=True, timeout=300)
        still_running = first.poll() is None
        out, err = first.communicate(timeout=900)
    finally:
        if first.poll() is None:
            first.kill()
    assert still_running, "the first ingest finished before the second started; the test proved nothing"
    assert second.returncode == 2
    assert "already running" in second.stderr and "wait for it to finish" in second.stderr
    assert second.stdout == ""
    assert first.returncode == 0, err[-3000:]
    assert json.loads(out)["summary"]["added"] == 4


# --------------------------------------------------------------------------------------
# the app's upload path, killed at random moments
# --------------------------------------------------------------------------------------

UPLOAD_SEED = 4321
MIN_KILLS = 20
MAX_RUNS = 40
UPLOAD_NAMES = ["fisheries.pdf", "cocoa.pdf", "online.pdf", "domestic.pdf"]

# What the app's staff page does with an upload (app_pages/library.py): check and save it
# into the documents folder with kb.uploads, then ingest the saved path.  Markers on stdout
# let the test aim its kills.
UPLOADER = r"""
import json, sys
from pathlib import Path
from kb import uploads
from kb.service import Service
from kb.settings import get_settings

plan = json.loads(Path(sys.argv[1]).read_text())
settings = get_settings()
service = Service(settings)
if plan["sync"]:
    report = service.ingest([settings.documents_dir])
    print(json.dumps({"sync": report.summary(), "repaired": report.repaired}), flush=True)
    sys.exit(0)
service.kb.query_embedder.embed(["warm up"])
print("ready", flush=True)
for name, source in plan["uploads"]:
    data = Path(source).read_bytes()
    folder = settings.documents_dir
    known = {r["doc_id"]: r["file"] for r in service.library() if r["doc_id"] and r["status"] == "ready"}
    replace_name = name if (folder / name).exists() else None
    print("saving", flush=True)
    results = uploads.accept_uploads([(name, data)], folder, max_bytes=uploads.max_upload_bytes(settings),
                                     known=known, replace_name=replace_name)
    saved = [r.path for r in results if r.status == "saved" and r.path is not None]
    print("ingesting", flush=True)
    if saved:
        service.ingest(saved)
    print("uploaded", flush=True)
print("finished", flush=True)
"""


def upload_versions(stash: Path) -> dict[tuple[str, int], Path]:
    """Three versions of each uploadable report, made once."""
    versions = {}
    for name in UPLOAD_NAMES:
        topic = name[:-4]
        sentence = dict(TOPICS)[topic]
        for version in range(3):
            path = stash / f"{topic}-v{version}.pdf"
            make_pdf(path, document_pages(f"{topic} version {version}", sentence, pages=2 + version))
            versions[(name, version)] = path
    return versions


def run_uploader(plan: dict, work: Path, data_dir: Path, documents: Path, rng: random.Random | None):
    """Run the uploader; with ``rng``, SIGKILL it at a seeded moment.  Returns (killed, note)."""
    plan_path = work / f"plan-{time.time_ns()}.json"
    plan_path.write_text(json.dumps(plan))
    process = subprocess.Popen([sys.executable, "-c", UPLOADER, str(plan_path)], cwd=REPO,
                               env=environment(data_dir, documents), stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    if rng is None:
        out, _ = process.communicate(timeout=900)
        assert process.returncode == 0, out
        return False, out
    mode = rng.choice(["saving", "saving", "ingesting", "ingesting", "uploaded", "ready"])
    occurrence = rng.randint(1, len(plan["uploads"]))
    delay = rng.choice([0.0, rng.uniform(0, 0.02), rng.uniform(0, 0.5), rng.uniform(0, 3.0)])
    seen = 0
    for line in process.stdout:
        if line.strip() == mode:
            seen += 1
            if seen >= occurrence or mode == "ready":
                break
    time.sleep(delay)
    if process.poll() is not None:
        process.wait()
        return False, f"finished before the kill ({mode} #{occurrence} + {delay:.3f} s)"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    process.stdout.close()
    return True, f"killed at {mode} #{occurrence} + {delay:.3f} s"


def comparable(state: dict) -> dict:
    """A knowledge base's content without its history: the keys of the cached vectors in
    use (a killed run may leave vectors of texts it never stored; and a text embedded in
    another batch may differ in the last bits), Chroma's ids, metadata and texts, and the
    dirty flag."""
    used = {row[-1] for row in state["chunks"]}  # embedding_key is the last column
    result = {table: rows for table, rows in state.items() if table not in {"embeddings", "meta", "chroma"}}
    result["embeddings"] = [row[0] for row in state["embeddings"] if row[0] in used]
    result["chroma"] = [row[:3] for row in state["chroma"]]
    result["meta"] = [row for row in state["meta"] if row[0] == "dirty"]
    return result


@pytest.mark.slow
def test_killed_uploads_leave_the_same_knowledge_base_as_a_clean_run(tmp_path):
    rng = random.Random(UPLOAD_SEED)
    documents, stash = tmp_path / "documents", tmp_path / "stash"
    documents.mkdir()
    stash.mkdir()
    crashed, clean = tmp_path / "crashed", tmp_path / "clean"
    shared_models(crashed, tmp_path)
    versions = upload_versions(stash)
    kills = runs = 0
    history = []
    while kills < MIN_KILLS and runs < MAX_RUNS:
        uploads = [(name, str(versions[(name, rng.randrange(3))])) for name in rng.sample(UPLOAD_NAMES, rng.randint(1, 3))]
        killed, note = run_uploader({"sync": False, "uploads": uploads}, tmp_path, crashed, documents, rng)
        kills += killed
        runs += 1
        history.append(note)
    context = f"after {kills} kills in {runs} runs:\n" + "\n".join(history)
    assert kills >= MIN_KILLS, context

    # Whatever the kills left in the documents folder is whole: every PDF is one of the versions.
    whole = {path.read_bytes() for path in versions.values()}
    present = sorted(documents.glob("*.pdf"))
    assert present and all(path.read_bytes() in whole for path in present), context
    leftovers = sorted(p.name for p in documents.iterdir() if p.name.startswith("."))

    _, out = run_uploader({"sync": True, "uploads": []}, tmp_path, crashed, documents, None)
    assert json.loads(out.strip().splitlines()[-1])["sync"]["failed"] == 0
    _, out = run_uploader({"sync": True, "uploads": []}, tmp_path, clean, documents, None)
    reference = json.loads(out.strip().splitlines()[-1])
    assert reference["sync"]["failed"] == 0 and reference["repaired"] == []

    from kb.settings import get_settings

    after = comparable(content_state(get_settings(data_dir=crashed, chroma_url="")))
    expected = comparable(content_state(get_settings(data_dir=clean, chroma_url="")))
    for table in expected:
        assert after[table] == expected[table], f"{table} differ {context}"
    assert len(expected["documents"]) == len(present)
    print(f"\n{context}\nleft in the documents folder by killed saves: {leftovers or 'nothing'}")
