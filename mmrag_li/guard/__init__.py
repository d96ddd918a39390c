"""The tenant guard: the one way every command, retriever, baseline, API endpoint and library call
reaches stored nodes.

``CollectionGuard.from_config(settings)`` reads ``retrieval.allowed_collections``: ``None``/absent =
unrestricted, ``[]`` = deny all, a list = only those collections. ``GuardedStores`` /
``GuardedVectorStore`` / ``GuardedManifest`` are the views the facade, the retrievers and the
evaluation baselines read through. This package sits left of ``stores`` and ``retrieval`` (it
imports only config-level modules and LlamaIndex) so every layer can use it.
"""

from mmrag_li.guard.scope import COLLECTION_KEY, DEFAULT_COLLECTION, CollectionGuard
from mmrag_li.guard.views import (GuardedManifest, GuardedStores, GuardedVectorStore, asset_filters,
                                  guarded_stores_of)

__all__ = ["COLLECTION_KEY", "DEFAULT_COLLECTION", "CollectionGuard", "GuardedManifest", "GuardedStores",
           "GuardedVectorStore", "asset_filters", "guarded_stores_of"]
