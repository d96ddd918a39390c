"""``CollectionGuard``: which collections (tenants) a caller may see, from ``retrieval.allowed_collections``.

- ``None`` (or the key absent): unrestricted, every collection is visible.
- ``[]``: deny all; nothing is visible (no query touches a store).
- ``["a", "b"]``: only nodes whose ``collection`` metadata is one of these. A node without a
  ``collection`` is not provably allowed and is hidden. Manifest rows without one belong to the
  default collection (``ingest.collection``'s default, ``"default"``).

The guard is a value (hashable, comparable); :meth:`CollectionGuard.narrow` intersects two guards,
so a per-query scope can only ever shrink what the configured guard allows.
"""

from __future__ import annotations

from typing import Any, Dict, FrozenSet, Iterable, List, Mapping, Optional, Set, TypeVar

from llama_index.core.vector_stores.types import FilterOperator, MetadataFilter, MetadataFilters

from mmrag_li.assets import AssetNotFoundError

DEFAULT_COLLECTION = "default"
COLLECTION_KEY = "collection"

T = TypeVar("T")

__all__ = ["COLLECTION_KEY", "DEFAULT_COLLECTION", "CollectionGuard"]


def _metadata(item: Any) -> Optional[Mapping[str, Any]]:
    """The metadata dict of a ``NodeWithScore``, a ``BaseNode`` or a plain mapping (else None)."""
    node = getattr(item, "node", item)
    meta = getattr(node, "metadata", None)
    if isinstance(meta, Mapping):
        return meta
    return item if isinstance(item, Mapping) else None


