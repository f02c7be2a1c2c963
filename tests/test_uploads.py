"""Getting files into the documents folder safely (kb.uploads) and the staff password
with its rate limit (kb.staff): no UI involved."""

from __future__ import annotations

import http.server
import os
import threading
import time
from pathlib import Path

import pytest

from conftest_app import LIBRARY, build_library, make_pdf
from kb import staff, uploads
from kb.uploads import UploadError

HTML = b"<!DOCTYPE html><html><body>Not a report</body></html>"


@pytest.fixture
def pdf_bytes(tmp_path) -> bytes:
    return make_pdf(tmp_path / "source" / "report.pdf", ["Shelters for survivors of trafficking need long-term funding."]).read_bytes()


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# --------------------------------------------------------------------------------------
# names
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("report.pdf", "report.pdf"),
        ("Report (2020) final.PDF", "Report (2020) final.pdf"),
        ("../../etc/passwd", "passwd.pdf"),
        ("/etc/cron.d/evil.pdf", "evil.pdf"),
        ("..\\..\\windows\\evil.pdf", "evil.pdf"),
        ("C:\\Users\\me\\report.pdf", "report.pdf"),
        ("a\x00b.pdf", "ab.pdf"),
        (".hidden.pdf", "hidden.pdf"),
        ("..", "document.pdf"),
        ("", "document.pdf"),
        ("...pdf", "document.pdf"),
        ("<script>alert(1)</script>.pdf", "script.pdf"),
        ("<b>bold</b> &amp; `code`.pdf", "b_amp_code.pdf"),
        ("x<y>z|q?.pdf", "x_y_z_q.pdf"),
        ("line\nbreak.pdf", "linebreak.pdf"),
        ("-rf.pdf", "rf.pdf"),
        ("Évaluation_rapport.pdf", "Évaluation_rapport.pdf"),
    ],
)
def test_sanitise_filename(given: str, expected: str) -> None:
    assert uploads.sanitise_filename(given) == expected


def test_sanitise_filename_limits_length_in_bytes() -> None:
    for long_name in ("a" * 1000 + ".pdf", "é" * 400 + ".pdf", "x" * 5000):
        name = uploads.sanitise_filename(long_name)
        assert name.endswith(".pdf")
        assert len(name.encode("utf-8")) <= uploads.MAX_NAME_BYTES
        assert "/" not in name and "\x00" not in name


# --------------------------------------------------------------------------------------
# content and size
# --------------------------------------------------------------------------------------


def test_check_upload_by_content_not_name(pdf_bytes: bytes) -> None:
    uploads.check_upload(pdf_bytes, max_bytes=10_000_000)
    with pytest.raises(UploadError, match="not a PDF: the content is an HTML page"):
        uploads.check_upload(HTML, max_bytes=10_000_000)
    with pytest.raises(UploadError, match="empty"):
        uploads.check_upload(b"", max_bytes=10_000_000)
    with pytest.raises(UploadError, match="ZIP"):
        uploads.check_upload(b"PK\x03\x04rest", max_bytes=10_000_000)
    with pytest.raises(UploadError, match="too large"):
        uploads.check_upload(pdf_bytes, max_bytes=len(pdf_bytes) - 1)


def test_max_upload_bytes_follows_settings() -> None:
    from kb.settings import get_settings

    assert uploads.max_upload_bytes(get_settings(upload_max_mb=3)) == 3 * 1024 * 1024


# --------------------------------------------------------------------------------------
# writing into the documents folder
# --------------------------------------------------------------------------------------


def test_save_upload_writes_inside_the_folder_only(tmp_path, pdf_bytes) -> None:
    folder = tmp_path / "documents"
    path = uploads.save_upload(folder, "report.pdf", pdf_bytes)
    assert path == (folder / "report.pdf").resolve() and path.read_bytes() == pdf_bytes
    for bad in ("../outside.pdf", "/tmp/abs.pdf", "sub/dir.pdf", "a\x00.pdf", ".hidden.pdf", "notes.txt", ""):
        with pytest.raises(UploadError):
            uploads.save_upload(folder, bad, pdf_bytes)
    assert listing(folder) == ["report.pdf"]
    assert not (tmp_path / "outside.pdf").exists()


