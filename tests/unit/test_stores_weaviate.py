"""Weaviate backend without a server: connection arguments, schema, filter translation, payloads."""

from __future__ import annotations

import datetime as dt

import pytest

pytest.importorskip("weaviate")

from llama_index.core.vector_stores.types import (  # noqa: E402
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)
from weaviate.classes.config import DataType, Tokenization  # noqa: E402
from weaviate.classes.init import Auth  # noqa: E402
from weaviate.collections.classes.filters import _FilterAnd, _FilterNot, _FilterOr, _FilterValue, _Operator  # noqa: E402

from mmrag_li.config import Settings, StoreConfig  # noqa: E402
from mmrag_li.errors import ConfigError  # noqa: E402
from mmrag_li.schema import make_image_node  # noqa: E402
from mmrag_li.stores import (  # noqa: E402
    FILTER_FIELDS,
    ModalityStores,
    StoreError,
    _prepare,
    _wv_properties,
    node_uuid,
    weaviate_collection_config,
    weaviate_collection_name,
    weaviate_connection_args,
    weaviate_filter,
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
    clean, vec, fields = _prepare(n, "image")
    props = _wv_properties(fields, clean.node_id)
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
