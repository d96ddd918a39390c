"""FusionRetriever over retrievers the test defines itself (stock LlamaIndex BaseRetrievers), the
built-in retrievers on fakes, the reranker as a LlamaIndex node postprocessor, and the BM25
filter matcher's refusal of operators it does not know. No model is loaded."""

from __future__ import annotations

import asyncio
from typing import Dict, List, Optional

import pytest
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import NodeRelationship, NodeWithScore, QueryBundle, RelatedNodeInfo, TextNode
from llama_index.core.vector_stores.types import FilterOperator, MetadataFilter, MetadataFilters

from mmrag_li.config import RetrievalConfig
from mmrag_li.retrieval.bm25 import BM25Cache, UnsupportedFilterError, matches_filters
from mmrag_li.retrieval.fusion import FusionRetriever, asset_of
from mmrag_li.retrieval.rerank import RerankPostprocessor, Reranker
from mmrag_li.retrieval.retrievers import BM25StoreRetriever, VectorCollectionRetriever

QUERY = "red car"


def with_asset(nid: str, asset: str, text: str = "t", **meta) -> TextNode:
    return TextNode(id_=nid, text=text, metadata={"asset_id": asset, **meta})


def of_document(nid: str, doc: Optional[str], text: str = "t") -> TextNode:
    """A foreign node: no asset_id; its source document (ref_doc_id) if ``doc`` is given."""
    rel = {NodeRelationship.SOURCE: RelatedNodeInfo(node_id=doc)} if doc else {}
    return TextNode(id_=nid, text=text, relationships=rel)


class FixedRetriever(BaseRetriever):
    """Returns the same scored nodes for every query; records the bundles it was given and then
    writes an embedding into them (as an embedding retriever caching its query vector would)."""

    def __init__(self, hits: List[tuple]):
        super().__init__()
        self.hits = hits
        self.seen: List[QueryBundle] = []
        self.embeddings_seen: List[Optional[List[float]]] = []

    def _retrieve(self, query_bundle: QueryBundle) -> List[NodeWithScore]:
        self.seen.append(query_bundle)
        self.embeddings_seen.append(query_bundle.embedding)
        query_bundle.embedding = [0.5, 0.5]
        return [NodeWithScore(node=n, score=s) for n, s in self.hits]


def two_retrievers() -> Dict[str, BaseRetriever]:
    dense = FixedRetriever([(with_asset("a1", "doc1"), 0.9), (with_asset("a2", "doc2"), 0.8),
                            (with_asset("a3", "doc1"), 0.7), (with_asset("a4", "doc3"), 0.5)])
    keyword = FixedRetriever([(of_document("k1", "doc3"), 12.0), (of_document("k2", "doc2"), 7.0),
                              (of_document("loose", None), 3.0)])
    return {"dense": dense, "keyword": keyword}


def order(hits) -> List[str]:
    return [h.asset_id for h in hits]


def test_asset_falls_back_to_source_document_then_node():
    assert asset_of(with_asset("n", "doc9")) == "doc9"
    assert asset_of(of_document("k1", "doc3")) == "doc3"
    assert asset_of(of_document("loose", None)) == "loose"


def test_rrf_over_two_foreign_retrievers_matches_the_hand_computed_order():
    fr = FusionRetriever(two_retrievers(), config=RetrievalConfig(top_k=10, rrf_k=60), fusion="rrf")
    hits = fr.retrieve_assets(QUERY)
    # dense ranks doc1, doc2, doc3 (doc1's second chunk collapses into doc1);
    # keyword ranks doc3, doc2, loose (no asset_id: the source document, else the node itself).
    expected = {"doc1": 1 / 61, "doc2": 1 / 62 + 1 / 62, "doc3": 1 / 63 + 1 / 61, "loose": 1 / 63}
    assert order(hits) == ["doc3", "doc2", "doc1", "loose"]
    for h in hits:  # raw_score: the RRF sum; score: on 0-1, 1 = first in both retrievers (2/61)
        assert h.raw_score == pytest.approx(expected[h.asset_id])
        assert h.score == pytest.approx(expected[h.asset_id] / (2 / 61))
    doc2 = hits[1]
    assert doc2.ranks == {"dense": 2, "keyword": 2} and doc2.scores == {"dense": 0.8, "keyword": 7.0}
    assert doc2.why == "dense rank 2, keyword rank 2" and hits[0].why == "keyword rank 1, dense rank 3"
    # both chunks of doc1 are its evidence, each scored with the asset's 0-1 fused score
    doc1 = hits[2]
    assert {n.node.node_id for n in doc1.nodes} == {"a1", "a3"}
    assert all(n.score == pytest.approx(0.5) for n in doc1.nodes)


