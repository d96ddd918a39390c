"""``mmrag serve``: run the app with uvicorn (loopback by default; models loaded once at start)."""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path
from typing import Any, Optional

__all__ = ["is_loopback", "serve", "host_warning"]


def is_loopback(host: str) -> bool:
    """Whether ``host`` binds to the loopback interface only (127.0.0.0/8, ::1, localhost).

    Args:
        host: the ``--host`` value.
    """
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_warning(host: str, keys: bool) -> Optional[str]:
    """The warning ``mmrag serve`` prints for a non-loopback ``host`` (None for loopback).

    Args:
        host: the ``--host`` value.
        keys: whether API keys are configured (``server.api_keys``).
    """
    if is_loopback(host):
        return None
    msg = (f"WARNING: mmrag serve is listening on {host}: anyone who can reach this machine can search "
           "and read the store")
    if not keys:
        msg += " (no API keys are configured: set server.api_keys to limit who sees which collections)"
    return msg + ". Use --host 127.0.0.1 to keep it local."


def serve(host: Optional[str] = None, port: Optional[int] = None, store_dir: Optional[str | Path] = None,
          config: Optional[str | Path] = None, log_level: str = "info", settings: Any = None) -> None:
    """Serve the store until interrupted (blocking).

    Args:
        host: interface to bind (default ``server.host``, 127.0.0.1).
        port: TCP port (default ``server.port``, 8765; 0 = any free port).
        store_dir: the store directory (default from the settings).
        config: a YAML path or preset name.
        log_level: uvicorn's log level.
        settings: ready ``Settings`` instead of ``config``.
    """
    try:
        import uvicorn
    except ImportError as exc:  # pragma: no cover - depends on extras
        from mmrag_li.errors import UsageError

        raise UsageError("mmrag serve needs the server extra: pip install 'mmrag_li[server]'") from exc
    from mmrag_li.server.app import LOOPBACK_HOSTS, _settings, create_app

    settings = _settings(settings, store_dir, config)
    host = host or settings.server.host
    port = settings.server.port if port is None else port
    warning = host_warning(host, bool(settings.server.api_keys))
    if warning:
        print(warning, file=sys.stderr)
    hosts = None if settings.server.allowed_hosts or not is_loopback(host) else LOOPBACK_HOSTS
    app = create_app(settings=settings, allowed_hosts=hosts)
    shown = f"[{host}]" if ":" in host else host
    print(f"mmrag serve: store {Path(settings.store_dir).resolve()}; loading models; "
          f"open http://{'127.0.0.1' if host in ('0.0.0.0', '::') else shown}:{port}/", file=sys.stderr)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)
