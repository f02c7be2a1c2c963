"""Briefs: trainers collect answers, passages, headings and notes, then export them.

A *brief* is an ordered list of items:

* ``answer``   - a question, the answer text with inline ``[n]`` markers, and the
                 answer's own citations (``[n]`` refers to the citation with ``n``);
* ``passage``  - one cited passage (a :class:`kb.records.Citation`), with an optional note;
* ``heading``  - a section heading;
* ``note``     - free text written by the trainer.

This module has three parts, read top to bottom:

1. **Data model** - :class:`Brief` and :class:`BriefItem`, plain dataclasses that
   convert to and from JSON-able dicts, plus small functions that build items
   (:func:`answer_item`, :func:`passage_item`, :func:`heading_item`, :func:`note_item`).
   Everything can be done in memory, so other code (for example a brief built
   from themes) can assemble a :class:`Brief` and hand it to :meth:`BriefStore.save`.
2. **Storage** - :class:`BriefStore` keeps one JSON file per brief in a folder
   (``Settings.briefs_dir``) and writes each file atomically.
3. **Export** - :func:`to_markdown`, :func:`to_docx` and :func:`to_pdf`.  All three
   share :func:`layout_brief`, which renumbers citations across the whole brief
   so the same passage gets one number everywhere and builds the reference list.

Document text is untrusted: the Markdown export escapes it so that a passage can
never turn into a link or HTML, and the DOCX and PDF exports drop characters
that those formats cannot hold.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import tempfile
import threading
import unicodedata
import uuid
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Literal, Union
from urllib.parse import quote as _url_quote
from urllib.parse import urlparse

from kb.records import Answer, Citation

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------------------

ItemKind = Literal["answer", "passage", "heading", "note"]
ITEM_KINDS: tuple[str, ...] = ("answer", "passage", "heading", "note")

#: Version of the JSON layout written by :class:`BriefStore`.
SCHEMA_VERSION = 1

#: Title given to a brief created without one.
DEFAULT_TITLE = "Untitled brief"

#: Heading of the reference list in every export.
REFERENCES_HEADING = "References"

#: TrueType fonts tried, in order, for the PDF export: (regular, bold, italic).
#: Bold and italic fall back to the regular face when missing.  Without any of
#: these, the PDF uses the built-in Helvetica and transliterates text to Latin-1.
PDF_FONT_CANDIDATES: tuple[tuple[str, str, str], ...] = (
    (
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
        "/usr/share/fonts/truetype/dejavu/DejaVuSans-Oblique.ttf",
    ),
    (
        "/usr/share/fonts/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu/DejaVuSans-Bold.ttf",
        "/usr/share/fonts/dejavu/DejaVuSans-Oblique.ttf",
    ),
    (
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
        "/usr/share/fonts/TTF/DejaVuSans-Bold.ttf",
        "/usr/share/fonts/TTF/DejaVuSans-Oblique.ttf",
    ),
    (
        "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
        "/usr/share/fonts/truetype/noto/NotoSans-Bold.ttf",
        "/usr/share/fonts/truetype/noto/NotoSans-Italic.ttf",
    ),
    (
        "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSans-Bold.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSans-Italic.ttf",
    ),
    (
        "/Library/Fonts/Arial Unicode.ttf",
        "/Library/Fonts/Arial Unicode.ttf",
        "/Library/Fonts/Arial Unicode.ttf",
    ),
    (
        "C:/Windows/Fonts/arial.ttf",
        "C:/Windows/Fonts/arialbd.ttf",
        "C:/Windows/Fonts/ariali.ttf",
    ),
)

#: Extra fonts the PDF export uses for glyphs the main font lacks (e.g. Chinese).
PDF_FALLBACK_FONT_CANDIDATES: tuple[str, ...] = (
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
    "/usr/share/fonts/droid/DroidSansFallbackFull.ttf",
)

_BRIEF_ID_RE = re.compile(r"[0-9a-f]{32}")


# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------


class BriefError(Exception):
    """Base class for every error raised by this module."""


class InvalidBriefId(BriefError, ValueError):
    """A brief id that is not a 32-character lowercase hex string (a uuid4 hex)."""


class BriefNotFound(BriefError, KeyError):
    """No brief with this id exists."""


class ItemNotFound(BriefError, KeyError):
    """The brief has no item with this id."""


class BriefCorrupt(BriefError):
    """A brief file exists but cannot be read back."""


# --------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------


def _now() -> str:
    """The current UTC time as an ISO 8601 string (seconds precision)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _new_id() -> str:
    return uuid.uuid4().hex


