"""Fusers that read a store's calibration (:mod:`mmrag_li.retrieval.calibration`).

:class:`CalibratedFuser` (``retrieval.fusion: calibrated``, the default) is RRF in which a retriever
that carries no signal for the query is *down-weighted*, never dropped:

* a retriever whose top-1 score is within its unrelated-query range (calibrated confidence not above
  ``ABSTAIN_QUANTILE``, its p95) counts with weight ``floor`` (``retrieval.calibrated_floor``);
* the hits of the retrievers in ``hit_confidence`` (``retrieval.hit_confidence``, default BM25) are
  each weighted by their own calibrated confidence, and such a list is never gated as a whole: BM25
  abstains by itself (no query word, no hit), and its raw scores depend on the query's words, so a
  relevant page of a single manual can score like an unrelated query's best hit on it (dotguide.pdf:
  "default fontsize for nodes" fell from rank 1 to below rank 3 when BM25's list was gated);
* every other retriever, and any retriever without a calibration (image->image, a foreign one),
  is plain RRF.

Why per-hit confidence only for BM25: in a list whose top-1 is confident, BM25's confidence falls
by a median 0.5-0.6 from rank 1 to rank 10 (a verbatim phrase or an identifier sits far above
partial keyword matches), while the dense lists stay within 0.0-0.2 (cosines of the top 20 are
squeezed together); weighting dense hits by it mostly punishes weak but correct agreement between
lists (benchmarks/README.md, section 7).

:class:`ScoreAwareFuser` (``retrieval.fusion: score_aware``) is the abstaining variant: retrievers
inside their unrelated range give nothing, every other hit is weighted by its confidence.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from mmrag_li.retrieval.calibration import Calibration, n_tokens

__all__ = ["CalibratedFuser", "Ranked", "ScoreAwareFuser"]

Ranked = Dict[str, List[Tuple[str, float, Any]]]


class _FactorFuser:
    """RRF in which each hit counts ``w_r * g / (k + rank_r)``; subclasses say what ``g`` is
    (:meth:`factors`), the summing and the best possible score are shared."""

    rrf_k: int

    def factors(self, ranked: Ranked, query_str: str) -> Dict[str, List[float]]:
        """retriever name -> the factor ``g`` of each of its hits, in rank order."""
        raise NotImplementedError

    def fuse(self, ranked: Ranked, query_str: str, weights: Optional[Mapping[str, float]] = None) -> Dict[str, float]:
        """key -> fused score (every key of ``ranked`` gets one).

        Args:
            ranked: retriever name -> ranked ``(key, score, hit)`` list.
            query_str: the query text (its length picks the calibration bin).
            weights: retriever name -> weight (default 1; the identifier boost is applied by the caller).
        """
        weights = weights or {}
        fused: Dict[str, float] = {}
        for name, gs in self.factors(ranked, query_str).items():
            w = weights.get(name, 1.0)
            for rank, ((key, _s, _h), g) in enumerate(zip(ranked[name], gs), start=1):
                fused[key] = fused.get(key, 0.0) + w * g / (self.rrf_k + rank)
        return fused

    def max_score(self, names: Sequence[str], weights: Optional[Mapping[str, float]] = None) -> float:
        """The highest fused score possible from ``names`` (first everywhere, factor 1).

        Args:
            names: the retrievers that returned anything.
            weights: retriever name -> weight.
        """
        weights = weights or {}
        return sum(max(weights.get(n, 1.0), 0.0) / (self.rrf_k + 1) for n in names)


class ScoreAwareFuser(_FactorFuser):
    """RRF over the retrievers that do not abstain, each candidate weighted by its calibrated
    confidence: ``sum_r w_r * conf_r(score) / (k + rank_r)``. When every retriever abstains the
    plain (weighted) RRF of all lists is returned, so a query always gets an answer.

    Args:
        calibration: the store's :class:`Calibration`.
        rrf_k: the RRF constant.
    """

    def __init__(self, calibration: Calibration, rrf_k: int = 60):
        self.calibration = calibration
        self.rrf_k = rrf_k

    def active(self, ranked: Ranked, query_str: str) -> List[str]:
        """The retrievers that do not abstain for this query.

        Args:
            ranked: retriever name -> ranked ``(key, score, hit)`` list.
            query_str: the query text.
        """
        tokens = n_tokens(query_str)
        return [n for n, items in ranked.items()
                if items and not self.calibration.abstains(n, items[0][1], tokens)]

    def factors(self, ranked: Ranked, query_str: str) -> Dict[str, List[float]]:
        """retriever name -> the factor of each of its hits: its calibrated confidence, 0 for an
        abstaining list, 1 everywhere when every list abstains.

        Args:
            ranked: retriever name -> ranked ``(key, score, hit)`` list.
            query_str: the query text (its length picks the calibration bin).
        """
        tokens = n_tokens(query_str)
        active = set(self.active(ranked, query_str))
        if not active:  # nobody is sure: plain RRF
            return {name: [1.0] * len(items) for name, items in ranked.items()}
        return {name: [self.calibration.confidence(name, score, tokens) if name in active else 0.0
                       for _k, score, _h in items] for name, items in ranked.items()}


class CalibratedFuser(_FactorFuser):
    """RRF with calibrated down-weighting: ``sum_r w_r * g_r(hit) / (k + rank_r)`` where ``g_r`` is
    the hit's own calibrated confidence for a retriever of ``hit_confidence``, ``floor`` for any other
    retriever whose top-1 is within its unrelated-query range, and 1 otherwise (uncalibrated
    retrievers: always 1). No retriever ever vanishes while ``floor > 0``.

    Args:
        calibration: the store's :class:`Calibration`.
        rrf_k: the RRF constant.
        floor: weight (0..1) of a retriever without signal for the query (0 = abstain, 1 = plain RRF).
        hit_confidence: retrievers whose hits are weighted one by one by their calibrated confidence.
    """

    def __init__(self, calibration: Calibration, rrf_k: int = 60, floor: float = 0.3,
                 hit_confidence: Sequence[str] = ("bm25",)):
        if not 0.0 <= floor <= 1.0:
            raise ValueError(f"floor must be within 0..1 (got {floor})")
        self.calibration = calibration
        self.rrf_k = rrf_k
        self.floor = floor
        self.hit_confidence = frozenset(hit_confidence)

    def factors(self, ranked: Ranked, query_str: str) -> Dict[str, List[float]]:
        """retriever name -> the factor ``g`` of each of its hits, in rank order (what :meth:`fuse` uses).

        Args:
            ranked: retriever name -> ranked ``(key, score, hit)`` list.
            query_str: the query text (its length picks the calibration bin).
        """
        cal, tokens = self.calibration, n_tokens(query_str)
        out: Dict[str, List[float]] = {}
        for name, items in ranked.items():
            if not items or name not in cal.retrievers:
                out[name] = [1.0] * len(items)
            elif name in self.hit_confidence:  # per hit, never gated as a whole list (see the module doc)
                out[name] = [cal.confidence(name, score, tokens) for _k, score, _h in items]
            elif cal.abstains(name, items[0][1], tokens):  # top-1 looks like an unrelated query's
                out[name] = [self.floor] * len(items)
            else:
                out[name] = [1.0] * len(items)
        return out
