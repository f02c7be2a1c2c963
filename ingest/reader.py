"""PDF bytes → raw pages (1-based index, printed label, text).

Two libraries share the work.  pypdf checks the file's structure (encryption, the page
tree, page counts), reads the printed page labels and the document information, and
decodes every page's content streams under its safety limits, so that a decompression
bomb is refused before anything else touches it.  PDFium (through pypdfium2) then
extracts the text: it is the same text a PDF viewer finds, and about fifteen times faster
than pypdf's own extraction, which made reading the largest cost of ingestion after
embedding.

Every way a file can be unusable becomes one ``ReadError`` with a one-line reason that a
member of staff can act on.  Single pages that fail to parse are skipped with a warning.
"""

from __future__ import annotations

import io
import logging
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime

from kb.records import Page

logging.getLogger("pypdf").setLevel(logging.ERROR)

# PDFium is not thread-safe: every call into it from this process takes this lock.
_PDFIUM_LOCK = threading.Lock()

# A page with more text than this is not a real page (a report page holds 2-10 thousand
# characters); its text is cut here so that a flood of text operators cannot flood the index.
MAX_CHARS_PER_PAGE = 200_000


class ReadError(Exception):
    """A file that cannot be ingested; ``str(error)`` is the one-line reason."""


@dataclass
class PdfContent:
    """Everything the reader extracts from one PDF."""

    pages: list[Page]
    info: dict[str, str] = field(default_factory=dict)  # title, author, year from the PDF itself
    warnings: list[str] = field(default_factory=list)
    page_count: int = 0


def sniff_format(data: bytes) -> str:
    """Name what a file really is, judging by its content rather than its name."""
    head = data[:1024].lstrip()
    if not data:
        return "empty"
    if head.startswith(b"PK\x03\x04"):  # before the PDF check: a ZIP may store PDFs uncompressed
        return "zip"
    if b"%PDF-" in data[:1024]:
        return "pdf"
    lowered = head[:512].lower()
    if lowered.startswith((b"<!doctype html", b"<html")) or b"<html" in lowered:
        return "html"
    if head.startswith(b"\x89PNG") or head.startswith(b"\xff\xd8\xff"):
        return "image"
    return "unknown"


def check_is_pdf(data: bytes) -> None:
    """Raise ``ReadError`` unless ``data`` looks like a PDF."""
    kind = sniff_format(data)
    if kind == "empty":
        raise ReadError("empty file (0 bytes)")
    if kind != "pdf":
        described = {"zip": "a ZIP archive", "html": "an HTML page", "image": "an image"}
        raise ReadError(f"not a PDF: the content is {described.get(kind, 'not PDF data')}")


def _year_from_pdf_date(value: str) -> str:
    digits = value[2:6] if value.startswith("D:") else value[:4]
    return digits if digits.isdigit() and 1900 < int(digits) <= datetime.now().year + 1 else ""


def _document_info(reader) -> dict[str, str]:
    try:
        meta = reader.metadata or {}
    except Exception:  # broken info dictionaries are common and never fatal
        return {}
    info = {}
    for key, name in (("/Title", "title"), ("/Author", "author"), ("/Subject", "subject")):
        try:
            value = meta.get(key)
        except Exception:
            value = None
        if value and str(value).strip():
            info[name] = " ".join(str(value).split())
    for key in ("/CreationDate", "/ModDate"):
        try:
            year = _year_from_pdf_date(str(meta.get(key) or ""))
        except Exception:
            year = ""
        if year:
            info["year"] = year
            break
    return info


def _page_labels(reader, count: int) -> list[str]:
    try:
        labels = list(reader.page_labels)
        if len(labels) == count:
            return [str(label) for label in labels]
    except Exception:
        pass
    return [str(i + 1) for i in range(count)]


