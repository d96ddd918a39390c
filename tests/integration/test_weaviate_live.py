"""Live round trip against a real Weaviate server; runs only when MMRAG_WEAVIATE_URL is set.

    MMRAG_WEAVIATE_URL=http://localhost:8080 pytest -m weaviate tests/integration/test_weaviate_live.py
(gRPC is expected on the same host at port 50051, or at $MMRAG_WEAVIATE_GRPC_PORT.)
"""

from __future__ import annotations

import os
import uuid

import numpy as np
import pytest
from llama_index.core.schema import ImageNode
from llama_index.core.vector_stores.types import FilterOperator, MetadataFilter, MetadataFilters, VectorStoreQuery

from mmrag_li.config import Settings, StoreConfig
from mmrag_li.schema import make_image_node, make_text_node
from mmrag_li.stores import DimensionMismatchError, ModalityStores

pytestmark = pytest.mark.weaviate


@pytest.fixture
def stores(tmp_path):
    url = os.environ.get("MMRAG_WEAVIATE_URL")
    if not url:
        pytest.skip("MMRAG_WEAVIATE_URL not set: no Weaviate server on this machine")
    pytest.importorskip("weaviate")
    cfg = StoreConfig(backend="weaviate", mode="custom", url=url,
                      grpc_port=int(os.environ.get("MMRAG_WEAVIATE_GRPC_PORT", "50051")),
                      collection_prefix=f"MmragTest{uuid.uuid4().hex[:8]}")
    s = ModalityStores.from_config(Settings(store_dir=str(tmp_path), store=cfg))
    try:
        yield s
    finally:
        s.drop()
        s.close()


def _unit(rng, dim):
    v = rng.standard_normal(dim)
    return (v / np.linalg.norm(v)).tolist()


def test_round_trip(stores):
    rng = np.random.default_rng(1)
    imgs, texts = [], []
    for asset in ("a", "b"):
        for i in range(3):
            n = make_image_node(asset_id=asset, source=f"/d/{asset}.pdf", modality="page", page=i + 1,
                                image_path=f"/blobs/{asset}{i}.png", image_b64="aGVsbG8=", id_parts=[i],
                                ingested_at="2024-01-10T00:00:00+00:00" if asset == "a" else "2024-03-01T00:00:00+00:00")
            n.embedding = _unit(rng, 8)
            imgs.append(n)
        t = make_text_node(f"text of {asset}", asset_id=asset, source=f"/d/{asset}.pdf", modality="text")
        t.embedding = _unit(rng, 6)
        texts.append(t)
    stores.upsert("image", imgs)
    stores.upsert("image", imgs)  # upsert: no duplicates
    stores.upsert("text", texts)
    assert stores.count() == {"image": 6, "caption": 0, "ocr": 0, "text": 2}
    assert stores.asset_ids() == {"a", "b"}

    hits = stores.query("image", imgs[4].embedding, 3)
    assert hits[0].node.node_id == imgs[4].node_id and hits[0].score == pytest.approx(1.0, abs=1e-4)
    assert isinstance(hits[0].node, ImageNode) and hits[0].node.image_path == "/blobs/b1.png"
    assert hits[0].node.image is None

    flt = MetadataFilters(filters=[MetadataFilter(key="asset_id", value="a"),
                                   MetadataFilter(key="page", value=2, operator=FilterOperator.GTE)])
    assert sorted(h.node.node_id for h in stores.query("image", imgs[4].embedding, 10, flt)) == ["a:page:1", "a:page:2"]
    flt = MetadataFilters(filters=[MetadataFilter(key="ingested_at", value="2024-02-01", operator=FilterOperator.GTE)])
    assert {h.node.metadata["asset_id"] for h in stores.query("image", imgs[0].embedding, 10, flt)} == {"b"}

    res = stores.vector_store("text").query(VectorStoreQuery(query_embedding=texts[1].embedding, similarity_top_k=1))
    assert res.ids == [texts[1].node_id]

    with pytest.raises(DimensionMismatchError, match="holds 8-d"):
        stores.query("image", [1.0, 0.0, 0.0], 1)
    assert stores.query("caption", [1.0, 0.0], 3) == []

    assert len(stores.get_asset_nodes("a")) == 4
    assert stores.delete_asset("a") == 4
    assert stores.count() == {"image": 3, "caption": 0, "ocr": 0, "text": 1}
    assert stores.get_asset_nodes("a") == []
