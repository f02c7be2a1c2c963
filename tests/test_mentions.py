"""Questions that name an organisation prefer its documents (kb/mentions.py)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from conftest import make_pdf
from kb.mentions import OrganisationNames

LABELS = [
    "UNODC",
    "US DOL (ILAB)",
    "US DHS (Blue Campaign)",
    "UN (Committee on Migrant Workers / OHCHR)",
    "UK Home Office",
    "United Nations (UN Treaty Series text)",
    "IOM (evaluation by PPMI Group)",
]


@pytest.mark.parametrize(
    "question, named",
    [
        ("What did UNODC's 2024 survey of NGOs find?", {"UNODC"}),
        ("What does the US Labor Department suggest Ghana do?", {"US DOL (ILAB)"}),
        ("How recent must information be for ILAB to use it?", {"US DOL (ILAB)"}),
        ("Which number reaches Homeland Security Investigations?", {"US DHS (Blue Campaign)"}),
        ("What do the Blue Campaign guides say?", {"US DHS (Blue Campaign)"}),
        ("What did the chair of the UN migrant workers committee say?", {"UN (Committee on Migrant Workers / OHCHR)"}),
        ("What makes a good referral to the Home Office?", {"UK Home Office"}),
        ("What did IOM's evaluators find?", {"IOM (evaluation by PPMI Group)"}),
        ("What did DOL and UNODC say about head porters?", {"US DOL (ILAB)", "UNODC"}),
    ],
)
def test_organisations_are_recognised_by_acronym_name_or_long_form(question, named):
    assert OrganisationNames(LABELS).mentioned(question) == named


@pytest.mark.parametrize(
    "question",
    [
        "What do UN agencies recommend for shelters in the US and the UK?",  # two-letter acronyms name too much
        "What does the United Nations say about forced labour?",  # a generic name
        "What should an office worker do at home?",  # a name's words must all be there ...
        "Which campaign used the colour blue?",  # ... as words, not as an acronym in lower case
        "what did unodc find?",
    ],
)
def test_general_words_name_no_organisation(question):
    assert OrganisationNames(LABELS).mentioned(question) == set()


CATALOGUE = (
    "file,title,organisation,year\n"
    "alpha.pdf,Shelter Standards,UNODC,2021\n"
    "beta.pdf,Shelter Standards Reviewed,UNICEF,2021\n"
    "gamma.pdf,Fisheries,ILO,2019\n"
)
OTHER_PAGES = [
    "Captains of distant-water fishing vessels withheld the wages of fishers for months at sea.",
    "Children carried heavy loads and used machetes on cocoa farms during the harvest.",
    "Fake job offers on social media lured workers into scam centres paid in cryptocurrency.",
]
SHELTERS = (
    "Shelters for victims of trafficking should offer safe accommodation, medical care and legal aid. "
    "Each survivor should agree an individual support plan with a case worker."
)


@pytest.fixture(scope="module")
def twin_library(tmp_path_factory):
    """Two organisations' documents saying nearly the same thing, and a third on other things."""
    from kb.service import Service
    from kb.settings import get_settings

    root = tmp_path_factory.mktemp("twins")
    documents = root / "documents"
    make_pdf(documents / "alpha.pdf", [SHELTERS])
    make_pdf(documents / "beta.pdf", [SHELTERS.replace("a case worker", "their case worker")])
    make_pdf(documents / "gamma.pdf", OTHER_PAGES)
    (documents / "catalogue.csv").write_text(CATALOGUE, encoding="utf-8")
    service = Service(get_settings(data_dir=root / "data", documents_dir=documents, chroma_url="", llm=""))
    service.ingest([documents])
    return service


def _search(service, question: str, boost: float | None = None):
    """All three passages, with the default preference or with ``boost``."""
    from kb.service import Service

    if boost is not None:
        service = Service(replace(service.settings, organisation_boost=boost))
    return service.search(question, k=3)


def _first_organisation(service, question: str, boost: float | None = None) -> str:
    return _search(service, question, boost)[0].document.organisation


def test_a_question_naming_an_organisation_gets_its_document_first(twin_library):
    for organisation in ("UNODC", "UNICEF"):
        question = f"What should shelters for trafficking victims offer, according to {organisation}?"
        assert _first_organisation(twin_library, question) == organisation
    # without the preference, both questions get the same document first
    firsts = {
        _first_organisation(twin_library, f"What should shelters for trafficking victims offer, according to {o}?", 0.0)
        for o in ("UNODC", "UNICEF")
    }
    assert len(firsts) == 1


def test_the_preference_leaves_the_scores_that_abstention_reads(twin_library):
    question = "What should shelters for trafficking victims offer, according to UNICEF?"
    with_preference = {p.chunk.chunk_id: p for p in _search(twin_library, question)}
    without = {p.chunk.chunk_id: p for p in _search(twin_library, question, 0.0)}
    assert with_preference.keys() == without.keys()
    for chunk_id, passage in with_preference.items():
        assert passage.dense_score == pytest.approx(without[chunk_id].dense_score)
        assert passage.keyword_score == pytest.approx(without[chunk_id].keyword_score)


def test_a_named_organisation_with_nothing_left_by_the_filters_finds_nothing(twin_library):
    from kb.snapshot import Filters

    question = "What should shelters for trafficking victims offer, according to UNODC?"
    assert twin_library.search(question, filters=Filters(year_from=2030)) == []
    assert {p.document.organisation for p in twin_library.search(question, filters=Filters(organisations=["ILO"]))} == {"ILO"}
