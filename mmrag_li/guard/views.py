"""Guarded views of the stores and the manifest: what a caller limited by a ``CollectionGuard`` reaches.

- :class:`GuardedStores` wraps a ``ModalityStores`` (duck-typed: this module does not import the
  stores package): searches get the guard's ``collection IN (...)`` filter pushed down, node reads
  are filtered, ``delete_asset`` deletes only visible nodes (a hidden asset deletes nothing and
  looks exactly like a missing one), counts and asset ids cover the visible collections only.
- :class:`GuardedVectorStore` is the same for one LlamaIndex vector store, so a stock
  ``MultiModalVectorStoreIndex`` built over ``GuardedStores`` is guarded too.
- :class:`GuardedManifest` is a read-only view of the manifest rows the caller may see.

With an unrestricted guard every call goes straight to the wrapped object; with a deny-all guard
no store is queried at all.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any, Dict, Iterator, List, Optional, Sequence, Set

from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.schema import BaseNode, NodeWithScore
from llama_index.core.vector_stores.types import (BasePydanticVectorStore, FilterOperator, MetadataFilter,
                                                  MetadataFilters, VectorStoreQuery, VectorStoreQueryResult)

from mmrag_li.errors import MMRAGError
from mmrag_li.guard.scope import CollectionGuard
from mmrag_li.schema import COLLECTIONS

__all__ = ["GuardedManifest", "GuardedStores", "GuardedVectorStore", "guarded_stores_of", "asset_filters"]


def asset_filters(asset_ids: str | Sequence[str]) -> MetadataFilters:
    """``asset_id == X`` (one id) or ``asset_id IN (...)`` (several).

    Args:
        asset_ids: one asset id or a list of them.
    """
    if isinstance(asset_ids, str):
        return MetadataFilters(filters=[MetadataFilter(key="asset_id", value=asset_ids)])
    return MetadataFilters(filters=[MetadataFilter(key="asset_id", value=list(asset_ids), operator=FilterOperator.IN)])


class GuardedVectorStore(BasePydanticVectorStore):
    """One collection's LlamaIndex vector store, limited to the collections a guard allows.

    Reads (``query``, ``get_nodes``, ``search``, ``iter_nodes``, ``count_rows``) get the guard's
    filter ANDed in; deletes touch only visible rows; ``add`` refuses nodes outside the guard.

    Args:
        inner: the wrapped vector store (e.g. ``LanceModalityVectorStore``).
        guard: the tenant guard.
    """

    stores_text: bool = True
    _inner: Any = PrivateAttr()
    _guard: CollectionGuard = PrivateAttr()

    def __init__(self, inner: Any, guard: CollectionGuard, **kwargs: Any):
        super().__init__(stores_text=getattr(inner, "stores_text", True),
                         is_embedding_query=getattr(inner, "is_embedding_query", True), **kwargs)
        self._inner = inner
        self._guard = guard

    @classmethod
    def class_name(cls) -> str:
        return "GuardedVectorStore"

    @property
    def wrapped(self) -> Any:
        """The unguarded vector store (callers must apply :attr:`guard` themselves)."""
        return self._inner

    @property
    def guard(self) -> CollectionGuard:
        """The guard this view applies."""
        return self._guard

    @property
    def client(self) -> Any:
        """The wrapped store's client (connection)."""
        return self._inner.client

    @property
    def dim(self) -> Optional[int]:
        """The wrapped collection's vector size."""
        return getattr(self._inner, "dim", None)

    def signature(self) -> Any:
        """The wrapped collection's change signature."""
        return self._inner.signature()

    # -- reads -------------------------------------------------------------------------------------
    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """LlamaIndex query with the guard ANDed into ``query.filters`` (deny-all: empty result)."""
        if self._guard.denies_all:
            return VectorStoreQueryResult(nodes=[], similarities=[], ids=[])
        res = self._inner.query(dataclasses.replace(query, filters=self._guard.filters(query.filters)), **kwargs)
        if res.nodes is not None and not self._guard.unrestricted:
            keep = [i for i, n in enumerate(res.nodes) if self._guard.allows(n)]
            res = VectorStoreQueryResult(
                nodes=[res.nodes[i] for i in keep],
                similarities=[res.similarities[i] for i in keep] if res.similarities is not None else None,
                ids=[res.ids[i] for i in keep] if res.ids is not None else None)
        return res

    def search(self, embedding: Sequence[float], k: int, filters: Optional[MetadataFilters] = None
               ) -> List[NodeWithScore]:
        """Top ``k`` visible nodes by cosine similarity (see the wrapped store's ``search``)."""
        if self._guard.denies_all:
            return []
        return self._guard.keep(self._inner.search(embedding, k, self._guard.filters(filters)))

    def get_nodes(self, node_ids: Optional[List[str]] = None, filters: Optional[MetadataFilters] = None,
                  **kwargs: Any) -> List[BaseNode]:
        """The visible nodes with ``node_ids`` and/or matching ``filters``."""
        if self._guard.denies_all:
            return []
        return self._guard.keep(self._inner.get_nodes(node_ids=node_ids, filters=self._guard.filters(filters),
                                                      **kwargs))

    def iter_nodes(self, filters: Optional[MetadataFilters] = None) -> Iterator[BaseNode]:
        """Every visible node (matching ``filters``), streamed."""
        if self._guard.denies_all:
            return iter(())
        return (n for n in self._inner.iter_nodes(self._guard.filters(filters)) if self._guard.allows(n))

    def count_rows(self, filters: Optional[MetadataFilters] = None) -> int:
        """Number of visible rows (matching ``filters``)."""
        if self._guard.denies_all:
            return 0
        return self._inner.count_rows(self._guard.filters(filters))

    def asset_ids(self) -> Set[str]:
        """Distinct asset ids of the visible rows."""
        if self._guard.unrestricted:
            return self._inner.asset_ids()
        return {n.metadata.get("asset_id") for n in self.iter_nodes() if n.metadata.get("asset_id")}

    # -- writes ------------------------------------------------------------------------------------
    def add(self, nodes: Sequence[BaseNode], **kwargs: Any) -> List[str]:
        """Add ``nodes``; raises MMRAGError when one of them is outside the guard."""
        hidden = [n.node_id for n in nodes if not self._guard.allows(n)]
        if hidden:
            raise MMRAGError(f"refusing to write {len(hidden)} node(s) outside the allowed collections "
                             f"{self._guard.to_dict()['allowed_collections']}")
        return self._inner.add(nodes, **kwargs)

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Delete the visible nodes of asset (ref doc) ``ref_doc_id``."""
        self.delete_nodes(filters=asset_filters(ref_doc_id))

    def delete_nodes(self, node_ids: Optional[List[str]] = None, filters: Optional[MetadataFilters] = None,
                     **delete_kwargs: Any) -> None:
        """Delete the visible nodes with ``node_ids`` and/or matching ``filters``."""
        if self._guard.denies_all:
            return
        if self._guard.unrestricted:
            self._inner.delete_nodes(node_ids=node_ids, filters=filters, **delete_kwargs)
        elif node_ids or (filters is not None and filters.filters):
            self._inner.delete_nodes(node_ids=node_ids, filters=self._guard.filters(filters), **delete_kwargs)

    def clear(self) -> None:
        """Delete every visible node (unrestricted: the whole collection)."""
        if self._guard.unrestricted:
            self._inner.clear()
        elif not self._guard.denies_all:
            self._inner.delete_nodes(filters=self._guard.filters())


class GuardedStores:
    """A ``ModalityStores`` as seen by a caller limited by ``guard`` (see the module docstring).

    Args:
        stores: the ``ModalityStores`` (or anything with its read methods).
        guard: the tenant guard.
    """

    def __init__(self, stores: Any, guard: CollectionGuard):
        self.stores = stores
        self.guard = guard

    @classmethod
    def wrap(cls, stores: Any, guard: Any = None) -> "GuardedStores":
        """``stores`` guarded by ``guard``; an already guarded view is narrowed, never widened.

        Args:
            stores: a ``ModalityStores`` or a ``GuardedStores``.
            guard: anything ``CollectionGuard.from_config`` takes (None: unrestricted).
        """
        guard = CollectionGuard.from_config(guard)
        if isinstance(stores, GuardedStores):
            narrowed = stores.guard.narrow(guard)
            return stores if narrowed == stores.guard else cls(stores.stores, narrowed)
        return cls(stores, guard)

    # -- pass-through facts ------------------------------------------------------------------------
    @property
    def backend(self) -> Optional[str]:
        """The wrapped stores' backend name."""
        return getattr(self.stores, "backend", None)

    @property
    def store_dir(self) -> Optional[str]:
        """The wrapped stores' directory."""
        return getattr(self.stores, "store_dir", None)

    def signature(self) -> Any:
        """The wrapped stores' change signature (caches rebuild when it moves)."""
        return self.stores.signature()

    def dim(self, collection: str) -> Optional[int]:
        """Vector size of ``collection``."""
        return self.stores.dim(collection)

    def vector_store(self, collection: str) -> Any:
        """The LlamaIndex vector store of ``collection``, guarded (:class:`GuardedVectorStore`)."""
        inner = self.stores.vector_store(collection)
        return inner if self.guard.unrestricted else GuardedVectorStore(inner, self.guard)

    # -- reads -------------------------------------------------------------------------------------
    def query(self, collection: str, embedding: Sequence[float], k: int,
              filters: Optional[MetadataFilters] = None) -> List[NodeWithScore]:
        """Top ``k`` visible nodes of ``collection`` by cosine similarity, among those matching
        ``filters`` (the guard's filter is pushed down to the store).

        Args:
            collection: the collection.
            embedding: the query vector.
            k: result size.
            filters: the caller's ``MetadataFilters``.
        """
        if self.guard.denies_all:
            return []
        return self.guard.keep(self.stores.query(collection, embedding, k, self.guard.filters(filters)))

    def get_asset_nodes(self, asset_id: str) -> List[BaseNode]:
        """Every visible node of asset ``asset_id`` ([] for a hidden or missing asset).

        Args:
            asset_id: a full asset id.
        """
        if self.guard.denies_all:
            return []
        return self.guard.keep(self.stores.get_asset_nodes(asset_id))

    def get_assets_nodes(self, asset_ids: Sequence[str]) -> Dict[str, List[BaseNode]]:
        """Visible nodes of ``asset_ids``, by asset id (hidden assets map to []).

        Args:
            asset_ids: full asset ids.
        """
        if self.guard.denies_all:
            return {a: [] for a in asset_ids}
        if hasattr(self.stores, "get_assets_nodes"):
            found = self.stores.get_assets_nodes(list(asset_ids))
        elif hasattr(self.stores, "get_asset_nodes"):
            found = {a: self.stores.get_asset_nodes(a) for a in asset_ids}
        else:
            found = {}
        return {a: self.guard.keep(found.get(a, [])) for a in asset_ids}

    def all_nodes(self, collection: str) -> Iterator[BaseNode]:
        """Every visible node of ``collection``, streamed.

        Args:
            collection: the collection.
        """
        if self.guard.unrestricted:
            return self.stores.all_nodes(collection)
        if self.guard.denies_all:
            return iter(())
        vs = self.stores.vector_store(collection) if hasattr(self.stores, "vector_store") else None
        if vs is not None and hasattr(vs, "iter_nodes"):
            return GuardedVectorStore(vs, self.guard).iter_nodes()
        return (n for n in self.stores.all_nodes(collection) if self.guard.allows(n))

    def all_records(self, collection: str) -> Iterator[Any]:
        """Every visible node of ``collection`` as a ``NodeRecord`` (see ``ModalityStores.all_records``).

        Args:
            collection: the collection.
        """
        if self.guard.denies_all:
            return iter(())
        if hasattr(self.stores, "all_records"):
            records = self.stores.all_records(collection)
            return records if self.guard.unrestricted else (r for r in records if self.guard.allows(r))
        from mmrag_li.stores.nodes import record_of  # a store without records: pack its nodes

        return (record_of(n) for n in self.all_nodes(collection))

    def count(self, collection: Optional[str] = None) -> Dict[str, int]:
        """Visible rows per collection (only ``collection`` when given).

        Args:
            collection: one collection, or None for all four.
        """
        if self.guard.unrestricted:
            return self.stores.count(collection)
        cols = [collection] if collection else list(COLLECTIONS)
        out = {}
        for c in cols:
            vs = self.stores.vector_store(c) if hasattr(self.stores, "vector_store") else None
            if vs is not None and hasattr(vs, "count_rows"):
                out[c] = GuardedVectorStore(vs, self.guard).count_rows()
            else:
                out[c] = sum(1 for _ in self.all_nodes(c))
        return out

    def asset_ids(self) -> Set[str]:
        """Asset ids present in the visible collections."""
        if self.guard.unrestricted:
            return self.stores.asset_ids()
        return {n.metadata.get("asset_id") for c in COLLECTIONS for n in self.all_nodes(c)
                if n.metadata.get("asset_id")}

    # -- deletes -----------------------------------------------------------------------------------
    def delete_asset(self, asset_id: str) -> int:
        """Delete the visible nodes of asset ``asset_id``; how many. A hidden asset deletes nothing
        and returns 0, exactly like a missing one.

        Args:
            asset_id: a full asset id.
        """
        if self.guard.unrestricted:
            return self.stores.delete_asset(asset_id)
        if self.guard.denies_all:
            return 0
        return self.stores.delete_by_filters(self.guard.filters(asset_filters(asset_id)))

    def close(self) -> None:
        """Nothing: the view does not own the stores (close those where they were opened)."""

    def __repr__(self) -> str:
        return f"GuardedStores({self.stores!r}, {self.guard!r})"


