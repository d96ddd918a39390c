"""The Weaviate backend: one Weaviate collection per modality, ``f"{prefix}{Collection}"``.

Needs the extra (``pip install 'mmrag_li[weaviate]'``); importing this module without it raises a
ConfigError that says so. What the stock ``WeaviateVectorStore`` gets wrong and this class fixes:
it uses the node id *as* the UUID (fails for ids such as ``"<asset>:image:p1"``; here objects get
``uuid5(node_id)``, so re-adding an id replaces it), its ``query`` runs ``hybrid`` and reports fused
scores (here ``near_vector`` with cosine distance, score = cosine similarity), and its async methods
need an async client (here they run the sync client's calls in a worker thread).
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any, ClassVar, Dict, Iterator, List, Optional, Sequence, Set, Tuple
from urllib.parse import urlparse

from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.schema import BaseNode, NodeWithScore
from llama_index.core.vector_stores.types import (
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
    VectorStoreQueryResult,
)

from mmrag_li.config import Settings, StoreConfig
from mmrag_li.errors import ConfigError
from mmrag_li.schema import COLLECTIONS

from .base import require
from .errors import DimensionMismatchError, StoreError
from .filters import weaviate_filter
from .nodes import FILTER_FIELDS, asset_filter, check_collection, has_filters, node_from_fields, node_uuid
from .nodes import prepare_node, unit_vector

weaviate = require("weaviate", "weaviate")
WeaviateVectorStore = require("llama_index.vector_stores.weaviate", "weaviate").WeaviateVectorStore
from weaviate.classes.query import Filter, MetadataQuery  # noqa: E402  (after the friendly check)

__all__ = [
    "WeaviateModalityVectorStore",
    "connect_weaviate",
    "open_collections",
    "open_from_settings",
    "weaviate_collection_config",
    "weaviate_collection_name",
    "weaviate_connection_args",
    "weaviate_properties",
]

_log = logging.getLogger(__name__)


def weaviate_collection_name(prefix: str, collection: str) -> str:
    """``prefix`` + ``collection``: ``Mmrag`` + ``image`` -> ``MmragImage`` (a capital letter first)."""
    check_collection(collection)
    name = f"{prefix}{collection[:1].upper()}{collection[1:]}"
    if not name[:1].isupper():
        raise ConfigError(f"Weaviate collection name {name!r} must start with a capital letter (store.collection_prefix)")
    return name


def weaviate_connection_args(
    cfg: StoreConfig, env: Optional[Dict[str, str]] = None, store_dir: Optional[str] = None,
    headers: Optional[Dict[str, str]] = None,
) -> Tuple[str, Dict[str, Any]]:
    """Which ``weaviate.connect_to_*`` function to call for store config ``cfg`` and with which
    keyword arguments (``env``: the environment, default ``os.environ``; ``store_dir``: where embedded
    mode keeps its data; ``headers``: extra HTTP headers).

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
    common: Dict[str, Any] = {"headers": dict(headers)} if headers else {}
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
        kwargs = {"http_host": u.hostname, "http_port": u.port or (443 if secure else 80), "http_secure": secure,
                  "grpc_host": u.hostname, "grpc_port": cfg.grpc_port, "grpc_secure": secure, **common}
        fn = "connect_to_custom"
    elif cfg.mode == "custom":
        kwargs = {"http_host": cfg.host, "http_port": cfg.port, "http_secure": False,
                  "grpc_host": cfg.host, "grpc_port": cfg.grpc_port, "grpc_secure": False, **common}
        fn = "connect_to_custom"
    else:
        kwargs = {"host": cfg.host, "port": cfg.port, "grpc_port": cfg.grpc_port, **common}
        fn = "connect_to_local"
    if auth is not None:
        kwargs["auth_credentials"] = auth
    return fn, kwargs


def connect_weaviate(cfg: StoreConfig, store_dir: Optional[str] = None) -> Any:
    """Open a sync Weaviate client as store config ``cfg`` says (see ``weaviate_connection_args``;
    ``store_dir`` is where embedded mode keeps its data)."""
    fn, kwargs = weaviate_connection_args(cfg, store_dir=store_dir)
    try:
        return getattr(weaviate, fn)(**kwargs)
    except Exception as e:
        where = cfg.url or (f"{cfg.host}:{cfg.port}" if cfg.mode in ("local", "custom") else cfg.mode)
        raise StoreError(f"cannot connect to Weaviate ({cfg.mode}, {where}): {e}") from e