def validate_brief_id(brief_id: str) -> str:
    """Return ``brief_id`` if it is a safe file name (32 lowercase hex digits, a uuid4 hex).

    Anything else - path separators, ``..``, a ``.json`` suffix - raises :class:`InvalidBriefId`,
    so an id taken from a URL or a form can never reach outside the briefs folder.
    """
    if not isinstance(brief_id, str) or not _BRIEF_ID_RE.fullmatch(brief_id):
        raise InvalidBriefId(f"not a valid brief id: {brief_id!r}")
    return brief_id


# Control characters (except tab/newline), lone surrogates and non-characters: XML
# (and so DOCX) cannot hold them, and they have no business in a PDF either.
# Vertical tab and form feed (page breaks in extracted PDF text) become spaces.
_INVALID_CHARS = re.compile("[\x00-\x08\x0e-\x1f\x7f\ud800-\udfff\ufffe\uffff]")
_BREAK_CHARS = re.compile("[\x0b\x0c]")


def _clean(text: str) -> str:
    """Drop characters that no export format can hold."""
    return _INVALID_CHARS.sub("", _BREAK_CHARS.sub(" ", str(text or "")))


def _one_line(text: str) -> str:
    """Drop invalid characters and collapse whitespace (including line breaks) to single spaces."""
    return " ".join(_clean(text).split())


# --------------------------------------------------------------------------------------
# Citations as JSON-able dicts
# --------------------------------------------------------------------------------------

_CITATION_DEFAULTS: dict[str, Any] = {
    "n": 0,
    "doc_id": "",
    "file": "",
    "title": "",
    "organisation": "",
    "year": None,
    "page": 0,
    "page_label": "",
    "text": "",
    "score": 0.0,
    "quote": "",
    "url": "",
    "chunk_id": "",
}


def citation_to_dict(citation: Citation) -> dict[str, Any]:
    """A citation as a plain dict (safe to store as JSON)."""
    return citation.to_dict()


def citation_from_dict(data: dict[str, Any]) -> Citation:
    """Rebuild a :class:`Citation`; unknown keys are ignored, missing ones get defaults."""
    known = {f.name for f in fields(Citation)}
    values = dict(_CITATION_DEFAULTS)
    values.update({k: v for k, v in data.items() if k in known})
    return Citation(**values)


# --------------------------------------------------------------------------------------
# 1. Data model
# --------------------------------------------------------------------------------------


@dataclass
class BriefItem:
    """One entry of a brief.  Which fields matter depends on ``kind``:

    ==========  ==========================================================
    kind        fields used
    ==========  ==========================================================
    answer      ``question``, ``text`` (with ``[n]`` markers), ``citations``
    passage     ``citations`` (exactly one), ``note`` (optional)
    heading     ``text``
    note        ``text``
    ==========  ==========================================================

    ``citations`` holds plain dicts (see :func:`citation_to_dict`) so the item
    can be written as JSON as it is; use :meth:`citation_records` to get
    :class:`Citation` objects back.
    """

    id: str
    kind: ItemKind
    text: str = ""
    question: str = ""
    citations: list[dict[str, Any]] = field(default_factory=list)
    note: str = ""

    def citation_records(self) -> list[Citation]:
        """The item's citations as :class:`Citation` objects."""
        return [citation_from_dict(c) for c in self.citations]

    @property
    def citation(self) -> Citation | None:
        """For a passage: its one citation (``None`` for other kinds)."""
        if self.kind != "passage" or not self.citations:
            return None
        return citation_from_dict(self.citations[0])

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "text": self.text,
            "question": self.question,
            "citations": [dict(c) for c in self.citations],
            "note": self.note,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BriefItem":
        kind = data.get("kind")
        if kind not in ITEM_KINDS:
            raise BriefCorrupt(f"unknown item kind: {kind!r}")
        citations = data.get("citations") or []
        if not isinstance(citations, list) or not all(isinstance(c, dict) for c in citations):
            raise BriefCorrupt("item citations must be a list of objects")
        return cls(
            id=str(data.get("id") or _new_id()),
            kind=kind,
            text=str(data.get("text") or ""),
            question=str(data.get("question") or ""),
            citations=[citation_to_dict(citation_from_dict(c)) for c in citations],
            note=str(data.get("note") or ""),
        )


def answer_item(answer: Answer) -> BriefItem:
    """An item holding a question, its answer text and the answer's citations.

    The question stored is the resolved one when the answer has it (a follow-up
    like "and in Nigeria?" becomes a question that reads on its own).
    """
    question = _one_line(answer.resolved_question or answer.question)
    return BriefItem(
        id=_new_id(),
        kind="answer",
        text=str(answer.answer or ""),
        question=question,
        citations=[citation_to_dict(c) for c in answer.citations],
    )


def passage_item(citation: Citation, note: str = "") -> BriefItem:
    """An item quoting one passage, with an optional note from the trainer."""
    return BriefItem(
        id=_new_id(),
        kind="passage",
        citations=[citation_to_dict(citation)],
        note=str(note or "").strip(),
    )


