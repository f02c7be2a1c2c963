"""Tagging passages with the exchange's themes and passage types.

Themes
------
The taxonomy is a data file (``kb/data/themes.json``, or ``KB_THEMES_FILE``) that staff
can extend: each theme has an ``id`` (the stable key stored on passages), a ``label`` (what
the app shows), a ``description``, ``terms`` (phrases that mark the theme) and ``related``
words (broader words that only support it), and optionally its own ``threshold``.

A chunk speaks to a theme when

    cosine(chunk vector, theme vector) + w * min(strong + r * related, cap)  >=  threshold

where the theme vector is the normalised mean of the embeddings of the theme's label and
description and of each of its terms (one vector per theme, embedded once and cached),
``strong`` and ``related`` count the distinct terms / related words found in the chunk
text (whole words, case-insensitive, ``*`` = any ending; see :class:`TermMatcher`), and
``w``, ``r``, ``cap`` and the threshold are settings (``theme_*``; a theme's own
``threshold`` in the file wins).  The model's similarity alone separates themes only
roughly on this kind of text; the terms make the decision sharper, and the similarity
keeps a passage that merely mentions a word from being tagged.  The numbers were tuned
on hand-labelled chunks of the shared corpus (``bench/tagging.py``).  A chunk gets at most ``theme_max_per_chunk`` themes (the best scores), and
none at all when it reads like a reference list, footnotes or a table of contents.

Passage types
-------------
One of ``lesson``, ``practice``, ``recommendation``, ``finding``, ``definition`` or ``""``
(none), decided by cue phrases (no model needed), in this order:

1. Reference lists, footnotes and tables of contents are ``""``.
2. Each type collects points from its cue phrases in the text (each cue counts at most a
   few times) and from its words in the section heading (worth more; only for headings
   of at most nine words, since longer ones are paragraph starts or footnotes):
   * ``recommendation``: *recommend*, *should*, *calls upon*, *urges*, *suggested action*,
     *it is important to*, *need to*, and list items or sentences that start with an
     instruction (*Ensure*, *Strengthen*, *Call*, *Do not* ...);
   * ``lesson``: *lessons learned*, *challenges*, *gaps*, *worked well*, *proved*,
     *hindered*, *led to*, *conclusion* ...;
   * ``practice``: *good / promising / best practice*, *innovative*, *pilot*, a programme
     that *helped* or *enabled* ...;
   * ``definition``: a quoted term followed by *means* / *refers to*, *is defined as*,
     *Definition:*, *Article 5*, *States Parties shall*, sections of an Act or Code;
   * ``finding``: percentages and counts, *found*, *according to*, *reported*, *estimated*,
     *survey*, *study* ...
3. The type with most points wins when it has at least ``passage_type_min_score``;
   ties go to the earlier type in ``recommendation, lesson, practice, definition, finding``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from kb.records import Chunk
from kb.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_TAXONOMY = Path(__file__).resolve().parent / "data" / "themes.json"

PASSAGE_TYPES: tuple[str, ...] = ("lesson", "practice", "recommendation", "finding", "definition")
PASSAGE_TYPE_LABELS: dict[str, str] = {
    "lesson": "Lesson learned",
    "practice": "Good practice",
    "recommendation": "Recommendation",
    "finding": "Finding or statistic",
    "definition": "Definition or legal provision",
}
_TYPE_PRIORITY = ("recommendation", "lesson", "practice", "definition", "finding")
_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


class TaxonomyError(ValueError):
    """The taxonomy file is missing, unreadable or invalid."""


# ======================================================================================
# The taxonomy
# ======================================================================================


@dataclass(frozen=True)
class Theme:
    id: str
    label: str
    description: str
    terms: tuple[str, ...] = ()
    related: tuple[str, ...] = ()
    threshold: float | None = None

    def probes(self) -> list[str]:
        """The texts whose embeddings make up the theme vector."""
        words = [t.replace("*", "").strip() for t in (*self.terms, *self.related)]
        return [f"{self.label}. {self.description}".strip(), *[w for w in words if w]]


@dataclass(frozen=True)
class Taxonomy:
    themes: tuple[Theme, ...]
    source: str = ""
    _patterns: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def ids(self) -> list[str]:
        return [t.id for t in self.themes]

    def labels(self) -> dict[str, str]:
        return {t.id: t.label for t in self.themes}

    def get(self, theme_id: str) -> Theme | None:
        for theme in self.themes:
            if theme.id == theme_id:
                return theme
        return None

    def label(self, theme_id: str) -> str:
        theme = self.get(theme_id)
        return theme.label if theme else theme_id

    def digest(self) -> str:
        """Changes whenever anything the tagger reads changes."""
        payload = json.dumps([t.__dict__ for t in self.themes], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]

    def matcher(self) -> "TermMatcher":
        if "matcher" not in self._patterns:
            self._patterns["matcher"] = TermMatcher([(t.terms, t.related) for t in self.themes])
        return self._patterns["matcher"]

    def to_dict(self) -> dict:
        return {
            "themes": [
                {
                    "id": t.id, "label": t.label, "description": t.description,
                    "terms": list(t.terms), "related": list(t.related),
                    **({"threshold": t.threshold} if t.threshold is not None else {}),
                }
                for t in self.themes
            ]
        }


def _term_pattern(term: str) -> re.Pattern:
    """A case-insensitive whole-word pattern; a trailing ``*`` matches any word ending."""
    term = " ".join(term.lower().split())
    open_end = term.endswith("*")
    body = re.escape(term.rstrip("*")).replace(r"\ ", r"\s+").replace(r"\*", r"\w*")
    return re.compile(r"(?<![\w-])" + body + (r"\w*" if open_end else r"(?![\w-])"), re.IGNORECASE)


_WORD = re.compile(r"[\w-]+")
_PLAIN_TERM = re.compile(r"^[\w-]+(?: [\w-]+)*\*?$")


class TermMatcher:
    """Finds which terms of each theme occur in a text, in one pass over its words.

    A term is one or more words (letters, digits, hyphens) matched whole and in order,
    separated only by white space, case-insensitively; a trailing ``*`` lets the last
    word have any ending.  Terms with other characters fall back to a regular expression
    with the same meaning.
    """

    def __init__(self, themes: list[tuple[tuple[str, ...], tuple[str, ...]]]):
        self.size = len(themes)
        self.exact: dict[str, list[tuple[tuple[int, int, int], tuple[str, ...], bool]]] = {}
        self.prefix: dict[str, list[tuple[int, int, int]]] = {}
        self.lengths: list[int] = []
        self.fallback: list[tuple[tuple[int, int, int], re.Pattern]] = []
        for j, groups in enumerate(themes):
            for kind, terms in enumerate(groups):
                for n, term in enumerate(terms):
                    key = (j, kind, n)
                    norm = " ".join(term.lower().split())
                    if not _PLAIN_TERM.match(norm):
                        self.fallback.append((key, _term_pattern(term)))
                        continue
                    wildcard = norm.endswith("*")
                    words = tuple(norm.rstrip("*").split())
                    if len(words) == 1 and wildcard:
                        self.prefix.setdefault(words[0], []).append(key)
                    else:
                        self.exact.setdefault(words[0], []).append((key, words[1:], wildcard))
        self.lengths = sorted({len(stem) for stem in self.prefix})

    def found(self, text: str) -> set[tuple[int, int, int]]:
        """(theme index, 0 = term / 1 = related word, term index) of every term found."""
        lower = text.lower()
        spans = [(m.start(), m.end()) for m in _WORD.finditer(lower)]
        words = [lower[a:b] for a, b in spans]
        found: set[tuple[int, int, int]] = set()
        for i, word in enumerate(words):
            for key, rest, wildcard in self.exact.get(word, ()):
                if key in found:
                    continue
                if not rest:
                    if not wildcard:
                        found.add(key)
                    continue
                if i + len(rest) >= len(words):
                    continue
                ok = True
                for k, part in enumerate(rest, start=1):
                    gap = lower[spans[i + k - 1][1] : spans[i + k][0]]
                    last = k == len(rest)
                    w = words[i + k]
                    if gap.strip() or not (w.startswith(part) if last and wildcard else w == part):
                        ok = False
                        break
                if ok:
                    found.add(key)
            for length in self.lengths:
                if len(word) < length:
                    break
                for key in self.prefix.get(word[:length], ()):
                    found.add(key)
        for key, pattern in self.fallback:
            if pattern.search(text):
                found.add(key)
        return found

    def counts(self, text: str) -> np.ndarray:
        """Distinct terms (column 0) and related words (column 1) found, per theme."""
        counts = np.zeros((self.size, 2), dtype=np.float32)
        for j, kind, _ in self.found(text):
            counts[j, kind] += 1
        return counts


def taxonomy_path(settings: Settings | None = None) -> Path:
    configured = getattr(settings, "themes_file", "") if settings is not None else ""
    return Path(configured) if configured else DEFAULT_TAXONOMY


def parse_taxonomy(data: dict | list, source: str = "") -> Taxonomy:
    """A taxonomy from its JSON form: ``{"themes": [...]}`` or just the list."""
    items = data.get("themes") if isinstance(data, dict) else data
    if not isinstance(items, list) or not items:
        raise TaxonomyError(f"{source or 'taxonomy'}: expected a non-empty list of themes")
    themes: list[Theme] = []
    seen: set[str] = set()
    for n, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            raise TaxonomyError(f"{source}: theme {n} is not an object")
        theme_id = str(item.get("id", "")).strip()
        if not _ID.match(theme_id):
            raise TaxonomyError(f"{source}: theme {n} needs an id of lowercase letters, digits and dashes, not {theme_id!r}")
        if theme_id in seen:
            raise TaxonomyError(f"{source}: theme id {theme_id!r} appears twice")
        seen.add(theme_id)
        description = str(item.get("description", "")).strip()
        label = str(item.get("label", "")).strip() or theme_id
        if not description:
            raise TaxonomyError(f"{source}: theme {theme_id!r} needs a description")
        terms = _term_list(item.get("terms", []), source, theme_id)
        related = _term_list(item.get("related", []), source, theme_id)
        threshold = item.get("threshold")
        if threshold is not None:
            try:
                threshold = float(threshold)
            except (TypeError, ValueError):
                raise TaxonomyError(f"{source}: theme {theme_id!r} has a threshold that is not a number") from None
        themes.append(Theme(theme_id, label, description, terms, related, threshold))
    return Taxonomy(tuple(themes), source)


def _term_list(value, source: str, theme_id: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [v for v in value.split(";")]
    if not isinstance(value, list):
        raise TaxonomyError(f"{source}: terms of theme {theme_id!r} must be a list of strings")
    return tuple(str(v).strip() for v in value if str(v).strip().rstrip("*"))


_TAXONOMY_CACHE: dict[str, tuple[str, Taxonomy]] = {}
_TAXONOMY_LOCK = threading.Lock()


def load_taxonomy(settings: Settings | None = None, path: Path | str | None = None) -> Taxonomy:
    """The taxonomy from ``path`` (default: ``settings.themes_file`` or the packaged file),
    read afresh whenever the file's content changes."""
    file = Path(path) if path else taxonomy_path(settings)
    try:
        raw = file.read_bytes()
    except OSError as error:
        raise TaxonomyError(f"cannot read the taxonomy file {file}: {error.strerror or error}") from None
    key, digest = str(file.resolve()), hashlib.sha256(raw).hexdigest()
    with _TAXONOMY_LOCK:
        cached = _TAXONOMY_CACHE.get(key)
        if cached and cached[0] == digest:
            return cached[1]
    try:
        data = json.loads(raw.decode("utf-8"))
    except ValueError as error:
        raise TaxonomyError(f"cannot read the taxonomy file {file}: {error}") from None
    taxonomy = parse_taxonomy(data, str(file))
    with _TAXONOMY_LOCK:
        _TAXONOMY_CACHE[key] = (digest, taxonomy)
    return taxonomy


