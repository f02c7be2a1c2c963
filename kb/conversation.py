"""Follow-up questions without an LLM: a question that only makes sense in context
("And in Ghana?", "What did management commit to on that point?") borrows the subject
terms of the previous question before retrieval.  Deterministic, so it can be tested."""

from __future__ import annotations

import re
from dataclasses import dataclass

from kb.keyword import STOP_WORDS

_CONNECTOR_START = re.compile(
    r"^(and|but|so|also|then|what about|how about|and what|is .{0,30} any better|same for|what of)\b",
    re.IGNORECASE,
)
_REFERENCE = re.compile(
    r"\b(that|this|these|those|it|its|they|them|their|there|he|she|his|her|the same|such|former|latter)\b",
    re.IGNORECASE,
)
_WORD = re.compile(r"[A-Za-z][\w'’-]*|\d[\d,.]*")
# Question words and fillers that carry no subject.
_NOT_SUBJECT = STOP_WORDS | {
    "what", "which", "how", "many", "much", "does", "did", "do", "say", "said", "according",
    "tell", "us", "me", "kind", "sort", "whether", "anything", "any", "way", "ways", "would",
    "could", "should", "can", "need", "needs", "think", "thought", "point", "happen", "happened",
}


@dataclass
class Turn:
    """One exchange of a conversation."""

    question: str
    resolved_question: str = ""
    answer: str = ""

    @property
    def standalone(self) -> str:
        return self.resolved_question or self.question


def is_follow_up(question: str) -> bool:
    """Short, connector-led or pronoun-led questions lean on the previous one."""
    words = _WORD.findall(question)
    if len(words) <= 5:
        return True
    if _CONNECTOR_START.search(question.strip()):
        return True
    return len(words) <= 14 and bool(_REFERENCE.search(question))


def _proper_nouns(text: str) -> set[str]:
    words = _WORD.findall(text)
    return {w for i, w in enumerate(words) if i > 0 and w[0].isupper() and w.lower() not in _NOT_SUBJECT}


def subject_terms(previous: str, question: str) -> list[str]:
    """Content words of ``previous`` to carry into ``question``.

    When the follow-up names a new place or body of its own ("And in Ghana?"), the names
    in the previous question are dropped, so the new one replaces them.
    """
    own = {w.lower() for w in _WORD.findall(question)}
    new_names = _proper_nouns(question)
    old_names = _proper_nouns(previous) if new_names else set()
    carried = []
    for word in _WORD.findall(previous):
        word = word.strip("'’")
        lowered = word.lower()
        if lowered in _NOT_SUBJECT or lowered in own or word in old_names or len(word) < 3:
            continue
        if lowered not in (c.lower() for c in carried):
            carried.append(word)
    return carried


def resolve_follow_up(question: str, history: list[Turn] | None) -> str:
    """The question to retrieve with: itself, or itself plus the previous subject."""
    question = question.strip()
    if not history or not is_follow_up(question):
        return question
    carried = subject_terms(history[-1].standalone, question)
    return f"{question} ({' '.join(carried)})" if carried else question
