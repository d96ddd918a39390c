"""The LanceDB backend: one table per collection under ``<store_dir>/lancedb/<collection>.lance``.

What the stock ``LanceDBVectorStore`` gets wrong and this class fixes:

* **upsert by node id** – ``merge_insert`` on ``id``, so re-adding an id replaces it.
* **cosine similarity** – vectors are L2-normalised on write and query, searches use
  ``distance_type("cosine")`` and report ``1 - distance`` (the integration reports ``exp(-L2)``).
* **fixed schema** – the table is created with an explicit Arrow schema (the integration infers the
  struct from the first batch, so a later node with another metadata key breaks ``add``).
* **deletes** – the integration builds ``doc_id = "x"`` (a column name in Lance SQL) and never
  escapes; here deletes use single-quoted, escaped literals.
* **empty stores** – the integration raises ``Warning`` on an empty result and
  ``TableNotFoundError`` before the first add; here both are ``[]``.
* **damage** – a table or data file that cannot be read raises ``StoreCorruptError`` naming it and
  saying how to recover (``damage_message``).
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, ClassVar, Dict, Iterator, List, Optional, Sequence, Set, Tuple

import lancedb
import numpy as np
import pyarrow as pa
from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.schema import BaseNode, NodeWithScore
from llama_index.core.vector_stores.types import (
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
    VectorStoreQueryResult,
)
from llama_index.vector_stores.lancedb import LanceDBVectorStore

from mmrag_li.errors import MMRAGError
from mmrag_li.schema import COLLECTIONS

from .ann import AnnOptions, ensure_vector_index
from .errors import DimensionMismatchError, StoreCorruptError, StoreError
from .filters import and_where, ids_where, lance_where, sql_str
from .lance_files import never_committed
from .nodes import (
    ASSET_ID_COLUMN,
    FILTER_FIELDS,
    INTERNAL_TEXT_FIELDS,
    asset_filter,
    has_filters,
    node_from_fields,
    prepare_node,
    unit_vector,
)

__all__ = ["LanceModalityVectorStore", "damage_message", "ensure_asset_index", "lance_damage", "lance_schema", "open_collections"]

_log = logging.getLogger(__name__)


def lance_schema(dim: int) -> pa.Schema:
    """The Arrow schema of a collection table holding ``dim``-d vectors."""
    meta_fields = [
        pa.field(k, pa.int64() if kind == "int" else pa.string()) for k, kind in FILTER_FIELDS.items()
    ] + [pa.field(k, pa.string()) for k in INTERNAL_TEXT_FIELDS]
    return pa.schema(
        [
            pa.field("id", pa.string()),
            pa.field("doc_id", pa.string()),
            pa.field("vector", pa.list_(pa.float32(), dim)),
            pa.field("text", pa.string()),
            pa.field("metadata", pa.struct(meta_fields)),
        ]
    )


def damage_message(table_dir: Path, path: Optional[Path], exc: BaseException) -> str:
    """What is damaged (table ``table_dir``, data file ``path`` or its manifest), why (``exc``), and
    how to recover: move the table aside and run the same ingest again."""
    where = f"data file {path}" if path else "its manifest/version files"
    return (f"LanceDB table {table_dir} is damaged: {where} cannot be read ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200] if str(exc) else ''}). Recovery: move {table_dir} aside "
            f"(mv {table_dir} {table_dir}.damaged) and run the same `mmrag ingest` again: the files whose "
            "nodes were in it are read again (vectors come from the embedding cache), nothing else is touched.")


def lance_damage(uri: Path, exc: BaseException) -> StoreCorruptError:
    """A StoreCorruptError for a store at ``uri`` that failed to open with ``exc``, naming the table
    that cannot be opened when one can be found."""
    uri = Path(uri)
    try:
        conn = lancedb.connect(str(uri))
        for c in COLLECTIONS:
            if (uri / f"{c}.lance").exists() and not never_committed(uri / f"{c}.lance"):
                try:
                    conn.open_table(c)
                except Exception as inner:  # the damaged one
                    return StoreCorruptError(damage_message(uri / f"{c}.lance", None, inner))
    except Exception:  # pragma: no cover - the store directory itself is unreadable
        pass
    return StoreCorruptError(f"cannot open the LanceDB store {uri}: {type(exc).__name__}: {exc}")


def ensure_asset_index(tbl: Any) -> bool:
    """Create the BTREE scalar index on ``metadata.asset_id`` unless the table has it: evidence for a
    result page (``asset_id IN (...)``), deletes and inspect then read only the asset's rows instead
    of scanning the table. Returns whether it was created; never raises (an index is an optimisation).

    Args:
        tbl: a native LanceDB table.
    """
    try:
        if any(list(getattr(i, "columns", []) or []) == [ASSET_ID_COLUMN] for i in tbl.list_indices()):
            return False
        tbl.to_lance().create_scalar_index(ASSET_ID_COLUMN, index_type="BTREE")
        return True
    except Exception as exc:  # pragma: no cover - old LanceDB without nested-column indexes
        _log.debug("no scalar index on %s: %s", ASSET_ID_COLUMN, exc)
        return False


class LanceModalityVectorStore(LanceDBVectorStore):
    """LanceDBVectorStore for one mmrag collection: explicit schema, upsert, cosine, safe deletes.

    Drop-in for any LlamaIndex index: ``add`` upserts, ``query`` returns cosine similarities and an
    empty result instead of raising, ``delete``/``delete_nodes`` quote correctly.

    Args:
        uri: the LanceDB directory (``<store_dir>/lancedb``).
        table_name: the collection, which is also the table name.
        connection: an open ``lancedb`` connection (shared by the collections of one store).
        ann: when :meth:`optimize` builds the ANN vector index (None: the ``store.ann_*`` defaults).
    """

    backend_name: ClassVar[str] = "lancedb"
    _lock: Any = PrivateAttr()
    _ann: Any = PrivateAttr()

    def __init__(self, uri: str, table_name: str, connection: Any = None, ann: Optional[AnnOptions] = None,
                 **kwargs: Any) -> None:
        super().__init__(uri=uri, table_name=table_name, connection=connection, mode="create", **kwargs)
        self._lock = threading.RLock()
        self._ann = ann or AnnOptions()

    @classmethod
    def class_name(cls) -> str:
        return "LanceModalityVectorStore"

    # -- table handle ----------------------------------------------------------------------------
    def _table_exists(self, tbl_name: Optional[str] = None) -> bool:
        # a directory whose first write never committed is listed by lancedb but cannot be opened
        name = tbl_name or self._table_name
        return bool(name) and not never_committed(Path(str(self.uri)) / f"{name}.lance")

    def lance_table(self) -> Any:
        """The native LanceDB table, or None while the collection has never been written."""
        if self._table is None:
            try:
                self._table = self._connection.open_table(self._table_name)
            except (ValueError, FileNotFoundError):
                return None
        return self._table

    @property
    def table_dir(self) -> Path:
        """The table's directory on disk (``<uri>/<collection>.lance``)."""
        return Path(str(self.uri)) / f"{self._table_name}.lance"

    @property
    def dim(self) -> Optional[int]:
        tbl = self.lance_table()
        return None if tbl is None else int(tbl.schema.field(self.vector_column_name).type.list_size)

    def _check_dim(self, got: int) -> None:
        have = self.dim
        if have is not None and have != got:
            raise DimensionMismatchError(str(self._table_name), have, got)

    # -- writes ----------------------------------------------------------------------------------
    def add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> List[str]:
        return self.upsert_nodes(nodes)

    def upsert_nodes(self, nodes: Sequence[BaseNode]) -> List[str]:
        if not nodes:
            return []
        by_id: Dict[str, Tuple[np.ndarray, Dict[str, Any], Optional[str]]] = {}
        for node in nodes:  # last one wins within a batch
            clean, vec, fields = prepare_node(node, str(self._table_name))
            by_id[clean.node_id] = (vec, fields, clean.ref_doc_id)
        dims = {v.shape[0] for v, _, _ in by_id.values()}
        if len(dims) != 1:
            raise StoreError(f"collection {self._table_name!r}: one batch mixes vector sizes {sorted(dims)}")
        dim = dims.pop()
        with self._lock:
            self._check_dim(dim)
            schema = lance_schema(dim)
            ids = list(by_id)
            flat = np.concatenate([by_id[i][0] for i in ids]).astype(np.float32)
            meta_type = schema.field("metadata").type
            metas = [{f.name: by_id[i][1].get(f.name) for f in meta_type} for i in ids]
            data = pa.table(
                {
                    "id": pa.array(ids, pa.string()),
                    "doc_id": pa.array([by_id[i][2] or "None" for i in ids], pa.string()),
                    "vector": pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), dim),
                    "text": pa.array([by_id[i][1]["text"] for i in ids], pa.string()),
                    "metadata": pa.array(metas, meta_type),
                },
                schema=schema,
            )
            tbl = self.lance_table()
            if tbl is None:
                self._table = self._connection.create_table(self._table_name, data=data, schema=schema)
                ensure_asset_index(self._table)
            else:
                tbl.merge_insert("id").when_matched_update_all().when_not_matched_insert_all().execute(data)
        self._fts_index_ready = False
        return ids

    def delete_where(self, where: str) -> int:
        """Delete the rows matching the Lance SQL predicate ``where``; how many were deleted."""
        tbl = self.lance_table()
        if tbl is None:
            return 0
        with self._lock:
            res = tbl.delete(where)
        n = getattr(res, "num_deleted_rows", None)
        return int(n) if n is not None else 0

    def delete_by_filters(self, filters: MetadataFilters) -> int:
        where = lance_where(filters)
        if not where:
            raise ValueError("delete_by_filters needs at least one filter (use clear() to remove everything)")
        return self.delete_where(where)

    def delete_asset(self, asset_id: str) -> int:
        return self.delete_by_filters(asset_filter(asset_id))

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        self.delete_where(f"{self.doc_id_key} = {sql_str(ref_doc_id)}")

    def delete_nodes(self, node_ids: Optional[List[str]] = None, filters: Optional[MetadataFilters] = None,
                     **delete_kwargs: Any) -> None:
        if not node_ids and not has_filters(filters):
            return
        self.delete_where(and_where(ids_where(node_ids) if node_ids else None, lance_where(filters)) or "1 = 0")

    def clear(self) -> None:
        with self._lock:
            if self.lance_table() is not None:
                self._connection.drop_table(self._table_name)
            self._table = None

    # -- reads -----------------------------------------------------------------------------------
    def search(self, embedding: Sequence[float], k: int, filters: Optional[MetadataFilters] = None,
               where: Optional[str] = None) -> List[NodeWithScore]:
        """Top ``k`` by cosine similarity to ``embedding`` among rows matching ``filters`` and the
        extra Lance SQL predicate ``where``."""
        tbl = self.lance_table()
        if tbl is None or k <= 0:
            return []
        q = unit_vector(embedding, f"query on collection {self._table_name!r}")
        self._check_dim(q.shape[0])
        pred = and_where(lance_where(filters), where)
        lq = tbl.search(q, vector_column_name=self.vector_column_name).distance_type("cosine")
        if pred:
            lq = lq.where(pred, prefilter=True)
        rows = lq.select(["id", "metadata", "_distance"]).limit(k).to_list()
        return [NodeWithScore(node=node_from_fields(r["metadata"]), score=1.0 - float(r["_distance"]))
                for r in rows]

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        if query.mode not in (VectorStoreQueryMode.DEFAULT,) or query.query_embedding is None:
            if self.lance_table() is None:
                return VectorStoreQueryResult(nodes=[], similarities=[], ids=[])
            try:
                return super().query(query, **kwargs)
            except Warning:  # the integration raises Warning("query results are empty..")
                return VectorStoreQueryResult(nodes=[], similarities=[], ids=[])
        extra = []
        if query.node_ids:
            extra.append(ids_where(query.node_ids))
        if query.doc_ids:
            extra.append("doc_id IN (" + ", ".join(sql_str(d) for d in query.doc_ids) + ")")
        hits = self.search(query.query_embedding, query.similarity_top_k, query.filters,
                           where=and_where(*extra, kwargs.get("where")))
        return VectorStoreQueryResult(nodes=[h.node for h in hits],
                                      similarities=[float(h.score or 0.0) for h in hits],
                                      ids=[h.node.node_id for h in hits])

    def get_nodes(self, node_ids: Optional[List[str]] = None, filters: Optional[MetadataFilters] = None,
                  **kwargs: Any) -> List[BaseNode]:
        pred = and_where(ids_where(node_ids) if node_ids is not None else None, kwargs.get("where"))
        return list(self.iter_nodes(filters, where=pred))

    def iter_nodes(self, filters: Optional[MetadataFilters] = None, *, where: Optional[str] = None,
                   batch_size: int = 1024) -> Iterator[BaseNode]:
        """Every node matching ``filters`` and the Lance SQL ``where``, read ``batch_size`` rows at a time."""
        tbl = self.lance_table()
        if tbl is None:
            return
        pred = and_where(lance_where(filters), where)
        q = tbl.search().select(["id", "metadata"])
        if pred:
            q = q.where(pred)
        for batch in q.limit(None).to_batches(batch_size):
            for m in batch.column("metadata").to_pylist():
                yield node_from_fields(m)

    def count_rows(self, filters: Optional[MetadataFilters] = None, *, where: Optional[str] = None) -> int:
        tbl = self.lance_table()
        if tbl is None:
            return 0
        pred = and_where(lance_where(filters), where)
        return int(tbl.count_rows(pred) if pred else tbl.count_rows())

    def asset_ids(self) -> Set[str]:
        tbl = self.lance_table()
        if tbl is None:
            return set()
        col = tbl.search().select({"asset_id": "metadata.asset_id"}).limit(None).to_arrow().column("asset_id")
        return {a for a in col.to_pylist() if a}

    # -- maintenance -----------------------------------------------------------------------------
    def signature(self) -> Optional[int]:
        """The table version: it moves on every write, other processes' writes included."""
        return getattr(self.lance_table(), "version", None)

    def optimize(self) -> Optional[float]:
        """Compact the table's fragments (every committed batch adds one, and many small fragments
        slow every query), then build the ANN vector index once the table has ``ann.min_rows`` rows
        (``stores/ann.py``). Old versions are kept (LanceDB's default, 7 days), so readers holding
        them are not broken. Seconds spent, None while the table does not exist."""
        tbl = self.lance_table()
        if tbl is None:
            return None
        t0 = time.perf_counter()
        with self._lock:
            ensure_asset_index(tbl)  # stores made before the index existed get it here
            tbl.optimize()  # also adds the rows written since to the indexes
            ensure_vector_index(tbl, self._ann)  # after compaction: train on the compacted fragments
        return time.perf_counter() - t0

    def purge_versions(self) -> Dict[str, int]:
        """Make deleted and replaced rows unrecoverable: rewrite every fragment that has deleted
        rows (``compact_files`` with ``materialize_deletions_threshold=0``), then remove every old
        version's files (``cleanup_old_versions(older_than=0)``). Readers and writers of other
        processes holding an old version fail on their next read of it (they reopen the latest);
        files of a transaction still in flight elsewhere are left alone (``delete_unverified`` off).
        ``{"versions_removed", "bytes_freed"}``."""
        tbl = self.lance_table()
        if tbl is None:
            return {"versions_removed": 0, "bytes_freed": 0}
        with self._lock:
            tbl.to_lance().optimize.compact_files(materialize_deletions=True, materialize_deletions_threshold=0.0)
            stats = tbl.to_lance().cleanup_old_versions(older_than=_dt.timedelta(0))
        return {"versions_removed": int(getattr(stats, "old_versions", 0)),
                "bytes_freed": int(getattr(stats, "bytes_removed", 0))}

    def probe(self) -> None:
        """Read the id column of every data file (footers and one small column: cheap), so a
        damaged file is named before a batch is written, not discovered halfway through."""
        table_dir = self.table_dir
        try:
            tbl = self.lance_table()
            if tbl is None:
                return
            fragments = tbl.to_lance().get_fragments()
        except Exception as exc:
            raise StoreCorruptError(damage_message(table_dir, None, exc)) from exc
        for frag in fragments:
            try:
                frag.to_table(columns=["id"])
            except Exception as exc:
                files = [getattr(f, "path", str(f)) for f in frag.data_files()]
                path = table_dir / "data" / os.path.basename(files[0]) if files else None
                raise StoreCorruptError(damage_message(table_dir, path, exc)) from exc

    def health(self, deep: bool = False) -> Dict[str, Any]:
        out: Dict[str, Any] = {"backend": self.backend_name, "collection": str(self._table_name),
                               "path": str(self.table_dir), "ok": True, "rows": 0, "dim": None}
        try:
            if deep:
                self.probe()
            tbl = self.lance_table()
            if tbl is not None:
                out.update(rows=int(tbl.count_rows()), dim=self.dim, version=tbl.version,
                           fragments=len(tbl.to_lance().get_fragments()))
        except Exception as exc:
            out.update(ok=False, error=str(exc) if isinstance(exc, MMRAGError)
                       else damage_message(self.table_dir, None, exc))
        return out

    def close(self) -> None:
        """Nothing to release here: the connection is shared by the store's collections."""


