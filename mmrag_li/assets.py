"""Finding a store and an asset in it: the rules every client (CLI, server, facade) shares.

- A store exists when its directory holds the manifest (``manifest.sqlite``). Read-only commands
  never create one: :func:`require_store` raises :class:`StoreNotFoundError` instead.
- An asset is named by its full id or by an id prefix of at least :data:`MIN_ASSET_PREFIX` hex
  characters that matches exactly one asset (:func:`resolve_asset_id`). Shorter or ambiguous
  prefixes are usage errors, so nobody can enumerate assets by trying ``0``-``f``.

The candidates handed to :func:`resolve_asset_id` must already be limited to what the caller may
see (``retrieval.allowed_collections``): the error for an ambiguous prefix lists matching ids.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Iterable

from mmrag_li.errors import MMRAGError, UsageError

MANIFEST_NAME = "manifest.sqlite"
MIN_ASSET_PREFIX = 8
_HEX = frozenset(string.hexdigits.lower())

__all__ = ["UsageError", "MANIFEST_NAME", "MIN_ASSET_PREFIX", "StoreNotFoundError", "AssetNotFoundError", "AssetIdError",
           "store_exists", "require_store", "resolve_asset_id"]


class StoreNotFoundError(MMRAGError):
    """No store at ``store_dir`` (no directory, or no manifest in it). Nothing was created."""

    def __init__(self, store_dir: str | Path):
        self.store_dir = str(store_dir)
        super().__init__(f"no store at {self.store_dir}: run `mmrag ingest` first "
                         "(or point --store / $MMRAG_STORE at an existing store)")


class AssetNotFoundError(MMRAGError):
    """No ingested file or asset id matches what was asked for."""

    def __init__(self, text: str, where: str = ""):
        self.text = text
        super().__init__(f"{text!r} is not an ingested file or asset id{' in ' + where if where else ''}")


class AssetIdError(UsageError):
    """An asset id prefix that is too short or matches more than one asset."""


def store_exists(store_dir: str | Path) -> bool:
    """Whether ``store_dir`` holds a store (its manifest). Creates nothing.

    Args:
        store_dir: the store directory (``--store``, ``$MMRAG_STORE`` or ``./.mmrag``).
    """
    return (Path(store_dir) / MANIFEST_NAME).is_file()


def require_store(store_dir: str | Path) -> Path:
    """Return ``store_dir`` as a Path, or raise :class:`StoreNotFoundError`; creates nothing.

    Args:
        store_dir: the store directory a read-only command (search, query, inspect, stats, delete)
            is about to open.
    """
    if not store_exists(store_dir):
        raise StoreNotFoundError(store_dir)
    return Path(store_dir)


def resolve_asset_id(candidates: Iterable[str], text: str) -> str:
    """The one asset id among ``candidates`` that ``text`` names (full id or unique prefix).

    Args:
        candidates: asset ids the caller may see (already filtered by collection).
        text: a full asset id, or a prefix of at least :data:`MIN_ASSET_PREFIX` hex characters;
            case and surrounding spaces are ignored.

    Raises:
        AssetIdError: ``text`` is a hex prefix shorter than :data:`MIN_ASSET_PREFIX`, or it
            matches more than one candidate (the message lists them).
        AssetNotFoundError: ``text`` is not hex, or matches no candidate.
    """
    ids = {c for c in candidates if c}
    raw = text
    text = (text or "").strip().lower()
    if text in ids:
        return text
    if not text or not set(text) <= _HEX:
        raise AssetNotFoundError(raw)
    if len(text) < MIN_ASSET_PREFIX:
        raise AssetIdError(f"asset id prefix {raw!r} is too short: give at least {MIN_ASSET_PREFIX} hex "
                           "characters (see `mmrag inspect FILE` for the full id)")
    matches = sorted(c for c in ids if c.lower().startswith(text))
    if not matches:
        raise AssetNotFoundError(raw)
    if len(matches) > 1:
        shown = ", ".join(matches[:5]) + (f", … ({len(matches) - 5} more)" if len(matches) > 5 else "")
        raise AssetIdError(f"asset id prefix {raw!r} is ambiguous: it matches {len(matches)} assets "
                           f"({shown}); give more characters")
    return matches[0]
