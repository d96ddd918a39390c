"""Request plumbing shared by the routes: the server state, readiness, the caller's guard, errors.

Every data endpoint depends on :func:`ready_state` (503 while the models load) and
:func:`caller_guard` (401 without a valid key when keys are configured). Library errors map to
HTTP statuses in one place (:func:`error_response`): usage errors 400, unknown assets and a
missing store 404, everything else 500 with a one-line message.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Optional

from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse

from mmrag_li.assets import AssetNotFoundError, StoreNotFoundError, require_store
from mmrag_li.errors import ConfigError, MMRAGError, UsageError
from mmrag_li.guard import CollectionGuard
from mmrag_li.server.auth import presented_key
from mmrag_li.server.state import ServerState

log = logging.getLogger("mmrag_li.server")

__all__ = ["get_state", "ready_state", "caller_guard", "require_store_here", "error_response", "not_found",
           "one_line"]


def one_line(exc: BaseException) -> str:
    """An exception as one line (multi-line messages joined with '; ')."""
    parts = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return "; ".join(parts) or type(exc).__name__


def get_state(request: Request) -> ServerState:
    """The app's :class:`ServerState` (FastAPI dependency)."""
    return request.app.state.mmrag


def ready_state(request: Request) -> ServerState:
    """The state once the models are loaded; 503 (with ``Retry-After``) before, 500 if loading failed."""
    st = get_state(request)
    if not st.ready.is_set():
        if st.error:
            raise HTTPException(500, f"the server could not start: {st.error}")
        raise HTTPException(503, "loading models; retry in a few seconds", headers={"Retry-After": "2"})
    return st


def caller_guard(request: Request) -> CollectionGuard:
    """The collections this request may reach: the configured guard, narrowed by its API key.

    Raises:
        HTTPException: 401 when keys are configured and the request has no known key.
    """
    st = get_state(request)
    guard = st.keys.guard(st.base_guard(), presented_key(request.headers, request.cookies))
    if guard is None:
        raise HTTPException(401, "an API key is required: send X-API-Key: KEY (or Authorization: Bearer KEY)",
                            headers={"WWW-Authenticate": "Bearer"})
    return guard


def require_store_here(st: ServerState) -> None:
    """404 (``StoreNotFoundError``) when the store has not been created yet; creates nothing."""
    require_store(st.store_dir)


def not_found(what: str = "not found") -> HTTPException:
    """A 404 that names nothing the caller may not know about."""
    return HTTPException(404, what)


def _status(exc: BaseException) -> int:
    if isinstance(exc, (AssetNotFoundError, StoreNotFoundError)):
        return 404
    if isinstance(exc, UsageError):
        return 400
    if isinstance(exc, (ConfigError, MMRAGError)):
        return 500
    return 500


def error_response(exc: BaseException, status: Optional[int] = None) -> JSONResponse:
    """``{"error": message, "type": class name}`` with the status the error maps to.

    Args:
        exc: the error.
        status: force a status (default: from the error's class).
    """
    code = status or _status(exc)
    if isinstance(exc, MMRAGError):
        body: Dict[str, Any] = {"error": one_line(exc), "type": type(exc).__name__}
    else:  # not ours: say what, log the traceback, reveal no internals
        log.exception("internal error")
        body = {"error": f"internal error ({type(exc).__name__}); see the server log", "type": "InternalError"}
    return JSONResponse(body, status_code=code)
