"""Brief: trainers arrange collected answers and passages, add headings and notes, and
export the brief as Markdown, Word or PDF.  Briefs are saved on disk at every change."""

from __future__ import annotations

import functools
import re
from datetime import datetime, timezone

import streamlit as st

from app_pages import common
from app_pages.common import md
from kb.brief import BriefError, BriefStore, format_source, to_docx, to_markdown, to_pdf

EXPORTS = (
    ("Markdown", "md", "text/markdown", lambda brief: to_markdown(brief).encode("utf-8")),
    ("Word", "docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document", to_docx),
    ("PDF", "pdf", "application/pdf", to_pdf),
)


# --------------------------------------------------------------------------------------
# Callbacks (they run before the page is drawn again)
# --------------------------------------------------------------------------------------


def _create_brief(store: BriefStore) -> None:
    title = st.session_state.get("new_brief_title", "").strip() or "Untitled brief"
    common.set_current_brief(store.create(title).id)
    st.session_state["new_brief_title"] = ""


def _delete_brief(store: BriefStore, brief_id: str) -> None:
    store.delete(brief_id)
    common.set_current_brief(None)


def _rename(store: BriefStore, brief_id: str, key: str) -> None:
    store.rename(brief_id, st.session_state.get(key, ""))


def _move(store: BriefStore, brief_id: str, item_id: str, direction: str) -> None:
    store.move_item(brief_id, item_id, direction)


def _remove(store: BriefStore, brief_id: str, item_id: str) -> None:
    store.remove_item(brief_id, item_id)


def _save_text(store: BriefStore, brief_id: str, item_id: str, key: str) -> None:
    try:
        store.update_item_text(brief_id, item_id, st.session_state.get(key, ""))
    except ValueError as error:
        st.session_state["brief_message"] = str(error)


def _add(store: BriefStore, brief_id: str, kind: str, key: str) -> None:
    text = st.session_state.get(key, "")
    try:
        if kind == "heading":
            store.add_heading(brief_id, text)
        else:
            store.add_note(brief_id, text)
    except ValueError as error:
        st.session_state["brief_message"] = str(error)
        return
    st.session_state[key] = ""


# --------------------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------------------


def choose_brief(store: BriefStore) -> str | None:
    """Sidebar: pick a brief, start a new one, or delete the current one."""
    with st.sidebar:
        st.header("Briefs")
        brief_id = common.brief_picker(store, "brief", "Open brief")
        with st.form("new-brief", border=False):
            st.text_input("Title of a new brief", key="new_brief_title")
            st.form_submit_button("Create brief", on_click=_create_brief, args=(store,))
        if brief_id:
            with st.expander("Delete this brief"):
                st.button("Delete brief", key="delete-brief", on_click=_delete_brief, args=(store, brief_id))
    return brief_id


def render_item(store: BriefStore, brief_id: str, item, position: int, count: int) -> None:
    """One item in a bordered box, with its controls."""
    with st.container(border=True):
        body, controls = st.columns([6, 1])
        with body:
            _render_item_body(store, brief_id, item)
        with controls:
            st.button("Up", key=f"up-{item.id}", disabled=position == 0, on_click=_move, args=(store, brief_id, item.id, "up"))
            st.button("Down", key=f"down-{item.id}", disabled=position == count - 1, on_click=_move, args=(store, brief_id, item.id, "down"))
            st.button("Remove", key=f"remove-{item.id}", on_click=_remove, args=(store, brief_id, item.id))


def _render_item_body(store: BriefStore, brief_id: str, item) -> None:
    if item.kind == "heading":
        st.subheader(md(item.text))
        _editor(store, brief_id, item, "Edit heading", item.text)
    elif item.kind == "note":
        for paragraph in re.split(r"\n\s*\n", item.text):
            st.markdown(md(paragraph))
        _editor(store, brief_id, item, "Edit note", item.text, area=True)
    elif item.kind == "answer":
        st.markdown(f"**Q: {md(item.question)}**")
        st.markdown(common.answer_markdown(item.text))
        for citation in item.citation_records():
            st.caption(md(f"[{citation.n}] {format_source(citation)}"))
    elif item.kind == "passage":
        citation = item.citation
        if citation is None:
            return
        st.markdown(common.highlighted_passage(citation.text or citation.quote, citation.quote))
        st.caption(md(format_source(citation)))
        if item.note:
            st.markdown(f"*Note:* {md(item.note)}")
        _editor(store, brief_id, item, "Edit note", item.note, area=True)


def _editor(store: BriefStore, brief_id: str, item, label: str, value: str, area: bool = False) -> None:
    with st.expander(label):
        key = f"edit-{item.id}"
        if area:
            st.text_area(label, value=value, key=key, label_visibility="collapsed")
        else:
            st.text_input(label, value=value, key=key, label_visibility="collapsed")
        st.button("Save", key=f"save-{item.id}", on_click=_save_text, args=(store, brief_id, item.id, key))


def render_additions(store: BriefStore, brief_id: str) -> None:
    """Add a heading or a note at the end of the brief."""
    left, right = st.columns(2)
    with left:
        st.text_input("New heading", key="new_heading")
        st.button("Add heading", on_click=_add, args=(store, brief_id, "heading", "new_heading"))
    with right:
        st.text_area("New note", key="new_note", height=100)
        st.button("Add note", on_click=_add, args=(store, brief_id, "note", "new_note"))


def render_exports(store: BriefStore, brief) -> None:
    """Download buttons for the three export formats, made when clicked (from the brief
    as saved at that moment), so editing the brief stays quick."""
    st.subheader("Export")
    stem = re.sub(r"[^\w-]+", "-", brief.title).strip("-")[:60] or "brief"
    columns = st.columns(len(EXPORTS))
    for column, (label, extension, mime, export) in zip(columns, EXPORTS):
        with column:
            st.download_button(
                f"Download {label}",
                data=functools.partial(_export, store, brief.id, export),
                file_name=f"{stem}.{extension}",
                mime=mime,
                key=f"download-{extension}",
                on_click="ignore",
            )


def _export(store: BriefStore, brief_id: str, export) -> bytes:
    return export(store.get(brief_id))


def _when(stamp: str) -> str:
    """An ISO 8601 UTC time as ``2025-03-01 14:05 UTC``."""
    try:
        return datetime.fromisoformat(stamp).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        return stamp


def main() -> None:
    store = common.brief_store()
    brief_id = choose_brief(store)
    st.title("Brief")
    message = st.session_state.pop("brief_message", None)
    if message:
        st.warning(md(message))
    if brief_id is None:
        st.info("No brief yet. Create one in the sidebar, or use Add to brief on the Ask page.")
        return
    try:
        brief = store.get(brief_id)
    except BriefError as error:
        st.error(md(f"This brief cannot be opened: {error}"))
        return
    title_key = f"title-{brief.id}"
    st.text_input("Title", value=brief.title, key=title_key, on_change=_rename, args=(store, brief.id, title_key))
    count = len(brief.items)
    st.caption(md(f"{count} item{'' if count == 1 else 's'}; last saved {_when(brief.updated)}"))
    if not brief.items:
        st.info("This brief is empty. Add answers and passages from the Ask page, or a heading or a note below.")
    for position, item in enumerate(brief.items):
        render_item(store, brief.id, item, position, len(brief.items))
    render_additions(store, brief.id)
    if brief.items:
        render_exports(store, brief)


main()
