"""``POST /api/ingest`` (server paths or uploaded files -> a background job) and ``GET /api/jobs/{id}``.

Writes need the ``X-MMRAG-Client`` header (any value): a web page on another site cannot add
it without a CORS preflight this server does not grant, so it cannot make a browser ingest
files here. Server paths must lie inside ``server.ingest_roots`` (none by default); uploads are
size-limited and type-sniffed (``uploads``) and saved under ``<store>/uploads/<job id>/``.
The caller's API key must allow the target collection.
"""

from __future__ import annotations

from typing import Any, Dict, List

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse

from mmrag_li.guard import CollectionGuard
from mmrag_li.server.common import caller_guard, ready_state
from mmrag_li.server.jobs import IngestJob, allowed_path, start_job
from mmrag_li.server.state import ServerState
from mmrag_li.server.uploads import check_ingest_file, safe_name, save_upload

router = APIRouter(tags=["ingest"])
CLIENT_HEADER = "x-mmrag-client"

_BODY = {"requestBody": {"content": {
    "application/json": {"schema": {"type": "object", "properties": {
        "paths": {"type": "array", "items": {"type": "string"}}, "collection": {"type": "string"},
        "prune": {"type": "boolean"}}}},
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        "files": {"type": "array", "items": {"type": "string", "format": "binary"}},
        "collection": {"type": "string"}}}}}}}


def _collection(st: ServerState, guard: CollectionGuard, value: Any) -> str:
    from mmrag_li.ingest.transforms import check_collection

    name = str(value or st.settings.ingest.collection)
    try:
        check_collection(name)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None
    if not guard.allows_collection(name):
        raise HTTPException(403, f"this API key may not write to collection {name!r}")
    return name


async def _uploads(st: ServerState, form: Any, job: IngestJob) -> List[str]:
    files = [f for f in form.getlist("files") + form.getlist("file") if not isinstance(f, str)]
    cfg = st.settings
    if not files:
        raise HTTPException(400, "no files: send multipart 'files' fields (or JSON {\"paths\": [...]})")
    if len(files) > cfg.server.max_upload_files:
        raise HTTPException(413, f"{len(files)} files: at most {cfg.server.max_upload_files} per request "
                                 "(server.max_upload_files)")
    folder = st.store_dir / "uploads" / job.id
    folder.mkdir(parents=True, exist_ok=True)
    limit = int(min(cfg.server.max_upload_mb, cfg.ingest.max_file_mb) * (1 << 20))
    saved, used = [], set()
    try:
        for i, up in enumerate(files):
            name = safe_name(up.filename, f"upload-{i}")
            if name.lower() in used:
                name = f"{i}-{name}"
            used.add(name.lower())
            path = await save_upload(up, folder / name, limit)
            check_ingest_file(path, cfg)
            saved.append(path)
    except BaseException:
        for p in folder.iterdir():
            p.unlink(missing_ok=True)
        folder.rmdir()
        raise
    job.names = [p.name for p in saved]
    return [str(p) for p in saved]


@router.post("/api/ingest", status_code=202, openapi_extra=_BODY)
async def ingest(request: Request, st: ServerState = Depends(ready_state),
                 guard: CollectionGuard = Depends(caller_guard)) -> Any:
    """Start an ingest job; returns ``{"job": id, "status_url", ...}`` with status 202. Body: JSON
    ``{"paths": [...], "collection"?, "prune"?}`` (inside ``server.ingest_roots``) or multipart
    ``files`` (+ ``collection``). Needs the ``X-MMRAG-Client`` header."""
    if not request.headers.get(CLIENT_HEADER):
        raise HTTPException(403, "send the X-MMRAG-Client header with write requests")
    ctype = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if ctype == "application/json":
        try:
            body: Dict[str, Any] = await request.json()
        except ValueError:
            raise HTTPException(400, "the body is not valid JSON") from None
        if not isinstance(body, dict) or not isinstance(body.get("paths"), list) or not body["paths"]:
            raise HTTPException(400, 'give {"paths": ["file or folder", ...]}')
        job = IngestJob(paths=[], collection=_collection(st, guard, body.get("collection")), guard=guard,
                        prune=bool(body.get("prune")))
        roots = list(st.settings.server.ingest_roots)
        if not roots:
            raise HTTPException(403, "ingesting server paths is off: list the folders it may read in "
                                     "server.ingest_roots, or upload the files")
        for raw in body["paths"]:
            path = allowed_path(str(raw), roots)
            if path is None:
                raise HTTPException(403, f"{str(raw)[:200]!r} does not exist or is outside server.ingest_roots")
            job.paths.append(str(path))
        job.names = list(job.paths)
    elif ctype == "multipart/form-data":
        form = await request.form(max_files=st.settings.server.max_upload_files + 1)
        try:
            job = IngestJob(paths=[], collection=_collection(st, guard, form.get("collection")), guard=guard)
            job.paths = await _uploads(st, form, job)
        finally:
            await form.close()
    else:
        raise HTTPException(415, "send application/json (server paths) or multipart/form-data (files)")
    start_job(st, job)
    return JSONResponse({"job": job.id, "status_url": f"/api/jobs/{job.id}", **job.to_dict()}, status_code=202)


@router.get("/api/jobs/{job_id}")
async def job_status(job_id: str, st: ServerState = Depends(ready_state),
                     guard: CollectionGuard = Depends(caller_guard)) -> Any:
    """An ingest job: ``{"id", "state": queued|running|done|failed, "progress", "report", "error"?}``."""
    job = st.jobs.get(job_id)
    if job is None or not job.visible_to(guard):
        raise HTTPException(404, "no such job")
    return job.to_dict()
