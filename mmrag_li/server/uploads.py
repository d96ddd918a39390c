"""Uploaded files, checked like ingested ones before anything reads them.

* The whole request body is capped (:class:`BodyLimit`, ``server.max_upload_mb``): a larger
  ``Content-Length`` is refused before a byte is read, a body that grows past it mid-stream too.
* Each file is written in chunks and refused once over ``min(server.max_upload_mb, ingest.max_file_mb)``.
* The type is sniffed from the bytes (``readers.sniff.sniff_bytes``): images, PDFs and text only.
* Query images go through ``readers.image.open_query_image`` (decompression-bomb limit from the
  header, before decoding); ingested images get the same header check here and the readers' full
  checks during ingest.
* Names are reduced to a safe base name; nothing is ever written outside the target folder.
"""

from __future__ import annotations

import json
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any, Optional

from fastapi import HTTPException, UploadFile

__all__ = ["BodyLimit", "UploadTooLarge", "safe_name", "save_upload", "query_image_file", "check_ingest_file"]

CHUNK = 1 << 16
_SAFE = re.compile(r"[^A-Za-z0-9._ -]+")


class UploadTooLarge(HTTPException):
    """413: a request body or one uploaded file is over its limit."""

    def __init__(self, detail: str):
        super().__init__(413, detail)


class BodyLimit:
    """ASGI middleware: refuse request bodies larger than ``max_bytes`` with 413.

    Args:
        app: the wrapped ASGI app.
        max_bytes: the largest body accepted.
    """

    def __init__(self, app: Any, max_bytes: int):
        self.app = app
        self.max_bytes = int(max_bytes)

    async def _refuse(self, send: Any) -> None:
        body = json.dumps({"error": f"request body over the {self.max_bytes // (1 << 20)} MB limit "
                                    "(server.max_upload_mb)", "type": "UploadTooLarge"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers") or []:
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    too_big = True
                if too_big:
                    await self._refuse(send)
                    return
        seen = 0
        started = False

        async def limited_receive() -> Any:
            nonlocal seen
            message = await receive()
            if message.get("type") == "http.request":
                seen += len(message.get("body") or b"")
                if seen > self.max_bytes:
                    raise UploadTooLarge("request body over the limit")
            return message

        async def tracking_send(message: Any) -> None:
            nonlocal started
            if message.get("type") == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except UploadTooLarge:
            if not started:
                await self._refuse(send)


def safe_name(name: Optional[str], fallback: str = "upload") -> str:
    """A file name safe to create in a folder: the base name only, odd characters replaced,
    no leading dots, at most 120 characters.

    Args:
        name: the client's file name (anything).
        fallback: used when nothing usable is left.
    """
    base = re.split(r"[\\/]", name or "")[-1]
    base = _SAFE.sub("_", base).strip(" .")[:120]
    return base or fallback


async def save_upload(upload: UploadFile, dest: Path, max_bytes: int) -> Path:
    """Write an upload to ``dest`` in chunks; 413 (and nothing left behind) once over ``max_bytes``.

    Args:
        upload: the uploaded file.
        dest: the file to create (its folder must exist).
        max_bytes: the most bytes accepted for this file.
    """
    size = 0
    try:
        with open(dest, "xb") as fh:
            while True:
                chunk = await upload.read(CHUNK)
                if not chunk:
                    break
                size += len(chunk)
                if size > max_bytes:
                    raise UploadTooLarge(f"{safe_name(upload.filename)}: over the {max_bytes // (1 << 20)} MB "
                                         "limit for one file")
                fh.write(chunk)
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    return dest


def _sniff(path: Path) -> Any:
    from mmrag_li.readers.sniff import sniff_bytes

    with open(path, "rb") as fh:
        head = fh.read(8192)
    return sniff_bytes(head, path.suffix)


async def query_image_file(upload: UploadFile, settings: Any, workdir: Path) -> str:
    """Check an uploaded query image and write the checked, downscaled picture as a PNG.

    Args:
        upload: the uploaded image.
        settings: the settings (``ingest.max_image_pixels``, ``ingest.model_max_side``, ``server.max_upload_mb``).
        workdir: a private temporary folder for the files.

    Returns:
        The path of the checked PNG (what the retrievers read).

    Raises:
        HTTPException: 413 over the size limit; 400 not an image / a bomb / corrupt.
    """
    from mmrag_li.readers.image import QueryImageError, open_query_image

    limit = int(min(settings.server.max_upload_mb, settings.ingest.max_file_mb) * (1 << 20))
    raw = await save_upload(upload, workdir / ("query" + Path(safe_name(upload.filename)).suffix.lower()), limit)
    try:
        img = open_query_image(raw, settings.ingest)
    except QueryImageError as exc:
        raise HTTPException(400, str(exc).replace(str(raw), safe_name(upload.filename))) from None
    out = workdir / "query-checked.png"
    img.save(out, format="PNG")
    return str(out)


def check_ingest_file(path: Path, settings: Any) -> str:
    """Sniff an uploaded file for ingest: image, PDF or text; images over the pixel limit refused.

    Args:
        path: the saved upload.
        settings: the settings (``ingest.max_image_pixels``).

    Returns:
        The sniffed kind ("image", "pdf" or "text").

    Raises:
        HTTPException: 415 for other types, 413 for a decompression bomb, 400 for an unreadable image.
    """
    kind = _sniff(path)
    if kind not in ("image", "pdf", "text"):
        raise HTTPException(415, f"{path.name}: {kind.mime} is not an image, PDF or text file")
    if kind == "image":
        from PIL import Image

        limit = int(settings.ingest.max_image_pixels or 0)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with Image.open(path) as im:  # reads the header only
                    w, h = im.size
        except Image.DecompressionBombError as exc:
            raise UploadTooLarge(f"{path.name}: decompression bomb: {exc}") from None
        except Exception as exc:
            raise HTTPException(400, f"{path.name}: not a readable image ({type(exc).__name__})") from None
        if limit and w * h > limit:
            raise UploadTooLarge(f"{path.name}: decompression bomb: {w}x{h} pixels exceeds ingest.max_image_pixels "
                                 f"({limit})")
    return str(kind)


def temp_dir(prefix: str = "mmrag-upload-") -> tempfile.TemporaryDirectory:
    """A private temporary folder for one request's uploads (removed on cleanup)."""
    return tempfile.TemporaryDirectory(prefix=prefix)
