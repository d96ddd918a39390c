"""``ModalityStores``: the four collections (image, caption, ocr, text) of one store, any backend.

Backend-agnostic: every collection is a :class:`~mmrag_li.stores.base.StoreBackend`, and each
backend module knows its own name and how to open itself (``open_from_settings``). Heavy imports
(lancedb, weaviate) happen when a backend is opened, not when this module is imported.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Dict, Hashable, Iterator, List, Optional, Sequence, Set, Tuple

from llama_index.core.schema import BaseNode, NodeWithScore
from llama_index.core.vector_stores.types import BasePydanticVectorStore, MetadataFilters

from mmrag_li.config import Settings
from mmrag_li.errors import ConfigError
from mmrag_li.schema import COLLECTIONS, collection_of

from .nodes import NodeRecord, asset_filter, check_collection, record_of

__all__ = ["ModalityStores", "BACKENDS"]

_log = logging.getLogger(__name__)

Opened = Tuple[Dict[str, Any], Any]


def _open_lancedb(settings: Settings) -> Opened:
    from .ann import AnnOptions
    from .lance_read import open_lazy_collections  # reads via lance; lancedb is imported on the first write

    return open_lazy_collections(settings.store_dir, ann=AnnOptions.from_store_config(settings.store))


def _open_weaviate(settings: Settings) -> Opened:
    from .weaviate import open_from_settings

    return open_from_settings(settings)


def _close_client(client: Any) -> None:
    close = getattr(client, "close", None)
    if callable(close):
        close()


# store.backend -> (opener(settings) -> (stores, client), whether the store owns and closes the client)
BACKENDS: Dict[str, Tuple[Callable[[Settings], Opened], bool]] = {
    "lancedb": (_open_lancedb, False),
    "weaviate": (_open_weaviate, True),
}


class ModalityStores:
    """The four collections (image, caption, ocr, text) of one store directory / Weaviate instance.

    Vectors are L2-normalised on write and on query; similarity is cosine (``score`` = cosine
    similarity, higher = better). Nodes must arrive embedded; the store never embeds.

    Args:
        backend: the backend's name (``lancedb``, ``weaviate``), as in ``store.backend``.
        stores: one vector store per collection (each a ``StoreBackend``).
        client: the backend's connection/client (``client`` property).
        store_dir: the store directory.
        closer: called once by ``close()`` (e.g. the Weaviate client's ``close``); None = nothing.
    """

    def __init__(self, backend: str, stores: Dict[str, BasePydanticVectorStore], client: Any = None,
                 store_dir: Optional[str] = None, closer: Optional[Callable[[], None]] = None):
        self.backend = backend
        self.store_dir = store_dir
        self._stores = stores
        self._client = client
        self._closer = closer
        self._closed = False

    # -- construction ------------------------------------------------------------------------------
    @classmethod
    def from_config(cls, settings: Settings) -> "ModalityStores":
        """The stores ``settings.store`` describes, under ``settings.store_dir``. A LanceDB table that
        cannot be opened raises StoreCorruptError naming it and saying how to recover."""
        name = settings.store.backend
        if name not in BACKENDS:
            raise ConfigError(f"unknown store.backend {name!r}; expected one of {', '.join(BACKENDS)}")
        opener, owns_client = BACKENDS[name]
        stores, client = opener(settings)
        return cls(name, stores, client=client, store_dir=settings.store_dir,
                   closer=(lambda: _close_client(client)) if owns_client else None)

    @classmethod
    def lancedb(cls, store_dir: str | os.PathLike[str], ann: Any = None) -> "ModalityStores":
        """LanceDB tables ``<store_dir>/lancedb/<collection>.lance`` (created on first write).

        Args:
            store_dir: the store directory.
            ann: :class:`~mmrag_li.stores.ann.AnnOptions` (None: the defaults of ``store.ann_*``).
        """
        from .lance_read import LazyLanceCollection, open_lazy_collections

        stores, conn = open_lazy_collections(store_dir, ann=ann)
        return cls(LazyLanceCollection.backend_name, stores, client=conn, store_dir=str(store_dir))

    @classmethod
    def weaviate(cls, client: Any, prefix: str = "Mmrag", store_dir: Optional[str] = None) -> "ModalityStores":
        """One Weaviate collection per modality on ``client``, ``f"{prefix}{Collection}"``, created with
        an explicit schema; ``close()`` closes ``client``."""
        from .weaviate import WeaviateModalityVectorStore, open_collections

        stores = open_collections(client, prefix=prefix)
        return cls(WeaviateModalityVectorStore.backend_name, stores, client=client, store_dir=store_dir,
                   closer=lambda: _close_client(client))

    # -- access ------------------------------------------------------------------------------------
    def vector_store(self, collection: str) -> BasePydanticVectorStore:
        """The LlamaIndex vector store object of ``collection`` (plug into any LlamaIndex index)."""
        store = self._s(collection)
        real = getattr(type(store), "real_store", None)  # a lazily opened collection (LanceDB)
        return real(store) if real is not None else store

    def _s(self, collection: str) -> Any:
        return self._stores[check_collection(collection)]

    @property
    def client(self) -> Any:
        """The backend's connection or client (lancedb connection, weaviate client)."""
        if self._client is None and self.backend == "lancedb":  # lazily opened: connect now
            self._client = getattr(self.vector_store(COLLECTIONS[0]), "_connection", None)
        return self._client

    def dim(self, collection: str) -> Optional[int]:
        """Vector size ``collection`` was created with (None while empty)."""
        return self._s(collection).dim

    # -- writes ------------------------------------------------------------------------------------
    def upsert(self, collection: str, nodes: Sequence[BaseNode]) -> None:
        """Insert or replace ``nodes`` in ``collection`` by node id (never duplicates)."""
        self._s(collection).upsert_nodes(list(nodes))

    def upsert_all(self, nodes: Sequence[BaseNode]) -> Dict[str, int]:
        """Route ``nodes`` by ``metadata['modality']`` (schema.collection_of) and upsert; counts per collection."""
        groups: Dict[str, List[BaseNode]] = {}
        for n in nodes:
            groups.setdefault(collection_of(str(n.metadata.get("modality", ""))), []).append(n)
        for c, ns in groups.items():
            self.upsert(c, ns)
        return {c: len(ns) for c, ns in groups.items()}

    def delete_asset(self, asset_id: str) -> int:
        """Delete every node of asset ``asset_id`` from every collection; how many were deleted."""
        return sum(self._s(c).delete_asset(asset_id) for c in COLLECTIONS)

    def delete_by_filters(self, filters: MetadataFilters) -> int:
        """Delete the nodes matching ``filters`` from every collection; how many were deleted."""
        return sum(self._s(c).delete_by_filters(filters) for c in COLLECTIONS)

    def signature(self) -> Tuple[Hashable, ...]:
        """Changes whenever any collection changes, replacements of the same size included, so
        caches built from the stores (the BM25 index) know when to rebuild (see each backend's
        ``signature`` for what another process's writes do)."""
        return tuple((c, self._s(c).signature()) for c in COLLECTIONS)

    def drop(self) -> None:
        """Remove all four collections (tables / Weaviate collections) with their data."""
        for c in COLLECTIONS:
            self._s(c).clear()

    # -- reads -------------------------------------------------------------------------------------
    def query(self, collection: str, embedding: Sequence[float], k: int,
              filters: Optional[MetadataFilters] = None) -> List[NodeWithScore]:
        """Top ``k`` of ``collection`` by cosine similarity to ``embedding`` among nodes matching
        ``filters`` (score = cosine, higher = better); [] for an empty collection."""
        return self._s(collection).search(embedding, k, filters)

    def get_asset_nodes(self, asset_id: str) -> List[BaseNode]:
        """Every node of asset ``asset_id``, all collections."""
        out: List[BaseNode] = []
        for c in COLLECTIONS:
            out.extend(self._s(c).get_nodes(filters=asset_filter(asset_id)))
        return out

    def get_assets_nodes(self, asset_ids: Sequence[str]) -> Dict[str, List[BaseNode]]:
        """Nodes of the assets ``asset_ids`` in one filtered query per collection (evidence for a result page)."""
        out: Dict[str, List[BaseNode]] = {a: [] for a in asset_ids}
        if not out:
            return out
        flt = asset_filter(list(out))
        for c in COLLECTIONS:
            for node in self._s(c).get_nodes(filters=flt):
                out.setdefault(node.metadata.get("asset_id"), []).append(node)
        return out

    def all_nodes(self, collection: str) -> Iterator[BaseNode]:
        """Every node of ``collection``, streamed."""
        return self._s(collection).iter_nodes()

    def all_records(self, collection: str) -> Iterator[NodeRecord]:
        """Every node of ``collection`` as a :class:`~mmrag_li.stores.nodes.NodeRecord`, streamed
        (straight from the rows where the backend can: no LlamaIndex objects are built).

        Args:
            collection: the collection.
        """
        store = self._s(collection)
        if hasattr(store, "iter_records"):
            return store.iter_records()
        return (record_of(n) for n in store.iter_nodes())

    def count(self, collection: Optional[str] = None) -> Dict[str, int]:
        """Rows per collection (only ``collection`` when given)."""
        cols = [collection] if collection else list(COLLECTIONS)
        return {c: self._s(c).count_rows() for c in cols}

    def asset_ids(self) -> Set[str]:
        """Every asset id present in any collection."""
        out: Set[str] = set()
        for c in COLLECTIONS:
            out |= self._s(c).asset_ids()
        return out

    # -- maintenance -------------------------------------------------------------------------------
    def optimize(self) -> Dict[str, float]:
        """Compact the collections after an ingest (LanceDB: merge fragments; Weaviate: nothing to
        do); seconds per collection that did something."""
        timings: Dict[str, float] = {}
        for c in COLLECTIONS:
            t = self._s(c).optimize()
            if t is not None:
                timings[c] = t
        return timings

    def purge_versions(self) -> Dict[str, Dict[str, int]]:
        """Make deleted and replaced rows unrecoverable (LanceDB: rewrite fragments holding deleted
        rows, drop old table versions; a backend without versions: nothing);
        ``{collection: {"versions_removed", "bytes_freed"}}`` for the collections that did something."""
        out: Dict[str, Dict[str, int]] = {}
        for c in COLLECTIONS:
            fn = getattr(self._s(c), "purge_versions", None)
            if fn is not None:
                out[c] = fn()
        return out

    def probe(self) -> None:
        """Read enough of every collection to find damage before writing; raises StoreCorruptError
        naming the damaged table/file and how to recover (LanceDB)."""
        for c in COLLECTIONS:
            self._s(c).probe()

    def health(self, deep: bool = False) -> Dict[str, Dict[str, Any]]:
        """``{collection: {"backend", "collection", "ok", "rows", "dim", ...}}`` with ``"error"`` where
        a collection cannot be read; ``deep`` also probes the stored data (slower)."""
        return {c: self._s(c).health(deep=deep) for c in COLLECTIONS}

    # -- lifecycle ---------------------------------------------------------------------------------
    def close(self) -> None:
        """Release the collections and, when this object owns it, the client (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for c in COLLECTIONS:
            try:
                self._s(c).close()
            except Exception:  # pragma: no cover
                _log.debug("closing %s failed", c, exc_info=True)
        if self._closer is not None:
            try:
                self._closer()
            except Exception:  # pragma: no cover
                _log.debug("closing the %s client failed", self.backend, exc_info=True)

    def __enter__(self) -> "ModalityStores":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ModalityStores(backend={self.backend!r}, store_dir={self.store_dir!r})"
