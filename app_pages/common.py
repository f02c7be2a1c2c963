"""UI helpers shared by the app's pages: the cached service, safe rendering of document
text, citations, the current brief and the staff session.  No business logic lives here:
everything the pages do goes through :class:`kb.service.Service`, :mod:`kb.brief`,
:mod:`kb.uploads` and :mod:`kb.staff`.

Document text is untrusted.  It is only ever shown through :func:`md` (or the functions
built on it), which backslash-escapes every ASCII punctuation character and puts an
invisible word joiner inside bare addresses, so a PDF cannot make a link, an image, HTML,
a heading, a list, LaTeX or an emoji short code.  HTML is never allowed in any Markdown
call of the app.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import streamlit as st

from kb.brief import BriefError, BriefStore, format_page
from kb.records import Answer, Citation
from kb.settings import Settings, get_settings
from kb.staff import ANY_CLIENT, StaffGate
from kb.uploads import prune_published, publish_document, published_name
from kb.verify import quote_parts

ROOT = Path(__file__).resolve().parents[1]
#: Where PDFs are published for the browser (``[server] enableStaticServing``).
STATIC_DOCS_DIR = ROOT / "static" / "docs"
#: The URL of that folder, relative to the app's address.
STATIC_DOCS_URL = "app/static/docs"

APP_TITLE = "Counter-Trafficking Knowledge Exchange"

# --------------------------------------------------------------------------------------
# The service, loaded once per settings
# --------------------------------------------------------------------------------------


def current_settings() -> Settings:
    """Settings from the environment (``KB_*`` variables), read on every run."""
    return get_settings()


@st.cache_resource(show_spinner="Opening the library...")
def _load_service(key: str, _settings: Settings):
    """One :class:`Service` per distinct settings (``key`` is their repr, password excluded)."""
    from kb.service import Service

    service = Service(_settings)
    publish_all(service)
    threading.Thread(target=_warm_up, args=(service,), name="warm-up", daemon=True).start()
    return service


def _warm_up(service) -> None:
    """Load the embedding model and the search snapshot while the first page is read,
    so the first question does not wait for them (errors show up on that question)."""
    try:
        service.search("trafficking", k=1)
    except Exception:  # noqa: BLE001 - the real call will report it
        pass


def service():
    """The shared service for the current settings."""
    settings = current_settings()
    return _load_service(repr(settings), settings)


# --------------------------------------------------------------------------------------
# Safe text
# --------------------------------------------------------------------------------------

# Every ASCII punctuation character: a backslash before it makes Markdown show it as is.
_MD_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")
_SPACES = re.compile(r"\s+")
# Bare addresses ("http://...", "www....", "name@host") become links after escapes are
# resolved; an invisible word joiner inside each trigger stops that.
_AUTOLINK_TRIGGERS = re.compile(r"(?<=:)(?=//)|(?<=www)(?=\.)|(?<=@)", re.IGNORECASE)
WORD_JOINER = "\u2060"


def _literal(text: str) -> str:
    """Escape markup characters and break bare-address links (white space left alone)."""
    return _MD_PUNCTUATION.sub(r"\\\1", _AUTOLINK_TRIGGERS.sub(WORD_JOINER, text))


def escape_md(text: object) -> str:
    """``text`` with all Markdown/HTML syntax neutralised and white space collapsed
    (leading and trailing spaces are kept, as single spaces)."""
    return _literal(_SPACES.sub(" ", str(text or "")))


def md(text: object) -> str:
    """Untrusted text as literal, one-line Markdown."""
    return escape_md(str(text or "").strip())


_HEADING_LINE = re.compile(r"^\*\*([^*].*?)\*\*:?$")
_BULLET = re.compile(r"^(?:[-*\u2022]|(\d{1,2})[.)])\s+")


def answer_markdown(text: str) -> str:
    """An answer as Markdown: our structure kept, every quoted word escaped.

    The answerers write plain lines: a lead sentence, bullet lines (``- ``), and
    organisation headings (a whole line in ``**``).  Only those line-level marks are
    kept; the text of every line, the ``[n]`` markers included, is escaped.
    """
    lines: list[str] = []
    for raw in str(text or "").split("\n"):
        line = raw.strip()
        if not line:
            lines.append("")
            continue
        heading = _HEADING_LINE.match(line)
        if heading:
            lines.append(f"**{md(heading.group(1))}**")
            continue
        bullet = _BULLET.match(line)
        if bullet:
            prefix = f"{bullet.group(1)}. " if bullet.group(1) else "- "
            lines.append(prefix + md(line[bullet.end():]))
        else:
            lines.append(md(line))
    return "\n".join(lines)


def safe_stream(tokens: Iterable[str]) -> Iterator[str]:
    """Escape streamed answer text as it arrives (line breaks kept, no indentation)."""
    at_line_start = True
    for token in tokens:
        pieces = str(token).split("\n")
        out = []
        for i, piece in enumerate(pieces):
            if i:
                out.append("\n")
                at_line_start = True
            if at_line_start:
                piece = piece.lstrip()
            if piece:
                out.append(_literal(re.sub(r"[ \t]+", " ", piece)))
                at_line_start = False
        yield "".join(out)


def highlighted_passage(passage: str, quote: str) -> str:
    """The passage as safe Markdown, with the quoted sentence(s) in bold."""
    text = " ".join(str(passage or "").split())
    spans: list[tuple[int, int]] = []
    for part in quote_parts(quote or ""):
        part = " ".join(part.split())
        start = text.find(part) if part else -1
        if start >= 0 and not any(s < start + len(part) and start < e for s, e in spans):
            spans.append((start, start + len(part)))
    out: list[str] = []
    position = 0
    for start, end in sorted(spans):
        out.append(escape_md(text[position:start]))
        out.append(f"**{md(text[start:end])}**")
        position = end
    out.append(escape_md(text[position:]))
    return "".join(out).strip()


# --------------------------------------------------------------------------------------
# Citations
# --------------------------------------------------------------------------------------


def citation_label(citation: Citation, numbered: bool = True) -> str:
    """Expander label: ``[n] Title - Organisation, Year, p. 67`` (escaped)."""
    parts = [citation.title or citation.file or "Untitled document"]
    details = ", ".join(str(p) for p in (citation.organisation, citation.year, format_page(citation)) if p)
    label = f"{parts[0]} - {details}" if details else parts[0]
    if numbered:
        label = f"[{citation.n}] {label}"
    return md(label)


def pdf_url(service, citation: Citation) -> str | None:
    """A link opening the cited PDF at its page, or ``None`` when the file is not at hand."""
    try:
        name = published_name(citation.doc_id)
    except ValueError:
        return None
    if not (STATIC_DOCS_DIR / name).is_file():
        if not publish_document(citation.doc_id, service.source_path(citation.doc_id), STATIC_DOCS_DIR):
            return None
    page = citation.page if isinstance(citation.page, int) and citation.page > 0 else 1
    return f"{STATIC_DOCS_URL}/{name}#page={page}"


def publish_all(service) -> None:
    """Publish every ready document for the browser and drop those no longer in the library."""
    ready = {d.doc_id for d in service.documents()}
    for doc_id in ready:
        publish_document(doc_id, service.source_path(doc_id), STATIC_DOCS_DIR)
    prune_published(STATIC_DOCS_DIR, ready)


def render_citation(service, citation: Citation, key: str, *, numbered: bool = True, expanded: bool = False) -> None:
    """One source as an expander: where it is from, the passage with the quote in bold,
    a link to the PDF at that page and "Add to brief"."""
    with st.expander(citation_label(citation, numbered), expanded=expanded):
        where = [citation.organisation, str(citation.year or ""), format_page(citation)]
        st.caption(md(" | ".join(p for p in where if p)))
        st.markdown(highlighted_passage(citation.text, citation.quote))
        left, right = st.columns(2)
        url = pdf_url(service, citation)
        with left:
            if url:
                st.link_button(f"Open PDF at page {citation.page}", url)
            else:
                st.caption("The PDF is not available on this server.")
        with right:
            st.button(
                "Add passage to brief",
                key=f"add-passage-{key}",
                on_click=add_passage_to_brief,
                args=(citation,),
            )


# --------------------------------------------------------------------------------------
# Briefs
# --------------------------------------------------------------------------------------

_CURRENT_BRIEF = "current_brief_id"


def brief_store() -> BriefStore:
    return service().briefs()


def current_brief_id(store: BriefStore) -> str | None:
    """The brief this session works on: the one chosen, else the most recently updated."""
    chosen = st.session_state.get(_CURRENT_BRIEF)
    try:
        if isinstance(chosen, str) and store.exists(chosen):
            return chosen
    except BriefError:
        pass
    briefs = store.list()
    if briefs:
        st.session_state[_CURRENT_BRIEF] = briefs[0].id
        return briefs[0].id
    return None


def set_current_brief(brief_id: str | None) -> None:
    st.session_state[_CURRENT_BRIEF] = brief_id


def ensure_brief(store: BriefStore) -> str:
    """The current brief, creating one when there is none yet."""
    brief_id = current_brief_id(store)
    if brief_id is None:
        brief_id = store.create("Untitled brief").id
        set_current_brief(brief_id)
    return brief_id


def _added(what: str, store: BriefStore, brief_id: str) -> None:
    st.toast(f"{what} added to the brief {md(store.get(brief_id).title)}")


def add_answer_to_brief(answer: Answer) -> None:
    """Callback: the answer (question, text, citations) goes into the current brief."""
    store = brief_store()
    brief_id = ensure_brief(store)
    store.add_answer(brief_id, answer)
    _added("Answer", store, brief_id)


def add_passage_to_brief(citation: Citation) -> None:
    """Callback: one cited passage goes into the current brief."""
    store = brief_store()
    brief_id = ensure_brief(store)
    store.add_passage(brief_id, citation)
    _added("Passage", store, brief_id)


def brief_picker(store: BriefStore, where: str, label: str = "Brief") -> str | None:
    """A select box of the briefs, kept in step with the session's current brief."""
    briefs = store.list()
    if not briefs:
        return None
    ids = [b.id for b in briefs]
    titles = {b.id: b.title for b in briefs}
    current = current_brief_id(store)
    key = f"brief-picker-{where}"
    if st.session_state.get(key) not in ids or st.session_state.get(key) != current:
        st.session_state[key] = current
    return st.selectbox(
        label,
        ids,
        key=key,
        format_func=lambda brief_id: titles.get(brief_id, brief_id),
        on_change=lambda: set_current_brief(st.session_state[key]),
    )