def test_save_upload_never_overwrites_unless_replacing(tmp_path, pdf_bytes) -> None:
    folder = tmp_path / "documents"
    uploads.save_upload(folder, "report.pdf", pdf_bytes)
    with pytest.raises(UploadError, match="already exists"):
        uploads.save_upload(folder, "report.pdf", pdf_bytes + b"%new")
    assert (folder / "report.pdf").read_bytes() == pdf_bytes
    uploads.save_upload(folder, "report.pdf", pdf_bytes + b"%new", replace=True)
    assert (folder / "report.pdf").read_bytes() == pdf_bytes + b"%new"
    with pytest.raises(UploadError, match="no file named"):
        uploads.save_upload(folder, "missing.pdf", pdf_bytes, replace=True)
    assert listing(folder) == ["report.pdf"]  # no temporary files left behind


def test_save_upload_refuses_to_write_through_a_symlink(tmp_path, pdf_bytes) -> None:
    folder = tmp_path / "documents"
    folder.mkdir()
    outside = tmp_path / "outside.pdf"
    outside.write_bytes(b"%PDF-original")
    (folder / "link.pdf").symlink_to(outside)
    with pytest.raises(UploadError):
        uploads.save_upload(folder, "link.pdf", pdf_bytes, replace=True)
    assert outside.read_bytes() == b"%PDF-original"


def test_a_killed_upload_leaves_nothing_for_long(tmp_path, pdf_bytes) -> None:
    """A hidden part file of an upload killed mid-write is removed by a later upload once
    it is an hour old; one that is still being written (fresh) is left alone."""
    tmp_path = tmp_path / "documents"
    tmp_path.mkdir()
    old = tmp_path / ".upload-killed.part"
    old.write_bytes(b"half a file")
    hour_ago = time.time() - uploads.STALE_PART_S - 60
    os.utime(old, (hour_ago, hour_ago))
    fresh = tmp_path / ".upload-in-progress.part"
    fresh.write_bytes(b"being written")
    uploads.save_upload(tmp_path, "report.pdf", pdf_bytes)
    assert not old.exists() and fresh.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".upload-in-progress.part", "report.pdf"]


def test_accept_uploads_reports_bad_files_and_duplicates(tmp_path, pdf_bytes) -> None:
    folder = tmp_path / "documents"
    known = {"f" * 64: "older.pdf"}
    results = uploads.accept_uploads(
        [
            ("../../evil.pdf", HTML),
            ("good.pdf", pdf_bytes),
            ("copy of good.pdf", pdf_bytes),
            ("huge.pdf", pdf_bytes + b"x" * 2000),
        ],
        folder,
        max_bytes=len(pdf_bytes) + 1000,
        known=known,
    )
    assert [(r.file, r.status) for r in results] == [
        ("evil.pdf", "rejected"),
        ("good.pdf", "saved"),
        ("copy of good.pdf", "duplicate"),
        ("huge.pdf", "rejected"),
    ]
    assert "HTML" in results[0].reason and "good.pdf" in results[2].reason and "too large" in results[3].reason
    assert listing(folder) == ["good.pdf"]
    assert results[1].doc_id == uploads.content_id(pdf_bytes)


def test_accept_uploads_duplicate_of_a_library_document(tmp_path, pdf_bytes) -> None:
    folder = tmp_path / "documents"
    known = {uploads.content_id(pdf_bytes): "report.pdf"}
    (result,) = uploads.accept_uploads([("again.pdf", pdf_bytes)], folder, max_bytes=10**7, known=known)
    assert result.status == "duplicate" and "report.pdf" in result.reason
    assert listing(folder) == []


def test_accept_uploads_replace_keeps_the_existing_name(tmp_path, pdf_bytes) -> None:
    folder = tmp_path / "documents"
    uploads.save_upload(folder, "Old Report.pdf", b"%PDF-1.4 old")
    (result,) = uploads.accept_uploads([("whatever.pdf", pdf_bytes)], folder, max_bytes=10**7, replace_name="Old Report.pdf")
    assert result.status == "saved" and result.file == "Old Report.pdf"
    assert (folder / "Old Report.pdf").read_bytes() == pdf_bytes
    (same,) = uploads.accept_uploads(
        [("x.pdf", pdf_bytes)], folder, max_bytes=10**7, known={result.doc_id: "Old Report.pdf"}, replace_name="Old Report.pdf"
    )
    assert same.status == "duplicate" and "unchanged" in same.reason


