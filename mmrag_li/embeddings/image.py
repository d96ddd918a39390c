"""The image (CLIP-space) embedding of a store, built from its resolved models.

Use :func:`build_image_embedding` with the models from
``mmrag_li.embeddings.resolve.resolve_models(settings.embedding, store_dir)`` so that a store
is always searched with the model it was built with.
"""

from __future__ import annotations

from typing import Optional

from mmrag_li.config import EmbeddingConfig
from mmrag_li.embeddings.clip import ClipEmbedding
from mmrag_li.embeddings.resolve import StoreModels, resolve_models

__all__ = ["build_image_embedding"]


def build_image_embedding(cfg: EmbeddingConfig, models: Optional[StoreModels] = None) -> ClipEmbedding:
    """A :class:`ClipEmbedding` for the store's image model (the model loads on first use).

    Args:
        cfg: embedding settings (device, batch size; the model when ``models`` is None).
        models: the store's models from ``resolve_models(cfg, store_dir)``; None resolves ``cfg``
            now without a store (for ``auto``: local HF cache, then the hub with a short timeout,
            then the packaged encoder).
    """
    models = models or resolve_models(cfg)
    return ClipEmbedding.from_defaults(model_name=models.image_model, backend=models.image_backend,
                                       pretrained=models.image_pretrained, device=cfg.device,
                                       batch_size=cfg.batch_size, revision=models.image_model_version)
