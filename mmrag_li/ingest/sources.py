"""Manifest keys of source files, without PII from file names when ``ingest.redact_pii`` is on.

The manifest is keyed by a file's resolved path. A path whose name holds PII (an e-mail, a phone
number, an IBAN ...) would put that PII into ``<store>/manifest.sqlite``; with ``ingest.redact_pii``
such a file is keyed by its redacted path plus a pseudonym instead, e.g.
``/in/[EMAIL]_cv.md#pii-3f2a...``: the redacted part keeps "which folder" (prune needs it), the
pseudonym (a SHA-256 of the real path) keeps two such files apart and lets the next run find the
row again. A path without PII is its own key, so stores made without redaction keep their rows.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

PSEUDONYM_MARK = "#pii-"

__all__ = ["PSEUDONYM_MARK", "source_key", "shown_source", "is_pseudonym", "is_under", "redacted_path", "find_row"]


@functools.lru_cache(maxsize=4096)
def _redacted_part(part: str, regions: Optional[Sequence[str]]) -> str:
    if "@" not in part and sum(c.isdigit() for c in part) < 5:
        return part  # every kind of PII found needs an "@" or 5+ digits: skip the slow matchers
    from mmrag_li.enrich.pii import redact_source

    return redact_source(part, phone_regions=regions)


def redacted_path(path: str, regions: Optional[Sequence[str]] = None) -> str:
    """``path`` with PII in any component replaced (``enrich.pii.redact_source``); folders are
    cached, so walking a tree costs one check per file name.

    Args:
        path: an absolute path.
        regions: phone regions (``ingest.pii_phone_regions``).
    """
    regions = tuple(regions) if regions else None
    head, name = os.path.split(path)
    if not head or head == path:
        return _redacted_part(path, regions)
    red_head = _redacted_part(head, regions) if head != os.sep else head
    return os.path.join(red_head, _redacted_part(name, regions))


def source_key(path: str | os.PathLike, ingest: Any = None) -> str:
    """The manifest key of a file: its resolved path; with ``ingest.redact_pii`` and PII in that
    path, ``<redacted path>#pii-<sha256 of the path, 24 hex>``.

    Args:
        path: the file (resolved here).
        ingest: the ``IngestConfig`` (``redact_pii``, ``pii_phone_regions``); None = no redaction.
    """
    real = str(Path(path).resolve())
    if ingest is None or not getattr(ingest, "redact_pii", False):
        return real
    shown = redacted_path(real, getattr(ingest, "pii_phone_regions", None))
    if shown == real:
        return real
    digest = hashlib.sha256(os.fsencode(real)).hexdigest()[:24]
    return f"{shown}{PSEUDONYM_MARK}{digest}"


def is_pseudonym(source: str) -> bool:
    """Whether a manifest key is a pseudonym (no real path to look at on disk).

    Args:
        source: a manifest key.
    """
    return PSEUDONYM_MARK in source


def shown_source(source: Optional[str]) -> Optional[str]:
    """A manifest key as shown to people: the (redacted) path without the pseudonym.

    Args:
        source: a manifest key, or None.
    """
    if not source or PSEUDONYM_MARK not in source:
        return source
    return source[:source.rindex(PSEUDONYM_MARK)]


def is_under(source: str, root: str) -> bool:
    """Whether manifest key ``source`` is ``root`` or lies below it (both as shown).

    Args:
        source: a manifest key.
        root: a resolved path (redacted like the keys when they are).
    """
    path = shown_source(source) or ""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def find_row(manifest: Any, path: str | os.PathLike, source: str, may_write: Callable[[Any], bool]) -> Any:
    """The manifest row of ``source`` (:func:`source_key` of ``path``). When there is none but a row
    keyed by the real path exists (made before ``ingest.redact_pii`` was turned on), that row is
    re-keyed to ``source`` first, so the name's PII leaves the manifest -- if ``may_write(row)``.

    Args:
        manifest: the manifest (``get``, ``rename``).
        path: the file.
        source: its key.
        may_write: whether the caller may change a row (the tenant guard).
    """
    rec = manifest.get(source)
    real = str(Path(path).resolve())
    if rec is None and source != real:
        old = manifest.get(real)
        if old is not None and may_write(old) and manifest.rename(real, source):
            rec = manifest.get(source)
    return rec
