"""Node <-> stored row conversion shared by every backend (no backend-specific code here).

A stored row is: a unit vector, the typed filterable fields (``FILTER_FIELDS``), the text, and the
whole node as JSON in ``_node_content`` (LlamaIndex's own format, so the stock integrations can read
our rows). Pixels (``ImageNode.image``) and embeddings never go into the JSON.
"""

from __future__ import annotations

import datetime as _dt
import json
import uuid as _uuid
from typing import Any, Dict, NamedTuple, Optional, Tuple

import numpy as np
from llama_index.core.schema import BaseNode, ImageNode, MetadataMode
from llama_index.core.vector_stores.types import (
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)
from llama_index.core.vector_stores.utils import metadata_dict_to_node, node_to_metadata_dict

from mmrag_li.schema import COLLECTIONS

from .errors import StoreError

__all__ = [
    "FILTER_FIELDS",
    "ID_KEYS",
    "INTERNAL_TEXT_FIELDS",
    "NodeRecord",
    "asset_filter",
    "check_collection",
    "has_filters",
    "node_from_fields",
    "node_uuid",
    "parse_timestamp",
    "prepare_node",
    "record_from_row",
    "record_of",
    "timestamp_bound",
    "timestamp_str",
    "unit_vector",
]

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
ID_KEYS = ("node_id", "id", "id_")
# What LlamaIndex's node_to_metadata_dict adds; kept so the stock integrations can read our rows.
INTERNAL_TEXT_FIELDS = ("_node_content", "_node_type", "document_id", "doc_id", "ref_doc_id")
#: The stored column of a node's asset id (LanceDB); a BTREE scalar index is kept on it.
ASSET_ID_COLUMN = "metadata.asset_id"
# uuid5 namespace for Weaviate object ids (stable forever: changing it orphans existing objects).
_UUID_NAMESPACE = _uuid.UUID("6f0c1f5e-8f1d-4c55-9a53-8a3c2f6b7d10")


def check_collection(collection: str) -> str:
    """Return ``collection`` if it is one of ``schema.COLLECTIONS``, else raise ValueError naming them."""
    if collection not in COLLECTIONS:
        raise ValueError(f"unknown collection {collection!r}; expected one of {', '.join(COLLECTIONS)}")
    return collection


def node_uuid(node_id: str) -> str:
    """Deterministic UUID for a node id ``node_id`` (so re-adding a node id replaces the object)."""
    return str(_uuid.uuid5(_UUID_NAMESPACE, node_id))


def unit_vector(vec: Any, what: str) -> np.ndarray:
    """``vec`` as an L2-normalised float32 array; ``what`` names it in the StoreError for an empty,
    zero or non-finite vector."""
    v = np.asarray(vec, dtype=np.float32).ravel()
    if v.size == 0:
        raise StoreError(f"{what}: empty vector")
    n = float(np.linalg.norm(v))
    if not np.isfinite(n) or n == 0.0:
        raise StoreError(f"{what}: vector is zero or not finite")
    return v / n


def parse_timestamp(value: Any) -> Optional[_dt.datetime]:
    """``value`` (datetime/date/ISO string) -> aware UTC datetime (naive = UTC); None if unparseable."""
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


def timestamp_str(dt: _dt.datetime) -> str:
    """``dt`` in one fixed UTC format, so string comparison == time comparison."""
    return dt.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def _is_date_only(value: Any) -> bool:
    if isinstance(value, _dt.date) and not isinstance(value, _dt.datetime):
        return True
    return isinstance(value, str) and len(value.strip()) == 10


def timestamp_bound(value: Any, op: FilterOperator) -> _dt.datetime:
    """A filter bound ``value`` on ingested_at for operator ``op``. A bare date means the whole day:
    ``<= 2024-01-31`` includes that day, ``> 2024-01-31`` starts the next one."""
    dt = parse_timestamp(value)
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
        try:
            return int(value)
        except (TypeError, ValueError):
            return None
    if kind == "date":
        dt = parse_timestamp(value)
        return timestamp_str(dt) if dt is not None else None
    return value if isinstance(value, str) else str(value)


