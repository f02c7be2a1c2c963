"""Which of the library's organisations a question names.

Practitioners often say whose report they mean: "according to DOL", "UNODC's 2024
survey", "the DHS guide", "the UN migrant workers committee".  The names are read from
the organisation labels the documents carry ("US DOL (ILAB)", "US DHS (Blue Campaign)",
"UN (Committee on Migrant Workers / OHCHR)"), so a new publisher is recognised as soon as
its documents are in the library:

- an acronym of three or more capitals in a label ("DOL", "ILAB", "UNODC") matches the
  same acronym in the question (a possessive "UNODC's" included);
- a name of two or more words in a label ("Blue Campaign", "Home Office", "Committee on
  Migrant Workers") matches when all its words appear close together in the question, in
  any order ("the UN migrant workers committee");
- long forms in :data:`kb.settings.ORGANISATION_ALIASES` ("Labor Department",
  "Office on Drugs and Crime") stand for their acronym.

Two-letter acronyms ("UN", "US", "UK") and generic names are ignored: they name too much.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from kb.settings import GENERIC_ORGANISATION_NAMES, ORGANISATION_ALIASES

_ACRONYM = re.compile(r"\b[A-Z][A-Z0-9&]{2,}\b")
_WORD = re.compile(r"[a-z0-9]+")
_SEGMENT_BREAK = re.compile(r"[()/,;:]|\s+-\s+|\bby\b|\bfor\b")
_NAME_STOPWORDS = frozenset({"a", "an", "and", "of", "on", "the", "in", "to", "text", "series"})


def _words(text: str) -> list[str]:
    return _WORD.findall(text.casefold())


class OrganisationNames:
    """The names of a set of organisation labels, ready to be looked for in questions."""

    def __init__(self, organisations: Iterable[str]):
        self.acronyms: dict[str, set[str]] = {}  # acronym → labels
        self.phrases: list[tuple[frozenset[str], str]] = []  # words of a name → label
        generic = {name.casefold() for name in GENERIC_ORGANISATION_NAMES}
        for label in sorted({o for o in organisations if o and o.strip()}):
            for acronym in _ACRONYM.findall(label):
                self.acronyms.setdefault(acronym, set()).add(label)
            for segment in _SEGMENT_BREAK.split(label):
                words = [w for w in segment.split() if not _ACRONYM.fullmatch(w) and not (w.isupper() and len(w) <= 2)]
                name = " ".join(words)
                content = frozenset(w for w in _words(name) if w not in _NAME_STOPWORDS)
                if len(content) >= 2 and name.casefold() not in generic:
                    self.phrases.append((content, label))
        self.long_forms = [  # only those standing for an acronym on this library's labels
            (re.compile(rf"\b{re.escape(' '.join(_words(long_form)))}\b"), acronym)
            for long_form, acronym in ORGANISATION_ALIASES.items()
            if acronym in self.acronyms
        ]

    def mentioned(self, question: str) -> set[str]:
        """The labels whose organisation ``question`` names."""
        found: set[str] = set()
        acronyms = set(_ACRONYM.findall(question))
        folded = " ".join(_words(question))
        for long_form, acronym in self.long_forms:
            if long_form.search(folded):
                acronyms.add(acronym)
        for acronym in acronyms:
            found |= self.acronyms.get(acronym, set())
        words = folded.split()
        for content, label in self.phrases:
            if _close_together(content, words):
                found.add(label)
        return found


def _close_together(name: frozenset[str], words: list[str]) -> bool:
    """All of ``name`` within a few consecutive ``words``, in any order ("the UN migrant
    workers committee" names the "Committee on Migrant Workers"; "an office worker at
    home" does not name the "Home Office")."""
    window = len(name) + 2
    positions = [i for i, word in enumerate(words) if word in name]
    for start, first in enumerate(positions):
        seen = {words[i] for i in positions[start:] if i < first + window}
        if seen == name:
            return True
    return False
