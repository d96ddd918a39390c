"""API keys -> the collections a caller may see, enforced through the library's ``CollectionGuard``.

``server.api_keys`` maps a key *reference* to collections: an environment variable that holds the
key (``MMRAG_KEY_TEAM_A: [team-a]``) or ``sha256:<hex digest of the key>``; ``"*"`` = every
collection. Keys are never written in the config in clear. A request presents its key as
``X-API-Key: KEY``, ``Authorization: Bearer KEY`` or the ``mmrag_key`` cookie (set by the web page,
so ``<img>`` requests for thumbnails carry it). With no keys configured every request gets the
configured guard (``retrieval.allowed_collections``); with keys, a missing or unknown key is a 401
and a known key narrows that guard to its collections.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from dataclasses import dataclass
from typing import Any, List, Mapping, Optional, Sequence, Tuple

from mmrag_li.guard import CollectionGuard

log = logging.getLogger("mmrag_li.server")

ALL = "*"
COOKIE = "mmrag_key"
HEADER = "x-api-key"

__all__ = ["ALL", "COOKIE", "HEADER", "KeyMap", "key_digest", "presented_key"]


def key_digest(key: str) -> str:
    """The ``sha256:<hex>`` reference of an API key (what to write in ``server.api_keys``).

    Args:
        key: the key in clear.
    """
    return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()


def presented_key(headers: Mapping[str, str], cookies: Mapping[str, str]) -> Optional[str]:
    """The key a request presents (``X-API-Key``, ``Authorization: Bearer``, cookie), or None.

    Args:
        headers: the request headers (case-insensitive mapping).
        cookies: the request cookies.
    """
    key = headers.get(HEADER)
    if not key:
        auth = headers.get("authorization") or ""
        if auth[:7].lower() == "bearer ":
            key = auth[7:]
    if not key:
        key = cookies.get(COOKIE)
    key = (key or "").strip()
    return key or None


@dataclass(frozen=True)
class KeyMap:
    """The resolved ``server.api_keys``: digests of the keys and the collections each may see.

    Args:
        entries: ``(sha256 digest bytes, collections)`` pairs; a collection list holding ``"*"`` = all.
        enabled: whether keys are required (True when ``server.api_keys`` is not empty, even if
            none of its environment variables is set: then every request is refused).
    """

    entries: Tuple[Tuple[bytes, Tuple[str, ...]], ...] = ()
    enabled: bool = False

    @classmethod
    def from_config(cls, api_keys: Optional[Mapping[str, Sequence[str]]],
                    environ: Optional[Mapping[str, str]] = None) -> "KeyMap":
        """Resolve ``server.api_keys`` (environment variable names are read now, once).

        Args:
            api_keys: key reference -> collections (see the module docstring).
            environ: where environment variables are read (default ``os.environ``).
        """
        environ = os.environ if environ is None else environ
        entries: List[Tuple[bytes, Tuple[str, ...]]] = []
        for ref, collections in (api_keys or {}).items():
            cols = tuple(str(c) for c in collections or ())
            if ref.startswith("sha256:"):
                try:
                    digest = bytes.fromhex(ref[7:])
                except ValueError:
                    digest = b""
                if len(digest) != 32:
                    log.warning("server.api_keys: %r is not sha256:<64 hex digits>; entry ignored", ref)
                    continue
            else:
                value = environ.get(ref, "")
                if not value:
                    log.warning("server.api_keys: environment variable %s is not set; that key is disabled", ref)
                    continue
                digest = hashlib.sha256(value.encode("utf-8")).digest()
            entries.append((digest, cols))
        return cls(tuple(entries), enabled=bool(api_keys))

    def collections_for(self, key: Optional[str]) -> Optional[Tuple[str, ...]]:
        """The collections ``key`` may see (``("*",)``-style lists included as given), or None
        for a missing or unknown key. Every entry is compared in constant time.

        Args:
            key: the presented key (or None).
        """
        if not key:
            return None
        digest = hashlib.sha256(key.encode("utf-8")).digest()
        found: Optional[Tuple[str, ...]] = None
        for ref, cols in self.entries:
            if hmac.compare_digest(ref, digest) and found is None:
                found = cols
        return found

    def guard(self, base: CollectionGuard, key: Optional[str]) -> Optional[CollectionGuard]:
        """The guard for a request: ``base`` without keys; ``base`` narrowed to the key's
        collections with keys; None when keys are required and ``key`` is missing or unknown.

        Args:
            base: the configured guard (``CollectionGuard.from_config(settings)``).
            key: the presented key.
        """
        if not self.enabled:
            return base
        cols = self.collections_for(key)
        if cols is None:
            return None
        return base if ALL in cols else base.narrow(list(cols))


def describe(guard: CollectionGuard) -> Any:
    """The collections a guard allows, for JSON: None (all) or a sorted list.

    Args:
        guard: the guard.
    """
    return None if guard.unrestricted else sorted(guard.allowed or ())