def prepare_node(node: BaseNode, collection: str) -> Tuple[BaseNode, np.ndarray, Dict[str, Any]]:
    """For ``node`` headed to ``collection``: a copy without pixels/embedding, its unit vector, and the
    flat dict of stored fields (``FILTER_FIELDS``, ``INTERNAL_TEXT_FIELDS`` and ``text``)."""
    if node.embedding is None:
        raise StoreError(
            f"node {node.node_id!r} has no embedding; nodes must be embedded before they are stored"
        )
    vec = unit_vector(node.embedding, f"node {node.node_id!r}")
    update: Dict[str, Any] = {"embedding": None}
    if isinstance(node, ImageNode):
        update.update(image=None, text_embedding=None)
    clean = node.model_copy(update=update)
    meta = node_to_metadata_dict(clean, remove_text=False, flat_metadata=False)
    fields: Dict[str, Any] = {k: _field_value(k, clean.metadata.get(k)) for k in FILTER_FIELDS}
    if isinstance(clean, ImageNode) and fields["image_path"] is None and clean.image_path:
        fields["image_path"] = str(clean.image_path)
    for k in INTERNAL_TEXT_FIELDS:
        fields[k] = meta.get(k)
    fields["text"] = clean.get_content(metadata_mode=MetadataMode.NONE) or ""
    return clean, vec, fields


def node_from_fields(fields: Dict[str, Any]) -> BaseNode:
    """The node stored in a row's ``fields`` (its ``_node_content`` JSON), without embedding."""
    node = metadata_dict_to_node(fields)
    node.embedding = None
    return node


class NodeRecord(NamedTuple):
    """A stored node before it is rebuilt (what a store row holds), so a keyword index can be built
    without creating LlamaIndex objects. ``node_json`` is ``BaseNode.to_json()``.

    Args:
        node_id: the node id.
        text: the node's text (``get_content(MetadataMode.NONE)``).
        metadata: the node's metadata dict.
        node_type: the node's ``class_name()`` ("TextNode", "ImageNode", ...).
        node_json: the node as JSON.
    """

    node_id: str
    text: str
    metadata: Dict[str, Any]
    node_type: str
    node_json: str


def record_of(node: BaseNode) -> NodeRecord:
    """The :class:`NodeRecord` of a LlamaIndex node.

    Args:
        node: the node.
    """
    return NodeRecord(node.node_id, node.get_content(MetadataMode.NONE), dict(node.metadata or {}),
                      node.class_name(), node.to_json())


def record_from_row(node_id: str, text: str, node_type: Optional[str], node_json: str) -> NodeRecord:
    """The :class:`NodeRecord` of a stored row (its ``_node_content`` and ``_node_type`` fields).

    Args:
        node_id: the row's id.
        text: the row's text column.
        node_type: ``_node_type`` (None: a text node).
        node_json: ``_node_content``.
    """
    return NodeRecord(node_id, text or "", json.loads(node_json).get("metadata") or {}, node_type or "TextNode",
                      node_json)


def has_filters(filters: Optional[MetadataFilters]) -> bool:
    """True when ``filters`` is not None and holds at least one filter."""
    return bool(filters is not None and filters.filters)


def asset_filter(asset_id: Any) -> MetadataFilters:
    """Filters for the nodes of one asset (``asset_id`` a str) or of several (a list: ``IN``)."""
    if isinstance(asset_id, (list, tuple, set)):
        return MetadataFilters(filters=[MetadataFilter(key="asset_id", value=list(asset_id),
                                                       operator=FilterOperator.IN)])
    return MetadataFilters(filters=[MetadataFilter(key="asset_id", value=asset_id, operator=FilterOperator.EQ)])
