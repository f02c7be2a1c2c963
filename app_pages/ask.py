"""Ask: practitioners chat with the library and get answers with their sources."""

from __future__ import annotations

import streamlit as st

from app_pages import common
from app_pages.common import md
from kb.conversation import Turn
from kb.snapshot import Filters
from kb.themes import PASSAGE_TYPE_LABELS, PASSAGE_TYPES

STARTER_QUESTIONS = (
    "What lessons were learned about identifying victims of trafficking?",
    "What works in the reintegration of trafficking survivors?",
    "How can prosecutors support victims who testify?",
    "What are good practices for preventing labour trafficking in recruitment?",
)

_CONVERSATION = "conversation"
_PENDING = "pending_question"


# --------------------------------------------------------------------------------------
# Sidebar
# --------------------------------------------------------------------------------------


def sidebar_filters(service) -> Filters:
    """Organisation, years, documents, themes (once passages carry them) and passage types."""
    st.header("Filters")
    organisations = st.multiselect("Organisation", service.organisations(), key="filter_organisations")
    year_from = year_to = None
    years = service.year_range()
    if years and years[0] < years[1]:
        chosen = st.slider("Years", years[0], years[1], (years[0], years[1]), key="filter_years")
        if tuple(chosen) != tuple(years):  # only a narrowed range filters (keeps undated documents otherwise)
            year_from, year_to = chosen
    documents = {d.doc_id: d for d in service.documents()}
    chosen_documents = st.multiselect(
        "Document",
        list(documents),
        key="filter_documents",
        format_func=lambda doc_id: _document_name(documents.get(doc_id)),
    )
    themes = service.themes()
    labels = service.theme_labels() if themes else {}
    chosen_themes = (
        st.multiselect("Theme", themes, key="filter_themes", format_func=lambda theme: labels.get(theme, theme))
        if themes
        else []
    )
    chosen_types = st.multiselect(
        "Passage type",
        list(PASSAGE_TYPES),
        key="filter_types",
        format_func=lambda kind: PASSAGE_TYPE_LABELS.get(kind, kind),
        help="Only passages that state a lesson learned, a good practice, a recommendation...",
    )
    return Filters(
        organisations=organisations or None,
        year_from=year_from,
        year_to=year_to,
        documents=chosen_documents or None,
        themes=chosen_themes or None,
        passage_types=chosen_types or None,
    )


def _document_name(document) -> str:
    if document is None:
        return "(no longer in the library)"
    details = ", ".join(str(p) for p in (document.organisation, document.year) if p)
    return f"{document.title} ({details})" if details else document.title


def sidebar_session() -> None:
    """New conversation, and the brief that "Add to brief" adds to."""
    st.divider()
    st.button("New conversation", on_click=_new_conversation, width="stretch")
    if common.brief_picker(common.brief_store(), "ask", "Add to brief") is None:
        st.caption("Adding an answer or a passage starts a new brief.")


def _new_conversation() -> None:
    st.session_state[_CONVERSATION] = []
    st.session_state.pop(_PENDING, None)


def _ask_starter(question: str) -> None:
    st.session_state[_PENDING] = question


# --------------------------------------------------------------------------------------
# Answers
# --------------------------------------------------------------------------------------


def render_answer(service, turn: dict) -> None:
    """An answer (or an abstention) with its sources and the brief buttons."""
    answer = turn["answer"]
    key = turn["id"]
    if answer.abstained:
        _render_abstention(service, answer, key)
        return
    st.markdown(common.answer_markdown(answer.answer))
    notes = [n for n in answer.notes if not n.startswith("relevance")]
    if notes:
        st.caption(md("Note: " + " ".join(notes)))
    st.button("Add answer to brief", key=f"add-answer-{key}", on_click=common.add_answer_to_brief, args=(answer,))
    if answer.citations:
        st.markdown("**Sources**")
        for citation in answer.citations:
            common.render_citation(service, citation, f"{key}-{citation.n}")


def _render_abstention(service, answer, key: str) -> None:
    st.warning(f"**Not in the library.** {md(answer.answer)}")
    if answer.related:
        st.markdown("**Related reading**")
        for position, citation in enumerate(answer.related, start=1):
            common.render_citation(service, citation, f"{key}-related-{position}", numbered=False)


def history_of(conversation: list[dict]) -> list[Turn]:
    """The conversation so far, as the service wants it for follow-up questions."""
    return [
        Turn(question=t["question"], resolved_question=t["answer"].resolved_question, answer=t["answer"].answer)
        for t in conversation
    ]


def answer_question(service, question: str, filters: Filters, conversation: list[dict]) -> None:
    """Show the answer as it is made, then the verified answer with its sources."""
    with st.chat_message("user"):
        st.markdown(md(question))
    with st.chat_message("assistant"):
        live = st.empty()
        history = history_of(conversation)
        try:
            with live.container():
                with st.spinner("Searching the library..."):
                    tokens, final = service.stream_ask(question, history, filters)
                st.write_stream(common.safe_stream(tokens))
            answer = final()
        except Exception as error:  # a failing language model: the plain answer instead
            live.empty()
            st.caption(md(f"Streaming failed ({type(error).__name__}); showing the answer directly."))
            answer = service.ask(question, history, filters)
        live.empty()
        turn = {"id": common.new_id(), "question": question, "answer": answer}
        conversation.append(turn)
        render_answer(service, turn)


# --------------------------------------------------------------------------------------
# Page
# --------------------------------------------------------------------------------------


def main() -> None:
    service = common.service()
    with st.sidebar:
        filters = sidebar_filters(service)
        sidebar_session()
    st.title("Ask the library")
    counts = service.stats()
    st.caption(
        f"{counts.get('documents', 0)} documents, {counts.get('pages', 0)} pages. "
        "Answers quote the reports themselves; every statement links to its source."
    )
    if not counts.get("documents"):
        st.info("The library is empty. Staff can add reports on the Library page.")
    typed = st.chat_input("Ask about lessons learned, good practices, recommendations...")
    question = (typed or st.session_state.pop(_PENDING, None) or "").strip()
    conversation = st.session_state.setdefault(_CONVERSATION, [])
    for turn in conversation:
        with st.chat_message("user"):
            st.markdown(md(turn["question"]))
        with st.chat_message("assistant"):
            render_answer(service, turn)
    if question:
        answer_question(service, question, filters, conversation)
    elif not conversation:
        st.markdown("**Try one of these questions:**")
        for position, starter in enumerate(STARTER_QUESTIONS):
            st.button(starter, key=f"starter-{position}", on_click=_ask_starter, args=(starter,))


main()