def theme_labels(settings: Settings | None = None) -> dict[str, str]:
    """Theme id -> label, in the taxonomy's order (empty if the file cannot be read)."""
    try:
        return load_taxonomy(settings).labels()
    except TaxonomyError:
        return {}


# ======================================================================================
# Theme vectors (embedded once, cached by content)
# ======================================================================================

_VECTORS: dict[tuple[str, str], np.ndarray] = {}
_VECTORS_LOCK = threading.Lock()

Embed = Callable[[list[str]], np.ndarray]


def theme_vectors(taxonomy: Taxonomy, settings: Settings, embed: Embed | None = None) -> np.ndarray:
    """One unit vector per theme (rows in taxonomy order).  ``embed`` defaults to the
    project's embedder; the result is cached for the process by backend and content."""
    key = (settings.embed_backend, taxonomy.digest())
    with _VECTORS_LOCK:
        if key in _VECTORS:
            return _VECTORS[key]
    if embed is None:
        from kb.embed import get_embedder

        embed = get_embedder(settings).embed
    probes = [theme.probes() for theme in taxonomy.themes]
    flat = [p for group in probes for p in group]
    vectors = np.asarray(embed(flat), dtype=np.float32)
    rows, start = [], 0
    for group in probes:
        mean = vectors[start : start + len(group)].mean(axis=0)
        start += len(group)
        norm = float(np.linalg.norm(mean)) or 1.0
        rows.append(mean / norm)
    matrix = np.vstack(rows).astype(np.float32)
    with _VECTORS_LOCK:
        _VECTORS[key] = matrix
    return matrix


