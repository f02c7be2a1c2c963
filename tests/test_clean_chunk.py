"""Cleaning (running headers and footers, page numbers, hyphenation, ligatures, white
space) and chunking (size in the model's word pieces, page ranges, ids, headings), on
text and on PDFs the tests make."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from conftest import make_pdf
from ingest.chunk import chunk_pages, looks_like_heading
from ingest.clean import clean_pages, normalise_whitespace
from ingest.extract import ExtractOptions, extract_document
from ingest.reader import read_pdf
from kb.embed import MAX_WORD_PIECES, count_tokens
from kb.knowledge_base import embedding_text
from kb.records import DocumentMeta, Page
from kb.settings import Settings
from kb.text import collapse_whitespace

DOC_ID = "3f1a9c0e5b7d2468ace13579bdf02468ace13579bdf02468ace13579bdf0246"
DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")

# --------------------------------------------------------------------------------------
# prose that reads like a report, different on every page (seeded)
# --------------------------------------------------------------------------------------
SUBJECTS = [
    "Labour inspectors", "Border officials", "Shelter staff", "Prosecutors", "Community volunteers",
    "Social workers", "Police investigators", "Recruitment agencies", "Fishing crews", "Trade unions",
]
VERBS = [
    "reported", "identified", "documented", "referred", "interviewed", "monitored", "assisted",
    "questioned", "supported", "trained",
]
OBJECTS = [
    "migrant workers with unpaid wages", "children working on cocoa farms", "victims of debt bondage",
    "women recruited through online advertisements", "crew members held on distant-water vessels",
    "domestic workers whose passports were confiscated", "survivors awaiting compensation",
    "families affected by forced begging", "seasonal labourers in construction", "returnees in reintegration programmes",
]
PLACES = [
    "in the northern provinces", "at the main seaport", "along the eastern border", "in three districts",
    "during the second quarter", "in the capital", "across the region", "at two transit centres",
]


def sentence(rng: random.Random) -> str:
    return f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(PLACES)}."


def paragraph(rng: random.Random, sentences: int) -> str:
    return " ".join(sentence(rng) for _ in range(sentences))


def report_pages(seed: int, pages: int, paragraphs: int = 3) -> list[str]:
    rng = random.Random(seed)
    return [
        "\n".join(f"Case {page}.{k}: " + paragraph(rng, rng.randint(3, 6)) for k in range(paragraphs))
        for page in range(1, pages + 1)
    ]


def meta(title: str = "Report", **kwargs) -> DocumentMeta:
    return DocumentMeta(doc_id=DOC_ID, file="report.pdf", title=title, **kwargs)


def words(text: str) -> list[str]:
    return collapse_whitespace(text).split()


# ======================================================================================
# cleaning
# ======================================================================================


def test_running_header_and_footer_with_page_numbers_are_removed(tmp_path):
    bodies = report_pages(1, 6)
    path = make_pdf(
        tmp_path / "r.pdf", bodies,
        header="Global Report on Trafficking in Persons 2024 | Chapter {n}", footer="Page {n} of 6",
    )
    raw = read_pdf(path.read_bytes()).pages
    assert all("Global Report on Trafficking" in p.text for p in raw)  # really in the PDF
    cleaned = clean_pages(raw)
    for page, body in zip(cleaned, bodies):
        assert "Global Report on Trafficking" not in page.text
        assert not re.search(r"Page \d+ of 6", page.text)
        assert collapse_whitespace(page.text) == collapse_whitespace(body)
    assert [(p.index, p.label) for p in cleaned] == [(p.index, p.label) for p in raw]


def test_header_on_most_but_not_all_pages_is_removed():
    rng = random.Random(2)
    pages = []
    for n in range(1, 7):
        lines = [paragraph(rng, 2), paragraph(rng, 2), paragraph(rng, 2)]
        if n not in (1, 4):  # the cover and a full-page table have no running header
            lines.insert(0, f"ILO Working Paper {n + 40}")
        pages.append(Page(index=n, label=str(n), text="\n".join(lines)))
    cleaned = clean_pages(pages)
    assert not any("ILO Working Paper" in p.text for p in cleaned)
    assert all(len(p.text.split("\n")) == 3 for p in cleaned)


def test_a_line_on_few_pages_is_kept():
    rng = random.Random(3)
    pages = [Page(n, str(n), "\n".join(paragraph(rng, 2) for _ in range(4))) for n in range(1, 9)]
    for n in (2, 5):  # the same short line opens two of eight pages: not a running header
        pages[n].text = "Box 3: Lessons learned\n" + pages[n].text
    cleaned = clean_pages(pages)
    assert sum("Box 3: Lessons learned" in p.text for p in cleaned) == 2


def test_a_repeated_sentence_inside_the_page_body_is_kept():
    rng = random.Random(4)
    repeated = "Victims should never be punished for crimes they were compelled to commit."
    pages = []
    for n in range(1, 6):
        lines = [paragraph(rng, 2) for _ in range(4)] + [repeated] + [paragraph(rng, 2) for _ in range(4)]
        pages.append(Page(n, str(n), "\n".join(lines)))
    cleaned = clean_pages(pages)
    assert all(repeated in p.text for p in cleaned)


@pytest.mark.parametrize("number_line", ["12", "- 12 -", "Page 12", "page 12 of 40", "xiv", "| 12 |"])
def test_page_number_lines_at_the_page_edge_are_removed(number_line):
    rng = random.Random(5)
    pages = [Page(1, "1", f"{paragraph(rng, 3)}\n{paragraph(rng, 3)}\n{number_line}")]
    cleaned = clean_pages(pages)
    assert number_line not in cleaned[0].text.split("\n")
    assert cleaned[0].text.count(".") >= 6


def test_a_short_document_keeps_its_lines():
    """Two pages are too few to tell a running header from text."""
    pages = [Page(1, "1", "Annex II\nFirst page text about referral."), Page(2, "2", "Annex II\nSecond page text.")]
    assert [p.text for p in clean_pages(pages)] == [p.text for p in pages]


def test_hyphenation_across_line_breaks_is_joined():
    pages = [Page(1, "1", "Victims of traf-\nficking were identi-\nfied by labour inspec-\n  tors at the port.")]
    assert clean_pages(pages)[0].text == "Victims of trafficking were identified by labour inspectors at the port."


def test_real_hyphens_are_kept():
    pages = [Page(1, "1", "Counter-trafficking units met returnees. See Anti-\nSlavery International.")]
    text = clean_pages(pages)[0].text
    assert "Counter-trafficking" in text
    assert "Anti-\nSlavery" in text  # the next line starts with a capital: a real hyphen


def test_soft_hyphen_at_a_line_break_is_joined():
    """Word processors break words with a soft hyphen (U+00AD); the word must be whole
    again, as with an ordinary hyphen."""
    pages = [Page(1, "1", "Outreach workers met with re\u00ad\nturnees and traf\u00ad\nficking survivors.")]
    assert clean_pages(pages)[0].text == "Outreach workers met with returnees and trafficking survivors."


def test_ligatures_become_plain_letters():
    pages = [Page(1, "1", "The ﬁrst ofﬁcers identiﬁed trafﬁcking in the ﬂeet; ﬀ and ﬃ too.")]
    assert clean_pages(pages)[0].text == "The first officers identified trafficking in the fleet; ff and ffi too."


@pytest.mark.skipif(not DEJAVU.is_file(), reason="no Unicode TrueType font to draw ligatures with")
def test_ligatures_in_a_real_pdf(tmp_path):
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_font("DejaVu", fname=str(DEJAVU))
    rng = random.Random(6)
    fleets = ["tuna", "squid", "shrimp"]
    for fleet in fleets:
        pdf.add_page()
        pdf.set_font("DejaVu", size=11)
        pdf.set_xy(10, 20)
        pdf.multi_cell(0, 6, f"The ﬁrst ofﬁcers identiﬁed trafﬁcking in the {fleet} ﬂeet.\n{paragraph(rng, 3)}")
    raw = read_pdf(bytes(pdf.output())).pages
    # The PDF draws ligature glyphs; the reader itself may already spell them out, and the
    # cleaner repairs any it leaves: either way the words must come out whole.
    cleaned = clean_pages(raw)
    for fleet, page in zip(fleets, cleaned):
        assert f"The first officers identified trafficking in the {fleet} fleet." in page.text
        assert not re.search("[\ufb00-\ufb06]", page.text)


def test_white_space_is_normalised():
    raw = "  Survivors\t\treceived   legal\u00a0aid.  \n\n\n\n\n   Shelters   were   full.\u2003 \n"
    assert normalise_whitespace(raw) == "Survivors received legal aid.\n\nShelters were full."
    cleaned = clean_pages([Page(1, "1", raw)])[0]
    assert cleaned.text == "Survivors received legal aid.\n\nShelters were full."


# ======================================================================================
# chunking
# ======================================================================================


@pytest.fixture(scope="module")
def long_report() -> list[Page]:
    """Twelve cleaned pages of prose, read back from a real PDF."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = make_pdf(Path(folder) / "long.pdf", report_pages(7, 12, paragraphs=4), footer="{n}")
        return clean_pages(read_pdf(path.read_bytes()).pages)


