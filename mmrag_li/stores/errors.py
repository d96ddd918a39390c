"""Store errors: every one is an :class:`mmrag_li.errors.MMRAGError` and says what to do next."""

from __future__ import annotations

from typing import Sequence

from mmrag_li.errors import MMRAGError

__all__ = ["StoreError", "DimensionMismatchError", "StoreCorruptError", "UnsupportedFilterError"]


class StoreError(MMRAGError):
    """A vector-store operation failed (bad input, backend error)."""


class DimensionMismatchError(StoreError, ValueError):
    """The vectors offered do not have the dimension the collection was created with.

    Args:
        collection: the collection (``image``, ``caption``, ``ocr``, ``text``).
        stored_dim: the vector size the collection holds.
        new_dim: the vector size that was offered.
    """

    def __init__(self, collection: str, stored_dim: int, new_dim: int):
        super().__init__(
            f"collection {collection!r} holds {stored_dim}-d vectors but the model produces {new_dim}-d; "
            "re-ingest into a new --store (or use the embedding model the store was built with)"
        )
        self.collection = collection
        self.stored_dim = stored_dim
        self.new_dim = new_dim


class StoreCorruptError(StoreError):
    """A store file cannot be read; the message names it and says how to recover."""


class UnsupportedFilterError(StoreError, ValueError):
    """A metadata filter uses an operator the backend cannot translate (it never matches silently).

    Args:
        key: the metadata key of the filter.
        operator: the operator's value (e.g. ``"contains"``).
        backend: the backend's name (``lancedb``, ``weaviate``).
        supported: the operators that backend does translate.
    """

    def __init__(self, key: str, operator: str, backend: str, supported: Sequence[str]):
        super().__init__(
            f"filter operator {operator!r} on {key!r} is not supported by the {backend} store; "
            f"supported operators: {', '.join(supported)}"
        )
        self.key = key
        self.operator = operator
        self.backend = backend
