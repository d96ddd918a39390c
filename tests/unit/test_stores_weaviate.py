"""Weaviate backend without a server: connection arguments, schema, filter translation, payloads."""

from __future__ import annotations

import asyncio
import datetime as dt
import fnmatch
import threading
from types import SimpleNamespace

import numpy as np
import pytest

weaviate = pytest.importorskip("weaviate")

from llama_index.core.vector_stores.types import (  # noqa: E402
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
)
from weaviate.classes.config import DataType, Tokenization  # noqa: E402
from weaviate.classes.init import Auth  # noqa: E402
from weaviate.collections.classes.filters import _FilterAnd, _FilterNot, _FilterOr, _FilterValue, _Operator  # noqa: E402

from mmrag_li.config import Settings, StoreConfig  # noqa: E402
from mmrag_li.errors import ConfigError  # noqa: E402
from mmrag_li.schema import make_image_node, make_text_node  # noqa: E402
from mmrag_li.stores import (  # noqa: E402
    FILTER_FIELDS,
    ModalityStores,
    StoreBackend,
    StoreError,
    UnsupportedFilterError,
    node_uuid,
    prepare_node,
    weaviate_collection_config,
    weaviate_collection_name,
    weaviate_connection_args,
    weaviate_filter,
    weaviate_properties,
)


def F(*filters, condition=FilterCondition.AND):
    return MetadataFilters(filters=list(filters), condition=condition)


# ----------------------------------------------------------------------------- connection arguments
def test_local_mode_defaults():
    fn, kw = weaviate_connection_args(StoreConfig(backend="weaviate"), env={})
    assert fn == "connect_to_local"
    assert kw == {"host": "localhost", "port": 8080, "grpc_port": 50051}


def test_local_mode_with_api_key_and_headers():
    cfg = StoreConfig(backend="weaviate", host="db", port=9000, grpc_port=9001, api_key_env="MY_KEY")
    fn, kw = weaviate_connection_args(cfg, env={"MY_KEY": "s3cret"}, headers={"X-OpenAI-Api-Key": "k"})
    assert fn == "connect_to_local"
    assert kw == {"host": "db", "port": 9000, "grpc_port": 9001, "auth_credentials": Auth.api_key("s3cret"),
                  "headers": {"X-OpenAI-Api-Key": "k"}}


@pytest.mark.parametrize(
    "url,host,port,secure",
    [
        ("http://weaviate.internal:8080", "weaviate.internal", 8080, False),
        ("https://w.example.com", "w.example.com", 443, True),
        ("https://w.example.com:8443/", "w.example.com", 8443, True),
        ("weaviate:8080", "weaviate", 8080, False),
        ("http://10.0.0.5", "10.0.0.5", 80, False),
    ],
)
def test_url_means_connect_to_custom(url, host, port, secure):
    cfg = StoreConfig(backend="weaviate", url=url, grpc_port=50052)
    fn, kw = weaviate_connection_args(cfg, env={})
    assert fn == "connect_to_custom"
    assert kw == {"http_host": host, "http_port": port, "http_secure": secure,
                  "grpc_host": host, "grpc_port": 50052, "grpc_secure": secure}


def test_custom_mode_without_url_uses_host_port():
    cfg = StoreConfig(backend="weaviate", mode="custom", host="h", port=1234, grpc_port=5678)
    fn, kw = weaviate_connection_args(cfg, env={"WEAVIATE_API_KEY": "k"})
    assert fn == "connect_to_custom"
    assert kw["http_host"] == "h" and kw["http_port"] == 1234 and kw["grpc_port"] == 5678
    assert kw["auth_credentials"] == Auth.api_key("k")


def test_bad_url():
    with pytest.raises(ConfigError, match="http"):
        weaviate_connection_args(StoreConfig(backend="weaviate", url="ftp://x"), env={})