def heading_item(text: str) -> BriefItem:
    """A section heading.  Raises ``ValueError`` when ``text`` is blank."""
    text = _one_line(text)
    if not text:
        raise ValueError("a heading needs text")
    return BriefItem(id=_new_id(), kind="heading", text=text)


def note_item(text: str) -> BriefItem:
    """A free-text note (paragraphs separated by blank lines are kept)."""
    text = str(text or "").strip()
    if not text:
        raise ValueError("a note needs text")
    return BriefItem(id=_new_id(), kind="note", text=text)


Move = Union[int, Literal["up", "down"]]


@dataclass
class Brief:
    """A titled, ordered list of :class:`BriefItem`.  ``created``/``updated`` are ISO 8601 UTC."""

    id: str
    title: str
    created: str
    updated: str
    items: list[BriefItem] = field(default_factory=list)

    # -- in-memory editing (the store wraps these with load + save) ----------------

    def index_of(self, item_id: str) -> int:
        """Position of the item with ``item_id``; raises :class:`ItemNotFound`."""
        for i, item in enumerate(self.items):
            if item.id == item_id:
                return i
        raise ItemNotFound(f"brief {self.id} has no item {item_id!r}")

    def add(self, item: BriefItem, index: int | None = None) -> BriefItem:
        """Insert ``item`` at ``index`` (default: at the end) and return it."""
        if index is None:
            self.items.append(item)
        else:
            self.items.insert(max(0, min(index, len(self.items))), item)
        return item

    def move(self, item_id: str, to: Move) -> None:
        """Move an item to position ``to`` (clamped), or one step ``"up"`` / ``"down"``."""
        current = self.index_of(item_id)
        if to == "up":
            target = current - 1
        elif to == "down":
            target = current + 1
        elif isinstance(to, int) and not isinstance(to, bool):
            target = to
        else:
            raise ValueError(f"move target must be an index, 'up' or 'down', not {to!r}")
        target = max(0, min(target, len(self.items) - 1))
        item = self.items.pop(current)
        self.items.insert(target, item)

    def remove(self, item_id: str) -> BriefItem:
        """Remove and return the item with ``item_id``."""
        return self.items.pop(self.index_of(item_id))

    # -- JSON ---------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": SCHEMA_VERSION,
            "id": self.id,
            "title": self.title,
            "created": self.created,
            "updated": self.updated,
            "items": [item.to_dict() for item in self.items],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Brief":
        if not isinstance(data, dict):
            raise BriefCorrupt("a brief must be a JSON object")
        items = data.get("items") or []
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise BriefCorrupt("brief items must be a list of objects")
        return cls(
            id=validate_brief_id(str(data.get("id", ""))),
            title=_one_line(data.get("title", "")) or DEFAULT_TITLE,
            created=str(data.get("created") or ""),
            updated=str(data.get("updated") or data.get("created") or ""),
            items=[BriefItem.from_dict(i) for i in items],
        )


def new_brief(title: str) -> Brief:
    """A new, empty brief in memory (not saved yet)."""
    now = _now()
    return Brief(id=_new_id(), title=_one_line(title) or DEFAULT_TITLE, created=now, updated=now)


# --------------------------------------------------------------------------------------
# 2. Storage
# --------------------------------------------------------------------------------------

_DIR_LOCKS: dict[str, threading.RLock] = {}
_DIR_LOCKS_GUARD = threading.Lock()


def _lock_for(folder: Path) -> threading.RLock:
    """One lock per briefs folder, shared by every store object in this process."""
    key = str(folder.resolve())
    with _DIR_LOCKS_GUARD:
        return _DIR_LOCKS.setdefault(key, threading.RLock())


