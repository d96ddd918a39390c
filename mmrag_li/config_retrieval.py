"""``retrieval:`` settings: which retrievers run, how their lists are fused, what a hit is.

Kept in its own module (re-exported by :mod:`mmrag_li.config`) so that the settings file stays small.
"""

from __future__ import annotations

from typing import Dict, List, Literal, Optional

from pydantic import Field

from .config_base import StrictModel

__all__ = ["FUSION_KINDS", "RetrievalConfig"]

FUSION_KINDS = ("calibrated", "rrf", "weighted", "score_aware", "learned")


class RetrievalConfig(StrictModel):
    """Retrieval settings (the ``retrieval:`` section); every field is described where it is declared."""

    top_k: int = 5
    per_retriever_k: int = 20
    retrievers: List[str] = Field(
        default_factory=lambda: ["image", "caption", "ocr", "text", "bm25"],
        description="Subset of image, caption, ocr, text, bm25 (image query adds image2image).",
    )
    min_scores: Dict[str, float] = Field(
        default_factory=dict,
        description="Per-retriever relevance floor; hits below it are not evidence. Unset = the model's own "
                    "default (text retrievers 0.2 cosine; image ones from the image encoder).",
    )
    fusion: Literal["calibrated", "rrf", "weighted", "score_aware", "learned"] = Field(
        "calibrated",
        description="calibrated = RRF in which a retriever whose best score is within its calibrated range on "
                    "unrelated queries (<store>/calibration.json, computed on first use) counts calibrated_floor "
                    "times, and the hits of hit_confidence retrievers are weighted by their calibrated "
                    "confidence; rrf = rank-only Reciprocal Rank Fusion; weighted = sum of normalised scores; "
                    "score_aware = like calibrated but such a retriever is dropped and every hit is weighted by "
                    "its confidence; learned = the model of fusion_model (written by `mmrag tune`).",
    )
    calibrated_floor: float = Field(
        0.3, ge=0.0, le=1.0,
        description="fusion: calibrated: weight of a retriever whose best score looks like an unrelated "
                    "query's (0 = drop it, 1 = plain RRF). 0.3: the lowest value that keeps R@5 and MRR of the "
                    "small dev set (benchmarks/README.md section 7).")
    hit_confidence: List[str] = Field(
        default_factory=lambda: ["bm25"],
        description="fusion: calibrated: retrievers whose hits are weighted one by one by their calibrated "
                    "confidence (BM25: a verbatim or identifier match scores far above partial matches; dense "
                    "scores of a list's top hits are too close together for it to help).")
    calibration_min_nodes: int = Field(
        50, ge=0,
        description="A retriever is calibrated only when the collections it searches hold at least this many "
                    "nodes; below, it counts as in plain RRF. In a handful of documents an unrelated query's "
                    "best hit says which few documents exist, not what noise looks like (6 example files: "
                    "'invoice total' found the invoice at rank 3 with calibration, rank 1 without).")
    fusion_model: str = Field("", description="JSON model file for fusion: learned (from `mmrag tune --out FILE`).")
    rrf_k: int = 60
    normalize: Literal["minmax", "zscore"] = "minmax"
    weights: Dict[str, float] = Field(default_factory=dict)
    identifier_weights: Dict[str, float] = Field(
        default_factory=lambda: {"bm25": 5.0},
        description="Weight multipliers when the query holds a number or code (4711, T-800); x5 measured best "
                    "on the dev set (keyword MRR 0.54 -> 0.96, no other query type changed): embeddings "
                    "carry no signal for identifiers, exact keyword matching does.",
    )
    rerank: bool = False
    rerank_top_n: int = 20
    rerank_model: str = Field("", description="Cross-encoder name/path; '' = CLIP on image tiles (offline).")
    recency_half_life_days: float = 0.0
    allowed_collections: Optional[List[str]] = Field(
        None, description="Tenant guard for every read (search, query, inspect, delete, stats, eval): "
                          "null/absent = every collection, [] = none, a list = only those collections.")
    group_by: Literal["page", "asset"] = Field(
        "page",
        description="The unit of a hit: 'page' = one result per (asset, page) of multi-page documents (several "
                    "pages of one PDF can be hits); 'asset' = one result per file. Images and single-page files "
                    "are the same either way.",
    )


