"""Any LlamaIndex retrievers, fused into one ranked list of assets.

:class:`FusionRetriever` runs named ``BaseRetriever`` s (the built-ins of
:mod:`mmrag_li.retrieval.retrievers` by default, or any the caller brings), ranks *assets* per
retriever (an asset's score is its best node's score; the asset of a node is its ``asset_id``
metadata, else its ``ref_doc_id``, else its node id), then fuses the lists: by default with RRF in
which a retriever whose best score looks like an unrelated query's counts less
(:class:`~mmrag_li.retrieval.calibrated_fusion.CalibratedFuser`, ``fusion: calibrated``), or with
plain Reciprocal Rank Fusion or a weighted sum of normalised scores (:func:`fuse`, a pure function). The result is one
entry per hit -- a page of a multi-page document, or a whole asset (``config.group_by``) -- with
its best evidence nodes, a per-retriever score breakdown, a 0-1 ``score`` (the fused score over
the best achievable, :func:`fused_max`; ``raw_score`` keeps the fused value), a ``why``, a
``snippet`` and ``regions`` (:mod:`mmrag_li.retrieval.regions`).

A text query runs every retriever that takes text; an image query also runs those that need an
image (image->image) and expands the text with the query image's caption and OCR. Each retriever
gets a fresh ``QueryBundle`` of its own, so nothing (e.g. a cached embedding from another model)
is shared between them (LlamaIndex's QueryFusionRetriever trap, see DESIGN.md).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import re
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.schema import BaseNode, NodeWithScore, QueryBundle
from llama_index.core.vector_stores.types import MetadataFilters

from mmrag_li.config import RetrievalConfig
from mmrag_li.config_retrieval import FUSION_KINDS
from mmrag_li.guard.scope import CollectionGuard
from mmrag_li.guard.views import GuardedStores
from mmrag_li.retrieval.bm25 import BM25Cache, compile_filters
from mmrag_li.retrieval.hits import (EVIDENCE_PER_ASSET, AssetHit, asset_of, choose_evidence, explain,
                                     group_by_asset, hit_key, rank_assets)
from mmrag_li.retrieval.query_vectors import QueryVectorMemo, run_concurrently
from mmrag_li.retrieval.regions import regions_for, snippet_for
from mmrag_li.retrieval.retrievers import (ALL_RETRIEVERS, TEXT_FLOOR, TEXT_RETRIEVERS, ScopedRetriever,
                                           and_filters, combine_filters, default_retrievers)

FUSION_METHODS = FUSION_KINDS


def normalise(scores: Sequence[float], method: str = "minmax") -> List[float]:
    """Put one retriever's scores on a 0..1 scale so that weighted sums are meaningful.

    Args:
        scores: one retriever's scores.
        method: "minmax" (equal scores all become 1) or "zscore" (logistic of the z-score).
    """
    if not scores:
        return []
    if method == "zscore":
        mean = sum(scores) / len(scores)
        std = math.sqrt(sum((s - mean) ** 2 for s in scores) / len(scores)) or 1.0
        return [1 / (1 + math.exp(-(s - mean) / std)) for s in scores]
    lo, hi = min(scores), max(scores)
    if hi - lo < 1e-12:
        return [1.0 for _ in scores]
    return [(s - lo) / (hi - lo) for s in scores]


def fuse(ranked: Dict[str, List[Tuple[str, float, NodeWithScore]]], method: str = "rrf", rrf_k: int = 60,
         weights: Optional[Dict[str, float]] = None, norm: str = "minmax") -> Dict[str, float]:
    """Fuse per-retriever asset rankings. RRF: sum_r w_r / (k + rank_r).  Weighted: sum_r w_r *
    normalised score_r. Pure: no retriever, store or model is touched.

    Args:
        ranked: retriever name -> :func:`rank_assets` output.
        method: "rrf" or "weighted".
        rrf_k: the RRF constant k.
        weights: retriever name -> weight (default 1).
        norm: score normalisation for "weighted" (see :func:`normalise`).
    """
    weights = weights or {}
    fused: Dict[str, float] = {}
    for name, items in ranked.items():
        w = weights.get(name, 1.0)
        if method == "rrf":
            for rank, (aid, _s, _h) in enumerate(items, start=1):
                fused[aid] = fused.get(aid, 0.0) + w / (rrf_k + rank)
        else:
            for (aid, _s, _h), ns in zip(items, normalise([s for _a, s, _h in items], norm)):
                fused[aid] = fused.get(aid, 0.0) + w * ns
    return fused


def fused_max(names: Sequence[str], method: str = "rrf", rrf_k: int = 60,
              weights: Optional[Dict[str, float]] = None) -> float:
    """The highest fused score a hit can get from the retrievers ``names``: first in every list
    (RRF: sum_r w_r / (k + 1); weighted: sum_r w_r, normalised scores being at most 1).

    Args:
        names: the retrievers that returned anything for this query.
        method: "rrf" or "weighted".
        rrf_k: the RRF constant k.
        weights: retriever name -> weight (default 1).
    """
    weights = weights or {}
    per = (lambda w: w / (rrf_k + 1)) if method == "rrf" else (lambda w: w)
    return sum(max(per(weights.get(n, 1.0)), 0.0) for n in names)


def scale_scores(hits: Sequence[AssetHit], top: float, rerank_top: Optional[float] = None) -> None:
    """Put fused scores on 0-1 in place: ``raw_score`` keeps the fused value, ``score`` becomes
    ``raw / top`` (a reranked hit: ``raw / rerank_top``), clipped to 0-1 and never above the score of
    the hit before it (the list order is the ranking); ``why`` is filled from the ranks.

    Args:
        hits: the fused hits, best first.
        top: the best achievable fused score (:func:`fused_max`).
        rerank_top: the best achievable score of a reranked hit (None: no reranking).
    """
    ceiling = 1.0
    for h in hits:
        h.raw_score = h.score
        best = rerank_top if (rerank_top and "rerank" in h.ranks) else top
        value = h.score / best if best and best > 0 else 0.0
        h.score = ceiling = min(max(value, 0.0), ceiling)
        h.why = explain(h.ranks)


_IDENTIFIER = re.compile(r"\d")


def query_weights(query_str: str, config: RetrievalConfig) -> Dict[str, float]:
    """Per-retriever weights for this query: configured weights, boosted for identifier queries.

    Args:
        query_str: the query text.
        config: ``weights`` and ``identifier_weights`` are read.
    """
    weights = dict(config.weights)
    if _IDENTIFIER.search(query_str or ""):
        for name, factor in config.identifier_weights.items():
            weights[name] = weights.get(name, 1.0) * factor
    return weights


def recency_factor(meta: Dict[str, Any], half_life_days: float, now: Optional[dt.datetime] = None) -> float:
    """Older assets lose up to half their score (never more), so recency only breaks near-ties.

    Args:
        meta: node metadata (``mtime`` or ``ingested_at``, ISO 8601).
        half_life_days: age at which the bonus halves; <= 0 turns recency off.
        now: the reference time (default: now, UTC).
    """
    if half_life_days <= 0:
        return 1.0
    stamp = meta.get("mtime") or meta.get("ingested_at")
    if not stamp:
        return 1.0
    try:
        when = dt.datetime.fromisoformat(str(stamp))
    except ValueError:
        return 1.0
    now = now or dt.datetime.now(dt.timezone.utc)
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    age = max((now - when).total_seconds() / 86400.0, 0.0)
    return 0.5 + 0.5 * 0.5 ** (age / half_life_days)


def _needs_image(retriever: BaseRetriever) -> bool:
    return bool(getattr(retriever, "needs_image", False))


class FusionRetriever(BaseRetriever):
    """Fuses any named LlamaIndex retrievers per asset (calibrated RRF, RRF, weighted, ...), then optionally reranks.

    ``retrieve`` returns, for each of the top-k hits in rank order, its evidence nodes, each
    scored with the hit's 0-1 fused score (usable with ``SimilarityPostprocessor`` cutoffs). ``retrieve_assets`` returns the grouped :class:`AssetHit`
    objects with the per-retriever breakdown.

    Args:
        retrievers: name -> ``BaseRetriever``. Built-in ones (:class:`ScopedRetriever`) get the
            query's filters, k and tenant guard pushed down; any other retriever's hits are
            filtered, floored (``config.min_scores[name]``) and cut to k afterwards.
            (Deprecated form: ``FusionRetriever(stores, text_embed, clip_embed, config, ...)``,
            the same as :meth:`from_defaults`.)
        config: retrieval settings (fusion, rrf_k, normalize, weights, top_k, rerank, ...).
        weights: retriever name -> weight; overrides ``config.weights``.
        fusion: "calibrated", "rrf", "weighted", "score_aware" or "learned"; overrides ``config.fusion``.
        filters: ``MetadataFilters`` applied to every query.
        reranker: a :class:`~mmrag_li.retrieval.rerank.Reranker` run over the fused top
            ``config.rerank_top_n`` when ``config.rerank`` is on.
        describe_image: path -> text (caption + OCR) appended to the text of image queries.
        stores: node source for evidence fill-in (``get_assets_nodes``); None = hits only. It is
            read through a ``GuardedStores`` view with this retriever's guard.
        bm25: the shared keyword index, kept as ``self.bm25`` for callers that warm it.
        guard: a ``CollectionGuard`` narrowing ``config.allowed_collections`` (the tenant guard:
            None/absent = all collections, ``[]`` = none). Every retriever's hits, the evidence
            fill-in and caller-supplied hits in :meth:`fuse_results` are held to it.
        **kwargs: ``BaseRetriever`` arguments (callback_manager, verbose, ...).
    """

    def __init__(self, retrievers: Mapping[str, BaseRetriever] | Any, *legacy: Any,
                 config: Optional[RetrievalConfig] = None, weights: Optional[Dict[str, float]] = None,
                 fusion: Optional[str] = None, filters: Optional[MetadataFilters] = None, reranker: Any = None,
                 describe_image: Optional[Callable[[str], str]] = None, stores: Any = None,
                 bm25: Optional[BM25Cache] = None, guard: Any = None, **kwargs: Any):
        if not isinstance(retrievers, Mapping):  # deprecated (stores, text_embed, clip_embed[, config])
            if len(legacy) not in (2, 3):
                raise TypeError("FusionRetriever(retrievers: dict[str, BaseRetriever], config=...) or "
                                "FusionRetriever.from_defaults(stores, text_embed, clip_embed, config)")
            config = legacy[2] if len(legacy) == 3 else config
            stores = GuardedStores.wrap(retrievers, CollectionGuard.from_config(config).narrow(guard))
            bm25 = bm25 or BM25Cache.for_stores(stores, TEXT_RETRIEVERS)
            retrievers = default_retrievers(stores, legacy[0], legacy[1], config, bm25=bm25, guard=guard)
        elif legacy:
            if len(legacy) > 1 or config is not None:
                raise TypeError("FusionRetriever(retrievers, config): too many positional arguments")
            config = legacy[0]
        super().__init__(**kwargs)
        if fusion is not None and fusion not in FUSION_METHODS:
            raise ValueError(f"fusion={fusion!r}: choose one of {', '.join(FUSION_METHODS)}")
        update = {k: v for k, v in (("weights", weights), ("fusion", fusion)) if v is not None}
        config = config or RetrievalConfig()
        self.config = config.model_copy(update=update) if update else config
        self.guard = CollectionGuard.from_config(self.config).narrow(guard)
        self.retrievers: Dict[str, BaseRetriever] = dict(retrievers)
        self.filters = filters
        self.reranker = reranker
        self.describe_image = describe_image
        self.stores = None if stores is None else GuardedStores.wrap(stores, self.guard)
        self.bm25 = bm25
        self._fuser: Any = None  # calibrated / score_aware / learned: built on first use (see fuser())
        self._fuser_signature: Any = None  # the stores' signature it was built at

    @classmethod
    def from_defaults(cls, stores: Any, text_embed: Any, clip_embed: Any, config: Optional[RetrievalConfig] = None,
                      reranker: Any = None, describe_image: Optional[Callable[[str], str]] = None,
                      bm25: Optional[BM25Cache] = None, filters: Optional[MetadataFilters] = None,
                      guard: Any = None, **kwargs: Any) -> "FusionRetriever":
        """The built-in retrievers of ``config.retrievers`` (plus image->image) over ``stores``, fused.

        Args:
            stores: the ``ModalityStores`` (or a ``GuardedStores`` view); the retrievers read it
                through a ``GuardedStores`` view with the guard below.
            text_embed: the text embedding (caption, OCR, text collections).
            clip_embed: the image embedding (text->image and image->image).
            config: retrieval settings.
            reranker: optional second stage (see the class arguments).
            describe_image: path -> text for image queries.
            bm25: a shared keyword index (default: one over the text collections of ``stores``).
            filters: ``MetadataFilters`` applied to every query.
            guard: a ``CollectionGuard`` narrowing ``config.allowed_collections``; the BM25 index is
                built per tenant scope, so hidden documents never move visible scores.
            **kwargs: further constructor arguments (weights, fusion, callback_manager, ...).
        """
        guard = CollectionGuard.from_config(config).narrow(guard)
        stores = GuardedStores.wrap(stores, guard)
        bm25 = bm25 or BM25Cache.for_stores(stores, TEXT_RETRIEVERS)
        retrievers = default_retrievers(stores, text_embed, clip_embed, config, bm25=bm25, guard=guard)
        return cls(retrievers, config=config, filters=filters, reranker=reranker, describe_image=describe_image,
                   stores=stores, bm25=bm25, guard=guard, **kwargs)

    # ---- single retrievers -------------------------------------------------------------
    def fuser(self) -> Any:
        """The fuser of ``config.fusion`` "calibrated" / "score_aware" / "learned" (None for rrf / weighted),
        built on first use and again when the stores changed since, as the BM25 index is (see
        :func:`mmrag_li.retrieval.learned.build_fuser`; may compute the store's calibration)."""
        if self.config.fusion in ("rrf", "weighted"):
            return None
        signature = self.stores.signature() if hasattr(self.stores, "signature") else None
        if self._fuser is None or signature != self._fuser_signature:
            from mmrag_li.retrieval.learned import build_fuser

            self._fuser, self._fuser_signature = build_fuser(self), signature
        return self._fuser

    def floor(self, name: str) -> Optional[float]:
        """Relevance floor of retriever ``name``: a built-in's own, else ``config.min_scores[name]``.

        Args:
            name: a retriever name.
        """
        r = self.retrievers.get(name)
        return r.floor if isinstance(r, ScopedRetriever) else self.config.min_scores.get(name)

    def _prepare(self, name: str, query_str: str, image_path: Optional[str], filters: Optional[MetadataFilters],
                 k: Optional[int], vectors: Optional[QueryVectorMemo] = None
                 ) -> Tuple[Optional[BaseRetriever], QueryBundle]:
        r = self.retrievers.get(name)
        if r is None:
            raise ValueError(f"unknown retriever {name!r} (this FusionRetriever has: {', '.join(self.retrievers)})")
        bundle = QueryBundle(query_str=query_str or "", image_path=image_path)  # fresh, never shared
        if not (image_path if _needs_image(r) else bundle.query_str.strip()):
            return None, bundle
        if self.guard.denies_all:
            return None, bundle
        if isinstance(r, ScopedRetriever):
            r = r.scoped(and_filters(self.filters, filters), k, guard=self.guard, vectors=vectors)
        return r, bundle

    def _finish(self, name: str, hits: List[NodeWithScore], filters: Optional[MetadataFilters],
                k: Optional[int]) -> List[NodeWithScore]:
        hits = self.guard.keep(hits)
        if isinstance(self.retrievers[name], ScopedRetriever):
            return hits  # scope, floor and k were pushed down
        scope = combine_filters(and_filters(self.filters, filters), self.guard)
        if scope is not None:
            match = compile_filters(scope)
            hits = [h for h in hits if match(h.node.metadata)]
        floor = self.config.min_scores.get(name)
        if floor is not None:
            hits = [h for h in hits if (h.score or 0.0) > floor]
        hits = sorted(hits, key=lambda h: -(h.score or 0.0))
        return hits[:k] if k else hits

    def run_one(self, name: str, query_str: str, image_path: Optional[str] = None,
                filters: Optional[MetadataFilters] = None, k: Optional[int] = None,
                vectors: Optional[QueryVectorMemo] = None) -> List[NodeWithScore]:
        """Run one named retriever with a fresh ``QueryBundle``; public so evaluation can score
        retrievers on their own.

        Args:
            name: a key of ``self.retrievers``.
            query_str: the (expanded) query text.
            image_path: the query image, for retrievers that need one.
            filters: extra filters for this call.
            k: result size (default: the retriever's own).
            vectors: query vectors shared with the other retrievers of this query (built-in ones).
        """
        r, bundle = self._prepare(name, query_str, image_path, filters, k, vectors)
        return [] if r is None else self._finish(name, r.retrieve(bundle), filters, k)

    async def arun_one(self, name: str, query_str: str, image_path: Optional[str] = None,
                       filters: Optional[MetadataFilters] = None, k: Optional[int] = None,
                       vectors: Optional[QueryVectorMemo] = None) -> List[NodeWithScore]:
        """Async twin of :meth:`run_one` (same arguments)."""
        r, bundle = self._prepare(name, query_str, image_path, filters, k, vectors)
        return [] if r is None else self._finish(name, await r.aretrieve(bundle), filters, k)

    def plan(self, query: QueryBundle, describe: Optional[Callable[[str], str]] = None
             ) -> Tuple[List[str], str, Optional[str]]:
        """Which retrievers run and with what text: an image query adds the retrievers that need an
        image and appends the query image's description to the text. Public so that evaluation
        plans queries exactly as retrieval does.

        Args:
            query: the query.
            describe: path -> text (default ``describe_image``; None: no expansion).
        """
        describe = describe or self.describe_image
        image_path = getattr(query, "image_path", None)
        query_str = query.query_str or ""
        names = [n for n, r in self.retrievers.items() if not _needs_image(r)]
        if image_path:
            names += [n for n, r in self.retrievers.items() if _needs_image(r)]
            if describe is not None:
                query_str = f"{query_str} {describe(image_path)}".strip()
        return names, query_str, image_path

    def run_all(self, query: QueryBundle | str, filters: Optional[MetadataFilters] = None
                ) -> Dict[str, List[NodeWithScore]]:
        """Every planned retriever's hits, by name. They run concurrently (threads) and share the query
        vectors: one encode per embedding space (:class:`~mmrag_li.retrieval.query_vectors.QueryVectorMemo`).

        Args:
            query: the query (a string or a ``QueryBundle`` with an optional ``image_path``).
            filters: extra filters for this call.
        """
        names, query_str, image_path = self.plan(_bundle(query))
        memo = QueryVectorMemo()
        results = run_concurrently([lambda n=n: self.run_one(n, query_str, image_path, filters, vectors=memo)
                                    for n in names])
        return dict(zip(names, results))

    async def arun_all(self, query: QueryBundle | str, filters: Optional[MetadataFilters] = None
                       ) -> Dict[str, List[NodeWithScore]]:
        """Async twin of :meth:`run_all`: the retrievers run concurrently (same arguments)."""
        names, query_str, image_path = await asyncio.to_thread(self.plan, _bundle(query))
        memo = QueryVectorMemo()
        results = await asyncio.gather(*(self.arun_one(n, query_str, image_path, filters, vectors=memo)
                                         for n in names))
        return dict(zip(names, results))

    # ---- fusion ---------------------------------------------------------------------------
    def fuse_results(self, per_retriever: Dict[str, List[NodeWithScore]], query_str: str = "",
                     top_k: Optional[int] = None) -> List[AssetHit]:
        """Fuse per-retriever hits into the top assets, rerank if configured, choose evidence.

        Args:
            per_retriever: retriever name -> its node hits (e.g. :meth:`run_all`).
            query_str: the query text (identifier boost, reranker).
            top_k: how many assets (default ``config.top_k``).
        """
        cfg = self.config
        per_retriever = {name: self.guard.keep(hits) for name, hits in per_retriever.items()}
        group_by = cfg.group_by
        weights = query_weights(query_str, cfg)
        ranked = {name: rank_assets(hits, group_by) for name, hits in per_retriever.items() if hits}
        fuser = self.fuser()
        fused = fuser.fuse(ranked, query_str, weights) if fuser else fuse(ranked, cfg.fusion, cfg.rrf_k, weights,
                                                                          cfg.normalize)
        hits: Dict[str, AssetHit] = {}
        for name, items in ranked.items():
            for rank, (key, score, h) in enumerate(items, start=1):
                hit = hits.get(key)
                if hit is None:
                    hit = hits[key] = AssetHit.for_node(asset_of(h.node), h.node, fused[key])
                    hit.key = key
                hit.scores[name] = score
                hit.ranks[name] = rank
        for hs in per_retriever.values():
            for h in hs:
                key = hit_key(h.node, group_by)
                if key in hits:
                    hits[key].nodes.append(h)
        for hit in hits.values():
            best = max(hit.nodes, key=lambda n: n.score or 0.0)
            hit.score *= recency_factor(best.node.metadata, cfg.recency_half_life_days)
        ordered = sorted(hits.values(), key=lambda h: -h.score)
        rerank_top = None
        if self.reranker is not None and cfg.rerank and ordered:
            ordered = self.reranker.rerank(query_str, ordered[: cfg.rerank_top_n], self) + ordered[cfg.rerank_top_n:]
            rerank_top = 2.0 / (getattr(self.reranker, "rrf_k", cfg.rrf_k) + 1)  # RRF of two ranks, both first
        ordered = ordered[: top_k or cfg.top_k]
        top = fuser.max_score(list(ranked), weights) if fuser else fused_max(list(ranked), cfg.fusion, cfg.rrf_k,
                                                                              weights)
        scale_scores(ordered, top, rerank_top)
        stored = self._stored_nodes(list(dict.fromkeys(h.asset_id for h in ordered)))
        for hit in ordered:
            matched = list(hit.nodes)
            choose_evidence(hit, stored.get(hit.asset_id))
            page_nodes = [n for n in stored.get(hit.asset_id) or [] if n.metadata.get("page") == hit.page]
            look = matched + hit.nodes + page_nodes
            hit.regions = regions_for(hit, query_str, look)
            hit.snippet = snippet_for(hit, query_str, look)
        return ordered

    def _stored_nodes(self, asset_ids: List[str]) -> Dict[str, List[BaseNode]]:
        """All visible nodes of the result assets, fetched in one query per collection."""
        if hasattr(self.stores, "get_assets_nodes"):
            found = self.stores.get_assets_nodes(asset_ids)
        elif hasattr(self.stores, "get_asset_nodes"):
            found = {a: self.stores.get_asset_nodes(a) for a in asset_ids}
        else:
            return {}
        return {a: self.guard.keep(ns) for a, ns in found.items()}

    # ---- public API -------------------------------------------------------------------------
    def retrieve_assets(self, query: QueryBundle | str, filters: Optional[MetadataFilters] = None,
                        top_k: Optional[int] = None) -> List[AssetHit]:
        """The fused top assets for ``query``.

        Args:
            query: a string or a ``QueryBundle`` (``image_path`` for image queries).
            filters: extra filters for this call.
            top_k: how many assets (default ``config.top_k``).
        """
        query = _bundle(query)
        return self.fuse_results(self.run_all(query, filters), query.query_str, top_k)

    async def aretrieve_assets(self, query: QueryBundle | str, filters: Optional[MetadataFilters] = None,
                               top_k: Optional[int] = None) -> List[AssetHit]:
        """Async twin of :meth:`retrieve_assets` (same arguments)."""
        query = _bundle(query)
        per = await self.arun_all(query, filters)
        return await asyncio.to_thread(self.fuse_results, per, query.query_str, top_k)

    def _retrieve(self, query_bundle: QueryBundle) -> List[NodeWithScore]:
        return [n for hit in self.retrieve_assets(query_bundle) for n in hit.nodes]

    async def _aretrieve(self, query_bundle: QueryBundle) -> List[NodeWithScore]:
        return [n for hit in await self.aretrieve_assets(query_bundle) for n in hit.nodes]


def _bundle(query: QueryBundle | str) -> QueryBundle:
    return QueryBundle(query) if isinstance(query, str) else query


__all__ = ["ALL_RETRIEVERS", "AssetHit", "EVIDENCE_PER_ASSET", "FUSION_METHODS", "FusionRetriever", "TEXT_FLOOR",
           "TEXT_RETRIEVERS", "asset_of", "choose_evidence", "combine_filters", "fuse", "fused_max", "group_by_asset",
           "hit_key", "normalise", "query_weights", "rank_assets", "recency_factor", "scale_scores"]
