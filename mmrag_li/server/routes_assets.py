"""``/api/assets/{asset_id}`` (what ``inspect`` shows), its thumbnail and its page renders.

Only full asset ids of assets the caller may see are answered; pictures come from the blob store
only (a path in node metadata that resolves outside it is ignored). Anything else is a 404 that
says nothing about what exists: an unknown id, a hidden one, a prefix, a path, a traversal attempt.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Dict, Optional

from fastapi import APIRouter, Depends, Query
from fastapi.responses import FileResponse, Response
from starlette.concurrency import run_in_threadpool

from mmrag_li.assets import AssetNotFoundError
from mmrag_li.guard import CollectionGuard
from mmrag_li.server import service
from mmrag_li.server.common import caller_guard, ready_state
from mmrag_li.server.state import ServerState

router = APIRouter(tags=["assets"])
CACHE = {"Cache-Control": "private, max-age=3600"}
MEDIA = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}


def first_page(view: Dict[str, Any]) -> Optional[int]:
    """The lowest page number of an asset's page renders (None for a single image)."""
    pages = [(n.get("metadata") or {}).get("page") for n in view["nodes"] if n.get("modality") == "page"]
    pages = [p for p in pages if isinstance(p, int)]
    return min(pages) if pages else None


@router.get("/api/assets/{asset_id}")
async def asset(asset_id: str, st: ServerState = Depends(ready_state),
                guard: CollectionGuard = Depends(caller_guard)) -> Any:
    """``mmrag inspect --json`` of one asset: ``{"asset_id", "source", "status", "nodes": [...]}``."""
    return await run_in_threadpool(service.asset_view, st, guard, asset_id)


@router.get("/api/assets/{asset_id}/thumbnail")
async def thumbnail(asset_id: str, page: Optional[int] = Query(None, ge=1, description="page of a document"),
                    st: ServerState = Depends(ready_state), guard: CollectionGuard = Depends(caller_guard)) -> Any:
    """The stored thumbnail of an image, or of one page of a document (default: its first page)."""

    def find() -> Path:
        view = service.asset_view(st, guard, asset_id)
        return service.picture_path(st, view, page if page is not None else first_page(view), "thumbnail_path")

    path = await run_in_threadpool(find)
    return FileResponse(path, media_type=MEDIA.get(path.suffix.lower(), "application/octet-stream"), headers=CACHE)


def _png(path: Path, st: ServerState) -> bytes:
    """The picture at ``path`` as PNG bytes (stored renders already are; others are converted once)."""
    cached = st.rendered.get(str(path))
    if cached is not None:
        return cached
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        buf = io.BytesIO()
        (im if im.mode in ("RGB", "RGBA", "L") else im.convert("RGB")).save(buf, format="PNG")
    return st.rendered.put(str(path), buf.getvalue())


@router.get("/api/assets/{asset_id}/pages/{page}.png")
async def page_png(asset_id: str, page: str, st: ServerState = Depends(ready_state),
                   guard: CollectionGuard = Depends(caller_guard)) -> Any:
    """Page ``page`` (1-based) of a document as rendered at ingest, or page 1 = the image itself
    (upright, sized for the models), as PNG."""
    if not (page.isascii() and page.isdigit()) or not 1 <= int(page) <= 100_000:
        raise AssetNotFoundError(f"{asset_id} page {page[:20]}")
    n = int(page)

    def find() -> Path:
        view = service.asset_view(st, guard, asset_id)
        return service.picture_path(st, view, n if first_page(view) is not None else (None if n == 1 else n),
                                    "image_path")

    path = await run_in_threadpool(find)
    if path.suffix.lower() == ".png":
        return FileResponse(path, media_type="image/png", headers=CACHE)
    data = await run_in_threadpool(_png, path, st)
    return Response(data, media_type="image/png", headers=CACHE)
