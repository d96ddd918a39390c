"""Ranking metrics against values computed by hand (the arithmetic is in the comments)."""

import math

import pytest

from mmrag_li.evaluation.metrics import (
    hit_at_k,
    mean_metrics,
    metric_names,
    ndcg_at_k,
    query_metrics,
    recall_at_k,
    recall_curve,
    reciprocal_rank,
)

L2_3 = math.log2(3)  # 1.58496...
L2_4 = 2.0
L2_5 = math.log2(5)


def test_recall_at_k_by_hand():
    ranked = ["a", "x", "b", "y", "c"]
    rel = {"a", "b", "c", "d"}
    assert recall_at_k(ranked, rel, 1) == 0.25  # a
    assert recall_at_k(ranked, rel, 2) == 0.25  # a, x
    assert recall_at_k(ranked, rel, 3) == 0.5  # a, b
    assert recall_at_k(ranked, rel, 5) == 0.75  # a, b, c; d never retrieved
    assert recall_at_k(ranked, rel, 50) == 0.75  # k past the list end


def test_ndcg_single_relevant_at_rank_3():
    # DCG = 1/log2(3+1) = 0.5; IDCG = 1/log2(2) = 1
    assert ndcg_at_k(["x", "y", "a"], ["a"], 10) == pytest.approx(0.5)
    assert ndcg_at_k(["x", "y", "a"], ["a"], 2) == 0.0


def test_ndcg_two_relevant_by_hand():
    # ranks 1 and 3 relevant: DCG = 1 + 1/log2(4) = 1.5
    # IDCG@5 with 2 relevant = 1 + 1/log2(3) = 1.63093
    ranked = ["a", "x", "b", "y", "z"]
    assert ndcg_at_k(ranked, {"a", "b"}, 5) == pytest.approx(1.5 / (1 + 1 / L2_3))
    # @2: DCG = 1; IDCG@2 = 1 + 1/log2(3)
    assert ndcg_at_k(ranked, {"a", "b"}, 2) == pytest.approx(1 / (1 + 1 / L2_3))
    # @1: DCG = 1, IDCG@1 = 1
    assert ndcg_at_k(ranked, {"a", "b"}, 1) == 1.0


def test_ndcg_ideal_is_cut_at_k():
    # 3 relevant, k=2, both top-2 relevant -> perfect 1.0 even though one relevant is missing
    assert ndcg_at_k(["a", "b", "x"], {"a", "b", "c"}, 2) == pytest.approx(1.0)
    # rank 2 and 4 relevant of 3: DCG = 1/log2(3) + 1/log2(5); IDCG@4 = 1 + 1/log2(3) + 1/log2(4)
    got = ndcg_at_k(["x", "a", "y", "b"], {"a", "b", "c"}, 4)
    assert got == pytest.approx((1 / L2_3 + 1 / L2_5) / (1 + 1 / L2_3 + 1 / L2_4))


def test_reciprocal_rank_and_cutoff():
    assert reciprocal_rank(["x", "y", "a", "b"], {"a", "b"}) == pytest.approx(1 / 3)
    assert reciprocal_rank(["a"], {"a"}) == 1.0
    assert reciprocal_rank(["x", "y"], {"a"}) == 0.0
    assert reciprocal_rank(["x", "y", "a"], {"a"}, k=2) == 0.0  # MRR@2: rank 3 does not count
    assert reciprocal_rank([], {"a"}) == 0.0


def test_duplicates_count_once():
    # "a" twice: the second occurrence is not a new hit, so recall cannot exceed 1 and DCG is 1
    assert recall_at_k(["a", "a"], {"a"}, 2) == 1.0
    assert ndcg_at_k(["a", "a"], {"a"}, 2) == 1.0
    # a repeated non-relevant id still occupies its rank
    assert reciprocal_rank(["x", "x", "a"], {"a"}) == pytest.approx(1 / 3)


def test_hit_and_curve():
    ranked = ["x", "a", "y", "b"]
    rel = {"a", "b"}
    assert hit_at_k(ranked, rel, 1) == 0.0
    assert hit_at_k(ranked, rel, 2) == 1.0
    assert recall_curve(ranked, rel, 5) == [0.0, 0.5, 0.5, 1.0, 1.0]
    assert recall_curve(ranked, rel, 5)[2] == recall_at_k(ranked, rel, 3)


def test_query_metrics_and_mean():
    ks = [1, 5]
    q1 = query_metrics(["a", "x"], {"a"}, ks)  # perfect
    q2 = query_metrics(["x", "y", "a"], {"a"}, ks)  # rank 3
    assert list(q1) == metric_names(ks) == ["recall@1", "recall@5", "ndcg@1", "ndcg@5", "mrr"]
    assert q1 == {"recall@1": 1.0, "recall@5": 1.0, "ndcg@1": 1.0, "ndcg@5": 1.0, "mrr": 1.0}
    assert q2["recall@1"] == 0.0 and q2["recall@5"] == 1.0
    assert q2["ndcg@5"] == pytest.approx(0.5) and q2["mrr"] == pytest.approx(1 / 3)
    m = mean_metrics([q1, q2])
    assert m["recall@1"] == 0.5 and m["recall@5"] == 1.0
    assert m["ndcg@5"] == pytest.approx(0.75)
    assert m["mrr"] == pytest.approx((1 + 1 / 3) / 2)
    assert mean_metrics([]) == {}
    assert query_metrics(["x", "y", "a"], {"a"}, [1], mrr_k=2)["mrr"] == 0.0


def test_undefined_inputs_raise():
    with pytest.raises(ValueError):
        recall_at_k(["a"], set(), 5)
    with pytest.raises(ValueError):
        ndcg_at_k(["a"], {"a"}, 0)