def test_discard_file_moves_it_out(tmp_path, pdf_bytes) -> None:
    folder, trash = tmp_path / "documents", tmp_path / "data" / "removed"
    uploads.save_upload(folder, "report.pdf", pdf_bytes)
    moved = uploads.discard_file(folder, "report.pdf", trash)
    assert moved.parent == trash and moved.read_bytes() == pdf_bytes and listing(folder) == []
    with pytest.raises(UploadError):
        uploads.discard_file(folder, "../data/removed/" + moved.name, trash)


# --------------------------------------------------------------------------------------
# reports by URL
# --------------------------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: dict[str, tuple[int, dict[str, str], bytes]] = {}

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self.path == "/slow.pdf":
            time.sleep(3)
        status, headers, body = self.routes.get(self.path, (404, {}, b"not found"))
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server(pdf_bytes):
    """A local web server on 127.0.0.1 with a few routes."""
    _Handler.routes = {
        "/reports/annual%20report.pdf": (200, {"Content-Type": "application/pdf"}, pdf_bytes),
        "/download?id=7": (200, {"Content-Disposition": 'attachment; filename="../../Named Report.pdf"'}, pdf_bytes),
        "/page.pdf": (200, {"Content-Type": "text/html"}, HTML),
        "/big.pdf": (200, {}, b"%PDF-" + b"0" * 5000),
        "/to-file": (302, {"Location": "file:///etc/passwd"}, b""),
        "/to-ftp": (302, {"Location": "ftp://127.0.0.1/a.pdf"}, b""),
        "/to-pdf": (302, {"Location": "/reports/annual%20report.pdf"}, b""),
        "/slow.pdf": (200, {}, pdf_bytes),
    }
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_fetch_url_gets_a_pdf_with_a_safe_name(server, pdf_bytes) -> None:
    name, data = uploads.fetch_url(f"{server}/reports/annual%20report.pdf", max_bytes=10**7)
    assert (name, data) == ("annual report.pdf", pdf_bytes)
    name, _ = uploads.fetch_url(f"{server}/download?id=7", max_bytes=10**7)
    assert name == "Named Report.pdf"
    name, data = uploads.fetch_url(f"{server}/to-pdf", max_bytes=10**7)
    assert data == pdf_bytes


def test_fetch_url_limits(server) -> None:
    with pytest.raises(UploadError, match="too large"):
        uploads.fetch_url(f"{server}/big.pdf", max_bytes=1000)
    with pytest.raises(UploadError, match="not allowed"):
        uploads.fetch_url(f"{server}/to-file", max_bytes=10**7)
    with pytest.raises(UploadError, match="http"):
        uploads.fetch_url(f"{server}/to-ftp", max_bytes=10**7)
    with pytest.raises(UploadError, match="404"):
        uploads.fetch_url(f"{server}/missing.pdf", max_bytes=10**7)
    started = time.monotonic()
    with pytest.raises(UploadError):
        uploads.fetch_url(f"{server}/slow.pdf", max_bytes=10**7, timeout=0.5)
    assert time.monotonic() - started < 2.5


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.org/a.pdf", "javascript:alert(1)", "http://", "example.org/a.pdf", "http://exa mple.org/a.pdf"])
def test_fetch_url_refuses_other_schemes(url: str) -> None:
    with pytest.raises(UploadError):
        uploads.fetch_url(url, max_bytes=10**7)


def test_html_fetched_by_url_is_rejected_like_an_upload(server, tmp_path) -> None:
    name, data = uploads.fetch_url(f"{server}/page.pdf", max_bytes=10**7)
    (result,) = uploads.accept_uploads([(name, data)], tmp_path / "documents", max_bytes=10**7)
    assert result.status == "rejected" and "HTML" in result.reason
    assert listing(tmp_path / "documents") == []


# --------------------------------------------------------------------------------------
# metadata and published PDFs
# --------------------------------------------------------------------------------------


