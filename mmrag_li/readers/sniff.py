"""Content-type sniffing from magic bytes (the ``filetype`` package), not only the extension."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import filetype

IMAGE_MIMES = {"image/png", "image/jpeg", "image/webp", "image/tiff", "image/bmp", "image/x-ms-bmp", "image/gif"}
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".webp", ".tif", ".tiff", ".bmp", ".gif"}
PDF_EXTS = {".pdf"}
TEXT_EXTS = {".txt", ".text", ".md", ".markdown", ".mdown", ".mkd", ".rst", ".log", ".csv", ".tsv"}
EXT_NAMES = {".png": "PNG image", ".jpg": "JPEG image", ".jpeg": "JPEG image", ".jpe": "JPEG image",
             ".jfif": "JPEG image", ".webp": "WebP image", ".tif": "TIFF image", ".tiff": "TIFF image",
             ".bmp": "BMP image", ".gif": "GIF image", ".pdf": "PDF"}
HEAD_BYTES = 8192


class FileType(str):
    """The kind of a file ("image" | "pdf" | "text" | "unknown") -- a ``str`` -- plus ``.mime``."""

    mime: str

    def __new__(cls, kind: str, mime: str) -> "FileType":
        obj = super().__new__(cls, kind)
        obj.mime = mime
        return obj

    @property
    def kind(self) -> str:
        return str(self)

    def __repr__(self) -> str:
        return f"FileType({str(self)!r}, mime={self.mime!r})"


def _looks_like_text(head: bytes) -> bool:
    if not head:
        return False
    if b"\x00" in head and not head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return False
    if head.startswith((b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")):
        return True
    try:
        head.decode("utf-8")
        return True
    except UnicodeDecodeError as exc:
        if exc.start >= len(head) - 4:  # a multi-byte character cut by the read
            return True
    # Legacy 8-bit encodings: mostly printable, few control bytes.
    ctrl = sum(1 for b in head if b < 32 and b not in (9, 10, 12, 13, 27))
    return ctrl / len(head) < 0.01 and _charset_ok(head)


def _charset_ok(head: bytes) -> bool:
    try:
        from charset_normalizer import from_bytes
    except ImportError:  # pragma: no cover
        return True
    best = from_bytes(head).best()
    return best is not None and best.chaos < 0.3


def sniff_bytes(head: bytes, suffix: str = "") -> FileType:
    suffix = suffix.lower()
    kind = filetype.guess(head) if head else None
    mime: Optional[str] = kind.mime if kind is not None else None
    if mime in IMAGE_MIMES:
        return FileType("image", "image/bmp" if mime == "image/x-ms-bmp" else mime)
    if mime == "application/pdf" or b"%PDF-" in head[:1024]:
        return FileType("pdf", "application/pdf")
    if mime is not None:
        return FileType("unknown", mime)
    if _looks_like_text(head):
        if suffix in (".md", ".markdown", ".mdown", ".mkd"):
            return FileType("text", "text/markdown")
        if suffix == ".csv":
            return FileType("text", "text/csv")
        return FileType("text", "text/plain")
    return FileType("unknown", "application/octet-stream")


def sniff_type(path: str | Path, follow_symlinks: bool = True) -> FileType:
    """Sniff a file's type from its first bytes. ``sniff_type(p) == "image"``; ``.mime`` is the MIME type.

    Args:
        path: the file.
        follow_symlinks: False opens with ``O_NOFOLLOW`` (a symbolic link raises ``OSError`` ELOOP).
            Readers of walked files do not call this: they sniff the bytes they read (`sniff_bytes`).
    """
    p = Path(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    if not follow_symlinks:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(p, flags)  # non-blocking: a FIFO named like a file must not hang the sniff
    try:
        head = os.read(fd, HEAD_BYTES)
    finally:
        os.close(fd)
    return sniff_bytes(head, p.suffix)


def expected_kind(path: str | Path) -> Optional[str]:
    """The kind a file's extension promises (None for unknown extensions)."""
    s = Path(path).suffix.lower()
    if s in IMAGE_EXTS:
        return "image"
    if s in PDF_EXTS:
        return "pdf"
    if s in TEXT_EXTS:
        return "text"
    return None


__all__ = ["FileType", "sniff_type", "sniff_bytes", "expected_kind", "IMAGE_EXTS", "PDF_EXTS", "TEXT_EXTS", "EXT_NAMES"]
