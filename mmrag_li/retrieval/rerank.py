"""Optional second-stage rerankers over the fused top-N assets.

- ``CrossEncoderReranker``: a sentence-transformers cross-encoder reads (query, evidence text)
  pairs; more accurate than bi-encoder similarity for text-heavy assets.
- ``ClipTileReranker``: re-scores image evidence with CLIP on overlapping crops (max over the full
  image and its tiles), i.e. CLIP "at higher resolution": small objects and text regions that a
  224-px thumbnail loses become visible.

A reranker's scores are fused with the first-stage ranking by RRF, so a reranker can reorder
but never silently drop an asset that several retrievers agreed on.

Every reranker implements the small :class:`Reranker` protocol (``rerank(query, hits)`` over
:class:`~mmrag_li.retrieval.hits.AssetHit` s). :class:`RerankPostprocessor` makes any of them a
LlamaIndex node postprocessor (``node_postprocessors=[...]`` of a query engine).
"""

from __future__ import annotations

from typing import Any, List, Optional, Protocol, Sequence, runtime_checkable

from llama_index.core.bridge.pydantic import Field
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import ImageNode, MetadataMode, NodeWithScore, QueryBundle
from PIL import Image

from mmrag_li.config import Settings
from mmrag_li.enrich.tiling import tile_boxes
from mmrag_li.retrieval.hits import AssetHit, group_by_asset


@runtime_checkable
class Reranker(Protocol):
    """A second stage over fused asset hits: reorders them, never drops one.

    ``rerank(query, hits, retriever=None)`` returns the same :class:`AssetHit` objects, best first,
    with ``scores["rerank"]``/``ranks["rerank"]`` and an updated ``score``. ``hits`` arrive best
    first (their order is the first-stage ranking); ``retriever`` is the calling retriever, if any.
    """

    def rerank(self, query: str, hits: List[AssetHit], retriever: Any = None) -> List[AssetHit]:
        """Reorder ``hits`` for ``query`` (see the class docstring).

        Args:
            query: the query text.
            hits: the first-stage top assets, best first.
            retriever: the calling retriever (optional context).
        """
        ...


def _fuse_with_rerank(hits: List[AssetHit], rerank_scores: Sequence[float], rrf_k: int) -> List[AssetHit]:
    first = {id(h): r for r, h in enumerate(hits, start=1)}
    order = sorted(range(len(hits)), key=lambda i: -rerank_scores[i])
    second = {id(hits[i]): r for r, i in enumerate(order, start=1)}
    for h, s in zip(hits, rerank_scores):
        h.scores["rerank"] = float(s)
        h.ranks["rerank"] = second[id(h)]
        h.score = 1 / (rrf_k + first[id(h)]) + 1 / (rrf_k + second[id(h)])
    return sorted(hits, key=lambda h: -h.score)


class CrossEncoderReranker:
    """A sentence-transformers cross-encoder over (query, evidence text) pairs (:class:`Reranker`).

    Args:
        model: cross-encoder name or local path.
        rrf_k: RRF constant for fusing its ranking with the first stage.
    """

    def __init__(self, model: str = "cross-encoder/ms-marco-MiniLM-L-6-v2", rrf_k: int = 60):
        from sentence_transformers import CrossEncoder

        self.model = CrossEncoder(model)
        self.name = model
        self.rrf_k = rrf_k

    def rerank(self, query: str, hits: List[AssetHit], retriever: Any = None) -> List[AssetHit]:
        """See :meth:`Reranker.rerank` (the text of each asset's non-image evidence is scored)."""
        texts = [" ".join(n.node.get_content(MetadataMode.NONE) for n in h.nodes
                          if not isinstance(n.node, ImageNode))[:2000] for h in hits]
        scores = self.model.predict([(query, t or "") for t in texts]) if hits else []
        return _fuse_with_rerank(hits, list(scores), self.rrf_k)