def _atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see either the old or the new file.

    The text goes to a temporary file in the same folder, is flushed to disk, and
    then replaces ``path`` in one step (``os.replace``).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable where the platform allows it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class BriefStore:
    """Briefs kept as ``<id>.json`` files in one folder (normally ``Settings.briefs_dir``).

    Every change is load - modify - save under a per-folder lock, and every save is
    atomic, so a crash or a page reload never leaves a half-written brief.  The lock
    covers all threads of one process (every app session); two separate processes
    editing the same brief at the same moment cannot corrupt it, but the later
    save wins.
    Methods that change a brief return the saved :class:`Brief`; the ``add_*``
    methods return the new :class:`BriefItem`.
    """

    def __init__(self, briefs_dir: Path) -> None:
        self.briefs_dir = Path(briefs_dir)
        self._lock = _lock_for(self.briefs_dir)

    # -- files --------------------------------------------------------------------

    def _path(self, brief_id: str) -> Path:
        return self.briefs_dir / f"{validate_brief_id(brief_id)}.json"

    def _read(self, path: Path) -> Brief:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise BriefNotFound(f"no brief {path.stem}") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BriefCorrupt(f"cannot read brief {path.name}: {exc}") from exc
        if isinstance(data, dict):
            data = {**data, "id": path.stem}  # the file name is the id
        try:
            return Brief.from_dict(data)
        except (TypeError, ValueError) as exc:
            raise BriefCorrupt(f"cannot read brief {path.name}: {exc}") from exc

    # -- whole briefs ---------------------------------------------------------------

    def create(self, title: str = DEFAULT_TITLE) -> Brief:
        """Create, save and return a new empty brief."""
        brief = new_brief(title)
        return self.save(brief)

    def list(self) -> list[Brief]:
        """All briefs, most recently updated first.  Unreadable files are skipped (and logged)."""
        if not self.briefs_dir.is_dir():
            return []
        briefs: list[Brief] = []
        for path in self.briefs_dir.glob("*.json"):
            if not _BRIEF_ID_RE.fullmatch(path.stem):
                continue
            try:
                briefs.append(self._read(path))
            except BriefError as exc:
                log.warning("skipping brief file %s: %s", path.name, exc)
        briefs.sort(key=lambda b: (b.updated, b.created), reverse=True)
        return briefs

    def get(self, brief_id: str) -> Brief:
        """The brief with ``brief_id``; raises :class:`BriefNotFound` or :class:`InvalidBriefId`."""
        return self._read(self._path(brief_id))

    def exists(self, brief_id: str) -> bool:
        return self._path(brief_id).is_file()

    def save(self, brief: Brief) -> Brief:
        """Write ``brief`` (stamping ``updated``) and return it."""
        path = self._path(brief.id)
        with self._lock:
            brief.title = _one_line(brief.title) or DEFAULT_TITLE
            brief.updated = _now()
            text = json.dumps(brief.to_dict(), ensure_ascii=False, indent=2)
            _atomic_write_text(path, text)
        return brief

    def delete(self, brief_id: str) -> bool:
        """Delete a brief; ``True`` if it existed."""
        path = self._path(brief_id)
        with self._lock:
            try:
                path.unlink()
            except FileNotFoundError:
                return False
        return True

    def rename(self, brief_id: str, title: str) -> Brief:
        """Give a brief a new title."""
        with self._lock:
            brief = self.get(brief_id)
            brief.title = _one_line(title) or DEFAULT_TITLE
            return self.save(brief)

    set_title = rename

    # -- items ----------------------------------------------------------------------

    def _add(self, brief_id: str, item: BriefItem, index: int | None) -> BriefItem:
        with self._lock:
            brief = self.get(brief_id)
            brief.add(item, index)
            self.save(brief)
        return item

    def add_answer(self, brief_id: str, answer: Answer, index: int | None = None) -> BriefItem:
        """Add an answer (question, text with ``[n]`` markers, its citations)."""
        return self._add(brief_id, answer_item(answer), index)

    def add_passage(
        self, brief_id: str, citation: Citation, note: str = "", index: int | None = None
    ) -> BriefItem:
        """Add one cited passage, with an optional note."""
        return self._add(brief_id, passage_item(citation, note), index)

    def add_heading(self, brief_id: str, text: str, index: int | None = None) -> BriefItem:
        """Add a section heading."""
        return self._add(brief_id, heading_item(text), index)

    def add_note(self, brief_id: str, text: str, index: int | None = None) -> BriefItem:
        """Add a free-text note."""
        return self._add(brief_id, note_item(text), index)

    def update_item_text(self, brief_id: str, item_id: str, text: str) -> Brief:
        """Change the text of a heading or note, or the note attached to a passage."""
        with self._lock:
            brief = self.get(brief_id)
            item = brief.items[brief.index_of(item_id)]
            if item.kind == "heading":
                item.text = heading_item(text).text
            elif item.kind == "note":
                item.text = note_item(text).text
            elif item.kind == "passage":
                item.note = str(text or "").strip()
            else:
                raise ValueError("answers cannot be edited; remove and add them again")
            return self.save(brief)

    def move_item(self, brief_id: str, item_id: str, to: Move) -> Brief:
        """Move an item to index ``to`` (clamped to the list), or ``"up"`` / ``"down"`` one step."""
        with self._lock:
            brief = self.get(brief_id)
            brief.move(item_id, to)
            return self.save(brief)

    def remove_item(self, brief_id: str, item_id: str) -> Brief:
        """Remove one item from a brief."""
        with self._lock:
            brief = self.get(brief_id)
            brief.remove(item_id)
            return self.save(brief)


# --------------------------------------------------------------------------------------
# 3a. Layout shared by the exports: brief-wide citation numbers and references
# --------------------------------------------------------------------------------------

