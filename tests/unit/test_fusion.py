"""Fusion maths and BM25 on real text: rank collapse per asset, RRF, weighted sums, recency, filters."""

import datetime as dt

import pytest
from llama_index.core.schema import NodeWithScore, TextNode
from llama_index.core.vector_stores.types import FilterOperator, MetadataFilter, MetadataFilters

from mmrag_li.retrieval.bm25 import BM25Index, matches_filters
from mmrag_li.retrieval.fusion import combine_filters, fuse, normalise, rank_assets, recency_factor


def nws(asset, score, nid=None, **meta):
    return NodeWithScore(node=TextNode(id_=nid or f"{asset}:{score}", text="t", metadata={"asset_id": asset, **meta}),
                         score=score)


def test_rank_assets_keeps_best_node_per_asset():
    ranked = rank_assets([nws("a", 0.2), nws("b", 0.9), nws("a", 0.95), nws("c", 0.1)])
    assert [a for a, _s, _h in ranked] == ["a", "b", "c"]
    assert ranked[0][1] == pytest.approx(0.95)


def test_rrf_rewards_agreement_between_retrievers():
    ranked = {
        "image": rank_assets([nws("car", 0.9), nws("cat", 0.8), nws("doc", 0.1)]),
        "ocr": rank_assets([nws("doc", 0.7), nws("car", 0.6)]),
        "bm25": rank_assets([nws("car", 3.0)]),
    }
    fused = fuse(ranked, "rrf", rrf_k=60)
    assert max(fused, key=fused.get) == "car"
    assert fused["car"] == pytest.approx(1 / 61 + 1 / 62 + 1 / 61)
    assert fused["doc"] == pytest.approx(1 / 63 + 1 / 61)


def test_weighted_fusion_uses_normalised_scores_and_weights():
    ranked = {"image": rank_assets([nws("x", 0.30), nws("y", 0.20)]),
              "bm25": rank_assets([nws("y", 12.0), nws("x", 2.0)])}
    even = fuse(ranked, "weighted")
    assert even["x"] == pytest.approx(1.0) and even["y"] == pytest.approx(1.0)
    skewed = fuse(ranked, "weighted", weights={"bm25": 3.0})
    assert skewed["y"] > skewed["x"]


def test_normalise_methods():
    assert normalise([1.0, 2.0, 3.0]) == [0.0, 0.5, 1.0]
    assert normalise([5.0, 5.0]) == [1.0, 1.0]
    z = normalise([1.0, 2.0, 3.0], "zscore")
    assert z[0] < z[1] < z[2] and all(0 < v < 1 for v in z)
    assert normalise([]) == []


def test_recency_prior_halves_at_most():
    now = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    fresh = recency_factor({"ingested_at": "2026-01-01T00:00:00+00:00"}, 30, now)
    month = recency_factor({"ingested_at": "2025-12-02T00:00:00+00:00"}, 30, now)
    ancient = recency_factor({"ingested_at": "1990-01-01T00:00:00+00:00"}, 30, now)
    assert fresh == pytest.approx(1.0) and month == pytest.approx(0.75) and ancient == pytest.approx(0.5, abs=1e-3)
    assert recency_factor({}, 30, now) == 1.0
    assert recency_factor({"ingested_at": "2000-01-01"}, 0, now) == 1.0


def test_collection_guard_is_always_applied():
    user = MetadataFilters(filters=[MetadataFilter(key="source", value="/a.png")])
    guarded = combine_filters(user, ["public"])
    assert matches_filters({"collection": "public", "source": "/a.png"}, guarded)
    assert not matches_filters({"collection": "private", "source": "/a.png"}, guarded)
    assert not matches_filters({"collection": "public", "source": "/b.png"}, guarded)
    assert combine_filters(None, None) is None


def test_matches_filters_operators():
    meta = {"page": 3, "ingested_at": "2026-05-01", "modality": "ocr"}
    f = MetadataFilters(filters=[MetadataFilter(key="page", value=2, operator=FilterOperator.GT),
                                 MetadataFilter(key="modality", value=["ocr", "text"], operator=FilterOperator.IN)])
    assert matches_filters(meta, f)
    f2 = MetadataFilters(filters=[MetadataFilter(key="ingested_at", value="2026-06-01", operator=FilterOperator.GTE)])
    assert not matches_filters(meta, f2)
    either = MetadataFilters(filters=f.filters + f2.filters, condition="or")
    assert matches_filters(meta, either)


