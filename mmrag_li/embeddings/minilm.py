"""A torch-free forward pass of BERT sentence-transformers (the packaged all-MiniLM-L6-v2).

Why: a cold ``mmrag search`` spends most of its time importing torch, transformers and
sentence-transformers only to embed one short query. MiniLM is a 6-layer BERT (384-d, 12 heads)
followed by mean pooling and L2 normalisation; that forward pass is a handful of matrix products,
which numpy does in milliseconds for a query. The weights are read straight from the model's
``model.safetensors`` (memory-mapped: only the rows of the word-embedding table a query touches
are paged in) and the text is tokenised by the ``tokenizers`` library from ``tokenizer.json``,
so a query is encoded exactly as sentence-transformers encodes it (equal within 1e-5 cosine;
``tests/unit/test_light_query_encoder.py``). No export step and no extra files: the encoder reads
the folder the torch path loads.

Supported: a sentence-transformers folder whose transformer is a ``BertModel`` with absolute
positions and exact GELU, mean pooling (``1_Pooling``) and a Normalize module (that is MiniLM and
most ``all-*`` / ``multi-qa-*`` BERT models). :func:`supports` says whether a folder qualifies;
callers fall back to sentence-transformers otherwise.
"""

from __future__ import annotations

import json
import os
import threading
from functools import lru_cache
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np

__all__ = ["NumpyBertEncoder", "light_encoder", "one_blas_thread", "read_safetensors", "share_weights", "supports"]

_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32}
# erf by Numerical Recipes' erfc Chebyshev fit (fractional error < 1.2e-7): exact GELU without scipy.
_ERFC = (-1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806, 0.27886807, -1.13520398, 1.48851587,
         -0.82215223, 0.17087277)


