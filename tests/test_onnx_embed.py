"""The ONNX embedding backends (``onnx`` and ``onnx-int8``) against the torch reference.

Real model, real export: the packaged all-MiniLM-L6-v2 is exported (and quantised) once
per test module into a temporary models folder, offline.  fp32 must agree with
sentence-transformers to a cosine of 0.999 per text; int8 to 0.98 on average.  The
two-process export race is marked slow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from kb.embed import MAX_WORD_PIECES, TorchEmbedder, get_embedder, load_tokenizer
from kb.onnx_embed import OnnxEmbedder, _check, ensure_onnx_model, model_key, onnx_model_file
from kb.settings import get_settings

REPO = Path(__file__).resolve().parents[1]

SENTENCES = [
    "Victims of human trafficking were referred to specialised shelters and offered legal aid.",
    "What lessons were learned about reintegration support for returning migrants?",
    "The National Referral Mechanism is the framework for identifying and referring potential "
    "victims of modern slavery in the UK.",
    "Forced labour in the brick kilns of South Asia often involves debt bondage.",
    "Child protection systems need sustained funding.",
    "Caseworkers reported that psychosocial counselling improved outcomes for survivors.",
    "The evaluation recommends stronger coordination between border agencies and NGOs.",
    "How many children were identified as victims in West Africa in 2022?",
    "Convenience store employees can recognise signs of trafficking among customers.",
    "Article 3 of the Optional Protocol defines the sale of children.",
    "Quarterly report on arms trafficking, illicit financial flows and smuggling of migrants in Haiti.",
    "Cocoa harvesting in Côte d'Ivoire and Ghana still relies on child labour.",
    "Prevention of sexual exploitation and abuse remains a priority for UNICEF.",
    "Teachers and school resource officers should know how to respond when a student discloses abuse.",
    "Synthetic data protects the privacy of survivors while enabling research.",
    "Budget: USD 2.4 million over 36 months (2019-2022).",
    "Accountability to affected populations means listening to the people we serve.",
    "gang violence displacement Port-au-Prince",
    "The weather was pleasant and the football match ended in a draw.",
    "Ensure that child victims and witnesses are treated in a caring and sensitive manner "
    "throughout the justice process.",
    "Returnees received cash grants, vocational training and help starting small businesses, "
    "but many struggled to find stable income.",
    "Trafficking",
]

_WORDS = "survivors in district nine asked for safe housing, legal advice and work permits".split()
LONG_TEXT = " ".join(_WORDS[i % len(_WORDS)] for i in range(600))


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1)


@pytest.fixture(scope="module")
def base_settings(tmp_path_factory):
    data = tmp_path_factory.mktemp("onnx-data")
    # A temporary file left behind by an export that was killed: the next export removes it.
    (data / "models").mkdir()
    (data / "models" / ".minilm-fp32-000000000000.123-deadbeef.tmp.onnx").write_bytes(b"partial")
    # its own models folder, not the one the other tests share: these tests watch the export
    return replace(get_settings(), data_dir=data, models_folder="", embed_backend="torch", embed_batch_size=32)


@pytest.fixture(scope="module")
def int8(base_settings) -> OnnxEmbedder:
    """Built first: exports fp32, then quantises it."""
    return OnnxEmbedder(base_settings, quantised=True)


@pytest.fixture(scope="module")
def fp32(base_settings, int8) -> OnnxEmbedder:
    return OnnxEmbedder(base_settings, quantised=False)


@pytest.fixture(scope="module")
def torch_embedder(base_settings) -> TorchEmbedder:
    return TorchEmbedder(base_settings)


@pytest.fixture(scope="module")
def reference(torch_embedder) -> np.ndarray:
    return torch_embedder.embed(SENTENCES)


# --- agreement with torch --------------------------------------------------------------


def test_fp32_matches_torch(fp32, reference):
    cosines = _cosines(fp32.embed(SENTENCES), reference)
    assert cosines.min() >= 0.999, cosines


def test_int8_close_to_torch(int8, reference):
    cosines = _cosines(int8.embed(SENTENCES), reference)
    print(f"int8 vs torch on {len(SENTENCES)} sentences: mean {cosines.mean():.4f}, min {cosines.min():.4f}")
    assert cosines.mean() >= 0.98, cosines
    assert cosines.min() >= 0.95, cosines


def test_int8_keeps_the_ranking(int8, reference):
    """Each sentence's nearest neighbour under torch stays among its 3 nearest under int8
    (near ties may swap places), and most keep first place."""
    vectors = int8.embed(SENTENCES)
    torch_sims, int8_sims = reference @ reference.T, vectors @ vectors.T
    np.fill_diagonal(torch_sims, -1)
    np.fill_diagonal(int8_sims, -1)
    nearest = torch_sims.argmax(axis=1)
    top3 = np.argsort(-int8_sims, axis=1)[:, :3]
    assert all(n in row for n, row in zip(nearest, top3))
    assert (nearest == top3[:, 0]).mean() >= 0.75


# --- output contract -------------------------------------------------------------------


@pytest.mark.parametrize("which", ["fp32", "int8"])
def test_output_shape_dtype_and_norm(which, request):
    embedder = request.getfixturevalue(which)
    vectors = embedder.embed(SENTENCES[:5])
    assert vectors.shape == (5, 384) == (5, embedder.dim)
    assert vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert embedder.name == ("onnx" if which == "fp32" else "onnx-int8")


@pytest.mark.parametrize("which", ["fp32", "int8"])
def test_empty_list(which, request):
    vectors = request.getfixturevalue(which).embed([])
    assert vectors.shape == (0, 384)
    assert vectors.dtype == np.float32


def test_long_text_is_truncated_like_torch(fp32, int8, torch_embedder):
    assert len(LONG_TEXT.split()) == 600
    assert len(load_tokenizer().encode(LONG_TEXT).ids) > MAX_WORD_PIECES
    longer = LONG_TEXT + " and a great many further words that the model never sees" * 20
    vectors = fp32.embed([LONG_TEXT, longer])
    assert vectors.shape == (2, 384)
    # Everything past 256 word pieces is cut off, so the extra words change nothing.
    assert _cosines(vectors[:1], vectors[1:])[0] >= 0.99999
    assert _cosines(vectors[:1], torch_embedder.embed([LONG_TEXT]))[0] >= 0.999
    assert int8.embed([LONG_TEXT]).shape == (1, 384)


def test_batches_padding_and_order(base_settings, fp32):
    """Rows come back in input order whatever the length sorting and batching did, and
    padding inside a batch does not change a text's vector."""
    small_batches = OnnxEmbedder(replace(base_settings, embed_batch_size=3))
    texts = [SENTENCES[3], LONG_TEXT, "", SENTENCES[17], SENTENCES[2], SENTENCES[3], "x"]
    batched = small_batches.embed(texts)
    alone = np.vstack([fp32.embed([text]) for text in texts])
    assert _cosines(batched, alone).min() >= 0.9999
    assert np.allclose(batched[0], batched[5], atol=1e-5)
    assert np.allclose(fp32.embed(texts), batched, atol=1e-4)