def test_bm25_finds_exact_identifiers_and_normalised_amounts():
    nodes = [TextNode(id_="inv", text="INVOICE 4711\nTotal 1,939.00 EUR", metadata={"asset_id": "inv"}),
             TextNode(id_="inv2", text="Invoice 4712 for consulting, total 250.00", metadata={"asset_id": "inv2"}),
             TextNode(id_="car", text="A red car parked by the road", metadata={"asset_id": "car"}),
             TextNode(id_="empty", text="   ", metadata={"asset_id": "e"})]
    index = BM25Index(nodes)
    assert len(index) == 3
    assert index.search("invoice 4711", 3)[0].node.node_id == "inv"
    assert index.search("1939.00", 3)[0].node.node_id == "inv"
    assert index.search("red car", 3)[0].node.node_id == "car"
    assert index.search("zebra", 3) == []
    only_inv2 = index.search("invoice", 3, predicate=lambda meta: meta["asset_id"] == "inv2")
    assert [h.node.node_id for h in only_inv2] == ["inv2"]


def test_identifier_queries_boost_exact_keyword_matching():
    from mmrag_li.config import RetrievalConfig
    from mmrag_li.retrieval.fusion import query_weights

    cfg = RetrievalConfig(weights={"image": 0.5})
    assert query_weights("a photo of a cat", cfg) == {"image": 0.5}
    assert query_weights("invoice 4711", cfg) == {"image": 0.5, "bm25": 5.0}
    # the boost decides a tie between one BM25 rank-1 vote and mid ranks in three embedding lists
    # BM25: the invoice that holds the number first, the generic one beyond its top k;
    # the embedding lists, blind to numbers, rank the generic-looking invoice high.
    fillers = [nws(f"other{i}", 5.0 - i * 0.5) for i in range(6)]
    ranked = {"bm25": rank_assets([nws("right", 9.0)] + fillers),
              "ocr": rank_assets([nws("right", 0.5), nws("generic", 0.4)]),
              "image": rank_assets([nws("generic", 0.4)]), "caption": rank_assets([nws("generic", 0.3)])}
    assert max(fuse(ranked, "rrf"), key=fuse(ranked, "rrf").get) == "generic"
    boosted = fuse(ranked, "rrf", weights=query_weights("invoice 4711", cfg))
    assert max(boosted, key=boosted.get) == "right"


def test_bm25_prefers_the_phrase_as_a_heading_over_a_mention():
    body = "Lens kit 1,200.00 Tripod 429.00 Calibration service 310.00 Total 1,939.00 EUR payable within 30 days"
    heading = TextNode(id_="heading", text=f"INVOICE 4711\n{body}", metadata={"asset_id": "a"})
    mention = TextNode(id_="mention", text=f"{body}\nINVOICE 4711", metadata={"asset_id": "b"})
    hits = BM25Index([mention, heading]).search("invoice 4711", 2)  # same words: raw BM25 ties
    assert [h.node.node_id for h in hits] == ["heading", "mention"]
    assert hits[0].score > hits[1].score


# ---- page-level hits and 0-1 scores (issue 11) ------------------------------------------------------
def test_group_by_page_makes_each_page_its_own_hit_and_asset_collapses_them():
    from mmrag_li.retrieval.hits import hit_key

    hits = [nws("pdf", 0.9, "p3", page=3), nws("pdf", 0.8, "p1", page=1), nws("img", 0.7, "i")]
    by_page = rank_assets(hits, "page")
    assert [k for k, _s, _h in by_page] == ["pdf#p3", "pdf#p1", "img"]
    assert [k for k, _s, _h in rank_assets(hits, "asset")] == ["pdf", "img"]
    assert rank_assets(hits) == rank_assets(hits, "asset")  # the default keeps asset ids
    assert hit_key(hits[2].node, "page") == "img"  # unpaged: the asset either way
    with pytest.raises(ValueError):
        hit_key(hits[0].node, "chapter")


def test_fused_scores_are_scaled_to_0_1_by_the_best_achievable():
    from mmrag_li.retrieval.fusion import fused_max, scale_scores
    from mmrag_li.retrieval.hits import AssetHit

    assert fused_max(["a", "b"], "rrf", 60) == pytest.approx(2 / 61)
    assert fused_max(["a", "b"], "rrf", 60, {"b": 5.0}) == pytest.approx(6 / 61)
    assert fused_max(["a", "b"], "weighted", weights={"a": 2.0}) == pytest.approx(3.0)
    top = AssetHit("x", "", None, 2 / 61, ranks={"a": 1, "b": 1})
    second = AssetHit("y", "", 2, 1 / 62, ranks={"b": 2})
    reranked = AssetHit("z", "", None, 2 / 61 * 2, ranks={"a": 3, "rerank": 1})  # above its ceiling
    scale_scores([top, second, reranked], 2 / 61, rerank_top=None)
    assert top.score == pytest.approx(1.0) and top.raw_score == pytest.approx(2 / 61)
    assert second.score == pytest.approx((1 / 62) / (2 / 61)) and second.why == "b rank 2"
    assert reranked.score <= second.score  # clipped: never above the hit before it
    assert top.to_dict()["why"] == "a rank 1, b rank 1" and top.to_dict()["raw_score"] == pytest.approx(2 / 61, 1e-5)