def test_weighted_fusion_matches_the_hand_computed_order():
    fr = FusionRetriever(two_retrievers(), config=RetrievalConfig(top_k=10), fusion="weighted",
                         weights={"dense": 2.0, "keyword": 1.0})
    hits = fr.retrieve_assets(QUERY)
    # min-max per retriever: dense doc1 1, doc2 (0.8-0.5)/0.4 = 0.75, doc3 0;
    # keyword doc3 1, doc2 (7-3)/9 = 4/9, loose 0.
    expected = {"doc1": 2 * 1.0, "doc2": 2 * 0.75 + 4 / 9, "doc3": 1.0, "loose": 0.0}
    assert order(hits) == ["doc1", "doc2", "doc3", "loose"]
    for h in hits:  # the best achievable weighted sum is 2 + 1
        assert h.raw_score == pytest.approx(expected[h.asset_id])
        assert h.score == pytest.approx(expected[h.asset_id] / 3.0)


def test_retrieve_returns_nodes_asset_by_asset_and_each_retriever_gets_a_fresh_bundle():
    retrievers = two_retrievers()
    fr = FusionRetriever(retrievers, config=RetrievalConfig(top_k=2))
    caller = QueryBundle(QUERY)
    nodes = fr.retrieve(caller)
    assert [asset_of(n.node) for n in nodes] == ["doc3", "doc3", "doc2", "doc2"]
    dense, keyword = retrievers["dense"], retrievers["keyword"]
    # each retriever saw its own bundle: the embedding the other one wrote never reached it
    assert dense.embeddings_seen == [None] and keyword.embeddings_seen == [None]
    assert dense.seen[0] is not keyword.seen[0] and caller not in (dense.seen[0], keyword.seen[0])
    assert caller.embedding is None and dense.seen[0].query_str == QUERY


def test_aretrieve_gives_the_same_as_retrieve():
    fr = FusionRetriever(two_retrievers(), config=RetrievalConfig(top_k=10))
    sync = fr.retrieve(QUERY)
    asyn = asyncio.run(fr.aretrieve(QUERY))
    assert [(n.node.node_id, n.score) for n in asyn] == [(n.node.node_id, n.score) for n in sync]
    assert order(asyncio.run(fr.aretrieve_assets(QUERY))) == order(fr.retrieve_assets(QUERY))


def test_foreign_hits_are_held_to_the_tenant_guard_filters_floor_and_k():
    nodes = [(with_asset("p1", "pub1", collection="public", page=1), 0.9),
             (with_asset("s1", "sec1", collection="private", page=1), 0.8),
             (with_asset("p2", "pub2", collection="public", page=2), 0.3),
             (of_document("x", "unlabelled"), 0.7)]  # no collection: not provably allowed
    fr = FusionRetriever({"mine": FixedRetriever(nodes)},
                         config=RetrievalConfig(allowed_collections=["public"], min_scores={"mine": 0.2}))
    assert [h.node.node_id for h in fr.run_one("mine", QUERY)] == ["p1", "p2"]
    assert [h.node.node_id for h in fr.run_one("mine", QUERY, k=1)] == ["p1"]
    page2 = MetadataFilters(filters=[MetadataFilter(key="page", value=2)])
    assert [h.node.node_id for h in fr.run_one("mine", QUERY, filters=page2)] == ["p2"]
    strict = FusionRetriever({"mine": FixedRetriever(nodes)},
                             config=RetrievalConfig(allowed_collections=["public"], min_scores={"mine": 0.5}))
    assert [h.node.node_id for h in strict.run_one("mine", QUERY)] == ["p1"]
    with pytest.raises(ValueError, match="unknown retriever 'nope'"):
        fr.run_one("nope", QUERY)


# ---- built-in retrievers on fakes ------------------------------------------------------------------
CORPUS = [with_asset("inv", "inv", "INVOICE 4711 total 1,939.00 EUR", collection="public", modality="ocr"),
          with_asset("car", "car", "a red car parked by the road", collection="public", modality="caption"),
          with_asset("sec", "sec", "red car secret memo 4711", collection="private", modality="text")]


