"""LanceDB collections opened lazily: reads through ``lance`` (pylance), writes through ``lancedb``.

A search only reads the tables. ``import lancedb`` alone costs more CPU than everything else a
cold ``mmrag search`` imports (its namespace client builds hundreds of pydantic models), so the
read side of a collection -- vector search, node reads, counts, asset ids, the table version --
goes straight to the Lance dataset with ``lance`` (the format library lancedb itself writes;
the LlamaIndex LanceDB integration depends on it). The write side (upserts, deletes, compaction,
probing, the LlamaIndex ``VectorStore`` API) is the :class:`~mmrag_li.stores.lancedb.LanceModalityVectorStore`,
built on first use. Both see each other's writes: every read checks the table's latest version
first (the same guarantee as the lancedb connection's ``read_consistency_interval=0``).

Reads return exactly what the lancedb path returns (same rows, cosine ``score = 1 - distance``).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Set, Tuple

from llama_index.core.schema import BaseNode, NodeWithScore
from llama_index.core.vector_stores.types import MetadataFilters

from mmrag_li.schema import COLLECTIONS

from .ann import AnnOptions
from .errors import DimensionMismatchError, StoreCorruptError
from .lance_files import never_committed
from .filters import and_where, ids_where, lance_where
from .nodes import ASSET_ID_COLUMN, NodeRecord, node_from_fields, record_from_row, unit_vector

__all__ = ["LazyLanceCollection", "open_lazy_collections"]



# A node is rebuilt from its JSON alone: reading only these two fields of the metadata struct (not
# its ~15 filter fields) saves ~20% of a search's CPU at 250k rows.
NODE_COLUMNS = {"_node_content": "metadata._node_content", "_node_type": "metadata._node_type"}


def _node_fields(batch: Any) -> List[Dict[str, Any]]:
    """``node_from_fields`` input per row of a table or batch read with :data:`NODE_COLUMNS`."""
    return [{"_node_content": c, "_node_type": t}
            for c, t in zip(batch.column("_node_content").to_pylist(), batch.column("_node_type").to_pylist())]


def _damage(table_dir: Path, exc: BaseException) -> StoreCorruptError:
    from .lancedb import damage_message  # only on the error path: it imports lancedb

    return StoreCorruptError(damage_message(table_dir, None, exc))


class LazyLanceCollection:
    """One collection of a LanceDB store: reads with ``lance``, writes with the lancedb-backed
    ``LanceModalityVectorStore`` (created on first use; any attribute this class lacks is its).

    Args:
        uri: the LanceDB directory (``<store_dir>/lancedb``).
        name: the collection (= table name).
        writer: builds the ``LanceModalityVectorStore`` of this collection (called once, on first write).
        ann: how searches use a vector index (``nprobes``, ``refine_factor``, ``ef``; None: defaults).
    """

    backend_name = "lancedb"

    def __init__(self, uri: str | os.PathLike[str], name: str, writer: Callable[[], Any],
                 ann: Optional[AnnOptions] = None):
        self.uri = str(uri)
        self.name = name
        self.ann = ann or AnnOptions()
        self._make_writer = writer
        self._writer: Any = None
        self._ds: Any = None
        self._lock = threading.Lock()

    # -- the two sides ---------------------------------------------------------------------------
    @property
    def table_dir(self) -> Path:
        """The table's directory on disk (``<uri>/<collection>.lance``)."""
        return Path(self.uri) / f"{self.name}.lance"

    def real_store(self) -> Any:
        """The ``LanceModalityVectorStore`` (LlamaIndex vector store) of this collection, built now if needed."""
        with self._lock:
            if self._writer is None:
                self._writer = self._make_writer()
            return self._writer

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_writer", "_make_writer", "_ds", "_lock", "ann"):
            raise AttributeError(name)
        return getattr(self.real_store(), name)

    def dataset(self) -> Any:
        """The Lance dataset at its latest version, or None while the table has never been written.

        Raises:
            StoreCorruptError: the table exists but cannot be opened (names it and the recovery).
        """
        path = self.table_dir
        with self._lock:
            ds = self._ds
            try:
                if ds is None:
                    if not path.is_dir() or never_committed(path):
                        return None
                    import lance

                    ds = lance.dataset(str(path))
                else:
                    latest = ds.latest_version
                    if latest != ds.version:
                        ds = ds.checkout_version(latest)  # a new object: readers holding the old one go on
            except Exception as exc:
                self._ds = None
                if not path.is_dir():  # dropped meanwhile
                    return None
                raise _damage(path, exc) from exc
            self._ds = ds
            return ds

    # -- reads -----------------------------------------------------------------------------------
    @property
    def dim(self) -> Optional[int]:
        ds = self.dataset()
        return None if ds is None else int(ds.schema.field("vector").type.list_size)

    def search(self, embedding: Sequence[float], k: int, filters: Optional[MetadataFilters] = None,
               where: Optional[str] = None) -> List[NodeWithScore]:
        """Top ``k`` by cosine similarity to ``embedding`` among rows matching ``filters`` and the extra
        Lance SQL predicate ``where`` (as ``LanceModalityVectorStore.search``).

        Args:
            embedding: the query vector (normalised here).
            k: how many hits.
            filters: LlamaIndex ``MetadataFilters`` (or None).
            where: an extra Lance SQL predicate (or None).
        """
        ds = self.dataset()
        if ds is None or k <= 0:
            return []
        q = unit_vector(embedding, f"query on collection {self.name!r}")
        have = int(ds.schema.field("vector").type.list_size)
        if have != q.shape[0]:
            raise DimensionMismatchError(self.name, have, int(q.shape[0]))
        pred = and_where(lance_where(filters), where)
        # nprobes/refine_factor/ef matter once the collection has its ANN index; exact search ignores them
        nearest = {"column": "vector", "q": q, "k": k, "metric": "cosine", **self.ann.nearest_params()}
        # _distance named explicitly: left to be added implicitly, lance prints a deprecation warning per search
        tbl = ds.to_table(columns={**NODE_COLUMNS, "_distance": "_distance"}, filter=pred, prefilter=bool(pred),
                          nearest=nearest)
        dists = tbl.column("_distance").to_pylist()
        return [NodeWithScore(node=node_from_fields(m), score=1.0 - float(d)) for m, d in zip(_node_fields(tbl), dists)]

    def iter_nodes(self, filters: Optional[MetadataFilters] = None, *, where: Optional[str] = None,
                   batch_size: int = 1024) -> Iterator[BaseNode]:
        """Every node matching ``filters`` and the Lance SQL ``where``, ``batch_size`` rows at a time.

        Args:
            filters: LlamaIndex ``MetadataFilters`` (or None).
            where: an extra Lance SQL predicate (or None).
            batch_size: rows read per batch.
        """
        ds = self.dataset()
        if ds is None:
            return
        pred = and_where(lance_where(filters), where)
        for batch in ds.to_batches(columns=NODE_COLUMNS, filter=pred, batch_size=batch_size):
            for m in _node_fields(batch):
                yield node_from_fields(m)

    def iter_records(self, batch_size: int = 4096) -> Iterator[NodeRecord]:
        """Every row as a :class:`~mmrag_li.stores.nodes.NodeRecord` (id, text, metadata, node JSON),
        without building LlamaIndex nodes (the keyword index reads a whole collection this way).

        Args:
            batch_size: rows read per batch.
        """
        ds = self.dataset()
        if ds is None:
            return
        for batch in ds.to_batches(columns={"id": "id", "text": "text", **NODE_COLUMNS}, batch_size=batch_size):
            cols = [batch.column(c).to_pylist() for c in ("id", "text", "_node_type", "_node_content")]
            for node_id, text, node_type, node_json in zip(*cols):
                yield record_from_row(node_id, text, node_type, node_json)

    def get_nodes(self, node_ids: Optional[List[str]] = None, filters: Optional[MetadataFilters] = None,
                  **kwargs: Any) -> List[BaseNode]:
        """Nodes by id and/or filters.

        Args:
            node_ids: the node ids (None: any).
            filters: LlamaIndex ``MetadataFilters`` (or None).
            **kwargs: ``where`` adds a Lance SQL predicate.
        """
        pred = and_where(ids_where(node_ids) if node_ids is not None else None, kwargs.get("where"))
        return list(self.iter_nodes(filters, where=pred))

    def count_rows(self, filters: Optional[MetadataFilters] = None, *, where: Optional[str] = None) -> int:
        """Rows matching ``filters`` / ``where`` (all rows without them).

        Args:
            filters: LlamaIndex ``MetadataFilters`` (or None).
            where: an extra Lance SQL predicate (or None).
        """
        ds = self.dataset()
        if ds is None:
            return 0
        pred = and_where(lance_where(filters), where)
        return int(ds.count_rows(filter=pred) if pred else ds.count_rows())

    def asset_ids(self) -> Set[str]:
        """Every asset id in the collection."""
        ds = self.dataset()
        if ds is None:
            return set()
        col = ds.to_table(columns={"asset_id": ASSET_ID_COLUMN}).column("asset_id")
        return {a for a in col.to_pylist() if a}

    def signature(self) -> Optional[int]:
        """The table version: it moves on every write, other processes' writes included."""
        ds = self.dataset()
        return None if ds is None else int(ds.version)

    def close(self) -> None:
        """Forget the open dataset; close the writer if one was built."""
        with self._lock:
            self._ds = None
            writer = self._writer
        if writer is not None:
            writer.close()


def open_lazy_collections(store_dir: str | os.PathLike[str],
                          ann: Optional[AnnOptions] = None) -> Tuple[Dict[str, LazyLanceCollection], Any]:
    """One :class:`LazyLanceCollection` per collection under ``<store_dir>/lancedb`` and the client
    (None: the lancedb connection is made, and shared by the collections, on the first write).
    Existing tables are opened now, so a damaged one raises StoreCorruptError naming it.

    Args:
        store_dir: the store directory.
        ann: when to build a collection's vector index and how searches use it (None: defaults).
    """
    ann = ann or AnnOptions()
    uri = Path(store_dir) / "lancedb"
    state: Dict[str, Any] = {}
    lock = threading.Lock()

    def writer_for(name: str) -> Callable[[], Any]:
        def build() -> Any:
            from .lancedb import open_collections

            with lock:
                if "stores" not in state:
                    state["stores"], state["conn"] = open_collections(store_dir, ann=ann)
                return state["stores"][name]

        return build

    out = {c: LazyLanceCollection(uri, c, writer_for(c), ann=ann) for c in COLLECTIONS}
    for col in out.values():
        col.dataset()
    return out, None