#: ``[1]``, ``[1, 2]`` or ``[1,2]`` in an answer text.
MARKER_RE = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")


@dataclass(frozen=True)
class Markers:
    """Citation markers in the output, e.g. ``[3]`` or ``[3, 5]`` (brief-wide numbers)."""

    numbers: tuple[int, ...]

    def __str__(self) -> str:
        return "[" + ", ".join(str(n) for n in self.numbers) + "]"


#: Text in a block: plain (untrusted) text or our own markers.
Inline = Union[str, Markers]


@dataclass
class Block:
    """One paragraph-like unit of an export.

    kind: ``heading`` | ``question`` | ``answer`` | ``quote`` | ``passage_note`` | ``note``.
    ``parts`` interleaves plain text with :class:`Markers`; every exporter escapes
    or sanitises the plain text and writes the markers itself.
    """

    kind: str
    parts: list[Inline]

    def plain(self) -> str:
        return "".join(str(p) for p in self.parts)


@dataclass
class Reference:
    """One entry of the reference list: the brief-wide number and the first citation seen."""

    n: int
    citation: Citation

    @property
    def source(self) -> str:
        return format_source(self.citation)

    @property
    def url(self) -> str:
        return (self.citation.url or "").strip()


@dataclass
class Layout:
    """What every exporter writes: title, blocks in order, then the references."""

    title: str
    blocks: list[Block]
    references: list[Reference]


def format_page(citation: Citation) -> str:
    """``"p. 67"``, or ``"p. 67 (PDF page 3)"`` when the printed label differs from the index."""
    label = _one_line(citation.page_label)
    index = citation.page if isinstance(citation.page, int) and citation.page > 0 else None
    if label and index is not None and label != str(index):
        return f"p. {label} (PDF page {index})"
    if label:
        return f"p. {label}"
    if index is not None:
        return f"PDF page {index}"
    return ""


def format_source(citation: Citation) -> str:
    """``"Organisation. Title (Year), p. 67"`` with missing parts left out (no URL)."""
    organisation = _one_line(citation.organisation)
    title = _one_line(citation.title) or _one_line(citation.file) or "Untitled document"
    year = f" ({citation.year})" if citation.year else ""
    page = format_page(citation)
    text = f"{organisation}. " if organisation else ""
    text += f"{title}{year}"
    if page:
        text += f", {page}"
    return text


def _norm_text(text: str) -> str:
    return _one_line(text).casefold()


def citation_keys(citation: Citation) -> list[tuple[Any, ...]]:
    """Identities of a cited passage; two citations sharing any key get one number.

    Same document, same page and same chunk -> same passage; failing a chunk id,
    same document, same page and same quote (or passage text).
    """
    keys: list[tuple[Any, ...]] = []
    if citation.chunk_id:
        keys.append(("chunk", citation.doc_id, citation.page, citation.chunk_id))
    quoted = _norm_text(citation.quote or citation.text)
    if quoted:
        keys.append(("quote", citation.doc_id, citation.page, quoted))
    return keys


class _Numbering:
    """Hands out brief-wide citation numbers in order of first appearance."""

    def __init__(self) -> None:
        self.references: list[Reference] = []
        self._by_key: dict[tuple[Any, ...], int] = {}

    def number(self, citation: Citation) -> int:
        keys = citation_keys(citation)
        for key in keys:
            if key in self._by_key:
                n = self._by_key[key]
                break
        else:
            n = len(self.references) + 1
            self.references.append(Reference(n=n, citation=citation))
        for key in keys:
            self._by_key.setdefault(key, n)
        return n


def _answer_parts(item: BriefItem, numbering: _Numbering) -> list[Inline]:
    """The answer text split into text and brief-wide markers.

    Markers naming a citation the answer does not have are dropped (they would
    point at the wrong reference).  Citations never marked in the text are still
    numbered and appended at the end, so no source is lost.
    """
    local = {}
    for citation in item.citation_records():
        local.setdefault(citation.n, citation)
    text = _one_line(item.text)
    parts: list[Inline] = []
    used: set[int] = set()
    pos = 0
    for match in MARKER_RE.finditer(text):
        if match.start() > pos:
            parts.append(text[pos : match.start()])
        numbers: list[int] = []
        for raw in match.group(1).split(","):
            citation = local.get(int(raw))
            if citation is None:
                continue
            used.add(citation.n)
            n = numbering.number(citation)
            if n not in numbers:
                numbers.append(n)
        if numbers:
            parts.append(Markers(tuple(numbers)))
        elif parts and isinstance(parts[-1], str):
            parts[-1] = parts[-1].rstrip()  # "claim [9]." -> "claim."
        pos = match.end()
    if pos < len(text):
        parts.append(text[pos:])
    leftovers: list[int] = []
    for n_local, citation in local.items():
        if n_local not in used:
            n = numbering.number(citation)
            if n not in leftovers:
                leftovers.append(n)
    if leftovers:
        parts.append(" ")
        parts.append(Markers(tuple(leftovers)))
    return _tidy_parts(parts)