def weaviate_collection_config(name: str, collection: str = "") -> Dict[str, Any]:
    """Keyword arguments for ``client.collections.create`` of collection ``name`` (holding mmrag
    ``collection``): explicit properties, no vectorizer (vectors are supplied), HNSW with cosine
    distance, null state indexed (for IS_EMPTY filters)."""
    from weaviate.classes.config import Configure, DataType, Property, Tokenization, VectorDistances

    def text(n: str, field: bool = True) -> Any:
        return Property(name=n, data_type=DataType.TEXT, skip_vectorization=True,
                        tokenization=Tokenization.FIELD if field else Tokenization.WORD)

    props = [text("text", field=False)]
    for k, kind in FILTER_FIELDS.items():
        if kind == "int":
            props.append(Property(name=k, data_type=DataType.INT, skip_vectorization=True))
        elif kind == "date":
            props.append(Property(name=k, data_type=DataType.DATE, skip_vectorization=True))
        else:
            props.append(text(k))
    props += [text(k) for k in ("node_id", "ref_doc_id", "doc_id", "document_id", "_node_type")]
    props.append(Property(name="_node_content", data_type=DataType.TEXT, skip_vectorization=True,
                          index_filterable=False, index_searchable=False))
    return {
        "name": name,
        "description": f"mmrag_li {collection or name} nodes (vectors supplied by the pipeline)",
        "properties": props,
        "vector_config": Configure.Vectors.self_provided(
            vector_index_config=Configure.VectorIndex.hnsw(distance_metric=VectorDistances.COSINE)
        ),
        "inverted_index_config": Configure.inverted_index(index_null_state=True),
    }


def weaviate_properties(fields: Dict[str, Any], node_id: str) -> Dict[str, Any]:
    """The object properties for stored ``fields`` (see ``prepare_node``) of node ``node_id``:
    None values dropped, ``ingested_at`` in RFC 3339, ``node_id`` added."""
    props = {k: v for k, v in fields.items() if v is not None}
    if "ingested_at" in props:  # DATE wants RFC 3339
        props["ingested_at"] = props["ingested_at"].replace("+00:00", "Z")
    props["node_id"] = node_id
    return props


def _all(parts: List[Any]) -> Any:
    parts = [p for p in parts if p is not None]
    return None if not parts else parts[0] if len(parts) == 1 else Filter.all_of(parts)


