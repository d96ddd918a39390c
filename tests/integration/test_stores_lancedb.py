"""LanceDB-backed ModalityStores end to end: real tables on disk, real LlamaIndex nodes and indexes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import List

import numpy as np
import pytest
from llama_index.core import VectorStoreIndex
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.embeddings import MultiModalEmbedding
from llama_index.core.schema import ImageNode, QueryBundle
from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
)

from mmrag_li.config import Settings
from mmrag_li.schema import make_image_node, make_text_node
from mmrag_li.stores import ModalityStores, build_multimodal_index

REPO = Path(__file__).resolve().parents[2]
TEXT_DIM, IMAGE_DIM = 16, 12


def rand_unit(rng, dim):
    v = rng.standard_normal(dim).astype(np.float32)
    return (v / np.linalg.norm(v)).tolist()


def F(*filters, condition=FilterCondition.AND):
    return MetadataFilters(filters=list(filters), condition=condition)


@pytest.fixture
def store_dir(tmp_path):
    return str(tmp_path / "store")


@pytest.fixture
def corpus(store_dir):
    """3 assets x (2 images, 1 caption, 1 ocr, 2 text), two ingest dates, two user collections."""
    rng = np.random.default_rng(0)
    s = ModalityStores.from_config(Settings(store_dir=store_dir))
    dates = {"a": "2024-01-10T08:00:00+00:00", "b": "2024-02-20T23:30:00+00:00", "c": "2024-03-05T12:00:00+00:00"}
    coll = {"a": "default", "b": "default", "c": "invoices"}
    vecs = {}
    for asset in "abc":
        meta = dict(ingested_at=dates[asset], collection=coll[asset])
        imgs = []
        for i in range(2):
            n = make_image_node(asset_id=asset, source=f"/data/{asset}.pdf", modality="page" if i else "image",
                                image_path=f"/blobs/{asset}{i}.png", id_parts=[i], page=i + 1, **meta)
            n.embedding = rand_unit(rng, IMAGE_DIM)
            vecs[n.node_id] = n.embedding
            imgs.append(n)
        s.upsert("image", imgs)
        for modality, col in (("caption", "caption"), ("ocr", "ocr")):
            n = make_text_node(f"{modality} of {asset}", asset_id=asset, source=f"/data/{asset}.pdf",
                               modality=modality, page=1, **meta)
            n.embedding = rand_unit(rng, TEXT_DIM)
            vecs[n.node_id] = n.embedding
            s.upsert(col, [n])
        texts = []
        for i in range(2):
            n = make_text_node(f"text {i} of {asset}", asset_id=asset, source=f"/data/{asset}.pdf",
                               modality="text", page=i + 1, id_parts=[i], **meta)
            n.embedding = rand_unit(rng, TEXT_DIM)
            vecs[n.node_id] = n.embedding
            texts.append(n)
        s.upsert("text", texts)
    yield s, vecs
    s.close()


def _ids(hits):
    return [h.node.node_id for h in hits]


def test_exact_match_is_top_hit_in_every_collection(corpus):
    s, vecs = corpus
    for node_id, v in vecs.items():
        col = {"image": "image", "page": "image"}.get(node_id.split(":")[1], node_id.split(":")[1])
        hits = s.query(col, v, 3)
        assert hits[0].node.node_id == node_id
        assert hits[0].score == pytest.approx(1.0, abs=1e-5)
        if col == "image":
            assert isinstance(hits[0].node, ImageNode) and hits[0].node.image_path.startswith("/blobs/")


def test_filters_asset_source_collection_modality(corpus):
    s, vecs = corpus
    q = vecs["a:image:0"]
    assert {h.node.metadata["asset_id"] for h in s.query("image", q, 10, F(MetadataFilter(key="asset_id", value="b")))} == {"b"}
    hits = s.query("image", q, 10, F(MetadataFilter(key="asset_id", value=["b", "c"], operator=FilterOperator.IN)))
    assert len(hits) == 4 and {h.node.metadata["asset_id"] for h in hits} == {"b", "c"}
    hits = s.query("image", q, 10, F(MetadataFilter(key="source", value="/data/c.pdf")))
    assert {h.node.metadata["asset_id"] for h in hits} == {"c"}
    hits = s.query("text", vecs["a:text:0"], 10, F(MetadataFilter(key="collection", value="invoices")))
    assert len(hits) == 2 and {h.node.metadata["asset_id"] for h in hits} == {"c"}
    hits = s.query("image", q, 10, F(MetadataFilter(key="modality", value="page")))
    assert len(hits) == 3 and all(h.node.node_id.endswith(":page:1") for h in hits)
    hits = s.query("image", q, 10, F(MetadataFilter(key="modality", value="page"), MetadataFilter(key="asset_id", value="a")))
    assert _ids(hits) == ["a:page:1"]
    hits = s.query("image", q, 10, F(MetadataFilter(key="asset_id", value="a"), MetadataFilter(key="asset_id", value="c"),
                                     condition=FilterCondition.OR))
    assert {h.node.metadata["asset_id"] for h in hits} == {"a", "c"}
    hits = s.query("image", q, 10, F(MetadataFilter(key="page", value=2, operator=FilterOperator.GTE)))
    assert len(hits) == 3
    assert s.query("image", q, 10, F(MetadataFilter(key="asset_id", value="zzz"))) == []


def test_filters_date_range(corpus):
    s, vecs = corpus
    q = vecs["a:text:0"]

    def assets(*filters):
        return {h.node.metadata["asset_id"] for h in s.query("text", q, 20, F(*filters))}

    gte = lambda v: MetadataFilter(key="ingested_at", value=v, operator=FilterOperator.GTE)
    lte = lambda v: MetadataFilter(key="ingested_at", value=v, operator=FilterOperator.LTE)
    assert assets(gte("2024-02-01")) == {"b", "c"}
    assert assets(lte("2024-02-20")) == {"a", "b"}  # a bare date includes the whole day (b is 23:30)
    assert assets(gte("2024-01-11"), lte("2024-03-01")) == {"b"}
    assert assets(lte("2024-02-20T23:00:00Z")) == {"a"}
    assert assets(gte("2024-02-21T00:30:00+01:00")) == {"b", "c"}  # = 2024-02-20T23:30Z


def test_reopen_from_disk_in_fresh_process(corpus, store_dir):
    s, vecs = corpus
    counts = s.count()
    s.close()
    code = textwrap.dedent(f"""
        import json
        from mmrag_li.config import Settings
        from mmrag_li.stores import ModalityStores
        s = ModalityStores.from_config(Settings(store_dir={store_dir!r}))
        hits = s.query("image", {vecs['b:page:1']!r}, 1)
        print(json.dumps({{"count": s.count(), "assets": sorted(s.asset_ids()),
                          "top": hits[0].node.node_id, "type": type(hits[0].node).__name__,
                          "path": hits[0].node.image_path, "dim": s.dim("image")}}))
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"count": counts, "assets": ["a", "b", "c"], "top": "b:page:1", "type": "ImageNode",
                   "path": "/blobs/b1.png", "dim": IMAGE_DIM}