def _tidy_parts(parts: list[Inline]) -> list[Inline]:
    """Drop empty strings and doubled spaces left where markers were removed."""
    out: list[Inline] = []
    for part in parts:
        if isinstance(part, str):
            if not part:
                continue
            if out and isinstance(out[-1], str):
                out[-1] = out[-1] + part
                continue
        out.append(part)
    return [re.sub(r" {2,}", " ", p) if isinstance(p, str) else p for p in out]


def _blocks_for(item: BriefItem, numbering: _Numbering) -> Iterator[Block]:
    if item.kind == "heading":
        yield Block("heading", [_one_line(item.text)])
    elif item.kind == "note":
        for paragraph in re.split(r"\n\s*\n", item.text.strip()):
            if paragraph.strip():
                yield Block("note", [_one_line(paragraph)])
    elif item.kind == "answer":
        if item.question:
            yield Block("question", [_one_line(item.question)])
        yield Block("answer", _answer_parts(item, numbering))
    elif item.kind == "passage":
        citation = item.citation
        if citation is None:
            return
        text = _one_line(citation.text or citation.quote)
        yield Block("quote", [text, " ", Markers((numbering.number(citation),))])
        if item.note:
            yield Block("passage_note", [_one_line(item.note)])


def layout_brief(brief: Brief) -> Layout:
    """Turn a brief into blocks and a reference list with brief-wide citation numbers."""
    numbering = _Numbering()
    blocks: list[Block] = []
    for item in brief.items:
        blocks.extend(_blocks_for(item, numbering))
    return Layout(
        title=_one_line(brief.title) or DEFAULT_TITLE,
        blocks=blocks,
        references=numbering.references,
    )


def safe_url(url: str) -> str:
    """``url`` if it is an http(s) address (percent-encoding spaces and brackets), else ``""``."""
    url = (url or "").strip()
    if not url:
        return ""
    try:
        parsed = urlparse(url)
    except ValueError:
        return ""
    if parsed.scheme.lower() not in {"http", "https"} or not parsed.netloc:
        return ""
    return _url_quote(url, safe=":/?#[]@!$&'*+,;=%~-._")


# --------------------------------------------------------------------------------------
# 3b. Markdown
# --------------------------------------------------------------------------------------

# Characters that can start or end Markdown/HTML markup anywhere in a line.
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#|~!&])")
# "http://" would be turned into a link by GitHub-style renderers; escaping the colon stops it.
_MD_AUTOLINK = re.compile(r"(?<=[A-Za-z0-9])(:)(?=//)")
# Things that only matter at the start of a line: lists, headings, quotes, rules.
_MD_LINE_START = re.compile(r"^(\s*)([-+=]|\d+(?=[.)]))")


def _escape_inline(text: str) -> str:
    """Backslash-escape markup characters; whitespace is left alone."""
    text = _MD_SPECIAL.sub(r"\\\1", _clean(text))
    return _MD_AUTOLINK.sub(r"\\\1", text)


def _escape_line_start(line: str) -> str:
    """Stop a line from starting a list, heading, quote or rule."""
    match = _MD_LINE_START.match(line)
    if not match:
        return line
    if match.group(2).isdigit():  # "12." -> "12\." so it does not start a numbered list
        return line[: match.end()] + "\\" + line[match.end() :]
    return line[: match.start(2)] + "\\" + line[match.start(2) :]


def escape_markdown(text: str) -> str:
    """Escape untrusted text so Markdown shows it literally (no links, HTML, emphasis).

    Line breaks are kept; leading spaces are dropped so no line becomes a code block.
    """
    lines = _escape_inline(text).split("\n")
    return "\n".join(_escape_line_start(line.lstrip()) for line in lines)


def _md_inline(parts: list[Inline]) -> str:
    """Markdown for one block: escaped text with our own ``[n]`` markers left live."""
    out: list[str] = []
    after_marker = False
    for part in parts:
        if isinstance(part, Markers):
            out.append(str(part))
            after_marker = True
            continue
        escaped = _escape_inline(part)
        if not out:
            escaped = _escape_line_start(escaped.lstrip())
        if after_marker and escaped.startswith(":"):
            escaped = "\\" + escaped  # "[1]:" would define a link target
        out.append(escaped)
        after_marker = False
    return "".join(out)


def _md_reference(ref: Reference) -> str:
    line = f"[{ref.n}] {escape_markdown(ref.source)}."
    url = safe_url(ref.url)
    if url:
        line += f" <{url}>"
    elif ref.url:
        line += f" {escape_markdown(ref.url)}"
    return line