def _read_json(path: Path) -> dict:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def read_safetensors(path: str | os.PathLike[str]) -> Dict[str, np.ndarray]:
    """Tensors of a ``.safetensors`` file as read-only numpy arrays over one memory map (no copy).

    Args:
        path: the file.
    """
    with open(path, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        header = json.loads(fh.read(n))
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    base = 8 + n
    out: Dict[str, np.ndarray] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        dtype = _DTYPES[info["dtype"]]
        out[name] = mm[base + start: base + end].view(dtype).reshape(info["shape"])
    return out


def _erf(x: np.ndarray) -> np.ndarray:
    z = np.abs(x)
    t = 1.0 / (1.0 + 0.5 * z)
    poly = np.full_like(t, _ERFC[-1])
    for c in reversed(_ERFC[:-1]):
        poly = poly * t + c
    erfc = t * np.exp(-z * z + poly)
    return np.where(x >= 0, 1.0 - erfc, erfc - 1.0)


def _gelu(x: np.ndarray) -> np.ndarray:
    return (0.5 * x * (1.0 + _erf(x.astype(np.float64) / np.sqrt(2.0)))).astype(np.float32)


@lru_cache(maxsize=1)
def _blas_controller():
    try:
        from threadpoolctl import ThreadpoolController  # a scikit-learn dependency
    except ImportError:  # pragma: no cover
        return None
    return ThreadpoolController()


def one_blas_thread():
    """A context manager that runs numpy's BLAS on one thread. The matrices of a query are tiny; on
    a busy machine OpenBLAS's worker threads spin against other processes and one 4x384 @ 384x1536
    product takes ~30 ms instead of ~0.1 ms (measured on the shared 2-core box)."""
    import contextlib

    ctl = _blas_controller()
    return contextlib.nullcontext() if ctl is None else ctl.limit(limits=1, user_api="blas")


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


def supports(folder: str | os.PathLike[str]) -> bool:
    """Whether :class:`NumpyBertEncoder` can run the sentence-transformers model in ``folder``.

    Args:
        folder: a sentence-transformers model folder.
    """
    root = Path(folder)
    try:
        cfg = _read_json(root / "config.json")
        pooling = _read_json(root / "1_Pooling" / "config.json")
        modules = [m.get("type", "") for m in _read_json(root / "modules.json")]
    except (OSError, ValueError):
        return False
    return (cfg.get("model_type") == "bert" and cfg.get("hidden_act") == "gelu"
            and cfg.get("position_embedding_type", "absolute") == "absolute"
            and pooling.get("pooling_mode_mean_tokens") is True
            and not any(pooling.get(k) for k in ("pooling_mode_cls_token", "pooling_mode_max_tokens",
                                                 "pooling_mode_mean_sqrt_len_tokens"))
            and any(t.endswith("Normalize") for t in modules)
            and (root / "model.safetensors").is_file() and (root / "tokenizer.json").is_file())


class NumpyBertEncoder:
    """Sentence embeddings of a BERT sentence-transformers folder, computed with numpy.

    Args:
        folder: the model folder (``config.json``, ``model.safetensors``, ``tokenizer.json``,
            ``sentence_bert_config.json``, ``1_Pooling``); see :func:`supports`.
        max_length: token limit (default: the folder's ``max_seq_length``, as sentence-transformers).
    """

    def __init__(self, folder: str | os.PathLike[str], max_length: Optional[int] = None):
        from tokenizers import Tokenizer

        root = Path(folder)
        if not supports(root):
            raise ValueError(f"{root}: not a BERT mean-pooling sentence-transformers folder")
        cfg = _read_json(root / "config.json")
        try:
            st_cfg = _read_json(root / "sentence_bert_config.json")
        except OSError:
            st_cfg = {}
        self.folder = str(root)
        self.layers = int(cfg["num_hidden_layers"])
        self.heads = int(cfg["num_attention_heads"])
        self.dim = int(cfg["hidden_size"])
        self.eps = float(cfg.get("layer_norm_eps", 1e-12))
        self.max_length = int(max_length or st_cfg.get("max_seq_length") or cfg.get("max_position_embeddings", 512))
        w = read_safetensors(root / "model.safetensors")
        self.w = {k[5:] if k.startswith("bert.") else k: v for k, v in w.items()}
        self.tokenizer = Tokenizer.from_file(str(root / "tokenizer.json"))
        self.tokenizer.enable_truncation(self.max_length)
        self.tokenizer.no_padding()
        self._lock = threading.Lock()

    def _forward(self, ids: np.ndarray, types: np.ndarray, mask: np.ndarray) -> np.ndarray:
        w, eps = self.w, self.eps
        b, n = ids.shape
        x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:n][None]
             + w["embeddings.token_type_embeddings.weight"][types])
        x = _layer_norm(x.astype(np.float32), w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
        hd = self.dim // self.heads
        bias = np.where(mask[:, None, None, :] > 0, 0.0, np.finfo(np.float32).min).astype(np.float32)
        def lin(t: np.ndarray, name: str) -> np.ndarray:
            return t @ w[name + ".weight"].T + w[name + ".bias"]

        for i in range(self.layers):
            p = f"encoder.layer.{i}."

            q, k, v = (lin(x, f"{p}attention.self.{s}").reshape(b, n, self.heads, hd).transpose(0, 2, 1, 3)
                       for s in ("query", "key", "value"))
            scores = q @ k.transpose(0, 1, 3, 2) / np.float32(np.sqrt(hd)) + bias
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            ctx = (scores / scores.sum(-1, keepdims=True)) @ v
            ctx = ctx.transpose(0, 2, 1, 3).reshape(b, n, self.dim)
            x = _layer_norm(lin(ctx, p + "attention.output.dense") + x, w[p + "attention.output.LayerNorm.weight"],
                            w[p + "attention.output.LayerNorm.bias"], eps)
            h = _gelu(lin(x, p + "intermediate.dense"))
            x = _layer_norm(lin(h, p + "output.dense") + x, w[p + "output.LayerNorm.weight"],
                            w[p + "output.LayerNorm.bias"], eps)
        m = mask[..., None].astype(np.float32)
        pooled = (x * m).sum(1) / np.clip(m.sum(1), 1e-9, None)
        return pooled / np.clip(np.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12, None)

    def encode(self, texts: Sequence[str], batch_size: int = 16) -> np.ndarray:
        """L2-normalised embeddings, one row per text (float32, shape ``(len(texts), dim)``).

        Args:
            texts: the texts (truncated to ``max_length`` tokens like sentence-transformers).
            batch_size: texts per forward pass (padded to the longest in the batch).
        """
        texts = list(texts)
        with self._lock:
            encs = self.tokenizer.encode_batch(texts) if texts else []
        # shortest first: less padding per batch; the original order is restored below
        order = sorted(range(len(texts)), key=lambda i: len(encs[i].ids))
        rows: Dict[int, np.ndarray] = {}
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            n = max(len(encs[i].ids) for i in idx)
            ids = np.zeros((len(idx), n), np.int64)
            types = np.zeros((len(idx), n), np.int64)
            mask = np.zeros((len(idx), n), np.int64)
            for r, i in enumerate(idx):
                e = encs[i]
                ids[r, :len(e.ids)], types[r, :len(e.ids)], mask[r, :len(e.ids)] = e.ids, e.type_ids, 1
            with one_blas_thread():
                vecs = self._forward(ids, types, mask)
            for r, vec in zip(idx, vecs):
                rows[r] = vec
        out = [rows[i] for i in range(len(texts))]
        return np.asarray(out, dtype=np.float32).reshape(len(texts), self.dim)


_lock = threading.Lock()
_encoders: Dict[str, NumpyBertEncoder] = {}
_torch_weights: Dict[str, Dict[str, np.ndarray]] = {}


def _usable(enc: NumpyBertEncoder, arrays: Dict[str, np.ndarray]) -> bool:
    need = {k for k in enc.w if k.startswith(("embeddings.", "encoder.")) and not k.endswith("position_ids")}
    return all(k in arrays and arrays[k].shape == enc.w[k].shape for k in need)


def light_encoder(folder: str | os.PathLike[str]) -> Optional[NumpyBertEncoder]:
    """The process-wide :class:`NumpyBertEncoder` of ``folder`` (built once), or None when the folder
    is not a supported model (see :func:`supports`).

    Args:
        folder: a sentence-transformers model folder.
    """
    real = os.path.realpath(str(folder))
    with _lock:
        if real not in _encoders:
            if not supports(real):
                return None
            enc = NumpyBertEncoder(real)
            if real in _torch_weights and _usable(enc, _torch_weights[real]):
                enc.w = _torch_weights[real]
            _encoders[real] = enc
        return _encoders[real]


def share_weights(folder: str | os.PathLike[str], model: object) -> bool:
    """Let the light encoder of ``folder`` compute with the tensors of a sentence-transformers
    ``model`` loaded from it on the CPU (numpy views of the same memory, no copy), so one process
    holds one copy of the weights. Returns whether it did (not for a GPU / fp16 model or a hub name).

    Args:
        folder: the folder the model was loaded from.
        model: the ``SentenceTransformer``.
    """
    real = os.path.realpath(str(folder))
    if not os.path.isdir(real):
        return False
    try:
        module = model[0].auto_model  # type: ignore[index]
        state = {k[5:] if k.startswith("bert.") else k: v.detach() for k, v in module.state_dict().items()}
        if any(t.device.type != "cpu" or str(t.dtype) not in ("torch.float32", "torch.int64") for t in state.values()):
            return False
        arrays = {k: t.numpy() for k, t in state.items()}
    except Exception:  # another architecture or a model wrapper: keep the memory map
        return False
    with _lock:
        enc = _encoders.get(real)
        if enc is not None and _usable(enc, arrays):
            enc.w = arrays
        _torch_weights[real] = arrays
    return True
