"""Library: every document with its status for everyone; adding, replacing, editing and
removing documents for staff, behind the staff password."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app_pages import common
from app_pages.common import md
from ingest.pipeline import IngestBusy
from kb import uploads

_FLASH = "library_flash"
_UPLOAD_ROUND = "upload_round"

HOW_TO_ENABLE = (
    "Staff actions (adding, replacing, editing and removing documents) are off because no "
    "staff password is configured. To turn them on, set the environment variable "
    "`KB_STAFF_PASSWORD` before starting the app, or add `staff_password = \"...\"` to "
    "`.streamlit/secrets.toml` (never commit that file), then restart the app."
)


# --------------------------------------------------------------------------------------
# The table (everyone)
# --------------------------------------------------------------------------------------


def library_frame(rows: list[dict], query: str) -> pd.DataFrame:
    """The library as a table, filtered by a case-insensitive text search."""
    columns = ["title", "organisation", "year", "file", "status", "pages", "chunks", "reason", "warnings", "doc_id"]
    records = []
    for row in rows:
        record = {name: row.get(name) for name in columns}
        record["warnings"] = "; ".join(row.get("warnings") or [])
        record["doc_id"] = (row.get("doc_id") or "")[:12]
        records.append(record)
    frame = pd.DataFrame(records, columns=columns)
    query = query.strip().casefold()
    if query and len(frame):
        text = frame.astype(str).agg(" ".join, axis=1).str.casefold()
        frame = frame[text.str.contains(query, regex=False)]
    return frame


def render_table(service) -> list[dict]:
    rows = service.library()
    stats = service.stats()
    counts = st.columns(4)
    counts[0].metric("Documents", stats.get("documents", 0))
    counts[1].metric("Pages", stats.get("pages", 0))
    counts[2].metric("Passages", stats.get("chunks", 0))
    counts[3].metric("Failed files", len(stats.get("failed", [])))
    if stats.get("older_version_note"):
        st.info(stats["older_version_note"])
    query = st.text_input("Search the library", key="library_search", placeholder="title, organisation, file, status...")
    frame = library_frame(rows, query)
    st.dataframe(
        frame,
        hide_index=True,
        width="stretch",
        column_config={
            "year": st.column_config.NumberColumn("year", format="%d"),
            "doc_id": st.column_config.TextColumn("document id"),
        },
    )
    st.caption(f"{len(frame)} of {len(rows)} files shown. Click a column heading to sort.")
    return rows


# --------------------------------------------------------------------------------------
# Staff: signing in
# --------------------------------------------------------------------------------------


def render_sign_in() -> None:
    with st.form("staff-sign-in", clear_on_submit=True):
        password = st.text_input("Staff password", type="password", key="staff_password_input")
        submitted = st.form_submit_button("Sign in")
    if submitted:
        result = common.sign_in(password)
        if result.ok:
            st.rerun()
        st.error(result.message)


# --------------------------------------------------------------------------------------
# Staff: actions (each one re-checks the staff token before doing anything)
# --------------------------------------------------------------------------------------


def _refused() -> bool:
    """True (and a message) when this session is not signed in as staff."""
    if common.is_staff():
        return False
    st.error("Staff actions need the staff password.")
    return True


def _known_documents(rows: list[dict]) -> dict[str, str]:
    return {row["doc_id"]: row["file"] for row in rows if row.get("doc_id") and row.get("status") == "ready"}


def _ingest(service, paths) -> list[dict]:
    """Ingest ``paths`` with a progress bar; the per-file results as table rows."""
    bar = st.progress(0.0, text="Starting...")

    def on_progress(step) -> None:
        if step.pages_estimate:
            fraction = step.pages_done / step.pages_estimate
        else:
            fraction = step.files_done / max(1, step.files_total)
        bar.progress(min(1.0, max(0.0, fraction)), text=md(f"{step.files_done} of {step.files_total} files: {step.current}"))

    try:
        report = service.ingest(list(paths), progress=on_progress)
    except IngestBusy as error:
        bar.empty()
        return [{"file": "", "status": "failed", "reason": str(error)}]
    bar.progress(1.0, text="Done")
    common.publish_all(service)
    return [
        {"file": r.file, "status": r.status, "pages": r.pages, "chunks": r.chunks, "reason": r.reason or "; ".join(r.warnings)}
        for r in report.results
    ]


def _upload_rows(results: list[uploads.UploadResult]) -> list[dict]:
    return [
        {"file": r.file, "status": r.status, "pages": None, "chunks": None, "reason": r.reason}
        for r in results
        if r.status != "saved"
    ]


def _finish(message: str, rows: list[dict]) -> None:
    """Keep the outcome for the next run and draw the page again (fresh table)."""
    st.session_state[_FLASH] = {"message": message, "rows": rows}
    st.rerun()


def _add_files(service, settings, rows, named_files, replace_name: str | None = None) -> None:
    """Write checked files into the documents folder, ingest them, report per file."""
    results = uploads.accept_uploads(
        named_files,
        settings.documents_dir,
        max_bytes=uploads.max_upload_bytes(settings),
        known=_known_documents(rows),
        replace_name=replace_name,
    )
    saved = [r.path for r in results if r.status == "saved" and r.path is not None]
    report = _ingest(service, saved) if saved else []
    st.session_state[_UPLOAD_ROUND] = st.session_state.get(_UPLOAD_ROUND, 0) + 1
    _finish(f"{len(saved)} of {len(results)} files written to the documents folder.", report + _upload_rows(results))


def render_upload(service, settings, rows) -> None:
    st.caption(f"PDF files only (checked by their content), at most {settings.upload_max_mb} MB each.")
    round_ = st.session_state.get(_UPLOAD_ROUND, 0)
    files = st.file_uploader(
        "PDF files", type=["pdf"], accept_multiple_files=True, key=f"upload-files-{round_}", max_upload_size=settings.upload_max_mb
    )
    if st.button("Add these files", key="upload-button", disabled=not files):
        if _refused():
            return
        _add_files(service, settings, rows, [(f.name, f.getvalue()) for f in files])


def render_url(service, settings, rows) -> None:
    st.caption("An http(s) address of a PDF report; it is downloaded into the documents folder.")
    url = st.text_input("Address of the report", key="report_url")
    if st.button("Fetch and add", key="url-button", disabled=not url.strip()):
        if _refused():
            return
        try:
            name, data = uploads.fetch_url(url, max_bytes=uploads.max_upload_bytes(settings))
        except uploads.UploadError as error:
            _finish("Nothing was added.", [{"file": url, "status": "rejected", "reason": str(error)}])
            return
        _add_files(service, settings, rows, [(name, data)])


def _choice(label: str, options: list, key: str, **kwargs):
    """A select box that forgets a choice no longer on offer (e.g. a replaced document)."""
    if key in st.session_state and st.session_state[key] not in options:
        del st.session_state[key]
    return st.selectbox(label, options, key=key, **kwargs)


def _ready_rows(rows) -> list[dict]:
    return [r for r in rows if r.get("doc_id") and r.get("status") == "ready"]


def render_edit(service, settings, rows) -> None:
    documents = {r["doc_id"]: r for r in _ready_rows(rows)}
    if not documents:
        st.caption("No documents yet.")
        return
    doc_id = _choice("Document", list(documents), "edit_doc", format_func=lambda d: documents[d]["file"])
    row = documents[doc_id]
    with st.form(f"edit-{doc_id}"):
        title = st.text_input("Title", value=row.get("title") or "")
        organisation = st.text_input("Organisation", value=row.get("organisation") or "")
        year = st.text_input("Year", value=str(row.get("year") or ""))
        url = st.text_input("Web address", value=row.get("url") or "")
        submitted = st.form_submit_button("Save metadata")
    if submitted:
        if _refused():
            return
        try:
            _, note = uploads.update_document_metadata(
                service, doc_id, title=title, organisation=organisation, year=year, url=url, language=""
            )
        except (uploads.UploadError, KeyError, IngestBusy) as error:
            st.error(md(str(error)))
            return
        _finish(f"Metadata of {row['file']} {note}.", [])


def render_replace(service, settings, rows) -> None:
    folder = settings.documents_dir
    files = sorted({r["file"] for r in rows if uploads.is_inside(r["path"], folder)})
    if not files:
        st.caption("No files in the documents folder to replace.")
        return
    name = _choice("File to replace", files, "replace_file")
    round_ = st.session_state.get(_UPLOAD_ROUND, 0)
    upload = st.file_uploader(
        "New version (PDF)", type=["pdf"], key=f"replace-upload-{round_}", max_upload_size=settings.upload_max_mb
    )
    if st.button("Replace", key="replace-button", disabled=upload is None):
        if _refused():
            return
        _add_files(service, settings, rows, [(upload.name, upload.getvalue())], replace_name=name)


def render_delete(service, settings, rows) -> None:
    if not rows:
        st.caption("No files yet.")
        return
    by_path = {r["path"]: r for r in rows}
    path = _choice(
        "File to remove", list(by_path), "delete_path", format_func=lambda p: f"{by_path[p]['file']} ({by_path[p]['status']})"
    )
    confirmed = st.checkbox("Yes, remove this document from the library", key="delete_confirm")
    if st.button("Remove", key="delete-button", disabled=not confirmed):
        if _refused():
            return
        row = by_path[path]
        try:
            message = _remove(service, settings, row)
        except (KeyError, uploads.UploadError, IngestBusy) as error:
            st.error(md(str(error)))
            return
        st.session_state.pop("delete_confirm", None)
        _finish(message, [])


def _remove(service, settings, row) -> str:
    """A ready document leaves through the service; a failed or duplicate file in the
    documents folder is moved out and the folder synced."""
    if row.get("doc_id") and row.get("status") == "ready":
        names = service.remove(row["doc_id"])
        common.publish_all(service)
        return f"Removed {', '.join(names)} (the file was moved to the data folder's removed/ folder)."
    if not uploads.is_inside(row["path"], settings.documents_dir):
        raise uploads.UploadError(f"{row['file']} is not in the documents folder; remove it where it is and sync")
    uploads.discard_file(settings.documents_dir, row["file"], settings.data_dir / "removed")
    service.ingest([settings.documents_dir])
    return f"Removed {row['file']} (moved to the data folder's removed/ folder)."


def render_sync(service, settings) -> None:
    st.caption(md(f"Bring the library in line with the documents folder ({settings.documents_dir}): new and changed PDFs are ingested, vanished ones removed."))
    if st.button("Sync the documents folder", key="sync-button"):
        if _refused():
            return
        _finish("Documents folder synced.", _ingest(service, [settings.documents_dir]))


def render_staff(service, rows) -> None:
    settings = common.current_settings()
    st.success("Signed in as staff.")
    st.button("Sign out", key="sign-out", on_click=common.sign_out)
    tabs = st.tabs(["Upload PDFs", "Add by address", "Edit metadata", "Replace", "Remove", "Sync folder"])
    with tabs[0]:
        render_upload(service, settings, rows)
    with tabs[1]:
        render_url(service, settings, rows)
    with tabs[2]:
        render_edit(service, settings, rows)
    with tabs[3]:
        render_replace(service, settings, rows)
    with tabs[4]:
        render_delete(service, settings, rows)
    with tabs[5]:
        render_sync(service, settings)


def render_flash() -> None:
    flash = st.session_state.pop(_FLASH, None)
    if not flash:
        return
    st.info(md(flash["message"]))
    if flash["rows"]:
        st.dataframe(pd.DataFrame(flash["rows"]), hide_index=True, width="stretch")


def main() -> None:
    service = common.service()
    st.title("Library")
    render_flash()
    rows = render_table(service)
    st.header("Staff")
    gate = common.staff_gate()
    if not gate.enabled:
        st.info(HOW_TO_ENABLE)
    elif not common.is_staff():
        render_sign_in()
    else:
        render_staff(service, rows)


main()