def to_markdown(brief: Brief) -> str:
    """The brief as Markdown: title, items in order, then the numbered references."""
    layout = layout_brief(brief)
    lines: list[str] = [f"# {escape_markdown(layout.title)}", ""]
    for block in layout.blocks:
        text = _md_inline(block.parts)
        if block.kind == "heading":
            lines += [f"## {text}", ""]
        elif block.kind == "question":
            lines += [f"**Q:** {text}", ""]
        elif block.kind == "quote":
            lines += [f"> {text}", ""]
        elif block.kind == "passage_note":
            lines += [f"*Note:* {text}", ""]
        else:  # answer, note
            lines += [text, ""]
    if layout.references:
        lines += [f"## {REFERENCES_HEADING}", ""]
        for ref in layout.references:
            lines += [_md_reference(ref), ""]
    return "\n".join(lines).rstrip("\n") + "\n"


# --------------------------------------------------------------------------------------
# 3c. Reference lines shared by DOCX and PDF
# --------------------------------------------------------------------------------------

def _reference_text(ref: Reference) -> str:
    text = f"[{ref.n}] {ref.source}."
    if ref.url:
        text += f" {ref.url}"
    return _clean(text)


# --------------------------------------------------------------------------------------
# 3d. DOCX
# --------------------------------------------------------------------------------------


def to_docx(brief: Brief) -> bytes:
    """The brief as a Word document (``.docx`` bytes)."""
    from docx import Document
    from docx.shared import Pt

    layout = layout_brief(brief)
    document = Document()
    document.core_properties.title = _clean(layout.title)
    document.add_heading(_clean(layout.title), level=0)
    for block in layout.blocks:
        text = _clean(block.plain())
        if block.kind == "heading":
            document.add_heading(text, level=1)
        elif block.kind == "question":
            paragraph = document.add_paragraph()
            paragraph.add_run("Q: ").bold = True
            paragraph.add_run(text).bold = True
        elif block.kind == "quote":
            document.add_paragraph(text, style="Quote")
        elif block.kind == "passage_note":
            paragraph = document.add_paragraph()
            paragraph.add_run("Note: ").italic = True
            paragraph.add_run(text)
        else:  # answer, note
            document.add_paragraph(text)
    if layout.references:
        document.add_heading(REFERENCES_HEADING, level=1)
        for ref in layout.references:
            paragraph = document.add_paragraph(_reference_text(ref))
            paragraph.paragraph_format.space_after = Pt(4)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


# --------------------------------------------------------------------------------------
# 3e. PDF
# --------------------------------------------------------------------------------------

# Common characters outside Latin-1, for the built-in-font fallback.
_LATIN1_REPLACEMENTS = {
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"',
    "\u2039": "<", "\u203a": ">",
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "--", "\u2015": "--",
    "\u2212": "-",
    "\u2022": "*", "\u2023": "*", "\u2043": "-", "\u25cf": "*",
    "\u2026": "...",
    "\u2002": " ", "\u2003": " ", "\u2009": " ", "\u200a": " ", "\u202f": " ",
    "\u200b": "", "\u200c": "", "\u200d": "", "\u2060": "", "\ufeff": "",
    "\u20ac": "EUR", "\u2122": "(TM)",
    "\u0152": "OE", "\u0153": "oe", "\u0160": "S", "\u0161": "s", "\u017d": "Z", "\u017e": "z",
    "\u0178": "Y", "\u0192": "f", "\u02c6": "^", "\u02dc": "~",
    "\u0141": "L", "\u0142": "l", "\u0110": "D", "\u0111": "d", "\u0131": "i",
}


def to_latin1(text: str) -> str:
    """Transliterate ``text`` to Latin-1 for the built-in PDF fonts.  Never raises.

    Known punctuation is replaced (curly quotes, dashes), accented letters lose
    accents only when Latin-1 lacks them, and anything else becomes ``?``.
    """
    out: list[str] = []
    for char in str(text or ""):
        if ord(char) < 256:
            out.append(char)
            continue
        if char in _LATIN1_REPLACEMENTS:
            out.append(_LATIN1_REPLACEMENTS[char])
            continue
        decomposed = unicodedata.normalize("NFKD", char)
        kept = "".join(c for c in decomposed if ord(c) < 256 and not unicodedata.combining(c))
        out.append(kept if kept else "?")
    return "".join(out)


@dataclass(frozen=True)
class PdfFonts:
    """TrueType files for the PDF export (bold/italic may repeat the regular file)."""

    regular: str
    bold: str
    italic: str
    fallbacks: tuple[str, ...] = ()