def read_pdf(data: bytes, *, max_pages: int = 5000, min_chars_per_page: int = 25) -> PdfContent:
    """Extract the text of every page of a PDF given as bytes.

    Raises ``ReadError`` for empty files, non-PDF content, corrupt or truncated files,
    encrypted files (after trying the empty password), files claiming more than
    ``max_pages`` pages, files tripping one of pypdf's safety limits (a decompression
    bomb, a page tree nested too deeply) and files with no extractable text (image-only:
    needs OCR).
    """
    from pypdf import PdfReader
    from pypdf.errors import FileNotDecryptedError, LimitReachedError, PdfReadError

    check_is_pdf(data)
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
    except LimitReachedError as error:
        raise ReadError(_limit_reason(error)) from None
    except RecursionError:
        raise ReadError(_NESTED) from None
    except MemoryError:  # the worker's memory bound: reported as such, not as corruption
        raise
    except Exception as error:  # pypdf raises many types for broken files
        raise ReadError(f"corrupt or truncated PDF ({_short(error)})") from None

    if reader.is_encrypted:
        try:
            reader.decrypt("")
            reader.pages[0]  # decrypt("") may "succeed" without granting access
        except (FileNotDecryptedError, PdfReadError, Exception):
            raise ReadError("encrypted PDF: a password is required to open it") from None
        if not _can_read(reader):
            raise ReadError("encrypted PDF: a password is required to open it")

    declared = _declared_page_count(reader)
    if declared > max_pages:  # before walking the page tree: a claim of 100,000 pages is not walked
        raise ReadError(f"refused: the file claims {declared:,} pages (limit {max_pages:,})")
    try:
        count = len(reader.pages)
    except LimitReachedError as error:
        raise ReadError(_limit_reason(error)) from None
    except RecursionError:
        raise ReadError(_NESTED) from None
    except MemoryError:
        raise
    except Exception as error:
        raise ReadError(f"corrupt or truncated PDF ({_short(error)})") from None
    if count == 0:
        raise ReadError("corrupt or truncated PDF (no pages found)")
    if count > max_pages:
        raise ReadError(f"refused: the file claims {count:,} pages (limit {max_pages:,})")

    labels = _page_labels(reader, count)
    warnings: list[str] = []
    failures: dict[int, str] = {}
    for index in range(count):
        problem = _screen_page(reader, index)
        if problem:
            failures[index] = problem
    texts = _pdfium_texts(data, count, failures)
    if texts is None:
        # The two libraries disagree on the page tree (a damaged /Count, say): keep
        # pypdf's reading, with its own extraction, so that page numbers stay right.
        texts = _pypdf_texts(reader, count, failures)
    pages: list[Page] = []
    for index in range(count):
        if index in failures:
            warnings.append(f"page {index + 1} could not be parsed ({failures[index]}); skipped")
        pages.append(Page(index=index + 1, label=labels[index], text=texts[index]))

    failed_pages = len(failures)
    first_failure = failures[min(failures)] if failures else ""
    if failed_pages == count:
        raise ReadError(f"corrupt PDF: no page could be parsed ({first_failure[:120]})")
    if all(len(page.text.strip()) < min_chars_per_page for page in pages):
        raise ReadError("no extractable text (image-only or scanned PDF: needs OCR)")
    return PdfContent(pages=pages, info=_document_info(reader), warnings=warnings, page_count=count)


_NESTED = "corrupt PDF: objects nested too deeply to read"


def _screen_page(reader, index: int) -> str:
    """Decode one page's content streams (and the form XObjects it draws) under pypdf's
    safety limits; return why the page cannot be read, or "" when it can.

    A decompression bomb raises ``ReadError`` for the whole file: one is enough to refuse it.
    """
    from pypdf.errors import LimitReachedError

    try:
        page = reader.pages[index]
        contents = page.get_contents()
        if contents is not None:
            contents.get_data()
        _decode_forms(page.get("/Resources"), set())
        return ""
    except LimitReachedError as error:
        raise ReadError(_limit_reason(error, page=index + 1)) from None
    except MemoryError:
        raise
    except RecursionError:
        return "objects nested too deeply"
    except Exception as error:
        return _short(error)


def _decode_forms(resources, seen: set[int], depth: int = 0) -> None:
    """Decode the streams of the form XObjects named in ``resources``, and theirs in turn."""
    if depth > 20:
        raise RecursionError
    resources = resources.get_object() if resources is not None else None
    if not hasattr(resources, "get"):
        return
    xobjects = resources.get("/XObject")
    xobjects = xobjects.get_object() if xobjects is not None else None
    if not hasattr(xobjects, "values"):
        return
    for reference in xobjects.values():
        key = getattr(reference, "idnum", None)
        if key is not None:
            if key in seen:
                continue
            seen.add(key)
        form = reference.get_object()
        if not hasattr(form, "get") or form.get("/Subtype") != "/Form":
            continue
        form.get_data()
        _decode_forms(form.get("/Resources"), seen, depth + 1)


def _pdfium_texts(data: bytes, count: int, failures: dict[int, str]) -> list[str] | None:
    """The text of each page, extracted by PDFium; pages in ``failures`` are left empty
    and pages PDFium cannot load are added to it.  ``None`` when PDFium does not count
    ``count`` pages."""
    texts = [""] * count
    with _PDFIUM_LOCK:
        import pypdfium2

        try:
            document = pypdfium2.PdfDocument(data)
        except Exception as error:
            raise ReadError(f"corrupt or truncated PDF ({_short(error)})") from None
        try:
            if len(document) != count:
                return None
            for index in range(count):
                if index in failures:
                    continue
                try:
                    texts[index] = _page_text(document, index)
                except Exception as error:
                    failures[index] = _short(error)
        finally:
            document.close()
    return texts


def _pypdf_texts(reader, count: int, failures: dict[int, str]) -> list[str]:
    """pypdf's own, slower extraction with the reader ``read_pdf`` opened, for files whose
    page tree PDFium reads differently."""
    from pypdf.errors import LimitReachedError

    texts = [""] * count
    for index in range(count):
        if index in failures:
            continue
        try:
            texts[index] = (reader.pages[index].extract_text() or "")[:MAX_CHARS_PER_PAGE]
        except LimitReachedError as error:
            raise ReadError(_limit_reason(error, page=index + 1)) from None
        except MemoryError:
            raise
        except Exception as error:
            failures[index] = "objects nested too deeply" if isinstance(error, RecursionError) else _short(error)
    return texts


