"""The PDF reader: every unusable file becomes one ``ReadError`` with a one-line reason a
member of staff can act on; readable files give 1-based pages with their printed labels.

All PDFs are made by the tests themselves (fpdf2 for content, pypdf for encryption and
page labels)."""

from __future__ import annotations

import io
import random
import re
import zipfile

import pytest
from pypdf import PdfWriter

from conftest import make_pdf
from ingest.reader import PdfContent, ReadError, read_pdf, sniff_format

BODY = (
    "Labour inspectors visited {topic} sites in region {n} and interviewed workers about "
    "recruitment fees, withheld wages and confiscated passports."
)
TOPICS = ["fisheries", "domestic work", "agriculture", "construction", "mining", "textiles"]


def text_pdf(tmp_path, pages: int = 4, name: str = "report.pdf", **kwargs) -> bytes:
    texts = [BODY.format(topic=TOPICS[i % len(TOPICS)], n=i + 1) for i in range(pages)]
    return make_pdf(tmp_path / name, texts, **kwargs).read_bytes()


def rewrite(data: bytes, change) -> bytes:
    """Copy a PDF with pypdf, let ``change(writer)`` alter it, return the new bytes."""
    writer = PdfWriter(clone_from=io.BytesIO(data))
    change(writer)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def reason_of(data: bytes, **kwargs) -> str:
    with pytest.raises(ReadError) as caught:
        read_pdf(data, **kwargs)
    reason = str(caught.value)
    assert_one_line(reason)
    return reason


def assert_one_line(reason: str) -> None:
    assert reason, "a failure must say why"
    assert "\n" not in reason and "\r" not in reason, f"reason is not one line: {reason!r}"
    assert reason == reason.strip()
    assert len(reason) <= 200, f"reason too long for a status line: {reason!r}"
    assert "Traceback" not in reason


# --------------------------------------------------------------------------------------
# not a PDF at all
# --------------------------------------------------------------------------------------


def test_zero_byte_file():
    assert reason_of(b"") == "empty file (0 bytes)"


def test_html_page_saved_as_pdf():
    html = b"<!DOCTYPE html>\n<html><head><title>Report</title></head><body>Moved</body></html>"
    reason = reason_of(html)
    assert reason.startswith("not a PDF")
    assert "HTML" in reason


def test_html_without_doctype_after_whitespace():
    assert "HTML" in reason_of(b"\n\n   <html><body>Access denied</body></html>")