class CollectionGuard:
    """The tenant scope of one caller: the only collections whose nodes it may reach.

    Args:
        allowed: collection names; ``None`` = unrestricted, ``[]`` = deny all. A single string is
            one collection.
    """

    __slots__ = ("allowed",)

    def __init__(self, allowed: Optional[Iterable[str]] = None):
        if isinstance(allowed, str):
            allowed = [allowed]
        self.allowed: Optional[FrozenSet[str]] = None if allowed is None else frozenset(str(c) for c in allowed)

    # -- construction ------------------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: Any = None) -> "CollectionGuard":
        """The guard a config object describes.

        Args:
            config: a ``Settings`` (reads ``retrieval.allowed_collections``), a ``RetrievalConfig``
                (reads ``allowed_collections``), a ``CollectionGuard`` (returned as is), a list of
                collection names, or None (unrestricted).
        """
        if config is None:
            return cls(None)
        if isinstance(config, CollectionGuard):
            return config
        if isinstance(config, (list, tuple, set, frozenset, str)):
            return cls(config)
        retrieval = getattr(config, "retrieval", None)
        if retrieval is not None and hasattr(retrieval, "allowed_collections"):
            return cls(retrieval.allowed_collections)
        return cls(getattr(config, "allowed_collections", None))

    def narrow(self, other: Any = None) -> "CollectionGuard":
        """The intersection of this guard and ``other`` (what both allow).

        Args:
            other: anything :meth:`from_config` takes; None adds no restriction.
        """
        other = CollectionGuard.from_config(other)
        if other.allowed is None:
            return self
        if self.allowed is None:
            return other
        return CollectionGuard(self.allowed & other.allowed)

    # -- what it allows ----------------------------------------------------------------------------
    @property
    def unrestricted(self) -> bool:
        """True when every collection is visible (``allowed_collections`` is None/absent)."""
        return self.allowed is None

    @property
    def denies_all(self) -> bool:
        """True when nothing is visible (``allowed_collections: []``)."""
        return self.allowed is not None and not self.allowed

    @property
    def scope(self) -> Optional[FrozenSet[str]]:
        """A hashable key of what is visible (None = everything): caches of derived data (the BM25
        index) are kept per scope, so one tenant's statistics never depend on another's data."""
        return self.allowed

    def allows_collection(self, collection: Optional[str]) -> bool:
        """Whether nodes of ``collection`` are visible.

        Args:
            collection: a collection name (None: unknown, visible only when unrestricted).
        """
        if self.allowed is None:
            return True
        return collection is not None and collection in self.allowed

    def allows(self, item: Any) -> bool:
        """Whether a node, a ``NodeWithScore``, a metadata dict or a manifest row is visible.

        Args:
            item: a node (its ``metadata["collection"]``; missing = hidden unless unrestricted), a
                metadata mapping, or a manifest ``FileRecord`` (its ``collection``; missing =
                the default collection; a row without ``asset_id`` is never visible).
        """
        if item is None:
            return False
        meta = _metadata(item)
        if meta is not None:
            return self.allows_collection(meta.get(COLLECTION_KEY))
        if hasattr(item, "asset_id") and hasattr(item, "source"):  # a manifest row
            if not getattr(item, "asset_id", None):
                return False
            return self.allows_collection(getattr(item, "collection", None) or DEFAULT_COLLECTION)
        return self.allows_collection(getattr(item, COLLECTION_KEY, None))

    def keep(self, items: Iterable[T]) -> List[T]:
        """The visible ones of ``items`` (nodes, scored nodes, metadata dicts or manifest rows).

        Args:
            items: what to filter.
        """
        items = list(items)
        return items if self.allowed is None else [i for i in items if self.allows(i)]

    # -- filters -----------------------------------------------------------------------------------
    def filter(self) -> Optional[MetadataFilter]:
        """The LlamaIndex filter ``collection IN allowed`` (None when unrestricted; an empty IN list,
        which matches nothing, when denying all)."""
        if self.allowed is None:
            return None
        return MetadataFilter(key=COLLECTION_KEY, value=sorted(self.allowed), operator=FilterOperator.IN)

    def filters(self, extra: Optional[MetadataFilters] = None) -> Optional[MetadataFilters]:
        """The caller's ``extra`` filters AND this guard (None when neither restricts).

        Args:
            extra: the caller's ``MetadataFilters`` (or None).
        """
        own = self.filter()
        has_extra = extra is not None and bool(extra.filters)
        if own is None:
            return extra if has_extra else None
        if not has_extra:
            return MetadataFilters(filters=[own])
        return MetadataFilters(filters=[own, extra], condition="and")

    # -- assets ------------------------------------------------------------------------------------
    def check_asset(self, record: Optional[T], asked: Optional[str] = None) -> T:
        """``record`` if the caller may see it, else :class:`~mmrag_li.assets.AssetNotFoundError`
        with the message a missing id gets (a hidden asset is never revealed to exist).

        Args:
            record: a manifest row (``FileRecord``), a node or a metadata dict; None = missing.
            asked: what the caller asked for (the error names it; default: the record's asset id).
        """
        if record is not None and self.allows(record):
            return record
        if asked is None:
            meta = _metadata(record) if record is not None else None
            asked = (meta or {}).get("asset_id") if meta is not None else getattr(record, "asset_id", None)
        raise AssetNotFoundError(str(asked or ""))

    def visible_asset_ids(self, records: Iterable[Any]) -> Set[str]:
        """Asset ids of the visible ``records`` (manifest rows, nodes or metadata dicts).

        Args:
            records: e.g. ``manifest.all()`` or nodes from the stores.
        """
        out: Set[str] = set()
        for r in records:
            if not self.allows(r):
                continue
            meta = _metadata(r)
            aid = meta.get("asset_id") if meta is not None else getattr(r, "asset_id", None)
            if aid:
                out.add(aid)
        return out

    # -- value semantics ---------------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        return isinstance(other, CollectionGuard) and other.allowed == self.allowed

    def __hash__(self) -> int:
        return hash(("CollectionGuard", self.allowed))

    def __repr__(self) -> str:
        return f"CollectionGuard({None if self.allowed is None else sorted(self.allowed)!r})"

    def to_dict(self) -> Dict[str, Any]:
        """``{"allowed_collections": None | [names]}`` (for stats and logs)."""
        return {"allowed_collections": None if self.allowed is None else sorted(self.allowed)}