def test_cloud_mode():
    cfg = StoreConfig(backend="weaviate", mode="cloud", url="https://abc.weaviate.cloud", api_key_env="WCD_KEY")
    fn, kw = weaviate_connection_args(cfg, env={"WCD_KEY": "kk"})
    assert fn == "connect_to_weaviate_cloud"
    assert kw == {"cluster_url": "https://abc.weaviate.cloud", "auth_credentials": Auth.api_key("kk")}
    with pytest.raises(ConfigError, match="WCD_KEY"):
        weaviate_connection_args(cfg, env={})
    with pytest.raises(ConfigError, match="store.url"):
        weaviate_connection_args(StoreConfig(backend="weaviate", mode="cloud"), env={"WEAVIATE_API_KEY": "k"})


def test_embedded_mode(tmp_path):
    cfg = StoreConfig(backend="weaviate", mode="embedded", embedded_binary_path="/opt/weaviate",
                      embedded_version="1.30.0")
    fn, kw = weaviate_connection_args(cfg, env={}, store_dir=str(tmp_path))
    assert fn == "connect_to_embedded"
    assert kw == {"binary_path": "/opt/weaviate", "version": "1.30.0",
                  "persistence_data_path": str(tmp_path / "weaviate")}


def test_connection_args_read_real_environment(monkeypatch):
    monkeypatch.setenv("WEAVIATE_API_KEY", "from-env")
    _, kw = weaviate_connection_args(StoreConfig(backend="weaviate", url="http://h:1"))
    assert kw["auth_credentials"] == Auth.api_key("from-env")


def test_unreachable_server_gives_clear_error():
    settings = Settings(store=StoreConfig(backend="weaviate", url="http://127.0.0.1:9", grpc_port=10))
    with pytest.raises(StoreError, match="cannot connect to Weaviate"):
        ModalityStores.from_config(settings)


# ----------------------------------------------------------------------------- schema
def test_collection_names():
    assert [weaviate_collection_name("Mmrag", c) for c in ("image", "caption", "ocr", "text")] == [
        "MmragImage", "MmragCaption", "MmragOcr", "MmragText"]
    with pytest.raises(ConfigError):
        weaviate_collection_name("mmrag", "image")


def test_collection_schema():
    cfg = weaviate_collection_config("MmragImage", "image")
    assert cfg["name"] == "MmragImage"
    props = {p.name: p for p in cfg["properties"]}
    for key in ("asset_id", "source", "modality", "page", "collection", "ingested_at", "text",
                "node_id", "_node_content", "_node_type", "ref_doc_id", "image_path"):
        assert key in props, key
    assert set(FILTER_FIELDS) <= set(props)
    assert props["page"].dataType == DataType.INT
    assert props["ingested_at"].dataType == DataType.DATE
    assert props["asset_id"].tokenization == Tokenization.FIELD  # exact match, not word tokens
    assert props["source"].tokenization == Tokenization.FIELD
    assert props["text"].tokenization == Tokenization.WORD  # BM25 / hybrid
    assert props["_node_content"].indexFilterable is False
    assert all(p.skip_vectorization for p in cfg["properties"])
    vc = cfg["vector_config"]._to_dict()
    assert vc["vectorizer"] == {"none": {}}
    assert vc["vectorIndexConfig"]["distance"] == "cosine"
    assert cfg["inverted_index_config"]._to_dict()["indexNullState"] is True


def test_object_payload_has_no_pixels_and_rfc3339_date():
    n = make_image_node(asset_id="a", source="/x.png", modality="image", image_path="/b/x.png",
                        image_b64="aGVsbG8=", ingested_at="2024-05-01T10:00:00+02:00", page=2)
    n.embedding = [3.0, 4.0]
    clean, vec, fields = prepare_node(n, "image")
    props = weaviate_properties(fields, clean.node_id)
    assert vec.tolist() == pytest.approx([0.6, 0.8])
    assert props["ingested_at"] == "2024-05-01T08:00:00Z"
    assert props["page"] == 2 and props["node_id"] == "a:image" and props["image_path"] == "/b/x.png"
    assert "aGVsbG8=" not in props["_node_content"]
    assert "bbox" not in props  # None values are not sent
    assert node_uuid("a:image") == node_uuid(clean.node_id)