# ======================================================================================
# Tagging
# ======================================================================================

_URL = re.compile(r"https?://|www\.")
_YEAR = re.compile(r"\b(?:19|20)\d{2}\b")
_DOT_LEADER = re.compile(r"(?:\.\s?){6,}|…{2,}")
_CITATION = re.compile(r"\b(?:Retrieved|Accessed|et al\.|Ibid\.?|Source on file|E-mail communication|Reporting, \w+ \d)", re.I)


def looks_like_references(text: str, settings: Settings) -> bool:
    """A reference list, footnotes or a table of contents: never tagged."""
    words = len(text.split()) or 1
    density = (3 * len(_URL.findall(text)) + len(_YEAR.findall(text)) + 2 * len(_CITATION.findall(text))) / words
    return density > settings.tag_reference_density or bool(_DOT_LEADER.search(text))


@dataclass
class TextTags:
    """What tagging reads from a chunk's text alone (no vector needed): the taxonomy terms
    it contains, whether it is a reference list, and its passage type.  Computed apart so
    that ingestion can work it out while the model embeds the same chunks."""

    term_counts: np.ndarray  # (themes, 2): distinct terms and related words found, per theme
    references: bool
    passage_type: str


def text_tags(chunks: list[Chunk], taxonomy: Taxonomy, settings: Settings) -> list[TextTags]:
    matcher = taxonomy.matcher()
    tags = []
    for chunk in chunks:
        references = looks_like_references(chunk.text, settings)
        tags.append(
            TextTags(
                term_counts=matcher.counts(chunk.text),
                references=references,
                passage_type="" if references else _best_passage_type(chunk.text, chunk.heading, settings.passage_type_min_score),
            )
        )
    return tags


