"""A hostile corpus, generated on demand: broken, malicious and misnamed "PDF" files.

Used by ``tests/test_hostile.py`` and ``bench/hostile.py``.  Everything is built in memory
from a seed and written only where the caller says (a temporary folder); the shared corpus
is only read.

Kinds (``hostile_files()``), each a small file:

* decompression bombs: a page whose content stream is a FlateDecode stream inflating to
  gigabytes of spaces (one layer, about a megabyte on disk; and two layers of FlateDecode,
  a few kilobytes on disk inflating to tens of gigabytes), and a page whose /Contents array
  repeats one large stream many times;
* time bombs: 2,000 pages that each inflate one shared 64 MiB stream (every parser limit
  holds page by page; only a time bound stops it), and ten million text operators on a page;
* a page tree claiming 100,000 pages (/Count 100000) with one real page; one whose /Kids
  really holds 100,000 references to one page object; the same with a lying /Count 1;
* cycles and nesting: a /Kids entry pointing back to its parent, objects referencing
  themselves, /Kids nested 100,000 levels deep (indirect objects and inline dictionaries),
  arrays nested 100,000 deep in a content stream and in the document information;
* a PDF with JavaScript (/OpenAction and a /Names /JavaScript tree) - readable text, so it
  is ingested, and its script is never run;
* files named ``.pdf`` that are HTML, a ZIP archive, empty, plain text or binary noise.

Mutants (``mutants()``): seeded truncations and byte flips of real PDFs.
"""

from __future__ import annotations

import io
import random
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

GOOD_TEXT = (
    "Labour inspectors interviewed fishers away from the vessel officers and found that "
    "wages had been withheld for months. Identity documents should stay with the workers."
)


@dataclass(frozen=True)
class Variant:
    """One hostile file: its name, bytes and what kind of hostility it carries."""

    name: str
    data: bytes
    kind: str
    note: str = ""


# --------------------------------------------------------------------------------------
# a minimal PDF writer (exact byte offsets, so the structures are as intended)
# --------------------------------------------------------------------------------------


def stream_object(data: bytes, extra: str = "") -> bytes:
    """The body of a stream object holding ``data`` as is (already encoded)."""
    return f"<< /Length {len(data)} {extra}>>\nstream\n".encode() + data + b"\nendstream"


def build_pdf(objects: dict[int, bytes], root: int = 1, info: int | None = None, version: str = "1.7") -> bytes:
    """Assemble numbered object bodies into a PDF with a correct cross-reference table."""
    out = io.BytesIO()
    out.write(f"%PDF-{version}\n%\xe2\xe3\xcf\xd3\n".encode("latin-1"))
    size = max(objects) + 1
    offsets = {}
    for number in sorted(objects):
        offsets[number] = out.tell()
        out.write(f"{number} 0 obj\n".encode() + objects[number] + b"\nendobj\n")
    xref = out.tell()
    out.write(f"xref\n0 {size}\n0000000000 65535 f \n".encode())
    for number in range(1, size):
        if number in offsets:
            out.write(f"{offsets[number]:010d} 00000 n \n".encode())
        else:
            out.write(b"0000000000 65535 f \n")
    trailer = f"<< /Size {size} /Root {root} 0 R" + (f" /Info {info} 0 R" if info else "") + " >>"
    out.write(f"trailer\n{trailer}\nstartxref\n{xref}\n%%EOF\n".encode())
    return out.getvalue()


