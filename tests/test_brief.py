"""Briefs: storage (create, edit, reorder, delete, survive a restart) and the
Markdown, DOCX and PDF exports (brief-wide citation numbers, references,
Unicode, and untrusted document text)."""

from __future__ import annotations

import io
import json
import re
import uuid
from pathlib import Path

import docx
import pypdf
import pytest

from kb.brief import (
    Brief,
    BriefCorrupt,
    BriefItem,
    BriefNotFound,
    BriefStore,
    InvalidBriefId,
    ItemNotFound,
    escape_markdown,
    find_pdf_fonts,
    format_page,
    heading_item,
    layout_brief,
    new_brief,
    passage_item,
    to_docx,
    to_latin1,
    to_markdown,
    to_pdf,
)
from kb.records import Answer, Citation


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def cite(
    n: int = 1,
    *,
    doc_id: str = "doc-a",
    page: int = 3,
    page_label: str = "67",
    chunk_id: str = "doc-a:0001",
    text: str = "Recruiters advertised jobs abroad and confiscated passports on arrival.",
    quote: str = "",
    title: str = "Global Report on Trafficking in Persons",
    organisation: str = "UNODC",
    year: int | None = 2022,
    url: str = "https://www.unodc.org/glotip.pdf",
) -> Citation:
    return Citation(
        n=n,
        doc_id=doc_id,
        file=f"{doc_id}.pdf",
        title=title,
        organisation=organisation,
        year=year,
        page=page,
        page_label=page_label,
        text=text,
        score=0.8,
        quote=quote,
        url=url,
        chunk_id=chunk_id,
    )


PASSAGE_A = dict(doc_id="doc-a", page=3, page_label="67", chunk_id="doc-a:0001")
PASSAGE_B = dict(
    doc_id="doc-b",
    page=12,
    page_label="12",
    chunk_id="doc-b:0007",
    text="Survivors were more likely to report to NGOs than to the police.",
    title="Victim Identification Handbook",
    organisation="IOM",
    year=2019,
    url="https://publications.iom.int/handbook.pdf",
)
PASSAGE_C = dict(
    doc_id="doc-c",
    page=5,
    page_label="iv",
    chunk_id="doc-c:0002",
    text="Labour inspectors received joint training with prosecutors.",
    title="Annual Report",
    organisation="ILO",
    year=2021,
    url="",
)


def pdf_text(data: bytes) -> str:
    """All text of a PDF, whitespace collapsed (extraction spacing varies)."""
    reader = pypdf.PdfReader(io.BytesIO(data))
    return " ".join(" ".join((page.extract_text() or "").split()) for page in reader.pages)


def docx_paragraphs(data: bytes) -> list[str]:
    return [p.text for p in docx.Document(io.BytesIO(data)).paragraphs]


@pytest.fixture
def store(tmp_path: Path) -> BriefStore:
    return BriefStore(tmp_path / "briefs")


@pytest.fixture
def sample(store: BriefStore) -> Brief:
    """A brief with a heading, two answers sharing a passage, a passage and a note."""
    brief = store.create("Recruitment fraud: lessons learned")
    store.add_heading(brief.id, "How victims are recruited")
    store.add_answer(
        brief.id,
        Answer(
            question="How do recruiters deceive victims?",
            answer="Recruiters advertise jobs abroad [1]. Victims rarely go to the police [2].",
            citations=[cite(1, **PASSAGE_A), cite(2, **PASSAGE_B)],
        ),
    )
    store.add_answer(
        brief.id,
        Answer(
            question="Who do survivors turn to?",
            # the same IOM passage, numbered [1] inside this answer
            answer="Survivors prefer NGOs [1]; inspectors now train with prosecutors [2].",
            citations=[cite(1, **PASSAGE_B), cite(2, **PASSAGE_C)],
        ),
    )
    store.add_passage(brief.id, cite(4, **PASSAGE_A), note="Use in module 2.")
    store.add_note(brief.id, "Discuss with the group before the break.")
    return store.get(brief.id)


# --------------------------------------------------------------------------------------
# storage
# --------------------------------------------------------------------------------------


