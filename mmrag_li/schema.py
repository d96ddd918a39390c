"""Node conventions shared by readers, stores, retrievers and the query engine.

Every node carries enough metadata to be cited on its own (``asset_id``, ``source``, ``page``,
``bbox``) and the name+version of whatever produced it. Paths and ids never reach an embedding
model; the LLM sees source and page so that it can cite them.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
from pathlib import Path
from typing import Any, Dict, Iterable, Optional

from llama_index.core.schema import BaseNode, ImageNode, NodeRelationship, RelatedNodeInfo, TextNode

# Modalities as stored in node metadata. Collections: image (image/page/crop vectors),
# caption, ocr, text (document text chunks).
IMAGE, PAGE, CROP, OCR, CAPTION, TEXT = "image", "page", "crop", "ocr", "caption", "text"
MODALITIES = (IMAGE, PAGE, CROP, OCR, CAPTION, TEXT)
COLLECTIONS = ("image", "caption", "ocr", "text")


def collection_of(modality: str) -> str:
    """Which logical collection a node of this modality lives in."""
    return {IMAGE: "image", PAGE: "image", CROP: "image", OCR: "ocr", CAPTION: "caption"}.get(modality, "text")


# Keys that an embedding model must never see (paths, ids, numbers that carry no meaning).
EMBED_EXCLUDED_KEYS = [
    "asset_id", "source", "file_name", "file_path", "page", "bbox", "width", "height", "dpi",
    "ocr_engine", "ocr_lang", "ocr_conf", "words", "ingested_at", "modality", "producer",
    "producer_version", "content_hash", "mime_type", "image_path", "thumbnail_path", "blob_path",
    "collection", "mtime", "tile_index", "parent_image_id", "section", "lines", "orientation",
    "chunk_index", "n_words", "title", "caption_model", "embed_model",
    # layout and file facts: "n_pages: 40" or "encoding: utf-8" in front of every chunk only blurs its vector
    "n_pages", "encoding", "has_text_layer", "page_width_pt", "page_height_pt", "model_width", "model_height",
    "xref", "pdf_repaired", "blank_pages",
]
# Keys that the LLM does not need; source, page and modality stay visible so they can be cited.
LLM_EXCLUDED_KEYS = [k for k in EMBED_EXCLUDED_KEYS if k not in ("source", "page", "modality", "section", "title")]


def content_hash(data: bytes) -> str:
    """Stable asset id: the first 32 hex chars of the SHA-256 of the file's bytes."""
    return hashlib.sha256(data).hexdigest()[:32]


def file_hash(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()[:32]


def node_id(asset_id: str, modality: str, *parts: Any) -> str:
    """Deterministic node id, so re-ingesting the same bytes upserts instead of duplicating."""
    suffix = "-".join(str(p) for p in parts if p is not None and p != "")
    return f"{asset_id}:{modality}" + (f":{suffix}" if suffix else "")


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def base_metadata(asset_id: str, source: str, modality: str, **extra: Any) -> Dict[str, Any]:
    meta: Dict[str, Any] = {
        "asset_id": asset_id,
        "source": source,
        "modality": modality,
        "page": None,
        "bbox": None,
        "ingested_at": now_iso(),
    }
    meta.update({k: v for k, v in extra.items()})
    return meta


def _finish(node: BaseNode, asset_id: str) -> BaseNode:
    node.excluded_embed_metadata_keys = list(EMBED_EXCLUDED_KEYS)
    node.excluded_llm_metadata_keys = list(LLM_EXCLUDED_KEYS)
    node.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=asset_id)
    return node


def make_text_node(text: str, *, asset_id: str, source: str, modality: str, id_parts: Iterable[Any] = (),
                   **meta: Any) -> TextNode:
    node = TextNode(
        id_=node_id(asset_id, modality, *id_parts),
        text=text,
        metadata=base_metadata(asset_id, source, modality, **meta),
    )
    return _finish(node, asset_id)  # type: ignore[return-value]


def make_image_node(*, asset_id: str, source: str, modality: str, image_path: Optional[str] = None,
                    image_b64: Optional[str] = None, text: str = "", id_parts: Iterable[Any] = (),
                    **meta: Any) -> ImageNode:
    """An ImageNode points at a file (``image_path``) rather than embedding pixels in node JSON."""
    node = ImageNode(
        id_=node_id(asset_id, modality, *id_parts),
        text=text,
        image_path=image_path,
        image=image_b64,
        metadata=base_metadata(asset_id, source, modality, image_path=image_path, **meta),
    )
    return _finish(node, asset_id)  # type: ignore[return-value]


def clean_metadata(meta: Dict[str, Any]) -> Dict[str, Any]:
    """Drop None values (vector stores with fixed schemas choke on them)."""
    return {k: v for k, v in meta.items() if v is not None}