# --- export cache ------------------------------------------------------------------------


def test_cache_is_reused(base_settings, fp32, int8):
    models = base_settings.models_dir
    files = {p: p.stat().st_mtime_ns for p in (fp32.model_file, int8.model_file)}
    assert fp32.model_file == onnx_model_file(models, False)
    assert int8.model_file == onnx_model_file(models, True)
    assert model_key() in fp32.model_file.name
    again = OnnxEmbedder(base_settings, quantised=True)
    again_fp32 = OnnxEmbedder(base_settings, quantised=False)
    assert again.export_seconds == 0.0 and again_fp32.export_seconds == 0.0
    assert again.model_file == int8.model_file and again_fp32.model_file == fp32.model_file
    assert {p: p.stat().st_mtime_ns for p in files} == files
    assert ensure_onnx_model(models, True) == (int8.model_file, 0.0)


def test_no_temporary_files_left(base_settings, fp32, int8):
    names = sorted(p.name for p in base_settings.models_dir.iterdir())
    assert names == sorted([".onnx-export.lock", fp32.model_file.name, int8.model_file.name])
    assert int8.export_seconds > 0
    assert int8.model_file.stat().st_size < fp32.model_file.stat().st_size / 3


def test_a_damaged_cached_file_is_exported_again(tmp_path, base_settings, fp32, int8, reference):
    settings = replace(base_settings, data_dir=tmp_path)
    settings.models_dir.mkdir()
    (settings.models_dir / fp32.model_file.name).write_bytes(fp32.model_file.read_bytes())
    damaged = settings.models_dir / int8.model_file.name
    damaged.write_bytes(b"not an onnx model")
    embedder = OnnxEmbedder(settings, quantised=True)
    assert embedder.export_seconds > 0  # quantised afresh from the (intact) fp32 file
    assert damaged.stat().st_size > 1_000_000
    assert _cosines(embedder.embed(SENTENCES), reference).mean() >= 0.98