def text_content(text: str = GOOD_TEXT) -> bytes:
    """A content stream drawing ``text`` in Helvetica, one line per ~80 characters."""
    words, lines, line = text.split(), [], ""
    for word in words:
        if len(line) + len(word) > 80:
            lines.append(line)
            line = ""
        line = f"{line} {word}".strip()
    lines.append(line)
    escaped = [ln.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") for ln in lines]
    body = "BT /F1 11 Tf 14 TL 72 740 Td " + " ".join(f"({ln}) '" for ln in escaped) + " ET"
    return body.encode("latin-1")


FONT = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"
PAGE_RESOURCES = "/Resources << /Font << /F1 4 0 R >> >> /MediaBox [0 0 612 792]"


def simple_pdf(text: str = GOOD_TEXT, *, catalog_extra: str = "", extra_objects: dict[int, bytes] | None = None,
               count: int = 1, info: bytes | None = None) -> bytes:
    """One page of text: 1 catalog, 2 page tree, 3 page, 4 font, 5 content, 6 info."""
    objects = {
        1: f"<< /Type /Catalog /Pages 2 0 R {catalog_extra}>>".encode(),
        2: f"<< /Type /Pages /Kids [3 0 R] /Count {count} >>".encode(),
        3: f"<< /Type /Page /Parent 2 0 R {PAGE_RESOURCES} /Contents 5 0 R >>".encode(),
        4: FONT,
        5: stream_object(text_content(text)),
    }
    if info is not None:
        objects[6] = info
    objects.update(extra_objects or {})
    return build_pdf(objects, info=6 if info is not None else None)


# --------------------------------------------------------------------------------------
# decompression bombs
# --------------------------------------------------------------------------------------


def flate_bomb(inflated_bytes: int, fill: bytes = b" ", block: int = 1 << 20) -> bytes:
    """A valid zlib stream inflating to ``inflated_bytes`` copies of ``fill``, built in
    milliseconds: after a full flush the compressor has no history, so every further
    block of ``block`` identical bytes compresses to the same bytes, which are repeated."""
    assert inflated_bytes % block == 0 and len(fill) == 1
    chunk = fill * block
    compressor = zlib.compressobj(9)
    first = compressor.compress(chunk) + compressor.flush(zlib.Z_FULL_FLUSH)
    middle = compressor.compress(chunk) + compressor.flush(zlib.Z_FULL_FLUSH)
    assert compressor.compress(chunk) + compressor.flush(zlib.Z_FULL_FLUSH) == middle
    blocks = inflated_bytes // block
    checksum = _adler32_of_repeated(chunk, blocks)
    final_empty_block = b"\x03\x00"  # BFINAL=1, fixed Huffman, end of block
    return first + middle * (blocks - 1) + final_empty_block + checksum.to_bytes(4, "big")


def _adler32_of_repeated(chunk: bytes, times: int) -> int:
    """Adler-32 of ``chunk * times`` without building it (the sums are linear)."""
    mod = 65521
    n = len(chunk)
    one = zlib.adler32(chunk, 1)
    # A block adds S (its byte sum) to A, and L * A_before + W to B, where W weighs each
    # byte by how many bytes follow it (itself included); blocks combine by doubling.
    block_a, block_b, block_len = ((one & 0xFFFF) - 1) % mod, ((one >> 16) - n) % mod, n
    a, b = 1, 0
    remaining = times
    while remaining:
        if remaining & 1:
            b = (b + block_b + a * block_len) % mod
            a = (a + block_a) % mod
        # double the block: (A, B, L) + (A, B, L)
        block_b = (2 * block_b + block_a * block_len) % mod
        block_a = (2 * block_a) % mod
        block_len = (2 * block_len) % mod
        remaining >>= 1
    return (b << 16) | a


def bomb_single(gigabytes: int = 2) -> bytes:
    """One FlateDecode content stream inflating to ``gigabytes`` GiB of spaces."""
    payload = flate_bomb(gigabytes << 30)
    return simple_pdf(extra_objects={5: stream_object(payload, "/Filter /FlateDecode ")})


def bomb_double(gigabytes: int = 32) -> bytes:
    """Two layers of FlateDecode: kilobytes on disk, ``gigabytes`` GiB after both."""
    inner = flate_bomb(gigabytes << 30)
    outer = zlib.compress(inner, 9)
    return simple_pdf(extra_objects={5: stream_object(outer, "/Filter [/FlateDecode /FlateDecode] ")})


def bomb_repeated_contents(times: int = 200) -> bytes:
    """A page whose /Contents array names one 64 MiB stream ``times`` times."""
    payload = flate_bomb(64 << 20)
    objects = {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        2: b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        3: f"<< /Type /Page /Parent 2 0 R {PAGE_RESOURCES} /Contents [7 0 R {'5 0 R ' * times}] >>".encode(),
        4: FONT,
        5: stream_object(payload, "/Filter /FlateDecode "),
        7: stream_object(text_content()),
    }
    return build_pdf(objects)


def time_bomb(pages: int = 2000) -> bytes:
    """Many pages sharing one 64 MiB stream of spaces: every limit of the parser holds for
    each page, yet reading them all takes hours.  Only a time bound stops it."""
    payload = flate_bomb(64 << 20)
    kids = " ".join(f"{10 + i} 0 R" for i in range(pages))
    objects = {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        2: f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>".encode(),
        4: FONT,
        5: stream_object(payload, "/Filter /FlateDecode "),
        7: stream_object(text_content()),
    }
    for i in range(pages):
        objects[10 + i] = f"<< /Type /Page /Parent 2 0 R {PAGE_RESOURCES} /Contents [7 0 R 5 0 R] >>".encode()
    return build_pdf(objects)


def operator_flood(operators: int = 10_000_000) -> bytes:
    """One page whose (compressed, 100 KB) content stream holds ten million text operators."""
    ops = b"BT /F1 11 Tf 72 700 Td " + b"(a) Tj " * operators + b"ET"
    return simple_pdf(extra_objects={5: stream_object(zlib.compress(ops, 9), "/Filter /FlateDecode ")})


# --------------------------------------------------------------------------------------
# page counts, cycles and nesting
# --------------------------------------------------------------------------------------


def claims_pages(count: int = 100_000) -> bytes:
    """One real page; the page tree says ``count``."""
    return simple_pdf(count=count)


def many_kids(count: int = 100_000, declared: int | None = None) -> bytes:
    """``count`` /Kids entries, all the same page object; /Count says ``declared``."""
    declared = count if declared is None else declared
    objects = {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        2: f"<< /Type /Pages /Kids [{'3 0 R ' * count}] /Count {declared} >>".encode(),
        3: f"<< /Type /Page /Parent 2 0 R {PAGE_RESOURCES} /Contents 5 0 R >>".encode(),
        4: FONT,
        5: stream_object(text_content()),
    }
    return build_pdf(objects)


def kids_cycle() -> bytes:
    """A /Pages node whose /Kids points back to its parent (and on to itself)."""
    objects = {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        2: b"<< /Type /Pages /Kids [3 0 R 7 0 R] /Count 2 >>",
        3: f"<< /Type /Page /Parent 2 0 R {PAGE_RESOURCES} /Contents 5 0 R >>".encode(),
        4: FONT,
        5: stream_object(text_content()),
        7: b"<< /Type /Pages /Parent 2 0 R /Kids [2 0 R 7 0 R] /Count 1 >>",
    }
    return build_pdf(objects)


def self_references() -> bytes:
    """Objects that are references to themselves, in every place a reader looks."""
    objects = {
        1: b"<< /Type /Catalog /Pages 2 0 R /Outlines 8 0 R /PageLabels 8 0 R >>",
        2: b"<< /Type /Pages /Kids [3 0 R 9 0 R] /Count 2 >>",
        3: f"<< /Type /Page /Parent 2 0 R {PAGE_RESOURCES} /Contents 5 0 R >>".encode(),
        4: FONT,
        5: stream_object(text_content()),
        6: b"6 0 R",  # the information dictionary is itself
        8: b"8 0 R",
        9: b"<< /Type /Page /Parent 9 0 R /Resources 9 0 R /Contents 10 0 R /MediaBox 9 0 R >>",
        10: b"10 0 R",
    }
    return build_pdf(objects, info=6)


def deep_kids_indirect(depth: int = 100_000) -> bytes:
    """A chain of /Pages nodes ``depth`` deep, each an indirect object."""
    first = 10
    objects = {
        1: f"<< /Type /Catalog /Pages {first} 0 R >>".encode(),
        3: f"<< /Type /Page /Parent {first + depth - 1} 0 R {PAGE_RESOURCES} /Contents 5 0 R >>".encode(),
        4: FONT,
        5: stream_object(text_content()),
    }
    for level in range(depth):
        number = first + level
        kid = number + 1 if level + 1 < depth else 3
        parent = f"/Parent {number - 1} 0 R " if level else ""
        objects[number] = f"<< /Type /Pages {parent}/Kids [{kid} 0 R] /Count 1 >>".encode()
    return build_pdf(objects)


def deep_kids_inline(depth: int = 100_000) -> bytes:
    """/Kids arrays of inline /Pages dictionaries nested ``depth`` deep in one object."""
    nested = "<< /Type /Pages /Kids [" * depth + "3 0 R" + "] /Count 1 >>" * depth
    objects = {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        2: f"<< /Type /Pages /Kids [{nested}] /Count 1 >>".encode(),
        3: f"<< /Type /Page /Parent 2 0 R {PAGE_RESOURCES} /Contents 5 0 R >>".encode(),
        4: FONT,
        5: stream_object(text_content()),
    }
    return build_pdf(objects)


def deep_array_content(depth: int = 100_000) -> bytes:
    """A content stream with an array nested ``depth`` deep before the text."""
    content = b"[" * depth + b"]" * depth + b" pop\n" + text_content()
    return simple_pdf(extra_objects={5: stream_object(content)})


def deep_array_info(depth: int = 100_000) -> bytes:
    """The document information's /Title is an array nested ``depth`` deep."""
    return simple_pdf(info=b"<< /Title " + b"[" * depth + b"(x)" + b"]" * depth + b" >>")


def javascript_pdf() -> bytes:
    """Readable text plus scripts that would run on opening in a scripting viewer."""
    objects = {
        7: b"<< /S /JavaScript /JS (app.alert\\('opened'\\); this.submitForm\\('http://example.invalid/'\\);) >>",
        8: b"<< /Names [(startup) 7 0 R] >>",
    }
    return simple_pdf(
        catalog_extra="/OpenAction 7 0 R /Names << /JavaScript 8 0 R >> ",
        extra_objects=objects,
    )


# --------------------------------------------------------------------------------------
# not PDFs at all
# --------------------------------------------------------------------------------------


def html_page() -> bytes:
    return b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head><body>Not found</body></html>\n"


def zip_archive() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("report.pdf", simple_pdf())  # even a ZIP holding a real PDF is refused
    return buffer.getvalue()


def hostile_files() -> list[Variant]:
    """Every hostile kind once."""
    return [
        Variant("bomb-flate-2gib.pdf", bomb_single(2), "decompression bomb", "one FlateDecode stream, 2 GiB inflated"),
        Variant("bomb-double-flate-32gib.pdf", bomb_double(32), "decompression bomb", "two FlateDecode layers, 32 GiB inflated"),
        Variant("bomb-repeated-contents.pdf", bomb_repeated_contents(), "decompression bomb", "/Contents names a 64 MiB stream 200 times"),
        Variant("time-bomb-2000-pages.pdf", time_bomb(2000), "time bomb", "2,000 pages each inflating a shared 64 MiB stream"),
        Variant("operator-flood.pdf", operator_flood(), "time bomb", "10 million text operators on one page"),
        Variant("claims-100000-pages.pdf", claims_pages(100_000), "page count", "/Count 100000, one real page"),
        Variant("kids-100000-pages.pdf", many_kids(100_000), "page count", "100,000 /Kids entries, /Count 100000"),
        Variant("kids-100000-count-1.pdf", many_kids(100_000, declared=1), "page count", "100,000 /Kids entries, /Count 1"),
        Variant("kids-cycle.pdf", kids_cycle(), "cycle", "/Kids points back to the parent"),
        Variant("self-references.pdf", self_references(), "cycle", "objects that reference themselves"),
        Variant("deep-kids-indirect.pdf", deep_kids_indirect(100_000), "nesting", "/Pages chain 100,000 deep"),
        Variant("deep-kids-inline.pdf", deep_kids_inline(100_000), "nesting", "inline /Kids 100,000 deep"),
        Variant("deep-array-content.pdf", deep_array_content(100_000), "nesting", "content array 100,000 deep"),
        Variant("deep-array-info.pdf", deep_array_info(100_000), "nesting", "info /Title array 100,000 deep"),
        Variant("javascript.pdf", javascript_pdf(), "javascript", "/OpenAction /JS and /Names /JavaScript"),
        Variant("html-saved-as.pdf", html_page(), "not a pdf", "an HTML page"),
        Variant("zip-saved-as.pdf", zip_archive(), "not a pdf", "a ZIP archive"),
        Variant("empty.pdf", b"", "not a pdf", "0 bytes"),
        Variant("text-saved-as.pdf", b"Minutes of the meeting\n" * 20, "not a pdf", "plain text"),
        Variant("noise.pdf", random.Random(7).randbytes(4096), "not a pdf", "random bytes"),
    ]


# --------------------------------------------------------------------------------------
# mutants of real PDFs
# --------------------------------------------------------------------------------------


def source_pdfs(corpus: Path, count: int = 5) -> list[Path]:
    """The ``count`` smallest PDFs of the corpus (mutants of them ingest quickly)."""
    return sorted(Path(corpus).glob("*.pdf"), key=lambda p: (p.stat().st_size, p.name))[:count]


def mutate(data: bytes, rng: random.Random) -> tuple[str, bytes, str]:
    """One seeded mutation of ``data``: (kind, bytes, note)."""
    choice = rng.random()
    if choice < 0.4:  # truncation, anywhere, with a bias to the end where the xref lives
        cut = int(len(data) * (rng.random() ** 0.5)) if rng.random() < 0.7 else rng.randrange(len(data))
        return "truncation", data[:cut], f"cut at {cut} of {len(data)} bytes"
    mutated = bytearray(data)
    flips = rng.choice([1, 2, 5, 10, 50, 200])
    region = rng.random()
    for _ in range(flips):
        if region < 0.3:  # the last 2 KB: cross-reference table and trailer
            position = rng.randrange(max(0, len(data) - 2048), len(data))
        elif region < 0.45:  # the first 1 KB: header and first objects
            position = rng.randrange(0, min(1024, len(data)))
        else:
            position = rng.randrange(len(data))
        mutated[position] = rng.randrange(256)
    where = "end" if region < 0.3 else "start" if region < 0.45 else "anywhere"
    return "byte flips", bytes(mutated), f"{flips} bytes changed ({where})"


def mutants(corpus: Path, count: int, seed: int = 20240501, sources: int = 5) -> list[Variant]:
    """``count`` distinct seeded truncations and byte flips of the corpus's small PDFs."""
    rng = random.Random(seed)
    originals = [(p.stem, p.read_bytes()) for p in source_pdfs(corpus, sources)]
    if not originals:
        return []
    seen = {data for _, data in originals}
    variants: list[Variant] = []
    attempts = 0
    while len(variants) < count and attempts < count * 20:
        attempts += 1
        stem, data = originals[len(variants) % len(originals)]
        kind, mutated, note = mutate(data, rng)
        if mutated in seen:
            continue
        seen.add(mutated)
        tag = "trunc" if kind == "truncation" else "flip"
        variants.append(Variant(f"mutant-{len(variants):03d}-{tag}-{stem[:40]}.pdf", mutated, kind, note))
    return variants


def good_pdf(title: str, paragraphs: list[str]) -> bytes:
    """An ordinary text PDF (one paragraph a page) made with fpdf2."""
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_title(title)
    for paragraph in paragraphs:
        pdf.add_page()
        pdf.set_font("Helvetica", size=11)
        pdf.multi_cell(0, 6, paragraph)
    return bytes(pdf.output())


GOOD_DOCUMENTS = {
    "good-fisheries.pdf": (
        "Forced Labour at Sea",
        [
            "Fishers recruited in coastal villages were promised monthly wages of four hundred dollars. "
            "On board distant-water vessels, captains withheld wages until the end of a two-year contract.",
            "Port state inspections found that a third of the crews had their passports confiscated. "
            "Inspectors recommended that identity documents always remain with the fishers themselves.",
        ],
    ),
    "good-cocoa.pdf": (
        "Child Labour in Cocoa",
        [
            "Children as young as ten carried heavy loads and used machetes on cocoa farms in the western region. "
            "Community child protection committees visited farms each week to find children at risk.",
            "School enrolment rose after the programme provided free meals and school kits to families.",
        ],
    ),
    "good-online.pdf": (
        "Online Recruitment",
        [
            "Traffickers advertise fake job offers on social media platforms and messaging apps. "
            "Victims recruited for modelling work abroad were forced to run online scams in guarded compounds.",
            "Platform companies removed thousands of fraudulent job advertisements after alerts from the police.",
        ],
    ),
}


def write_good_documents(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, (title, paragraphs) in GOOD_DOCUMENTS.items():
        path = folder / name
        path.write_bytes(good_pdf(title, paragraphs))
        paths.append(path)
    return paths


def write_variants(folder: Path, variants: list[Variant]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for variant in variants:
        path = folder / variant.name
        path.write_bytes(variant.data)
        paths.append(path)
    return paths