class ClipTileReranker:
    """Re-scores each asset's picture with CLIP over the full image and overlapping tiles (max),
    so small objects and text that a 224-px thumbnail loses count (:class:`Reranker`).

    Args:
        clip_embed: the image embedding (``get_query_embedding``, ``embed_pil``).
        tile: tile size in pixels.
        overlap: tile overlap, 0..1.
        rrf_k: RRF constant for fusing its ranking with the first stage.
    """

    def __init__(self, clip_embed: Any, tile: int = 448, overlap: float = 0.25, rrf_k: int = 60):
        self.clip = clip_embed
        self.tile = tile
        self.overlap = overlap
        self.rrf_k = rrf_k

    def _image_score(self, query_vec: Sequence[float], path: str) -> Optional[float]:
        import numpy as np

        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
        except OSError:
            return None
        crops = [im] + [im.crop(b) for b in tile_boxes(im.width, im.height, self.tile, self.overlap)
                        if (b[2] - b[0], b[3] - b[1]) != im.size]
        vecs = np.asarray(self.clip.embed_pil(crops), dtype=np.float32)
        return float((vecs @ np.asarray(query_vec, dtype=np.float32)).max())

    def rerank(self, query: str, hits: List[AssetHit], retriever: Any = None) -> List[AssetHit]:
        """See :meth:`Reranker.rerank` (assets without a picture keep their "image" score)."""
        if not query.strip() or not hits:
            return hits
        qv = self.clip.get_query_embedding(query)
        scores: List[float] = []
        for h in hits:
            # the asset's best picture (evidence puts it first); assets without one keep their image score
            path = next((n.node.image_path for n in h.nodes if isinstance(n.node, ImageNode) and n.node.image_path),
                        None)
            score = self._image_score(qv, path) if path else None
            scores.append(score if score is not None else h.scores.get("image", 0.0))
        return _fuse_with_rerank(hits, scores, self.rrf_k)


class RerankPostprocessor(BaseNodePostprocessor):
    """Any :class:`Reranker` as a LlamaIndex node postprocessor.

    Nodes are grouped per asset (``asset_id`` metadata, else source document, else node), the
    assets reranked, and the nodes returned asset by asset, each scored with its asset's new score.

    Args:
        reranker: the :class:`Reranker`.
        top_n: keep only the best ``top_n`` assets (None: all).
    """

    reranker: Any = Field(description="A Reranker: rerank(query, hits, retriever=None) over AssetHits.")
    top_n: Optional[int] = Field(default=None, description="Keep the best top_n assets (None: all).")

    @classmethod
    def class_name(cls) -> str:
        """LlamaIndex's serialisation name of this component."""
        return "RerankPostprocessor"

    @classmethod
    def from_defaults(cls, reranker: Optional[Reranker] = None, settings: Optional[Settings] = None,
                      clip_embed: Any = None, top_n: Optional[int] = None) -> "RerankPostprocessor":
        """``reranker``, else the one :func:`build_reranker` makes from ``settings``, as a postprocessor.

        Args:
            reranker: the reranker to wrap.
            settings: used when ``reranker`` is None (default settings if None too).
            clip_embed: the image embedding to reuse for the CLIP-tile reranker.
            top_n: keep only the best ``top_n`` assets (None: all).
        """
        return cls(reranker=reranker or build_reranker(settings or Settings(), clip_embed), top_n=top_n)

    def _postprocess_nodes(self, nodes: List[NodeWithScore], query_bundle: Optional[QueryBundle] = None
                           ) -> List[NodeWithScore]:
        if query_bundle is None:
            raise ValueError("RerankPostprocessor needs the query (query_bundle or query_str)")
        if not nodes:
            return []
        hits = self.reranker.rerank(query_bundle.query_str, group_by_asset(nodes))
        if self.top_n is not None:
            hits = hits[: self.top_n]
        return [NodeWithScore(node=n.node, score=h.score) for h in hits for n in h.nodes]


def build_reranker(settings: Settings, clip_embed: Any = None) -> Reranker:
    """CLIP-tile reranking offline by default; a cross-encoder when a model name is configured.

    Args:
        settings: ``retrieval.rerank_model``/``rrf_k`` and ``embedding`` (when ``clip_embed`` is None).
        clip_embed: the image embedding to reuse (default: one built from ``settings.embedding``).
    """
    if settings.retrieval.rerank_model:
        return CrossEncoderReranker(settings.retrieval.rerank_model, settings.retrieval.rrf_k)
    if clip_embed is None:
        from mmrag_li.embeddings.clip import ClipEmbedding

        e = settings.embedding
        clip_embed = ClipEmbedding.from_defaults(e.image_model, e.image_backend, e.image_pretrained, e.device)
    return ClipTileReranker(clip_embed, rrf_k=settings.retrieval.rrf_k)


__all__ = ["ClipTileReranker", "CrossEncoderReranker", "RerankPostprocessor", "Reranker", "build_reranker"]