def test_a_wrong_export_is_refused(fp32):
    wrong = np.eye(3, 384, k=7, dtype=np.float32)
    with pytest.raises(RuntimeError, match="disagrees with PyTorch"):
        _check(fp32.model_file, False, wrong)


# --- through kb.embed.get_embedder --------------------------------------------------------


@pytest.mark.parametrize("backend", ["torch", "onnx", "onnx-int8"])
def test_get_embedder_each_backend(base_settings, fp32, int8, reference, backend):
    settings = replace(base_settings, embed_backend=backend)
    embedder = get_embedder(settings)
    assert embedder is get_embedder(settings)
    assert embedder.name == backend and embedder.dim == 384
    if backend != "torch":
        assert embedder.export_seconds == 0.0  # the module's export was found in the cache
    vectors = embedder.embed(SENTENCES)
    assert vectors.shape == (len(SENTENCES), 384) and vectors.dtype == np.float32
    assert _cosines(vectors, reference).mean() >= (0.999 if backend != "onnx-int8" else 0.98)


# --- two processes exporting at once ------------------------------------------------------

_RACER = textwrap.dedent(
    """
    import json, sys
    from dataclasses import replace
    from pathlib import Path
    from kb.onnx_embed import OnnxEmbedder
    from kb.settings import get_settings
    settings = replace(get_settings(), data_dir=Path(sys.argv[1]))
    embedder = OnnxEmbedder(settings, quantised=False)
    vector = embedder.embed(["Safe housing for survivors."])[0]
    print(json.dumps({"export": embedder.export_seconds, "file": str(embedder.model_file),
                      "first": float(vector[0])}))
    """
)


@pytest.mark.slow
def test_two_processes_export_once(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(REPO))
    env.pop("KB_MODELS_DIR", None)  # export into tmp_path/models, not the tests' shared cache
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER, str(tmp_path)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = []
    for racer in racers:
        out, err = racer.communicate(timeout=600)
        assert racer.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert sorted(r["export"] > 0 for r in results) == [False, True]  # one exported, one waited
    assert results[0]["file"] == results[1]["file"]
    assert results[0]["first"] == pytest.approx(results[1]["first"], abs=1e-6)
    names = sorted(p.name for p in (tmp_path / "models").iterdir())
    assert names == sorted([".onnx-export.lock", Path(results[0]["file"]).name])


# --- passages and questions on different backends -------------------------------------------

QUESTIONS = [
    "Where should child victims be sent for shelter and legal help?",
    "What did the evaluation recommend about cooperation at borders?",
    "Which crops in West Africa are harvested by children?",
    "How should school staff react when a pupil reveals abuse?",
    "Did counselling help survivors recover?",
]


def test_defaults_int8_passages_full_precision_questions(monkeypatch):
    from kb.embed import get_query_embedder

    for name in ("KB_EMBED_BACKEND", "KB_QUERY_BACKEND"):
        monkeypatch.delenv(name, raising=False)
    settings = get_settings()
    assert (settings.embed_backend, settings.query_backend) == ("onnx-int8", "onnx")
    monkeypatch.setenv("KB_QUERY_BACKEND", "torch")
    assert get_settings().query_backend == "torch"
    monkeypatch.setenv("KB_QUERY_BACKEND", "onnx-fp16")
    with pytest.raises(ValueError, match="unknown embedding backend 'onnx-fp16'.*KB_QUERY_BACKEND"):
        get_query_embedder(get_settings())


def test_full_precision_questions_rank_int8_passages_as_full_precision(fp32, int8):
    """The reason for the defaults: a question embedded in full precision scores int8
    passages almost exactly as it scores full-precision ones (the quantisation error sits on
    one side of the dot product only), closer than int8 questions do, and the passage it
    ranks first is the best one or ties with it (within 0.01) for every question."""
    exact_passages, int8_passages = fp32.embed(SENTENCES), int8.embed(SENTENCES)
    exact_questions, int8_questions = fp32.embed(QUESTIONS), int8.embed(QUESTIONS)
    exact = exact_questions @ exact_passages.T
    mixed = exact_questions @ int8_passages.T
    all_int8 = int8_questions @ int8_passages.T
    mixed_error, int8_error = np.abs(mixed - exact).mean(), np.abs(all_int8 - exact).mean()
    print(f"mean score error: fp32 questions on int8 passages {mixed_error:.4f}, int8 throughout {int8_error:.4f}")
    assert mixed_error < int8_error
    assert mixed_error < 0.02
    chosen = exact[np.arange(len(QUESTIONS)), mixed.argmax(axis=1)]
    assert (chosen >= exact.max(axis=1) - 0.01).all(), (chosen, exact.max(axis=1))