def theme_scores(term_counts: list[np.ndarray], vectors: np.ndarray, taxonomy: Taxonomy, settings: Settings,
                 embed: Embed | None = None) -> np.ndarray:
    """The combined score of every text (rows) for every theme (columns), from the texts'
    vectors and the taxonomy terms found in them (``TextTags.term_counts``)."""
    if not len(term_counts):
        return np.zeros((0, len(taxonomy.themes)), np.float32)
    similarity = np.asarray(vectors, dtype=np.float32) @ theme_vectors(taxonomy, settings, embed).T
    counts = np.stack(term_counts)
    support = np.minimum(counts[:, :, 0] + settings.theme_related_weight * counts[:, :, 1], settings.theme_term_cap)
    return similarity + settings.theme_term_weight * support


def tag_chunks(
    chunks: list[Chunk],
    vectors: np.ndarray,
    taxonomy: Taxonomy,
    settings: Settings,
    embed: Embed | None = None,
    text_part: list[TextTags] | None = None,
) -> list[tuple[list[str], str]]:
    """``(themes, passage_type)`` for each chunk, from its stored embedding vector and text.

    Pure: nothing is written.  ``vectors`` are the chunks' embedding vectors (unit length,
    as computed at ingest); theme vectors are embedded once and cached (``embed`` may
    supply them from a cache).  ``text_part`` is ``text_tags(chunks, ...)`` when it was
    worked out beforehand.
    """
    if not chunks:
        return []
    if len(chunks) != len(vectors):
        raise ValueError(f"{len(chunks)} chunks but {len(vectors)} vectors")
    if text_part is None:
        text_part = text_tags(chunks, taxonomy, settings)
    scores = theme_scores([t.term_counts for t in text_part], vectors, taxonomy, settings, embed)
    thresholds = np.array(
        [t.threshold if t.threshold is not None else settings.theme_threshold for t in taxonomy.themes],
        dtype=np.float32,
    )
    ids = taxonomy.ids
    results: list[tuple[list[str], str]] = []
    for i, part in enumerate(text_part):
        if part.references:
            results.append(([], ""))
            continue
        above = np.flatnonzero(scores[i] >= thresholds)
        best = above[np.argsort(-scores[i, above], kind="stable")][: settings.theme_max_per_chunk]
        themes = [ids[j] for j in sorted(best)]
        results.append((themes, part.passage_type))
    return results


