"""Optional generative answers through LangChain, verified against the passages.

Off by default.  ``KB_LLM`` chooses a chat model:

* ``ollama:MODEL`` (e.g. ``ollama:llama3.1``) – a local Ollama server, at
  ``KB_LLM_BASE_URL`` if given, otherwise Ollama's default (``OLLAMA_HOST`` or
  ``http://localhost:11434``);
* ``openai:MODEL`` – any OpenAI-compatible server (vLLM, llama.cpp server, LM Studio)
  at ``KB_LLM_BASE_URL``, with ``KB_LLM_API_KEY`` if the server wants one.

The integration packages (``langchain-ollama``, ``langchain-openai``) are imported only
when a model is made, so the app starts without them.

What the model writes is never shown as the answer without checks.
``LLMAnswerer.finish`` splits the reply into sentences and keeps a sentence only when
it cites a passage that was given (``[n]``), and the cited passage contains a sentence
(or two neighbouring sentences) whose embedding is at least
``settings.llm_support_threshold`` similar to it, and the passage states every number
the sentence states.  Passage sentences that read like instructions to an AI are never
accepted as support.  Citations are renumbered 1..m in
order of first use; every removal is explained in ``Answer.notes``; when nothing
survives, the answer abstains and lists related reading instead.

Typical use::

    model = make_chat_model(settings)            # None when KB_LLM is empty
    answerer = LLMAnswerer(model, get_query_embedder(settings).embed, settings)
    answer = answerer.answer(question, passages, history)

    stream = answerer.stream_answer(question, passages, history)
    for token in stream:                          # show tokens as they arrive ...
        ...
    verified = stream.answer                      # ... then replace them with this

Errors from the chat model itself (server down, unknown model) propagate to the
caller, which can fall back to the extractive answerer.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from kb import prompts
from kb.records import Answer, Citation, Passage, cite
from kb.settings import Settings

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import BaseMessage

PROVIDERS = ("ollama", "openai")
LLM_TIMEOUT_S = 300.0  # per request; a local model may need long to load and answer
OLLAMA_NUM_CTX = 8192  # context window asked of Ollama: rules + 8 passages + answer
CONDENSED_MAX_CHARS = 500  # a longer "standalone question" is not one: keep the original
NO_API_KEY = "not-needed"  # OpenAI-compatible local servers usually ignore the key

EmbedTexts = Callable[[list[str]], np.ndarray]


# --- making the chat model ----------------------------------------------------------


def parse_llm_spec(spec: str) -> tuple[str, str] | None:
    """Split ``KB_LLM`` into ``(provider, model)``; ``None`` when it is empty (off).

    The model name may itself contain colons (``ollama:llama3.1:8b``).

    Raises:
        ValueError: the value is not ``ollama:MODEL`` or ``openai:MODEL``.
    """
    spec = (spec or "").strip()
    if not spec:
        return None
    provider, sep, model = spec.partition(":")
    provider, model = provider.strip().lower(), model.strip()
    problem = ""
    if not sep:
        problem = "it has no provider prefix"
    elif provider not in PROVIDERS:
        problem = f"unknown provider {provider!r}"
    elif not model:
        problem = "the model name is missing"
    elif any(ch.isspace() for ch in model):
        problem = "the model name contains spaces"
    if problem:
        raise ValueError(
            f"KB_LLM={spec!r} is not understood ({problem}). Use 'ollama:MODEL' "
            "(e.g. 'ollama:llama3.1') for a local Ollama server, or 'openai:MODEL' with "
            "KB_LLM_BASE_URL for an OpenAI-compatible server (vLLM, llama.cpp server, "
            "LM Studio); leave KB_LLM empty to turn the LLM backend off."
        )
    return provider, model


def make_chat_model(settings: Settings) -> BaseChatModel | None:
    """The chat model ``settings.llm`` asks for, or ``None`` when the backend is off.

    Constructing the model makes no network call; the first request does.

    Raises:
        ValueError: ``settings.llm`` is malformed.
        ImportError: the integration package for the provider is not installed.
    """
    parsed = parse_llm_spec(settings.llm)
    if parsed is None:
        return None
    provider, model = parsed
    base_url = settings.llm_base_url.strip() or None

    if provider == "ollama":
        try:
            from langchain_ollama import ChatOllama
        except ImportError as exc:  # pragma: no cover - depends on the installation
            raise ImportError(
                "KB_LLM=ollama:... needs the optional package langchain-ollama "
                "(pip install 'ct-knowledge-exchange[llm]')"
            ) from exc
        return ChatOllama(
            model=model,
            base_url=base_url,
            temperature=settings.llm_temperature,
            num_ctx=OLLAMA_NUM_CTX,
            client_kwargs={"timeout": LLM_TIMEOUT_S},
        )

    try:
        from langchain_openai import ChatOpenAI
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ImportError(
            "KB_LLM=openai:... needs the optional package langchain-openai "
            "(pip install 'ct-knowledge-exchange[llm]')"
        ) from exc
    # An explicit key wins.  OPENAI_API_KEY is only used for OpenAI's own endpoint
    # (no base URL), so a real key is never sent to some other server.
    api_key: str | None = settings.llm_api_key or None
    if api_key is None and (base_url is not None or not os.environ.get("OPENAI_API_KEY")):
        api_key = NO_API_KEY
    options: dict[str, Any] = {
        "model": model,
        "base_url": base_url,
        "api_key": api_key,
        "temperature": settings.llm_temperature,
        "timeout": LLM_TIMEOUT_S,
    }
    if base_url is not None:
        # Compatible servers implement Chat Completions, not OpenAI's Responses API.
        options["use_responses_api"] = False
    return ChatOpenAI(**options)


# --- sentences and citation markers -------------------------------------------------

# One marker group: [3], [1, 2], [1;2], [2-4], [Passage 3].  "[1][2]" is two groups.
_MARKER = r"\[\s*(?:passages?\s*)?(\d+(?:\s*[,;\u2013-]\s*\d+)*)\s*\]"
_CITATION_GROUP = re.compile(_MARKER, re.IGNORECASE)
_SENTENCE_END = re.compile(
    r"[.!?\u2026]+[\"'\u201d\u2019)]*"  # terminal punctuation and closing quotes
    rf"(?:\s*{_MARKER})*"  # markers written after it
    r"(?=\s|$)",
    re.IGNORECASE,
)
_ABBREVIATIONS = frozenset(
    "al approx art cf ch co dr e.g etc fig i.e inc jr ltd mr mrs ms no nos p para pp "
    "prof sec sr st u.k u.n u.s viz vol vs".split()
)
_BULLET = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s+")
_WORD = re.compile(r"\w", re.UNICODE)
_MAX_RANGE = 20  # "[1-300]" is not a citation range anyone means


def split_sentences(text: str) -> list[str]:
    """Split one line of text into sentences; citation markers written after a full
    stop (``... here. [2]``) stay with the sentence before them."""
    sentences: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        if match.group().startswith(".") and not re.match(r"\.{2,}", match.group()):
            word = re.search(r"(\S+)$", text[start : match.start()])
            token = word.group(1).lower().lstrip("([\"'") if word else ""
            if token in _ABBREVIATIONS or (len(token) == 1 and token.isalpha()):
                continue
        following = text[match.end() :].lstrip()[:1]
        if following and following.islower():
            continue
        piece = text[start : match.end()].strip()
        if piece:
            sentences.append(piece)
        start = match.end()
    rest = text[start:].strip()
    if rest:
        sentences.append(rest)
    return sentences


def _group_numbers(group: str) -> list[int]:
    """The passage numbers in the inside of one marker group, in order, no repeats."""
    numbers: list[int] = []
    for item in re.split(r"\s*[,;]\s*", group.strip()):
        bounds = re.split(r"\s*[\u2013-]\s*", item)
        if len(bounds) == 2 and 0 <= int(bounds[1]) - int(bounds[0]) <= _MAX_RANGE:
            values = list(range(int(bounds[0]), int(bounds[1]) + 1))
        else:
            values = [int(b) for b in bounds]
        numbers.extend(v for v in values if v not in numbers)
    return numbers


def parse_citations(text: str) -> list[int]:
    """Every ``[n]`` number in ``text`` (also ``[1, 2]``, ``[1][2]``, ``[2-3]``),
    in order of first appearance."""
    numbers: list[int] = []
    for match in _CITATION_GROUP.finditer(text):
        numbers.extend(n for n in _group_numbers(match.group(1)) if n not in numbers)
    return numbers


def _tidy(text: str) -> str:
    """Collapse spaces and remove the space a deleted marker leaves before punctuation."""
    text = re.sub(r"[ \t]+", " ", text)
    return re.sub(r"\s+([.,;:!?\u2026])", r"\1", text).strip()


def strip_citations(text: str) -> str:
    """``text`` without its citation markers."""
    return _tidy(_CITATION_GROUP.sub("", text))


def _claim(sentence: str) -> str:
    """What a sentence states: no markers, bullets or emphasis marks."""
    return _tidy(_BULLET.sub("", strip_citations(sentence)).replace("**", ""))


# --- reasoning blocks of "thinking" models -----------------------------------------

_THINK_OPEN, _THINK_CLOSE = "<think>", "</think>"


def strip_reasoning(text: str) -> str:
    """Remove ``<think>...</think>`` blocks some local models put before the answer."""
    text = re.sub(r"<think>.*?</think>", "", text, flags=re.DOTALL | re.IGNORECASE)
    if _THINK_OPEN in text:  # unterminated: everything after it is still reasoning
        text = text[: text.index(_THINK_OPEN)]
    if _THINK_CLOSE in text:  # the opening tag was part of the chat template
        text = text[text.rindex(_THINK_CLOSE) + len(_THINK_CLOSE) :]
    return text.strip()


class _ReasoningFilter:
    """Drops ``<think>...</think>`` from a token stream, tags split across tokens too."""

    def __init__(self) -> None:
        self._pending = ""
        self._inside = False

    def feed(self, token: str) -> str:
        """Take one token; return the text that can be shown now."""
        self._pending += token
        shown = []
        while True:
            tag = _THINK_CLOSE if self._inside else _THINK_OPEN
            at = self._pending.find(tag)
            if at >= 0:
                if not self._inside:
                    shown.append(self._pending[:at])
                self._pending = self._pending[at + len(tag) :]
                self._inside = not self._inside
                continue
            # Hold back a tail that could be the start of a tag.
            keep = next(
                (k for k in range(len(tag) - 1, 0, -1) if self._pending.endswith(tag[:k])), 0
            )
            if not self._inside:
                shown.append(self._pending[: len(self._pending) - keep])
            self._pending = self._pending[len(self._pending) - keep :]
            return "".join(shown)

    def flush(self) -> str:
        """The text still held back when the stream ends."""
        rest, self._pending = ("" if self._inside else self._pending), ""
        return rest


# --- passages as evidence -------------------------------------------------------------

_INSTRUCTION_LIKE = [
    re.compile(pattern, re.IGNORECASE)
    for pattern in (
        r"\b(?:ignore|disregard|forget|override)\b.{0,40}"
        r"\b(?:instructions?|prompts?|rules|directions|guidelines)\b",
        r"\b(?:system|developer)\s+(?:prompt|message|instructions?)\b",
        r"\bnew\s+instructions?\b",
        r"\byou\s+(?:are|must|should|will)\s+now\b",
        r"\b(?:as\s+an?|you\s+are\s+an?)\s+"
        r"(?:ai|assistant|language\s+model|chatbot|llm)\b",
        r"\b(?:say|tell|reveal|print|output|repeat)\s+(?:that\s+)?the\s+"
        r"(?:password|secret|system\s+prompt)\b",
    )
]


def looks_like_instruction(sentence: str) -> bool:
    """True for passage text addressed to an AI (a planted prompt injection)."""
    return any(pattern.search(sentence) for pattern in _INSTRUCTION_LIKE)


_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


def _numbers(text: str) -> set[str]:
    """The numbers written in ``text`` ("1,200" and "1200" count as the same)."""
    return {match.group().replace(",", "") for match in _NUMBER.finditer(text)}


@dataclass
class _Evidence:
    """What in one passage may support a sentence: its sentences and pairs of
    neighbouring sentences (``spans`` of sentence indexes), leaving out any sentence
    that reads like instructions."""

    sentences: list[str]
    spans: list[tuple[int, int]]
    has_instructions: bool
    numbers: set[str]  # every number the usable text (or the document's year) states
    vectors: np.ndarray | None = None

    @classmethod
    def of(cls, passage: Passage) -> _Evidence:
        sentences = split_sentences(" ".join(passage.text.split()))
        flags = [looks_like_instruction(s) for s in sentences]
        spans = [(i, i) for i, bad in enumerate(flags) if not bad]
        spans += [(i, i + 1) for i in range(len(flags) - 1) if not (flags[i] or flags[i + 1])]
        numbers = _numbers(" ".join(s for s, bad in zip(sentences, flags) if not bad))
        if passage.document.year:
            numbers.add(str(passage.document.year))
        return cls(sentences, spans, any(flags), numbers)

    def unit(self, span: tuple[int, int]) -> str:
        return " ".join(self.sentences[span[0] : span[1] + 1])

    def quote(self, spans: list[tuple[int, int]]) -> str:
        """The passage sentences the given spans cover, in order; gaps shown as ``...``."""
        covered = sorted({i for first, last in spans for i in range(first, last + 1)})
        parts: list[str] = []
        for k, i in enumerate(covered):
            if k and i != covered[k - 1] + 1:
                parts.append("...")
            parts.append(self.sentences[i])
        return " ".join(parts)


@dataclass
class _Sentence:
    """One sentence of the model's reply and what verification found for it."""

    line: int  # line of the reply it came from (bullets, paragraphs)
    text: str  # as written, markers included
    claim: str  # what is checked: the text without markers and bullets
    cited: list[int]  # passage numbers as written, in order
    # passage number -> (best similarity, span of the passage sentences that gave it)
    supported: dict[int, tuple[float, tuple[int, int]]] = field(default_factory=dict)
    numbers_missing: bool = False  # similar to a cited passage, but states other numbers


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