def _page_text(document, index: int) -> str:
    page = document[index]
    try:
        text_page = page.get_textpage()
        try:
            text = _text_with_paragraph_gaps(text_page)
        finally:
            text_page.close()
    finally:
        page.close()
    # PDFium marks a hyphen that breaks a word at the end of a line with U+FFFE and joins
    # the two lines into one; the line break is put back ("volun-\ntary") so that the
    # cleaner repairs the word as it does any other line-break hyphen.  PDFium gives a
    # control character for a glyph it cannot map (an unmapped ligature): dropped, as the
    # model's tokenizer would, rather than read as a space elsewhere.
    text = _WORD_BREAK.sub("-\n", text.replace("\r", "\n"))
    return _CONTROL_CHARACTERS.sub("", text)[:MAX_CHARS_PER_PAGE]


_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_WORD_BREAK = re.compile("\ufffe\n?")
# PDFium's line ends: a line break, or just after a word-breaking hyphen (U+FFFE), where
# PDFium runs the next line on without one.
_LINE_END = re.compile("\r\n|(?<=\ufffe)")
# A line that starts with a lower-case word continues the sentence of the line before it
# (unless that line ended one), across a column break or a figure: no paragraph gap.
_CONTINUATION = re.compile(r"[a-z]{2}")
_SENTENCE_END = re.compile(r"[.!?:;][\"'”’)]*(?:[a-z]|\d{1,3})?$")  # a note mark may follow


# A line further below the one before it than this many times the page's usual line pitch
# starts a new paragraph (or heading, or caption); so does a jump back up (a new column).
PARAGRAPH_GAP = 1.4


def _text_with_paragraph_gaps(text_page) -> str:
    """The page's text, lines joined by line breaks, with a blank line wherever the layout
    leaves a vertical gap: the paragraph boundaries that sentence and list detection rely on.

    PDFium's text has one character per index (line breaks included), so each line's
    position is read from the boxes of its first characters.
    """
    text = text_page.get_text_range()
    if len(text) != text_page.count_chars():  # indices do not line up: no gaps, plain lines
        return text_page.get_text_bounded().replace("\r\n", "\n")
    lines: list[tuple[str, float | None]] = []
    start = 0
    for line_end in _LINE_END.finditer(text + "\r\n"):
        line = text[start : line_end.start()]
        tops = []
        for offset, character in enumerate(line):
            if not character.isspace():
                tops.append(text_page.get_charbox(start + offset)[3])
                if len(tops) == 8:
                    break
        lines.append((line, max(tops) if tops else None))
        start = line_end.end()
    heights = [top for _, top in lines if top is not None]
    pitches = sorted(above - below for above, below in zip(heights, heights[1:]) if above > below)
    if not pitches:
        return "\n".join(line for line, _ in lines)
    pitch = pitches[len(pitches) // 2]
    joined: list[str] = []
    previous = None
    for line, top in lines:
        if top is not None and previous is not None and _starts_paragraph(joined[-1], line, previous - top, pitch):
            joined.append("")
        joined.append(line)
        if top is not None:
            previous = top
    return "\n".join(joined)


def _starts_paragraph(before: str, line: str, drop: float, pitch: float) -> bool:
    """Whether ``line``, ``drop`` below the line ``before`` it, starts a new paragraph."""
    if drop <= PARAGRAPH_GAP * pitch and drop >= -pitch:
        return False
    before = before.rstrip()
    if before.endswith("\ufffe"):
        return False  # the second half of a hyphenated word
    return not (_CONTINUATION.match(line.lstrip()) and not _SENTENCE_END.search(before))


def page_texts(data: bytes) -> list[str]:
    """The text of every page as ingestion reads it (for checking quotes against a PDF)."""
    return [page.text for page in read_pdf(data, min_chars_per_page=0).pages]


def _declared_page_count(reader) -> int:
    """The /Count of the root page tree, as the file states it (0 when unreadable).

    Read without walking the tree, so that a file claiming an absurd number of pages is
    refused at once; a file whose claim is too low is still caught after the walk.
    """
    try:
        pages = reader.trailer["/Root"].get_object()["/Pages"].get_object()
        count = pages.get("/Count")
        count = count.get_object() if count is not None else 0
        return int(count) if isinstance(count, (int, float)) and not isinstance(count, bool) else 0
    except Exception:  # RecursionError included: the walk that follows reports the damage
        return 0


def _limit_reason(error: BaseException, page: int | None = None) -> str:
    """One line for a pypdf safety limit that a file tripped."""
    message = _short(error)
    where = f" on page {page}" if page else ""
    if "decompress" in message.lower() or "output bytes" in message.lower():
        return f"refused: a compressed stream{where} inflates past the reader's safety limit (decompression bomb?)"
    return f"refused: the file exceeds a safety limit of the PDF reader{where} ({message})"


def _can_read(reader) -> bool:
    try:
        reader.pages[0].get_contents()
        return True
    except Exception:
        return False


def _short(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text[:160]