# --- passage types ------------------------------------------------------------------------

_IMPERATIVES = "|".join(
    word.capitalize()
    for word in (
        "ensure establish strengthen develop increase enhance provide expand adopt collect publish improve "
        "implement clarify advocate explore consider create promote support include raise reduce allocate "
        "build review define train call contact report avoid refer follow talk remember use document note "
        "ask keep make take try be never please"
    ).split()
) + "|Do not|Don't"
# An instruction: a capitalised verb at the start of the text, a line, a list item or a
# sentence ("2013 – 2021 Ensure that ...", "(a) To strengthen ...", "» Call 911 ...").
_INSTRUCTION = re.compile(
    r"(?:^|[•»▪●◦\-–]\s*|\bo\s|\(\w{1,3}\)\s*|\d[.)]?\s|[.;:]\s)(?:To )?(?:" + _IMPERATIVES + r")\b(?!\w)", re.M
)
# (pattern, points per match, most matches counted)
_TYPE_CUES: dict[str, list[tuple[re.Pattern, float, int]]] = {
    "recommendation": [
        (re.compile(r"\brecommend(?:s|ed|ing|ations?)?\b", re.I), 1.0, 3),
        (re.compile(r"\bshould\b", re.I), 1.0, 3),
        (re.compile(r"\b(?:must|needs? to|ought to|have to)\b", re.I), 0.5, 3),
        (re.compile(r"\b(?:calls? (?:up)?on|urges?|invites?|encourages?|requests?|requested that|asked \w+ to)\b(?! (?:for|from) )", re.I), 1.0, 3),
        (re.compile(r"\bsuggested (?:government )?actions?\b|\bkey actions?\b|\bmanagement response\b", re.I), 2.0, 1),
        (re.compile(r"\bit is (?:important|vital|essential|crucial|critical|necessary|advisable|good practice) (?:to|that)\b", re.I), 1.0, 2),
        (_INSTRUCTION, 0.75, 4),
    ],
    "lesson": [
        (re.compile(r"\blessons?(?:[- ]learn\w*)?\b", re.I), 1.5, 2),
        (re.compile(r"\b(?:challenges?|obstacles?|constraints?|barriers?|bottlenecks?|shortcomings?|weakness(?:es)?)\b", re.I), 0.5, 4),
        (re.compile(r"\bgaps?\b", re.I), 0.5, 2),
        (re.compile(r"\b(?:worked well|did not work|proved|proven|has shown|have shown|demonstrated|was (?:crucial|key|essential|instrumental|critical))\b", re.I), 1.0, 3),
        (re.compile(r"\b(?:success factors?|key factors?|contributed to|led to|resulted in|hinder\w*|hamper\w*|undermin\w*|imped\w*)\b", re.I), 0.75, 3),
        (re.compile(r"\bconclu(?:de|ded|des|sions?)\b", re.I), 0.5, 2),
        (re.compile(r"\b(?:helpful|valuable|sustainab\w*|ownership|due to)\b", re.I), 0.25, 3),
    ],
    "practice": [
        (re.compile(r"\b(?:good|promising|best|effective|innovative|smart) practice\b", re.I), 2.0, 2),
        (re.compile(r"\b(?:good|promising|best|effective|innovative|smart) practices\b", re.I), 1.0, 2),
        (re.compile(r"\b(?:innovative|pilot(?:ed|s)?|model)\b", re.I), 0.5, 2),
        (re.compile(r"\bthis practice\b|\bworked well\b|\bhas been (?:quite |very )?(?:helpful|useful|successful|effective)\b", re.I), 1.0, 2),
        (re.compile(r"\b(?:helped|enabled|allowed|improved|strengthened)\b", re.I), 0.4, 3),
    ],
    "definition": [
        (re.compile(r"[\"“'‘][^\"”'’]{1,60}[\"”'’]\s*(?:means|refers to|denotes|encompasses|shall mean|is defined)\b", re.I), 2.0, 3),
        (re.compile(r"\bdefinitions?:|\b(?:is|are) defined as\b", re.I), 2.0, 2),
        (re.compile(r"\bfor the purposes? of (?:this|the present)\b|\brefers? to\b|\breferring to\b", re.I), 1.0, 3),
        (re.compile(r"\bArticles?\s+(?:[IVXLC]+|\d+)\b"), 1.0, 3),
        (re.compile(r"\b(?:States? Part(?:y|ies)|Member States?|Contracting Part(?:y|ies))\b[^.;]{0,80}\bshall\b", re.I), 1.5, 3),
        (re.compile(r"\bshall\b", re.I), 0.5, 4),
        (re.compile(r"\b(?:Sections?|Articles?|Chapter)\s+\d+[^.;]{0,60}\b(?:Act|Code|Law|Constitution|Regulations?|Instrument)\b"), 1.0, 3),
    ],
    "finding": [
        (re.compile(r"\d(?:[\d,.]*\d)?\s?(?:%|per ?cent\b|million\b|billion\b)", re.I), 0.75, 4),
        (re.compile(r"[$€£]\s?\d|\bUS\$|\bUSD\s?\d"), 0.5, 2),
        (re.compile(r"(?<![\d.,])(?!(?:19|20)\d\d\b)\d{1,3}(?:,\d{3})+(?![\d,])|(?<![\d.,/])(?!(?:19|20)\d\d\b)\d{2,}(?![\d,/])"), 0.3, 5),
        (re.compile(r"\b(?:found|find(?:s|ings?)?|show(?:s|ed|n)?|reveal(?:s|ed)?|indicat(?:es|ed)|according to|reported(?:ly)?|allegedly|noted|documented|recorded|estimated?|survey(?:s|ed)?|stud(?:y|ies)|research)\b", re.I), 0.6, 4),
        (re.compile(r"\b(?:In|By|Since|Between|During) (?:19|20)\d\d\b"), 0.4, 2),
        (re.compile(r"\b(?:increased?|decreased?|rose|fell|declined|doubled|tripled|up from|down from|compared (?:with|to)|more than|less than|majority of)\b", re.I), 0.4, 3),
    ],
}
_HEADING_CUES: dict[str, tuple[re.Pattern, float]] = {
    "recommendation": (re.compile(r"recommend|suggested (?:government )?action|what (?:to|can you) do|how to (?:report|respond)|\btips\b|management response", re.I), 2.0),
    "lesson": (re.compile(r"lessons?|challenge|conclusion", re.I), 2.0),
    "practice": (re.compile(r"practice", re.I), 3.0),
    "definition": (re.compile(r"definition|glossary|^article\b|laws and regulations", re.I), 2.0),
    "finding": (re.compile(r"finding|results|achievement|overview of|statistics", re.I), 1.5),
}


