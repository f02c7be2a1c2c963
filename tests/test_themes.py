"""Themes and passage types: the taxonomy file, tagging at ingest (ledger and Chroma),
the ``--theme`` / ``--type`` filters of ``kb search`` and ``kb ask``, ``kb map``, theme
briefs and ``kb retag`` after the taxonomy changes.

The library is made of one-page PDFs, each written for one theme and one passage type,
so every tag has a passage that should carry it.  The real embedding model is used.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import ingest_with_cli, make_pdf
from kb.cli import main

# name -> (organisation, theme the passage is written for, passage type, text)
PASSAGES: dict[str, tuple[str, str, str, str]] = {
    "coordination": (
        "IOM", "coordination", "lesson",
        "Lessons learned from the joint task force. The multi-agency task force brought labour inspectors, "
        "social workers and NGOs into one coordination mechanism with a national referral mechanism. "
        "Coordination worked well once a national coordinating body chaired the monthly meetings. "
        "The main challenge was jurisdiction: victims were missed when agencies of neighbouring districts "
        "disputed which of them was responsible, which led to delays. Clear referral pathways proved essential.",
    ),
    "coordination-rec": (
        "UNODC", "coordination", "recommendation",
        "Governments should establish a multi-agency task force in every region and should link it to the "
        "national referral mechanism. We recommend that the national coordinating body publishes referral "
        "pathways, and that inter-agency coordination meetings are held every month with all service providers.",
    ),
    "immigration": (
        "UNODC", "immigration-relief", "definition",
        "Article 4. For the purposes of this Act, \"reflection period\" means a period of at least 45 days during "
        "which a foreign victim of trafficking may not be removed or deported. \"Residence permit\" means a "
        "renewable permit granted to a victim with irregular immigration status. States Parties shall grant "
        "continued presence, a T visa or leave to remain, and shall apply the non-punishment principle so that "
        "victims are protected from detention, deportation and removal.",
    ),
    "victim-services": (
        "IOM", "victim-services", "practice",
        "Promising practice: a good practice in victim identification and support. Front-line staff screen every "
        "person against trafficking indicators, and identified victims are referred to shelters with case management. "
        "Case workers arrange psychosocial counselling, mental health care, medical care and legal aid. This "
        "survivor-centred, trauma-informed approach helped survivors recover and enabled their reintegration.",
    ),
    "child": (
        "UNICEF", "child-exploitation", "recommendation",
        "States should protect children exploited in commercial sex. Child victims of sexual exploitation, child "
        "prostitution and online child sexual abuse should receive child-friendly, child-sensitive services. "
        "Police should never treat a child in prostitution as an offender. We recommend that grooming, sextortion "
        "and online enticement of minors are criminalised and that rehabilitation and reintegration of child victims is funded.",
    ),
    "research": (
        "UNODC", "research-data", "finding",
        "The national survey found that 38 per cent of identified victims had been exploited for more than a year. "
        "Data collection relied on a shared database and common data standards; prevalence estimates were based on a "
        "household survey of 12,400 respondents. According to the monitoring and evaluation data, the number of "
        "victims recorded rose from 1,250 in 2019 to 2,980 in 2022.",
    ),
    "diplomatic": (
        "UNICEF", "diplomatic-immunity", "recommendation",
        "Domestic workers employed in diplomatic households are exposed to abuse because their employers enjoy "
        "diplomatic immunity. Ministries of foreign affairs should register every domestic worker of a diplomat, "
        "interview them without the employer, and should ask the sending state to waive privileges and immunities "
        "when a diplomat is accused of exploitation, so that diplomatic status never means impunity.",
    ),
    "awareness": (
        "UNICEF", "awareness-demand", "practice",
        "A good practice in prevention: the public awareness campaign reached two million people through radio, "
        "television and social media. Opinion leaders and religious leaders joined the outreach, and a hotline "
        "let the public report suspected trafficking. The campaign also addressed demand: it asked buyers of "
        "commercial sex and consumers of goods made with forced labour to change their behaviour.",
    ),
    "labour": (
        "IOM", "labour-migration", "finding",
        "Labour migration survey findings: 62 per cent of migrant workers paid recruitment fees to recruitment "
        "agencies, on average 1,800 dollars. Fraudulent recruitment and contract substitution were reported by 41 per cent "
        "of guest workers, and 23 per cent were in debt bondage. Labour inspection found forced labour in the supply chains "
        "of three export sectors.",
    ),
    "laws": (
        "UNODC", "laws-and-training", "recommendation",
        "Governments should adopt comprehensive anti-trafficking legislation that criminalises all forms of trafficking "
        "and sets penalties proportionate to the crime. Legislation should be matched by training: police officers and "
        "local officials must be trained in a victim-centred approach, and law enforcement training should be part of the "
        "curriculum of every police academy.",
    ),
    "restitution": (
        "UNICEF", "restitution", "lesson",
        "Lessons learned on restitution and compensation. Courts rarely ordered restitution, and the compensation "
        "fund paid only a few victims because applications were hindered by complex procedures. Asset confiscation "
        "and forfeiture of traffickers' property proved effective where the proceeds went to victims. Recovering back "
        "wages through labour courts was the most successful financial remedy.",
    ),
    "training": (
        "IOM", "training-materials", "",
        "The toolkit for first responders contains a handbook, a training manual and a curriculum of six e-learning "
        "modules, together with checklists, pamphlets and wallet cards. The materials are available in four languages "
        "and can be printed by front-line staff of hospitals, schools and transport companies.",
    ),
    "prosecution": (
        "UNODC", "prosecution", "finding",
        "In 2022 prosecutors initiated 145 prosecutions for trafficking and courts secured 97 convictions, up from 61 "
        "convictions in 2021. Investigations increased by 30 per cent. Judges imposed sentences of 8 years on average, "
        "and 40 per cent of trials relied on evidence from financial investigations rather than on victim witnesses.",
    ),
    "cooperation": (
        "UNICEF", "international-cooperation", "practice",
        "A good practice in international cooperation: the two countries signed a bilateral agreement on mutual legal "
        "assistance and the exchange of information. International organisations provided technical assistance, and "
        "regional cooperation meetings allowed the exchange of good practices and lessons learned between States parties, "
        "which improved cross-border investigations and helped return victims safely.",
    ),
    "definition": (
        "UNODC", "", "definition",
        "Article 3. Definitions. (a) \"Trafficking in persons\" shall mean the recruitment, transportation, transfer, "
        "harbouring or receipt of persons, by means of the threat or use of force or other forms of coercion, for the "
        "purpose of exploitation. (b) \"Child\" shall mean any person under eighteen years of age. For the purposes of this "
        "Protocol, exploitation is defined as including forced labour and sexual exploitation.",
    ),
    "plain": (
        "IOM", "", "",
        "This publication was printed in Geneva on recycled paper. The designations employed and the presentation of "
        "material throughout the report do not imply the expression of any opinion whatsoever on the part of the "
        "publisher concerning the legal status of any country, territory, city or area.",
    ),
    "references": (
        "UNICEF", "", "",
        "12 Smith, J. (2019). Trafficking and the law. Retrieved from https://example.org/a 13 Jones, K. et al. (2020). "
        "Shelters in 2018 and 2019. https://example.org/b 14 Ibid. 15 UNODC (2021). Global report 2020. "
        "https://www.example.org/c Accessed 3 March 2022. 16 ILO (2017). Estimates 2016. https://example.org/d",
    ),
}

ALL_THEMES = [
    "coordination", "immigration-relief", "victim-services", "child-exploitation", "research-data",
    "diplomatic-immunity", "awareness-demand", "labour-migration", "laws-and-training", "restitution",
    "training-materials", "prosecution", "international-cooperation",
]
TYPES = ["lesson", "practice", "recommendation", "finding", "definition"]


def run(capsys, *argv: str):
    capsys.readouterr()
    status = main(list(argv))
    out = capsys.readouterr().out
    return status, json.loads(out) if "--json" in argv else out


def write_passages(folder: Path, names: list[str] | None = None) -> None:
    rows = ["file,title,organisation,year,url,language"]
    for name in names or list(PASSAGES):
        organisation, _, _, text = PASSAGES[name]
        make_pdf(folder / f"{name}.pdf", [text])
        rows.append(f"{name}.pdf,Report {name},{organisation},2023,,en")
    (folder / "catalogue.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def library_env(tmp_path_factory):
    """One small library, ingested once through ``kb ingest``."""
    return ingest_with_cli(tmp_path_factory.mktemp("themes-library"), write_passages, KB_THEMES_FILE="")


@pytest.fixture
def library(library_env, monkeypatch, capsys):
    for key, value in library_env.items():
        monkeypatch.setenv(key, value)
    capsys.readouterr()
    return Path(library_env["KB_DATA_DIR"])


def stored_tags(data_dir: Path) -> dict[str, tuple[list[str], str, str]]:
    """File name (without .pdf) -> (themes, passage type, chunk id) of its one chunk."""
    from kb.ledger import Ledger

    ledger = Ledger(data_dir / "ledger.sqlite")
    try:
        rows = ledger._db.execute(
            "SELECT d.file, c.chunk_id, c.themes, c.passage_type FROM chunks c JOIN documents d USING(doc_id)"
        ).fetchall()
    finally:
        ledger.close()
    found: dict[str, tuple[list[str], str, str]] = {}
    for row in rows:
        name = row["file"].removesuffix(".pdf")
        assert name not in found, f"{name} was split into several chunks; keep test passages short"
        found[name] = (json.loads(row["themes"]), row["passage_type"], row["chunk_id"])
    return found


# ======================================================================================
# The taxonomy file
# ======================================================================================


def test_packaged_taxonomy_has_the_thirteen_themes():
    from kb.themes import DEFAULT_TAXONOMY, load_taxonomy

    taxonomy = load_taxonomy(path=DEFAULT_TAXONOMY)
    assert taxonomy.ids == ALL_THEMES
    for theme in taxonomy.themes:
        assert theme.label and theme.description and theme.terms


def test_invalid_taxonomy_is_refused(tmp_path):
    from kb.themes import TaxonomyError, load_taxonomy

    bad = tmp_path / "themes.json"
    bad.write_text(json.dumps({"themes": [{"id": "Not An Id", "description": "x"}]}), encoding="utf-8")
    with pytest.raises(TaxonomyError, match="id"):
        load_taxonomy(path=bad)
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(TaxonomyError):
        load_taxonomy(path=bad)


def test_terms_match_whole_words_with_optional_endings():
    from kb.themes import TermMatcher

    matcher = TermMatcher([(("task force*", "act"), ("coordinat*",)), (("t-visa*",), ())])
    counts = matcher.counts("Task  Forces and coordination; a T-visa was granted. Transaction acts.")
    assert counts.tolist() == [[1.0, 1.0], [1.0, 0.0]]  # "acts" is not "act"
    assert matcher.counts("the forced task of a forceful taskforce").sum() == 0


# ======================================================================================
# Tagging
# ======================================================================================


@pytest.mark.parametrize("name", [n for n, p in PASSAGES.items() if p[1]])
def test_each_theme_is_detected_on_a_passage_written_for_it(library, name):
    themes, _, _ = stored_tags(library)[name]
    assert PASSAGES[name][1] in themes, f"{name}: tagged {themes}"


@pytest.mark.parametrize("name", list(PASSAGES))
def test_each_passage_type_is_detected(library, name):
    _, passage_type, _ = stored_tags(library)[name]
    assert passage_type == PASSAGES[name][2], f"{name}: tagged {passage_type!r}"


def test_passage_type_rule_without_the_model():
    from kb.settings import get_settings
    from kb.themes import passage_type

    settings = get_settings()
    for name, (_, _, expected, text) in PASSAGES.items():
        assert passage_type(text, "", settings) == expected, name
    assert passage_type("Table of contents ........................ 5", "", settings) == ""


def test_reference_lists_get_no_themes(library):
    assert stored_tags(library)["references"][:2] == ([], "")
    assert stored_tags(library)["plain"][0] == []


def test_tag_chunks_is_pure_and_reuses_the_theme_vectors(library):
    from kb.knowledge_base import KnowledgeBase
    from kb.settings import get_settings
    from kb.themes import load_taxonomy, tag_chunks

    settings = get_settings()
    kb = KnowledgeBase(settings)
    try:
        generation = kb.ledger.generation()
        chunks = [c for d in kb.ledger.ready_documents() for c in kb.chunks_of(d.doc_id)]
        rows = {r["chunk_id"]: r["embedding_key"] for r in kb.ledger.visible_chunk_rows()}
        cached = kb.ledger.cached_vectors(list(rows.values()))
        vectors = np.vstack([cached[rows[c.chunk_id]] for c in chunks])
        calls = []
        tags = tag_chunks(chunks, vectors, load_taxonomy(settings), settings, embed=lambda texts: calls.append(texts))
        assert calls == []  # theme vectors were embedded once, at ingest, and are cached
        assert tags == [(c.themes, c.passage_type) for c in chunks]
        assert kb.ledger.generation() == generation
    finally:
        kb.close()


def test_tags_are_stored_in_chroma_metadata(library):
    from kb.knowledge_base import KnowledgeBase
    from kb.settings import get_settings

    kb = KnowledgeBase(get_settings())
    try:
        themes, passage_type, chunk_id = stored_tags(library)["coordination"]
        meta = kb.store.collection.get(ids=[chunk_id], include=["metadatas"])["metadatas"][0]
        assert meta["passage_type"] == passage_type == "lesson"
        assert all(meta[f"theme_{t}"] is True for t in themes)
        hits = kb.store.collection.get(where={"theme_coordination": True}, include=[])["ids"]
        assert chunk_id in hits
    finally:
        kb.close()


# ======================================================================================
# Filters, map and briefs
# ======================================================================================


def test_theme_and_type_filters_restrict_search(library, capsys):
    tags = {chunk_id: (themes, ptype) for themes, ptype, chunk_id in stored_tags(library).values()}
    status, out = run(capsys, "search", "task force coordination of agencies", "--theme", "coordination", "--k", "10", "--json")
    assert status == 0 and out["passages"]
    assert all("coordination" in tags[p["chunk_id"]][0] for p in out["passages"])
    status, out = run(capsys, "search", "task force coordination", "--theme", "coordination", "--type", "lesson", "--json")
    assert [p["file"] for p in out["passages"]] == ["coordination.pdf"]
    status, out = run(capsys, "search", "what works", "--type", "recommendation", "--k", "10", "--json")
    assert out["passages"] and all(tags[p["chunk_id"]][1] == "recommendation" for p in out["passages"])


def test_theme_and_type_filters_restrict_ask(library, capsys):
    tags = {chunk_id: (themes, ptype) for themes, ptype, chunk_id in stored_tags(library).values()}
    status, out = run(capsys, "ask", "What was learned about task forces and referral?", "--theme", "coordination",
                      "--type", "lesson", "--json")
    assert status == 0
    cited = out["citations"] + out["related"]
    assert cited and {c["file"] for c in cited} == {"coordination.pdf"}
    assert all(tags[c["chunk_id"]][1] == "lesson" for c in cited)


def test_map_json_counts_lessons_recommendations_and_practices(library, capsys):
    status, table = run(capsys, "map", "--json")
    assert status == 0
    assert set(table) >= {"themes", "organisations"}
    assert table["organisations"] == ["IOM", "UNICEF", "UNODC"]
    assert list(table["themes"])[: len(ALL_THEMES)] == ALL_THEMES
    expected = {t: {o: 0 for o in table["organisations"]} for t in ALL_THEMES}
    organisation = {name: p[0] for name, p in PASSAGES.items()}
    for name, (themes, ptype, _) in stored_tags(library).items():
        if ptype in {"lesson", "recommendation", "practice"}:
            for theme in themes:
                expected[theme][organisation[name]] += 1
    for theme in ALL_THEMES:
        assert table["themes"][theme]["organisations"] == expected[theme]
        assert table["themes"][theme]["label"]
    assert table["themes"]["coordination"]["organisations"]["IOM"] >= 1  # the lesson
    assert table["themes"]["coordination"]["organisations"]["UNODC"] >= 1  # the recommendation
    status, text = run(capsys, "map")
    assert "Coordinated task forces" in text and "[1] IOM" in text


def test_theme_brief_has_a_heading_per_organisation_and_exports(library):
    from kb.brief import to_docx, to_markdown, to_pdf
    from kb.exchange_map import build_theme_brief, map_cell_passages
    from kb.service import Service
    from kb.settings import get_settings

    service = Service(get_settings())
    brief = build_theme_brief(service, "coordination")
    headings = [item.text for item in brief.items if item.kind == "heading"]
    assert headings == ["IOM", "UNODC"]
    passages = [item for item in brief.items if item.kind == "passage"]
    assert [p.note for p in passages] == ["Lesson learned", "Recommendation"]
    first = passages[0].citation
    assert first.file == "coordination.pdf" and first.organisation == "IOM" and first.page == 1
    assert first.quote and first.quote in first.text and first.chunk_id
    markdown = to_markdown(brief)
    assert "## IOM" in markdown and "## UNODC" in markdown and "Report coordination" in markdown
    assert to_docx(brief)[:2] == b"PK" and to_pdf(brief)[:5] == b"%PDF-"
    saved = service.briefs().save(brief)
    assert service.briefs().get(saved.id).title == "Theme brief: Coordinated task forces"

    cell = map_cell_passages(service, "coordination", "UNODC")
    assert [c.file for c in cell] == ["coordination-rec.pdf"] and cell[0].n == 1
    with pytest.raises(KeyError):
        build_theme_brief(service, "no-such-theme")


# ======================================================================================
# Re-tagging after the taxonomy changes
# ======================================================================================


def test_retag_after_editing_the_taxonomy(settings, tmp_path, monkeypatch, capsys):
    from kb.knowledge_base import KnowledgeBase
    from kb.settings import get_settings
    from kb.snapshot import Filters
    from kb.service import Service
    from kb.themes import DEFAULT_TAXONOMY

    taxonomy_file = tmp_path / "themes.json"
    shutil.copy(DEFAULT_TAXONOMY, taxonomy_file)
    monkeypatch.setenv("KB_THEMES_FILE", str(taxonomy_file))
    write_passages(settings.documents_dir, ["coordination", "prosecution"])
    fishing = (
        "Fishers on distant-water fishing vessels were kept at sea for two years. Crew members said the captain "
        "confiscated their passports, and fishing companies withheld the crew's pay until the vessel returned to port."
    )
    make_pdf(settings.documents_dir / "fishing.pdf", [fishing])
    assert main(["ingest", "--json"]) == 0
    before = stored_tags(settings.data_dir)
    assert "coordination" in before["coordination"][0]

    data = json.loads(taxonomy_file.read_text(encoding="utf-8"))
    data["themes"] = [t for t in data["themes"] if t["id"] != "coordination"]
    data["themes"].append({
        "id": "fisheries", "label": "Forced labour at sea",
        "description": "Forced labour of fishers and crew on fishing vessels at sea.",
        "terms": ["fishing vessel*", "fishers", "crew*", "distant-water"], "related": ["captain", "port"],
    })
    taxonomy_file.write_text(json.dumps(data), encoding="utf-8")

    status, report = run(capsys, "retag", "--json")
    assert status == 0 and report["changed"] >= 2 and report["themes"]["fisheries"] == 1
    after = stored_tags(settings.data_dir)
    assert "fisheries" in after["fishing"][0]
    assert "coordination" not in after["coordination"][0]

    kb = KnowledgeBase(get_settings())
    try:
        metas = kb.store.collection.get(ids=[after["fishing"][2], after["coordination"][2]], include=["metadatas"])
        by_id = dict(zip(metas["ids"], metas["metadatas"]))
        assert by_id[after["fishing"][2]].get("theme_fisheries") is True
        assert "theme_coordination" not in by_id[after["coordination"][2]]
    finally:
        kb.close()
    passages = Service(get_settings()).search("forced labour", k=5, filters=Filters(themes=["fisheries"]))
    assert [p.document.file for p in passages] == ["fishing.pdf"]
    status, table = run(capsys, "map", "--json")
    assert "fisheries" in table["themes"] and "coordination" not in table["themes"]

    status, again = run(capsys, "retag", "--json")
    assert again["changed"] == 0


def test_a_broken_taxonomy_file_does_not_stop_an_ingest(settings, tmp_path, monkeypatch, capsys):
    broken = tmp_path / "themes.json"
    broken.write_text("{", encoding="utf-8")
    monkeypatch.setenv("KB_THEMES_FILE", str(broken))
    write_passages(settings.documents_dir, ["laws"])
    assert main(["ingest", "--json"]) == 0
    themes, passage_type, _ = stored_tags(settings.data_dir)["laws"]
    assert themes == [] and passage_type == "recommendation"
    capsys.readouterr()
    assert main(["retag"]) == 2
    assert "taxonomy" in capsys.readouterr().err


def test_the_map_counts_an_organisation_once_whatever_the_office():
    from kb.exchange_map import UNKNOWN_ORGANISATION, organisation_of
    from kb.records import DocumentMeta

    def named(organisation: str) -> str:
        return organisation_of(DocumentMeta(doc_id="x", file="x.pdf", title="x", organisation=organisation))

    assert named("IOM (Central Evaluation Division)") == named("IOM (evaluation by PPMI Group)") == named("IOM") == "IOM"
    assert named("US DOL (ILAB)") == "US DOL"
    assert named("UN Office (Geneva) Human Rights") == "UN Office (Geneva) Human Rights"  # only a trailing detail goes
    assert named("(CTDC)") == "(CTDC)" and named("  ") == UNKNOWN_ORGANISATION


def test_the_text_half_of_tagging_worked_out_beforehand_gives_the_same_tags(library):
    """Ingestion computes ``text_tags`` while the model embeds; the result must not differ."""
    from kb.knowledge_base import KnowledgeBase
    from kb.settings import get_settings
    from kb.themes import load_taxonomy, tag_chunks, text_tags

    settings = get_settings()
    kb = KnowledgeBase(settings)
    try:
        chunks = [c for d in kb.ledger.ready_documents() for c in kb.chunks_of(d.doc_id)]
        rows = {r["chunk_id"]: r["embedding_key"] for r in kb.ledger.visible_chunk_rows()}
        cached = kb.ledger.cached_vectors(list(rows.values()))
        vectors = np.vstack([cached[rows[c.chunk_id]] for c in chunks])
        taxonomy = load_taxonomy(settings)
        beforehand = text_tags(chunks, taxonomy, settings)
        assert any(part.term_counts.sum() > 0 for part in beforehand)
        assert any(part.passage_type for part in beforehand)
        tags = tag_chunks(chunks, vectors, taxonomy, settings, text_part=beforehand)
        assert tags == tag_chunks(chunks, vectors, taxonomy, settings)
        assert tags == [(c.themes, c.passage_type) for c in chunks]
    finally:
        kb.close()


def test_cue_patterns_run_on_lower_cased_text_find_the_same_matches():
    """Passage-type cues that ignore case run as case-sensitive twins on the lower-cased
    text (faster); every twin must count what its original counts, whatever the case."""
    from kb.themes import _FAST_TYPE_CUES, _TYPE_CUES

    texts = [
        "LESSONS LEARNED: It Is Essential that Labour Inspectors SHOULD be trained. We Recommend that States act.",
        "Good Practice: the programme Worked Well and Proved Effective; Key Factors Contributed To its success.",
        "• Ensure victims receive legal aid.\n• ESTABLISH shelters.\n1. Strengthen Cooperation\n(a) To Provide care",
        "The survey FOUND that 45 Per Cent rose; it Increased from 2019; US$ 3 Million; In 2021 NGOs Reported 1,234 cases.",
        "Definition: “Trafficking in Persons” SHALL MEAN the recruitment; For The Purposes Of this Protocol ...",
        "İstanbul, Straße, ÆØÅ — Résumé; ÇA VA? The Committee URGES and Calls Upon the State party.",
    ]
    twins = 0
    for kind, cues in _TYPE_CUES.items():
        for (original, _, _), (fast, on_lower, _, _) in zip(cues, _FAST_TYPE_CUES[kind]):
            twins += on_lower
            for text in texts:
                found = fast.findall(text.lower() if on_lower else text)
                assert len(found) == len(original.findall(text)), (kind, original.pattern[:60], text[:40])
    assert twins >= 20  # most cues are case-insensitive and do run on the lower-cased text