def test_clean_metadata_validates() -> None:
    values = uploads.clean_metadata("  A   title ", " IOM ", "2021", "https://example.org/a.pdf", "")
    assert values == {"title": "A title", "organisation": "IOM", "year": 2021, "url": "https://example.org/a.pdf", "language": "en"}
    assert uploads.clean_metadata("T", "", "", "", "fr")["year"] is None
    for bad in (("", "", "", "", ""), ("T", "", "20x1", "", ""), ("T", "", "1200", "", ""), ("T", "", "", "javascript:alert(1)", "")):
        with pytest.raises(UploadError):
            uploads.clean_metadata(*bad)


def test_metadata_edit_survives_a_rebuild(tmp_path) -> None:
    from kb.service import Service
    from kb.settings import get_settings

    documents, data = build_library(tmp_path)
    service = Service(get_settings(data_dir=data, documents_dir=documents))
    (row,) = [r for r in service.library() if r["file"] == "iom-reintegration-2022.pdf"]
    document, note = uploads.update_document_metadata(
        service, row["doc_id"], title="Edited Title", organisation="IOM Regional Office", year="2023", url="", language="en"
    )
    assert document.title == "Edited Title" and "catalogue.csv" in note
    assert "Edited Title" in (documents / "catalogue.csv").read_text(encoding="utf-8")
    rebuilt = Service(get_settings(data_dir=tmp_path / "rebuilt", documents_dir=documents))
    rebuilt.ingest([documents])
    (again,) = [r for r in rebuilt.library() if r["file"] == "iom-reintegration-2022.pdf"]
    assert (again["title"], again["organisation"], again["year"]) == ("Edited Title", "IOM Regional Office", 2023)
    assert len(LIBRARY) == len(rebuilt.library())


def test_metadata_edit_waits_for_no_ingest(tmp_path) -> None:
    """While an ingest holds the data folder, an edit is refused (nothing changes); once
    the ingest is over the same edit goes through."""
    from ingest.pipeline import IngestBusy, ingest_lock
    from kb.service import Service
    from kb.settings import get_settings

    documents, data = build_library(tmp_path)
    service = Service(get_settings(data_dir=data, documents_dir=documents))
    (row,) = [r for r in service.library() if r["file"] == "unicef-children-2018.pdf"]
    catalogue = (documents / "catalogue.csv").read_text(encoding="utf-8")
    with ingest_lock(service.settings.lock_path):
        with pytest.raises(IngestBusy):
            uploads.update_document_metadata(service, row["doc_id"], title="Edited while busy", organisation="UNICEF", year="2018", url="", language="")
    assert service.kb.ledger.document(row["doc_id"]).title == row["title"]
    assert (documents / "catalogue.csv").read_text(encoding="utf-8") == catalogue
    document, _ = uploads.update_document_metadata(service, row["doc_id"], title="Edited after", organisation="UNICEF", year="2018", url="", language="")
    assert document.title == "Edited after"


def test_publish_document_and_prune(tmp_path, pdf_bytes) -> None:
    source = tmp_path / "report.pdf"
    source.write_bytes(pdf_bytes)
    static = tmp_path / "static" / "docs"
    doc_id = uploads.content_id(pdf_bytes)
    assert uploads.publish_document(doc_id, source, static)
    assert (static / f"{doc_id}.pdf").read_bytes() == pdf_bytes
    assert not (static / f"{doc_id}.pdf").is_symlink()
    assert not uploads.publish_document("e" * 64, tmp_path / "missing.pdf", static)
    with pytest.raises(ValueError):
        uploads.publish_document("../../etc/passwd", source, static)
    (static / f"{'a' * 64}.pdf").write_bytes(b"%PDF-stale")
    assert uploads.prune_published(static, {doc_id}) == 1
    assert listing(static) == [f"{doc_id}.pdf"]


# --------------------------------------------------------------------------------------
# staff password and rate limit
# --------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def _fresh_attempts():
    staff.reset_attempts()
    yield
    staff.reset_attempts()