def _lowercase_twin(pattern: re.Pattern) -> tuple[re.Pattern, bool]:
    """``(pattern, on_lower)``: a case-insensitive pattern becomes a case-sensitive one to
    run on the lower-cased text (the same matches, found about half again as fast: tagging
    runs while the model embeds, on the same cores); others stay as they are."""
    if pattern.flags & re.IGNORECASE and not re.search(r"\\[A-Z]", pattern.pattern):
        return re.compile(pattern.pattern.lower(), pattern.flags & ~re.IGNORECASE), True
    return pattern, False


_FAST_TYPE_CUES = {
    kind: [(*_lowercase_twin(pattern), points, most) for pattern, points, most in cues]
    for kind, cues in _TYPE_CUES.items()
}


def passage_type_scores(text: str, heading: str = "") -> dict[str, float]:
    """Points per passage type (see the module docstring)."""
    scores: dict[str, float] = {}
    title_like = bool(heading) and len(heading.split()) <= 9  # not a paragraph or footnote start
    lower = text.lower()
    for kind, cues in _FAST_TYPE_CUES.items():
        total = 0.0
        for pattern, on_lower, points, most in cues:
            total += points * min(most, len(pattern.findall(lower if on_lower else text)))
        cue = _HEADING_CUES.get(kind)
        if title_like and cue and cue[0].search(heading):
            total += cue[1]
        scores[kind] = total
    return scores


