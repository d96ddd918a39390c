"""Removed data stays removed: blobs no stored node references, and old table versions.

* :func:`drop_asset_blobs` -- after an asset's nodes are deleted (``delete``, ``--prune``): remove the
  originals, renders and thumbnails they referenced, unless a node still stored (the same bytes
  in another collection or under another path) references them too.
* :func:`purge_versions` -- LanceDB keeps every old table version, and a deleted or replaced row
  stays in its data file until the fragment is rewritten: rewrite the fragments holding deleted
  rows and drop every old version (``ModalityStores.purge_versions``; a backend without versions
  does nothing).
* :func:`collect_garbage` -- ``mmrag gc``: both of the above for the whole store, plus leftovers of
  interrupted writes, the manifest's write-ahead log, counts and bytes freed.

Blobs are matched by their place in the blob store (``<kind>/<xx>/<name>``), not by absolute path,
so a store opened through another path (a relative ``store_dir``, a moved folder) is safe. Nodes
are read from the unguarded stores: a blob another tenant's node uses is never removed.
``stores`` is a ``ModalityStores`` (duck-typed; this module does not import the stores package).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Dict, Iterable, Optional, Sequence, Set, Tuple

from llama_index.core.schema import BaseNode
from llama_index.core.vector_stores.types import FilterOperator, MetadataFilter, MetadataFilters

from mmrag_li.schema import COLLECTIONS

log = logging.getLogger("mmrag_li")

__all__ = ["blob_ref", "node_blob_refs", "drop_asset_blobs", "purge_versions", "purge_quietly", "collect_garbage",
           "remove_blobs"]


def blob_ref(path: Any) -> Optional[str]:
    """``"<kind>/<xx>/<name>"`` for a path into a blob store (``<root>/<kind>/<key[:2]>/<key><suffix>``),
    else None.

    Args:
        path: any value (a metadata field).
    """
    if not isinstance(path, (str, os.PathLike)):
        return None
    parts = Path(path).parts
    if len(parts) < 3 or len(parts[-2]) != 2 or not parts[-1].startswith(parts[-2]):
        return None
    return "/".join(parts[-3:])


def node_blob_refs(node: BaseNode) -> Set[str]:
    """Blob references of one node: ``image_path`` and every metadata value that points into a blob
    store (``blob_path``, ``thumbnail_path``, ...).

    Args:
        node: a stored node.
    """
    values = list((node.metadata or {}).values()) + [getattr(node, "image_path", None)]
    return {ref for v in values for ref in [blob_ref(v)] if ref}


def _hash_filters(hashes: Sequence[str]) -> MetadataFilters:
    return MetadataFilters(filters=[MetadataFilter(key="content_hash", value=list(hashes), operator=FilterOperator.IN)])


def _refs_of_hashes(stores: Any, hashes: Set[str]) -> Set[str]:
    """Blob references of every stored node (all collections, all tenants) made from ``hashes``."""
    refs: Set[str] = set()
    if not hashes:
        return refs
    flt = _hash_filters(sorted(hashes))
    for c in COLLECTIONS:
        for node in stores.vector_store(c).get_nodes(filters=flt):
            refs |= node_blob_refs(node)
    return refs


def remove_blobs(root: str | Path, refs: Iterable[str]) -> Tuple[int, int]:
    """Delete the blobs ``refs`` under ``root`` (and folders left empty); (files, bytes) removed.

    Args:
        root: the blob store folder (``<store>/blobs``).
        refs: ``"<kind>/<xx>/<name>"`` references.
    """
    root = Path(root)
    n = size = 0
    for ref in sorted(set(refs)):
        p = root / ref
        try:
            b = p.stat().st_size
            p.unlink()
        except FileNotFoundError:
            continue
        n, size = n + 1, size + b
        try:
            p.parent.rmdir()  # only when empty
        except OSError:
            pass
    return n, size


def drop_asset_blobs(stores: Any, blob_root: str | Path, nodes: Sequence[BaseNode]) -> Tuple[int, int]:
    """After ``nodes`` (an asset's, already deleted from the stores) are gone: remove the blobs they
    referenced that no stored node references any more; (files, bytes) removed.

    Args:
        stores: the unguarded ``ModalityStores`` (every tenant's nodes count as references).
        blob_root: the blob store folder.
        nodes: the deleted nodes (read before deleting them).
    """
    refs: Set[str] = set()
    hashes: Set[str] = set()
    for node in nodes:
        refs |= node_blob_refs(node)
        h = (node.metadata or {}).get("content_hash")
        if h:
            hashes.add(str(h))
    if not refs:
        return 0, 0
    return remove_blobs(blob_root, refs - _refs_of_hashes(stores, hashes))


def purge_versions(stores: Any) -> Dict[str, Any]:
    """Rewrite fragments holding deleted rows and drop every old table version (LanceDB), so a
    deleted or replaced row is in no file any more; ``{"versions_removed", "bytes_freed"}``.

    Args:
        stores: the ``ModalityStores`` (a backend without ``purge_versions`` does nothing).
    """
    fn = getattr(stores, "purge_versions", None)
    if fn is None:
        return {"versions_removed": 0, "bytes_freed": 0}
    per = fn() or {}
    return {"versions_removed": sum(int(v.get("versions_removed", 0)) for v in per.values()),
            "bytes_freed": sum(int(v.get("bytes_freed", 0)) for v in per.values())}


def purge_quietly(stores: Any, manifest: Any = None) -> float:
    """:func:`purge_versions` (and the manifest's WAL truncated) after an ingest, delete or prune;
    a failure is logged, not raised (``mmrag gc`` retries it). Seconds spent.

    Args:
        stores: the ``ModalityStores``.
        manifest: the manifest (``scrub``), or None.
    """
    t = time.perf_counter()
    try:
        purge_versions(stores)
        if manifest is not None and hasattr(manifest, "scrub"):
            manifest.scrub()
    except Exception as exc:  # the data is deleted already; only its old copies linger
        log.warning("removing old table versions failed (%s: %s); `mmrag gc` retries it", type(exc).__name__, exc)
    return time.perf_counter() - t


def _blob_files(root: Path) -> Iterable[Tuple[str, Path]]:
    if not root.is_dir():
        return
    for kind in sorted(root.iterdir()):
        if not kind.is_dir():
            continue
        for sub in sorted(kind.iterdir()):
            if not sub.is_dir():
                continue
            for f in sorted(sub.iterdir()):
                if f.is_file():
                    yield f"{kind.name}/{sub.name}/{f.name}", f


def collect_garbage(manifest: Any, stores: Any, blob_root: str | Path, grace_s: float = 900.0,
                    versions: bool = True) -> Dict[str, Any]:
    """``mmrag gc``: remove blobs no stored node references (originals, renders, thumbnails, and
    leftovers of interrupted writes) that are older than ``grace_s``, drop old table versions, and
    truncate the manifest's write-ahead log. Nothing is removed when the stores cannot be read.

    Returns ``{"blobs_removed", "blob_bytes_freed", "blobs_kept_recent", "versions_removed",
    "version_bytes_freed", "bytes_freed", "seconds"}``.

    Args:
        manifest: the manifest (its pending rows' assets keep their blobs: an ingest may be running).
        stores: the unguarded ``ModalityStores``.
        blob_root: the blob store folder (``<store>/blobs``).
        grace_s: unreferenced blobs modified less than this many seconds ago are kept.
        versions: also drop old table versions (:func:`purge_versions`).
    """
    t0 = time.perf_counter()
    root = Path(blob_root)
    refs: Set[str] = set()
    for c in COLLECTIONS:  # every node, every tenant; an unreadable store raises before anything goes
        for node in stores.all_nodes(c):
            refs |= node_blob_refs(node)
    pending = tuple(r.asset_id for r in manifest.all("pending") if r.asset_id)
    now = time.time()
    doomed, kept_recent = [], 0
    for ref, path in _blob_files(root):
        if ref in refs or (pending and path.name.startswith(pending)):
            continue
        try:
            if now - path.stat().st_mtime < grace_s:
                kept_recent += 1
                continue
        except FileNotFoundError:
            continue
        doomed.append(ref)
    removed, freed = remove_blobs(root, doomed)
    out: Dict[str, Any] = {"blobs_removed": removed, "blob_bytes_freed": freed, "blobs_kept_recent": kept_recent,
                           "versions_removed": 0, "version_bytes_freed": 0}
    if versions:
        v = purge_versions(stores)
        out.update(versions_removed=v["versions_removed"], version_bytes_freed=v["bytes_freed"])
    if hasattr(manifest, "scrub"):
        manifest.scrub()
    out["bytes_freed"] = out["blob_bytes_freed"] + out["version_bytes_freed"]
    out["seconds"] = round(time.perf_counter() - t0, 3)
    log.info("gc: %d blob(s) (%d bytes) and %d old table version(s) (%d bytes) removed", removed, freed,
             out["versions_removed"], out["version_bytes_freed"])
    return out