class GuardedManifest:
    """A read-only view of the manifest rows (``FileRecord``) whose asset the guard allows.

    Args:
        manifest: the manifest (``get``, ``by_asset``, ``all``).
        guard: the tenant guard.
    """

    def __init__(self, manifest: Any, guard: CollectionGuard):
        self.manifest = manifest
        self.guard = guard

    @property
    def path(self) -> Any:
        """The manifest file."""
        return getattr(self.manifest, "path", None)

    def get(self, source: str) -> Any:
        """The row of ``source`` if visible, else None.

        Args:
            source: the absolute source path.
        """
        rec = self.manifest.get(source)
        return rec if rec is not None and self.guard.allows(rec) else None

    def by_asset(self, asset_id: str) -> List[Any]:
        """Visible rows of asset ``asset_id``.

        Args:
            asset_id: a full asset id.
        """
        return self.guard.keep(self.manifest.by_asset(asset_id))

    def all(self, status: Optional[str] = None) -> List[Any]:
        """Visible rows (with ``status``, if given).

        Args:
            status: "pending", "done", "failed" or None for all.
        """
        return self.guard.keep(self.manifest.all(status))

    def counts(self) -> Dict[str, int]:
        """Visible rows per status."""
        if self.guard.unrestricted:
            return self.manifest.counts()
        return dict(Counter(r.status for r in self.all()))

    def done_assets(self, config: Optional[str] = None) -> Dict[str, List[str]]:
        """asset_id -> node ids of visible committed files (made with ``config``, if given).

        Args:
            config: a config fingerprint, or None for any.
        """
        out: Dict[str, List[str]] = {}
        for rec in self.all("done"):
            if rec.asset_id and (config is None or getattr(rec, "config", None) in (None, config)):
                out[rec.asset_id] = sorted(set(out.get(rec.asset_id, [])) | set(rec.node_ids))
        return out

    def visible_asset_ids(self) -> Set[str]:
        """Asset ids of every visible row (the candidates for an id prefix)."""
        return self.guard.visible_asset_ids(self.manifest.all())


def guarded_stores_of(rag: Any) -> GuardedStores:
    """The guarded stores of a ``MultiModalRAG`` (or anything with ``stores`` and ``settings``).

    Args:
        rag: the pipeline; its ``guarded_stores`` when it has them, else its ``stores`` wrapped with
            the guard of its ``settings``.
    """
    view = getattr(rag, "guarded_stores", None)
    if isinstance(view, GuardedStores):
        return view
    return GuardedStores.wrap(rag.stores, CollectionGuard.from_config(getattr(rag, "settings", None)))
