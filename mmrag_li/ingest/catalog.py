"""What is stored: find an asset by path or id, list its nodes, count everything.

Read-only views over the manifest and the stores (``ModalityStores``, duck-typed) shared by the
facade's ``resolve_asset``, ``inspect`` and ``stats``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from llama_index.core.schema import MetadataMode

from mmrag_li.assets import AssetNotFoundError, resolve_asset_id
from mmrag_li.ingest.manifest import FileRecord, Manifest
from mmrag_li.ingest.report import DEFAULT_COLLECTION, NODE_KINDS
from mmrag_li.ingest.sources import shown_source, source_key


def visible(rec: Optional[FileRecord], allowed_collections: Optional[Sequence[str]]) -> bool:
    """Whether a manifest row has an asset in a collection the caller may see.

    Args:
        rec: a manifest row (or None).
        allowed_collections: the collections the caller may see; None = all, [] = none.
    """
    if rec is None or not rec.asset_id:
        return False
    return allowed_collections is None or (rec.collection or DEFAULT_COLLECTION) in allowed_collections


def resolve_asset(manifest: Manifest, path_or_id: str,
                  allowed_collections: Optional[Sequence[str]] = None, ingest: Any = None) -> Optional[str]:
    """The asset id of an ingested file, a full asset id or a unique id prefix
    (``mmrag_li.assets.resolve_asset_id``) among the visible collections; None when nothing matches.

    Args:
        manifest: the manifest.
        path_or_id: a file path, an asset id or an id prefix.
        allowed_collections: the collections the caller may see; None = all, [] = none.
        ingest: the ``IngestConfig`` (with ``redact_pii`` a file with PII in its path is keyed by
            ``sources.source_key``); None = keys are resolved paths.

    Raises:
        AssetIdError: a prefix that is too short or ambiguous.
    """
    if Path(path_or_id).exists():
        rec = manifest.get(source_key(path_or_id, ingest)) or manifest.get(str(Path(path_or_id).resolve()))
        return rec.asset_id if visible(rec, allowed_collections) else None
    try:
        return resolve_asset_id({r.asset_id for r in manifest.all() if visible(r, allowed_collections)}, path_or_id)
    except AssetNotFoundError:
        return None


def describe_asset(manifest: Manifest, stores: Any, asset_id: str) -> Dict[str, Any]:
    """``{"asset_id", "source", "status", "nodes": [{"id", "modality", "text", "metadata"}]}``,
    nodes ordered by page, then modality (image, page, crop, ocr, caption, text), then id.

    Args:
        manifest: the manifest.
        stores: the ``ModalityStores``.
        asset_id: a full asset id.
    """
    recs = manifest.by_asset(asset_id)
    order = {k: i for i, k in enumerate(NODE_KINDS)}
    nodes = sorted(stores.get_asset_nodes(asset_id), key=lambda n: (
        n.metadata.get("page") or 0, order.get(n.metadata.get("modality"), 9), n.node_id))
    return {"asset_id": asset_id, "source": shown_source(recs[0].source) if recs else None,
            "status": recs[0].status if recs else None,
            "nodes": [{"id": n.node_id, "modality": n.metadata.get("modality"),
                       "text": n.get_content(MetadataMode.NONE), "metadata": n.metadata} for n in nodes]}


def store_stats(manifest: Manifest, stores: Any, store_dir: str | Path, backend: str) -> Dict[str, Any]:
    """``{"assets", "files": {status: n}, "nodes": {collection: n}, "store", "backend"}``.

    Args:
        manifest: the manifest.
        stores: the ``ModalityStores``.
        store_dir: the store directory.
        backend: the store backend name.
    """
    return {"assets": len(manifest.done_assets()), "files": manifest.counts(), "nodes": stores.count(),
            "store": str(Path(store_dir).resolve()), "backend": backend}


__all__ = ["visible", "resolve_asset", "describe_asset", "store_stats"]