class WeaviateModalityVectorStore(WeaviateVectorStore):
    """WeaviateVectorStore for one mmrag collection: explicit schema, uuid5 upserts, cosine
    ``near_vector`` queries, and async methods that work with the sync client.

    Args:
        weaviate_client: a sync ``weaviate.WeaviateClient`` (the async methods run its calls in a
            worker thread, so no async client is needed).
        index_name: the Weaviate collection (created with ``weaviate_collection_config`` if missing).
        collection: the mmrag collection it holds (``image``, ``caption``, ``ocr``, ``text``).
    """

    backend_name: ClassVar[str] = "weaviate"
    _collection: str = PrivateAttr()
    _dim: Optional[int] = PrivateAttr(default=None)
    _writes: int = PrivateAttr(default=0)

    def __init__(self, weaviate_client: Any, index_name: str, collection: str = "") -> None:
        if isinstance(weaviate_client, weaviate.WeaviateAsyncClient):
            raise StoreError("WeaviateModalityVectorStore needs a sync weaviate.WeaviateClient; its async "
                             "methods run the sync calls in a worker thread")
        if not weaviate_client.collections.exists(index_name):
            weaviate_client.collections.create(**weaviate_collection_config(index_name, collection))
        super().__init__(weaviate_client=weaviate_client, index_name=index_name)
        self._collection = collection or index_name
        self._dim = None
        self._writes = 0

    @classmethod
    def class_name(cls) -> str:
        return "WeaviateModalityVectorStore"

    def native(self) -> Any:
        """The native Weaviate collection object."""
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

    # -- writes ----------------------------------------------------------------------------------
    def add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> List[str]:
        return self.upsert_nodes(nodes)

    def upsert_nodes(self, nodes: Sequence[BaseNode]) -> List[str]:
        from weaviate.classes.data import DataObject

        if not nodes:
            return []
        objs: Dict[str, Any] = {}
        dims = set()
        for node in nodes:  # last one wins within a batch
            clean, vec, fields = prepare_node(node, self._collection)
            dims.add(vec.shape[0])
            objs[clean.node_id] = DataObject(properties=weaviate_properties(fields, clean.node_id),
                                             uuid=node_uuid(clean.node_id), vector={"default": vec.tolist()})
        if len(dims) != 1:
            raise StoreError(f"collection {self._collection!r}: one batch mixes vector sizes {sorted(dims)}")
        dim = dims.pop()
        self._check_dim(dim)
        res = self.native().data.insert_many(list(objs.values()))  # same uuid = replace
        self._writes += 1
        if getattr(res, "has_errors", False):
            first = next(iter(res.errors.values()))
            raise StoreError(f"Weaviate insert into {self.index_name} failed for {len(res.errors)} objects: {first}")
        self._dim = dim
        return list(objs)

    def delete_where(self, flt: Any) -> int:
        """Delete the objects matching the native Weaviate filter ``flt``; how many were deleted."""
        res = self.native().data.delete_many(where=flt)
        self._writes += 1
        return int(getattr(res, "successful", 0) or 0)

    def delete_by_filters(self, filters: MetadataFilters) -> int:
        flt = weaviate_filter(filters)
        if flt is None:
            raise ValueError("delete_by_filters needs at least one filter (use clear() to remove everything)")
        return self.delete_where(flt)

    def delete_asset(self, asset_id: str) -> int:
        return self.delete_by_filters(asset_filter(asset_id))

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        self.delete_where(Filter.by_property("ref_doc_id").equal(ref_doc_id))

    def delete_nodes(self, node_ids: Optional[List[str]] = None, filters: Optional[MetadataFilters] = None,
                     **delete_kwargs: Any) -> None:
        if not node_ids and not has_filters(filters):
            return
        ids = Filter.by_id().contains_any([node_uuid(i) for i in node_ids]) if node_ids else None
        self.delete_where(_all([ids, weaviate_filter(filters)]))

    def clear(self) -> None:
        if self.client.collections.exists(self.index_name):
            self.client.collections.delete(self.index_name)
        self._dim = None
        self._writes += 1

    # -- reads -----------------------------------------------------------------------------------
    def search(self, embedding: Sequence[float], k: int, filters: Optional[MetadataFilters] = None,
               extra: Any = None) -> List[NodeWithScore]:
        """Top ``k`` by cosine similarity to ``embedding`` among objects matching ``filters`` and the
        native Weaviate filter ``extra``."""
        if k <= 0:
            return []
        q = unit_vector(embedding, f"query on collection {self._collection!r}")
        self._check_dim(q.shape[0])
        res = self.native().query.near_vector(
            near_vector=q.tolist(), limit=k, filters=_all([weaviate_filter(filters), extra]),
            return_metadata=MetadataQuery(distance=True), include_vector=False,
        )
        out = []
        for o in res.objects:
            dist = o.metadata.distance if o.metadata is not None else None
            out.append(NodeWithScore(node=node_from_fields(dict(o.properties)),
                                     score=None if dist is None else 1.0 - float(dist)))
        return out

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        if query.mode != VectorStoreQueryMode.DEFAULT or query.query_embedding is None:
            return super().query(query, **kwargs)
        extra = None
        if query.node_ids:
            extra = Filter.by_id().contains_any([node_uuid(i) for i in query.node_ids])
        elif query.doc_ids:
            extra = Filter.by_property("ref_doc_id").contains_any(list(query.doc_ids))
        hits = self.search(query.query_embedding, query.similarity_top_k, query.filters, extra)
        return VectorStoreQueryResult(nodes=[h.node for h in hits],
                                      similarities=[float(h.score or 0.0) for h in hits],
                                      ids=[h.node.node_id for h in hits])

    def fetch_nodes(self, flt: Any = None, page: int = 1000) -> Iterator[BaseNode]:
        """Every node matching the native Weaviate filter ``flt``, fetched ``page`` objects at a time."""
        if flt is None:
            for o in self.native().iterator(include_vector=False):
                yield node_from_fields(dict(o.properties))
            return
        offset = 0
        while True:
            res = self.native().query.fetch_objects(filters=flt, limit=page, offset=offset)
            for o in res.objects:
                yield node_from_fields(dict(o.properties))
            if len(res.objects) < page:
                return
            offset += page

    def iter_nodes(self, filters: Optional[MetadataFilters] = None) -> Iterator[BaseNode]:
        return self.fetch_nodes(weaviate_filter(filters))

    def get_nodes(self, node_ids: Optional[List[str]] = None, filters: Optional[MetadataFilters] = None,
                  **kwargs: Any) -> List[BaseNode]:
        ids = None
        if node_ids is not None:
            ids = Filter.by_id().contains_any([node_uuid(i) for i in node_ids] or [node_uuid("")])
        return list(self.fetch_nodes(_all([ids, weaviate_filter(filters)])))

    def count_rows(self, filters: Optional[MetadataFilters] = None) -> int:
        res = self.native().aggregate.over_all(total_count=True, filters=weaviate_filter(filters))
        return int(res.total_count or 0)

    def asset_ids(self) -> Set[str]:
        out: Set[str] = set()
        for o in self.native().iterator(include_vector=False, return_properties=["asset_id"]):
            a = o.properties.get("asset_id")
            if a:
                out.add(str(a))
        return out

    # -- async twins: the sync calls in a worker thread (the stock ones need an async client) ------
    async def async_add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> List[str]:
        return await asyncio.to_thread(self.add, nodes, **add_kwargs)

    async def aquery(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        return await asyncio.to_thread(self.query, query, **kwargs)

    async def adelete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        await asyncio.to_thread(self.delete, ref_doc_id, **delete_kwargs)

    async def adelete_nodes(self, node_ids: Optional[List[str]] = None, filters: Optional[MetadataFilters] = None,
                            **delete_kwargs: Any) -> None:
        await asyncio.to_thread(self.delete_nodes, node_ids, filters, **delete_kwargs)

    async def aget_nodes(self, node_ids: Optional[List[str]] = None, filters: Optional[MetadataFilters] = None,
                         **kwargs: Any) -> List[BaseNode]:
        return await asyncio.to_thread(self.get_nodes, node_ids, filters, **kwargs)

    async def aclear(self) -> None:
        await asyncio.to_thread(self.clear)

    # -- maintenance -----------------------------------------------------------------------------
    def signature(self) -> Tuple[int, int]:
        """The object count and this handle's write count (a same-size replacement made by another
        process is not seen: Weaviate has no table version)."""
        return self.count_rows(), self._writes

    def optimize(self) -> Optional[float]:
        """Weaviate manages its own segments: nothing to do (None)."""
        return None

    def probe(self) -> None:
        """Count the objects; a collection that cannot be read raises StoreError naming it."""
        try:
            self.native().aggregate.over_all(total_count=True)
        except Exception as exc:
            raise StoreError(f"Weaviate collection {self.index_name} cannot be read: "
                             f"{type(exc).__name__}: {exc}") from exc

    def health(self, deep: bool = False) -> Dict[str, Any]:
        out: Dict[str, Any] = {"backend": self.backend_name, "collection": self._collection,
                               "index_name": self.index_name, "ok": True, "rows": 0, "dim": None}
        try:
            out.update(rows=self.count_rows(), dim=self.dim)
        except Exception as exc:
            out.update(ok=False, error=f"Weaviate collection {self.index_name} cannot be read: "
                                       f"{type(exc).__name__}: {exc}")
        return out

    def close(self) -> None:
        """Nothing to release here: the client is shared and closed by its owner."""


def open_collections(client: Any, prefix: str = "Mmrag") -> Dict[str, WeaviateModalityVectorStore]:
    """One store per collection on ``client``, named ``f"{prefix}{Collection}"``, created if missing."""
    return {c: WeaviateModalityVectorStore(client, weaviate_collection_name(prefix, c), collection=c)
            for c in COLLECTIONS}


def open_from_settings(settings: Settings) -> Tuple[Dict[str, WeaviateModalityVectorStore], Any]:
    """Connect as ``settings.store`` says and open the collections; the client is closed on failure."""
    client = connect_weaviate(settings.store, store_dir=settings.store_dir)
    try:
        return open_collections(client, prefix=settings.store.collection_prefix), client
    except Exception:
        client.close()
        raise
