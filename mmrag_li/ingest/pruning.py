"""``--prune``: forget files that are gone -- and only those that are known to be gone.

A stored file is pruned only when the folder it was in was listed successfully and the file was
not in it (and, for a real path, it does not exist). Nothing is pruned under

* a root that is missing (a moved folder, an unmounted disk, a typo),
* a root folder that lists no file at all while the store has files under it (an empty mount
  point looks exactly like that),
* a folder the walk could not read (permission denied, I/O error) or a symbolic link it did not
  follow,

and each of these is reported (``{"path", "reason"}``) instead. Rows of collections the tenant
guard hides are never touched. The pruned assets' nodes go (unless another file shares them),
then their blobs (unless a stored node still uses them).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

from mmrag_li.ingest.gc import drop_asset_blobs
from mmrag_li.ingest.recovery import drop_unshared
from mmrag_li.ingest.report import DEFAULT_COLLECTION, display_path
from mmrag_li.ingest.sources import is_pseudonym, is_under, redacted_path, source_key

log = logging.getLogger("mmrag_li")

__all__ = ["Walk", "PruneResult", "walk_paths", "plan_prune", "prune_walked", "prune"]


@dataclass
class Walk:
    """What one walk of the ingested paths found.

    Args:
        paths: the paths as given.
        files: every file the walk yielded.
        failures: ``(path, reason)`` of folders it could not list and links it did not follow.
        missing: the given paths that do not exist.
    """

    paths: List[str]
    files: List[Path] = field(default_factory=list)
    failures: List[Tuple[str, str]] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)


@dataclass
class PruneResult:
    """What a prune did.

    Args:
        pruned: files forgotten (their nodes deleted unless shared).
        skipped: ``{"path", "reason"}`` per root or folder under which nothing was pruned.
        blobs_removed: blob files removed with the pruned assets.
        blob_bytes_freed: their size.
    """

    pruned: int = 0
    skipped: List[Dict[str, str]] = field(default_factory=list)
    blobs_removed: int = 0
    blob_bytes_freed: int = 0


def walk_paths(paths: Sequence[str | os.PathLike], settings: Any) -> Walk:
    """Walk ``paths`` as ingest does (``DirectoryReader.iter_files``: globs, no symlinks followed).

    Args:
        paths: files and folders.
        settings: the settings (``ingest.*``).
    """
    from mmrag_li.readers.directory import DirectoryReader

    walker = DirectoryReader.from_defaults(settings)  # the walk needs no models
    walk = Walk(paths=[os.fsdecode(p) if isinstance(p, bytes) else os.fspath(p) for p in paths])
    for p in walk.paths:
        if not os.path.lexists(p):
            walk.missing.append(p)
            continue
        walk.files.extend(walker.iter_files(p))
    walk.failures = [(str(err.path), str(err.reason)) for err in walker.failures]
    return walk


def plan_prune(rows: Sequence[Any], walk: Walk, ingest: Any = None) -> Tuple[List[Any], List[Dict[str, str]]]:
    """(rows to prune, ``{"path", "reason"}`` for every root/folder under which rows were kept).

    Args:
        rows: the manifest rows the caller may change (tenant guard applied).
        walk: the walk of the roots (:func:`walk_paths`).
        ingest: the ``IngestConfig`` (manifest keys are redacted with ``redact_pii``); None = plain.
    """
    redact = bool(getattr(ingest, "redact_pii", False))
    regions = getattr(ingest, "pii_phone_regions", None)

    def shown(p: str) -> str:
        return redacted_path(p, regions) if redact else p

    walked: Set[str] = {source_key(f, ingest) for f in walk.files}
    walked_dirs = {str(Path(f).resolve().parent) for f in walk.files}
    skipped: List[Dict[str, str]] = []
    roots: List[str] = []
    reasons = {p: reason for p, reason in walk.failures}
    for raw in walk.paths:
        real = str(Path(raw).resolve())
        under = [r for r in rows if is_under(r.source, shown(real))]
        root_failure = reasons.get(real) or reasons.get(os.path.abspath(raw))
        if root_failure and under:
            skipped.append({"path": display_path(raw), "reason": f"{root_failure}: none of the {len(under)} stored "
                                                                 "file(s) under it were pruned"})
        elif raw in walk.missing:
            skipped.append({"path": display_path(raw), "reason": (
                f"no such file or directory (moved, or a disk not mounted?): none of the {len(under)} stored "
                "file(s) under it were pruned")})
        elif os.path.isdir(real) and under and not any(d == real or d.startswith(real.rstrip(os.sep) + os.sep)
                                                       for d in walked_dirs):
            skipped.append({"path": display_path(raw), "reason": (
                f"folder lists no file while {len(under)} stored file(s) are under it (an empty mount point?): "
                "nothing was pruned; to prune them, ingest the folder above it with --prune, or `mmrag delete` them")})
        else:
            roots.append(shown(real))
    failed = [(shown(os.path.abspath(p)), p, reason) for p, reason in walk.failures]
    kept: Dict[str, int] = {}
    doomed = []
    for rec in rows:
        if not any(is_under(rec.source, root) for root in roots) or rec.source in walked:
            continue
        blocker = next((f for f in failed if is_under(rec.source, f[0])), None)
        if blocker is not None:
            kept[blocker[1]] = kept.get(blocker[1], 0) + 1
            continue
        if not is_pseudonym(rec.source) and os.path.lexists(rec.source):
            continue  # still there, only not walked (excluded by ingest.exclude, say)
        doomed.append(rec)
    for path, n in kept.items():
        skipped.append({"path": display_path(path), "reason": f"{reasons[path]}: the {n} stored file(s) under it "
                                                              "were not pruned"})
    return doomed, skipped


def prune_walked(manifest: Any, stores: Any, walk: Walk, ingest: Any = None, guard: Any = None,
                 blob_root: Optional[str | Path] = None) -> PruneResult:
    """Prune what :func:`plan_prune` says is gone: delete each file's assets (unless another file
    still uses them), its manifest row, then the blobs no stored node references any more.

    Args:
        manifest: the manifest.
        stores: the unguarded ``ModalityStores`` (rows are chosen through ``guard``; shared blobs
            are checked against every tenant's nodes).
        walk: the walk of the roots.
        ingest: the ``IngestConfig``.
        guard: the tenant guard (``CollectionGuard``); rows it hides are never pruned. None = all.
        blob_root: the blob store folder; None = blobs are left for ``gc``.
    """
    rows = manifest.all()
    if guard is not None:
        rows = [r for r in rows if guard.allows_collection(r.collection or DEFAULT_COLLECTION)]
    doomed, skipped = plan_prune(rows, walk, ingest)
    result = PruneResult(skipped=skipped)
    gone_nodes = []
    for rec in doomed:
        stale = [a for a in rec.stale_assets() if not any(o.source != rec.source for o in manifest.by_asset(a))]
        if blob_root is not None and stale:
            gone_nodes.extend(n for nodes in stores.get_assets_nodes(stale).values() for n in nodes)
        drop_unshared(manifest, stores, rec.source, rec.stale_assets())
        manifest.remove(rec.source)
        result.pruned += 1
    if blob_root is not None and gone_nodes:
        result.blobs_removed, result.blob_bytes_freed = drop_asset_blobs(stores, blob_root, gone_nodes)
    for skip in skipped:
        log.warning("prune skipped %s: %s", skip["path"], skip["reason"])
    return result


def prune(manifest: Any, stores: Any, roots: Sequence[str | os.PathLike], settings: Any = None, guard: Any = None,
          blob_root: Optional[str | Path] = None) -> int:
    """Walk ``roots`` and prune the files known to be gone (:func:`prune_walked`); how many were
    pruned (use :func:`walk_paths` + :func:`prune_walked` for what was skipped and why).

    Args:
        manifest: the manifest.
        stores: the unguarded ``ModalityStores``.
        roots: the folders/files that were ingested.
        settings: the settings (walk globs, ``ingest.redact_pii``); None = defaults.
        guard: the tenant guard; None = every collection.
        blob_root: the blob store folder; None = blobs are left for ``gc``.
    """
    if settings is None:
        from mmrag_li.config import Settings

        settings = Settings()
    return prune_walked(manifest, stores, walk_paths(roots, settings), settings.ingest, guard, blob_root).pruned