def new_id() -> str:
    return uuid.uuid4().hex


# --------------------------------------------------------------------------------------
# Staff
# --------------------------------------------------------------------------------------

_STAFF_TOKEN = "staff_token"


def _secrets():
    """The app's secrets, or ``None`` when there is no secrets file."""
    try:
        return st.secrets if st.secrets.load_if_toml_exists() else None
    except Exception:  # an unreadable secrets file: no staff password from there
        return None


def staff_gate() -> StaffGate:
    return StaffGate.from_settings(current_settings(), _secrets())


def session_id() -> str:
    """The server-side id of this browser session (not something the browser can set)."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    return str(ctx.session_id) if ctx is not None else ""


def client_key() -> str:
    """Who is trying to sign in, for the rate limit: the client address when known."""
    try:
        address = st.context.ip_address
    except Exception:
        address = None
    return address if isinstance(address, str) and address else ANY_CLIENT


def is_staff() -> bool:
    """Re-verify this session's staff token (call before every staff action)."""
    return staff_gate().verify(st.session_state.get(_STAFF_TOKEN), session_id())


def sign_in(password: str):
    """Try the password; on success keep the token in the session."""
    result = staff_gate().login(password, session_id(), client_key())
    if result.ok:
        st.session_state[_STAFF_TOKEN] = result.token
    return result


def sign_out() -> None:
    st.session_state.pop(_STAFF_TOKEN, None)
