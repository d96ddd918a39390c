"""A small HTTP client of ``mmrag serve`` (standard library only): what ``mmrag search|query
--server URL`` (or ``$MMRAG_SERVER``) uses to get warm answers.

The server returns exactly the CLI's ``--json`` documents, so the CLI prints them as if it had
computed them. ``$MMRAG_API_KEY`` is sent as ``X-API-Key`` when set. While the server is still
loading its models (503) the client waits and retries, up to ``wait_s``.
"""

from __future__ import annotations

import json
import mimetypes
import os
import time
import uuid
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from mmrag_li.errors import MMRAGError, UsageError

ENV_URL = "MMRAG_SERVER"
ENV_KEY = "MMRAG_API_KEY"

__all__ = ["ENV_URL", "ENV_KEY", "ServerError", "server_url", "ServerClient"]


class ServerError(MMRAGError):
    """The server could not be reached, or refused the request (the message is the server's)."""

    def __init__(self, message: str, status: Optional[int] = None):
        super().__init__(message)
        self.status = status


class ServerUsageError(ServerError, UsageError):
    """The server says the request is malformed (400/413/415/422): a usage error (exit 2)."""


def server_url(value: Optional[str] = None) -> Optional[str]:
    """The server to use: ``value`` (``--server``), else ``$MMRAG_SERVER``, else None (no server).

    Args:
        value: the ``--server`` option.
    """
    url = (value or os.environ.get(ENV_URL) or "").strip()
    if not url:
        return None
    if "://" not in url:
        url = "http://" + url
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(f"--server {value or url!r}: give http://HOST:PORT")
    return url.rstrip("/")


def _multipart(fields: Dict[str, Any], files: List[Tuple[str, Path]]) -> Tuple[bytes, str]:
    boundary = "mmrag-" + uuid.uuid4().hex
    out = bytearray()
    for name, value in fields.items():
        if value is None:
            continue
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").encode()
    for name, path in files:
        ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        fname = path.name.replace('"', "_").replace("\r", "_").replace("\n", "_")
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{fname}\"\r\n"
                f"Content-Type: {ctype}\r\n\r\n").encode()
        out += path.read_bytes() + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


class ServerClient:
    """Calls one ``mmrag serve``.

    Args:
        url: its base URL (``http://127.0.0.1:8765``).
        api_key: sent as ``X-API-Key`` (default ``$MMRAG_API_KEY``).
        timeout_s: per-request timeout (answers from a remote LLM can take a while).
        wait_s: how long to keep retrying while the server loads its models (503).
    """

    def __init__(self, url: str, api_key: Optional[str] = None, timeout_s: float = 600.0, wait_s: float = 180.0):
        self.url = url.rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get(ENV_KEY)
        self.timeout_s = timeout_s
        self.wait_s = wait_s

    def request(self, method: str, path: str, body: Optional[bytes] = None,
                content_type: Optional[str] = None) -> Any:
        """One request; returns the decoded JSON body.

        Args:
            method: "GET" or "POST".
            path: the path and query string (``/api/search?q=...``).
            body: the request body.
            content_type: its type.

        Raises:
            ServerUsageError: 400, 413, 415, 422 (the server's message).
            ServerError: anything else that is not a 2xx, or no connection.
        """
        headers = {"Accept": "application/json", "X-MMRAG-Client": "cli"}
        if content_type:
            headers["Content-Type"] = content_type
        if self.api_key:
            headers["X-API-Key"] = self.api_key
        deadline = time.monotonic() + self.wait_s
        while True:
            req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:  # noqa: S310 (http(s) only)
                    return json.loads(resp.read().decode("utf-8"))
            except urllib.error.HTTPError as exc:
                status, text = exc.code, exc.read().decode("utf-8", "replace")
                if status == 503 and time.monotonic() < deadline:
                    time.sleep(1.0)
                    continue
                raise self._error(status, text) from None
            except (urllib.error.URLError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                raise ServerError(f"cannot reach the mmrag server at {self.url}: {reason} "
                                  f"(start it with `mmrag serve`, or drop --server / ${ENV_URL})") from None

    def _error(self, status: int, text: str) -> ServerError:
        try:
            message = json.loads(text).get("error") or text
        except (ValueError, AttributeError):
            message = text.strip()[:500] or f"HTTP {status}"
        message = f"server {self.url} answered {status}: {message}"
        cls = ServerUsageError if status in (400, 413, 415, 422) else ServerError
        return cls(message, status)

    def _post(self, path: str, fields: Dict[str, Any], image: Optional[str | Path]) -> Any:
        if image:
            body, ctype = _multipart(fields, [("image", Path(image))])
        else:
            body, ctype = json.dumps({k: v for k, v in fields.items() if v is not None}).encode(), "application/json"
        return self.request("POST", path, body, ctype)

    def search(self, text: str, image: Optional[str | Path] = None, k: int = 5) -> Dict[str, Any]:
        """``mmrag search --json`` computed by the server.

        Args:
            text: the query text.
            image: a query image file (optional).
            k: number of results.
        """
        if image:
            return self._post("/api/search", {"q": text, "k": k}, image)
        return self.request("GET", "/api/search?" + urllib.parse.urlencode({"q": text, "k": k}))

    def query(self, question: str, image: Optional[str | Path] = None, k: Optional[int] = None) -> Dict[str, Any]:
        """``mmrag query --json`` computed by the server.

        Args:
            question: the question.
            image: a picture the question is about (optional).
            k: evidence items (optional).
        """
        return self._post("/api/query", {"question": question, "k": k}, image)

    def health(self) -> Dict[str, Any]:
        """``/healthz`` (no retry while loading)."""
        saved, self.wait_s = self.wait_s, 0.0
        try:
            return self.request("GET", "/healthz")
        except ServerError as exc:
            if exc.status == 503:
                return {"ready": False, "status": "loading"}
            raise
        finally:
            self.wait_s = saved
