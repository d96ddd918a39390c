"""Errors of the ingestion run: the store itself cannot be written (one bad *file* is never fatal)."""

from __future__ import annotations

from mmrag_li.errors import MMRAGError


class IngestAborted(MMRAGError):
    """A store or manifest write failed (disk full, read-only, damaged table): the run stopped.

    Batches committed before stay; the failed batch stays ``pending`` and the next run redoes it.
    """


class StoreNotWritableError(IngestAborted):
    """The store directory cannot be written; checked before anything is changed."""


class CollectionNotAllowedError(MMRAGError):
    """A write (ingest, prune, delete, reconcile) aimed at a collection the caller's
    ``retrieval.allowed_collections`` does not include; raised before anything changed.

    Args:
        collection: the collection asked for.
        allowed: the allowed collections (None = all).
        action: what was refused (``ingest``, ...).
    """

    def __init__(self, collection: str, allowed, action: str = "ingest"):
        self.collection = collection
        shown = "none" if allowed is not None and not allowed else ", ".join(sorted(allowed or []))
        super().__init__(f"{action} into collection {collection!r} refused: retrieval.allowed_collections allows "
                         f"only [{shown}]; nothing was changed. Use a config whose allowed_collections includes it.")


__all__ = ["IngestAborted", "StoreNotWritableError", "CollectionNotAllowedError"]
