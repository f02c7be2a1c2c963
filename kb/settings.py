"""Every default and every ``KB_*`` environment variable, in one place.

Nothing else in the project knows a default: modules take a ``Settings`` (or read
``get_settings()``) instead of hard-coding numbers.  Prompts for the optional LLM
backend live in ``kb/prompts.py``; everything tunable lives here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

# Make sure no library phones home or tries to download a model, whatever imports first.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class SettingsError(ValueError):
    """An environment variable holds a value its setting cannot take."""


def _convert(raw: str, current):
    """``raw`` as the type of the default ``current``."""
    if isinstance(current, Path):
        return Path(raw)
    if isinstance(current, bool):
        return raw.lower() in {"1", "true", "yes", "on"}
    if isinstance(current, int):
        return int(raw)
    if isinstance(current, float):
        return float(raw)
    return raw


# Settings that an environment variable may override: field name → variable.
ENV_VARIABLES: dict[str, str] = {
    "data_dir": "KB_DATA_DIR",
    "documents_dir": "KB_DOCUMENTS_DIR",
    "chroma_url": "KB_CHROMA_URL",
    "collection": "KB_COLLECTION",
    "embed_backend": "KB_EMBED_BACKEND",
    "query_backend": "KB_QUERY_BACKEND",
    "models_folder": "KB_MODELS_DIR",
    "embed_batch_size": "KB_EMBED_BATCH_SIZE",
    "chunk_tokens": "KB_CHUNK_TOKENS",
    "chunk_overlap_tokens": "KB_CHUNK_OVERLAP",
    "extract_timeout_s": "KB_EXTRACT_TIMEOUT",
    "extract_memory_mb": "KB_EXTRACT_MEMORY_MB",
    "extract_read_ahead": "KB_EXTRACT_READ_AHEAD",
    "upload_max_mb": "KB_UPLOAD_MAX_MB",
    "top_k": "KB_TOP_K",
    "dense_source": "KB_DENSE_SOURCE",
    "fusion": "KB_FUSION",
    "abstain_threshold": "KB_ABSTAIN_THRESHOLD",
    "llm": "KB_LLM",
    "llm_base_url": "KB_LLM_BASE_URL",
    "llm_api_key": "KB_LLM_API_KEY",
    "staff_password": "KB_STAFF_PASSWORD",
    "themes_file": "KB_THEMES_FILE",
}


# Long forms of organisation names that questions use instead of the acronym on the
# documents' labels (kb/mentions.py): long form → acronym.
ORGANISATION_ALIASES: dict[str, str] = {
    "Office on Drugs and Crime": "UNODC",
    "International Organization for Migration": "IOM",
    "Children's Fund": "UNICEF",
    "International Labour Organization": "ILO",
    "International Labour Office": "ILO",
    "Department of Labor": "DOL",
    "Labor Department": "DOL",
    "Bureau of International Labor Affairs": "ILAB",
    "Homeland Security": "DHS",
    "High Commissioner for Human Rights": "OHCHR",
    "Economic and Social Council": "ECOSOC",
}
# Names on labels too general to say whose document a question means.
GENERIC_ORGANISATION_NAMES: tuple[str, ...] = ("United Nations", "Government", "European Union")


@dataclass(frozen=True)
class Settings:
    """All tunable defaults.  ``Settings.from_env()`` applies ``KB_*`` overrides."""

    # --- places -------------------------------------------------------------------
    data_dir: Path = Path(".kb")  # KB_DATA_DIR: everything written at run time
    documents_dir: Path = Path("documents")  # KB_DOCUMENTS_DIR: the source PDFs
    chroma_url: str = ""  # KB_CHROMA_URL: use a Chroma server instead of the embedded store
    collection: str = "passages"  # KB_COLLECTION

    # --- embedding ----------------------------------------------------------------
    # All three backends run the same model (torch: the reference; onnx: exported once to
    # ONNX fp32, the same vectors to a cosine of 0.99999; onnx-int8: that export dynamically
    # quantised, cosine 0.994, embeds twice as fast), so their vectors can be compared with
    # one another and passages and questions may be embedded by different backends.
    # KB_EMBED_BACKEND: passages at ingest, the bulk of the work: int8 by default.
    embed_backend: str = "onnx-int8"
    # KB_QUERY_BACKEND: questions and the sentences an answer is composed from (a few short
    # texts per question): full precision.  On the development set, int8 passages with fp32
    # questions retrieved as well as fp32 throughout (recall@5 0.870 / 0.852, MRR 0.746 /
    # 0.758, answer hit 0.685 both), int8 throughout less well (0.833 / 0.729 / 0.648).
    query_backend: str = "onnx"
    models_folder: str = ""  # KB_MODELS_DIR: where ONNX exports are cached (default: <data dir>/models)
    # KB_EMBED_BATCH_SIZE; 0: the backend's own (32, but 4 for onnx-int8: its dynamically
    # quantised layers ran 10-20% faster on small batches here, bench/embed.py --batch-size)
    embed_batch_size: int = 0
    embed_dim: int = 384

    # --- ingestion ----------------------------------------------------------------
    chunk_tokens: int = 200  # KB_CHUNK_TOKENS: model word pieces per chunk (model limit 256)
    chunk_overlap_tokens: int = 40  # KB_CHUNK_OVERLAP
    header_footer_lines: int = 3  # lines at the top/bottom of a page examined for repeats
    header_footer_min_share: float = 0.5  # a line repeated on this share of pages is dropped
    min_text_chars_per_page: int = 25  # below this on every page: image-only, needs OCR
    extract_timeout_s: float = 300.0  # KB_EXTRACT_TIMEOUT: per file, in a worker process
    extract_memory_mb: int = 2048  # KB_EXTRACT_MEMORY_MB: address-space limit of the worker
    extract_read_ahead: int = 3  # KB_EXTRACT_READ_AHEAD: files read ahead of the embedder (memory: their text)
    max_pages: int = 5000  # a PDF claiming more pages is refused
    upload_max_mb: int = 100  # KB_UPLOAD_MAX_MB

    # --- retrieval ----------------------------------------------------------------
    top_k: int = 5  # KB_TOP_K: passages returned by default
    candidates: int = 60  # per retriever, before fusion
    fusion: str = "convex"  # KB_FUSION: rrf (reciprocal rank) | convex (scaled scores mixed)
    dense_share: float = 0.7  # convex fusion: weight of the dense score
    rrf_k: int = 60  # reciprocal rank fusion constant
    reference_penalty: float = 1.5  # scores shrink by this × the reference density (≥ 0.5 kept)
    dense_weight: float = 1.0
    keyword_weight: float = 1.0
    neighbour_share: float = 0.0  # share of a neighbouring chunk's score a passage gains
    max_per_document: int = 4  # diversity: at most this many passages of one document in top k
    max_per_page: int = 2  # ... and of one page (its overlapping chunks say much the same)
    # A multi-part question is also searched part by part (kb/query_parts.py); a passage gains
    # this share of its best fused score for a part.  On the development set, with the page
    # limit: recall@5 0.889 → 0.926, MRR 0.751 → 0.760 (0.907 / 0.755 at 0.15 and 0.45).
    part_share: float = 0.3
    # A question that names an organisation ("according to DOL", "UNODC's survey"; see
    # kb/mentions.py) prefers its documents: their passages gain this share of the best
    # fused score.  Development set: MRR 0.760 → 0.766; two-corpus library 0.742 → 0.755
    # (the same from 0.1 to 0.5).
    organisation_boost: float = 0.25
    dense_source: str = "chroma"  # KB_DENSE_SOURCE: chroma (HNSW) | memory (exact, in-process)
    bm25_k1: float = 1.2
    bm25_b: float = 0.75

    # --- answers ------------------------------------------------------------------
    answer_max_sentences: int = 6
    answer_list_items: int = 6  # list items quoted under a sentence that introduces them
    answer_context: bool = True  # a supporting sentence is quoted with the sentence before it
    answer_candidate_passages: int = 8  # passages whose sentences may be quoted
    answer_sentences_embedded: int = 18  # most promising sentences scored with the model
    answer_lesson_promise: float = 0.15  # lesson-like sentences go first to the model when asked what to do
    answer_sentence_chars: int = 300  # a sentence is scored on this many characters at most
    answer_sentence_batch: int = 4  # sentences of similar length embedded together (4 ran a little faster than 8)
    sentence_similarity_weight: float = 0.6  # sentence score = w1 * cosine to the question
    sentence_overlap_weight: float = 0.4  #                   + w2 * rare-term overlap
    passage_score_weight: float = 0.2  #                   + w3 * the passage's retrieval score
    lesson_bonus: float = 0.08  # for lesson/recommendation sentences when asked what works
    number_bonus: float = 0.05  # for sentences with figures when asked how many / how much
    answer_min_relative_score: float = 0.7  # later sentences need this share of the best score
    abstain_threshold: float = 0.72  # KB_ABSTAIN_THRESHOLD: abstain below this relevance
    abstain_passages: int = 3  # relevance: question-term coverage of this many top passages
    related_reading: int = 3
    near_duplicate_similarity: float = 0.9

    # --- tagging: themes and passage types (kb/themes.py) ---------------------------
    themes_file: str = ""  # KB_THEMES_FILE: the taxonomy (default: kb/data/themes.json)
    theme_threshold: float = 0.54  # tag when cosine to the theme + term support reaches this
    theme_term_weight: float = 0.2  # term support = weight * min(terms + r * related words, cap)
    theme_related_weight: float = 0.25  # r: a related word counts this share of a term
    theme_term_cap: float = 2.0
    theme_max_per_chunk: int = 3
    passage_type_min_score: float = 2.0  # cue points a passage type needs (else none)
    tag_reference_density: float = 0.06  # chunks reading like references get no tags

    # --- optional LLM backend -----------------------------------------------------
    llm: str = ""  # KB_LLM: "" (off), "ollama:MODEL" or "openai:MODEL"
    llm_base_url: str = ""  # KB_LLM_BASE_URL
    llm_api_key: str = ""  # KB_LLM_API_KEY (an OpenAI-compatible server may ignore it)
    llm_temperature: float = 0.0
    llm_support_threshold: float = 0.55  # a generated sentence needs this similarity to its source

    # --- app ------------------------------------------------------------------------
    staff_password: str = field(default="", repr=False)  # KB_STAFF_PASSWORD (never logged)
    staff_max_attempts: int = 5  # failed staff logins before a pause
    staff_lockout_s: int = 60

    @classmethod
    def from_env(cls, **overrides) -> "Settings":
        base = cls()
        values = {}
        for name, env_name in ENV_VARIABLES.items():
            raw = os.environ.get(env_name)
            if raw is None or raw == "":
                continue
            current = getattr(base, name)
            try:
                values[name] = _convert(raw, current)
            except ValueError:
                raise SettingsError(
                    f"{env_name}={raw!r} is not valid: a {type(current).__name__} is expected"
                ) from None
        values.update(overrides)
        return replace(base, **values)

    # Derived places inside the data folder.
    @property
    def chroma_dir(self) -> Path:
        return self.data_dir / "chroma"

    @property
    def ledger_path(self) -> Path:
        return self.data_dir / "ledger.sqlite"

    @property
    def briefs_dir(self) -> Path:
        return self.data_dir / "briefs"

    @property
    def models_dir(self) -> Path:
        return Path(self.models_folder) if self.models_folder else self.data_dir / "models"

    @property
    def lock_path(self) -> Path:
        return self.data_dir / "ingest.lock"


def get_settings(**overrides) -> Settings:
    """Settings from the environment, with optional explicit overrides."""
    return Settings.from_env(**overrides)