@pytest.mark.parametrize("compression", [zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED])
def test_zip_archive_of_pdfs_named_pdf(tmp_path, compression):
    """A ZIP is refused as a ZIP even when the PDFs it holds are stored uncompressed (their
    ``%PDF-`` header then shows within the first kilobyte of the archive)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        archive.writestr("annex-a.pdf", text_pdf(tmp_path, pages=2, name="a.pdf"))
        archive.writestr("annex-b.pdf", text_pdf(tmp_path, pages=3, name="b.pdf"))
    data = buffer.getvalue()
    assert sniff_format(data) == "zip"
    reason = reason_of(data)
    assert reason == "not a PDF: the content is a ZIP archive"


def test_image_named_pdf(tmp_path):
    from PIL import Image

    path = tmp_path / "scan.png"
    Image.new("RGB", (40, 20), (120, 10, 10)).save(path)
    reason = reason_of(path.read_bytes())
    assert reason.startswith("not a PDF") and "image" in reason


def test_plain_text_named_pdf():
    reason = reason_of(b"Minutes of the coordination meeting, 3 March.\n")
    assert reason.startswith("not a PDF")


# --------------------------------------------------------------------------------------
# broken PDFs
# --------------------------------------------------------------------------------------


def test_pdf_cut_in_half(tmp_path):
    data = text_pdf(tmp_path)
    reason = reason_of(data[: len(data) // 2])
    assert reason.startswith("corrupt or truncated PDF")


def test_pdf_missing_its_last_bytes(tmp_path):
    data = text_pdf(tmp_path)
    assert reason_of(data[:-300]).startswith("corrupt or truncated PDF")


def test_pdf_with_only_its_header():
    assert reason_of(b"%PDF-1.7\n").startswith("corrupt")


def test_pdf_with_damaged_catalogue(tmp_path):
    data = text_pdf(tmp_path)
    broken = data.replace(b"/Root", b"/Rozt").replace(b"/Type /Catalog", b"/Type /Cxtalog")
    broken = broken.replace(b"/Type /Pages", b"/Type /Pxges")
    assert broken != data
    assert reason_of(broken).startswith("corrupt")


def test_flipped_bytes_never_escape_as_other_errors(tmp_path):
    """Seeded random damage: every variant is either read or refused with a reason;
    nothing else escapes the reader."""
    data = text_pdf(tmp_path)
    rng = random.Random(20240613)
    outcomes = {"read": 0, "refused": 0}
    for _ in range(120):
        damaged = bytearray(data)
        for _ in range(rng.choice([1, 3, 10, 40])):
            damaged[rng.randrange(9, len(damaged))] = rng.randrange(256)
        try:
            content = read_pdf(bytes(damaged))
        except ReadError as error:
            assert_one_line(str(error))
            outcomes["refused"] += 1
        else:
            assert isinstance(content, PdfContent)
            assert [p.index for p in content.pages] == list(range(1, len(content.pages) + 1))
            outcomes["read"] += 1
    assert outcomes["refused"] > 0  # the damage did break some of them


def test_damaged_page_stream_reads_as_empty_page_keeping_page_numbers(tmp_path):
    data = text_pdf(tmp_path, pages=3)
    starts = [m.end() for m in re.finditer(rb"(?<!end)stream\n", data)]
    damaged = bytearray(data)
    second = starts[1] + 2  # the second page's compressed content stream
    damaged[second : second + 40] = b"A" * 40
    content = read_pdf(bytes(damaged))
    assert [p.index for p in content.pages] == [1, 2, 3]
    assert "region 1" in content.pages[0].text
    assert "region 2" not in content.pages[1].text
    assert "region 3" in content.pages[2].text


# --------------------------------------------------------------------------------------
# encryption
# --------------------------------------------------------------------------------------


def test_encrypted_pdf_needing_a_password(tmp_path):
    data = rewrite(text_pdf(tmp_path), lambda w: w.encrypt(user_password="secret"))
    reason = reason_of(data)
    assert "encrypted" in reason and "password" in reason


def test_encrypted_pdf_with_empty_user_password_is_readable(tmp_path):
    plain = text_pdf(tmp_path)
    data = rewrite(plain, lambda w: w.encrypt(user_password="", owner_password="owner-only"))
    assert data != plain and b"/Encrypt" in data
    content = read_pdf(data)
    assert len(content.pages) == 4
    assert "region 3" in content.pages[2].text
    assert content.pages[0].text == read_pdf(plain).pages[0].text


# --------------------------------------------------------------------------------------
# no text: needs OCR
# --------------------------------------------------------------------------------------


def test_pdf_with_only_drawings_needs_ocr():
    from fpdf import FPDF

    pdf = FPDF()
    for _ in range(2):
        pdf.add_page()
        pdf.rect(20, 20, 120, 160, style="F")
        pdf.line(10, 10, 200, 280)
    reason = reason_of(bytes(pdf.output()))
    assert "needs OCR" in reason


def test_pdf_with_only_a_scanned_image_needs_ocr(tmp_path):
    from fpdf import FPDF
    from PIL import Image

    image = tmp_path / "scan.png"
    Image.new("RGB", (300, 400), (235, 235, 230)).save(image)
    pdf = FPDF()
    pdf.add_page()
    pdf.image(str(image), x=10, y=10, w=180)
    reason = reason_of(bytes(pdf.output()))
    assert reason == "no extractable text (image-only or scanned PDF: needs OCR)"


def test_page_numbers_alone_are_not_text():
    """A scan with only a printed page number on each page still needs OCR."""
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("Helvetica", size=10)
    for n in range(1, 4):
        pdf.add_page()
        pdf.rect(20, 20, 120, 160, style="F")
        pdf.set_xy(100, 280)
        pdf.cell(10, 5, str(n))
    assert "needs OCR" in reason_of(bytes(pdf.output()))


# --------------------------------------------------------------------------------------
# page labels and page counts
# --------------------------------------------------------------------------------------


def test_pages_are_numbered_from_one_with_default_labels(tmp_path):
    content = read_pdf(text_pdf(tmp_path, pages=3))
    assert [(p.index, p.label) for p in content.pages] == [(1, "1"), (2, "2"), (3, "3")]
    assert content.page_count == 3
    assert "region 2" in content.pages[1].text


def test_page_labels_of_a_chapter_starting_at_65(tmp_path):
    data = rewrite(text_pdf(tmp_path, pages=3), lambda w: w.set_page_label(0, 2, style="/D", start=65))
    content = read_pdf(data)
    assert [p.label for p in content.pages] == ["65", "66", "67"]
    assert [p.index for p in content.pages] == [1, 2, 3]


def test_roman_front_matter_then_arabic_numbers(tmp_path):
    def label(writer):
        writer.set_page_label(0, 1, style="/r")
        writer.set_page_label(2, 4, style="/D", start=1)

    content = read_pdf(rewrite(text_pdf(tmp_path, pages=5), label))
    assert [p.label for p in content.pages] == ["i", "ii", "1", "2", "3"]
    assert [p.index for p in content.pages] == [1, 2, 3, 4, 5]
    assert "region 3" in content.pages[2].text


def test_refuses_a_file_with_more_pages_than_allowed(tmp_path):
    reason = reason_of(text_pdf(tmp_path, pages=4), max_pages=3)
    assert reason == "refused: the file claims 4 pages (limit 3)"


def test_a_forged_page_count_is_not_believed_or_is_refused(tmp_path):
    data = text_pdf(tmp_path, pages=4)
    forged = data.replace(b"/Count 4\n", b"/Count 9999999\n", 1)
    assert forged != data
    try:
        content = read_pdf(forged)
    except ReadError as error:
        assert_one_line(str(error))
        assert "claims" in str(error) or "corrupt" in str(error)
    else:
        assert content.page_count == 4 and len(content.pages) == 4


# --------------------------------------------------------------------------------------
# document information
# --------------------------------------------------------------------------------------


def test_title_author_and_year_from_the_pdf(tmp_path):
    content = read_pdf(text_pdf(tmp_path, title="Forced Labour in Fisheries", author="ILO"))
    assert content.info["title"] == "Forced Labour in Fisheries"
    assert content.info["author"] == "ILO"
    assert content.info["year"].isdigit() and len(content.info["year"]) == 4


def test_pdf_without_information_dictionary(tmp_path):
    data = rewrite(text_pdf(tmp_path), lambda w: setattr(w, "metadata", None))
    content = read_pdf(data)
    assert "title" not in content.info and "author" not in content.info
    assert len(content.pages) == 4


# --------------------------------------------------------------------------------------
# the text itself: paragraph gaps and the per-page cap
# --------------------------------------------------------------------------------------


def _paragraphs_pdf(gap_mm: float) -> bytes:
    """Two wrapped paragraphs, ``gap_mm`` of empty space between them."""
    from fpdf import FPDF

    first = " ".join(["Shelters for survivors were full in every district visited."] * 4)
    second = " ".join(["Labour inspectors found children working in brick kilns."] * 4)
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", size=11)
    pdf.set_xy(10, 20)
    pdf.multi_cell(0, 6, first)
    pdf.set_y(pdf.get_y() + gap_mm)
    pdf.multi_cell(0, 6, second)
    return bytes(pdf.output())


def test_a_vertical_gap_between_paragraphs_becomes_a_blank_line():
    text = read_pdf(_paragraphs_pdf(gap_mm=8)).pages[0].text
    first, _, second = text.partition("\n\n")
    assert first.startswith("Shelters") and "Labour" not in first
    assert second.startswith("Labour") and "Shelters" not in second
    assert first.count("\n") >= 1 and "\n\n" not in second  # wrapped lines stay one paragraph


def test_lines_without_a_gap_stay_one_paragraph():
    text = read_pdf(_paragraphs_pdf(gap_mm=0)).pages[0].text
    assert "\n\n" not in text and text.count("\n") >= 2


def _two_column_pdf(first_column_ends: str) -> bytes:
    """A column of lines ending in ``first_column_ends``, with hyphenated words at line
    ends, and a second column beside it that begins in lower case."""
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", size=11)
    lines = [
        "Access to financial compensation and volun-",
        "tary repatriation options were factors that",
        "increased reporting rates, in the views of civil",
        "society organiza-",
        f"tions surveyed in {first_column_ends}",
    ]
    for row, line in enumerate(lines):
        pdf.text(10, 20 + 6 * row, line)
    pdf.text(110, 20, "authorities in the region, as the survey also found.")
    return bytes(pdf.output())


def test_a_word_hyphenated_at_a_line_end_is_joined_again():
    from ingest.clean import clean_pages

    page = read_pdf(_two_column_pdf("Africa.")).pages[0]
    assert "volun-\ntary" in page.text and "organiza-\ntions" in page.text  # line breaks kept
    text = clean_pages([page])[0].text
    assert "voluntary repatriation" in text and "society organizations surveyed" in text
    assert "volun-" not in text and "organiza-" not in text


def test_a_sentence_running_on_into_the_next_column_stays_one_paragraph():
    ended = read_pdf(_two_column_pdf("Africa.")).pages[0].text
    assert "\n\nauthorities in the region" in ended  # a new column after a full stop: a gap
    running_on = read_pdf(_two_column_pdf("Africa and by")).pages[0].text
    assert "Africa and by\nauthorities in the region" in running_on


def test_a_page_holding_an_implausible_amount_of_text_is_cut(tmp_path, monkeypatch):
    import ingest.reader

    monkeypatch.setattr(ingest.reader, "MAX_CHARS_PER_PAGE", 100)
    content = read_pdf(text_pdf(tmp_path, pages=2))
    assert all(0 < len(page.text) <= 100 for page in content.pages)
