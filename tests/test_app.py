"""The Streamlit app, page by page, with ``streamlit.testing.v1.AppTest`` on a small
library of generated PDFs (three organisations, three years; one PDF with hostile text).

Read-only tests share one library; tests that change it (briefs, staff actions) build
their own.  The embedding model is the real one.
"""

from __future__ import annotations

import http.server
import io
import sqlite3
import sys
import threading
from pathlib import Path

import pytest

from conftest_app import APP, HOSTILE_LINK, HOSTILE_SCRIPT, LIBRARY, ROOT, build_library, make_pdf

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from streamlit.testing.v1 import AppTest  # noqa: E402

import app_pages.common as common  # noqa: E402
from kb import staff  # noqa: E402

TIMEOUT = 180
PASSWORD = "correct horse battery staple"
QUESTION = "How should frontline officers identify victims of trafficking?"
OFF_TOPIC = "What is the recipe for a chocolate cake with strawberries?"
CHILD_QUESTION = "How should child victims be protected?"


# --------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_library(tmp_path_factory) -> tuple[Path, Path]:
    """One ingested library for the tests that only read it."""
    return build_library(tmp_path_factory.mktemp("library"))


@pytest.fixture
def fresh_library(tmp_path) -> tuple[Path, Path]:
    """A library of its own, for tests that change it."""
    return build_library(tmp_path / "library")


def _environment(monkeypatch, tmp_path, documents: Path, data: Path, password: str = "", secrets: bool = False) -> None:
    """Point the app at a library (set before the app script runs).  A secrets file the
    developer may have is ignored unless ``secrets`` (then the test supplies its own)."""
    monkeypatch.setenv("KB_DATA_DIR", str(data))
    monkeypatch.setenv("KB_DOCUMENTS_DIR", str(documents))
    for name in ("KB_LLM", "KB_CHROMA_URL", "KB_STAFF_PASSWORD", "KB_UPLOAD_MAX_MB"):
        monkeypatch.delenv(name, raising=False)
    if password:
        monkeypatch.setenv("KB_STAFF_PASSWORD", password)
    monkeypatch.setattr(common, "STATIC_DOCS_DIR", tmp_path / "static" / "docs")
    if not secrets:
        monkeypatch.setattr(common, "_secrets", lambda: None)
    staff.reset_attempts()


@pytest.fixture
def shared_app(monkeypatch, tmp_path, shared_library):
    documents, data = shared_library
    _environment(monkeypatch, tmp_path, documents, data)
    return documents, data


@pytest.fixture
def fresh_app(monkeypatch, tmp_path, fresh_library):
    documents, data = fresh_library
    _environment(monkeypatch, tmp_path, documents, data)
    return documents, data


@pytest.fixture
def staff_app(monkeypatch, tmp_path, fresh_library):
    documents, data = fresh_library
    _environment(monkeypatch, tmp_path, documents, data, password=PASSWORD)
    yield documents, data
    staff.reset_attempts()