def test_create_list_and_persist_across_restart(tmp_path: Path) -> None:
    folder = tmp_path / "briefs"
    store = BriefStore(folder)
    assert store.list() == []  # the folder does not exist yet

    first = store.create("First brief")
    second = store.create("Second brief")
    store.add_heading(first.id, "Intro")
    store.add_passage(first.id, cite(1), note="Key quote")
    store.add_answer(
        second.id,
        Answer(question="Q?", answer="A [1].", citations=[cite(1, **PASSAGE_B)]),
    )
    store.add_note(second.id, "Para one.\n\nPara two.")

    assert re.fullmatch(r"[0-9a-f]{32}", first.id)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f"{first.id}.json", f"{second.id}.json"]
    )

    restarted = BriefStore(folder)  # a new process would do exactly this
    listed = {b.id: b for b in restarted.list()}
    assert set(listed) == {first.id, second.id}
    assert listed[first.id].title == "First brief"

    again = restarted.get(first.id)
    assert [i.kind for i in again.items] == ["heading", "passage"]
    assert again.items[0].text == "Intro"
    assert again.items[1].note == "Key quote"
    assert again.items[1].citation == cite(1)

    answer = restarted.get(second.id).items[0]
    assert answer.kind == "answer"
    assert answer.question == "Q?"
    assert answer.text == "A [1]."
    assert answer.citation_records() == [cite(1, **PASSAGE_B)]
    assert restarted.get(second.id).items[1].text == "Para one.\n\nPara two."


def test_stored_file_is_plain_json(store: BriefStore, sample: Brief) -> None:
    data = json.loads((store.briefs_dir / f"{sample.id}.json").read_text(encoding="utf-8"))
    assert data["id"] == sample.id
    assert data["title"] == "Recruitment fraud: lessons learned"
    assert data["created"] and data["updated"]
    assert data["items"][1]["citations"][0]["organisation"] == "UNODC"
    assert data["items"][1]["citations"][0]["page_label"] == "67"


def test_list_newest_first(store: BriefStore) -> None:
    older = store.create("Older")
    newer = store.create("Newer")
    older_brief = store.get(older.id)
    older_brief.updated = "2000-01-01T00:00:00+00:00"
    (store.briefs_dir / f"{older.id}.json").write_text(json.dumps(older_brief.to_dict()))
    assert [b.id for b in store.list()] == [newer.id, older.id]


def test_rename(store: BriefStore) -> None:
    brief = store.create("Draft")
    store.rename(brief.id, "  Final\n title  ")
    assert BriefStore(store.briefs_dir).get(brief.id).title == "Final title"
    store.set_title(brief.id, "")
    assert store.get(brief.id).title == "Untitled brief"


def test_reorder_items(store: BriefStore) -> None:
    brief = store.create("Order")
    a = store.add_heading(brief.id, "A")
    b = store.add_note(brief.id, "B")
    c = store.add_note(brief.id, "C")
    d = store.add_heading(brief.id, "D")

    def order() -> list[str]:
        return [i.text for i in BriefStore(store.briefs_dir).get(brief.id).items]

    assert order() == ["A", "B", "C", "D"]
    store.move_item(brief.id, d.id, 0)
    assert order() == ["D", "A", "B", "C"]
    store.move_item(brief.id, a.id, "down")
    assert order() == ["D", "B", "A", "C"]
    store.move_item(brief.id, c.id, "up")
    assert order() == ["D", "B", "C", "A"]
    store.move_item(brief.id, d.id, "up")  # already first: stays
    assert order() == ["D", "B", "C", "A"]
    store.move_item(brief.id, b.id, 99)  # clamped to the end
    assert order() == ["D", "C", "A", "B"]
    with pytest.raises(ValueError):
        store.move_item(brief.id, b.id, "sideways")  # type: ignore[arg-type]

    store.remove_item(brief.id, c.id)
    assert order() == ["D", "A", "B"]
    with pytest.raises(ItemNotFound):
        store.remove_item(brief.id, c.id)
    with pytest.raises(ItemNotFound):
        store.move_item(brief.id, "nope", 0)


