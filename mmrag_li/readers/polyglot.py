"""Polyglot files: bytes that are valid in two formats at once (PNG + ZIP, JPEG + PDF, ...).

The reader is chosen by sniffing the *leading* magic bytes (``sniff.py``); this module looks for
a second format hiding in the same file and describes it, so the report can say what was done:
"read as image/png; 1,234 trailing bytes after IEND (application/zip) ignored". Checks:

* PNG: data after the ``IEND`` chunk (the classic PNG+ZIP / PNG+PDF polyglot);
* JPEG: data after the last ``FFD9`` end-of-image marker;
* any non-PDF: a ``%PDF-`` header in the first 1024 bytes (PDF readers accept it there);
* PDF: bytes before ``%PDF-`` (another format's header in front);
* any: a ZIP end-of-central-directory record near the end (ZIP readers look there first).

Only the leading format is ever parsed; the rest is not extracted. With
``ingest.refuse_polyglots`` the pipeline refuses such files instead.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import List, Optional

from .sniff import sniff_bytes

_TAIL = 65536 + 22  # a ZIP comment is at most 65535 bytes; the EOCD record is 22
_PNG_SIG = b"\x89PNG\r\n\x1a\n"


def _png_end(fh, size: int) -> Optional[int]:
    """Offset just past the IEND chunk, walking chunk headers (no decoding)."""
    fh.seek(8)
    pos = 8
    for _ in range(1_000_000):
        head = fh.read(8)
        if len(head) < 8:
            return None
        length, kind = struct.unpack(">I4s", head)
        pos += 12 + length
        if kind == b"IEND":
            return pos
        if pos > size:
            return None
        fh.seek(pos)
    return None


def _describe(data: bytes) -> str:
    if data.startswith(b"PK\x03\x04") or data.startswith(b"PK\x05\x06"):
        return "application/zip"
    if b"%PDF-" in data[:1024]:
        return "application/pdf"
    ft = sniff_bytes(data[:8192])
    return ft.mime if ft.kind != "unknown" or ft.mime != "application/octet-stream" else "unrecognised data"


def polyglot_note(path: str | Path, mime: str) -> Optional[str]:
    """A sentence describing a second format found in ``path`` (read as ``mime``), or None."""
    p = Path(path)
    try:
        size = p.stat().st_size
        with open(p, "rb") as fh:
            head = fh.read(8192)
            fh.seek(max(0, size - _TAIL))
            tail = fh.read()
            notes: List[str] = []
            if mime == "image/png" and head.startswith(_PNG_SIG):
                end = _png_end(fh, size)
                if end is not None and size - end > 0:
                    fh.seek(end)
                    extra = fh.read(8192)
                    if extra.strip(b"\x00"):
                        notes.append(f"{size - end:,} trailing bytes after the PNG IEND chunk "
                                     f"({_describe(extra)}) ignored")
            elif mime == "image/jpeg":
                eoi = tail.rfind(b"\xff\xd9")
                extra = tail[eoi + 2:] if eoi >= 0 else b""
                if len(extra.strip(b"\x00\r\n ")) > 16:
                    notes.append(f"{len(extra):,} trailing bytes after the JPEG end marker "
                                 f"({_describe(extra)}) ignored")
            if mime != "application/pdf":
                at = head[:1024].find(b"%PDF-")
                if at >= 0:
                    notes.append(f"a PDF header at byte {at} (not read as PDF)")
            else:
                at = head.find(b"%PDF-")
                if at > 0:
                    notes.append(f"{at} bytes before the PDF header ({_describe(head[:at])}) ignored")
            if b"PK\x05\x06" in tail and not any("zip" in n for n in notes):
                notes.append("a ZIP archive directory at the end of the file (archive not extracted)")
    except OSError:
        return None
    if not notes:
        return None
    return f"read as {mime}; " + "; ".join(notes)


__all__ = ["polyglot_note"]
