"""The FastAPI app of ``mmrag serve``: :func:`create_app`.

Routes (OpenAPI page at ``/docs``): ``GET /healthz``, ``GET /api/stats``, ``GET|POST /api/search``,
``POST /api/query``, ``GET /api/query/stream`` (SSE), ``GET /api/assets/{id}`` (+ ``/thumbnail``,
``/pages/{n}.png``), ``POST /api/ingest``, ``GET /api/jobs/{id}``, and the web page at ``/``
(a Jinja2 template, CSS and a little JavaScript shipped in the package: no CDN, no build step).
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Optional, Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException

from mmrag_li.errors import MMRAGError
from mmrag_li.server.common import error_response, get_state
from mmrag_li.server.state import ServerState
from mmrag_li.server.uploads import BodyLimit

log = logging.getLogger("mmrag_li.server")

HERE = Path(__file__).resolve().parent
TEMPLATES = Jinja2Templates(directory=str(HERE / "templates"))
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "::1", "[::1]"]

__all__ = ["create_app", "LOOPBACK_HOSTS"]


def _settings(settings: Any, store_dir: Optional[str | Path], config: Optional[str | Path]) -> Any:
    from mmrag_li.config import Settings

    if settings is None:
        settings = Settings.load(config)
    if store_dir is not None:
        settings = settings.model_copy(update={"store_dir": str(store_dir)})
    return settings


def create_app(rag: Any = None, settings: Any = None, store_dir: Optional[str | Path] = None,
               config: Optional[str | Path] = None, allowed_hosts: Optional[Sequence[str]] = None,
               wait: bool = False, factory: Optional[Callable[[], Any]] = None) -> FastAPI:
    """The ``mmrag serve`` application.

    Args:
        rag: a ``MultiModalRAG`` to serve (e.g. one a test built); None = open one from
            ``settings`` when the app starts (models load in the background; ``/healthz`` says
            when they are ready).
        settings: the ``Settings`` (default: ``Settings.load(config)``, or the facade's). With ``rag``
            given, they set only the server side: ``server.*`` and the base guard
            (``retrieval.allowed_collections``), which narrows what the facade's own guard allows.
        store_dir: the store directory (overrides the settings').
        config: a YAML path or preset name, read when ``settings`` is None.
        allowed_hosts: ``Host`` header names accepted (DNS-rebinding guard); None = ``server.allowed_hosts``
            or any.
        wait: load the models before the app starts serving (the lifespan blocks until loaded).
        factory: builds the facade when ``rag`` is None (default ``MultiModalRAG(settings)``).
    """
    if rag is None or settings is None:
        settings = rag.settings if rag is not None else _settings(settings, store_dir, config)
    state = ServerState(rag=rag, factory=factory or (lambda: _open(settings)), settings=settings)
    server_cfg = settings.server

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.start()
        if wait:
            from starlette.concurrency import run_in_threadpool

            await run_in_threadpool(state.wait)
        yield

    app = FastAPI(title="mmrag", version=_version(), lifespan=lifespan,
                  description="Multimodal RAG over images, PDFs and text: search, cited answers, evidence regions.")
    app.state.mmrag = state
    _middleware(app, server_cfg, allowed_hosts)
    _handlers(app)

    from mmrag_li.server import routes_api, routes_assets, routes_ingest

    app.include_router(routes_api.router)
    app.include_router(routes_assets.router)
    app.include_router(routes_ingest.router)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    @app.get("/", include_in_schema=False)
    def page(request: Request) -> Any:
        st = get_state(request)
        return TEMPLATES.TemplateResponse(request, "index.html", {
            "keys_required": st.keys.enabled, "store": st.store_dir.name or str(st.store_dir),
            "version": _version()})

    return app


def _open(settings: Any) -> Any:
    from mmrag_li.pipeline import MultiModalRAG

    return MultiModalRAG(settings)


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("mmrag_li")
    except Exception:  # not installed (source checkout)
        return "0"


def _middleware(app: FastAPI, cfg: Any, allowed_hosts: Optional[Sequence[str]]) -> None:
    hosts = list(allowed_hosts) if allowed_hosts is not None else list(cfg.allowed_hosts)
    if hosts and "*" not in hosts:
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        app.add_middleware(TrustedHostMiddleware, allowed_hosts=hosts)
    if cfg.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cfg.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["X-API-Key", "Authorization", "Content-Type", "X-MMRAG-Client"])
    app.add_middleware(BodyLimit, max_bytes=int(cfg.max_upload_mb * (1 << 20)))


def _handlers(app: FastAPI) -> None:
    @app.exception_handler(MMRAGError)
    async def mmrag_error(request: Request, exc: MMRAGError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail), "type": "HTTPError"}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors())
        return JSONResponse({"error": problems or "invalid request", "type": "ValidationError"}, status_code=422)