_MODEL_ABSTENTION = re.compile(
    r"\bpassages?\b.{0,40}\b(?:do|does)\s+not\s+"
    r"(?:answer|contain|say|mention|address|cover)",
    re.IGNORECASE,
)


def _is_model_abstention(claim: str) -> bool:
    """The model said the passages do not answer (as the system prompt asks it to)."""
    return bool(_MODEL_ABSTENTION.search(claim))


# --- streaming --------------------------------------------------------------------------


class AnswerStream(Iterator[str]):
    """The tokens of a streamed answer, as they arrive.

    Iterate it to show text to the user; once it is exhausted, ``answer`` holds the
    verified ``Answer`` (which may differ: unsupported sentences removed, citations
    renumbered), and the UI should show that instead.
    """

    def __init__(self, tokens: Generator[str, None, Answer]):
        self._tokens = tokens
        self.answer: Answer | None = None

    def __iter__(self) -> AnswerStream:
        return self

    def __next__(self) -> str:
        try:
            return next(self._tokens)
        except StopIteration as done:
            self.answer = done.value
            raise StopIteration from None


# --- the answerer ---------------------------------------------------------------------


class LLMAnswerer:
    """Answers a question from retrieved passages with a chat model, then keeps only
    what the cited passages support.

    Args:
        chat_model: any LangChain chat model (``make_chat_model`` or a fake one).
        embed_texts: texts -> L2-normalised float32 vectors, shape ``(n, dim)``; the
            project's question embedder (``kb.embed.get_query_embedder(settings).embed``).
        settings: ``llm`` names the backend, ``llm_support_threshold`` is the least
            cosine similarity a sentence needs to a sentence of its cited passage,
            ``answer_max_sentences`` and ``related_reading`` shape the answer.
    """

    def __init__(self, chat_model: BaseChatModel, embed_texts: EmbedTexts, settings: Settings):
        self.chat_model = chat_model
        self.embed_texts = embed_texts
        self.settings = settings
        self.backend = f"llm:{settings.llm}" if settings.llm else "llm"

    # -- prompts ---------------------------------------------------------------------

    def build_messages(self, question: str, passages: Sequence[Passage]) -> list[BaseMessage]:
        """The messages sent to the model to answer ``question`` from ``passages``."""
        return prompts.build_answer_messages(
            question, passages, max_sentences=self.settings.answer_max_sentences
        )

    def condense_question(self, question: str, history: Sequence[tuple[str, str]] | None) -> str:
        """Rewrite a follow-up into a standalone question using the conversation so far.

        ``history`` is a list of ``(question, answer)`` turns, oldest first.  Without
        history the question is returned unchanged and the model is not called; a reply
        that is empty or too long to be a question also leaves it unchanged.
        """
        if not history:
            return question
        reply = self.chat_model.invoke(prompts.build_condense_messages(question, history))
        text = strip_reasoning(_message_text(reply))
        line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
        line = re.sub(r"^(?:standalone\s+question|question)\s*:\s*", "", line, flags=re.I)
        line = line.strip(" \"'`*\u201c\u201d")
        if not line or len(line) > CONDENSED_MAX_CHARS:
            return question
        return line

    # -- answering -------------------------------------------------------------------

    def answer(
        self,
        question: str,
        passages: Sequence[Passage],
        history: Sequence[tuple[str, str]] | None = None,
    ) -> Answer:
        """Ask the model, then verify its reply (see ``finish``).

        With ``history`` the question is first condensed into a standalone one (an extra
        model call); a caller that already condensed it for retrieval should pass the
        standalone question and no history.
        """
        resolved = self.condense_question(question, history)
        if not passages:
            return self._abstain(question, resolved, [], ["No passages were retrieved."])
        reply = self.chat_model.invoke(self.build_messages(resolved, passages))
        return self.finish(_message_text(reply), passages, question, resolved)

    def stream_answer(
        self,
        question: str,
        passages: Sequence[Passage],
        history: Sequence[tuple[str, str]] | None = None,
    ) -> AnswerStream:
        """Like ``answer``, but yields the model's text as it is generated.

        Returns an ``AnswerStream``: iterate it for the tokens (reasoning blocks are
        hidden), then read ``stream.answer`` for the verified ``Answer``.  The model is
        only called when iteration starts.
        """

        def tokens() -> Generator[str, None, Answer]:
            resolved = self.condense_question(question, history)
            if not passages:
                return self._abstain(question, resolved, [], ["No passages were retrieved."])
            raw: list[str] = []
            hide_reasoning = _ReasoningFilter()
            for chunk in self.chat_model.stream(self.build_messages(resolved, passages)):
                token = _message_text(chunk)
                raw.append(token)
                shown = hide_reasoning.feed(token)
                if shown:
                    yield shown
            tail = hide_reasoning.flush()
            if tail:
                yield tail
            return self.finish("".join(raw), passages, question, resolved)

        return AnswerStream(tokens())

    def finish(
        self,
        full_text: str,
        passages: Sequence[Passage],
        question: str = "",
        resolved_question: str = "",
    ) -> Answer:
        """Verify a complete model reply against the passages it was given.

        * markers pointing to no passage are invented: removed, and noted;
        * a sentence without a (valid) citation is removed;
        * a cited passage supports a sentence when one of its sentences, or two
          neighbouring ones, has cosine similarity ``>= llm_support_threshold`` with it
          and the passage states every number the sentence states;
          citations that do not support their sentence are dropped, and a sentence left
          with none is removed;
        * surviving citations are renumbered 1..m in order of first use, and each one's
          ``quote`` is the passage text that best supports the answer.

        When nothing survives, the answer abstains and ``related`` lists the top
        passages.  ``Answer.notes`` explains every removal.
        """
        resolved_question = resolved_question or question
        sentences = self._parse_reply(strip_reasoning(full_text))
        count = len(passages)
        notes: list[str] = []

        invented = sorted({n for s in sentences for n in s.cited if not 1 <= n <= count})
        if invented:
            markers = ", ".join(f"[{n}]" for n in invented)
            notes.append(
                f"Invented citation{'s' if len(invented) > 1 else ''} {markers} removed: "
                f"only {_plural(count, 'passage')} {'was' if count == 1 else 'were'} given."
            )

        evidence = self._evidence(passages, sentences)
        for n, found in sorted(evidence.items()):
            if found.has_instructions:
                notes.append(
                    f"A passage from {prompts.source_label(passages[n - 1])} contains text "
                    "that reads like instructions to an AI; it was treated as data and not "
                    "accepted as evidence."
                )
        self._measure_support(sentences, evidence)

        threshold = self.settings.llm_support_threshold
        kept: list[_Sentence] = []
        uncited = unsupported = wrong_numbers = dropped = 0
        model_abstained = False
        for sentence in sentences:
            valid = [n for n in sentence.cited if 1 <= n <= count]
            if not valid:
                if _is_model_abstention(sentence.claim):
                    model_abstained = True
                else:
                    uncited += 1
                continue
            good = {n: hit for n, hit in sentence.supported.items() if hit[0] >= threshold}
            if not good:
                if sentence.numbers_missing:
                    wrong_numbers += 1
                else:
                    unsupported += 1
                continue
            dropped += len(valid) - len(good)
            sentence.supported = good
            kept.append(sentence)

        if unsupported:
            notes.append(
                f"{_plural(unsupported, 'sentence')} removed: not supported by the cited "
                f"passage{'s' if unsupported > 1 else ''}."
            )
        if wrong_numbers:
            notes.append(
                f"{_plural(wrong_numbers, 'sentence')} removed: "
                f"{'its' if wrong_numbers == 1 else 'their'} numbers do not appear in the "
                "cited passage."
            )
        if uncited:
            notes.append(f"{_plural(uncited, 'sentence')} removed: no citation to a passage.")
        if dropped:
            notes.append(
                f"{_plural(dropped, 'citation')} removed: the cited passage does not "
                "support its sentence."
            )
        if model_abstained and kept:
            notes.append(
                "1 sentence removed: the model said the passages do not answer part of "
                "the question."
            )
        elif model_abstained:
            notes.append("The model said the passages do not answer the question.")
        if not kept:
            return self._abstain(question, resolved_question, passages, notes)

        # Renumber in order of first use, rewrite the markers, pick the best quotes.
        numbering: dict[int, int] = {}
        quote_spans: dict[int, list[tuple[int, int]]] = {}
        lines: dict[int, list[str]] = {}
        for sentence in kept:
            for n in sentence.cited:
                if n in sentence.supported:
                    numbering.setdefault(n, len(numbering) + 1)
                    quote_spans.setdefault(n, []).append(sentence.supported[n][1])
            lines.setdefault(sentence.line, []).append(_renumber(sentence, numbering))
        text = "\n".join(" ".join(parts) for _, parts in sorted(lines.items()))
        citations = [
            _citation(new, passages[old - 1], evidence[old].quote(quote_spans[old]))
            for old, new in sorted(numbering.items(), key=lambda item: item[1])
        ]
        return Answer(
            question=question,
            answer=text,
            citations=citations,
            resolved_question=resolved_question,
            notes=notes,
            backend=self.backend,
        )

    # -- helpers ---------------------------------------------------------------------

    @staticmethod
    def _parse_reply(text: str) -> list[_Sentence]:
        """The reply's sentences; a line of bare markers joins the sentence before it."""
        sentences: list[_Sentence] = []
        for line_no, line in enumerate(text.splitlines()):
            for piece in split_sentences(line.strip()):
                cited, claim = parse_citations(piece), _claim(piece)
                if not _WORD.search(claim):
                    if cited and sentences:
                        last = sentences[-1]
                        last.text = f"{last.text} {piece}"
                        last.cited += [n for n in cited if n not in last.cited]
                    continue
                sentences.append(_Sentence(line_no, piece, claim, cited))
        return sentences

    def _evidence(
        self, passages: Sequence[Passage], sentences: list[_Sentence]
    ) -> dict[int, _Evidence]:
        """Embedded evidence units of every passage some sentence cites."""
        cited = sorted({n for s in sentences for n in s.cited if 1 <= n <= len(passages)})
        evidence = {n: _Evidence.of(passages[n - 1]) for n in cited}
        vectors = self._embed([e.unit(span) for e in evidence.values() for span in e.spans])
        start = 0
        for found in evidence.values():
            found.vectors = vectors[start : start + len(found.spans)]
            start += len(found.spans)
        return evidence

    def _measure_support(self, sentences: list[_Sentence], evidence: dict[int, _Evidence]) -> None:
        """For every sentence and cited passage: the best similarity and its span.

        Embeddings barely see numbers ("within 72 hours" is ~0.98 similar to "within 48
        hours"), so a passage that does not state every number of the sentence gives no
        support, however similar it is; ``numbers_missing`` records such cases."""
        checked = [s for s in sentences if any(n in evidence for n in s.cited)]
        vectors = self._embed([s.claim for s in checked])
        for sentence, vector in zip(checked, vectors):
            claimed = _numbers(sentence.claim)
            for n in sentence.cited:
                found = evidence.get(n)
                if found is None:
                    continue
                if not found.spans or found.vectors is None:
                    sentence.supported[n] = (-1.0, (0, -1))  # nothing usable as evidence
                    continue
                similarities = found.vectors @ vector
                best = int(np.argmax(similarities))
                similarity = float(similarities[best])
                if not claimed <= found.numbers:
                    if similarity >= self.settings.llm_support_threshold:
                        sentence.numbers_missing = True
                    similarity = -1.0
                sentence.supported[n] = (similarity, found.spans[best])

    def _embed(self, texts: list[str]) -> np.ndarray:
        """Embed ``texts`` (in one batch) as unit-length float32 rows."""
        if not texts:
            return np.zeros((0, 1), dtype=np.float32)
        vectors = np.asarray(self.embed_texts(list(texts)), dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        return vectors / norms

    def _abstain(
        self,
        question: str,
        resolved_question: str,
        passages: Sequence[Passage],
        notes: list[str],
    ) -> Answer:
        """An answer that declines, with the top passages as related reading."""
        related = [
            _citation(n, passage, "")
            for n, passage in enumerate(passages[: self.settings.related_reading], start=1)
        ]
        return Answer(
            question=question,
            answer=prompts.ABSTAIN_ANSWER,
            abstained=True,
            related=related,
            resolved_question=resolved_question or question,
            notes=notes,
            backend=self.backend,
        )


def _renumber(sentence: _Sentence, numbering: dict[int, int]) -> str:
    """The sentence with its markers rewritten as ``[new]`` for supporting passages
    only; markers to invented or unsupporting passages disappear."""

    def rewrite(match: re.Match[str]) -> str:
        numbers = [n for n in _group_numbers(match.group(1)) if n in sentence.supported]
        return "".join(f"[{numbering[n]}]" for n in numbers)

    return _tidy(_CITATION_GROUP.sub(rewrite, sentence.text))


def _citation(n: int, passage: Passage, quote: str) -> Citation:
    """A ``Citation`` numbered ``n`` for ``passage``."""
    return cite(n, passage.chunk, passage.document, score=passage.score, quote=quote)


def _message_text(message: Any) -> str:
    """The plain text of a chat message or message chunk (string or content blocks)."""
    text = getattr(message, "text", None)
    if isinstance(text, str):
        return str(text)
    content = getattr(message, "content", message)
    return content if isinstance(content, str) else str(content)
