"""Errors of the ingestion run: the store itself cannot be written (one bad *file* is never fatal)."""

from __future__ import annotations

from mmrag_li.errors import MMRAGError


class IngestAborted(MMRAGError):
    """A store or manifest write failed (disk full, read-only, damaged table): the run stopped.

    Batches committed before stay; the failed batch stays ``pending`` and the next run redoes it.
    """


class StoreNotWritableError(IngestAborted):
    """The store directory cannot be written; checked before anything is changed."""


__all__ = ["IngestAborted", "StoreNotWritableError"]
