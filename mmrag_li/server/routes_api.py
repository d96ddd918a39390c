"""``/healthz``, ``/api/stats``, ``/api/search``, ``/api/query`` and ``/api/query/stream`` (SSE).

JSON bodies are the CLI's ``--json`` documents: ``/api/search`` = ``mmrag search --json``,
``/api/query`` = ``mmrag query --json`` (``mmrag_li.present``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from mmrag_li.guard import CollectionGuard
from mmrag_li.server import service
from mmrag_li.server.common import caller_guard, get_state, ready_state, require_store_here
from mmrag_li.server.state import ServerState
from mmrag_li.server.uploads import query_image_file, temp_dir

router = APIRouter()
MAX_K = 100

_FIELDS = {"q": {"type": "string"}, "question": {"type": "string"}, "k": {"type": "integer", "minimum": 1}}
_BODY = {"requestBody": {"content": {
    "application/json": {"schema": {"type": "object", "properties": _FIELDS}},
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        **_FIELDS, "image": {"type": "string", "format": "binary"}}}}}}}


def parse_k(value: Any, default: Optional[int]) -> Optional[int]:
    """``k`` from a request: a whole number 1..100, or ``default`` when absent; else 400.

    Args:
        value: the raw value (str, int or None).
        default: used for None / "".
    """
    if value is None or value == "":
        return default
    try:
        k = int(value)
    except (TypeError, ValueError):
        raise HTTPException(400, f"k must be a whole number >= 1, got {value!r}") from None
    if not 1 <= k <= MAX_K:
        raise HTTPException(400, f"k must be between 1 and {MAX_K}, got {k}")
    return k


async def read_body(request: Request) -> Tuple[Dict[str, Any], Any]:
    """The fields of a JSON or form body and its ``image`` upload (or None).

    Args:
        request: the request (``application/json``, ``multipart/form-data`` or url-encoded).
    """
    ctype = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if ctype in ("multipart/form-data", "application/x-www-form-urlencoded"):
        form = await request.form()
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        image = form.get("image")
        image = None if isinstance(image, str) or image is None or not getattr(image, "filename", "") else image
        return fields, image
    if ctype == "application/json":
        try:
            data = await request.json()
        except ValueError:
            raise HTTPException(400, "the body is not valid JSON") from None
        if not isinstance(data, dict):
            raise HTTPException(400, "the JSON body must be an object")
        return data, None
    raise HTTPException(415, "send application/json or multipart/form-data")


@router.get("/healthz", tags=["server"])
def healthz(request: Request) -> Any:
    """Liveness and readiness: ``ready`` is true once the models are loaded (503 until then)."""
    st = get_state(request)
    data = st.health()
    return JSONResponse(data, status_code=200 if data["ready"] else 503)


@router.get("/api/stats", tags=["store"])
async def stats(st: ServerState = Depends(ready_state), guard: CollectionGuard = Depends(caller_guard)) -> Any:
    """``mmrag stats --json``, counting only what the caller may see (plus ``"collections"``: the
    collections it is limited to, null = all)."""
    require_store_here(st)
    return await run_in_threadpool(service.stats, st, guard)


async def _with_query_image(call: Any, st: ServerState, guard: CollectionGuard, text: str, k: Any,
                            image: Any) -> Dict[str, Any]:
    """Run ``call(st, guard, text, image_path, k)`` (``service.search`` / ``service.answer``) in the
    thread pool; an uploaded query image is checked and kept in a temporary folder for the call."""
    require_store_here(st)
    if image is None:
        return await run_in_threadpool(call, st, guard, text, None, k)
    with temp_dir() as tmp:
        path = await query_image_file(image, st.settings, Path(tmp))
        return await run_in_threadpool(call, st, guard, text, path, k)


async def _search(st: ServerState, guard: CollectionGuard, text: str, k: int, image: Any) -> Dict[str, Any]:
    text = (text or "").strip()
    if not text and image is None:
        raise HTTPException(400, "give q (text) and/or an image")
    return await _with_query_image(service.search, st, guard, text, k, image)


@router.get("/api/search", tags=["search"])
async def search_get(q: str = Query("", description="query text"), k: int = Query(5, ge=1, le=MAX_K),
                     st: ServerState = Depends(ready_state), guard: CollectionGuard = Depends(caller_guard)) -> Any:
    """Ranked hits (``mmrag search --json``): ``{"results": [{asset_id, source, page, score, ...}]}``."""
    return await _search(st, guard, q, k, None)


@router.post("/api/search", tags=["search"], openapi_extra=_BODY)
async def search_post(request: Request, st: ServerState = Depends(ready_state),
                      guard: CollectionGuard = Depends(caller_guard)) -> Any:
    """Like ``GET /api/search``; multipart with an optional ``image`` file (query by image), or JSON."""
    fields, image = await read_body(request)
    return await _search(st, guard, str(fields.get("q") or ""), parse_k(fields.get("k"), 5), image)


@router.post("/api/query", tags=["answer"], openapi_extra=_BODY)
async def query(request: Request, st: ServerState = Depends(ready_state),
                guard: CollectionGuard = Depends(caller_guard)) -> Any:
    """A cited, verified answer (``mmrag query --json``). Body: ``{"question", "k"?}`` as JSON, or
    multipart with ``question``, ``k`` and an optional ``image``."""
    fields, image = await read_body(request)
    question = str(fields.get("question") or fields.get("q") or "").strip()
    if not question:
        raise HTTPException(400, "give a question (it is empty)")
    return await _with_query_image(service.answer, st, guard, question, parse_k(fields.get("k"), None), image)


def sse(event: str, data: Any) -> str:
    """One server-sent event: ``event: NAME`` + one ``data:`` line of JSON."""
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False, default=str)}\n\n"


@router.get("/api/query/stream", tags=["answer"])
async def query_stream(q: str = Query(..., description="the question"), k: Optional[int] = Query(None, ge=1, le=MAX_K),
                       st: ServerState = Depends(ready_state), guard: CollectionGuard = Depends(caller_guard)) -> Any:
    """Server-sent events: ``token`` ({"text"}) as the answer is written (one event when the LLM
    does not stream), then ``done`` (the ``mmrag query --json`` document) or ``error``."""
    question = (q or "").strip()
    if not question:
        raise HTTPException(400, "give a question (it is empty)")
    require_store_here(st)
    events = service.drain(service.stream_answer(st, guard, question, k))

    async def gen() -> Any:
        while True:
            item = await run_in_threadpool(next, events, None)
            if item is None:
                return
            name, data = item
            yield ": ping\n\n" if name == "ping" else sse(name, data)

    return StreamingResponse(gen(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
