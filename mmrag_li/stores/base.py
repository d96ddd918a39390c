"""The protocol every store backend implements, and the lazy import of optional backends.

A backend is one LlamaIndex ``BasePydanticVectorStore`` per collection (so it plugs into any
LlamaIndex index) that also offers the operations the pipeline needs: upsert by node id, cosine
search, node iteration, deletes by filters, counts, a change signature, optimisation, a health
check. ``ModalityStores`` talks to backends only through this protocol; backend names are tested
nowhere outside the backend's own module.
"""

from __future__ import annotations

from importlib import import_module
from typing import (
    Any,
    ClassVar,
    Dict,
    Hashable,
    Iterator,
    List,
    Optional,
    Protocol,
    Sequence,
    Set,
    runtime_checkable,
)

from llama_index.core.schema import BaseNode, NodeWithScore
from llama_index.core.vector_stores.types import MetadataFilters, VectorStoreQuery, VectorStoreQueryResult

from mmrag_li.errors import ConfigError

__all__ = ["StoreBackend", "require"]


def require(module: str, extra: str) -> Any:
    """Import ``module`` (an optional dependency) or raise ConfigError naming the ``extra`` to install."""
    try:
        return import_module(module)
    except ImportError as e:
        raise ConfigError(
            f"{module} is not installed; the {extra} store backend needs the extra: "
            f"pip install 'mmrag_li[{extra}]'"
        ) from e


@runtime_checkable
class StoreBackend(Protocol):
    """One collection of one backend (LanceDB table, Weaviate collection).

    Scores are cosine similarities (higher = better); vectors are L2-normalised on write and query;
    nodes arrive embedded and come back without embeddings and without pixels.
    """

    backend_name: ClassVar[str]
    """The backend's name as written in ``store.backend`` (``"lancedb"``, ``"weaviate"``)."""

    @property
    def dim(self) -> Optional[int]:
        """Vector size the collection was created with (None while it was never written)."""

    # -- writes ----------------------------------------------------------------------------------
    def upsert_nodes(self, nodes: Sequence[BaseNode]) -> List[str]:
        """Insert or replace ``nodes`` by node id (the last one wins within a batch); their ids."""

    def delete_by_filters(self, filters: MetadataFilters) -> int:
        """Delete the rows matching ``filters``; how many were deleted."""

    def delete_asset(self, asset_id: str) -> int:
        """Delete every row of asset ``asset_id``; how many were deleted."""

    def delete_nodes(self, node_ids: Optional[List[str]] = None, filters: Optional[MetadataFilters] = None,
                     **delete_kwargs: Any) -> None:
        """LlamaIndex: delete ``node_ids`` and/or the rows matching ``filters``."""

    def clear(self) -> None:
        """Remove the collection with its data (it is created again on the next write)."""

    # -- reads -----------------------------------------------------------------------------------
    def search(self, embedding: Sequence[float], k: int,
               filters: Optional[MetadataFilters] = None) -> List[NodeWithScore]:
        """Top ``k`` nodes by cosine similarity to ``embedding`` among those matching ``filters``."""

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """LlamaIndex: answer a ``VectorStoreQuery`` (empty result, never an error, when empty)."""

    def get_nodes(self, node_ids: Optional[List[str]] = None, filters: Optional[MetadataFilters] = None,
                  **kwargs: Any) -> List[BaseNode]:
        """LlamaIndex: the nodes with ``node_ids`` and/or matching ``filters``."""

    def iter_nodes(self, filters: Optional[MetadataFilters] = None) -> Iterator[BaseNode]:
        """Every node (matching ``filters``), streamed in batches."""

    def count_rows(self, filters: Optional[MetadataFilters] = None) -> int:
        """Number of rows (matching ``filters``)."""

    def asset_ids(self) -> Set[str]:
        """The distinct ``asset_id`` values in the collection."""

    # -- maintenance -----------------------------------------------------------------------------
    def signature(self) -> Hashable:
        """A value that changes whenever the collection changes (same-size replacements included)."""

    def optimize(self) -> Optional[float]:
        """Compact storage after writes; seconds spent, or None when there was nothing to do."""

    def probe(self) -> None:
        """Read enough of the stored data to find damage; raise StoreCorruptError naming it."""

    def health(self, deep: bool = False) -> Dict[str, Any]:
        """``{"backend", "collection", "ok", "rows", "dim", ...}``, ``"error"`` when not ok;
        ``deep`` also probes the stored data (slower)."""

    def close(self) -> None:
        """Release what this collection holds (a shared client is closed by its owner)."""