# ----------------------------------------------------------------------------- filters
def test_filter_eq_and_in():
    f = weaviate_filter(F(MetadataFilter(key="asset_id", value="a")))
    assert isinstance(f, _FilterValue)
    assert (f.target, f.operator, f.value) == ("asset_id", _Operator.EQUAL, "a")
    f = weaviate_filter(F(MetadataFilter(key="source", value=["x", "y"], operator=FilterOperator.IN)))
    assert (f.target, f.operator, f.value) == ("source", _Operator.CONTAINS_ANY, ["x", "y"])
    f = weaviate_filter(F(MetadataFilter(key="modality", value=["ocr"], operator=FilterOperator.NIN)))
    assert isinstance(f, _FilterNot) and f.filters[0].operator == _Operator.CONTAINS_ANY


def test_filter_and_or_not():
    a = MetadataFilter(key="collection", value="invoices")
    b = MetadataFilter(key="modality", value="page")
    f = weaviate_filter(F(a, b))
    assert isinstance(f, _FilterAnd) and [x.target for x in f.filters] == ["collection", "modality"]
    f = weaviate_filter(F(a, b, condition=FilterCondition.OR))
    assert isinstance(f, _FilterOr)
    f = weaviate_filter(F(a, b, condition=FilterCondition.NOT))
    assert isinstance(f, _FilterNot) and isinstance(f.filters[0], _FilterOr)
    nested = weaviate_filter(F(a, F(b, MetadataFilter(key="asset_id", value="z"), condition=FilterCondition.OR)))
    assert isinstance(nested, _FilterAnd) and isinstance(nested.filters[1], _FilterOr)


def test_filter_date_range_and_page():
    f = weaviate_filter(F(MetadataFilter(key="ingested_at", value="2024-01-01", operator=FilterOperator.GTE),
                          MetadataFilter(key="ingested_at", value="2024-01-31", operator=FilterOperator.LTE),
                          MetadataFilter(key="page", value="3", operator=FilterOperator.LT)))
    lo, hi, page = f.filters
    utc = dt.timezone.utc
    assert (lo.operator, lo.value) == (_Operator.GREATER_THAN_EQUAL, dt.datetime(2024, 1, 1, tzinfo=utc))
    assert (hi.operator, hi.value) == (_Operator.LESS_THAN_EQUAL, dt.datetime(2024, 1, 31, 23, 59, 59, tzinfo=utc))
    assert (page.target, page.operator, page.value) == ("page", _Operator.LESS_THAN, 3)


def test_filter_empty_and_errors():
    assert weaviate_filter(None) is None
    assert weaviate_filter(MetadataFilters(filters=[])) is None
    f = weaviate_filter(F(MetadataFilter(key="node_id", value="a:image")))
    assert f.target == "node_id"
    with pytest.raises(ValueError, match="filterable keys"):
        weaviate_filter(F(MetadataFilter(key="words", value="x")))


def test_unknown_filter_operator_is_an_error_naming_it():
    with pytest.raises(UnsupportedFilterError, match="'contains'.*Weaviate") as err:
        weaviate_filter(F(MetadataFilter(key="source", value="x", operator=FilterOperator.CONTAINS)))
    assert err.value.operator == "contains" and err.value.key == "source"


# ----------------------------------------------------------------------------- FAKE Weaviate client
# FAKE: an in-memory stand-in for a sync Weaviate server + client, so the backend's own code (payloads,
# filters, uuid5 upserts, cosine scores, async twins) runs without a server. It implements only the
# calls WeaviateModalityVectorStore makes; it is not Weaviate (no HNSW, no gRPC, no tokenization).
def _fake_matches(flt, uid, props):
    if flt is None:
        return True
    if isinstance(flt, _FilterAnd):
        return all(_fake_matches(f, uid, props) for f in flt.filters)
    if isinstance(flt, _FilterOr):
        return any(_fake_matches(f, uid, props) for f in flt.filters)
    if isinstance(flt, _FilterNot):
        return not _fake_matches(flt.filters[0], uid, props)
    have = uid if flt.target == "_id" else props.get(flt.target)
    want = flt.value
    if isinstance(want, dt.datetime) and isinstance(have, str):
        have = dt.datetime.fromisoformat(have.replace("Z", "+00:00"))
    op = flt.operator
    if op == _Operator.IS_NULL:
        return (have is None) == bool(want)
    if op == _Operator.CONTAINS_ANY:
        return have in want
    if op == _Operator.LIKE:
        return have is not None and fnmatch.fnmatch(str(have).lower(), str(want).lower())
    if have is None:
        return op == _Operator.NOT_EQUAL
    return {_Operator.EQUAL: have == want, _Operator.NOT_EQUAL: have != want, _Operator.LESS_THAN: have < want,
            _Operator.LESS_THAN_EQUAL: have <= want, _Operator.GREATER_THAN: have > want,
            _Operator.GREATER_THAN_EQUAL: have >= want}[op]