def test_add_at_index_and_edit_text(store: BriefStore) -> None:
    brief = store.create("Edit")
    store.add_note(brief.id, "second")
    first = store.add_heading(brief.id, "first", index=0)
    passage = store.add_passage(brief.id, cite(1))
    store.update_item_text(brief.id, first.id, "First, renamed")
    store.update_item_text(brief.id, passage.id, "why this matters")
    items = store.get(brief.id).items
    assert [i.kind for i in items] == ["heading", "note", "passage"]
    assert items[0].text == "First, renamed"
    assert items[2].note == "why this matters"
    with pytest.raises(ValueError):
        store.add_heading(brief.id, "   ")
    with pytest.raises(ValueError):
        store.add_note(brief.id, "")


def test_delete(store: BriefStore) -> None:
    keep = store.create("Keep")
    drop = store.create("Drop")
    assert store.delete(drop.id) is True
    assert store.delete(drop.id) is False
    with pytest.raises(BriefNotFound):
        store.get(drop.id)
    with pytest.raises(BriefNotFound):
        store.add_note(drop.id, "too late")
    assert [b.id for b in BriefStore(store.briefs_dir).list()] == [keep.id]


@pytest.mark.parametrize(
    "bad_id",
    [
        "../outside",
        "../../etc/passwd",
        "..",
        "a/b",
        "/tmp/x",
        "",
        uuid.uuid4().hex.upper(),
        uuid.uuid4().hex + ".json",
        uuid.uuid4().hex[:31],
        str(uuid.uuid4()),  # with dashes
        "0" * 31 + "\n",
    ],
)
def test_brief_id_traversal_rejected(store: BriefStore, tmp_path: Path, bad_id: str) -> None:
    store.create("Something to protect")
    before = sorted(p for p in tmp_path.rglob("*"))
    for call in (
        lambda: store.get(bad_id),
        lambda: store.delete(bad_id),
        lambda: store.rename(bad_id, "x"),
        lambda: store.add_note(bad_id, "x"),
        lambda: store.move_item(bad_id, "x", 0),
        lambda: store.remove_item(bad_id, "x"),
        lambda: store.save(Brief(id=bad_id, title="x", created="", updated="")),
    ):
        with pytest.raises(InvalidBriefId):
            call()
    assert sorted(p for p in tmp_path.rglob("*")) == before


def test_writes_are_atomic_and_leftovers_ignored(store: BriefStore, sample: Brief) -> None:
    folder = store.briefs_dir
    # a save leaves exactly one file per brief, no temporary files
    assert sorted(p.name for p in folder.iterdir()) == [f"{sample.id}.json"]
    before = (folder / f"{sample.id}.json").read_text(encoding="utf-8")

    # a save that fails (here: something not JSON-able) leaves the old file untouched
    broken = store.get(sample.id)
    broken.items.append(BriefItem(id="x", kind="note", text=object()))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        store.save(broken)
    assert (folder / f"{sample.id}.json").read_text(encoding="utf-8") == before
    assert sorted(p.name for p in folder.iterdir()) == [f"{sample.id}.json"]

    # what a crash mid-write could leave behind is never read as a brief
    (folder / f".{sample.id}.abc123.tmp").write_text('{"id": "half a')
    (folder / "notes.json").write_text("{}")
    corrupt_id = uuid.uuid4().hex
    (folder / f"{corrupt_id}.json").write_text('{"id": "half a')
    assert [b.id for b in store.list()] == [sample.id]
    with pytest.raises(BriefCorrupt):
        store.get(corrupt_id)
    assert store.get(sample.id).to_dict() == Brief.from_dict(json.loads(before)).to_dict()


