"""Opening a store safely and keeping the manifest and the stores in agreement.

* :func:`open_manifest`: a manifest SQLite cannot read is moved aside and rebuilt from the stores
  (rows marked ``pending``, so the next ingest re-reads those files; vectors come from the cache).
* :func:`open_embedding_cache`: a corrupt cache is only a cache: moved aside, started afresh.
* :func:`check_store_writable`: refuse early (:class:`StoreNotWritableError`) on a read-only store.
* :func:`reconcile`: rows whose nodes are missing go back to ``pending``; untracked assets go.
* pruning (files that are gone) lives in :mod:`mmrag_li.ingest.pruning`.

``stores`` is a ``mmrag_li.stores.ModalityStores`` (or anything with its ``all_nodes``, ``count``
and ``delete_asset``); this module does not import the stores package.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Set

from mmrag_li.embeddings.cache import open_cache
from mmrag_li.ingest.errors import StoreNotWritableError
from mmrag_li.ingest.manifest import Manifest, ManifestCorruptError
from mmrag_li.ingest.report import DEFAULT_COLLECTION
from mmrag_li.schema import COLLECTIONS, collection_of

log = logging.getLogger("mmrag_li")


def _move_aside(path: Path, keep_sidecars: bool) -> Path:
    """Rename a damaged SQLite file to ``<name>.corrupt-<time>``; its -wal/-shm follow or go."""
    moved = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
    os.replace(path, moved)
    for suffix in ("-wal", "-shm"):
        side = Path(str(path) + suffix)
        if keep_sidecars and side.exists():
            os.replace(side, Path(str(moved) + suffix))
        elif not keep_sidecars:
            side.unlink(missing_ok=True)
    return moved


def open_manifest(path: str | Path, stores: Callable[[], Any], recovered: List[str]) -> Manifest:
    """Open the manifest; a corrupt one is moved aside and rebuilt from the stores.

    Args:
        path: the manifest file (``<store>/manifest.sqlite``).
        stores: returns the ``ModalityStores`` (called only when a rebuild is needed).
        recovered: a list that gets one line saying what was repaired, if anything.
    """
    path = Path(path)
    try:
        return Manifest(path)
    except ManifestCorruptError as exc:
        moved = _move_aside(path, keep_sidecars=True)
        log.warning("%s; moved to %s, rebuilding from the stores", exc, moved)
        manifest = Manifest(path)
        n = rebuild_manifest(manifest, stores())
        recovered.append(
            f"manifest {path} was corrupt ({exc.detail}): moved to {moved.name}; rebuilt {n} file "
            "record(s) from the stores as pending, so the next ingest re-reads them (vectors come "
            "from the embedding cache)")
        return manifest


def open_embedding_cache(path: Optional[str | Path], recovered: List[str]):
    """The embedding cache at ``path`` (``None``: no cache); a corrupt file is moved aside and an
    empty cache started (vectors are recomputed).

    Args:
        path: the cache file (``<store>/embedding_cache.sqlite``) or ``None`` for caching off.
        recovered: a list that gets one line saying what was repaired, if anything.
    """
    if not path:
        return open_cache(None)
    path = Path(path)
    try:
        cache = open_cache(path)
        cache._db.execute("SELECT COUNT(*) FROM vectors LIMIT 1").fetchone()
        return cache
    except sqlite3.DatabaseError as exc:
        moved = _move_aside(path, keep_sidecars=False)
        recovered.append(f"embedding cache {path} was corrupt ({exc}): moved to {moved.name}; "
                         "started an empty cache (vectors are recomputed)")
        log.warning(recovered[-1])
        return open_cache(path)


def check_store_writable(store_dir: str | Path) -> None:
    """Fail before changing anything when the store cannot be written (read-only mount,
    permissions): a clear message instead of a half-written batch.

    Args:
        store_dir: the store directory (created if missing).

    Raises:
        StoreNotWritableError: naming the directory or file that cannot be written.
    """
    store_dir = Path(store_dir)
    try:
        store_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreNotWritableError(
            f"cannot create store directory {store_dir}: {exc.strerror or exc}; nothing was changed") from None
    for d in [store_dir] + [store_dir / s for s in ("lancedb", "blobs")]:
        if not d.is_dir():
            continue
        try:
            with tempfile.TemporaryFile(dir=d, prefix=".write-test-"):
                pass
        except OSError as exc:
            raise StoreNotWritableError(
                f"store directory {d} is not writable ({exc.strerror or exc}); nothing was changed. "
                "Fix its permissions or pass another --store") from None
    for f in (store_dir / "manifest.sqlite", store_dir / "embedding_cache.sqlite"):
        if f.exists() and not os.access(f, os.W_OK):
            raise StoreNotWritableError(f"{f} is read-only; nothing was changed")


def rebuild_manifest(manifest: Manifest, stores: Any) -> int:
    """Add rows for every (source, asset) found in the stores, marked pending (their completeness
    cannot be known), with the stored node ids, so nothing stored becomes untracked; returns the
    number of rows. Nodes whose ``source`` was redacted (PII in the path) get no row: the next
    ``reconcile`` deletes them and the file is read again.

    Args:
        manifest: an empty manifest.
        stores: the ``ModalityStores`` to read.
    """
    from mmrag_li.enrich.pii import PLACEHOLDERS

    rows: Dict[str, Dict[str, Any]] = {}
    for c in COLLECTIONS:
        for node in stores.all_nodes(c):
            m = node.metadata
            src, aid = m.get("source"), m.get("asset_id")
            if not src or not aid or any(p in src for p in PLACEHOLDERS.values()):
                continue  # a source redacted by ingest.redact_pii is no path: reconcile drops it, ingest re-reads
            row = rows.setdefault(src, {"asset": aid, "ids": set(), "collection": m.get("collection")})
            if row["asset"] == aid:
                row["ids"].add(node.node_id)
    manifest.mark_pending([(src, r["asset"], -1, -1.0, sorted(r["ids"]), r["collection"])
                           for src, r in rows.items()])
    return len(rows)


def drop_unshared(manifest: Manifest, stores: Any, source: str, assets: Iterable[str]) -> None:
    """Delete the nodes of each asset in ``assets`` unless a file other than ``source`` still
    uses it (the same bytes under two paths are one asset).

    Args:
        manifest: the manifest.
        stores: the ``ModalityStores``.
        source: the file on whose behalf the assets are dropped.
        assets: asset ids that ``source`` no longer needs.
    """
    for old in assets:
        if not any(r.source != source for r in manifest.by_asset(old)):
            stores.delete_asset(old)


def _unique_ids(expected: Dict[str, Set[str]]) -> Dict[str, Dict[str, int]]:
    """asset -> collection -> number of distinct node ids (ids are '<asset>:<modality>...')."""
    out: Dict[str, Dict[str, int]] = {}
    for asset, ids in expected.items():
        per: Dict[str, int] = {}
        for nid in ids:
            parts = nid.split(":")
            coll = collection_of(parts[1] if len(parts) > 1 else "text")
            per[coll] = per.get(coll, 0) + 1
        out[asset] = per
    return out


def reconcile(manifest: Manifest, stores: Any, guard: Any = None) -> List[str]:
    """Make the manifest and the stores agree before a run (after a lost table, a restored
    backup, a manifest rebuilt elsewhere). Cheap when they agree (row counts only); else rows
    whose nodes are missing go back to pending and untracked assets are deleted. Returns what
    was done, one line each.

    Args:
        manifest: the manifest.
        stores: the ``ModalityStores``.
        guard: the tenant guard (``CollectionGuard``): rows and nodes of collections it hides are
            left alone. None = every collection.
    """
    def allowed(collection: Any) -> bool:
        return guard is None or guard.allows_collection(collection or DEFAULT_COLLECTION)

    want: Dict[str, int] = {c: 0 for c in COLLECTIONS}
    for ids in _unique_ids(manifest.expected_nodes()).values():
        for c, n in ids.items():
            want[c] += n
    have = stores.count()
    pending = manifest.counts().get("pending", 0)
    if all(have.get(c, 0) == want[c] for c in COLLECTIONS) or (
            pending and all(have.get(c, 0) >= want[c] for c in COLLECTIONS)):
        return []
    stored: Dict[str, Set[str]] = {}
    hidden: Set[str] = set()
    for c in COLLECTIONS:
        for node in stores.all_nodes(c):
            stored.setdefault(node.metadata.get("asset_id") or "", set()).add(node.node_id)
            if not allowed(node.metadata.get("collection")):
                hidden.add(node.metadata.get("asset_id") or "")
    notes: List[str] = []
    redo = [rec for rec in manifest.all() if rec.status in ("done", "failed") and rec.node_ids and allowed(rec.collection)
            and not set(rec.node_ids) <= stored.get(rec.asset_id or "", set())]
    if redo:
        manifest.mark_pending([(r.source, r.asset_id, -1, -1.0, r.node_ids, r.collection, r.config) for r in redo])
        notes.append(f"{len(redo)} file(s) had nodes missing from the stores: marked for re-reading")
    known = manifest.known_assets()
    orphans = [a for a in stored if a and a not in known and a not in hidden]
    for a in orphans:
        stores.delete_asset(a)
    if orphans:
        notes.append(f"deleted the nodes of {len(orphans)} asset(s) that no manifest row tracks")
    for n in notes:
        log.warning("reconcile: %s", n)
    return notes


__all__ = ["open_manifest", "open_embedding_cache", "check_store_writable", "rebuild_manifest", "drop_unshared",
           "reconcile"]
