"""Fast tests of mmrag_li.stores on a real on-disk LanceDB (tmp_path), no models."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from llama_index.core.schema import ImageNode
from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)

from mmrag_li.config import Settings
from mmrag_li.schema import make_image_node, make_text_node
from mmrag_li.errors import MMRAGError
from mmrag_li.stores import (
    DimensionMismatchError,
    LanceModalityVectorStore,
    ModalityStores,
    StoreBackend,
    StoreCorruptError,
    StoreError,
    UnsupportedFilterError,
    lance_where,
    node_uuid,
)


def unit(v):
    v = np.asarray(v, dtype=np.float32)
    return (v / np.linalg.norm(v)).tolist()


def onehot(i, dim):
    v = np.zeros(dim, dtype=np.float32)
    v[i] = 1.0
    return v.tolist()


def F(*filters, condition=FilterCondition.AND):
    return MetadataFilters(filters=list(filters), condition=condition)


@pytest.fixture
def stores(tmp_path):
    s = ModalityStores.from_config(Settings(store_dir=str(tmp_path / "store")))
    yield s
    s.close()


def img(asset, i, dim=8, **meta):
    n = make_image_node(asset_id=asset, source=f"/data/{asset}.png", modality="image",
                        image_path=f"/blobs/{asset}-{i}.png", image_b64="aGVsbG8=", id_parts=[i], **meta)
    n.embedding = onehot(i % dim, dim)
    return n


def txt(asset, i, text, modality="text", dim=6, **meta):
    n = make_text_node(text, asset_id=asset, source=f"/data/{asset}.pdf", modality=modality, id_parts=[i], **meta)
    n.embedding = onehot(i % dim, dim)
    return n


# ----------------------------------------------------------------------------- filter translation
def test_lance_where_translation():
    assert lance_where(None) is None
    assert lance_where(MetadataFilters(filters=[])) is None
    assert lance_where(F(MetadataFilter(key="asset_id", value="a'b"))) == "(metadata.asset_id = 'a''b')"
    w = lance_where(F(MetadataFilter(key="source", value=["x", "y"], operator=FilterOperator.IN),
                      MetadataFilter(key="page", value=2, operator=FilterOperator.GTE)))
    assert w == "(metadata.source IN ('x', 'y')) AND (metadata.page >= 2)"
    w = lance_where(F(MetadataFilter(key="modality", value="ocr"), MetadataFilter(key="modality", value="text"),
                      condition=FilterCondition.OR))
    assert w == "(metadata.modality = 'ocr') OR (metadata.modality = 'text')"
    # dates: a bare date bound on LTE covers the whole day
    w = lance_where(F(MetadataFilter(key="ingested_at", value="2024-01-01", operator=FilterOperator.GTE),
                      MetadataFilter(key="ingested_at", value="2024-01-31", operator=FilterOperator.LTE)))
    assert w == ("(metadata.ingested_at >= '2024-01-01T00:00:00+00:00') AND "
                 "(metadata.ingested_at <= '2024-01-31T23:59:59+00:00')")
    w = lance_where(F(MetadataFilter(key="ingested_at", value="2024-01-01T12:00:00+02:00",
                                     operator=FilterOperator.LT)))
    assert w == "(metadata.ingested_at < '2024-01-01T10:00:00+00:00')"
    assert lance_where(F(MetadataFilter(key="node_id", value="n1"))) == "(id = 'n1')"
    assert "IS NULL OR" in lance_where(F(MetadataFilter(key="source", value="x", operator=FilterOperator.NE)))


def test_lance_where_rejects_unknown_keys_and_bad_values():
    with pytest.raises(ValueError, match="filterable keys"):
        lance_where(F(MetadataFilter(key="bbox", value="x")))
    with pytest.raises(ValueError, match="cannot parse"):
        lance_where(F(MetadataFilter(key="ingested_at", value="yesterday", operator=FilterOperator.GTE)))


def test_node_uuid_is_deterministic():
    assert node_uuid("a:image:1") == node_uuid("a:image:1") != node_uuid("a:image:2")


# ----------------------------------------------------------------------------- store behaviour
def test_empty_store_queries_return_empty(stores):
    for c in ("image", "caption", "ocr", "text"):
        assert stores.query(c, unit([1, 2, 3]), 5) == []
        assert list(stores.all_nodes(c)) == []
    assert stores.count() == {"image": 0, "caption": 0, "ocr": 0, "text": 0}
    assert stores.asset_ids() == set()
    assert stores.get_asset_nodes("nope") == []
    assert stores.delete_asset("nope") == 0


def test_upsert_twice_no_duplicates(stores):
    nodes = [img("a", i) for i in range(4)]
    stores.upsert("image", nodes)
    stores.upsert("image", nodes)
    assert stores.count("image") == {"image": 4}
    # same id with new content replaces
    changed = img("a", 0)
    changed.metadata["source"] = "/data/renamed.png"
    stores.upsert("image", [changed])
    assert stores.count()["image"] == 4
    got = {n.node_id: n for n in stores.get_asset_nodes("a")}
    assert got["a:image:0"].metadata["source"] == "/data/renamed.png"


def test_duplicate_ids_in_one_batch_keep_last(stores):
    a, b = txt("a", 1, "first"), txt("a", 1, "second")
    stores.upsert("text", [a, b])
    assert stores.count("text")["text"] == 1
    assert [n.text for n in stores.all_nodes("text")] == ["second"]


def test_query_returns_imagenode_with_path_and_best_match(stores):
    stores.upsert("image", [img("a", i) for i in range(5)])
    q = np.asarray(onehot(3, 8)) + 0.1 * np.asarray(onehot(1, 8))
    hits = stores.query("image", q.tolist(), 3)
    assert len(hits) == 3
    top = hits[0]
    assert isinstance(top.node, ImageNode)
    assert top.node.node_id == "a:image:3"
    assert top.node.image_path == "/blobs/a-3.png"
    assert top.node.image is None  # pixels never stored
    assert top.node.metadata["asset_id"] == "a"
    # cosine similarity: higher is better, exact value for unit vectors
    assert top.score == pytest.approx(float(q[3] / np.linalg.norm(q)), abs=1e-5)
    assert hits[1].node.node_id == "a:image:1"
    assert hits[0].score >= hits[1].score >= hits[2].score


def test_images_never_in_node_json(stores):
    stores.upsert("image", [img("a", 0)])
    tbl = stores.vector_store("image").lance_table()
    content = tbl.to_arrow().column("metadata").to_pylist()[0]["_node_content"]
    assert "aGVsbG8=" not in content and "/blobs/a-0.png" in content


def test_metadata_survives_round_trip(stores):
    n = txt("a", 0, "chunk", page=3, bbox=[1.0, 2.0, 3.0, 4.0], section="Intro")
    stores.upsert("text", [n])
    (got,) = stores.get_asset_nodes("a")
    assert got.text == "chunk"
    assert got.metadata["page"] == 3 and got.metadata["bbox"] == [1.0, 2.0, 3.0, 4.0]
    assert got.metadata["section"] == "Intro"
    assert got.ref_doc_id == "a"
    assert got.excluded_embed_metadata_keys == n.excluded_embed_metadata_keys


def test_delete_asset_all_collections(stores):
    stores.upsert("image", [img("a", 0), img("a", 1), img("b", 2)])
    stores.upsert("ocr", [txt("a", 0, "ocr a", modality="ocr")])
    stores.upsert("caption", [txt("a", 0, "a cat", modality="caption")])
    stores.upsert("text", [txt("b", 0, "b text"), txt("a'q", 1, "quote asset")])
    assert stores.asset_ids() == {"a", "b", "a'q"}
    assert stores.delete_asset("a") == 4
    assert stores.count() == {"image": 1, "caption": 0, "ocr": 0, "text": 2}
    assert stores.get_asset_nodes("a") == []
    assert stores.delete_asset("a'q") == 1  # quotes are escaped
    assert stores.asset_ids() == {"b"}


def test_dimension_mismatch_message(stores):
    stores.upsert("image", [img("a", 0, dim=8)])
    with pytest.raises(DimensionMismatchError) as ei:
        stores.upsert("image", [img("b", 0, dim=12)])
    msg = str(ei.value)
    assert "'image'" in msg and "8-d" in msg and "12-d" in msg and "--store" in msg
    with pytest.raises(DimensionMismatchError, match="holds 8-d vectors but the model produces 3-d"):
        stores.query("image", [1.0, 0.0, 0.0], 2)
    assert ei.value.collection == "image" and (ei.value.stored_dim, ei.value.new_dim) == (8, 12)


def test_missing_or_zero_embedding_is_rejected(stores):
    n = txt("a", 0, "x")
    n.embedding = None
    with pytest.raises(StoreError, match="no embedding"):
        stores.upsert("text", [n])
    n.embedding = [0.0] * 6
    with pytest.raises(StoreError, match="zero"):
        stores.upsert("text", [n])


def test_unknown_collection(stores):
    with pytest.raises(ValueError, match="unknown collection"):
        stores.query("video", [1.0], 1)


def test_count_and_all_nodes(stores):
    stores.upsert("ocr", [txt(f"a{i}", i, f"ocr {i}", modality="ocr") for i in range(7)])
    stores.upsert("text", [txt("b", i, f"text {i}") for i in range(3)])
    assert stores.count() == {"image": 0, "caption": 0, "ocr": 7, "text": 3}
    assert stores.count("ocr") == {"ocr": 7}
    assert sorted(n.text for n in stores.all_nodes("ocr")) == [f"ocr {i}" for i in range(7)]


def test_upsert_all_routes_by_modality(stores):
    counts = stores.upsert_all([img("a", 0), txt("a", 0, "o", modality="ocr"), txt("a", 1, "c", modality="caption"),
                                txt("a", 2, "t")])
    assert counts == {"image": 1, "ocr": 1, "caption": 1, "text": 1}
    assert stores.count() == {"image": 1, "caption": 1, "ocr": 1, "text": 1}


# ----------------------------------------------------------------------------- protocol, errors, health
def test_lancedb_backend_satisfies_the_store_protocol(stores):
    for c in ("image", "caption", "ocr", "text"):
        vs = stores.vector_store(c)
        assert isinstance(vs, LanceModalityVectorStore) and isinstance(vs, StoreBackend)
        assert vs.backend_name == stores.backend == "lancedb"
    assert not isinstance(object(), StoreBackend)


def test_store_errors_are_mmrag_errors():
    for cls in (StoreError, DimensionMismatchError, StoreCorruptError, UnsupportedFilterError):
        assert issubclass(cls, MMRAGError)


@pytest.mark.parametrize("op", [FilterOperator.CONTAINS, FilterOperator.ANY, FilterOperator.ALL])
def test_unknown_filter_operator_raises_naming_it(stores, op):
    flt = F(MetadataFilter(key="source", value="x", operator=op))
    with pytest.raises(UnsupportedFilterError, match=f"{op.value!r} on 'source'.*LanceDB") as err:
        lance_where(flt)
    assert err.value.operator == op.value and "supported operators" in str(err.value)
    stores.upsert("text", [txt("a", 0, "x")])
    with pytest.raises(ValueError, match=op.value):  # never a silent match-all / match-nothing
        stores.query("text", onehot(0, 6), 3, flt)


def test_delete_by_filters_and_health(stores):
    stores.upsert("text", [txt("a", 0, "x", page=1), txt("a", 1, "y", page=2), txt("b", 2, "z", page=2)])
    health = stores.health()
    assert set(health) == {"image", "caption", "ocr", "text"}
    assert health["image"]["ok"] and health["image"]["rows"] == 0 and health["image"]["dim"] is None
    t = health["text"]
    assert t["ok"] and (t["backend"], t["collection"], t["rows"], t["dim"]) == ("lancedb", "text", 3, 6)
    assert t["path"].endswith("text.lance") and "error" not in t
    assert stores.health(deep=True)["text"]["ok"]
    assert stores.delete_by_filters(F(MetadataFilter(key="page", value=2))) == 2
    assert [n.node_id for n in stores.all_nodes("text")] == ["a:text:0"]
    with pytest.raises(ValueError, match="at least one filter"):
        stores.delete_by_filters(F())


def _damage(path: Path, tail: bool = False) -> None:
    raw = bytearray(path.read_bytes())
    if tail:
        raw[-64:] = os.urandom(64)  # the footer (magic + metadata offsets)
    else:
        raw = bytearray(os.urandom(200))
    path.write_bytes(bytes(raw))


def test_damaged_table_manifest_names_the_table_on_open(tmp_path):
    settings = Settings(store_dir=str(tmp_path / "store"))
    with ModalityStores.from_config(settings) as s:
        s.upsert("text", [txt("a", 0, "x")])
        s.upsert("image", [img("a", 0)])
    table = tmp_path / "store" / "lancedb" / "text.lance"
    for m in (table / "_versions").glob("*.manifest"):
        _damage(m)
    with pytest.raises(StoreCorruptError) as err:
        ModalityStores.from_config(settings)
    msg = str(err.value)
    assert f"LanceDB table {table} is damaged" in msg
    assert f"mv {table} {table}.damaged" in msg and "mmrag ingest" in msg
    # the recovery works: the table moved aside, the store opens and the other tables are intact
    table.rename(str(table) + ".damaged")
    with ModalityStores.from_config(settings) as s:
        assert s.count() == {"image": 1, "caption": 0, "ocr": 0, "text": 0}


def test_damaged_data_file_is_named_by_probe_and_health(tmp_path):
    with ModalityStores.from_config(Settings(store_dir=str(tmp_path))) as s:
        s.upsert("text", [txt("a", 0, "x")])
        s.probe()  # intact: nothing raised
        table = tmp_path / "lancedb" / "text.lance"
        data_file = next((table / "data").glob("*.lance"))
        _damage(data_file, tail=True)
        with pytest.raises(StoreCorruptError) as err:
            s.probe()
        assert f"data file {data_file}" in str(err.value) and f"mv {table} {table}.damaged" in str(err.value)
        deep = s.health(deep=True)
        assert deep["text"]["ok"] is False and str(data_file) in deep["text"]["error"]
        assert deep["image"]["ok"] is True


def test_missing_weaviate_extra_says_what_to_install():
    """Without weaviate-client (simulated: the import fails) the package still imports and the
    Weaviate backend fails with the pip command, not an ImportError traceback."""
    code = textwrap.dedent(f"""
        import sys
        sys.modules["weaviate"] = None  # the import of weaviate now raises ImportError
        from llama_index.core.vector_stores.types import MetadataFilter, MetadataFilters
        from mmrag_li.config import Settings, StoreConfig
        from mmrag_li.errors import ConfigError
        import mmrag_li.stores as stores  # the package itself imports fine
        attempts = [lambda: stores.WeaviateModalityVectorStore,
                    lambda: stores.ModalityStores.from_config(Settings(store=StoreConfig(backend="weaviate"))),
                    lambda: stores.weaviate_filter(MetadataFilters(filters=[MetadataFilter(key="page", value=1)]))]
        for attempt in attempts:
            try:
                attempt()
            except ConfigError as e:
                print(e)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 3 and all("pip install 'mmrag_li[weaviate]'" in line for line in lines), out.stdout
