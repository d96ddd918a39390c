"""Optional second-stage rerankers over the fused top-N assets.

- ``CrossEncoderReranker``: a sentence-transformers cross-encoder reads (query, evidence text)
  pairs; more accurate than bi-encoder similarity for text-heavy assets.
- ``ClipTileReranker``: re-scores image evidence with CLIP on overlapping crops (max over the full
  image and its tiles), i.e. CLIP "at higher resolution": small objects and text regions that a
  224-px thumbnail loses become visible.

A reranker's scores are fused with the first-stage ranking by RRF, so a reranker can reorder
but never silently drop an asset that several retrievers agreed on.
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence

from llama_index.core.schema import ImageNode, MetadataMode
from PIL import Image

from mmrag_li.config import Settings
from mmrag_li.enrich.tiling import tile_boxes


def _fuse_with_rerank(hits: List[Any], rerank_scores: Sequence[float], rrf_k: int) -> List[Any]:
    first = {id(h): r for r, h in enumerate(hits, start=1)}
    order = sorted(range(len(hits)), key=lambda i: -rerank_scores[i])
    second = {id(hits[i]): r for r, i in enumerate(order, start=1)}
    for h, s in zip(hits, rerank_scores):
        h.scores["rerank"] = float(s)
        h.ranks["rerank"] = second[id(h)]
        h.score = 1 / (rrf_k + first[id(h)]) + 1 / (rrf_k + second[id(h)])
    return sorted(hits, key=lambda h: -h.score)


class CrossEncoderReranker:
    def __init__(self, model: str = "cross-encoder/ms-marco-MiniLM-L-6-v2", rrf_k: int = 60):
        from sentence_transformers import CrossEncoder

        self.model = CrossEncoder(model)
        self.name = model
        self.rrf_k = rrf_k

    def rerank(self, query: str, hits: List[Any], retriever: Any = None) -> List[Any]:
        texts = [" ".join(n.node.get_content(MetadataMode.NONE) for n in h.nodes
                          if not isinstance(n.node, ImageNode))[:2000] for h in hits]
        scores = self.model.predict([(query, t or "") for t in texts]) if hits else []
        return _fuse_with_rerank(hits, list(scores), self.rrf_k)


class ClipTileReranker:
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

    def rerank(self, query: str, hits: List[Any], retriever: Any = None) -> List[Any]:
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


def build_reranker(settings: Settings, clip_embed: Any = None):
    """CLIP-tile reranking offline by default; a cross-encoder when a model name is configured."""
    if settings.retrieval.rerank_model:
        return CrossEncoderReranker(settings.retrieval.rerank_model, settings.retrieval.rrf_k)
    if clip_embed is None:
        from mmrag_li.embeddings.clip import ClipEmbedding

        e = settings.embedding
        clip_embed = ClipEmbedding.from_defaults(e.image_model, e.image_backend, e.image_pretrained, e.device)
    return ClipTileReranker(clip_embed, rrf_k=settings.retrieval.rrf_k)


__all__ = ["CrossEncoderReranker", "ClipTileReranker", "build_reranker"]