class _FakeCollection:
    """FAKE Weaviate collection: objects by uuid -> (properties, vector)."""

    def __init__(self):
        self.objects = {}
        self.data = SimpleNamespace(insert_many=self._insert_many, delete_many=self._delete_many)
        self.query = SimpleNamespace(near_vector=self._near_vector, fetch_objects=self._fetch_objects)
        self.aggregate = SimpleNamespace(over_all=self._over_all)
        self.calls = []  # (method, thread name): the async twins must run these in a worker thread

    def _log(self, name):
        self.calls.append((name, threading.current_thread().name))

    def _obj(self, uid, distance=None):
        props, vec = self.objects[uid]
        return SimpleNamespace(uuid=uid, properties=dict(props), vector={"default": list(vec)},
                               metadata=SimpleNamespace(distance=distance))

    def _select(self, filters):
        return [u for u, (p, _) in self.objects.items() if _fake_matches(filters, u, p)]

    def _insert_many(self, objs):
        self._log("insert_many")
        for o in objs:
            self.objects[str(o.uuid)] = (dict(o.properties), list(o.vector["default"]))
        return SimpleNamespace(has_errors=False, errors={})

    def _delete_many(self, where):
        self._log("delete_many")
        gone = self._select(where)
        for u in gone:
            del self.objects[u]
        return SimpleNamespace(successful=len(gone))

    def _near_vector(self, near_vector, limit, filters=None, return_metadata=None, include_vector=False):
        self._log("near_vector")
        q = np.asarray(near_vector)
        scored = []
        for u in self._select(filters):
            v = np.asarray(self.objects[u][1])
            scored.append((1.0 - float(q @ v / (np.linalg.norm(q) * np.linalg.norm(v))), u))
        scored.sort()
        return SimpleNamespace(objects=[self._obj(u, d) for d, u in scored[:limit]])

    def _fetch_objects(self, limit, filters=None, offset=0, include_vector=False):
        self._log("fetch_objects")
        return SimpleNamespace(objects=[self._obj(u) for u in self._select(filters)[offset:offset + limit]])

    def _over_all(self, total_count=True, filters=None):
        return SimpleNamespace(total_count=len(self._select(filters)))

    def iterator(self, include_vector=False, return_properties=None):
        return iter([self._obj(u) for u in list(self.objects)])


class _FakeCollections:
    def __init__(self):
        self.by_name = {}

    def exists(self, name):
        return name in self.by_name

    def create(self, name, **config):
        self.by_name[name] = _FakeCollection()

    def get(self, name):
        return self.by_name[name]

    def delete(self, name):
        self.by_name.pop(name, None)


class FakeWeaviateClient(weaviate.WeaviateClient):
    """FAKE sync client. Subclasses WeaviateClient only so the LlamaIndex integration's isinstance
    check accepts it; WeaviateClient.__init__ is deliberately not called (no connection, no server)."""

    def __init__(self):  # noqa: D107 - no super().__init__: nothing real is opened
        self.collections = _FakeCollections()
        self.closed = False

    def close(self):
        self.closed = True


def _wv_node(asset, i, vec, modality="text", **meta):
    n = make_text_node(f"{modality} {i} of {asset}", asset_id=asset, source=f"/d/{asset}.pdf", modality=modality,
                       id_parts=[i], **meta)
    n.embedding = vec
    return n


@pytest.fixture
def fake_stores():
    client = FakeWeaviateClient()
    s = ModalityStores.weaviate(client, prefix="Mmrag")
    yield s, client
    s.close()


