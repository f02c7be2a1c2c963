"""The real app in a real browser: ``streamlit run app.py`` on a small library the test
builds, driven by Playwright with the system's Chromium.

Ask a question, see an answer with a citation, open a source, check that hostile PDF
text stays text, add the passage to a brief and download the brief as Markdown.  A
screenshot is saved in the test's temporary folder (and in ``bench/results/app.png``
when that folder exists).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest_app import APP, HOSTILE_EMAIL, HOSTILE_LINK, HOSTILE_SCRIPT, HOSTILE_WWW, LIBRARY, ROOT, build_library, free_port

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]
STARTUP_S = 90
ANSWER_MS = 180_000

pytestmark = pytest.mark.slow


@pytest.fixture
def app_url(tmp_path):
    """The app running on a free port of 127.0.0.1 with a freshly built library."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium package to run the browser test")
    pytest.importorskip("playwright.sync_api", reason="playwright (python) is not installed")
    documents, data = build_library(tmp_path / "library")
    port = free_port()
    env = {
        **os.environ,
        "KB_DATA_DIR": str(data),
        "KB_DOCUMENTS_DIR": str(documents),
        "HF_HUB_OFFLINE": "1",
        "ANONYMIZED_TELEMETRY": "False",
    }
    for name in ("KB_LLM", "KB_CHROMA_URL", "KB_STAFF_PASSWORD"):
        env.pop(name, None)
    log = (tmp_path / "streamlit.log").open("w")
    command = [
        sys.executable, "-m", "streamlit", "run", str(APP),
        "--server.address", "127.0.0.1", "--server.port", str(port), "--server.headless", "true",
        "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
    ]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_healthy(url, process, tmp_path / "streamlit.log")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
        _remove_published(documents)


def _wait_until_healthy(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"streamlit exited early:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"streamlit did not start within {STARTUP_S} s:\n{log.read_text()[-3000:]}")


def _remove_published(documents: Path) -> None:
    """The app publishes PDFs into the repository's static/docs; take ours back out."""
    from kb.uploads import content_id

    for name in LIBRARY:
        path = ROOT / "static" / "docs" / f"{content_id((documents / name).read_bytes())}.pdf"
        if path.exists():
            path.unlink()


def _ask(page, question: str) -> None:
    box = page.get_by_test_id("stChatInputTextArea")
    box.fill(question)
    box.press("Enter")


def _wait_until_idle(page) -> None:
    """Wait for the app's script run to finish.

    A button clicked while a run is still drawing the page can be dropped by Streamlit
    (on a slow machine the answer is on screen before its run ends), so every click on a
    button waits for this first.
    """
    from playwright.sync_api import expect

    expect(page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]')).to_have_count(1, timeout=ANSWER_MS)


def test_ask_cite_open_source_add_to_brief_and_export(app_url, tmp_path) -> None:
    try:
        _ask_cite_open_source_add_to_brief_and_export(app_url, tmp_path)
    except Exception as error:  # say what the app printed: a failure on a CI machine is otherwise mute
        log = (tmp_path / "streamlit.log").read_text(encoding="utf-8", errors="replace")[-4000:]
        raise AssertionError(f"{error}\n--- the app's log, last 4,000 characters ---\n{log}") from error


def _ask_cite_open_source_add_to_brief_and_export(app_url, tmp_path) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(accept_downloads=True, viewport={"width": 1400, "height": 1000})
            page = context.new_page()
            page.goto(app_url)
            expect(page.get_by_role("heading", name="Ask the library")).to_be_visible(timeout=60_000)

            # an answer with a citation
            _ask(page, "How should frontline officers identify victims of trafficking?")
            source = page.get_by_test_id("stExpander").filter(has_text="Victim Identification in Practice").first
            expect(source).to_be_visible(timeout=ANSWER_MS)
            answer = page.get_by_test_id("stChatMessage").last
            expect(answer).to_contain_text("Frontline officers should be trained")
            expect(answer).to_contain_text("[1]")
            _wait_until_idle(page)

            # open a source: the passage and a link to the PDF at the cited page
            source.locator("summary").click()
            link = source.get_by_role("link", name=re.compile(r"Open PDF at page \d+"))
            expect(link).to_be_visible()
            href = link.get_attribute("href") or ""
            assert re.search(r"app/static/docs/[0-9a-f]{64}\.pdf#page=\d+$", href), href
            pdf = context.request.get(f"{app_url}/{href.split('#')[0].lstrip('/')}")
            assert pdf.ok and pdf.headers["content-type"] == "application/pdf" and pdf.body().startswith(b"%PDF-")

            # add the passage to a brief
            _wait_until_idle(page)
            source.get_by_role("button", name="Add passage to brief").click()
            expect(page.get_by_text("added to the brief")).to_be_visible(timeout=30_000)
            # the brief now exists: the sidebar offers it instead of saying one will be started
            picker = page.get_by_test_id("stSidebar").get_by_role("combobox", name="Add to brief")
            expect(picker).to_be_visible(timeout=30_000)
            _wait_until_idle(page)

            # hostile text in a PDF stays text: no link, no script
            _ask(page, "How should child victims be protected?")
            child = page.get_by_test_id("stExpander").filter(has_text="Protecting Child Victims").first
            expect(child).to_be_visible(timeout=ANSWER_MS)
            _wait_until_idle(page)
            child.locator("summary").click()
            expect(child.get_by_test_id("stMarkdownContainer").first).to_be_visible()
            shown = child.inner_text().replace("\u2060", "")
            assert HOSTILE_LINK in shown and HOSTILE_WWW in shown and HOSTILE_EMAIL in shown and HOSTILE_SCRIPT in shown
            assert page.locator('a[href*="evil"]').count() == 0
            assert page.locator("script", has_text="alert(1)").count() == 0
            page.screenshot(path=str(tmp_path / "app.png"), full_page=True)
            results = ROOT / "bench" / "results"
            if results.is_dir():
                shutil.copyfile(tmp_path / "app.png", results / "app.png")

            # the brief page lists the passage and exports Markdown
            page.get_by_test_id("stSidebarNav").get_by_role("link", name="Brief").click()
            expect(page.get_by_role("heading", name="Brief", exact=True)).to_be_visible(timeout=30_000)
            expect(page.get_by_text("Frontline officers should be trained").first).to_be_visible()
            _wait_until_idle(page)
            with page.expect_download(timeout=30_000) as download_info:
                page.get_by_role("button", name="Download Markdown").click()
            saved = tmp_path / "brief.md"
            download_info.value.save_as(saved)
            markdown = saved.read_text(encoding="utf-8")
            assert markdown.startswith("# Untitled brief")
            assert "## References" in markdown and "Victim Identification in Practice" in markdown
            page.screenshot(path=str(tmp_path / "brief.png"), full_page=True)
        finally:
            browser.close()