def test_second_handle_sees_writes_and_deletes(corpus, store_dir):
    s, vecs = corpus
    other = ModalityStores.from_config(Settings(store_dir=store_dir))
    assert other.count() == s.count()
    assert s.delete_asset("a") == 6
    assert "a" not in other.asset_ids()
    assert other.count() == {"image": 4, "caption": 2, "ocr": 2, "text": 4}
    other.close()


def test_delete_asset_then_reingest(corpus):
    s, vecs = corpus
    before = s.count()
    nodes = s.get_asset_nodes("b")
    assert len(nodes) == 6 and {n.metadata["asset_id"] for n in nodes} == {"b"}
    assert s.delete_asset("b") == 6
    assert s.get_asset_nodes("b") == []
    for n in nodes:
        n.embedding = vecs[n.node_id]
    s.upsert_all(nodes)
    s.upsert_all(nodes)
    assert s.count() == before


# ----------------------------------------------------------------------------- LlamaIndex plug-in
class FixedTextEmbedding(BaseEmbedding):
    """Maps a query string to a stored vector (a JSON list in the query), no model."""

    def _get_query_embedding(self, query: str) -> List[float]:
        return json.loads(query) if query.startswith("[") else [1.0] + [0.0] * (TEXT_DIM - 1)

    async def _aget_query_embedding(self, query: str) -> List[float]:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> List[float]:
        return [1.0] + [0.0] * (TEXT_DIM - 1)


class FixedImageEmbedding(MultiModalEmbedding):
    def _get_query_embedding(self, query: str) -> List[float]:
        return json.loads(query)[:IMAGE_DIM] if query.startswith("[") else [1.0] + [0.0] * (IMAGE_DIM - 1)

    async def _aget_query_embedding(self, query: str) -> List[float]:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> List[float]:
        return self._get_query_embedding(text)

    def _get_image_embedding(self, img_file_path) -> List[float]:
        return [1.0] + [0.0] * (IMAGE_DIM - 1)

    async def _aget_image_embedding(self, img_file_path) -> List[float]:
        return self._get_image_embedding(img_file_path)


