"""Retrieval: any LlamaIndex retrievers fused per asset, with the built-in ones as ordinary
``BaseRetriever`` s. Names are imported lazily (``from mmrag_li.retrieval import FusionRetriever``).

- ``bm25``: in-memory BM25 index over the stores' text, its cache, the metadata-filter matcher.
- ``retrievers``: the built-in retrievers (vector collection, BM25, image->image) and their scope/floors.
- ``hits``: asset-level hits (``AssetHit``), node -> asset, evidence per asset.
- ``fusion``: pure ``fuse`` and ``FusionRetriever`` over named retrievers.
- ``rerank``: the ``Reranker`` protocol, CLIP-tile and cross-encoder rerankers, ``RerankPostprocessor``.
"""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "BM25Cache": "bm25", "UnsupportedFilterError": "bm25", "matches_filters": "bm25",
    "ScopedRetriever": "retrievers", "VectorCollectionRetriever": "retrievers",
    "BM25StoreRetriever": "retrievers", "ImageToImageRetriever": "retrievers",
    "AssetHit": "hits", "FusionRetriever": "fusion", "fuse": "fusion",
    "Reranker": "rerank", "RerankPostprocessor": "rerank", "build_reranker": "rerank",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