def test_no_default_password() -> None:
    from kb.settings import get_settings

    settings = get_settings(staff_password="")
    assert staff.configured_password(settings) == ""
    assert staff.configured_password(settings, {"staff_password": "from-secrets"}) == "from-secrets"
    assert staff.configured_password(get_settings(staff_password="env"), {"staff_password": "x"}) == "env"
    gate = staff.StaffGate.from_settings(settings)
    assert not gate.enabled
    assert not gate.login("", "session").ok and not gate.login("anything", "session").ok
    assert not gate.verify(gate.token_for("session"), "session")


def test_login_gives_a_session_bound_token() -> None:
    gate = staff.StaffGate(password="s3cret pass", max_attempts=3, lockout_s=60)
    assert "s3cret" not in repr(gate)
    wrong = gate.login("s3cret", "session-a")
    assert not wrong.ok and not wrong.token and "s3cret" not in wrong.message
    right = gate.login("s3cret pass", "session-a")
    assert right.ok and gate.verify(right.token, "session-a")
    assert not gate.verify(right.token, "session-b")  # taken to another session
    last_changed = right.token[:-1] + ("1" if right.token.endswith("0") else "0")
    for forged in (True, "true", "1", "", None, last_changed, right.token.upper()):
        assert not gate.verify(forged, "session-a")
    changed = staff.StaffGate(password="another password")
    assert not changed.verify(right.token, "session-a")  # a new password signs everyone out


def test_failed_attempts_are_rate_limited() -> None:
    clock = FakeClock()
    gate = staff.StaffGate(password="right", max_attempts=3, lockout_s=60, clock=clock)
    for _ in range(3):
        assert not gate.login("wrong", "s", "10.0.0.1").ok
    locked = gate.login("right", "s", "10.0.0.1")
    assert not locked.ok and locked.wait_s > 0 and "Too many" in locked.message
    # the counter lives in this process, not in the session: a new gate (a new session) is locked too
    assert not staff.StaffGate(password="right", max_attempts=3, lockout_s=60, clock=clock).login("right", "other", "10.0.0.1").ok
    assert gate.login("right", "s", "10.0.0.2").ok  # another client is not affected
    clock.now += 61
    assert gate.login("right", "s", "10.0.0.1").ok
    assert gate.wait_s("10.0.0.1") == 0


def test_rate_limit_is_a_sliding_window() -> None:
    clock = FakeClock()
    gate = staff.StaffGate(password="right", max_attempts=2, lockout_s=10, clock=clock)
    gate.login("a", "s")
    clock.now += 6
    gate.login("b", "s")
    assert gate.wait_s() == 4
    clock.now += 4
    assert gate.wait_s() == 0
    assert not gate.login("c", "s").ok
    assert gate.wait_s() > 0


def test_password_comparison_uses_compare_digest(monkeypatch) -> None:
    calls = []
    real = staff.hmac.compare_digest

    def spy(a, b):
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(staff.hmac, "compare_digest", spy)
    staff.StaffGate(password="right").login("a much longer wrong password", "s")
    assert calls and all(a == b for a, b in calls)  # digests: the length does not leak


def test_upload_module_never_touches_other_folders(tmp_path, pdf_bytes, monkeypatch) -> None:
    """Whatever the name, every write lands in the documents folder."""
    folder = tmp_path / "documents"
    monkeypatch.chdir(tmp_path)
    names = ["../a.pdf", "/tmp/b.pdf", "..\\c.pdf", "d/../../e.pdf", "\x00f.pdf", "~/g.pdf", "%2e%2e%2fh.pdf"]
    for i, name in enumerate(names):
        uploads.accept_uploads([(name, pdf_bytes + str(i).encode())], folder, max_bytes=10**7)
    written = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    assert written == {f"documents/{n}" for n in os.listdir(folder)} | {"source/report.pdf"}
    assert len(os.listdir(folder)) == len(names)


def test_changing_address_does_not_buy_unlimited_guesses() -> None:
    clock = FakeClock()
    gate = staff.StaffGate(password="right", max_attempts=2, lockout_s=60, clock=clock)
    for attempt in range(2 * staff.GLOBAL_FACTOR):
        assert not gate.login("wrong", "s", f"10.0.0.{attempt}").ok
    assert not gate.login("right", "s", "10.9.9.9").ok  # a fresh address: still held back
    clock.now += 61
    assert gate.login("right", "s", "10.9.9.9").ok