def test_vector_store_object_works_in_llamaindex(corpus):
    s, vecs = corpus
    vs = s.vector_store("text")
    res = vs.query(VectorStoreQuery(query_embedding=vecs["c:text:1"], similarity_top_k=2,
                                    filters=F(MetadataFilter(key="asset_id", value="c"))))
    assert res.ids[0] == "c:text:1" and res.similarities[0] == pytest.approx(1.0, abs=1e-5)
    empty = s.vector_store("text").query(VectorStoreQuery(query_embedding=vecs["c:text:1"], similarity_top_k=2,
                                                          filters=F(MetadataFilter(key="asset_id", value="zz"))))
    assert empty.nodes == []
    index = VectorStoreIndex.from_vector_store(vs, embed_model=FixedTextEmbedding())
    got = index.as_retriever(similarity_top_k=1).retrieve(json.dumps(vecs["a:text:1"]))
    assert got[0].node.node_id == "a:text:1"
    # deletes through the integration API quote correctly
    vs.delete_nodes(["a:text:1"])
    vs.delete("b")  # ref_doc_id = asset id
    assert s.count("text") == {"text": 3}


def test_build_multimodal_index(corpus):
    s, vecs = corpus
    index = build_multimodal_index(s, embed_model=FixedTextEmbedding(), image_embed_model=FixedImageEmbedding())
    assert index.is_text_vector_store_empty is False
    assert index.is_image_vector_store_empty is False
    r = index.as_retriever(similarity_top_k=2, image_similarity_top_k=2)
    text_hits = r.text_retrieve(QueryBundle(json.dumps(vecs["b:text:0"])))
    assert text_hits[0].node.node_id == "b:text:0"
    img_hits = r.text_to_image_retrieve(QueryBundle(json.dumps(vecs["c:image:0"])))
    assert img_hits[0].node.node_id == "c:image:0" and isinstance(img_hits[0].node, ImageNode)


def test_build_multimodal_index_on_empty_store_sees_later_writes(store_dir):
    s = ModalityStores.from_config(Settings(store_dir=store_dir))
    index = build_multimodal_index(s, embed_model=FixedTextEmbedding(), image_embed_model=FixedImageEmbedding())
    r = index.as_retriever(similarity_top_k=2, image_similarity_top_k=2)
    assert r.text_retrieve(QueryBundle("x")) == []
    n = make_text_node("late", asset_id="z", source="/z.txt", modality="text")
    n.embedding = [1.0] + [0.0] * (TEXT_DIM - 1)
    s.upsert("text", [n])
    assert [h.node.node_id for h in r.text_retrieve(QueryBundle("x"))] == ["z:text"]


def test_optimize_compacts_fragments_and_keeps_every_row(tmp_path):
    import random

    from llama_index.core.schema import TextNode

    from mmrag_li.config import Settings
    from mmrag_li.stores import ModalityStores

    stores = ModalityStores.from_config(Settings(store_dir=str(tmp_path)))
    rng = random.Random(3)
    for batch in range(6):  # six commits -> six fragments
        nodes = [TextNode(id_=f"a{batch}:text:{i}", text=f"chunk {batch} {i}",
                          metadata={"asset_id": f"a{batch}", "modality": "text", "source": "/x.md"},
                          embedding=[rng.random() for _ in range(8)]) for i in range(5)]
        stores.upsert("text", nodes)
    table = stores.vector_store("text").lance_table()
    before = len(table.to_lance().get_fragments())
    stores.optimize()
    after = len(table.to_lance().get_fragments())
    assert before >= 6 and after < before
    assert stores.count("text") == {"text": 30}
    assert len(stores.query("text", [0.5] * 8, 30)) == 30


def test_signature_moves_on_same_size_replacement_and_delete(tmp_path):
    from llama_index.core.schema import TextNode

    from mmrag_li.config import Settings
    from mmrag_li.stores import ModalityStores

    stores = ModalityStores.from_config(Settings(store_dir=str(tmp_path)))
    empty = stores.signature()

    def node(text):
        return TextNode(id_="a:text:0", text=text, embedding=[1.0, 0.0, 0.0],
                        metadata={"asset_id": "a", "modality": "text", "source": "/a.md"})

    stores.upsert("text", [node("RECEIPT 9902")])
    first = stores.signature()
    stores.upsert("text", [node("RECEIPT 9903")])  # same id, same count: only the content changed
    second = stores.signature()
    assert empty != first != second and stores.count("text") == {"text": 1}
    # another handle on the same directory sees the change too (a second process would)
    other = ModalityStores.from_config(Settings(store_dir=str(tmp_path)))
    assert other.signature() == second
    stores.delete_asset("a")
    assert other.signature() != second
