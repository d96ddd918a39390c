"""A LlamaIndex ``MultiModalVectorStoreIndex`` over the stores."""

from __future__ import annotations

from typing import Any

from mmrag_li.errors import ConfigError

from .collections import ModalityStores

__all__ = ["build_multimodal_index"]


def build_multimodal_index(stores: ModalityStores, text_collection: str = "text", *, embed_model: Any,
                           image_embed_model: Any, **kwargs: Any) -> Any:
    """A ``MultiModalVectorStoreIndex`` over ``stores`` whose text store is ``text_collection`` and
    image store ``image``; ``kwargs`` go to ``MultiModalVectorStoreIndex.from_vector_store``.

    ``embed_model`` must produce vectors of the text collection's size and ``image_embed_model``
    (a ``MultiModalEmbedding``) those of the image collection. Both are required: the defaults
    would resolve ``Settings.embed_model`` (OpenAI) and ``"clip"`` (needs a download).

    Trap handled: the index keeps ``is_text_vector_store_empty`` / ``is_image_vector_store_empty``
    flags, and its ``insert_nodes`` sets one for good when a batch lacks that modality, after which
    retrieval silently skips the store. Our stores answer ``[]`` when empty, so both flags are
    forced False here; insert through ``stores.upsert`` rather than ``index.insert_nodes``.
    """
    from llama_index.core.indices.multi_modal.base import MultiModalVectorStoreIndex

    if embed_model is None or image_embed_model is None:
        raise ConfigError("build_multimodal_index needs embed_model and image_embed_model")
    kwargs.setdefault("is_text_vector_store_empty", False)
    kwargs.setdefault("is_image_vector_store_empty", False)
    return MultiModalVectorStoreIndex.from_vector_store(
        vector_store=stores.vector_store(text_collection),
        image_vector_store=stores.vector_store("image"),
        embed_model=embed_model,
        image_embed_model=image_embed_model,
        **kwargs,
    )
