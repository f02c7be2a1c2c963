"""One object for everything the command line and the app do: ingest, search, ask, stats,
library administration and briefs.  The UI and the CLI hold no logic of their own; they
call this.  It is cheap to create; the model and the store load on first use.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

from kb.answer import ExtractiveAnswerer
from kb.conversation import Turn
from kb.knowledge_base import KnowledgeBase
from kb.records import Answer, Passage
from kb.search import Searcher
from kb.settings import Settings, get_settings
from kb.snapshot import Filters

log = logging.getLogger(__name__)


class Service:
    """The knowledge exchange behind the CLI and the app."""

    def __init__(self, settings: Settings | None = None):
        self.settings = settings or get_settings()
        self.kb = KnowledgeBase(self.settings)
        self.searcher = Searcher(self.kb)
        self.extractive = ExtractiveAnswerer(self.searcher)
        self._llm = None
        self._llm_failed = ""

    # --- ingestion ----------------------------------------------------------------------
    def ingest(self, paths: list[Path] | None = None, progress: Callable | None = None):
        from ingest.pipeline import ingest

        return ingest(paths, self.settings, progress=progress, knowledge_base=self.kb)

    def remove(self, target: str) -> list[str]:
        from ingest.pipeline import remove

        return remove(self.kb, target)

    # --- reading ----------------------------------------------------------------------------
    def search(self, query: str, k: int | None = None, filters: Filters | None = None) -> list[Passage]:
        return self.searcher.search(query, k=k, filters=filters)

    def ask(
        self,
        question: str,
        history: list[Turn] | None = None,
        filters: Filters | None = None,
    ) -> Answer:
        """An answer with verified citations: from the LLM when one is configured and
        reachable, otherwise (and as the fallback) from the extractive answerer."""
        llm = self.llm_answerer()
        if llm is not None:
            try:
                return self._ask_llm(llm, question, history, filters)
            except Exception as error:  # server down, model missing: fall back, say so
                log.warning("LLM backend failed (%s); using the extractive answerer", error)
                answer = self.extractive.answer(question, history, filters)
                answer.notes.append(f"The language model was unavailable ({type(error).__name__}); extractive answer shown.")
                return answer
        return self.extractive.answer(question, history, filters)

    def stream_ask(
        self, question: str, history: list[Turn] | None = None, filters: Filters | None = None
    ) -> tuple[Iterator[str], Callable[[], Answer]]:
        """Tokens to show while the answer is made, and a function giving the final
        (verified) answer once the tokens are consumed."""
        llm = self.llm_answerer()
        if llm is None:
            answer = self.extractive.answer(question, history, filters)
            return _words(answer.answer), lambda: answer
        resolved = llm.condense_question(question, [(t.question, t.answer) for t in history or []])
        passages = self.search(resolved, k=self.settings.answer_candidate_passages, filters=filters)
        stream = llm.stream_answer(resolved, passages)

        def final() -> Answer:
            answer = stream.answer
            answer.question, answer.resolved_question = question, resolved
            return answer

        return iter(stream), final

    def _ask_llm(self, llm, question: str, history: list[Turn] | None, filters: Filters | None) -> Answer:
        resolved = llm.condense_question(question, [(t.question, t.answer) for t in history or []])
        passages = self.search(resolved, k=self.settings.answer_candidate_passages, filters=filters)
        answer = llm.answer(resolved, passages)
        answer.question, answer.resolved_question = question, resolved
        return answer

    def llm_answerer(self):
        if not self.settings.llm:
            return None
        if self._llm is None:
            from kb.llm import LLMAnswerer, make_chat_model

            model = make_chat_model(self.settings)
            self._llm = LLMAnswerer(model, self.kb.query_embedder.embed, self.settings)
        return self._llm

    def stats(self) -> dict:
        return self.kb.stats()

    def library(self) -> list[dict]:
        return self.kb.library()

    def organisations(self) -> list[str]:
        return sorted({d.organisation for d in self.kb.ledger.ready_documents() if d.organisation})

    def documents(self):
        return self.kb.ledger.ready_documents()

    def year_range(self) -> tuple[int, int] | None:
        years = [d.year for d in self.kb.ledger.ready_documents() if d.year]
        return (min(years), max(years)) if years else None

    def source_path(self, doc_id: str) -> Path | None:
        """The PDF on disk for a document (for opening it at a page)."""
        for row in self.kb.ledger.file_rows():
            if row["doc_id"] == doc_id and row["status"] == "ok" and Path(row["path"]).is_file():
                return Path(row["path"])
        return None

    def briefs(self):
        from kb.brief import BriefStore

        return BriefStore(self.settings.briefs_dir)

    def themes(self) -> list[str]:
        """Themes tagged on any visible passage (empty until passages are tagged)."""
        return sorted({theme for chunk in self.searcher.snapshot().chunks for theme in chunk.themes})

    def theme_labels(self) -> dict[str, str]:
        """Theme id -> readable label, for every theme of the taxonomy (and any id still
        stored on passages that the taxonomy no longer has)."""
        from kb.exchange_map import theme_labels

        return theme_labels(self)

    # --- the exchange map and theme briefs ---------------------------------------------------
    def exchange_map(self, types: tuple[str, ...] | None = None) -> dict:
        """Themes x organisations: how many passages of ``types`` the library holds."""
        from kb.exchange_map import MAP_TYPES, exchange_map

        return exchange_map(self, types=tuple(types or MAP_TYPES))

    def map_passages(self, theme_id: str, organisation: str | None, types: tuple[str, ...] | None = None):
        """The passages behind one cell of the map (``organisation=None``: every
        organisation), as citations."""
        from kb.exchange_map import MAP_TYPES, map_cell_passages

        return map_cell_passages(self, theme_id, organisation, types=tuple(types or MAP_TYPES))

    def save_theme_brief(self, theme_id: str, types: tuple[str, ...] | None = None):
        """Build the brief on one theme (each organisation's lessons and recommendations,
        quoted and cited) and save it among the briefs; returns the saved brief."""
        from kb.exchange_map import BRIEF_TYPES, build_theme_brief

        return self.briefs().save(build_theme_brief(self, theme_id, types=tuple(types or BRIEF_TYPES)))


def _words(text: str) -> Iterator[str]:
    """An extractive answer, word by word, so the UI can show it progressively."""
    for word in text.split(" "):
        yield word + " "