def passage_type(text: str, heading: str = "", settings: Settings | None = None) -> str:
    """The passage type of a chunk: lesson, practice, recommendation, finding, definition or ""."""
    if settings is not None and looks_like_references(text, settings):
        return ""
    return _best_passage_type(text, heading, settings.passage_type_min_score if settings is not None else 2.0)


def _best_passage_type(text: str, heading: str, minimum: float) -> str:
    scores = passage_type_scores(text, heading)
    best = max(_TYPE_PRIORITY, key=lambda kind: (scores[kind], -_TYPE_PRIORITY.index(kind)))
    return best if scores[best] >= minimum else ""


# ======================================================================================
# The knowledge base side: tagging at ingest and re-tagging
# ======================================================================================


def tag_text_part(settings: Settings, chunks: list[Chunk]) -> tuple[Taxonomy | None, list[TextTags] | None]:
    """The text-only half of tagging new chunks (see ``TextTags``), with the taxonomy it
    used; ``(None, None)`` when the taxonomy file is broken (logged: an ingest goes on)."""
    try:
        taxonomy = load_taxonomy(settings)
    except TaxonomyError as error:
        log.warning("passages stored without themes: %s", error)
        return None, None
    return taxonomy, text_tags(chunks, taxonomy, settings)


def tag_new_chunks(kb, chunks: list[Chunk], vectors: np.ndarray,
                   text_part: tuple[Taxonomy | None, list[TextTags] | None] | None = None) -> None:
    """Fill ``chunk.themes`` and ``chunk.passage_type`` before a document is stored.

    ``text_part`` is ``tag_text_part(kb.settings, chunks)`` when it was worked out while
    the chunks were embedded.  A broken taxonomy file must not stop an ingest: the chunks
    are then stored untagged (with a warning in the log) and ``kb retag`` tags them once
    the file is fixed.
    """
    taxonomy, text_part_tags = text_part if text_part is not None else tag_text_part(kb.settings, chunks)
    if taxonomy is None:
        for chunk in chunks:
            chunk.themes, chunk.passage_type = [], passage_type(chunk.text, chunk.heading, kb.settings)
        return
    tags = tag_chunks(chunks, vectors, taxonomy, kb.settings, embed=_ledger_embed(kb), text_part=text_part_tags)
    for chunk, (themes, ptype) in zip(chunks, tags):
        chunk.themes, chunk.passage_type = themes, ptype


def _ledger_embed(kb) -> Embed:
    """Theme texts embedded through the knowledge base's vector cache (the ledger), so a
    later process (e.g. ``kb retag``) finds them without loading the model."""
    return lambda texts: kb.embed_cached(list(texts))[0]


@dataclass
class RetagReport:
    chunks: int = 0
    changed: int = 0
    themes: dict[str, int] = field(default_factory=dict)  # theme id -> tagged chunks
    types: dict[str, int] = field(default_factory=dict)  # passage type -> chunks
    taxonomy: str = ""

    def to_dict(self) -> dict:
        return {"chunks": self.chunks, "changed": self.changed, "themes": self.themes, "types": self.types, "taxonomy": self.taxonomy}