@pytest.fixture
def downloads(monkeypatch) -> dict:
    """What every download button would serve, by file id (bytes, or the function that
    makes them when the button is clicked)."""
    import streamlit.testing.v1.app_test as app_test_module
    from streamlit.runtime.media_file_manager import MediaFileManager

    captured: dict = {}

    class Capturing(MediaFileManager):
        def add(self, path_or_data, mimetype, coordinates, file_name=None, is_for_static_download=False):
            url = super().add(path_or_data, mimetype, coordinates, file_name, is_for_static_download)
            captured[Path(url).stem] = path_or_data
            return url

        def add_deferred(self, data_callable, mimetype, coordinates, file_name=None, **kwargs):
            file_id = super().add_deferred(data_callable, mimetype, coordinates, file_name=file_name, **kwargs)
            captured[file_id] = data_callable
            return file_id

    monkeypatch.setattr(app_test_module, "MediaFileManager", Capturing)
    return captured


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def new_app(page: str | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    assert not at.exception, at.exception
    if page:
        at.switch_page(f"app_pages/{page}.py").run()
        assert not at.exception, at.exception
    return at


def ask(at: AppTest, question: str) -> AppTest:
    at.chat_input[0].set_value(question).run()
    assert not at.exception, at.exception
    return at


def conversation(at: AppTest) -> list[dict]:
    return at.session_state["conversation"]


def last_answer(at: AppTest):
    return conversation(at)[-1]["answer"]


def markdown_texts(at: AppTest) -> list[str]:
    return [m.value for m in at.markdown] + [c.value for c in at.caption]


def buttons(at: AppTest, prefix: str) -> list:
    return [b for b in at.button if b.key and b.key.startswith(prefix)]


def click(at: AppTest, label: str) -> AppTest:
    matches = [b for b in at.button if b.label == label]
    assert matches, f"no button {label!r} among {[b.label for b in at.button]}"
    matches[0].click().run()
    assert not at.exception, at.exception
    return at


def download(at: AppTest, captured: dict, label: str) -> bytes:
    """The file a download button gives, as if clicked now."""
    (button,) = [b for b in at.get("download_button") if b.label == label]
    file_id = button.proto.deferred_file_id or Path(button.proto.url).stem
    data = captured[file_id]
    return data() if callable(data) else data


def results_frame(at: AppTest):
    """The per-file result table shown after a staff action."""
    (frame,) = [d.value for d in at.dataframe if "title" not in d.value.columns]
    return frame


def library_table(at: AppTest):
    (frame,) = [d.value for d in at.dataframe if "title" in d.value.columns]
    return frame


def ledger_rows(data: Path) -> list[tuple]:
    with sqlite3.connect(data / "ledger.sqlite") as db:
        files = db.execute("SELECT path, name, doc_id, status, reason FROM files ORDER BY path").fetchall()
        documents = db.execute("SELECT doc_id, title, status FROM documents ORDER BY doc_id").fetchall()
    return files + documents


def sign_in(at: AppTest, password: str) -> AppTest:
    at.text_input(key="staff_password_input").input(password)
    (submit,) = [b for b in at.button if b.label == "Sign in"]
    submit.click().run()
    assert not at.exception, at.exception
    return at


def is_signed_in(at: AppTest) -> bool:
    return any(s.value == "Signed in as staff." for s in at.success)


def staff_widgets(at: AppTest) -> list[str]:
    """Anything that only staff should ever see."""
    labels = [b.label for b in at.button] + [f.label for f in at.get("file_uploader")] + [t.label for t in at.tabs]
    staff_only = {"Add these files", "Fetch and add", "Save metadata", "Replace", "Remove", "Sync the documents folder", "Sign out", "PDF files", "Upload PDFs"}
    return [label for label in labels if label in staff_only]


# --------------------------------------------------------------------------------------
# Ask
# --------------------------------------------------------------------------------------


def test_ask_page_starts_with_starter_questions(shared_app) -> None:
    at = new_app()
    assert at.title[0].value == "Ask the library"
    starters = buttons(at, "starter-")
    assert len(starters) >= 3
    starters[0].click().run()
    assert not at.exception
    assert len(conversation(at)) == 1 and not buttons(at, "starter-")


def test_ask_gives_a_cited_answer_with_sources(shared_app) -> None:
    at = ask(new_app(), QUESTION)
    answer = last_answer(at)
    assert not answer.abstained and answer.citations
    assert all(c.organisation == "UNODC" for c in answer.citations)
    texts = markdown_texts(at)
    assert any("Frontline officers should be trained" in t and "\\[1\\]" in t for t in texts)
    labels = [e.label for e in at.expander]
    assert len(labels) == len(answer.citations)
    # title, organisation, year and the printed page with the PDF page where they differ
    assert any("Victim Identification in Practice" in label and "UNODC" in label and "2020" in label for label in labels)
    assert any("p\\. 1 \\(PDF page 2\\)" in label for label in labels)
    # the quoted sentence is highlighted inside its passage
    assert any(t.startswith("**") or " **" in t for t in texts if "Frontline officers" in t and "\\[1\\]" not in t)
    # a link opens the PDF at the cited page, served from the static folder
    urls = [b.proto.url for b in at.get("link_button")]
    first = answer.citations[0]
    assert f"app/static/docs/{first.doc_id}.pdf#page={first.page}" in urls
    assert (common.STATIC_DOCS_DIR / f"{first.doc_id}.pdf").is_file()
    # add-to-brief on the answer and on every passage
    assert len(buttons(at, "add-answer-")) == 1
    assert len(buttons(at, "add-passage-")) == len(answer.citations)


def test_abstention_looks_different_and_offers_related_reading(shared_app) -> None:
    at = ask(new_app(), OFF_TOPIC)
    answer = last_answer(at)
    assert answer.abstained and answer.related
    assert any(w.value.startswith("**Not in the library.**") for w in at.warning)
    assert not buttons(at, "add-answer-")
    assert any(m.value == "**Related reading**" for m in at.markdown)
    assert len(buttons(at, "add-passage-")) == len(answer.related)
    assert all(not e.label.startswith("\\[") for e in at.expander)  # related reading is not numbered


def test_filters_change_results(shared_app) -> None:
    question = "What lessons were learned about victims of trafficking?"
    at = new_app()
    at.multiselect(key="filter_organisations").select("IOM").run()
    ask(at, question)
    answer = last_answer(at)
    assert answer.citations or answer.related
    assert {c.organisation for c in answer.citations + answer.related} == {"IOM"}

    at = new_app()
    at.slider(key="filter_years").set_range(2018, 2019).run()
    ask(at, question)
    answer = last_answer(at)
    assert {c.year for c in answer.citations + answer.related} == {2018}

    at = new_app()
    assert "Protecting Child Victims (UNICEF, 2018)" in at.multiselect(key="filter_documents").options
    at.multiselect(key="filter_documents").set_value([_doc_id(shared_app, "unicef-children-2018.pdf")]).run()
    ask(at, question)
    answer = last_answer(at)
    assert {c.file for c in answer.citations + answer.related} == {"unicef-children-2018.pdf"}


def _doc_id(app_folders, file_name: str) -> str:
    from kb.uploads import content_id

    documents, _ = app_folders
    return content_id((documents / file_name).read_bytes())


def test_theme_filter_only_when_passages_have_themes(shared_app) -> None:
    from kb.service import Service

    tagged = bool(Service().themes())  # ingest tags passages with the themes they speak to
    at = new_app()
    labels = [m.label for m in at.sidebar.multiselect]
    assert "Organisation" in labels and "Document" in labels
    assert ("Theme" in labels) == tagged


def test_follow_up_uses_the_conversation_and_new_conversation_clears_it(shared_app) -> None:
    at = ask(new_app(), "What works in the reintegration of trafficking survivors?")
    ask(at, "And the stigma they face?")
    assert len(conversation(at)) == 2
    follow_up = last_answer(at)
    assert "reintegration" in follow_up.resolved_question.lower()
    assert len(at.chat_message) == 4
    click(at, "New conversation")
    assert conversation(at) == [] and buttons(at, "starter-")


def test_document_text_cannot_inject_markup(shared_app) -> None:
    at = ask(new_app(), CHILD_QUESTION)
    answer = last_answer(at)
    assert any(HOSTILE_LINK in c.text for c in answer.citations + answer.related)
    texts = markdown_texts(at) + [e.label for e in at.expander]
    shown = "\n".join(texts)
    assert "\\[click\\]\\(http\\:\u2060\\/\\/evil\\.example\\)" in shown
    assert "www\u2060\\.evil\\.example" in shown and "phish\\@\u2060evil\\.example" in shown
    assert "\\<script\\>alert\\(1\\)\\<\\/script\\>" in shown
    assert HOSTILE_LINK not in shown and HOSTILE_SCRIPT not in shown and "](http" not in shown
    assert not any(m.proto.allow_html for m in list(at.markdown) + list(at.caption))


def test_answer_markdown_escapes_sentences_but_keeps_structure() -> None:
    text = "Lead [click](http://evil.example) sentence. [1]\n\n**UNODC**\n- A <b>bullet</b> with $x$ and :smile: [2]\n**IOM**\n1. # not a heading [3]"
    rendered = common.answer_markdown(text)
    lines = rendered.split("\n")
    assert lines[0] == "Lead \\[click\\]\\(http\\:\u2060\\/\\/evil\\.example\\) sentence\\. \\[1\\]"
    assert lines[2] == "**UNODC**"
    assert lines[3] == "- A \\<b\\>bullet\\<\\/b\\> with \\$x\\$ and \\:smile\\: \\[2\\]"
    assert lines[5] == "1. \\# not a heading \\[3\\]"
    streamed = "".join(common.safe_stream(["Lead ", "[click](http://evil.example) ", "[1]\n", "    - <i>x</i>"]))
    assert "](" not in streamed and "<i>" not in streamed and "\n    " not in streamed
    assert common.highlighted_passage("Before. The *quote* here. After.", "The *quote* here.") == "Before\\. **The \\*quote\\* here\\.** After\\."


# --------------------------------------------------------------------------------------
# Brief
# --------------------------------------------------------------------------------------


def test_add_to_brief_and_export_all_formats(fresh_app, downloads) -> None:
    import docx
    import pypdf

    at = ask(new_app(), QUESTION)
    answer = last_answer(at)
    buttons(at, "add-answer-")[0].click().run()
    buttons(at, "add-passage-")[-1].click().run()
    assert not at.exception
    assert any("added to the brief" in t.value for t in at.toast)

    at.switch_page("app_pages/brief.py").run()
    assert not at.exception
    store = common.service().briefs()
    (brief,) = store.list()
    assert [i.kind for i in brief.items] == ["answer", "passage"]

    at.text_input(key=f"title-{brief.id}").input("Identification training brief").run()
    at.text_input(key="new_heading").input("Identification").run()
    click(at, "Add heading")
    at.text_area(key="new_note").input("Discuss with the border police unit.").run()
    click(at, "Add note")
    heading = store.get(brief.id).items[2]
    at.button(key=f"up-{heading.id}").click().run()
    at.button(key=f"up-{heading.id}").click().run()
    brief = store.get(brief.id)
    assert brief.title == "Identification training brief"
    assert [i.kind for i in brief.items] == ["heading", "answer", "passage", "note"]
    passage = brief.items[2]
    at.button(key=f"remove-{passage.id}").click().run()
    assert [i.kind for i in store.get(brief.id).items] == ["heading", "answer", "note"]

    reference = "UNODC. Victim Identification in Practice (2020), p. 1 (PDF page 2)"
    markdown = download(at, downloads, "Download Markdown").decode("utf-8")
    assert markdown.startswith("# Identification training brief")
    assert "## Identification" in markdown and "## References" in markdown
    assert reference.replace("(", "\\(").replace(")", "\\)") in markdown.split("## References", 1)[1]

    document = docx.Document(io.BytesIO(download(at, downloads, "Download Word")))
    paragraphs = [p.text for p in document.paragraphs]
    start = paragraphs.index("References")
    references = paragraphs[start + 1 :]
    assert len(references) == len(answer.citations)
    assert any(reference in r for r in references)

    pdf_text = "\n".join(page.extract_text() for page in pypdf.PdfReader(io.BytesIO(download(at, downloads, "Download PDF"))).pages)
    assert "Identification training brief" in pdf_text and "References" in pdf_text
    assert "Victim Identification in Practice" in pdf_text.split("References", 1)[1]


def test_briefs_survive_a_restart_and_several_can_exist(fresh_app) -> None:
    at = ask(new_app(), QUESTION)
    buttons(at, "add-passage-")[0].click().run()
    first_id = at.session_state["current_brief_id"]

    at = new_app("brief")  # a new session: the brief is read back from disk
    assert at.text_input(key=f"title-{first_id}").value == "Untitled brief"
    at.text_input(key="new_brief_title").input("Second brief")
    (create,) = [b for b in at.button if b.label == "Create brief"]
    create.click().run()
    assert not at.exception
    picker = at.selectbox(key="brief-picker-brief")
    assert len(picker.options) == 2
    second_id = at.session_state["current_brief_id"]
    assert second_id != first_id
    assert at.text_input(key=f"title-{second_id}").value == "Second brief"
    picker.set_value(first_id).run()
    assert at.session_state["current_brief_id"] == first_id
    assert any(e.label == "Edit note" for e in at.expander)  # the passage of the first brief
    click(at, "Delete brief")
    assert [b.title for b in common.service().briefs().list()] == ["Second brief"]


def test_brief_page_without_briefs(fresh_app) -> None:
    at = new_app("brief")
    assert any("No brief yet" in i.value for i in at.info)


# --------------------------------------------------------------------------------------
# Library
# --------------------------------------------------------------------------------------


def test_library_lists_documents_and_is_searchable(shared_app) -> None:
    at = new_app("library")
    frame = library_table(at)
    assert set(frame["file"]) == set(LIBRARY)
    assert set(frame["status"]) == {"ready"}
    assert {"title", "organisation", "year", "pages", "chunks", "reason"} <= set(frame.columns)
    at.text_input(key="library_search").input("unicef").run()
    assert list(library_table(at)["file"]) == ["unicef-children-2018.pdf"]


def test_staff_actions_are_off_without_a_password(fresh_app) -> None:
    at = new_app("library")
    assert any("KB_STAFF_PASSWORD" in i.value for i in at.info)
    assert not [t for t in at.text_input if t.key == "staff_password_input"]
    assert staff_widgets(at) == []


def test_staff_password_from_secrets(monkeypatch, tmp_path, fresh_library) -> None:
    _environment(monkeypatch, tmp_path, *fresh_library, secrets=True)
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.secrets["staff_password"] = "from the secrets file"
    at.run()
    at.switch_page("app_pages/library.py").run()
    sign_in(at, "from the secrets file")
    assert is_signed_in(at)


def test_wrong_password_refused_then_right_one_works(staff_app) -> None:
    at = new_app("library")
    assert staff_widgets(at) == []
    sign_in(at, "wrong")
    assert [e.value for e in at.error] == ["Wrong password."]
    assert staff_widgets(at) == [] and not is_signed_in(at)
    sign_in(at, PASSWORD)
    assert is_signed_in(at)
    assert "Sync the documents folder" in staff_widgets(at)
    assert all(PASSWORD not in t for t in markdown_texts(at))
    click(at, "Sign out")
    assert not is_signed_in(at) and staff_widgets(at) == []


def test_failed_sign_ins_are_rate_limited(staff_app) -> None:
    at = new_app("library")
    for _ in range(5):
        sign_in(at, "guess")
    sign_in(at, PASSWORD)
    assert not is_signed_in(at)
    assert any("Too many failed attempts" in e.value for e in at.error)
    other = new_app("library")  # a new session does not reset the counter
    sign_in(other, PASSWORD)
    assert not is_signed_in(other)


def test_session_state_and_query_params_do_not_unlock_staff_actions(staff_app) -> None:
    documents, data = staff_app
    before = ledger_rows(data)
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.query_params["staff"] = "1"
    at.query_params["staff_token"] = "1"
    at.query_params["token"] = "true"
    at.run()
    at.switch_page("app_pages/library.py").run()
    for name, value in {
        "staff": True, "is_staff": True, "staff_ok": True, "authenticated": True,
        "staff_token": "0" * 64, "staff_password": PASSWORD,
    }.items():
        at.session_state[name] = value
    at.run()
    assert not is_signed_in(at) and staff_widgets(at) == []
    # a real token does not work once the password changes (e.g. after a restart with a new one)
    sign_in(at, PASSWORD)
    assert is_signed_in(at)
    staff_app_token = at.session_state["staff_token"]
    at.session_state["staff_token"] = staff_app_token[:-1] + ("0" if staff_app_token[-1] != "0" else "1")
    at.run()
    assert not is_signed_in(at) and staff_widgets(at) == []
    assert ledger_rows(data) == before


def test_bad_upload_is_reported_and_nothing_changes(staff_app) -> None:
    documents, data = staff_app
    before_files = sorted(p.name for p in documents.iterdir())
    before_ledger = ledger_rows(data)
    at = sign_in(new_app("library"), PASSWORD)
    before_library = common.service().library()
    uploader = at.get("file_uploader")[0]
    uploader.set_value([("annual-report.pdf", b"<!DOCTYPE html><html><body>Login</body></html>", "application/pdf")])
    at.run()
    click(at, "Add these files")
    frame = results_frame(at)
    assert list(frame["file"]) == ["annual-report.pdf"]
    assert list(frame["status"]) == ["rejected"]
    assert "not a PDF" in frame["reason"][0]
    assert any("0 of 1 files written" in i.value for i in at.info)
    assert sorted(p.name for p in documents.iterdir()) == before_files
    assert ledger_rows(data) == before_ledger
    assert common.service().library() == before_library


def test_upload_replace_edit_and_remove_through_the_ui(staff_app, tmp_path) -> None:
    documents, data = staff_app
    new_pdf = make_pdf(tmp_path / "in" / "x.pdf", ["Hotlines for reporting trafficking should be free of charge and open at night."]).read_bytes()
    at = sign_in(new_app("library"), PASSWORD)

    # upload: several at once, one a duplicate of a library document, one with a hostile name
    existing = (documents / "iom-reintegration-2022.pdf").read_bytes()
    at.get("file_uploader")[0].set_value([
        ("../../Hotline Review.pdf", new_pdf, "application/pdf"),
        ("copy.pdf", existing, "application/pdf"),
    ])
    at.run()
    click(at, "Add these files")
    frame = results_frame(at)
    statuses = dict(zip(frame["file"], frame["status"]))
    assert statuses == {"Hotline Review.pdf": "added", "copy.pdf": "duplicate"}
    assert (documents / "Hotline Review.pdf").read_bytes() == new_pdf
    assert not (documents / "copy.pdf").exists() and not (tmp_path.parent / "Hotline Review.pdf").exists()
    assert "Hotline Review.pdf" in set(library_table(at)["file"])

    # edit metadata: in the knowledge base and in catalogue.csv
    at.selectbox(key="edit_doc").select(_doc_id(staff_app, "Hotline Review.pdf")).run()
    form_inputs = [t for t in at.text_input if t.label in {"Title", "Organisation", "Year"}]
    for widget, value in zip(form_inputs, ["Hotline Review", "OSCE", "2021"]):
        widget.input(value)
    click(at, "Save metadata")
    row = next(r for r in common.service().library() if r["file"] == "Hotline Review.pdf")
    assert (row["title"], row["organisation"], row["year"]) == ("Hotline Review", "OSCE", 2021)
    assert "Hotline Review,OSCE,2021" in (documents / "catalogue.csv").read_text(encoding="utf-8")

    # replace: a new version under the same file name
    newer = make_pdf(tmp_path / "in" / "y.pdf", ["Hotlines for reporting trafficking must be free and staffed by trained operators."]).read_bytes()
    at.selectbox(key="replace_file").select("Hotline Review.pdf").run()
    [u for u in at.get("file_uploader") if u.label == "New version (PDF)"][0].set_value(("anything.pdf", newer, "application/pdf"))
    at.run()
    click(at, "Replace")
    frame = results_frame(at)
    assert dict(zip(frame["file"], frame["status"])) == {"Hotline Review.pdf": "updated"}
    assert (documents / "Hotline Review.pdf").read_bytes() == newer

    # remove
    path = str((documents / "Hotline Review.pdf").resolve())
    at.selectbox(key="delete_path").select(path).run()
    at.checkbox(key="delete_confirm").check().run()
    click(at, "Remove")
    assert not (documents / "Hotline Review.pdf").exists()
    assert "Hotline Review.pdf" not in {r["file"] for r in common.service().library()}
    assert list((data / "removed").glob("*Hotline Review.pdf"))


def test_add_a_report_by_address(staff_app, tmp_path) -> None:
    documents, _ = staff_app
    report = make_pdf(tmp_path / "web" / "shelter-standards.pdf", ["Shelter standards should guarantee privacy and safety for survivors."])
    handler = lambda *args: http.server.SimpleHTTPRequestHandler(*args, directory=str(report.parent))  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        at = sign_in(new_app("library"), PASSWORD)
        at.text_input(key="report_url").input(f"http://127.0.0.1:{httpd.server_address[1]}/shelter-standards.pdf").run()
        click(at, "Fetch and add")
        frame = results_frame(at)
        assert dict(zip(frame["file"], frame["status"])) == {"shelter-standards.pdf": "added"}
        assert (documents / "shelter-standards.pdf").read_bytes() == report.read_bytes()

        at.text_input(key="report_url").input("file:///etc/passwd").run()
        click(at, "Fetch and add")
        frame = results_frame(at)
        assert list(frame["status"]) == ["rejected"] and "http" in frame["reason"][0]
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_sync_folder_ingests_new_files_with_a_result_table(staff_app, tmp_path) -> None:
    documents, _ = staff_app
    make_pdf(documents / "osce-labour-2019.pdf", ["Labour inspectors should visit farms during the harvest season."])
    (documents / "broken.pdf").write_bytes(b"%PDF-1.4\nnot really a pdf")
    at = sign_in(new_app("library"), PASSWORD)
    click(at, "Sync the documents folder")
    frame = results_frame(at)
    statuses = dict(zip(frame["file"], frame["status"]))
    assert statuses["osce-labour-2019.pdf"] == "added" and statuses["broken.pdf"] == "failed"
    assert all(statuses[name] == "unchanged" for name in LIBRARY)
    library = library_table(at)
    failed = library[library["file"] == "broken.pdf"]
    assert list(failed["status"]) == ["failed"] and failed["reason"].iloc[0]

    # a failed file can be removed too (moved out of the folder, the folder synced)
    at.selectbox(key="delete_path").select(str((documents / "broken.pdf").resolve())).run()
    at.checkbox(key="delete_confirm").check().run()
    click(at, "Remove")
    assert not (documents / "broken.pdf").exists()
    assert "broken.pdf" not in set(library_table(at)["file"])


# --------------------------------------------------------------------------------------
# Map
# --------------------------------------------------------------------------------------


def _map_table(at: AppTest):
    (frame,) = [d.value for d in at.dataframe if d.value.index.name == "Theme"]
    return frame


def _passage_expanders(at: AppTest) -> list:
    """The numbered source expanders ("[1] Title - Organisation, Year, p. 3"), unescaped."""
    return [e for e in at.expander if e.label.replace("\\", "").startswith("[")]


def _filled_cell(table: dict) -> tuple[str, str, str, int]:
    """(theme id, label, organisation, count) of the fullest cell of the map."""
    cells = [
        (theme, entry["label"], org, count)
        for theme, entry in table["themes"].items()
        for org, count in entry["organisations"].items()
    ]
    best = max(cells, key=lambda cell: cell[3])
    assert best[3] > 0, "the generated library should hold tagged lessons or recommendations"
    return best


def test_map_shows_themes_by_organisations_as_in_kb_map(shared_app) -> None:
    from app_pages.map import ALL_ORGANISATIONS
    from kb.service import Service

    table = Service().exchange_map()
    at = new_app("map")
    assert at.title[0].value == "Map of lessons learned"
    frame = _map_table(at)
    assert list(frame.columns) == [ALL_ORGANISATIONS, "IOM", "UNICEF", "UNODC"]
    assert list(frame.index) == [entry["label"] for entry in table["themes"].values()]
    for entry in table["themes"].values():
        for org, count in entry["organisations"].items():
            assert frame.loc[entry["label"], org] == count
        assert frame.loc[entry["label"], ALL_ORGANISATIONS] == entry["total"]

    # only lessons: the counts follow the chosen passage types
    at.multiselect(key="map_types").set_value(["lesson"]).run()
    lessons = Service().exchange_map(("lesson",))
    frame = _map_table(at)
    assert [int(v) for v in frame[ALL_ORGANISATIONS]] == [e["total"] for e in lessons["themes"].values()]


def test_heat_map_colours_show_gaps_and_the_fullest_cells() -> None:
    from app_pages.map import cell_colour

    assert "#f3f4f6" in cell_colour(0, 10)  # a gap is grey
    assert "rgb(15, 118, 110)" in cell_colour(10, 10) and "#ffffff" in cell_colour(10, 10)
    light, dark = cell_colour(1, 10), cell_colour(5, 10)
    assert light != dark and "#0f172a" in light


def test_clicking_a_map_cell_lists_its_passages_with_citations(fresh_app) -> None:
    from kb.service import Service

    service = Service()
    theme, label, organisation, count = _filled_cell(service.exchange_map())
    expected = service.map_passages(theme, organisation)
    assert len(expected) == count
    at = new_app("map")
    frame = _map_table(at)
    row = list(frame.index).index(label)
    at.session_state["map_table"] = {"selection": {"cells": [[row, organisation]], "rows": [], "columns": []}}
    at.run()
    assert not at.exception, at.exception
    assert at.selectbox(key="map_theme").value == label
    assert at.selectbox(key="map_organisation").value == organisation
    passages = _passage_expanders(at)
    assert len(passages) == count
    assert all(organisation in e.label for e in passages)
    first = expected[0]
    assert first.title in passages[0].label.replace("\\", "")
    assert f"p. {first.page_label}" in passages[0].label.replace("\\", "")

    # "Add passage to brief" puts that passage, with its citation, into the current brief
    buttons(at, "add-passage-map-")[0].click().run()
    assert not at.exception, at.exception
    (brief,) = common.service().briefs().list()
    (item,) = brief.items
    assert item.kind == "passage" and item.citation.chunk_id == first.chunk_id

    # the pickers choose a cell too: the whole row of the theme
    at.selectbox(key="map_organisation").select("All organisations").run()
    assert not at.exception, at.exception
    row_total = len(service.map_passages(theme, None))
    assert len(_passage_expanders(at)) == min(row_total, 25)


def test_one_click_builds_a_theme_brief(fresh_app, downloads) -> None:
    from kb.service import Service

    service = Service()
    theme, label, _, _ = _filled_cell(service.exchange_map())
    at = new_app("map")
    at.selectbox(key="map_theme").select(label).run()
    click(at, f"Build a theme brief: {label}")
    assert any("Theme brief saved" in s.value for s in at.success)
    (brief,) = common.service().briefs().list()
    assert brief.title == f"Theme brief: {label}"
    assert at.session_state["current_brief_id"] == brief.id
    headings = [i.text for i in brief.items if i.kind == "heading"]
    passages = [i for i in brief.items if i.kind == "passage"]
    expected = service.map_passages(theme, None, ("lesson", "recommendation"))
    assert headings == sorted({c.organisation for c in expected}, key=str.casefold)
    assert [p.citation.chunk_id for p in passages] == [c.chunk_id for c in expected]

    # it exports like any brief, with a reference list
    at.switch_page("app_pages/brief.py").run()
    assert not at.exception, at.exception
    markdown = download(at, downloads, "Download Markdown").decode("utf-8")
    assert markdown.startswith(f"# Theme brief") and "## References" in markdown
    for organisation in headings:
        assert f"## {organisation}" in markdown


def test_a_theme_brief_that_cannot_be_saved_is_reported(fresh_app) -> None:
    import shutil

    from kb.service import Service

    _, data = fresh_app
    _, label, _, _ = _filled_cell(Service().exchange_map())
    at = new_app("map")
    at.selectbox(key="map_theme").select(label).run()
    shutil.rmtree(data / "briefs", ignore_errors=True)
    (data / "briefs").write_text("a file where the briefs folder belongs")
    click(at, f"Build a theme brief: {label}")
    assert any("could not be made" in e.value for e in at.error)
    assert not at.success


def test_passage_type_filter_in_the_sidebar(shared_app) -> None:
    from kb.service import Service

    types = {chunk.chunk_id: chunk.passage_type for chunk in Service().searcher.snapshot().chunks}
    at = new_app()
    assert at.multiselect(key="filter_types").options == [
        "Lesson learned", "Good practice", "Recommendation", "Finding or statistic", "Definition or legal provision",
    ]
    at.multiselect(key="filter_types").set_value(["recommendation"]).run()
    ask(at, "What was recommended for the reintegration of survivors?")
    answer = last_answer(at)
    shown = answer.citations + answer.related
    assert shown, "the generated library holds recommendations"
    assert {types[c.chunk_id] for c in shown} == {"recommendation"}
