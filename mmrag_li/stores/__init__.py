"""Per-modality vector stores: four logical collections (image, caption, ocr, text) per backend.

Layout:

* ``base``        – the ``StoreBackend`` protocol every backend implements; ``require`` (optional imports)
* ``errors``      – ``StoreError``, ``DimensionMismatchError``, ``StoreCorruptError``, ``UnsupportedFilterError``
* ``nodes``       – node <-> stored row conversion shared by the backends (``prepare_node``, ``node_uuid``...)
* ``filters``     – ``MetadataFilters`` -> LanceDB SQL (``lance_where``) / Weaviate ``Filter`` (``weaviate_filter``)
* ``lancedb``     – ``LanceModalityVectorStore``, damage probing (``damage_message``)
* ``weaviate``    – ``WeaviateModalityVectorStore``, connection helpers (needs ``mmrag_li[weaviate]``)
* ``collections`` – ``ModalityStores`` (the four collections of one store, any backend)
* ``index``       – ``build_multimodal_index``

Every vector is L2-normalised on write and on query and the score is the cosine similarity
(higher = better). The backend modules (and lancedb / weaviate) are imported on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .base import StoreBackend, require
from .collections import BACKENDS, ModalityStores
from .errors import DimensionMismatchError, StoreCorruptError, StoreError, UnsupportedFilterError
from .filters import lance_where, weaviate_filter
from .index import build_multimodal_index
from .nodes import FILTER_FIELDS, node_from_fields, node_uuid, prepare_node

_LAZY = {
    "LanceModalityVectorStore": "lancedb",
    "damage_message": "lancedb",
    "lance_damage": "lancedb",
    "lance_schema": "lancedb",
    "WeaviateModalityVectorStore": "weaviate",
    "connect_weaviate": "weaviate",
    "weaviate_collection_config": "weaviate",
    "weaviate_collection_name": "weaviate",
    "weaviate_connection_args": "weaviate",
    "weaviate_properties": "weaviate",
}

__all__ = sorted([
    "BACKENDS",
    "DimensionMismatchError",
    "FILTER_FIELDS",
    "ModalityStores",
    "StoreBackend",
    "StoreCorruptError",
    "StoreError",
    "UnsupportedFilterError",
    "build_multimodal_index",
    "lance_where",
    "node_from_fields",
    "node_uuid",
    "prepare_node",
    "require",
    "weaviate_filter",
    *_LAZY,
])


def __getattr__(name: str) -> Any:
    """The backend classes and helpers, imported on first access (lancedb / weaviate are heavy)."""
    if name in _LAZY:
        value = getattr(import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list:
    return __all__