def test_concurrent_adds_are_not_lost(tmp_path: Path) -> None:
    """Two sessions (two store objects) adding to one brief at once lose nothing."""
    import threading

    folder = tmp_path / "briefs"
    brief = BriefStore(folder).create("Busy")

    def add_notes(worker: int) -> None:
        store = BriefStore(folder)
        for i in range(10):
            store.add_note(brief.id, f"w{worker}-{i}")

    threads = [threading.Thread(target=add_notes, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    texts = [i.text for i in BriefStore(folder).get(brief.id).items]
    assert sorted(texts) == sorted(f"w{w}-{i}" for w in range(6) for i in range(10))


def test_brief_can_be_built_in_memory_then_saved(store: BriefStore) -> None:
    """Other code (e.g. a brief built from themes) assembles a Brief and saves it."""
    brief = new_brief("Theme: debt bondage")
    brief.add(heading_item("Debt bondage"))
    brief.add(passage_item(cite(1, **PASSAGE_C)))
    store.save(brief)
    assert [i.kind for i in store.get(brief.id).items] == ["heading", "passage"]


# --------------------------------------------------------------------------------------
# brief-wide citation numbers
# --------------------------------------------------------------------------------------


def test_renumbering_across_answers(sample: Brief) -> None:
    layout = layout_brief(sample)
    # UNODC (A) = 1, IOM (B) = 2 from the first answer; ILO (C) = 3 from the second;
    # the passage of A reuses 1.
    assert [(r.n, r.citation.organisation) for r in layout.references] == [
        (1, "UNODC"),
        (2, "IOM"),
        (3, "ILO"),
    ]
    answers = [b.plain() for b in layout.blocks if b.kind == "answer"]
    assert answers == [
        "Recruiters advertise jobs abroad [1]. Victims rarely go to the police [2].",
        "Survivors prefer NGOs [2]; inspectors now train with prosecutors [3].",
    ]
    quotes = [b.plain() for b in layout.blocks if b.kind == "quote"]
    assert quotes == [
        "Recruiters advertised jobs abroad and confiscated passports on arrival. [1]"
    ]

    md = to_markdown(sample)
    assert "Survivors prefer NGOs [2]; inspectors now train with prosecutors [3]." in md
    assert md.count("[1] UNODC.") == 1 and md.count("[2] IOM.") == 1
    assert "[4]" not in md


def test_same_quote_without_chunk_id_shares_a_number() -> None:
    brief = new_brief("Quotes")
    one = cite(1, chunk_id="", quote="Passports were confiscated.")
    two = cite(3, chunk_id="", quote="  passports were   confiscated. ")  # same sentence
    other_page = cite(2, chunk_id="", page=4, page_label="68", quote="Passports were confiscated.")
    brief.add(
        BriefItem(id="a", kind="answer", question="q", text="X [1].", citations=[one.to_dict()])
    )
    brief.add(
        BriefItem(
            id="b",
            kind="answer",
            question="q",
            text="Y [3]. Z [2].",
            citations=[two.to_dict(), other_page.to_dict()],
        )
    )
    layout = layout_brief(brief)
    assert [b.plain() for b in layout.blocks if b.kind == "answer"] == ["X [1].", "Y [1]. Z [2]."]
    assert len(layout.references) == 2


def test_marker_groups_unknown_and_unmarked_citations() -> None:
    brief = new_brief("Markers")
    brief.add(passage_item(cite(1, **PASSAGE_C)))  # takes number 1
    brief.add(
        BriefItem(
            id="a",
            kind="answer",
            question="q",
            text="Both [1, 2]. Unknown [9]. Again [2][1].",
            citations=[
                cite(1, **PASSAGE_A).to_dict(),
                cite(2, **PASSAGE_B).to_dict(),
                cite(3, doc_id="doc-d", chunk_id="d:1", text="Never marked.").to_dict(),
            ],
        )
    )
    layout = layout_brief(brief)
    answer = [b.plain() for b in layout.blocks if b.kind == "answer"][0]
    # 9 does not exist and is dropped; 3 is never marked but keeps its source (4)
    assert answer == "Both [2, 3]. Unknown. Again [3][2]. [4]"
    assert [r.n for r in layout.references] == [1, 2, 3, 4]


def test_page_formatting() -> None:
    assert format_page(cite(page=3, page_label="67")) == "p. 67 (PDF page 3)"
    assert format_page(cite(page=5, page_label="5")) == "p. 5"
    assert format_page(cite(page=5, page_label="")) == "PDF page 5"
    assert format_page(cite(page=5, page_label="iv")) == "p. iv (PDF page 5)"


# --------------------------------------------------------------------------------------
# exports
# --------------------------------------------------------------------------------------

EXPECTED_REFERENCES = [
    "[1] UNODC. Global Report on Trafficking in Persons (2022), p. 67 (PDF page 3).",
    "[2] IOM. Victim Identification Handbook (2019), p. 12.",
    "[3] ILO. Annual Report (2021), p. iv (PDF page 5).",
]


def test_markdown_export(sample: Brief) -> None:
    md = to_markdown(sample)
    assert md.startswith("# Recruitment fraud: lessons learned\n")
    assert "## How victims are recruited" in md
    assert "**Q:** How do recruiters deceive victims?" in md
    assert "> Recruiters advertised jobs abroad and confiscated passports on arrival. [1]" in md
    assert "*Note:* Use in module 2." in md
    assert "Discuss with the group before the break." in md
    refs = md.split("## References", 1)[1]
    unescaped = refs.replace("\\(", "(").replace("\\)", ")")
    for line in EXPECTED_REFERENCES:
        assert line in unescaped
    assert "<https://www.unodc.org/glotip.pdf>" in refs
    assert "<https://publications.iom.int/handbook.pdf>" in refs
    # items keep their order
    positions = [
        md.index(s)
        for s in ("How victims are recruited", "How do recruiters", "Who do survivors",
                  "> Recruiters", "Discuss with the group", "## References")
    ]
    assert positions == sorted(positions)


def test_docx_export(sample: Brief) -> None:
    data = to_docx(sample)
    document = docx.Document(io.BytesIO(data))
    paragraphs = [p.text for p in document.paragraphs]
    assert paragraphs[0] == "Recruitment fraud: lessons learned"
    assert "How victims are recruited" in paragraphs
    assert "Q: How do recruiters deceive victims?" in paragraphs
    assert "Survivors prefer NGOs [2]; inspectors now train with prosecutors [3]." in paragraphs
    quote = [p for p in document.paragraphs if p.style.name == "Quote"]
    assert [p.text for p in quote] == [
        "Recruiters advertised jobs abroad and confiscated passports on arrival. [1]"
    ]
    assert "References" in paragraphs
    after = paragraphs[paragraphs.index("References") + 1 :]
    assert len(after) == 3
    for expected, actual in zip(EXPECTED_REFERENCES, after):
        assert actual.startswith(expected)
    assert after[0].endswith("https://www.unodc.org/glotip.pdf")
    assert document.core_properties.title == "Recruitment fraud: lessons learned"


def test_pdf_export(sample: Brief) -> None:
    data = to_pdf(sample)
    assert data.startswith(b"%PDF")
    text = pdf_text(data)
    assert "Recruitment fraud: lessons learned" in text
    assert "Survivors prefer NGOs [2]; inspectors now train with prosecutors [3]." in text
    assert "References" in text
    for line in EXPECTED_REFERENCES:
        assert line in text
    assert text.index("How victims are recruited") < text.index("References")


def test_pdf_export_with_builtin_font(sample: Brief) -> None:
    text = pdf_text(to_pdf(sample, fonts=None))
    assert "Recruitment fraud: lessons learned" in text
    for line in EXPECTED_REFERENCES:
        assert line in text


UNICODE_TITLE = "Côte d'Ivoire – “cocoa” farms"
UNICODE_TEXT = "Réseaux à Abidjan — “promesses” d’emploi; Москва; Ελλάδα; naïve façade"


def unicode_brief() -> Brief:
    brief = new_brief(UNICODE_TITLE)
    brief.add(heading_item("Países de tránsito"))
    brief.add(
        passage_item(
            cite(
                1,
                text=UNICODE_TEXT,
                organisation="Organisation internationale pour les migrations",
                title="Étude régionale 東京",
                page_label="xii",
                page=14,
            )
        )
    )
    return brief


def test_pdf_unicode(tmp_path: Path) -> None:
    brief = unicode_brief()
    data = to_pdf(brief)
    (tmp_path / "unicode.pdf").write_bytes(data)
    text = pdf_text(data)
    if find_pdf_fonts() is None:
        pytest.skip("no Unicode TrueType font installed; the built-in font test covers this")
    assert UNICODE_TITLE in text
    assert "Países de tránsito" in text
    for fragment in UNICODE_TEXT.split("; "):
        assert fragment in text
    assert "Organisation internationale pour les migrations. Étude régionale" in text
    assert "p. xii (PDF page 14)" in text


def test_pdf_unicode_without_unicode_font_never_raises() -> None:
    brief = unicode_brief()
    awkward = "emoji 🙂, math ∑, ligature ﬁ, bidi \u202e, nul \x00"
    brief.add(BriefItem(id="n", kind="note", text=awkward))
    text = pdf_text(to_pdf(brief, fonts=None))
    assert "Côte d'Ivoire - \"cocoa\" farms" in text
    assert "Réseaux à Abidjan -- \"promesses\" d'emploi" in text
    assert "naïve façade" in text


def test_to_latin1() -> None:
    assert to_latin1("“Côte d’Ivoire” – 5 €…") == "\"Côte d'Ivoire\" - 5 EUR..."
    assert to_latin1("Łódź") == "Lódz"
    weird = "東京 🙂 \u202e \ud800 ﬁ"
    out = to_latin1(weird)
    out.encode("latin-1")  # never raises
    assert "fi" in out


def test_docx_survives_control_characters() -> None:
    brief = new_brief("Control\x00 chars\x0b")
    brief.add(passage_item(cite(1, text="Form\x0cfeed and \x1b escape and \ud800 surrogate")))
    paragraphs = docx_paragraphs(to_docx(brief))
    assert paragraphs[0] == "Control chars"
    assert any("Form feed and escape and surrogate [1]" in p for p in paragraphs)


# --------------------------------------------------------------------------------------
# untrusted document text in Markdown
# --------------------------------------------------------------------------------------

EVIL = (
    "Read more: [click](http://evil) <script>alert(1)</script> "
    "![pixel](http://evil/x.png) *bold* _em_ `code` <img src=x onerror=alert(1)>"
)


def injection_brief() -> Brief:
    brief = new_brief("Brief <b>bold</b> [x](http://evil)")
    brief.add(passage_item(cite(1, text=EVIL), note="[note](javascript:alert(1))"))
    brief.add(
        BriefItem(
            id="a",
            kind="answer",
            question="<script>q</script>",
            text="Claim [1](http://evil) and [1]: http://evil and " + EVIL,
            citations=[cite(1, **PASSAGE_B).to_dict()],
        )
    )
    brief.add(passage_item(cite(1, **PASSAGE_C, quote="")))
    brief.items[-1].citations[0]["url"] = "javascript:alert(1)"
    brief.items[-1].citations[0]["title"] = "Report](http://evil) <iframe>"
    return brief


def test_markdown_escapes_document_text() -> None:
    md = to_markdown(injection_brief())
    # every "<" left unescaped opens one of our own reference links
    for match in re.finditer(r"(?<!\\)<", md):
        assert md[match.start() :].startswith("<https://"), md[match.start() : match.start() + 20]
    for live in (
        "[click](http://evil)",
        "![pixel]",
        "](http://evil)",
        "](javascript:",
        "*bold*",
        "`code`",
    ):
        assert live not in md, live
    # our own markers are left alone: the passage and the answer cite [1] and [2]
    assert "[1]" in md and "[2]" in md
    assert "Claim [2]\\(http\\://evil\\) and [2]\\: http\\://evil" in md
    assert "[2] IOM." in md
    # an unsafe URL is shown as text, never as a link
    assert "<javascript" not in md


def test_markdown_injection_renders_inert() -> None:
    markdown_it = pytest.importorskip("markdown_it")
    html = markdown_it.MarkdownIt("commonmark").render(to_markdown(injection_brief()))
    assert "<script" not in html
    assert "<img" not in html
    assert "<iframe" not in html
    assert "<b>" not in html
    assert 'href="http://evil' not in html
    assert "<em>" not in html.split("References")[0].replace("<em>Note:</em>", "")
    assert "<code>" not in html
    # the text is still there, shown literally
    assert "[click](http://evil)" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    # the only links are the references' own http(s) URLs
    assert re.findall(r'href="([^"]*)"', html) == [
        "https://www.unodc.org/glotip.pdf",
        "https://publications.iom.int/handbook.pdf",
    ]
    # our markers appear as plain [n]
    assert "prosecutors" in html and "[3]" in html


def test_escape_markdown_line_starts() -> None:
    assert escape_markdown("# Heading") == "\\# Heading"
    assert escape_markdown("- item\n+ item\n1. item\n    code") == (
        "\\- item\n\\+ item\n1\\. item\ncode"
    )
    assert escape_markdown("see http://x.org") == "see http\\://x.org"
