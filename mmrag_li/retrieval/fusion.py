"""Per-modality retrievers fused into one ranked list of assets.

A text query runs text->image (CLIP), text->caption, text->OCR, text->text and BM25; an image
query adds image->image and expands the text side with the query image's caption and OCR.
Each retriever ranks *assets* (an asset's score is its best node's score), scores are
normalised per retriever, then fused with Reciprocal Rank Fusion or a weighted sum. The result
is one entry per asset with its best evidence nodes and a per-retriever score breakdown.

Each retriever embeds the query itself, so nothing is shared through one ``QueryBundle``
(LlamaIndex's QueryFusionRetriever trap, see DESIGN.md).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.schema import BaseNode, NodeWithScore, QueryBundle
from llama_index.core.vector_stores.types import FilterOperator, MetadataFilter, MetadataFilters

from mmrag_li.config import RetrievalConfig
from mmrag_li.retrieval.bm25 import BM25Cache, matches_filters
from mmrag_li.schema import CAPTION, CROP, IMAGE, OCR, PAGE, TEXT

TEXT_RETRIEVERS = ("caption", "ocr", "text")
ALL_RETRIEVERS = ("image", "caption", "ocr", "text", "bm25", "image2image")
EVIDENCE_PER_ASSET = 4
# Cosine floors for the sentence-embedding retrievers: below ~0.2 MiniLM similarities are noise.
TEXT_FLOOR = 0.2


@dataclass
class AssetHit:
    """One asset in a fused result: its fused score, per-retriever scores and evidence nodes."""

    asset_id: str
    source: str
    page: Optional[int]
    score: float
    scores: Dict[str, float] = field(default_factory=dict)
    ranks: Dict[str, int] = field(default_factory=dict)
    nodes: List[NodeWithScore] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        return {"asset_id": self.asset_id, "source": self.source, "page": self.page,
                "score": round(self.score, 6), "scores": {k: round(v, 6) for k, v in self.scores.items()},
                "ranks": dict(self.ranks), "nodes": [n.node.node_id for n in self.nodes]}


def normalise(scores: Sequence[float], method: str = "minmax") -> List[float]:
    """Put one retriever's scores on a 0..1 scale so that weighted sums are meaningful."""
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


def rank_assets(hits: Sequence[NodeWithScore]) -> List[Tuple[str, float, NodeWithScore]]:
    """Collapse node hits to assets (best node wins), best first."""
    best: Dict[str, Tuple[float, NodeWithScore]] = {}
    for h in hits:
        aid = h.node.metadata.get("asset_id", h.node.node_id)
        s = float(h.score or 0.0)
        if aid not in best or s > best[aid][0]:
            best[aid] = (s, h)
    return sorted(((a, s, h) for a, (s, h) in best.items()), key=lambda t: -t[1])


def fuse(ranked: Dict[str, List[Tuple[str, float, NodeWithScore]]], method: str = "rrf", rrf_k: int = 60,
         weights: Optional[Dict[str, float]] = None, norm: str = "minmax") -> Dict[str, float]:
    """RRF: sum_r w_r / (k + rank_r).  Weighted: sum_r w_r * normalised score_r."""
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


_IDENTIFIER = re.compile(r"\d")


def query_weights(query_str: str, config: RetrievalConfig) -> Dict[str, float]:
    """Per-retriever weights for this query: configured weights, boosted for identifier queries."""
    weights = dict(config.weights)
    if _IDENTIFIER.search(query_str or ""):
        for name, factor in config.identifier_weights.items():
            weights[name] = weights.get(name, 1.0) * factor
    return weights


def recency_factor(meta: Dict[str, Any], half_life_days: float, now: Optional[dt.datetime] = None) -> float:
    """Older assets lose up to half their score (never more), so recency only breaks near-ties."""
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


def combine_filters(filters: Optional[MetadataFilters], allowed_collections: Optional[Sequence[str]]
                    ) -> Optional[MetadataFilters]:
    """Tenant isolation lives here, in the retriever: every query is limited to allowed collections."""
    if not allowed_collections:
        return filters
    guard = MetadataFilter(key="collection", value=list(allowed_collections), operator=FilterOperator.IN)
    if filters is None or not filters.filters:
        return MetadataFilters(filters=[guard])
    return MetadataFilters(filters=[guard, filters], condition="and")