def retag_knowledge_base(kb, taxonomy: Taxonomy | None = None, batch: int = 2000, lock: bool = True) -> RetagReport:
    """Re-tag every stored chunk (after the taxonomy or the tagging settings changed),
    from the vectors cached in the ledger; writes the ledger and the Chroma metadata of
    the chunks whose tags changed.  Holds the ingest lock of the data folder (raises
    ``ingest.pipeline.IngestBusy`` while an ingest runs) unless ``lock`` is false."""
    taxonomy = taxonomy or load_taxonomy(kb.settings)
    if not lock:
        return _retag(kb, taxonomy, batch)
    from ingest.pipeline import ingest_lock

    with ingest_lock(kb.settings.lock_path):
        return _retag(kb, taxonomy, batch)


def _retag(kb, taxonomy: Taxonomy, batch: int) -> RetagReport:
    from kb.knowledge_base import chunk_from_row
    from kb.store import chunk_metadata

    report = RetagReport(taxonomy=taxonomy.source, themes={t: 0 for t in taxonomy.ids}, types={t: 0 for t in (*PASSAGE_TYPES, "")})
    rows = kb.ledger._db.execute(
        "SELECT c.* FROM chunks c JOIN documents d ON d.doc_id = c.doc_id ORDER BY c.doc_id, c.ordinal"
    ).fetchall()
    documents = {d["doc_id"]: d for d in kb.ledger.document_rows()}
    embed = _ledger_embed(kb)
    for start in range(0, len(rows), batch):
        part = rows[start : start + batch]
        chunks = [chunk_from_row(r) for r in part]
        keys = [r["embedding_key"] for r in part]
        cached = kb.ledger.cached_vectors(list(dict.fromkeys(keys)))
        missing = [i for i, k in enumerate(keys) if k not in cached]
        if missing:  # should not happen; embed what the cache lost
            from kb.knowledge_base import embedding_text

            meta = {d: kb.ledger.document(d) for d in {chunks[i].doc_id for i in missing}}
            texts = [embedding_text(chunks[i], meta[chunks[i].doc_id]) for i in missing]
            fresh, fresh_keys, _ = kb.embed_cached(texts)
            for i, vector in zip(missing, fresh):
                cached[keys[i]] = vector
        vectors = np.vstack([cached[k] for k in keys]).astype(np.float32)
        tags = tag_chunks(chunks, vectors, taxonomy, kb.settings, embed=embed)
        changed: dict[str, tuple[list[str], str]] = {}
        updates: list[tuple[Chunk, list[str]]] = []
        for chunk, (themes, ptype) in zip(chunks, tags):
            report.chunks += 1
            for theme in themes:
                report.themes[theme] = report.themes.get(theme, 0) + 1
            report.types[ptype] = report.types.get(ptype, 0) + 1
            if themes != chunk.themes or ptype != chunk.passage_type:
                removed = [t for t in chunk.themes if t not in themes]
                chunk.themes, chunk.passage_type = themes, ptype
                changed[chunk.chunk_id] = (themes, ptype)
                updates.append((chunk, removed))
        if changed:
            kb.ledger.set_chunk_tags(changed)
            _update_chroma(kb, updates, documents, chunk_metadata)
            report.changed += len(changed)
    return report


def _update_chroma(kb, updates: list[tuple[Chunk, list[str]]], documents: dict, chunk_metadata) -> None:
    """Rewrite the metadata of re-tagged chunks; themes a chunk lost are deleted (Chroma
    merges metadata on update, and a ``None`` value removes a key)."""
    from kb.ledger import _document_from_row

    ids, metadatas = [], []
    for chunk, removed in updates:
        row = documents.get(chunk.doc_id)
        if row is None or row.get("status") != "ready":
            continue
        meta = chunk_metadata(chunk, _document_from_row(row))
        for theme in removed:
            meta[f"theme_{theme}"] = None
        ids.append(chunk.chunk_id)
        metadatas.append(meta)
    collection = kb.store.collection
    existing = set()
    for start in range(0, len(ids), 500):
        existing.update(collection.get(ids=ids[start : start + 500], include=[])["ids"])
    pairs = [(i, m) for i, m in zip(ids, metadatas) if i in existing]
    for start in range(0, len(pairs), 500):
        part = pairs[start : start + 500]
        collection.update(ids=[i for i, _ in part], metadatas=[m for _, m in part])