class FakeStores:
    """What the built-in retrievers need from ModalityStores: query + the BM25 hooks."""

    def __init__(self, nodes):
        self.nodes = nodes
        self.queries: List[tuple] = []

    def query(self, collection, embedding, k, filters=None):
        self.queries.append((collection, list(embedding), k, filters))
        scores = [0.9, 0.15, 0.5]
        hits = [NodeWithScore(node=n, score=s) for n, s in zip(self.nodes, scores)
                if matches_filters(n.metadata, filters)]
        return sorted(hits, key=lambda h: -h.score)[:k]

    def all_nodes(self, collection):
        return [n for n in self.nodes if n.metadata["modality"] == collection]

    def signature(self):
        return (len(self.nodes),)

    def get_assets_nodes(self, asset_ids):
        return {a: [n for n in self.nodes if n.metadata["asset_id"] == a] for a in asset_ids}


class FakeEmbed:
    def get_query_embedding(self, text):
        return [float(len(text)), 1.0]

    def get_image_embedding(self, path):
        return [0.0, 1.0]


class FakeImageEmbed(FakeEmbed):
    class encoder:  # noqa: N801 - mimics ClipEmbedding.encoder
        floors = {"image": 0.4, "image2image": 0.95}


def test_vector_retriever_applies_floor_guard_and_embeds_the_query_itself():
    stores = FakeStores(CORPUS)
    r = VectorCollectionRetriever(stores, "text", FakeEmbed(), similarity_top_k=5, min_score=0.2,
                                  allowed_collections=["public"])
    hits = r.retrieve(QueryBundle(QUERY, embedding=[9.9, 9.9]))  # a stale embedding is ignored
    assert [h.node.node_id for h in hits] == ["inv"]  # "car" is below the floor, "sec" outside the guard
    collection, vec, k, flt = stores.queries[-1]
    assert (collection, vec, k) == ("text", [7.0, 1.0], 5)
    assert not matches_filters({"collection": "private"}, flt)
    assert r.retrieve("") == []


def test_from_defaults_builds_the_named_retrievers_and_the_legacy_positional_form_still_works():
    stores = FakeStores(CORPUS)
    cfg = RetrievalConfig(retrievers=["image", "caption", "bm25"], top_k=3)
    for fr in (FusionRetriever.from_defaults(stores, FakeEmbed(), FakeImageEmbed(), cfg, describe_image=lambda p: "car"),
               FusionRetriever(stores, FakeEmbed(), FakeImageEmbed(), cfg, describe_image=lambda p: "car")):
        assert list(fr.retrievers) == ["image", "caption", "bm25", "image2image"]
        assert fr.floor("image") == 0.4 and fr.floor("caption") == 0.2 and fr.floor("image2image") == 0.95
        assert fr.plan(QueryBundle(QUERY)) == (["image", "caption", "bm25"], QUERY, None)
        names, text, image = fr.plan(QueryBundle("what is it", image_path="/q.png"))
        assert names[-1] == "image2image" and text == "what is it car" and image == "/q.png"
        assert [h.node.node_id for h in fr.run_one("bm25", "invoice 4711")][0] == "inv"
        assert fr.run_one("image2image", QUERY) == []  # no query image: nothing to compare
        assert fr.bm25 is not None


def test_bm25_retriever_respects_the_guard_and_raises_on_unknown_operators():
    cache = BM25Cache(lambda: CORPUS, lambda: (1,))
    guarded = BM25StoreRetriever(cache, allowed_collections=["public"])
    assert {h.node.node_id for h in guarded.retrieve("red car 4711")} == {"car", "inv"}  # never "sec"
    assert {h.node.node_id for h in BM25StoreRetriever(cache).retrieve("red car 4711")} == {"car", "inv", "sec"}
    unknown = MetadataFilters(filters=[MetadataFilter.model_construct(key="modality", value="o.r", operator="regex")])
    with pytest.raises(UnsupportedFilterError, match="'regex'"):
        BM25StoreRetriever(cache, filters=unknown).retrieve("red car")
    empty = BM25Cache(lambda: [], lambda: (0,))
    with pytest.raises(UnsupportedFilterError):  # refused before looking at any node
        BM25StoreRetriever(empty, filters=unknown).retrieve("red car")