def test_fake_client_round_trip_through_modality_stores(fake_stores):
    s, client = fake_stores
    assert sorted(client.collections.by_name) == ["MmragCaption", "MmragImage", "MmragOcr", "MmragText"]
    assert isinstance(s.vector_store("text"), StoreBackend)
    nodes = [_wv_node("a", 0, [1.0, 0.0, 0.0]), _wv_node("a", 1, [0.0, 1.0, 0.0]), _wv_node("b", 2, [0.0, 0.0, 2.0])]
    before = s.signature()
    s.upsert("text", nodes)
    s.upsert("text", nodes)  # same uuid5: replaced, not duplicated
    assert s.count() == {"image": 0, "caption": 0, "ocr": 0, "text": 3} and s.signature() != before
    hits = s.query("text", [0.0, 3.0, 0.1], 2)
    assert hits[0].node.node_id == "a:text:1" and hits[0].score == pytest.approx(3 / np.hypot(3, 0.1))
    only_b = s.query("text", [0.0, 3.0, 0.1], 5, F(MetadataFilter(key="asset_id", value="b")))
    assert [h.node.node_id for h in only_b] == ["b:text:2"]
    assert s.asset_ids() == {"a", "b"} and s.dim("text") == 3
    health = s.health()
    assert health["text"] == {"backend": "weaviate", "collection": "text", "index_name": "MmragText",
                              "ok": True, "rows": 3, "dim": 3}
    assert s.optimize() == {}
    assert s.delete_asset("a") == 2 and s.count("text") == {"text": 1}
    s.close()
    assert client.closed


def test_async_twins_work_with_the_sync_client(fake_stores):
    s, client = fake_stores
    vs = s.vector_store("text")
    native = client.collections.get("MmragText")
    nodes = [_wv_node("a", 0, [1.0, 0.0]), _wv_node("a", 1, [0.0, 1.0]), _wv_node("b", 2, [1.0, 1.0])]

    async def run():
        ids = await vs.async_add(nodes)
        res = await vs.aquery(VectorStoreQuery(query_embedding=[0.0, 1.0], similarity_top_k=2))
        got = await vs.aget_nodes(node_ids=["b:text:2"])
        await vs.adelete_nodes(["a:text:0"])
        after_nodes = await vs.aget_nodes(filters=F(MetadataFilter(key="asset_id", value="a")))
        await vs.adelete("b")  # ref_doc_id = asset id
        left = vs.count_rows()
        await vs.aclear()
        return ids, res, got, after_nodes, left

    ids, res, got, after_nodes, left = asyncio.run(run())
    assert ids == ["a:text:0", "a:text:1", "b:text:2"]
    assert res.ids == ["a:text:1", "b:text:2"] and res.similarities[0] == pytest.approx(1.0)
    assert [n.node_id for n in got] == ["b:text:2"]
    assert [n.node_id for n in after_nodes] == ["a:text:1"]
    assert left == 1 and not client.collections.exists("MmragText")
    # every call reached the sync client from a worker thread, none blocked the event loop's thread
    assert {name for name, _ in native.calls} >= {"insert_many", "near_vector", "fetch_objects", "delete_many"}
    assert all(thread != threading.main_thread().name for _, thread in native.calls), native.calls


def test_async_retrieval_through_a_stock_llamaindex_index(fake_stores):
    from llama_index.core import VectorStoreIndex
    from llama_index.core.embeddings import MockEmbedding

    s, _ = fake_stores
    vs = s.vector_store("caption")
    vs.add([_wv_node("a", 0, [1.0] * 4, modality="caption"), _wv_node("b", 1, [1.0, -1.0, 1.0, -1.0], modality="caption")])
    index = VectorStoreIndex.from_vector_store(vs, embed_model=MockEmbedding(embed_dim=4))  # MockEmbedding: all 0.5
    hits = asyncio.run(index.as_retriever(similarity_top_k=1).aretrieve("anything"))
    assert [h.node.node_id for h in hits] == ["a:caption:0"] and hits[0].score == pytest.approx(1.0)
