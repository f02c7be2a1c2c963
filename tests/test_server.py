"""Server mode: with ``KB_CHROMA_URL`` set, ingest, search, ask and eval go through a real
Chroma server (``chroma run``) while the ledger stays in the data folder.  The server is
stopped and started again on the same folder and port: nothing is lost (same chunk ids,
same answers), and a client opened before the restart keeps working after it.  A second
data folder (another ledger) pointed at the same collection is refused, because its ingest
clean-up would delete vectors its ledger does not know.

The server runs with ``ANONYMIZED_TELEMETRY=False`` and the Hugging Face hub offline; it
needs no network (it only listens on 127.0.0.1)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, make_pdf

pytestmark = pytest.mark.slow  # a server start, three ingests' worth of model loading: ~1 min

CHROMA_CLI = Path(sys.executable).parent / "chroma"

SHELTERS = [
    "Shelters for survivors of trafficking in the northern provinces offered beds for ninety days. "
    "Caseworkers found that ninety days was too short for survivors who needed trauma counselling. "
    "Most survivors left the shelter before their court case against the recruiters had begun.",
    "The evaluation recommended extending shelter stays to six months for survivors who testify. "
    "Legal aid lawyers visited the shelter every week to prepare witnesses for the hearings.",
]
BRICK_KILNS = [
    "Families working in brick kilns borrowed money from the kiln owner before the firing season. "
    "The advance was repaid through deductions from piece-rate wages, so the debt grew every year. "
    "Labour inspectors rarely visited kilns located far from the district towns.",
    "A cash transfer to kiln families allowed them to repay the advance and leave debt bondage. "
    "Mobile schools at the kilns kept children in education during the firing season.",
]
VISAS = [
    "Domestic workers recruited through agencies abroad had their visas tied to a single employer. "
    "Changing employer required the written consent of the sponsor, which was seldom given. "
    "Embassies received complaints of unpaid wages and confiscated passports from domestic workers.",
    "Reforms that let domestic workers change employer without consent reduced abuse reports by a third.",
]
CATALOGUE = (
    "file,title,organisation,year,url,language\n"
    "shelters.pdf,Evaluation of Shelter Services for Survivors,IOM,2022,,\n"
    "kilns.pdf,Debt Bondage in Brick Kilns,ILO,2020,,\n"
    "visas.pdf,Sponsorship Visas and Domestic Work,UNODC,2024,,\n"
)
QUESTIONS = [
    {"id": "s1", "question": "How long could survivors stay in the shelters?", "kind": "fact",
     "answers": ["ninety days"], "sources": [{"file": "shelters.pdf", "pages": [1]}]},
    {"id": "s2", "question": "How did brick kiln families fall into debt bondage?", "kind": "fact",
     "answers": ["advance"], "sources": [{"file": "kilns.pdf", "pages": [1]}]},
    {"id": "s3", "question": "What reform reduced abuse of domestic workers on sponsorship visas?", "kind": "lesson",
     "answers": ["change employer"], "sources": [{"file": "visas.pdf", "pages": [2]}]},
    {"id": "s4", "question": "What is the boiling point of liquid nitrogen?", "kind": "unanswerable",
     "answers": [], "sources": []},
]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_client(port: int):
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    return chromadb.HttpClient(host="127.0.0.1", port=port, settings=ChromaSettings(anonymized_telemetry=False))


class ChromaServer:
    """One ``chroma run`` process on a folder and a fixed port; can be stopped and restarted."""

    def __init__(self, path: Path, log_path: Path):
        self.path = path
        self.log_path = log_path
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.env = {**os.environ, "ANONYMIZED_TELEMETRY": "False", "HF_HUB_OFFLINE": "1"}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0) -> None:
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [str(CHROMA_CLI), "run", "--path", str(self.path), "--host", "127.0.0.1", "--port", str(self.port)],
            stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"chroma run exited with {self.process.returncode}:\n{self.log()}")
            try:
                http_client(self.port).heartbeat()
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no heartbeat from chroma run after {timeout} s:\n{self.log()}") from None
                time.sleep(0.3)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=20)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""


@pytest.fixture(scope="module")
def chroma_server(tmp_path_factory):
    if not CHROMA_CLI.is_file():
        pytest.skip(f"the chroma command is not at {CHROMA_CLI}")
    folder = tmp_path_factory.mktemp("chroma-server")
    server = ChromaServer(folder / "db", folder / "server.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def server_settings(settings, chroma_server, monkeypatch, request):
    """Settings whose vectors live on the test server, one collection per test."""
    from kb.settings import get_settings

    monkeypatch.setenv("KB_CHROMA_URL", chroma_server.url)
    monkeypatch.setenv("KB_COLLECTION", f"passages-{request.node.name[:40]}".replace("_", "-"))
    documents = settings.documents_dir
    make_pdf(documents / "shelters.pdf", SHELTERS)
    make_pdf(documents / "kilns.pdf", BRICK_KILNS)
    make_pdf(documents / "visas.pdf", VISAS)
    (documents / "catalogue.csv").write_text(CATALOGUE, encoding="utf-8")
    return get_settings()


def _answer_key(answer) -> tuple:
    return (answer.answer, answer.abstained, tuple((c.doc_id, c.page, c.quote) for c in answer.citations))


def test_ingest_ask_eval_through_server_survive_restart(server_settings, chroma_server, tmp_path):
    from kb.evaluate import run_eval
    from kb.service import Service
    from kb.snapshot import Filters

    settings = server_settings
    assert settings.chroma_url == chroma_server.url
    service = Service(settings)
    report = service.ingest()
    assert report.summary()["added"] == 3 and not report.failed

    # The vectors are on the server; the data folder holds the ledger but no Chroma folder.
    assert not settings.chroma_dir.exists()
    assert service.stats()["chroma"] == chroma_server.url
    visible = sorted(row["chunk_id"] for row in service.kb.ledger.visible_chunk_rows())
    remote = http_client(chroma_server.port).get_collection(settings.collection, embedding_function=None)
    stored = remote.get(include=["metadatas", "documents"])
    assert sorted(stored["ids"]) == visible and len(visible) >= 3
    assert all(meta["organisation"] in {"IOM", "ILO", "UNODC"} for meta in stored["metadatas"])
    assert not any(stored["documents"])  # vectors and filter metadata only: texts live in the ledger

    # ask: unfiltered (dense side from the server's HNSW) and filtered (exact, in memory)
    answer = service.ask("How long could survivors stay in the shelters?")
    assert not answer.abstained and "ninety days" in answer.answer
    assert answer.citations[0].file == "shelters.pdf"
    filtered = service.ask("How did families fall into debt?", filters=Filters(organisations=["ILO"]))
    assert filtered.citations and {c.file for c in filtered.citations} == {"kilns.pdf"}
    top = service.search("sponsorship visas tied to one employer", k=3)
    assert top[0].document.file == "visas.pdf" and top[0].dense_rank is not None

    # eval through the server
    result = run_eval(service, QUESTIONS, k=5)
    assert result["recall@5"] == 1.0
    assert result["abstain_unanswerable"] == 1.0

    before_ids = sorted(remote.get(include=[])["ids"])
    before = {q["question"]: _answer_key(service.ask(q["question"])) for q in QUESTIONS}

    # Stop the server: the data it persisted is all there is.  Start it again.
    chroma_server.stop()
    with pytest.raises(Exception):
        http_client(chroma_server.port).heartbeat()
    # Meanwhile filtered questions still work: they search the vectors held in memory.
    assert _answer_key(service.ask(QUESTIONS[1]["question"], filters=Filters(organisations=["ILO"])))[0]
    chroma_server.start()

    # A fresh service (as after an app restart) and the one opened before both see it all.
    after_remote = http_client(chroma_server.port).get_collection(settings.collection, embedding_function=None)
    assert sorted(after_remote.get(include=[])["ids"]) == before_ids
    fresh = Service(settings)
    for question, key in before.items():
        assert _answer_key(fresh.ask(question)) == key
        assert _answer_key(service.ask(question)) == key  # its HTTP client reconnects

    # A re-run of ingest finds everything unchanged and embeds nothing.
    again = fresh.ingest()
    assert again.summary()["unchanged"] == 3 and again.embedded == 0

    # The command line honours KB_CHROMA_URL as well: `kb eval` on the restarted server.
    questions_path = tmp_path / "questions.jsonl"
    questions_path.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS), encoding="utf-8")
    env = {**os.environ, "KB_CHROMA_URL": chroma_server.url, "KB_DATA_DIR": str(settings.data_dir),
           "KB_COLLECTION": settings.collection, "KB_DOCUMENTS_DIR": str(settings.documents_dir)}
    run = subprocess.run(
        [sys.executable, "-m", "kb.cli", "eval", str(questions_path), "--k", "5", "--json"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    figures = json.loads(run.stdout)
    assert figures["recall@5"] == result["recall@5"] and figures["recall@1"] == result["recall@1"]


def test_second_ledger_cannot_take_over_a_served_collection(server_settings, chroma_server, tmp_path):
    """Two data folders on one collection would delete each other's vectors: refused."""
    from dataclasses import replace

    from kb.knowledge_base import KnowledgeBase
    from kb.service import Service
    from kb.store import StoreOwnershipError

    settings = server_settings
    assert Service(settings).ingest().summary()["added"] == 3
    remote = http_client(chroma_server.port).get_collection(settings.collection, embedding_function=None)
    count = remote.count()

    intruder = KnowledgeBase(replace(settings, data_dir=tmp_path / "another-data-folder"))
    with pytest.raises(StoreOwnershipError, match="belongs to another ledger"):
        intruder.store.count()
    assert remote.count() == count

    # Another instance on the same data folder (the supported set-up) shares it freely,
    # and sees a document as soon as the ledger makes it visible.
    colleague = Service(settings)
    assert colleague.kb.store.count() == count
    assert colleague.search("brick kiln advance", k=1)[0].document.file == "kilns.pdf"
    assert remote.count() == count

    # The server goes down in the middle of an ingest: nothing becomes visible, and the
    # next ingest (server back) cleans up and completes.
    make_pdf(settings.documents_dir / "late.pdf", ["Labour inspectors in the garment sector found locked fire exits."])
    chroma_server.stop()
    with pytest.raises(Exception):
        colleague.ingest()
    assert colleague.stats()["documents"] == 3
    chroma_server.start()
    report = colleague.ingest()
    assert report.summary()["added"] == 1 and report.summary()["unchanged"] == 3
    assert not colleague.kb.ledger.pending_documents()
    visible = sorted(row["chunk_id"] for row in colleague.kb.ledger.visible_chunk_rows())
    remote = http_client(chroma_server.port).get_collection(settings.collection, embedding_function=None)
    assert sorted(remote.get(include=[])["ids"]) == visible