def test_chunks_never_exceed_the_token_limit(long_report):
    limit = Settings().chunk_tokens
    chunks = chunk_pages(DOC_ID, long_report, chunk_tokens=limit, overlap_tokens=40)
    assert len(chunks) >= 12
    sizes = [count_tokens(c.text) for c in chunks]
    assert max(sizes) <= limit
    assert max(sizes) > limit * 0.6  # they are filled, not fragments


@pytest.mark.parametrize("limit", [40, 90])
def test_small_limits_hold_too(long_report, limit):
    chunks = chunk_pages(DOC_ID, long_report, chunk_tokens=limit, overlap_tokens=limit // 5)
    assert all(count_tokens(c.text) <= limit for c in chunks)


def test_unbreakable_text_is_still_cut_to_size():
    url = "https://example.org/" + "/".join(f"segment{n}-trafficking-data" for n in range(120))
    table = " ".join(str(1000 + n) for n in range(600))  # a table of numbers, no punctuation
    run_on = " ".join(["recruitment agencies charged illegal fees"] * 120)  # one endless sentence
    pages = [Page(1, "1", url), Page(2, "2", table), Page(3, "3", run_on)]
    chunks = chunk_pages(DOC_ID, pages, chunk_tokens=200, overlap_tokens=40)
    assert {c.page_start for c in chunks} == {1, 2, 3}
    assert all(count_tokens(c.text) <= 200 for c in chunks)


def test_embedding_text_fits_the_model(long_report):
    """Title and heading are added before the passage; all of it must reach the model
    (256 word pieces, two of them special tokens)."""
    pages = [Page(p.index, p.label, p.text) for p in long_report]
    pages[3].text = "3.2 Identification of Victims in Fisheries and Seafood Supply Chains\n" + pages[3].text
    chunks = chunk_pages(DOC_ID, pages, chunk_tokens=Settings().chunk_tokens, overlap_tokens=40)
    document = meta(
        title="Final Evaluation of the EU-IOM Joint Initiative for Migrant Protection and "
        "Reintegration in the Horn of Africa - Final Evaluation Report (17 March 2023)"
    )
    assert any(c.heading for c in chunks)
    for chunk in chunks:
        assert count_tokens(embedding_text(chunk, document)) <= MAX_WORD_PIECES - 2


def test_embedding_text_fits_the_model_with_document_symbols_in_title_and_heading(long_report):
    """UN documents cite symbols such as A/HRC/23/48/Add.2 in titles and numbered
    headings; each such "word" is many word pieces.  The context header must still leave
    the whole passage within the model's input."""
    pages = [Page(p.index, p.label, p.text) for p in long_report]
    pages[3].text = (
        "3.2.1 Follow-up to A/HRC/RES/50/7, A/HRC/RES/44/4 and E/CN.15/2024/L.3 on trafficking\n" + pages[3].text
    )
    chunks = chunk_pages(DOC_ID, pages, chunk_tokens=Settings().chunk_tokens, overlap_tokens=40)
    document = meta(
        title="Note by the Secretary-General transmitting A/80/48, E/ICEF/2025/12, S/2025/85, "
        "S/2025/420 and A/HRC/23/48/Add.2 to the General Assembly"
    )
    headed = [c for c in chunks if c.heading.startswith("3.2.1")]
    assert headed
    too_long = [
        (c.chunk_id, count_tokens(embedding_text(c, document)))
        for c in chunks
        if count_tokens(embedding_text(c, document)) > MAX_WORD_PIECES - 2
    ]
    assert not too_long, f"passages cut short by the model's input limit: {too_long[:3]}"


def test_each_chunk_is_found_on_its_pages(long_report):
    chunks = chunk_pages(DOC_ID, long_report, chunk_tokens=200, overlap_tokens=40)
    by_index = {p.index: collapse_whitespace(p.text) for p in long_report}
    for chunk in chunks:
        assert 1 <= chunk.page_start <= chunk.page_end <= len(long_report)
        span = collapse_whitespace(" ".join(by_index[i] for i in range(chunk.page_start, chunk.page_end + 1)))
        assert collapse_whitespace(chunk.text) in span
        first, last = words(chunk.text)[:6], words(chunk.text)[-6:]
        assert " ".join(first) in by_index[chunk.page_start]
        assert " ".join(last) in by_index[chunk.page_end]
        assert chunk.label_start == str(chunk.page_start) and chunk.label_end == str(chunk.page_end)
    assert chunks[0].page_start == 1 and chunks[-1].page_end == len(long_report)


def test_a_passage_running_over_a_page_break_gets_both_pages():
    rng = random.Random(8)
    pages = [Page(n, label, paragraph(rng, 3)) for n, label in ((1, "65"), (2, "66"), (3, "67"))]
    chunks = chunk_pages(DOC_ID, pages, chunk_tokens=200, overlap_tokens=40)
    assert chunks[0].page_start == 1 and chunks[0].page_end >= 2
    assert chunks[0].label_start == "65" and chunks[0].label_end == str(64 + chunks[0].page_end)
    assert chunks[0].chunk_id.startswith(f"{DOC_ID[:16]}-p1-{chunks[0].page_end}-c0000")


def test_no_text_is_lost(long_report):
    chunks = chunk_pages(DOC_ID, long_report, chunk_tokens=200, overlap_tokens=40)
    everything = " | ".join(collapse_whitespace(c.text) for c in chunks)
    for page in long_report:
        for piece in re.split(r"(?<=\.) ", collapse_whitespace(page.text)):
            assert piece in everything, f"page {page.index} lost: {piece}"


def test_consecutive_chunks_overlap(long_report):
    chunks = chunk_pages(DOC_ID, long_report, chunk_tokens=60, overlap_tokens=20)
    overlapping = 0
    for before, after in zip(chunks, chunks[1:]):
        tail = " ".join(words(before.text)[-4:])
        overlapping += tail in collapse_whitespace(after.text)
    assert overlapping >= len(chunks) // 3


def test_chunk_ids_carry_document_page_range_and_ordinal(long_report):
    chunks = chunk_pages(DOC_ID, long_report, chunk_tokens=200, overlap_tokens=40)
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
    assert len({c.chunk_id for c in chunks}) == len(chunks)
    for chunk in chunks:
        match = re.fullmatch(r"([0-9a-f]{16})-p(\d+)-(\d+)-c(\d{4})", chunk.chunk_id)
        assert match, chunk.chunk_id
        assert match.group(1) == DOC_ID[:16]
        assert (int(match.group(2)), int(match.group(3))) == (chunk.page_start, chunk.page_end)
        assert int(match.group(4)) == chunk.ordinal
        assert chunk.doc_id == DOC_ID


def test_heading_is_found_and_carried_by_the_chunks_under_it(tmp_path):
    bodies = report_pages(9, 6)
    bodies[3] = "2. Victim Identification Procedures\n" + bodies[3]
    path = make_pdf(tmp_path / "h.pdf", bodies, header="Annual Report {n}")
    extracted = extract_document(path.read_bytes(), DOC_ID, ExtractOptions())
    before = [c for c in extracted.chunks if c.page_end < 4]
    under = [c for c in extracted.chunks if c.page_start >= 4]
    assert before and under
    assert all(c.heading != "2. Victim Identification Procedures" for c in before)
    assert under[0].heading == "2. Victim Identification Procedures"
    assert under[0].text.startswith("2. Victim Identification Procedures")


@pytest.mark.parametrize(
    "line, previous, expected",
    [
        ("2. Victim Identification", "The report ends here.", True),
        ("LESSONS LEARNED", "", True),
        ("Good Practices in Shelter Management", "", True),
        ("Chapter IV. Recommendations", "", True),
        ("victims were identified at the port", "", False),
        ("The shelter was full.", "", False),
        ("Good Practices in Shelter Management", "and the shelters in the", False),
        ("2019", "", False),
    ],
)
def test_looks_like_heading(line, previous, expected):
    assert looks_like_heading(line, previous) is expected


def test_chunks_of_two_documents_stay_apart(tmp_path):
    fisheries = make_pdf(tmp_path / "a.pdf", [f"Fishing crews on vessel Aurora {n} were held at sea for months." * 3 for n in range(3)])
    cocoa = make_pdf(tmp_path / "b.pdf", [f"Children harvested cocoa pods on farm Kumasi {n} instead of attending school." * 3 for n in range(3)])
    first = extract_document(fisheries.read_bytes(), "a" * 64, ExtractOptions())
    second = extract_document(cocoa.read_bytes(), "b" * 64, ExtractOptions())
    assert all(c.doc_id == "a" * 64 and "cocoa" not in c.text for c in first.chunks)
    assert all(c.doc_id == "b" * 64 and "vessel" not in c.text for c in second.chunks)
    assert not {c.chunk_id for c in first.chunks} & {c.chunk_id for c in second.chunks}


def test_extraction_gives_terms_for_every_chunk(tmp_path):
    path = make_pdf(tmp_path / "t.pdf", report_pages(10, 3))
    extracted = extract_document(path.read_bytes(), DOC_ID, ExtractOptions())
    assert len(extracted.terms) == len(extracted.chunks)
    assert all(terms for terms in extracted.terms)
    assert "victim" in {t for terms in extracted.terms for t in terms} or "migrant" in {
        t for terms in extracted.terms for t in terms
    }
