"""Getting files into (and out of) the documents folder safely, for the app's staff pages.

The documents folder is the single source of truth: an upload is first written into it
and only then ingested.  Everything here is plain Python (no UI), so it can be tested on
its own:

* :func:`sanitise_filename` - a safe base name: no folders, no ``..``, no NUL or control
  characters, not too long, always ending in ``.pdf``;
* :func:`check_upload` - size limit and a content check (a PDF by its bytes, not its name);
* :func:`save_upload` / :func:`accept_uploads` - write atomically into the documents folder,
  never outside it, reporting content duplicates instead of writing them;
* :func:`fetch_url` - download a report over http(s) with a size limit and a timeout;
* :func:`update_document_metadata` - edit a document's metadata in the knowledge base and in
  the folder's ``catalogue.csv`` so the edit survives a rebuild;
* :func:`discard_file` - move a file out of the documents folder (into the data folder);
* :func:`publish_document` - a copy (or hard link) of a PDF in the app's static folder,
  named by document id, so a browser can open it at a page.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import time
import unicodedata
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from email.message import Message
from pathlib import Path

from ingest.reader import ReadError, check_is_pdf
from kb.records import DocumentMeta

#: Longest file name written (bytes of UTF-8), well under every file system's limit.
MAX_NAME_BYTES = 120
#: Seconds allowed for a whole URL download (and for each network operation).
URL_TIMEOUT_S = 30.0
#: Name used when nothing usable is left of the original name.
FALLBACK_NAME = "document.pdf"

_UNSAFE_CHARS = re.compile(r"[^\w .()+,=@-]", re.UNICODE)
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_DOC_ID = re.compile(r"[0-9a-f]{64}")


class UploadError(Exception):
    """A file that cannot be added; ``str(error)`` is a one-line reason for staff."""


@dataclass
class UploadResult:
    """What happened to one uploaded file before ingestion.

    status: ``saved`` (written into the documents folder), ``duplicate`` (same content as a
    document already there; nothing written) or ``rejected`` (nothing written).
    """

    name: str  # the name as given by the user (for the report)
    file: str  # the sanitised name it has (or would have) in the documents folder
    status: str
    reason: str = ""
    path: Path | None = None
    doc_id: str = ""
    size: int = 0


# --------------------------------------------------------------------------------------
# Names, sizes and content
# --------------------------------------------------------------------------------------


def sanitise_filename(name: str, max_bytes: int = MAX_NAME_BYTES) -> str:
    """A safe base name for ``name``, ending in ``.pdf``.

    Only the last path component is kept (``/`` and ``\\`` both separate), NUL and other
    control characters are dropped, anything but letters, digits and a few punctuation
    marks becomes ``_``, leading dots and spaces go (no hidden files, no ``..``), and the
    stem is shortened so the whole name fits in ``max_bytes`` bytes of UTF-8.
    """
    text = unicodedata.normalize("NFC", str(name or ""))
    text = _CONTROL_CHARS.sub("", text)
    text = re.split(r"[/\\]", text)[-1]
    stem = text[:-4] if text.lower().endswith(".pdf") else text
    stem = _UNSAFE_CHARS.sub("_", stem)
    stem = re.sub(r"\s+", " ", stem)
    stem = re.sub(r"[_ ]*_[_ ]*", "_", stem).strip(" ._-")
    budget = max(1, max_bytes - len(".pdf"))
    while len(stem.encode("utf-8")) > budget:
        stem = stem[:-1]
    stem = stem.rstrip(" ._-")
    if not stem:
        return FALLBACK_NAME
    return f"{stem}.pdf"


def content_id(data: bytes) -> str:
    """The document id of a file: the SHA-256 of its bytes (as the ingest computes it)."""
    return hashlib.sha256(data).hexdigest()


def check_upload(data: bytes, max_bytes: int) -> None:
    """Raise :class:`UploadError` unless ``data`` is a PDF within the size limit."""
    if len(data) > max_bytes:
        raise UploadError(f"too large: {_megabytes(len(data))} (limit {_megabytes(max_bytes)})")
    try:
        check_is_pdf(data)
    except ReadError as error:
        raise UploadError(str(error)) from None


def max_upload_bytes(settings) -> int:
    """The upload size limit of ``settings`` in bytes."""
    return int(settings.upload_max_mb) * 1024 * 1024


def _megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"


# --------------------------------------------------------------------------------------
# Writing into the documents folder
# --------------------------------------------------------------------------------------


def target_path(folder: Path, file_name: str) -> Path:
    """``folder / file_name`` after checking that the name is a plain, visible PDF file name
    and that the result stays directly inside ``folder`` (``UploadError`` otherwise)."""
    folder = Path(folder).resolve()
    name = str(file_name or "")
    if (
        not name
        or name.startswith(".")
        or _CONTROL_CHARS.search(name)
        or re.search(r"[/\\]", name)
        or len(name.encode("utf-8", "surrogatepass")) > 255
        or not name.lower().endswith(".pdf")
    ):
        raise UploadError(f"unsafe file name: {name!r}")
    target = folder / name
    if target.parent != folder or target.resolve().parent != folder:
        raise UploadError("the file would be written outside the documents folder")
    return target


#: A hidden upload file this old was left by a process that was killed mid-write.
STALE_PART_S = 3600.0


def remove_stale_parts(folder: Path, older_than_s: float = STALE_PART_S) -> list[Path]:
    """Delete hidden ``.upload-*.part`` files that a killed upload left in ``folder``
    (only ones older than ``older_than_s``, so an upload in progress is never touched)."""
    import time

    removed = []
    cutoff = time.time() - older_than_s
    for part in Path(folder).glob(".upload-*.part"):
        try:
            if part.is_file() and not part.is_symlink() and part.stat().st_mtime < cutoff:
                part.unlink()
                removed.append(part)
        except OSError:
            continue
    return removed


def save_upload(folder: Path, file_name: str, data: bytes, *, replace: bool = False) -> Path:
    """Write ``data`` as ``folder/file_name`` atomically and return the path.

    The bytes go to a hidden temporary file in the same folder first, so the ingest never
    sees half a file.  Without ``replace`` an existing file is never overwritten (the final
    step is a hard link, which fails if the name is taken); with it, the file is replaced
    in one step.  A symbolic link in the target's place is refused either way.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = target_path(folder, file_name)
    if target.is_symlink():
        raise UploadError(f"{file_name} is a symbolic link; refusing to write through it")
    if target.exists() and not replace:
        raise UploadError(f"a file named {file_name} already exists (use Replace to upload a new version)")
    if replace and not target.is_file():
        raise UploadError(f"there is no file named {file_name} to replace")
    remove_stale_parts(target.parent)
    handle, temporary = tempfile.mkstemp(prefix=".upload-", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        if replace:
            os.replace(temporary, target)
        else:
            try:
                os.link(temporary, target)
            except FileExistsError:
                raise UploadError(f"a file named {file_name} already exists") from None
            except OSError:  # no hard links here: fall back to a checked rename
                if target.exists():
                    raise UploadError(f"a file named {file_name} already exists") from None
                os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return target


def accept_uploads(
    files: Iterable[tuple[str, bytes]],
    folder: Path,
    *,
    max_bytes: int,
    known: dict[str, str] | None = None,
    replace_name: str | None = None,
) -> list[UploadResult]:
    """Check and write several uploads; nothing is written for a rejected file.

    ``known`` maps the document ids already in the library to their file names, so an
    upload with the same content is reported as a duplicate (and not written).  Files of
    one batch are checked against each other too.  With ``replace_name`` the (single)
    upload replaces the file of that name instead of getting a name of its own.
    """
    seen = dict(known or {})
    results: list[UploadResult] = []
    for name, data in files:
        result = _accept_one(name, data, folder, max_bytes=max_bytes, seen=seen, replace_name=replace_name)
        if result.status == "saved":
            seen[result.doc_id] = result.file
        results.append(result)
    return results


def _accept_one(
    name: str, data: bytes, folder: Path, *, max_bytes: int, seen: dict[str, str], replace_name: str | None
) -> UploadResult:
    file_name = replace_name if replace_name is not None else sanitise_filename(name)
    result = UploadResult(name=str(name), file=file_name, status="rejected", size=len(data))
    try:
        check_upload(data, max_bytes)
        result.doc_id = content_id(data)
        owner = seen.get(result.doc_id)
        if owner is not None:
            same = owner == file_name
            result.status = "duplicate"
            result.reason = "unchanged: the same content is already there" if same else f"same content as {owner}"
            return result
        result.path = save_upload(folder, file_name, data, replace=replace_name is not None)
    except UploadError as error:
        result.reason = str(error)
        return result
    except OSError as error:
        result.reason = f"could not write the file: {error.strerror or error}"
        return result
    result.status = "saved"
    return result


def discard_file(folder: Path, file_name: str, trash: Path) -> Path:
    """Move ``folder/file_name`` into ``trash`` (timestamped, so it can be put back)."""
    source = target_path(folder, file_name)
    if not source.is_file() or source.is_symlink():
        raise UploadError(f"there is no file named {file_name} in the documents folder")
    trash.mkdir(parents=True, exist_ok=True)
    destination = trash / f"{time.strftime('%Y%m%d-%H%M%S')}-{file_name}"
    source.replace(destination)
    return destination


def is_inside(path: str | Path, folder: Path) -> bool:
    """Whether ``path`` is a file directly inside ``folder`` (both resolved)."""
    try:
        return Path(path).resolve().parent == Path(folder).resolve()
    except OSError:
        return False


# --------------------------------------------------------------------------------------
# Reports by URL
# --------------------------------------------------------------------------------------


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follow at most a few redirects, and only to http(s) addresses."""

    max_redirections = 5

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        check_url(newurl)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def check_url(url: str) -> str:
    """``url`` stripped, if it is an http(s) address with a host; else :class:`UploadError`."""
    url = (url or "").strip()
    try:
        parsed = urllib.parse.urlsplit(url)
    except ValueError:
        raise UploadError("not a valid address") from None
    if parsed.scheme.lower() not in {"http", "https"}:
        raise UploadError("only http:// and https:// addresses can be fetched")
    if not parsed.hostname:
        raise UploadError("the address has no host name")
    if any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise UploadError("the address contains spaces or control characters")
    return url


def fetch_url(url: str, *, max_bytes: int, timeout: float = URL_TIMEOUT_S) -> tuple[str, bytes]:
    """Download ``url``: returns a sanitised file name and the bytes.

    Only http(s) (redirects included), at most ``max_bytes`` (checked against the declared
    length and while reading), and ``timeout`` seconds in all.  The content check is left
    to :func:`check_upload`, like any other upload.
    """
    url = check_url(url)
    opener = urllib.request.build_opener(_HttpOnlyRedirects())
    request = urllib.request.Request(url, headers={"User-Agent": "ct-knowledge-exchange/0.1", "Accept": "application/pdf,*/*"})
    deadline = time.monotonic() + timeout
    try:
        with opener.open(request, timeout=timeout) as response:
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise UploadError(f"too large: {_megabytes(int(declared))} (limit {_megabytes(max_bytes)})")
            data = _read_limited(response, max_bytes, deadline)
            name = _name_from_response(response.headers, response.geturl() or url)
    except UploadError:
        raise
    except urllib.error.HTTPError as error:
        raise UploadError(f"the server answered {error.code} {error.reason}") from None
    except urllib.error.URLError as error:
        raise UploadError(f"could not fetch the address: {error.reason}") from None
    except (TimeoutError, OSError) as error:
        raise UploadError(f"could not fetch the address: {error}") from None
    except ValueError as error:  # malformed URL parts found by urllib itself
        raise UploadError(f"not a valid address: {error}") from None
    return name, data


def _read_limited(response, max_bytes: int, deadline: float) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        if time.monotonic() > deadline:
            raise UploadError("the download took too long")
        chunk = response.read(64 * 1024)
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > max_bytes:
            raise UploadError(f"too large: more than {_megabytes(max_bytes)}")
        chunks.append(chunk)


def _name_from_response(headers, url: str) -> str:
    """A file name from Content-Disposition, else from the last part of the URL path."""
    disposition = headers.get("Content-Disposition", "")
    if disposition:
        message = Message()
        message["Content-Disposition"] = disposition
        name = message.get_filename()
        if name:
            return sanitise_filename(name)
    path = urllib.parse.unquote(urllib.parse.urlsplit(url).path)
    last = path.rstrip("/").rsplit("/", 1)[-1]
    host = urllib.parse.urlsplit(url).hostname or ""
    return sanitise_filename(last or host.replace(".", "-") or FALLBACK_NAME)


# --------------------------------------------------------------------------------------
# Metadata
# --------------------------------------------------------------------------------------

EDITABLE_FIELDS = ("title", "organisation", "year", "url", "language")


def clean_metadata(title: str, organisation: str, year: str | int | None, url: str, language: str) -> dict:
    """Validated metadata fields (``UploadError`` for a bad year, URL or empty title)."""
    title = " ".join(str(title or "").split())
    if not title:
        raise UploadError("a document needs a title")
    year_value: int | None
    raw_year = str(year if year is not None else "").strip()
    if not raw_year:
        year_value = None
    elif raw_year.isdigit() and 1900 <= int(raw_year) <= 2100:
        year_value = int(raw_year)
    else:
        raise UploadError(f"not a year: {raw_year!r}")
    url = str(url or "").strip()
    if url:
        check_url(url)
    language = " ".join(str(language or "").split()) or "en"
    return {
        "title": title[:500],
        "organisation": " ".join(str(organisation or "").split())[:200],
        "year": year_value,
        "url": url,
        "language": language[:20],
    }


def update_document_metadata(service, doc_id: str, **fields) -> tuple[DocumentMeta, str]:
    """Edit a document's metadata; returns the updated document and a note for staff.

    The knowledge base is updated at once; the documents folder's ``catalogue.csv`` gets
    the same entry so a rebuild keeps the edit.  A file that lives outside the documents
    folder is only updated in the knowledge base (nothing is written outside it).
    """
    from ingest.catalogue import CatalogueEntry, write_catalogue_entry
    from ingest.pipeline import ingest_lock

    values = clean_metadata(**{name: fields.get(name, "") for name in EDITABLE_FIELDS})
    # Under the ingest lock, like any change of the library: an ingest running at the
    # same time (it may be replacing this very document) refuses the edit with IngestBusy
    # rather than interleaving with it.
    with ingest_lock(service.settings.lock_path):
        document = service.kb.update_metadata(doc_id, **values)
        folder = Path(service.settings.documents_dir)
        paths = [row["path"] for row in service.library() if row["doc_id"] == doc_id and row["path"]]
        inside = [path for path in paths if is_inside(path, folder)]
        for path in inside:
            entry = CatalogueEntry(file=Path(path).name, **values)
            write_catalogue_entry(folder, entry)
    if inside:
        note = "saved; catalogue.csv updated so a rebuild keeps it"
    else:
        note = "saved in the knowledge base; the file is outside the documents folder, so catalogue.csv was not changed"
    return document, note


# --------------------------------------------------------------------------------------
# Serving PDFs to the browser
# --------------------------------------------------------------------------------------


def published_name(doc_id: str) -> str:
    """The file name of a document in the static folder (``<doc_id>.pdf``)."""
    if not _DOC_ID.fullmatch(doc_id or ""):
        raise ValueError(f"not a document id: {doc_id!r}")
    return f"{doc_id}.pdf"


def publish_document(doc_id: str, source: Path | None, static_dir: Path) -> bool:
    """Make ``static_dir/<doc_id>.pdf`` hold the document; ``True`` if it is there.

    A hard link where the file system allows it (no extra space), else a copy; written
    under a temporary name and renamed, so a browser never gets half a file.  The web
    server refuses symbolic links that leave its folder, so none are used.
    """
    target = Path(static_dir) / published_name(doc_id)
    if target.is_file():
        return True
    if source is None or not Path(source).is_file():
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.part")
    try:
        try:
            os.link(source, temporary)
        except OSError:
            shutil.copyfile(source, temporary)
        os.replace(temporary, target)
    except OSError:
        return False
    finally:
        if os.path.lexists(temporary):
            os.unlink(temporary)
    return True


def prune_published(static_dir: Path, keep: set[str]) -> int:
    """Remove published PDFs of documents no longer in the library; returns how many."""
    removed = 0
    folder = Path(static_dir)
    if not folder.is_dir():
        return 0
    for path in folder.glob("*.pdf"):
        if _DOC_ID.fullmatch(path.stem) and path.stem not in keep:
            try:
                path.unlink()
                removed += 1
            except OSError:
                pass
    return removed