def find_pdf_fonts(
    candidates: tuple[tuple[str, str, str], ...] = PDF_FONT_CANDIDATES,
    fallback_candidates: tuple[str, ...] = PDF_FALLBACK_FONT_CANDIDATES,
) -> PdfFonts | None:
    """The first installed Unicode font family from ``candidates``, or ``None``."""
    for regular, bold, italic in candidates:
        if os.path.isfile(regular):
            return PdfFonts(
                regular=regular,
                bold=bold if os.path.isfile(bold) else regular,
                italic=italic if os.path.isfile(italic) else regular,
                fallbacks=tuple(f for f in fallback_candidates if os.path.isfile(f)),
            )
    return None


class _PdfWriter:
    """A thin layer over fpdf2: fonts, cleaning and the few paragraph styles we need."""

    BODY_SIZE = 11  # points; the line height is half the font size, in mm

    def __init__(self, title: str, fonts: PdfFonts | None) -> None:
        from fpdf import FPDF

        writer = self

        class _Document(FPDF):
            def footer(self) -> None:
                """The page number, centred at the bottom of every page."""
                self.set_y(-12)
                self.set_font(writer.family, "", 8)
                self.cell(0, 6, str(self.page_no()), align="C")

        self.pdf = _Document(format="A4")
        self.unicode = False
        self.family = "Helvetica"
        if fonts is not None:
            try:
                self._add_fonts(fonts)
            except Exception as exc:  # an unreadable font file: fall back to Helvetica
                log.warning("PDF font %s not usable, using Helvetica: %s", fonts.regular, exc)
                self.pdf = _Document(format="A4")
        self.pdf.set_title(self.text(title))
        self.pdf.set_auto_page_break(auto=True, margin=18)
        self.pdf.add_page()

    def _add_fonts(self, fonts: PdfFonts) -> None:
        """Register the Unicode family (and optional fallbacks for missing glyphs)."""
        self.pdf.add_font("BriefSans", "", fonts.regular)
        self.pdf.add_font("BriefSans", "B", fonts.bold)
        self.pdf.add_font("BriefSans", "I", fonts.italic)
        self.family, self.unicode = "BriefSans", True
        fallback_names = []
        for i, path in enumerate(fonts.fallbacks):
            name = f"BriefFallback{i}"
            try:
                self.pdf.add_font(name, "", path)
            except Exception as exc:  # a broken optional font must not stop the export
                log.warning("PDF fallback font %s not usable: %s", path, exc)
                continue
            fallback_names.append(name)
        if fallback_names:
            self.pdf.set_fallback_fonts(fallback_names)

    def text(self, text: str) -> str:
        text = _clean(text)
        return text if self.unicode else to_latin1(text)

    def _font(self, style: str, size: float) -> None:
        self.pdf.set_font(self.family, style, size)

    def paragraph(
        self,
        text: str,
        *,
        style: str = "",
        size: float = BODY_SIZE,
        indent: float = 0.0,
        space_after: float = 3.0,
        link: str = "",
    ) -> None:
        from fpdf.enums import XPos, YPos

        self._font(style, size)
        left = self.pdf.l_margin
        if indent:
            self.pdf.set_left_margin(left + indent)
        self.pdf.set_x(self.pdf.l_margin)
        self.pdf.multi_cell(
            0,
            size * 0.5,
            self.text(text),
            align="L",
            new_x=XPos.LMARGIN,
            new_y=YPos.NEXT,
            link=link or None,
        )
        if indent:
            self.pdf.set_left_margin(left)
            self.pdf.set_x(left)
        self.pdf.ln(space_after)

    def output(self) -> bytes:
        return bytes(self.pdf.output())


def to_pdf(brief: Brief, fonts: PdfFonts | None | Literal["auto"] = "auto") -> bytes:
    """The brief as PDF bytes.

    ``fonts="auto"`` uses the first Unicode TrueType font found (see
    :data:`PDF_FONT_CANDIDATES`); ``None`` forces the built-in Helvetica with
    Latin-1 transliteration.
    """
    layout = layout_brief(brief)
    chosen = find_pdf_fonts() if fonts == "auto" else fonts
    writer = _PdfWriter(layout.title, chosen)
    writer.paragraph(layout.title, style="B", size=18, space_after=5)
    for block in layout.blocks:
        text = block.plain()
        if block.kind == "heading":
            writer.paragraph(text, style="B", size=14, space_after=2)
        elif block.kind == "question":
            writer.paragraph(f"Q: {text}", style="B")
        elif block.kind == "quote":
            writer.paragraph(text, style="I", indent=8)
        elif block.kind == "passage_note":
            writer.paragraph(f"Note: {text}", indent=8)
        else:  # answer, note
            writer.paragraph(text)
    if layout.references:
        writer.paragraph(REFERENCES_HEADING, style="B", size=14, space_after=2)
        for ref in layout.references:
            writer.paragraph(_reference_text(ref), size=10, space_after=1.5, link=safe_url(ref.url))
    return writer.output()
