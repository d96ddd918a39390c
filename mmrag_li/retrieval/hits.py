"""Hits: which asset (and page) a node belongs to, node hits grouped per hit, and the evidence
nodes kept for each hit of a result.

The unit of a hit is set by ``retrieval.group_by``: "page" (default) makes every page of a
multi-page document its own hit (key ``"<asset_id>#p<page>"``), "asset" makes one hit per file
(key = the asset id). Nodes without a page (images, text files) are keyed by their asset either way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from llama_index.core.schema import BaseNode, NodeWithScore

from mmrag_li.schema import CAPTION, CROP, IMAGE, OCR, PAGE, TEXT

EVIDENCE_PER_ASSET = 4


def asset_of(node: BaseNode) -> str:
    """The asset a node belongs to: ``metadata["asset_id"]``, else its source document, else itself.

    Args:
        node: any LlamaIndex node (ours carry ``asset_id``; a foreign retriever's may not).
    """
    return node.metadata.get("asset_id") or node.ref_doc_id or node.node_id


GROUP_BY = ("page", "asset")


def hit_key(node: BaseNode, group_by: str = "page") -> str:
    """The hit a node belongs to: ``"<asset>#p<page>"`` for a paged node when ``group_by="page"``,
    else its asset (:func:`asset_of`).

    Args:
        node: any LlamaIndex node.
        group_by: "page" or "asset" (``RetrievalConfig.group_by``).
    """
    if group_by not in GROUP_BY:
        raise ValueError(f"group_by={group_by!r}: choose one of {', '.join(GROUP_BY)}")
    aid = asset_of(node)
    page = node.metadata.get("page") if group_by == "page" else None
    return aid if page is None else f"{aid}#p{page}"


def explain(ranks: Dict[str, int]) -> str:
    """A short "why" from per-retriever ranks, best rank first: ``"bm25 rank 1, ocr rank 3"``.

    Args:
        ranks: retriever name -> the hit's 1-based rank in that retriever's list.
    """
    return ", ".join(f"{name} rank {r}" for name, r in sorted(ranks.items(), key=lambda kv: (kv[1], kv[0])))


@dataclass
class AssetHit:
    """One hit of a fused result (an asset, or one page of it): scores, evidence nodes, regions.

    Args:
        asset_id: the asset (see :func:`asset_of`).
        source: its source path (or "").
        page: the hit's page (with ``group_by="page"``), else the page of its best evidence; None
            for unpaged assets.
        score: the fused score; after fusion it is on 0-1 (1 = first in every retriever that
            returned anything), the raw fused value is kept in ``raw_score``.
        scores: retriever name -> that retriever's own (raw) score of the hit.
        ranks: retriever name -> the hit's rank (1-based) in that retriever's list.
        nodes: the evidence nodes.
        raw_score: the fused score before scaling to 0-1 (RRF sum or weighted sum), None before fusion.
        why: a short explanation from the ranks ("bm25 rank 1, ocr rank 3").
        snippet: the best-matching line(s), query terms marked «…».
        regions: where the match is (DESIGN.md "Regions"), best first.
        key: the grouping key (:func:`hit_key`); "" = ``asset_id``.
    """

    asset_id: str
    source: str
    page: Optional[int]
    score: float
    scores: Dict[str, float] = field(default_factory=dict)
    ranks: Dict[str, int] = field(default_factory=dict)
    nodes: List[NodeWithScore] = field(default_factory=list)
    raw_score: Optional[float] = None
    why: str = ""
    snippet: str = ""
    regions: List[Dict[str, Any]] = field(default_factory=list)
    key: str = ""

    @classmethod
    def for_node(cls, asset_id: str, node: BaseNode, score: float) -> "AssetHit":
        """A hit for ``asset_id`` described by one of its nodes.

        Args:
            asset_id: the asset.
            node: a node of it (source and page are read from its metadata).
            score: the hit's score.
        """
        meta = node.metadata
        return cls(asset_id, meta.get("source") or meta.get("file_path") or "", meta.get("page"), score)

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-ready summary, the ``search --json`` result shape (DESIGN.md): asset_id, source,
        page, score (0-1), raw_score, scores, ranks, why, snippet, regions, plus node ids."""
        raw = self.score if self.raw_score is None else self.raw_score
        return {"asset_id": self.asset_id, "source": self.source, "page": self.page,
                "score": round(self.score, 6), "raw_score": round(raw, 6),
                "scores": {k: round(v, 6) for k, v in self.scores.items()}, "ranks": dict(self.ranks),
                "why": self.why or explain(self.ranks), "snippet": self.snippet, "regions": list(self.regions),
                "nodes": [n.node.node_id for n in self.nodes]}


def rank_assets(hits: Sequence[NodeWithScore], group_by: str = "asset") -> List[Tuple[str, float, NodeWithScore]]:
    """Collapse node hits to hits (best node wins), best first: ``[(key, score, best hit)]``; the
    key is the asset id with ``group_by="asset"`` and :func:`hit_key` with "page".

    Args:
        hits: one retriever's node hits.
        group_by: "asset" (default here, so the first item is the asset id) or "page".
    """
    best: Dict[str, Tuple[float, NodeWithScore]] = {}
    for h in hits:
        aid = hit_key(h.node, group_by)
        s = float(h.score or 0.0)
        if aid not in best or s > best[aid][0]:
            best[aid] = (s, h)
    return sorted(((a, s, h) for a, (s, h) in best.items()), key=lambda t: -t[1])


def group_by_asset(nodes: Sequence[NodeWithScore], group_by: str = "asset") -> List[AssetHit]:
    """Node hits -> one :class:`AssetHit` per asset (or page) (score = its best node's), best first.

    Args:
        nodes: node hits, e.g. what a retriever returned.
        group_by: "asset" (default) or "page" (see :func:`hit_key`).
    """
    hits = {}
    for key, s, h in rank_assets(nodes, group_by):
        hits[key] = AssetHit.for_node(asset_of(h.node), h.node, s)
        hits[key].key = key
    for n in nodes:
        hits[hit_key(n.node, group_by)].nodes.append(n)
    return list(hits.values())


def choose_evidence(hit: AssetHit, stored: Optional[List[BaseNode]] = None) -> None:
    """Set ``hit.nodes`` to its best node per modality, best first (at most
    :data:`EVIDENCE_PER_ASSET`, two text chunks), filling in the picture, caption and OCR of the
    matched page from ``stored`` when they were not hits themselves; each scored ``hit.score``.

    Args:
        hit: the asset hit (its ``nodes`` are all its hits, ``page`` is updated to the best one's).
        stored: all stored nodes of the asset (None: no fill-in).
    """
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
        text_like = mod in (TEXT, None)  # a foreign retriever's nodes carry no modality: text
        if mod not in modalities or (text_like and sum(
                1 for c in chosen if c.node.metadata.get("modality") == mod) < 2):
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


__all__ = ["EVIDENCE_PER_ASSET", "GROUP_BY", "AssetHit", "asset_of", "choose_evidence", "explain", "group_by_asset",
           "hit_key", "rank_assets"]