def test_filter_matcher_implements_llamaindex_operators_and_refuses_the_rest():
    meta = {"modality": "OCR", "page": 3, "tags": ["a", "b"], "empty": ""}

    def ok(op, key, value, condition="and"):
        return matches_filters(meta, MetadataFilters(filters=[MetadataFilter(key=key, value=value, operator=op)],
                                                     condition=condition))

    assert ok(FilterOperator.TEXT_MATCH_INSENSITIVE, "modality", "oc")
    assert not ok(FilterOperator.TEXT_MATCH, "modality", "oc")
    assert ok(FilterOperator.IS_EMPTY, "empty", None) and ok(FilterOperator.IS_EMPTY, "missing", None)
    assert not ok(FilterOperator.IS_EMPTY, "page", None)
    assert ok(FilterOperator.CONTAINS, "tags", "a") and not ok(FilterOperator.CONTAINS, "tags", "z")
    assert ok(FilterOperator.ANY, "tags", ["z", "b"]) and not ok(FilterOperator.ALL, "tags", ["a", "z"])
    assert ok(FilterOperator.NIN, "missing", ["x"]) and not ok(FilterOperator.GT, "missing", 1)
    # NOT (a condition): matches when none of its filters match
    assert not ok(FilterOperator.EQ, "page", 3, condition="not") and ok(FilterOperator.EQ, "page", 4, condition="not")
    with pytest.raises(UnsupportedFilterError, match="'regex'"):
        matches_filters(meta, MetadataFilters(filters=[MetadataFilter.model_construct(
            key="modality", value="x", operator="regex")]))
    with pytest.raises(UnsupportedFilterError, match="'xor'"):
        matches_filters(meta, MetadataFilters.model_construct(
            filters=[MetadataFilter(key="page", value=3)], condition="xor"))


# ---- reranker as a LlamaIndex node postprocessor ------------------------------------------------------
class PrefersWord:
    """A Reranker: assets whose evidence mentions ``word`` first, the rest after, order kept."""

    def __init__(self, word: str):
        self.word = word

    def rerank(self, query, hits, retriever=None):
        ranked = sorted(hits, key=lambda h: self.word not in " ".join(n.node.get_content() for n in h.nodes))
        for i, h in enumerate(ranked):
            h.score = 1.0 / (i + 1)
            h.scores["rerank"] = h.score
        return ranked


def test_reranker_postprocessor_works_in_a_stock_query_engine():
    nodes = [(with_asset("n1", "plain", "a blue bicycle"), 0.9),
             (with_asset("n2", "match", "a red car"), 0.5),
             (with_asset("n3", "match", "the car again"), 0.4),
             (of_document("n4", "other", "a tree"), 0.3)]
    reranker = PrefersWord("red")
    assert isinstance(reranker, Reranker)
    post = RerankPostprocessor(reranker=reranker, top_n=2)
    out = post.postprocess_nodes([NodeWithScore(node=n, score=s) for n, s in nodes], query_str=QUERY)
    assert [n.node.node_id for n in out] == ["n2", "n3", "n1"]  # asset "match" first, both its nodes
    assert [n.score for n in out] == [1.0, 1.0, 0.5]
    engine = RetrieverQueryEngine.from_args(FixedRetriever(nodes), llm=MockLLM(), node_postprocessors=[post])
    response = engine.query(QUERY)
    assert [n.node.node_id for n in response.source_nodes] == ["n2", "n3", "n1"]
    with pytest.raises(ValueError, match="needs the query"):
        post.postprocess_nodes([NodeWithScore(node=nodes[0][0], score=1.0)])


def test_a_calibrated_fuser_is_rebuilt_when_the_stores_change(monkeypatch):
    # A long-lived retriever (the server's, the facade's) must see the calibration an ingest wrote:
    # the fuser is rebuilt when the stores' signature moves, as the BM25 index is, and only then.
    import mmrag_li.retrieval.learned as learned

    class Stores:
        version = 1

        def signature(self):
            return ("text", self.version)

    built = []
    monkeypatch.setattr(learned, "build_fuser", lambda fusion: built.append(object()) or built[-1])
    stores = Stores()
    fused = FusionRetriever(retrievers=two_retrievers(), config=RetrievalConfig(fusion="calibrated"), stores=stores)
    first = fused.fuser()
    assert fused.fuser() is first and len(built) == 1
    stores.version = 2  # an ingest wrote to the store
    assert fused.fuser() is not first and len(built) == 2
    assert FusionRetriever(retrievers=two_retrievers(), fusion="rrf", stores=stores).fuser() is None
