"""Per-modality vector stores: four logical collections (image, caption, ocr, text) per backend.

``ModalityStores`` holds one LlamaIndex vector store object per collection, so any of them can be
plugged into a LlamaIndex index (``stores.vector_store("text")``), and adds the operations the
pipeline needs and that the stock integrations get wrong:

* **upsert by node id** – LanceDB ``merge_insert`` on ``id``; Weaviate objects get a deterministic
  ``uuid5(node_id)`` (the stock Weaviate integration uses the node id *as* the UUID, which fails for
  ids such as ``"<asset>:image:p1"``), so re-adding an id replaces it and never duplicates.
* **cosine similarity** – every vector is L2-normalised on write and on query, and searches use
  cosine distance (LanceDB ``distance_type("cosine")``, Weaviate HNSW ``cosine``); the score is
  ``1 - cosine_distance`` (= cosine similarity, higher is better). The stock LanceDB integration
  searches with L2 and reports ``exp(-distance)``; on unit vectors L2 ranks exactly like cosine.
* **fixed schema** – the LanceDB table is created with an explicit Arrow schema (the integration
  infers the struct from the first batch, so a later node with another metadata key or a ``None``
  that became a ``null`` column breaks ``add``). Filterable keys are ``FILTER_FIELDS``; the whole
  node (all metadata, lists included) travels as JSON in ``_node_content``, the integration's own
  format, so the integration's ``query``/``get_nodes`` still read these tables.
* **no pixels in the node JSON** – ``ImageNode.image`` (base64) and ``text_embedding`` are dropped on
  write; ``image_path`` is kept.
* **deletes** – the LanceDB integration builds ``doc_id = "x"`` (double quotes = a column name in
  Lance SQL) and never escapes; here deletes go to the native table with single-quoted, escaped
  literals.
* **empty stores** – the LanceDB integration raises ``Warning("query results are empty..")`` on an
  empty result and ``TableNotFoundError`` before the first add; here both return ``[]``.
* **dimension mismatch** – ``DimensionMismatchError`` names the collection and both dimensions.

Heavy imports (lancedb, pandas, weaviate) are lazy: importing this module costs nothing extra.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import threading
import time
import uuid as _uuid
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Set, Tuple
from urllib.parse import urlparse

import numpy as np
from llama_index.core.schema import BaseNode, ImageNode, MetadataMode, NodeWithScore
from llama_index.core.vector_stores.types import (
    BasePydanticVectorStore,
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
    VectorStoreQueryResult,
)
from llama_index.core.vector_stores.utils import metadata_dict_to_node, node_to_metadata_dict

from .config import Settings, StoreConfig
from .errors import ConfigError, MMRAGError
from .schema import COLLECTIONS, collection_of

__all__ = [
    "ModalityStores",
    "DimensionMismatchError",
    "StoreError",
    "FILTER_FIELDS",
    "build_multimodal_index",
    "lance_where",
    "weaviate_filter",
    "weaviate_connection_args",
    "weaviate_collection_config",
    "weaviate_collection_name",
    "connect_weaviate",
    "node_uuid",
]
# Also importable (built lazily, so importing this module stays cheap):
# LanceModalityVectorStore, WeaviateModalityVectorStore.

_log = logging.getLogger(__name__)

# Metadata keys that are stored as typed, filterable columns/properties (everything else stays in the
# node JSON and comes back on the node, but cannot be filtered on in the database).
FILTER_FIELDS: Dict[str, str] = {
    "asset_id": "text",
    "source": "text",
    "modality": "text",
    "collection": "text",
    "page": "int",
    "ingested_at": "date",
    "image_path": "text",
    "content_hash": "text",
    "mime_type": "text",
    "producer": "text",
}
# Filter keys that address the node id rather than metadata.
_ID_KEYS = ("node_id", "id", "id_")
# What LlamaIndex's node_to_metadata_dict adds; kept so the stock integrations can read our rows.
_INTERNAL_TEXT_FIELDS = ("_node_content", "_node_type", "document_id", "doc_id", "ref_doc_id")
# uuid5 namespace for Weaviate object ids (stable forever: changing it orphans existing objects).
_UUID_NAMESPACE = _uuid.UUID("6f0c1f5e-8f1d-4c55-9a53-8a3c2f6b7d10")


class StoreError(MMRAGError):
    """A vector-store operation failed (bad input, backend error)."""


class DimensionMismatchError(StoreError, ValueError):
    """The vectors offered do not have the dimension the collection was created with."""

    def __init__(self, collection: str, stored_dim: int, new_dim: int):
        super().__init__(
            f"collection {collection!r} holds {stored_dim}-d vectors but the model produces {new_dim}-d; "
            "re-ingest into a new --store (or use the embedding model the store was built with)"
        )
        self.collection = collection
        self.stored_dim = stored_dim
        self.new_dim = new_dim


# --------------------------------------------------------------------------------------------------
# shared helpers
# --------------------------------------------------------------------------------------------------


def _check_collection(collection: str) -> str:
    if collection not in COLLECTIONS:
        raise ValueError(f"unknown collection {collection!r}; expected one of {', '.join(COLLECTIONS)}")
    return collection


def node_uuid(node_id: str) -> str:
    """Deterministic Weaviate UUID for a node id (so re-adding a node id replaces the object)."""
    return str(_uuid.uuid5(_UUID_NAMESPACE, node_id))


def _unit(vec: Any, what: str) -> np.ndarray:
    v = np.asarray(vec, dtype=np.float32).ravel()
    if v.size == 0:
        raise StoreError(f"{what}: empty vector")
    n = float(np.linalg.norm(v))
    if not np.isfinite(n) or n == 0.0:
        raise StoreError(f"{what}: vector is zero or not finite")
    return v / n


def _parse_ts(value: Any) -> Optional[_dt.datetime]:
    """datetime/date/ISO string -> aware UTC datetime (naive = UTC). None if unparseable."""
    if value is None or value == "":
        return None
    if isinstance(value, _dt.datetime):
        dt = value
    elif isinstance(value, _dt.date):
        dt = _dt.datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        s = value.strip()
        try:
            dt = _dt.datetime.fromisoformat(s[:-1] + "+00:00" if s.endswith(("Z", "z")) else s)
        except ValueError:
            return None
    else:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=_dt.timezone.utc)
    return dt.astimezone(_dt.timezone.utc)


def _ts_str(dt: _dt.datetime) -> str:
    # One fixed format, so string comparison == time comparison in LanceDB.
    return dt.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def _is_date_only(value: Any) -> bool:
    if isinstance(value, _dt.date) and not isinstance(value, _dt.datetime):
        return True
    return isinstance(value, str) and len(value.strip()) == 10


def _ts_bound(value: Any, op: FilterOperator) -> _dt.datetime:
    """A filter bound on ingested_at. A bare date means the whole day: ``<= 2024-01-31`` includes
    that day, ``> 2024-01-31`` starts the next one."""
    dt = _parse_ts(value)
    if dt is None:
        raise ValueError(f"ingested_at filter: cannot parse {value!r} as a date/time (ISO 8601 expected)")
    if _is_date_only(value) and op in (FilterOperator.LTE, FilterOperator.GT):
        dt = dt + _dt.timedelta(days=1) - _dt.timedelta(seconds=1)
    return dt.replace(microsecond=0)


def _field_value(key: str, value: Any) -> Any:
    kind = FILTER_FIELDS[key]
    if value is None:
        return None
    if kind == "int":
        if isinstance(value, bool):
            return int(value)
        try:
            return int(value)
        except (TypeError, ValueError):
            return None
    if kind == "date":
        dt = _parse_ts(value)
        return _ts_str(dt) if dt is not None else None
    return value if isinstance(value, str) else str(value)


def _prepare(node: BaseNode, collection: str) -> Tuple[BaseNode, np.ndarray, Dict[str, Any]]:
    """Copy without pixels/embedding, unit vector, and the flat dict of stored fields."""
    if node.embedding is None:
        raise StoreError(
            f"node {node.node_id!r} has no embedding; nodes must be embedded before they are stored"
        )
    vec = _unit(node.embedding, f"node {node.node_id!r}")
    update: Dict[str, Any] = {"embedding": None}
    if isinstance(node, ImageNode):
        update.update(image=None, text_embedding=None)
    clean = node.model_copy(update=update)
    meta = node_to_metadata_dict(clean, remove_text=False, flat_metadata=False)
    fields: Dict[str, Any] = {k: _field_value(k, clean.metadata.get(k)) for k in FILTER_FIELDS}
    if isinstance(clean, ImageNode) and fields["image_path"] is None and clean.image_path:
        fields["image_path"] = str(clean.image_path)
    for k in _INTERNAL_TEXT_FIELDS:
        fields[k] = meta.get(k)
    fields["text"] = clean.get_content(metadata_mode=MetadataMode.NONE) or ""
    return clean, vec, fields


def _node_from_fields(fields: Dict[str, Any]) -> BaseNode:
    node = metadata_dict_to_node(fields)
    node.embedding = None
    return node


def _flatten(filters: Optional[MetadataFilters]) -> bool:
    return bool(filters is not None and filters.filters)


def _check_filter_key(key: str) -> None:
    if key not in FILTER_FIELDS and key not in _ID_KEYS:
        raise ValueError(
            f"cannot filter on metadata key {key!r}: filterable keys are "
            f"{', '.join(list(FILTER_FIELDS) + ['node_id'])}"
        )


# --------------------------------------------------------------------------------------------------
# filter translation: LanceDB SQL
# --------------------------------------------------------------------------------------------------


def _sql_str(value: Any) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _lance_col(key: str) -> str:
    return "id" if key in _ID_KEYS else f"metadata.{key}"


def _lance_lit(key: str, value: Any, op: FilterOperator) -> str:
    kind = "text" if key in _ID_KEYS else FILTER_FIELDS[key]
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError(f"filter on {key!r}: expected a number, got {value!r}")
        return str(int(value))
    if kind == "date":
        return _sql_str(_ts_str(_ts_bound(value, op)))
    return _sql_str(value)


_SQL_OPS = {
    FilterOperator.EQ: "=",
    FilterOperator.NE: "!=",
    FilterOperator.GT: ">",
    FilterOperator.GTE: ">=",
    FilterOperator.LT: "<",
    FilterOperator.LTE: "<=",
}


def _lance_expr(f: MetadataFilter) -> str:
    _check_filter_key(f.key)
    col, op, val = _lance_col(f.key), f.operator, f.value
    if op == FilterOperator.IS_EMPTY:
        return f"({col} IS NULL)"
    if op in (FilterOperator.IN, FilterOperator.NIN):
        values = list(val) if isinstance(val, (list, tuple, set)) else [val]
        if not values:
            return "(1 = 0)" if op == FilterOperator.IN else "(1 = 1)"
        lits = ", ".join(_lance_lit(f.key, v, FilterOperator.EQ) for v in values)
        if op == FilterOperator.IN:
            return f"({col} IN ({lits}))"
        return f"({col} IS NULL OR {col} NOT IN ({lits}))"
    if op in (FilterOperator.TEXT_MATCH, FilterOperator.TEXT_MATCH_INSENSITIVE):
        pat = _sql_str(f"%{val}%")
        if op == FilterOperator.TEXT_MATCH:
            return f"({col} LIKE {pat})"
        return f"(lower({col}) LIKE lower({pat}))"
    if op in _SQL_OPS:
        if isinstance(val, (list, tuple, set)):
            raise ValueError(f"filter on {f.key!r}: operator {op.value!r} takes one value, not a list")
        expr = f"{col} {_SQL_OPS[op]} {_lance_lit(f.key, val, op)}"
        # LlamaIndex semantics: a missing value counts as "not equal".
        return f"({col} IS NULL OR {expr})" if op == FilterOperator.NE else f"({expr})"
    raise ValueError(f"filter operator {op.value!r} is not supported by the LanceDB store")


def lance_where(filters: Optional[MetadataFilters]) -> Optional[str]:
    """MetadataFilters -> a LanceDB SQL predicate over the ``metadata`` struct (None = no filter)."""
    if not _flatten(filters):
        return None
    assert filters is not None
    parts = []
    for f in filters.filters:
        if isinstance(f, MetadataFilters):
            sub = lance_where(f)
            if sub:
                parts.append(f"({sub})")
        else:
            parts.append(_lance_expr(f))
    if not parts:
        return None
    cond = filters.condition or FilterCondition.AND
    if cond == FilterCondition.OR:
        return " OR ".join(parts)
    if cond == FilterCondition.NOT:
        return "NOT (" + " OR ".join(parts) + ")"
    return " AND ".join(parts)


def _and(*preds: Optional[str]) -> Optional[str]:
    ps = [p for p in preds if p]
    if not ps:
        return None
    return ps[0] if len(ps) == 1 else " AND ".join(f"({p})" for p in ps)


def _ids_pred(ids: Sequence[str]) -> str:
    if not ids:
        return "(1 = 0)"
    return "id IN (" + ", ".join(_sql_str(i) for i in ids) + ")"


# --------------------------------------------------------------------------------------------------
# filter translation: Weaviate
# --------------------------------------------------------------------------------------------------


def _wv_value(key: str, value: Any, op: FilterOperator) -> Any:
    kind = "text" if key in _ID_KEYS else FILTER_FIELDS[key]
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError(f"filter on {key!r}: expected a number, got {value!r}")
        return int(value)
    if kind == "date":
        return _ts_bound(value, op)
    return str(value)


def _wv_expr(f: MetadataFilter) -> Any:
    from weaviate.classes.query import Filter

    _check_filter_key(f.key)
    prop = Filter.by_property("node_id" if f.key in _ID_KEYS else f.key)
    op, val = f.operator, f.value
    if op == FilterOperator.IS_EMPTY:
        return prop.is_none(True)
    if op in (FilterOperator.IN, FilterOperator.NIN):
        values = list(val) if isinstance(val, (list, tuple, set)) else [val]
        if not values:
            raise ValueError(f"filter on {f.key!r}: empty list for {op.value!r}")
        expr = prop.contains_any([_wv_value(f.key, v, FilterOperator.EQ) for v in values])
        return expr if op == FilterOperator.IN else Filter.not_(expr)
    if op == FilterOperator.TEXT_MATCH or op == FilterOperator.TEXT_MATCH_INSENSITIVE:
        return prop.like(f"*{val}*")
    method = {
        FilterOperator.EQ: "equal",
        FilterOperator.NE: "not_equal",
        FilterOperator.GT: "greater_than",
        FilterOperator.GTE: "greater_or_equal",
        FilterOperator.LT: "less_than",
        FilterOperator.LTE: "less_or_equal",
    }.get(op)
    if method is None:
        raise ValueError(f"filter operator {op.value!r} is not supported by the Weaviate store")
    if isinstance(val, (list, tuple, set)):
        raise ValueError(f"filter on {f.key!r}: operator {op.value!r} takes one value, not a list")
    return getattr(prop, method)(_wv_value(f.key, val, op))


def weaviate_filter(filters: Optional[MetadataFilters]) -> Any:
    """MetadataFilters -> a ``weaviate.classes.query.Filter`` (None = no filter)."""
    if not _flatten(filters):
        return None
    from weaviate.classes.query import Filter

    assert filters is not None
    parts = []
    for f in filters.filters:
        if isinstance(f, MetadataFilters):
            sub = weaviate_filter(f)
            if sub is not None:
                parts.append(sub)
        else:
            parts.append(_wv_expr(f))
    if not parts:
        return None
    cond = filters.condition or FilterCondition.AND
    if cond == FilterCondition.NOT:
        return Filter.not_(parts[0] if len(parts) == 1 else Filter.any_of(parts))
    if len(parts) == 1:
        return parts[0]
    return Filter.any_of(parts) if cond == FilterCondition.OR else Filter.all_of(parts)


# --------------------------------------------------------------------------------------------------
# LanceDB
# --------------------------------------------------------------------------------------------------


def _lance_schema(dim: int) -> Any:
    import pyarrow as pa

    meta_fields = [
        pa.field(k, pa.int64() if kind == "int" else pa.string()) for k, kind in FILTER_FIELDS.items()
    ] + [pa.field(k, pa.string()) for k in _INTERNAL_TEXT_FIELDS]
    return pa.schema(
        [
            pa.field("id", pa.string()),
            pa.field("doc_id", pa.string()),
            pa.field("vector", pa.list_(pa.float32(), dim)),
            pa.field("text", pa.string()),
            pa.field("metadata", pa.struct(meta_fields)),
        ]
    )


@lru_cache(maxsize=None)
def _lance_cls() -> type:
    from llama_index.core.bridge.pydantic import PrivateAttr
    from llama_index.vector_stores.lancedb import LanceDBVectorStore

    class LanceModalityVectorStore(LanceDBVectorStore):
        """LanceDBVectorStore for one mmrag collection: explicit schema, upsert, cosine, safe deletes.

        Drop-in for any LlamaIndex index: ``add`` upserts, ``query`` returns cosine similarities and an
        empty result instead of raising, ``delete``/``delete_nodes`` quote correctly.
        """

        _lock: Any = PrivateAttr()

        def __init__(self, uri: str, table_name: str, connection: Any = None, **kwargs: Any) -> None:
            super().__init__(uri=uri, table_name=table_name, connection=connection, mode="create", **kwargs)
            self._lock = threading.RLock()

        @classmethod
        def class_name(cls) -> str:
            return "LanceModalityVectorStore"

        # -- table handle ------------------------------------------------------------------------
        def lance_table(self) -> Any:
            """The native LanceDB table, or None while the collection has never been written."""
            if self._table is None:
                try:
                    self._table = self._connection.open_table(self._table_name)
                except (ValueError, FileNotFoundError):
                    return None
            return self._table

        @property
        def dim(self) -> Optional[int]:
            tbl = self.lance_table()
            return None if tbl is None else int(tbl.schema.field(self.vector_column_name).type.list_size)

        def _check_dim(self, got: int) -> None:
            have = self.dim
            if have is not None and have != got:
                raise DimensionMismatchError(str(self._table_name), have, got)

        # -- writes ------------------------------------------------------------------------------
        def add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> List[str]:
            return self.upsert_nodes(nodes)

        def upsert_nodes(self, nodes: Sequence[BaseNode]) -> List[str]:
            import pyarrow as pa

            if not nodes:
                return []
            by_id: Dict[str, Tuple[np.ndarray, Dict[str, Any], Optional[str]]] = {}
            for node in nodes:  # last one wins within a batch
                clean, vec, fields = _prepare(node, str(self._table_name))
                by_id[clean.node_id] = (vec, fields, clean.ref_doc_id)
            dims = {v.shape[0] for v, _, _ in by_id.values()}
            if len(dims) != 1:
                raise StoreError(f"collection {self._table_name!r}: one batch mixes vector sizes {sorted(dims)}")
            dim = dims.pop()
            with self._lock:
                self._check_dim(dim)
                schema = _lance_schema(dim)
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
                else:
                    (
                        tbl.merge_insert("id")
                        .when_matched_update_all()
                        .when_not_matched_insert_all()
                        .execute(data)
                    )
            self._fts_index_ready = False
            return ids

        def delete_where(self, where: str) -> int:
            tbl = self.lance_table()
            if tbl is None:
                return 0
            with self._lock:
                res = tbl.delete(where)
            n = getattr(res, "num_deleted_rows", None)
            return int(n) if n is not None else 0

        def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
            self.delete_where(f"{self.doc_id_key} = {_sql_str(ref_doc_id)}")

        def delete_nodes(
            self,
            node_ids: Optional[List[str]] = None,
            filters: Optional[MetadataFilters] = None,
            **delete_kwargs: Any,
        ) -> None:
            if not node_ids and not _flatten(filters):
                return
            self.delete_where(_and(_ids_pred(node_ids) if node_ids else None, lance_where(filters)) or "1 = 0")

        def clear(self) -> None:
            with self._lock:
                if self.lance_table() is not None:
                    self._connection.drop_table(self._table_name)
                self._table = None

        # -- reads -------------------------------------------------------------------------------
        def search(
            self, embedding: Sequence[float], k: int, filters: Optional[MetadataFilters] = None,
            where: Optional[str] = None,
        ) -> List[NodeWithScore]:
            tbl = self.lance_table()
            if tbl is None or k <= 0:
                return []
            q = _unit(embedding, f"query on collection {self._table_name!r}")
            self._check_dim(q.shape[0])
            pred = _and(lance_where(filters), where)
            lq = tbl.search(q, vector_column_name=self.vector_column_name).distance_type("cosine")
            if pred:
                lq = lq.where(pred, prefilter=True)
            rows = lq.select(["id", "metadata", "_distance"]).limit(k).to_list()
            return [
                NodeWithScore(node=_node_from_fields(r["metadata"]), score=1.0 - float(r["_distance"]))
                for r in rows
            ]

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
                extra.append(_ids_pred(query.node_ids))
            if query.doc_ids:
                extra.append("doc_id IN (" + ", ".join(_sql_str(d) for d in query.doc_ids) + ")")
            hits = self.search(
                query.query_embedding, query.similarity_top_k, query.filters,
                where=_and(*extra, kwargs.get("where")),
            )
            return VectorStoreQueryResult(
                nodes=[h.node for h in hits],
                similarities=[float(h.score or 0.0) for h in hits],
                ids=[h.node.node_id for h in hits],
            )

        def get_nodes(
            self,
            node_ids: Optional[List[str]] = None,
            filters: Optional[MetadataFilters] = None,
            **kwargs: Any,
        ) -> List[BaseNode]:
            pred = _and(_ids_pred(node_ids) if node_ids is not None else None, lance_where(filters),
                        kwargs.get("where"))
            return list(self.iter_nodes(where=pred))

        def iter_nodes(self, where: Optional[str] = None, batch_size: int = 1024) -> Iterator[BaseNode]:
            tbl = self.lance_table()
            if tbl is None:
                return
            q = tbl.search().select(["id", "metadata"])
            if where:
                q = q.where(where)
            for batch in q.limit(None).to_batches(batch_size):
                for m in batch.column("metadata").to_pylist():
                    yield _node_from_fields(m)

        def count_rows(self, where: Optional[str] = None) -> int:
            tbl = self.lance_table()
            if tbl is None:
                return 0
            return int(tbl.count_rows(where) if where else tbl.count_rows())

        def asset_ids(self) -> Set[str]:
            tbl = self.lance_table()
            if tbl is None:
                return set()
            col = tbl.search().select({"asset_id": "metadata.asset_id"}).limit(None).to_arrow().column("asset_id")
            return {a for a in col.to_pylist() if a}

    LanceModalityVectorStore.__qualname__ = "LanceModalityVectorStore"
    return LanceModalityVectorStore


# --------------------------------------------------------------------------------------------------
# Weaviate
# --------------------------------------------------------------------------------------------------


def weaviate_collection_name(prefix: str, collection: str) -> str:
    """``Mmrag`` + ``image`` -> ``MmragImage`` (Weaviate class names start with a capital letter)."""
    _check_collection(collection)
    name = f"{prefix}{collection[:1].upper()}{collection[1:]}"
    if not name[:1].isupper():
        raise ConfigError(f"Weaviate collection name {name!r} must start with a capital letter (store.collection_prefix)")
    return name


def weaviate_connection_args(
    cfg: StoreConfig, env: Optional[Dict[str, str]] = None, store_dir: Optional[str] = None,
    headers: Optional[Dict[str, str]] = None,
) -> Tuple[str, Dict[str, Any]]:
    """Which ``weaviate.connect_to_*`` function to call and with which keyword arguments.

    * mode ``cloud``: ``connect_to_weaviate_cloud(cluster_url=url, auth_credentials=Auth.api_key(key))``,
      the key read from the env var named by ``api_key_env`` (required).
    * mode ``embedded``: ``connect_to_embedded(binary_path=..., version=..., persistence_data_path=
      <store_dir>/weaviate)``; without a local binary the client downloads the server.
    * ``url`` set (mode ``local``/``custom``): ``connect_to_custom`` with host/port/TLS parsed from it
      (gRPC on the same host at ``grpc_port``).
    * otherwise: ``connect_to_local(host, port, grpc_port)``.
    An API key, when the env var is set, is passed as ``auth_credentials`` in every mode.
    """
    from weaviate.classes.init import Auth

    env = dict(os.environ) if env is None else env
    key = env.get(cfg.api_key_env) if cfg.api_key_env else None
    auth = Auth.api_key(key) if key else None
    common: Dict[str, Any] = {}
    if headers:
        common["headers"] = dict(headers)
    if cfg.mode == "cloud":
        if not cfg.url:
            raise ConfigError("store.mode 'cloud' needs store.url (the Weaviate Cloud cluster URL; MMRAG_STORE__URL)")
        if auth is None:
            raise ConfigError(f"store.mode 'cloud' needs an API key in the environment variable {cfg.api_key_env}")
        return "connect_to_weaviate_cloud", {"cluster_url": cfg.url, "auth_credentials": auth, **common}
    if cfg.mode == "embedded":
        kwargs: Dict[str, Any] = dict(common)
        if cfg.embedded_binary_path:
            kwargs["binary_path"] = cfg.embedded_binary_path
        if cfg.embedded_version:
            kwargs["version"] = cfg.embedded_version
        if store_dir:
            kwargs["persistence_data_path"] = str(Path(store_dir) / "weaviate")
        return "connect_to_embedded", kwargs
    if cfg.url:
        raw = cfg.url if "://" in cfg.url else f"http://{cfg.url}"
        u = urlparse(raw)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ConfigError(f"store.url {cfg.url!r}: expected http(s)://host[:port]")
        secure = u.scheme == "https"
        kwargs = {
            "http_host": u.hostname,
            "http_port": u.port or (443 if secure else 80),
            "http_secure": secure,
            "grpc_host": u.hostname,
            "grpc_port": cfg.grpc_port,
            "grpc_secure": secure,
            **common,
        }
        if auth is not None:
            kwargs["auth_credentials"] = auth
        return "connect_to_custom", kwargs
    if cfg.mode == "custom":
        kwargs = {
            "http_host": cfg.host, "http_port": cfg.port, "http_secure": False,
            "grpc_host": cfg.host, "grpc_port": cfg.grpc_port, "grpc_secure": False, **common,
        }
        if auth is not None:
            kwargs["auth_credentials"] = auth
        return "connect_to_custom", kwargs
    kwargs = {"host": cfg.host, "port": cfg.port, "grpc_port": cfg.grpc_port, **common}
    if auth is not None:
        kwargs["auth_credentials"] = auth
    return "connect_to_local", kwargs


def connect_weaviate(cfg: StoreConfig, store_dir: Optional[str] = None) -> Any:
    """Open a Weaviate client as configured (see ``weaviate_connection_args``)."""
    try:
        import weaviate
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ConfigError("store.backend 'weaviate' needs the extra: pip install 'mmrag_li[weaviate]'") from e
    fn, kwargs = weaviate_connection_args(cfg, store_dir=store_dir)
    try:
        return getattr(weaviate, fn)(**kwargs)
    except Exception as e:
        where = cfg.url or (f"{cfg.host}:{cfg.port}" if cfg.mode in ("local", "custom") else cfg.mode)
        raise StoreError(f"cannot connect to Weaviate ({cfg.mode}, {where}): {e}") from e


def weaviate_collection_config(name: str, collection: str = "") -> Dict[str, Any]:
    """Keyword arguments for ``client.collections.create``: explicit properties, no vectorizer
    (vectors are supplied), HNSW with cosine distance, null state indexed (for IS_EMPTY filters)."""
    from weaviate.classes.config import Configure, DataType, Property, Tokenization, VectorDistances

    def text(n: str, field: bool = True, **kw: Any) -> Any:
        return Property(name=n, data_type=DataType.TEXT, skip_vectorization=True,
                        tokenization=Tokenization.FIELD if field else Tokenization.WORD, **kw)

    props = [
        Property(name="text", data_type=DataType.TEXT, skip_vectorization=True, tokenization=Tokenization.WORD),
    ]
    for k, kind in FILTER_FIELDS.items():
        if kind == "int":
            props.append(Property(name=k, data_type=DataType.INT, skip_vectorization=True))
        elif kind == "date":
            props.append(Property(name=k, data_type=DataType.DATE, skip_vectorization=True))
        else:
            props.append(text(k))
    props.append(text("node_id"))
    for k in ("ref_doc_id", "doc_id", "document_id", "_node_type"):
        props.append(text(k))
    props.append(
        Property(name="_node_content", data_type=DataType.TEXT, skip_vectorization=True,
                 index_filterable=False, index_searchable=False)
    )
    return {
        "name": name,
        "description": f"mmrag_li {collection or name} nodes (vectors supplied by the pipeline)",
        "properties": props,
        "vector_config": Configure.Vectors.self_provided(
            vector_index_config=Configure.VectorIndex.hnsw(distance_metric=VectorDistances.COSINE)
        ),
        "inverted_index_config": Configure.inverted_index(index_null_state=True),
    }


def _wv_properties(fields: Dict[str, Any], node_id: str) -> Dict[str, Any]:
    props = {k: v for k, v in fields.items() if v is not None}
    if "ingested_at" in props:  # DATE wants RFC 3339
        props["ingested_at"] = props["ingested_at"].replace("+00:00", "Z")
    props["node_id"] = node_id
    return props


@lru_cache(maxsize=None)
def _weaviate_cls() -> type:
    from llama_index.core.bridge.pydantic import PrivateAttr
    from llama_index.vector_stores.weaviate import WeaviateVectorStore

    class WeaviateModalityVectorStore(WeaviateVectorStore):
        """WeaviateVectorStore for one mmrag collection: explicit schema, uuid5 upserts, cosine
        ``near_vector`` queries (the stock ``query`` runs ``hybrid`` and reports fused scores)."""

        _collection: str = PrivateAttr()
        _dim: Optional[int] = PrivateAttr(default=None)

        def __init__(self, weaviate_client: Any, index_name: str, collection: str = "") -> None:
            if not weaviate_client.collections.exists(index_name):
                weaviate_client.collections.create(**weaviate_collection_config(index_name, collection))
            super().__init__(weaviate_client=weaviate_client, index_name=index_name)
            self._collection = collection or index_name
            self._dim = None

        @classmethod
        def class_name(cls) -> str:
            return "WeaviateModalityVectorStore"

        def native(self) -> Any:
            return self.client.collections.get(self.index_name)

        @property
        def dim(self) -> Optional[int]:
            if self._dim is None:
                res = self.native().query.fetch_objects(limit=1, include_vector=True)
                if res.objects:
                    vec = res.objects[0].vector
                    vec = vec.get("default", next(iter(vec.values()), None)) if isinstance(vec, dict) else vec
                    if vec:
                        self._dim = len(vec)
            return self._dim

        def _check_dim(self, got: int) -> None:
            have = self.dim
            if have is not None and have != got:
                raise DimensionMismatchError(self._collection, have, got)

        def add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> List[str]:
            return self.upsert_nodes(nodes)

        def upsert_nodes(self, nodes: Sequence[BaseNode]) -> List[str]:
            from weaviate.classes.data import DataObject

            if not nodes:
                return []
            objs: Dict[str, Any] = {}
            dims = set()
            for node in nodes:
                clean, vec, fields = _prepare(node, self._collection)
                dims.add(vec.shape[0])
                objs[clean.node_id] = DataObject(
                    properties=_wv_properties(fields, clean.node_id),
                    uuid=node_uuid(clean.node_id),
                    vector={"default": vec.tolist()},
                )
            if len(dims) != 1:
                raise StoreError(f"collection {self._collection!r}: one batch mixes vector sizes {sorted(dims)}")
            dim = dims.pop()
            self._check_dim(dim)
            res = self.native().data.insert_many(list(objs.values()))  # same uuid = replace
            if getattr(res, "has_errors", False):
                first = next(iter(res.errors.values()))
                raise StoreError(f"Weaviate insert into {self.index_name} failed for {len(res.errors)} objects: {first}")
            self._dim = dim
            return list(objs)

        def delete_where(self, flt: Any) -> int:
            res = self.native().data.delete_many(where=flt)
            return int(getattr(res, "successful", 0) or 0)

        def delete_nodes(
            self,
            node_ids: Optional[List[str]] = None,
            filters: Optional[MetadataFilters] = None,
            **delete_kwargs: Any,
        ) -> None:
            from weaviate.classes.query import Filter

            if not node_ids and not _flatten(filters):
                return
            parts = []
            if node_ids:
                parts.append(Filter.by_id().contains_any([node_uuid(i) for i in node_ids]))
            wf = weaviate_filter(filters)
            if wf is not None:
                parts.append(wf)
            self.delete_where(parts[0] if len(parts) == 1 else Filter.all_of(parts))

        def search(
            self, embedding: Sequence[float], k: int, filters: Optional[MetadataFilters] = None, extra: Any = None,
        ) -> List[NodeWithScore]:
            from weaviate.classes.query import Filter, MetadataQuery

            if k <= 0:
                return []
            q = _unit(embedding, f"query on collection {self._collection!r}")
            self._check_dim(q.shape[0])
            parts = [p for p in (weaviate_filter(filters), extra) if p is not None]
            flt = None if not parts else parts[0] if len(parts) == 1 else Filter.all_of(parts)
            res = self.native().query.near_vector(
                near_vector=q.tolist(), limit=k, filters=flt,
                return_metadata=MetadataQuery(distance=True), include_vector=False,
            )
            out = []
            for o in res.objects:
                dist = o.metadata.distance if o.metadata is not None else None
                out.append(NodeWithScore(node=_node_from_fields(dict(o.properties)),
                                         score=None if dist is None else 1.0 - float(dist)))
            return out

        def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
            from weaviate.classes.query import Filter

            if query.mode != VectorStoreQueryMode.DEFAULT or query.query_embedding is None:
                return super().query(query, **kwargs)
            extra = None
            if query.node_ids:
                extra = Filter.by_id().contains_any([node_uuid(i) for i in query.node_ids])
            elif query.doc_ids:
                extra = Filter.by_property("ref_doc_id").contains_any(list(query.doc_ids))
            hits = self.search(query.query_embedding, query.similarity_top_k, query.filters, extra)
            return VectorStoreQueryResult(
                nodes=[h.node for h in hits],
                similarities=[float(h.score or 0.0) for h in hits],
                ids=[h.node.node_id for h in hits],
            )

        def fetch_nodes(self, flt: Any = None, page: int = 1000) -> Iterator[BaseNode]:
            if flt is None:
                for o in self.native().iterator(include_vector=False):
                    yield _node_from_fields(dict(o.properties))
                return
            offset = 0
            while True:
                res = self.native().query.fetch_objects(filters=flt, limit=page, offset=offset)
                for o in res.objects:
                    yield _node_from_fields(dict(o.properties))
                if len(res.objects) < page:
                    return
                offset += page

        def get_nodes(
            self,
            node_ids: Optional[List[str]] = None,
            filters: Optional[MetadataFilters] = None,
            **kwargs: Any,
        ) -> List[BaseNode]:
            from weaviate.classes.query import Filter

            parts = []
            if node_ids is not None:
                parts.append(Filter.by_id().contains_any([node_uuid(i) for i in node_ids] or [node_uuid("")]))
            wf = weaviate_filter(filters)
            if wf is not None:
                parts.append(wf)
            flt = None if not parts else parts[0] if len(parts) == 1 else Filter.all_of(parts)
            return list(self.fetch_nodes(flt))

        def count_rows(self, flt: Any = None) -> int:
            res = self.native().aggregate.over_all(total_count=True, filters=flt)
            return int(res.total_count or 0)

        def asset_ids(self) -> Set[str]:
            out: Set[str] = set()
            for o in self.native().iterator(include_vector=False, return_properties=["asset_id"]):
                a = o.properties.get("asset_id")
                if a:
                    out.add(str(a))
            return out

        def clear(self) -> None:
            if self.client.collections.exists(self.index_name):
                self.client.collections.delete(self.index_name)
            self._dim = None

    WeaviateModalityVectorStore.__qualname__ = "WeaviateModalityVectorStore"
    return WeaviateModalityVectorStore


def __getattr__(name: str) -> Any:  # lazy public names for the store classes
    if name == "LanceModalityVectorStore":
        return _lance_cls()
    if name == "WeaviateModalityVectorStore":
        return _weaviate_cls()
    raise AttributeError(name)


# --------------------------------------------------------------------------------------------------
# ModalityStores
# --------------------------------------------------------------------------------------------------


def _asset_filter(asset_id: str) -> MetadataFilters:
    return MetadataFilters(filters=[MetadataFilter(key="asset_id", value=asset_id, operator=FilterOperator.EQ)])


class ModalityStores:
    """The four collections (image, caption, ocr, text) of one store directory / Weaviate instance.

    Vectors are L2-normalised on write and on query; similarity is cosine (``score`` = cosine
    similarity, higher = better). Nodes must arrive embedded; the store never embeds.
    """

    def __init__(self, backend: str, stores: Dict[str, BasePydanticVectorStore], client: Any = None,
                 store_dir: Optional[str] = None):
        self.backend = backend
        self.store_dir = store_dir
        self._stores = stores
        self._client = client
        self._closed = False
        self._writes = 0  # Weaviate has no table version: count this process's writes instead

    # -- construction ------------------------------------------------------------------------------
    @classmethod
    def from_config(cls, settings: Settings) -> "ModalityStores":
        cfg = settings.store
        if cfg.backend == "lancedb":
            return cls.lancedb(settings.store_dir)
        if cfg.backend == "weaviate":
            client = connect_weaviate(cfg, store_dir=settings.store_dir)
            try:
                return cls.weaviate(client, prefix=cfg.collection_prefix, store_dir=settings.store_dir)
            except Exception:
                client.close()
                raise
        raise ConfigError(f"unknown store.backend {cfg.backend!r}")

    @classmethod
    def lancedb(cls, store_dir: str | os.PathLike[str]) -> "ModalityStores":
        """LanceDB tables ``<store_dir>/lancedb/<collection>.lance`` (created on first write)."""
        import lancedb

        uri = str(Path(store_dir) / "lancedb")
        Path(uri).mkdir(parents=True, exist_ok=True)
        # read_consistency_interval=0: always see writes made by other processes/handles.
        conn = lancedb.connect(uri, read_consistency_interval=_dt.timedelta(0))
        klass = _lance_cls()
        # The integration logs a WARNING per table that does not exist yet; that is normal here.
        lg = logging.getLogger("llama_index.vector_stores.lancedb.base")
        old = lg.level
        lg.setLevel(logging.ERROR)
        try:
            stores = {c: klass(uri=uri, table_name=c, connection=conn) for c in COLLECTIONS}
        finally:
            lg.setLevel(old)
        return cls("lancedb", stores, client=conn, store_dir=str(store_dir))

    @classmethod
    def weaviate(cls, client: Any, prefix: str = "Mmrag", store_dir: Optional[str] = None) -> "ModalityStores":
        """One Weaviate collection per modality, ``f"{prefix}{Collection}"``, created with an explicit schema."""
        klass = _weaviate_cls()
        stores = {c: klass(client, weaviate_collection_name(prefix, c), collection=c) for c in COLLECTIONS}
        return cls("weaviate", stores, client=client, store_dir=store_dir)

    # -- access ------------------------------------------------------------------------------------
    def vector_store(self, collection: str) -> BasePydanticVectorStore:
        """The LlamaIndex vector store object of one collection (plug into any LlamaIndex index)."""
        return self._stores[_check_collection(collection)]

    def _s(self, collection: str) -> Any:
        return self.vector_store(collection)

    @property
    def client(self) -> Any:
        """The lancedb connection or the weaviate client."""
        return self._client

    def dim(self, collection: str) -> Optional[int]:
        """Vector size a collection was created with (None while empty)."""
        return self._s(collection).dim

    # -- writes ------------------------------------------------------------------------------------
    def upsert(self, collection: str, nodes: Sequence[BaseNode]) -> None:
        """Insert or replace by node id (re-adding an id replaces it, never duplicates)."""
        self._s(collection).upsert_nodes(list(nodes))
        self._writes += 1

    def upsert_all(self, nodes: Sequence[BaseNode]) -> Dict[str, int]:
        """Route nodes by ``metadata['modality']`` (schema.collection_of) and upsert; returns counts."""
        groups: Dict[str, List[BaseNode]] = {}
        for n in nodes:
            groups.setdefault(collection_of(str(n.metadata.get("modality", ""))), []).append(n)
        for c, ns in groups.items():
            self.upsert(c, ns)
        return {c: len(ns) for c, ns in groups.items()}

    def delete_asset(self, asset_id: str) -> int:
        """Delete every node of an asset from every collection; returns how many were deleted."""
        total = 0
        for c in COLLECTIONS:
            s = self._s(c)
            if self.backend == "lancedb":
                total += s.delete_where(f"metadata.asset_id = {_sql_str(asset_id)}")
            else:
                total += s.delete_where(weaviate_filter(_asset_filter(asset_id)))
        self._writes += 1
        return total

    def signature(self) -> Tuple:
        """Changes whenever any collection changes, replacements of the same size included, so
        caches built from the stores (the BM25 index) know when to rebuild. LanceDB: the table
        versions, which also move on other processes' writes. Weaviate: counts plus this process's
        writes (a same-size replacement made by another process is not seen)."""
        if self.backend == "lancedb":
            return tuple((c, getattr(self._s(c).lance_table(), "version", None)) for c in COLLECTIONS)
        return tuple(sorted(self.count().items())) + (self._writes,)

    def drop(self) -> None:
        """Remove all four collections (tables / Weaviate collections) with their data."""
        for c in COLLECTIONS:
            self._s(c).clear()

    # -- reads -------------------------------------------------------------------------------------
    def query(self, collection: str, embedding: Sequence[float], k: int,
              filters: Optional[MetadataFilters] = None) -> List[NodeWithScore]:
        """Top-k by cosine similarity (score = cosine, higher = better); [] for an empty collection."""
        return self._s(collection).search(embedding, k, filters)

    def get_asset_nodes(self, asset_id: str) -> List[BaseNode]:
        out: List[BaseNode] = []
        for c in COLLECTIONS:
            out.extend(self._s(c).get_nodes(filters=_asset_filter(asset_id)))
        return out

    def get_assets_nodes(self, asset_ids: Sequence[str]) -> Dict[str, List[BaseNode]]:
        """Nodes of several assets in one filtered query per collection (evidence for a result page)."""
        out: Dict[str, List[BaseNode]] = {a: [] for a in asset_ids}
        if not out:
            return out
        flt = MetadataFilters(filters=[MetadataFilter(key="asset_id", value=list(out), operator=FilterOperator.IN)])
        for c in COLLECTIONS:
            for node in self._s(c).get_nodes(filters=flt):
                out.setdefault(node.metadata.get("asset_id"), []).append(node)
        return out

    def all_nodes(self, collection: str) -> Iterator[BaseNode]:
        s = self._s(collection)
        return s.iter_nodes() if self.backend == "lancedb" else s.fetch_nodes()

    def count(self, collection: Optional[str] = None) -> Dict[str, int]:
        cols = [collection] if collection else list(COLLECTIONS)
        return {c: self._s(c).count_rows() for c in cols}

    def asset_ids(self) -> Set[str]:
        out: Set[str] = set()
        for c in COLLECTIONS:
            out |= self._s(c).asset_ids()
        return out

    def optimize(self) -> Dict[str, float]:
        """Compact LanceDB tables after an ingest: every committed batch adds a data fragment, and
        many small fragments slow every query. Old versions are kept (LanceDB's default, 7 days), so
        readers holding them are not broken. Weaviate manages its own segments: nothing to do."""
        timings: Dict[str, float] = {}
        if self.backend != "lancedb":
            return timings
        for c in COLLECTIONS:
            tbl = self._s(c).lance_table()
            if tbl is None:
                continue
            t0 = time.perf_counter()
            tbl.optimize()
            timings[c] = time.perf_counter() - t0
        return timings

    # -- lifecycle ---------------------------------------------------------------------------------
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.backend == "weaviate" and self._client is not None:
            try:
                self._client.close()
            except Exception:  # pragma: no cover
                _log.debug("weaviate close failed", exc_info=True)

    def __enter__(self) -> "ModalityStores":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ModalityStores(backend={self.backend!r}, store_dir={self.store_dir!r})"


# --------------------------------------------------------------------------------------------------
# LlamaIndex MultiModalVectorStoreIndex over the stores
# --------------------------------------------------------------------------------------------------


def build_multimodal_index(stores: ModalityStores, text_collection: str = "text", *, embed_model: Any,
                           image_embed_model: Any, **kwargs: Any) -> Any:
    """A ``MultiModalVectorStoreIndex`` whose text store is ``text_collection`` and image store ``image``.

    ``embed_model`` must produce vectors of the text collection's size and ``image_embed_model``
    (a ``MultiModalEmbedding``) those of the image collection. Both are required: the defaults
    would resolve ``Settings.embed_model`` (OpenAI) and ``"clip"`` (needs a download).

    Trap handled: the index keeps ``is_text_vector_store_empty`` / ``is_image_vector_store_empty``
    flags, and its ``insert_nodes`` sets one for good when a batch lacks that modality, after which
    retrieval silently skips the store. Our stores answer ``[]`` when empty, so both flags are
    forced False here; insert through ``stores.upsert`` rather than ``index.insert_nodes``.
    """
    from llama_index.core.indices.multi_modal.base import MultiModalVectorStoreIndex

    if embed_model is None or image_embed_model is None:
        raise ConfigError("build_multimodal_index needs embed_model and image_embed_model")
    kwargs.setdefault("is_text_vector_store_empty", False)
    kwargs.setdefault("is_image_vector_store_empty", False)
    index = MultiModalVectorStoreIndex.from_vector_store(
        vector_store=stores.vector_store(text_collection),
        image_vector_store=stores.vector_store("image"),
        embed_model=embed_model,
        image_embed_model=image_embed_model,
        **kwargs,
    )
    return index
