"""Baseline retrieval pipelines, run in the same process on the same store and models.

* :class:`SeedBaseline` – the seed's reference design: ONE image-text model (the configured
  image encoder, ``rag.clip_embed``) embeds the images (its image side) and the caption, OCR and
  document text (its text side); flat inner-product search in numpy over each of the three
  lists (image, caption, ocr+text); Reciprocal Rank Fusion with k=60; nodes collapse to assets.
  No BM25, no separate text model. An image query is embedded with the image side and searched
  against all three lists (one shared space is the point of that design).
* :class:`LlamaIndexDefaultBaseline` – LlamaIndex's stock ``MultiModalVectorStoreIndex``
  retriever over our stores (``build_multimodal_index``): text top-k from one text collection
  plus image top-k, concatenated in the order LlamaIndex returns them (text first), collapsed to
  assets by first occurrence. Image queries use its ``image_to_image_retrieve``.

Both return ranked ``(asset_id, page)`` lists so the harness scores them like any retriever.
Both read the stores only through the tenant guard (``mmrag_li.guard.guarded_stores_of(rag)``):
with ``retrieval.allowed_collections`` set they never index, embed or rank a hidden asset.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from llama_index.core.schema import MetadataMode, NodeWithScore

from mmrag_li.guard import CollectionGuard, guarded_stores_of

Unit = Tuple[str, Optional[int]]  # (asset_id, page)

__all__ = ["SeedBaseline", "LlamaIndexDefaultBaseline", "collapse_in_order", "collapse_by_score"]


def _asset_page(node: Any) -> Unit:
    meta = node.metadata or {}
    return meta.get("asset_id", node.node_id), meta.get("page")


def collapse_by_score(hits: Sequence[NodeWithScore]) -> List[Unit]:
    """Assets ranked by their best node's score (the page is that node's page)."""
    best: Dict[str, Tuple[float, Optional[int]]] = {}
    for h in hits:
        aid, page = _asset_page(h.node)
        s = float(h.score or 0.0)
        if aid not in best or s > best[aid][0]:
            best[aid] = (s, page)
    return [(a, p) for a, (s, p) in sorted(best.items(), key=lambda kv: -kv[1][0])]


def collapse_in_order(hits: Sequence[NodeWithScore]) -> List[Unit]:
    """Assets in the order their first node appears (for concatenated lists on different scales)."""
    seen: Dict[str, Optional[int]] = {}
    for h in hits:
        aid, page = _asset_page(h.node)
        if aid not in seen:
            seen[aid] = page
    return list(seen.items())


class SeedBaseline:
    """One image-text model for everything, flat inner product, RRF k=60 (see module docstring).

    Args:
        rag: the pipeline (``clip_embed``, and its stores read through its tenant guard).
        rrf_k: the RRF constant.
        per_list_k: assets kept per list before fusion.
    """

    name = "seed_one_model"
    LISTS = ("image", "caption", "ocr")

    def __init__(self, rag: Any, rrf_k: int = 60, per_list_k: int = 20):
        self.clip = rag.clip_embed
        self.rrf_k = rrf_k
        self.per_list_k = per_list_k
        self._mats: Dict[str, np.ndarray] = {}
        self._units: Dict[str, List[Unit]] = {}
        stores = guarded_stores_of(rag)
        # Images: the vectors already stored (written by the same image encoder).
        vecs, units = self._image_rows(stores, stores.guard)
        self._mats["image"], self._units["image"] = vecs, units
        # Caption / OCR / document text: re-embedded with the image model's text side.
        for lst, collections in (("caption", ("caption",)), ("ocr", ("ocr", "text"))):
            nodes = [n for c in collections for n in stores.all_nodes(c)]
            texts = [n.get_content(MetadataMode.NONE) or " " for n in nodes]
            mat = np.asarray(self.clip.get_text_embedding_batch(texts), dtype=np.float32) if texts else \
                np.zeros((0, 1), dtype=np.float32)
            self._mats[lst] = _unit_rows(mat)
            self._units[lst] = [_asset_page(n) for n in nodes]

    @staticmethod
    def _image_rows(stores: Any, guard: CollectionGuard) -> Tuple[np.ndarray, List[Unit]]:
        vs = stores.vector_store("image")
        vs = getattr(vs, "wrapped", vs)  # the raw table: the guard is applied to its rows below
        tbl = vs.lance_table() if hasattr(vs, "lance_table") else None
        if tbl is None or guard.denies_all:
            return np.zeros((0, 1), dtype=np.float32), []
        data = tbl.to_arrow().select(["vector", "metadata"])
        metas = data.column("metadata").to_pylist()
        keep = [i for i, m in enumerate(metas) if guard.allows(m or {})]
        if not keep:
            return np.zeros((0, 1), dtype=np.float32), []
        vectors = data.column("vector").to_pylist()
        vecs = np.asarray([vectors[i] for i in keep], dtype=np.float32)
        return _unit_rows(vecs), [(metas[i].get("asset_id"), metas[i].get("page")) for i in keep]

    def _search(self, lst: str, q: np.ndarray) -> List[Unit]:
        mat = self._mats[lst]
        if mat.shape[0] == 0 or mat.shape[1] != q.shape[0]:
            return []
        scores = mat @ q
        order = np.argsort(-scores)
        best: Dict[str, Optional[int]] = {}
        for i in order:  # collapse to assets (best node first) until per_list_k assets
            aid, page = self._units[lst][int(i)]
            if aid not in best:
                best[aid] = page
                if len(best) >= self.per_list_k:
                    break
        return list(best.items())

    def retrieve(self, query: str, image_path: Optional[str] = None, k: int = 10) -> List[Unit]:
        """Top ``k`` visible ``(asset_id, page)`` for a text ``query`` or a query image.

        Args:
            query: the query text.
            image_path: a query image (searched with the image side instead of the text).
            k: result size.
        """
        if image_path:
            q = np.asarray(self.clip.get_image_embedding(image_path), dtype=np.float32)
        elif query.strip():
            q = np.asarray(self.clip.get_query_embedding(query), dtype=np.float32)
        else:
            return []
        q = q / max(float(np.linalg.norm(q)), 1e-12)
        fused: Dict[str, float] = {}
        page: Dict[str, Optional[int]] = {}
        for lst in self.LISTS:
            for rank, (aid, p) in enumerate(self._search(lst, q), start=1):
                fused[aid] = fused.get(aid, 0.0) + 1.0 / (self.rrf_k + rank)
                page.setdefault(aid, p)
        return [(a, page[a]) for a in sorted(fused, key=lambda a: -fused[a])][:k]


class LlamaIndexDefaultBaseline:
    """Stock ``MultiModalVectorStoreIndex.as_retriever`` over one text collection + images, built on
    the guarded stores (its vector stores are ``GuardedVectorStore`` s when a guard restricts).

    Args:
        rag: the pipeline (``text_embed``, ``clip_embed``, its stores through its tenant guard).
        text_collection: the text collection the index searches ("text" or "ocr").
    """

    def __init__(self, rag: Any, text_collection: str = "text"):
        from mmrag_li.stores import build_multimodal_index

        self.name = "llamaindex_mm_index" + ("" if text_collection == "text" else f"_{text_collection}")
        self.stores = guarded_stores_of(rag)
        self.index = build_multimodal_index(self.stores, text_collection, embed_model=rag.text_embed,
                                            image_embed_model=rag.clip_embed)

    def retrieve(self, query: str, image_path: Optional[str] = None, k: int = 10) -> List[Unit]:
        """Top ``k`` visible ``(asset_id, page)`` from the stock index (text, or image->image).

        Args:
            query: the query text.
            image_path: a query image (``image_to_image_retrieve``).
            k: result size (text and image top-k each).
        """
        retriever = self.index.as_retriever(similarity_top_k=k, image_similarity_top_k=k,
                                            filters=self.stores.guard.filters())
        if self.stores.guard.denies_all:
            return []
        if image_path:
            hits = retriever.image_to_image_retrieve(image_path)
        elif query.strip():
            hits = retriever.retrieve(query)  # a fresh string each call: no shared QueryBundle
        else:
            return []
        return collapse_in_order(self.stores.guard.keep(hits))[:k]


def _unit_rows(mat: np.ndarray) -> np.ndarray:
    if mat.size == 0:
        return mat
    return mat / np.clip(np.linalg.norm(mat, axis=1, keepdims=True), 1e-12, None)