class FusionRetriever(BaseRetriever):
    """LlamaIndex retriever over the four collections plus BM25, fused per asset.

    ``retrieve`` returns, for each of the top-k assets in rank order, its evidence nodes (image or
    page, caption, OCR, text), each scored with the asset's fused score. ``retrieve_assets`` returns
    the grouped :class:`AssetHit` objects with the per-retriever breakdown.
    """

    def __init__(self, stores: Any, text_embed: Any, clip_embed: Any, config: Optional[RetrievalConfig] = None,
                 filters: Optional[MetadataFilters] = None, reranker: Any = None,
                 describe_image: Optional[Callable[[str], str]] = None, bm25: Optional[BM25Cache] = None,
                 **kwargs: Any):
        super().__init__(**kwargs)
        self.stores = stores
        self.text_embed = text_embed
        self.clip_embed = clip_embed
        self.config = config or RetrievalConfig()
        self.filters = filters
        self.reranker = reranker
        self.describe_image = describe_image
        self.bm25 = bm25 or BM25Cache.for_stores(stores, TEXT_RETRIEVERS)

    @classmethod
    def from_defaults(cls, stores: Any, text_embed: Any, clip_embed: Any, config: Optional[RetrievalConfig] = None,
                      **kwargs: Any) -> "FusionRetriever":
        return cls(stores, text_embed, clip_embed, config, **kwargs)

    # ---- single retrievers -------------------------------------------------------------
    def _filters(self, extra: Optional[MetadataFilters] = None) -> Optional[MetadataFilters]:
        base = self.filters
        if extra is not None and extra.filters:
            base = extra if base is None else MetadataFilters(filters=[base, extra], condition="and")
        return combine_filters(base, self.config.allowed_collections)

    def floor(self, name: str) -> float:
        """Relevance floor of one retriever: configured, else the embedding model's own default.

        Without floors every retriever returns k hits however unrelated, and RRF then rewards an
        asset for merely appearing in many lists.
        """
        if name in self.config.min_scores:
            return self.config.min_scores[name]
        if name in TEXT_RETRIEVERS:
            return TEXT_FLOOR
        if name in ("image", "image2image"):
            enc = getattr(self.clip_embed, "encoder", None)
            return float(getattr(enc, "floors", {}).get(name, 0.0))
        return 0.0

    def run_one(self, name: str, query_str: str, image_path: Optional[str] = None,
                filters: Optional[MetadataFilters] = None, k: Optional[int] = None) -> List[NodeWithScore]:
        """Run one named retriever; public so evaluation can score retrievers on their own."""
        floor = self.floor(name)
        return [h for h in self._run_one(name, query_str, image_path, filters, k)
                if (h.score or 0.0) > floor or (name == "bm25" and (h.score or 0.0) > 0)]

    def _run_one(self, name: str, query_str: str, image_path: Optional[str] = None,
                 filters: Optional[MetadataFilters] = None, k: Optional[int] = None) -> List[NodeWithScore]:
        k = k or self.config.per_retriever_k
        flt = self._filters(filters)
        if name == "image2image":
            if not image_path:
                return []
            vec = self.clip_embed.get_image_embedding(image_path)
            return self.stores.query("image", vec, k, flt)
        if not query_str.strip():
            return []
        if name == "image":
            return self.stores.query("image", self.clip_embed.get_query_embedding(query_str), k, flt)
        if name in TEXT_RETRIEVERS:
            return self.stores.query(name, self.text_embed.get_query_embedding(query_str), k, flt)
        if name == "bm25":
            return self.bm25.get().search(query_str, k, lambda n: matches_filters(n.metadata, flt))
        raise ValueError(f"unknown retriever '{name}' (choose from {', '.join(ALL_RETRIEVERS)})")

    def plan(self, query: QueryBundle, describe: Optional[Callable[[str], str]] = None
             ) -> Tuple[List[str], str, Optional[str]]:
        """Which retrievers run and with what text: an image query adds image2image and appends
        the query image's description (``describe``, default ``describe_image``) to the text.
        Public so that evaluation plans queries exactly as retrieval does."""
        describe = describe or self.describe_image
        image_path = getattr(query, "image_path", None)
        query_str = query.query_str or ""
        names = [n for n in self.config.retrievers if n != "image2image"]
        if image_path:
            names.append("image2image")
            if describe is not None:
                query_str = f"{query_str} {describe(image_path)}".strip()
        return names, query_str, image_path

    def run_all(self, query: QueryBundle | str, filters: Optional[MetadataFilters] = None
                ) -> Dict[str, List[NodeWithScore]]:
        query = QueryBundle(query) if isinstance(query, str) else query
        names, query_str, image_path = self.plan(query)
        return {n: self.run_one(n, query_str, image_path, filters) for n in names}

    async def arun_all(self, query: QueryBundle | str, filters: Optional[MetadataFilters] = None
                       ) -> Dict[str, List[NodeWithScore]]:
        query = QueryBundle(query) if isinstance(query, str) else query
        names, query_str, image_path = self.plan(query)
        results = await asyncio.gather(
            *(asyncio.to_thread(self.run_one, n, query_str, image_path, filters) for n in names))
        return dict(zip(names, results))

    # ---- fusion ---------------------------------------------------------------------------
    def fuse_results(self, per_retriever: Dict[str, List[NodeWithScore]], query_str: str = "",
                     top_k: Optional[int] = None) -> List[AssetHit]:
        cfg = self.config
        ranked = {name: rank_assets(hits) for name, hits in per_retriever.items() if hits}
        fused = fuse(ranked, cfg.fusion, cfg.rrf_k, query_weights(query_str, cfg), cfg.normalize)
        hits: Dict[str, AssetHit] = {}
        for name, items in ranked.items():
            for rank, (aid, score, h) in enumerate(items, start=1):
                hit = hits.get(aid)
                if hit is None:
                    meta = h.node.metadata
                    hit = hits[aid] = AssetHit(aid, meta.get("source", ""), meta.get("page"), fused[aid])
                hit.scores[name] = score
                hit.ranks[name] = rank
        for name, hs in per_retriever.items():
            for h in hs:
                aid = h.node.metadata.get("asset_id", h.node.node_id)
                if aid in hits:
                    hits[aid].nodes.append(h)
        for hit in hits.values():
            best = max(hit.nodes, key=lambda n: n.score or 0.0)
            hit.score *= recency_factor(best.node.metadata, cfg.recency_half_life_days)
        ordered = sorted(hits.values(), key=lambda h: -h.score)
        if self.reranker is not None and cfg.rerank and ordered:
            ordered = self.reranker.rerank(query_str, ordered[: cfg.rerank_top_n], self) + ordered[cfg.rerank_top_n:]
        ordered = ordered[: top_k or cfg.top_k]
        stored = self._stored_nodes([h.asset_id for h in ordered])
        for hit in ordered:
            self._choose_evidence(hit, stored.get(hit.asset_id))
        return ordered

    def _stored_nodes(self, asset_ids: List[str]) -> Dict[str, List[BaseNode]]:
        """All nodes of the result assets, fetched in one query per collection."""
        if hasattr(self.stores, "get_assets_nodes"):
            return self.stores.get_assets_nodes(asset_ids)
        if hasattr(self.stores, "get_asset_nodes"):
            return {a: self.stores.get_asset_nodes(a) for a in asset_ids}
        return {}

    def _choose_evidence(self, hit: AssetHit, stored: Optional[List[BaseNode]] = None) -> None:
        """Best node per modality, best first; fill in the caption/OCR of the same page if missing."""
        seen: Dict[str, NodeWithScore] = {}
        for n in sorted(hit.nodes, key=lambda n: -(n.score or 0.0)):
            if n.node.node_id not in seen:
                seen[n.node.node_id] = n
        best = next(iter(seen.values()))
        hit.page = best.node.metadata.get("page")
        chosen: List[NodeWithScore] = []
        modalities = set()
        for n in seen.values():
            mod = n.node.metadata.get("modality")
            if mod not in modalities or (mod == TEXT and sum(1 for c in chosen if c.node.metadata.get("modality") == TEXT) < 2):
                chosen.append(n)
                modalities.add(mod)
            if len(chosen) >= EVIDENCE_PER_ASSET:
                break
        has_picture = bool(modalities & {IMAGE, PAGE, CROP})
        if not (has_picture and {CAPTION, OCR} <= modalities) and stored:
            # The answerer should see the picture, caption and OCR of the page that matched, even
            # when only one of them was a hit (e.g. an invoice found by its OCR text alone).
            for node in sorted(stored, key=lambda n: n.metadata.get("modality") == CROP):
                mod = node.metadata.get("modality")
                if node.metadata.get("page") != hit.page:
                    continue
                if mod in (CAPTION, OCR) and mod not in modalities:
                    chosen.append(NodeWithScore(node=node, score=0.0))
                    modalities.add(mod)
                elif mod in (IMAGE, PAGE) and not has_picture:
                    chosen.insert(0, NodeWithScore(node=node, score=0.0))
                    has_picture = True
        hit.nodes = [NodeWithScore(node=n.node, score=hit.score) for n in chosen]

    # ---- public API -------------------------------------------------------------------------
    def retrieve_assets(self, query: QueryBundle | str, filters: Optional[MetadataFilters] = None,
                        top_k: Optional[int] = None) -> List[AssetHit]:
        query = QueryBundle(query) if isinstance(query, str) else query
        return self.fuse_results(self.run_all(query, filters), query.query_str, top_k)

    async def aretrieve_assets(self, query: QueryBundle | str, filters: Optional[MetadataFilters] = None,
                               top_k: Optional[int] = None) -> List[AssetHit]:
        query = QueryBundle(query) if isinstance(query, str) else query
        per = await self.arun_all(query, filters)
        return await asyncio.to_thread(self.fuse_results, per, query.query_str, top_k)

    def _retrieve(self, query_bundle: QueryBundle) -> List[NodeWithScore]:
        return [n for hit in self.retrieve_assets(query_bundle) for n in hit.nodes]

    async def _aretrieve(self, query_bundle: QueryBundle) -> List[NodeWithScore]:
        return [n for hit in await self.aretrieve_assets(query_bundle) for n in hit.nodes]

