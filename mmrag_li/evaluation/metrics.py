"""Ranking metrics with binary relevance: Recall@k, NDCG@k, MRR, hit rate; per query and mean.

Pure functions over a ranked list of ids (best first) and a collection of relevant ids. A ranked
id that occurs twice counts once (its first occurrence), so a list that repeats a relevant item
can never score above 1. A query with no relevant ids is undefined for every metric here and
raises ``ValueError`` (the caller decides whether to skip it).

Definitions (``rel(i)`` = 1 when the item at 1-based rank ``i`` is relevant and not seen before):

* ``recall@k = |relevant ∩ top-k| / |relevant|``
* ``ndcg@k = DCG@k / IDCG@k`` with ``DCG@k = Σ_{i<=k} rel(i) / log2(i + 1)`` and ``IDCG@k`` the DCG of
  the ideal list (all relevant first): ``Σ_{i<=min(k, |relevant|)} 1 / log2(i + 1)``
* ``reciprocal rank = 1 / rank of the first relevant item`` (0 when none is ranked, or when it is
  below ``k`` for ``reciprocal_rank(..., k)``); MRR is its mean over queries
* ``hit@k = 1`` when any relevant item is in the top-k
"""

from __future__ import annotations

import math
from typing import Collection, Dict, Hashable, Iterable, List, Mapping, Optional, Sequence

__all__ = [
    "recall_at_k",
    "ndcg_at_k",
    "reciprocal_rank",
    "hit_at_k",
    "recall_curve",
    "query_metrics",
    "mean_metrics",
    "metric_names",
]


def _check(relevant: Collection[Hashable], k: Optional[int] = None) -> None:
    if not relevant:
        raise ValueError("a query needs at least one relevant id")
    if k is not None and k < 1:
        raise ValueError(f"k must be >= 1, got {k}")


def _first_hits(ranked: Sequence[Hashable], relevant: Collection[Hashable], k: Optional[int]) -> List[int]:
    """1-based ranks (within the top-k) at which a not-yet-seen relevant id appears."""
    rel = set(relevant)
    seen: set = set()
    out: List[int] = []
    for i, item in enumerate(ranked[:k] if k is not None else ranked, start=1):
        if item in rel and item not in seen:
            out.append(i)
        seen.add(item)
    return out


def recall_at_k(ranked: Sequence[Hashable], relevant: Collection[Hashable], k: int) -> float:
    _check(relevant, k)
    return len(_first_hits(ranked, relevant, k)) / len(set(relevant))


def hit_at_k(ranked: Sequence[Hashable], relevant: Collection[Hashable], k: int) -> float:
    _check(relevant, k)
    return 1.0 if _first_hits(ranked, relevant, k) else 0.0


def ndcg_at_k(ranked: Sequence[Hashable], relevant: Collection[Hashable], k: int) -> float:
    _check(relevant, k)
    dcg = sum(1.0 / math.log2(i + 1) for i in _first_hits(ranked, relevant, k))
    ideal = sum(1.0 / math.log2(i + 1) for i in range(1, min(k, len(set(relevant))) + 1))
    return dcg / ideal


def reciprocal_rank(ranked: Sequence[Hashable], relevant: Collection[Hashable], k: Optional[int] = None) -> float:
    _check(relevant, k)
    hits = _first_hits(ranked, relevant, k)
    return 1.0 / hits[0] if hits else 0.0


def recall_curve(ranked: Sequence[Hashable], relevant: Collection[Hashable], max_k: int) -> List[float]:
    """``[recall@1, recall@2, ..., recall@max_k]`` in one pass."""
    _check(relevant, max_k)
    n_rel = len(set(relevant))
    hits = _first_hits(ranked, relevant, max_k)
    out, found, j = [], 0, 0
    for k in range(1, max_k + 1):
        while j < len(hits) and hits[j] <= k:
            found += 1
            j += 1
        out.append(found / n_rel)
    return out


def metric_names(ks: Iterable[int]) -> List[str]:
    ks = list(ks)
    return [f"recall@{k}" for k in ks] + [f"ndcg@{k}" for k in ks] + ["mrr"]


def query_metrics(ranked: Sequence[Hashable], relevant: Collection[Hashable], ks: Sequence[int],
                  mrr_k: Optional[int] = None) -> Dict[str, float]:
    """``{"recall@k": .., "ndcg@k": .., "mrr": ..}`` for one query (MRR cut at ``mrr_k`` if given)."""
    out: Dict[str, float] = {}
    for k in ks:
        out[f"recall@{k}"] = recall_at_k(ranked, relevant, k)
    for k in ks:
        out[f"ndcg@{k}"] = ndcg_at_k(ranked, relevant, k)
    out["mrr"] = reciprocal_rank(ranked, relevant, mrr_k)
    return out


def mean_metrics(rows: Sequence[Mapping[str, float]], names: Optional[Sequence[str]] = None) -> Dict[str, float]:
    """Mean of each metric over queries (keys of the first row unless ``names`` is given).

    An empty list gives an empty dict: "no queries" is not the same as "all zeros".
    """
    if not rows:
        return {}
    names = list(names) if names is not None else list(rows[0])
    return {n: sum(float(r[n]) for r in rows) / len(rows) for n in names}
