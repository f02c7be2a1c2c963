"""The default answerer: grounded, extractive, cited; no LLM.

1. Retrieve passages for the question (follow-ups first borrow the previous subject).
2. Split the passages into sentences and score each against the question: embedding
   similarity plus keyword overlap (weighted by how rare each question term is), with a
   bonus for lesson / good-practice / recommendation sentences when the question asks
   what works or what to do.
3. Abstain when the best evidence is weak (a relevance threshold calibrated on the
   development set), offering the closest passages as related reading.
4. Otherwise quote the best sentences as they stand: a lead sentence, then bullets
   grouped by organisation, each ending with ``[n]``.  Every quote is checked against
   the stored text of the page it cites; a sentence that cannot be located on one page is
   not used, so an answer never carries an unverifiable citation.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

import numpy as np

from kb.conversation import Turn, resolve_follow_up
from kb.keyword import tokenize
from kb.places import mentions, places_named
from kb.records import Answer, Citation, Passage, cite
from kb.search import Searcher
from kb.snapshot import Filters
from kb.text import normalise_for_matching, page_sentences
from kb.verify import QUOTE_JOINER, verify_against_ledger

ABSTAIN_TEXT = (
    "The library does not answer this question: none of its passages is close enough to "
    "quote as an answer. The closest passages are listed below as related reading."
)
ABSTAIN_PLACE_TEXT = (
    "The library does not answer this question: its closest passages do not mention {places}. "
    "They are listed below as related reading."
)
EMPTY_LIBRARY_TEXT = "The library is empty: add documents and ingest them first."
_ASKS_WHAT_WORKS = re.compile(
    r"\b(should|how (can|do|to|should|could)|what (works|to do|can|could|would)|recommend\w*|"
    r"lessons?|good practices?|best|advice|avoid|improve|need to|worth|suggest\w*|fix|help)\b",
    re.IGNORECASE,
)
_LESSON_CUE = re.compile(
    r"^(call|contact|report|ensure|avoid|do not|never|always|engage|conduct|provide|use|consider|refer|"
    r"document|establish|strengthen|promote|develop|train|include|involve|make sure)\b|"
    r"\b(lessons? learn\w*|good practice|promising practice|best practice|should|recommend\w*|"
    r"it is (essential|important|crucial|necessary)|must|need(s|ed)? to|key to|effective|"
    r"ensure|encourag\w*|avoid|do not)\b",
    re.IGNORECASE,
)
_ASKS_HOW_MUCH = re.compile(
    r"\b(how (many|much|big|large|long|old|recent|often)|what (proportion|share|percentage|number|age|amount)|"
    r"minimum|maximum|most|least|total)\b",
    re.IGNORECASE,
)
_NUMBER = re.compile(r"\d")
_NUMBERED_LIST_START = re.compile(r"^\(?\d{1,2}[.)]\s")


@dataclass
class _Candidate:
    passage_rank: int
    passage: Passage
    sentence: str
    overlap: float = 0.0
    similarity: float = 0.0
    score: float = 0.0
    is_lesson: bool = False
    has_number: bool = False
    page: int = 0
    items: list[str] = field(default_factory=list)  # list items the sentence introduces
    before: str = ""  # the sentence before it in the passage, on the same page
    context: list[str] = field(default_factory=list)  # what of ``before`` is quoted with it


class ExtractiveAnswerer:
    """Answers from the library's own sentences, with verified citations."""

    backend = "extractive"

    def __init__(self, searcher: Searcher):
        self.searcher = searcher
        self.kb = searcher.kb
        self.settings = searcher.settings

    # --- public -----------------------------------------------------------------------
    def answer(
        self,
        question: str,
        history: list[Turn] | None = None,
        filters: Filters | None = None,
        passages: list[Passage] | None = None,
    ) -> Answer:
        question = " ".join(question.split())
        resolved = resolve_follow_up(question, history)
        if not question:
            return Answer(question=question, answer="Please type a question.", abstained=True, backend=self.backend)
        snapshot = self.searcher.snapshot()
        if not len(snapshot):
            return Answer(question=question, answer=EMPTY_LIBRARY_TEXT, abstained=True, resolved_question=resolved, backend=self.backend)
        query_vector, part_vectors = self.searcher.embed_question(resolved)
        if passages is None:
            passages = self.searcher.search(
                resolved, k=self.settings.answer_candidate_passages, filters=filters,
                query_vector=query_vector, part_vectors=part_vectors,
            )
        if not passages:
            return Answer(
                question=question, answer="No passage matches this question with the filters chosen.",
                abstained=True, resolved_question=resolved, backend=self.backend,
            )
        candidates = self._score(resolved, query_vector, passages)
        relevance = self.relevance(resolved, passages)
        unmentioned = self.unmentioned_places(resolved, passages)
        if not candidates or relevance < self.settings.abstain_threshold or unmentioned:
            return self._abstain(question, resolved, passages, relevance, unmentioned)
        chosen = self._choose(candidates)
        self._add_context(chosen)
        answer = self._compose(question, resolved, chosen)
        if not answer.citations:  # nothing could be located on a single page
            return self._abstain(question, resolved, passages, relevance)
        answer.notes.append(f"relevance {relevance:.2f}")
        return answer

    # --- does the library answer at all? -----------------------------------------------
    def relevance(self, question: str, passages: list[Passage]) -> float:
        """How well the best passages answer the question, for the abstention decision.

        The sum of two signals, each between 0 and 1:
          * coverage – the share of the question's terms, weighted by rarity, that occur in
            one of the top passages (with its document title and heading), the best one.
            A question about a law, a country or a programme the library never mentions
            leaves its rarest terms uncovered.  Judged per passage, not over the top
            passages together: in a large library some passage mentions every country
            and some other passage every law, which says nothing about an answer;
          * closeness – the best cosine similarity between the question and a passage.
        """
        top = passages[: self.settings.abstain_passages]
        keyword = self.searcher.snapshot().keyword
        max_idf = float(keyword.idf.max()) + 1.0 if keyword.idf.size else 1.0
        terms = set(tokenize(question))
        if not terms:
            return 0.0
        weights = {t: float(keyword.idf[keyword.vocabulary[t]]) if t in keyword.vocabulary else max_idf for t in terms}
        total = sum(weights.values())
        coverage = max(
            sum(weights[t] for t in terms & set(tokenize(f"{p.document.title} {p.chunk.heading} {p.chunk.text}"))) / total
            for p in top
        ) if top else 0.0
        closeness = max((p.dense_score or 0.0) for p in passages) if passages else 0.0
        return coverage + closeness

    def unmentioned_places(self, question: str, passages: list[Passage]) -> list[str]:
        """Places (countries, states, provinces) the question names that none of the best
        passages mentions (with its document's title): passages about the same subject in
        another place do not answer a question about this one."""
        top = passages[: self.settings.abstain_passages]
        texts = [f"{p.document.title} {p.chunk.heading} {p.chunk.text}" for p in top]
        return [place for place in places_named(question) if not any(mentions(t, place) for t in texts)]

    # --- scoring ------------------------------------------------------------------------
    def _score(self, question: str, query_vector: np.ndarray, passages: list[Passage]) -> list[_Candidate]:
        snapshot = self.searcher.snapshot()
        keyword = snapshot.keyword
        max_idf = float(keyword.idf.max()) if keyword.idf.size else 1.0
        question_terms = set(tokenize(question))
        weights = {
            t: float(keyword.idf[keyword.vocabulary[t]]) if t in keyword.vocabulary else max_idf
            for t in question_terms
        }
        total = sum(weights.values()) or 1.0
        wants_lessons = bool(_ASKS_WHAT_WORKS.search(question))
        wants_number = bool(_ASKS_HOW_MUCH.search(question))

        candidates: list[_Candidate] = []
        seen: set[str] = set()
        for rank, passage in enumerate(passages):
            previous = (None, "")  # ((page, block), sentence) before this one in the passage
            for sentence, page, items, block in self._passage_sentences(passage):
                before = previous[1] if previous[0] == (page, block) else ""  # same paragraph only
                previous = ((page, block), sentence)
                if sentence in seen or not (_usable(sentence) or _opens_list(sentence, items)):
                    continue
                seen.add(sentence)
                # A sentence that introduces a list ("...establish trust by:") is judged
                # with its items, which carry what it says.
                terms = set(tokenize(" ".join([sentence, *items])))
                overlap = sum(weights[t] for t in question_terms & terms) / total
                candidates.append(
                    _Candidate(
                        rank, passage, sentence, page=page, overlap=overlap, items=items, before=before,
                        is_lesson=any(_LESSON_CUE.search(text) for text in [sentence, *items]),
                        has_number=bool(_NUMBER.search(sentence)),
                    )
                )
        if not candidates:
            return []
        candidates = self._most_promising(candidates, len(passages), wants_lessons)
        vectors = self._embed_sentences([" ".join([c.sentence, *c.items]) for c in candidates])
        similarities = vectors @ np.asarray(query_vector, dtype=np.float32)
        s = self.settings
        for candidate, vector, similarity in zip(candidates, vectors, similarities):
            candidate.similarity = float(similarity)
            candidate.score = (
                s.sentence_similarity_weight * candidate.similarity
                + s.sentence_overlap_weight * candidate.overlap
                + s.passage_score_weight * float(candidate.passage.score)
                + (s.lesson_bonus if wants_lessons and candidate.is_lesson else 0.0)
                + (s.number_bonus if wants_number and candidate.has_number else 0.0)
            )
            candidate.vector = vector  # type: ignore[attr-defined]
        candidates.sort(key=lambda c: -c.score)
        return candidates

    def _most_promising(self, candidates: list[_Candidate], passages: int, wants_lessons: bool) -> list[_Candidate]:
        """The sentences worth embedding (the model is the cost of an answer): the best few
        of every passage by term overlap, so each retrieved passage is heard, then the best
        of the rest.  Lesson-like sentences go first when the question asks what to do."""
        limit = self.settings.answer_sentences_embedded

        def promise(c: _Candidate) -> tuple[float, int]:
            bonus = self.settings.answer_lesson_promise if wants_lessons and c.is_lesson else 0.0
            return (-(c.overlap + bonus + 0.5 / (c.passage_rank + 2)), c.passage_rank)

        ordered = sorted(candidates, key=promise)
        per_passage = max(1, limit // max(1, passages) // 2)
        taken: dict[int, int] = {}
        first: list[_Candidate] = []
        for candidate in ordered:
            if taken.get(candidate.passage_rank, 0) < per_passage:
                taken[candidate.passage_rank] = taken.get(candidate.passage_rank, 0) + 1
                first.append(candidate)
        chosen = {id(c) for c in first}
        rest = [c for c in ordered if id(c) not in chosen]
        return (first + rest)[:limit]

    def _embed_sentences(self, sentences: list[str]) -> np.ndarray:
        """Sentence vectors for scoring, fast: each sentence is cut to its first
        ``answer_sentence_chars`` characters (a quote is still shown whole), and sentences
        of similar length are embedded together in small batches, so a few long ones do
        not make every short one pay for their padding."""
        limit = self.settings.answer_sentence_chars
        texts = [sentence[:limit] for sentence in sentences]
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        vectors = np.zeros((len(texts), self.kb.query_embedder.dim), dtype=np.float32)
        step = max(1, self.settings.answer_sentence_batch)
        for start in range(0, len(order), step):
            rows = order[start : start + step]
            vectors[rows] = self.kb.query_embedder.embed([texts[i] for i in rows])
        return vectors

    def _passage_sentences(self, passage: Passage) -> list[tuple[str, int, list[str], int]]:
        """Whole sentences of the passage's pages that lie (at least partly) inside the
        passage, each with its page and the list items that follow it on the page.

        Taken from the page text rather than the chunk so that a sentence cut by a chunk
        boundary is quoted whole, and a sentence that introduces a list brings its items.
        """
        chunk = passage.chunk
        body = normalise_for_matching(chunk.text)
        found: list[tuple[str, int, list[str], int]] = []
        for page in range(chunk.page_start, chunk.page_end + 1):
            sentences = _sentences_with_keys(self.kb.ledger.page_text(chunk.doc_id, page) or "")
            for position, (sentence, sentence_is_item, key, block) in enumerate(sentences):
                if key in body or key[:60] in body or key[-60:] in body:
                    items = []
                    # A list item is followed by its siblings, which it does not introduce,
                    # unless it ends with a colon (it opens a sub-list).
                    introduces = not sentence_is_item or sentence.rstrip().endswith(":")
                    for following, is_item, _, _ in sentences[position + 1 :] if introduces else []:
                        if not is_item or len(items) == self.settings.answer_list_items:
                            break
                        items.append(following)
                    found.append((sentence, page, items, block))
        return found

    def _choose(self, candidates: list[_Candidate]) -> list[_Candidate]:
        """Best sentences first, dropping near-duplicates and weak tails."""
        best = candidates[0].score
        chosen: list[_Candidate] = []
        for candidate in candidates:
            if len(chosen) == self.settings.answer_max_sentences:
                break
            if candidate.score < best * self.settings.answer_min_relative_score:
                break
            if any(float(candidate.vector @ c.vector) >= self.settings.near_duplicate_similarity for c in chosen):  # type: ignore[attr-defined]
                continue
            quoted = {text for c in chosen for text in (c.sentence, *c.items)}
            if candidate.sentence in quoted or quoted.intersection(candidate.items):
                continue  # already quoted, as a sentence or as a list item
            chosen.append(candidate)
        return chosen

    def _add_context(self, chosen: list[_Candidate]) -> None:
        """Each supporting sentence (not the lead, which answers on its own, and not one
        that opens a list) brings the sentence before it in its passage: a finding often
        leans on the sentence that sets it up ("It was not meant to pay off debts." before
        "While the funding might have been sufficient ..."), and a reader needs both.  On
        the development set this lifted lesson answers from 0.63 to 0.74, where quoting
        more sentences instead, at the same length, did not (0.63)."""
        if not self.settings.answer_context:
            return
        quoted = {text for c in chosen for text in (c.sentence, *c.items)}
        for candidate in chosen[1:]:
            before = candidate.before
            if candidate.items or not before or before in quoted or not _usable(before):
                continue
            candidate.context = [before]
            quoted.add(before)

    # --- composing ------------------------------------------------------------------------
    def _compose(self, question: str, resolved: str, chosen: list[_Candidate]) -> Answer:
        ledger = self.kb.ledger
        citations: dict[tuple[str, int], Citation] = {}
        located: list[tuple[_Candidate, Citation]] = []
        for candidate in chosen:
            chunk = candidate.passage.chunk
            page = candidate.page
            if not verify_against_ledger(ledger, chunk.doc_id, page, candidate.sentence):
                continue  # never cite what cannot be found on the page
            key = (chunk.chunk_id, page)
            quoted = [candidate.sentence] + [i for i in candidate.items if _usable_item(i)]
            candidate.items = [i for i in quoted[1:] if verify_against_ledger(ledger, chunk.doc_id, page, i)]
            if not all(verify_against_ledger(ledger, chunk.doc_id, page, s) for s in candidate.context):
                candidate.context = []
            parts = [*candidate.context, candidate.sentence, *candidate.items]
            if key not in citations:
                citations[key] = _citation(len(citations) + 1, candidate.passage, page)
                citations[key].page_label = ledger.page_label(chunk.doc_id, page)
                citations[key].quote = QUOTE_JOINER.join(parts)
            else:
                citations[key].quote += QUOTE_JOINER + QUOTE_JOINER.join(parts)
            located.append((candidate, citations[key]))
        if not located:
            return Answer(question=question, answer="", resolved_question=resolved, backend=self.backend)

        lead, lead_citation = located[0]
        lines = [f"{lead.sentence} [{lead_citation.n}]"]
        lines.extend(f"- {item} [{lead_citation.n}]" for item in lead.items)
        rest = located[1:]
        organisations = list(dict.fromkeys(c.passage.document.organisation or "Other sources" for c, _ in rest))
        grouped = len(organisations) > 1
        for organisation in organisations:
            if grouped:
                lines.append("")
                lines.append(f"**{organisation}**")
            elif rest:
                lines.append("")
            for candidate, citation in rest:
                if (candidate.passage.document.organisation or "Other sources") == organisation:
                    lines.append(f"- {' '.join([*candidate.context, candidate.sentence])} [{citation.n}]")
                    lines.extend(f"    - {item} [{citation.n}]" for item in candidate.items)
        return Answer(
            question=question,
            answer="\n".join(lines),
            citations=list(citations.values()),
            resolved_question=resolved,
            backend=self.backend,
        )

    def _abstain(
        self, question: str, resolved: str, passages: list[Passage], relevance: float, unmentioned: list[str] | None = None
    ) -> Answer:
        related = [
            _citation(n, passage, passage.chunk.page_start)
            for n, passage in enumerate(passages[: self.settings.related_reading], start=1)
        ]
        return Answer(
            question=question,
            answer=ABSTAIN_PLACE_TEXT.format(places=" or ".join(unmentioned)) if unmentioned else ABSTAIN_TEXT,
            abstained=True,
            related=related,
            resolved_question=resolved,
            notes=(
                [f"the closest passages do not mention {' or '.join(unmentioned)}"]
                if unmentioned
                else [f"relevance {relevance:.2f} below the threshold {self.settings.abstain_threshold:.2f}"]
            ),
            backend=self.backend,
        )


@functools.lru_cache(maxsize=256)
def _sentences_with_keys(page_text: str) -> tuple[tuple[str, bool, str, int], ...]:
    """A page's sentences (with whether each is a list item), their matching forms and
    their block numbers, remembered: neighbouring passages share pages, and answers on one
    subject too."""
    return tuple(
        (sentence, is_item, normalise_for_matching(sentence), block)
        for sentence, is_item, block in page_sentences(page_text)
    )


def _usable(sentence: str) -> bool:
    """A sentence worth quoting: a real sentence, not a fragment, table row or reference."""
    words = sentence.split()
    if not 5 <= len(words) <= 90:
        return False
    if sentence.rstrip(" \"'”’)").endswith("?"):
        return False  # a question (a heading, a survey item) does not answer one
    letters = sum(ch.isalpha() for ch in sentence)
    if letters < 0.6 * len(sentence):
        return False
    if not (sentence[0].isupper() or sentence[0].isdigit() or sentence[0] in "“\"'(‘"):
        return False  # starts mid-sentence: the rest is on the previous page
    if "http" in sentence or sentence.lower().startswith(("retrieved", "available at")):
        return False
    if _FOOTNOTE.match(sentence):
        return False  # a footnote citing a source: "41 IOM, ILO and Walk Free, “No Escape ...”"
    if _CONTENTS_LINE.search(sentence):
        return False  # a table of contents: "Further support and links 30 Annex A: ... 32"
    if _in_capitals(sentence):
        return False  # a heading in capitals
    if _looks_like_title(sentence):
        return False  # a title or heading in title case ("A Guide for Youth Caretakers")
    return not _NUMBERED_LIST_START.match(sentence) or len(words) > 8


# Lines of a table of contents: titles each followed by a page number, the last at the end.
_CONTENTS_LINE = re.compile(r"[A-Za-z]\s+\d{1,3}\s+[A-Z].*[A-Za-z:)]\s+\d{1,3}$")
# A footnote: its number, then a source with a quoted title.
_FOOTNOTE = re.compile(r"^\d{1,3}\s+[A-Z][^“\"]{0,120}[“\"]")
_SMALL_WORDS = frozenset("a an and as at by for from in into of on or the to with".split())
_FINISHED = re.compile(r"[.!?:;…\"”’')\]]$")


def _looks_like_title(sentence: str) -> bool:
    """No closing punctuation and every word that is not a small word capitalised."""
    words = [w for w in re.findall(r"[A-Za-z][\w’'-]*", sentence) if w.lower() not in _SMALL_WORDS]
    return (
        not _FINISHED.search(sentence.rstrip())
        and len(words) >= 2
        and all(w[0].isupper() for w in words)
    )


_LIST_OPENING_END = re.compile(r"(:|\.\.\.|…)$")


def _opens_list(sentence: str, items: list[str]) -> bool:
    """A short lead-in that opens a list ("Does the student...", "Victims may:"): too short
    to quote alone, but quoted with its items it says what the list says."""
    words = sentence.split()
    return (
        len([i for i in items if _usable_item(i)]) >= 2
        and 2 <= len(words) <= 12
        and bool(_LIST_OPENING_END.search(sentence.rstrip()))
        and sentence[0].isupper()
        and not _in_capitals(sentence)
    )


def _in_capitals(text: str) -> bool:
    """More than half the letters are capitals: a heading, not a sentence."""
    return sum(ch.isupper() for ch in text) > 0.5 * sum(ch.isalpha() for ch in text)


def _usable_item(item: str) -> bool:
    """A list item worth quoting under the sentence that introduces it."""
    return 2 <= len(item.split()) <= 90 and sum(ch.isalpha() for ch in item) >= 0.5 * len(item)


def _citation(n: int, passage: Passage, page: int) -> Citation:
    return cite(n, passage.chunk, passage.document, page=page, score=round(float(passage.score), 6))