def open_collections(store_dir: str | os.PathLike[str],
                     ann: Optional[AnnOptions] = None) -> Tuple[Dict[str, LanceModalityVectorStore], Any]:
    """One ``LanceModalityVectorStore`` per collection under ``<store_dir>/lancedb`` (tables are created
    on first write) and the shared connection. A table that cannot be opened raises StoreCorruptError
    naming it and saying how to recover.

    Args:
        store_dir: the store directory.
        ann: when ``optimize`` builds a collection's ANN vector index (None: defaults).
    """
    uri = Path(store_dir) / "lancedb"
    uri.mkdir(parents=True, exist_ok=True)
    # The integration logs a WARNING per table that does not exist yet; that is normal here.
    lg = logging.getLogger("llama_index.vector_stores.lancedb.base")
    old = lg.level
    lg.setLevel(logging.ERROR)
    try:
        # read_consistency_interval=0: always see writes made by other processes/handles.
        conn = lancedb.connect(str(uri), read_consistency_interval=_dt.timedelta(0))
        stores = {c: LanceModalityVectorStore(uri=str(uri), table_name=c, connection=conn, ann=ann)
                  for c in COLLECTIONS}
    except MMRAGError:
        raise
    except Exception as exc:
        raise lance_damage(uri, exc) from exc
    finally:
        lg.setLevel(old)
    return stores, conn
