"""``mmrag serve``: a warm HTTP API and a web page over one store.

``create_app(rag=None, settings=None, store_dir=None, config=None)`` builds the FastAPI app
(:mod:`mmrag_li.server.app`); ``serve(host, port, store_dir, config)`` runs it with uvicorn
(:mod:`mmrag_li.server.run`); :class:`~mmrag_li.server.client.ServerClient` calls a running one.
FastAPI, uvicorn, python-multipart and Jinja2 come with ``pip install 'mmrag_li[server]'``; they are
imported only when an app is built, so the client works without them.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {"create_app": "mmrag_li.server.app", "serve": "mmrag_li.server.run",
         "ServerClient": "mmrag_li.server.client", "server_url": "mmrag_li.server.client"}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mmrag_li.server' has no attribute {name!r}")
