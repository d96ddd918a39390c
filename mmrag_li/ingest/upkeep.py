"""Store upkeep on the facade: ``reconcile``, ``prune``, ``delete`` and ``gc``, all limited by the tenant guard.

:class:`StoreUpkeep` is a mixin of ``mmrag_li.pipeline.MultiModalRAG``; it uses the pipeline's
``settings``, ``manifest``, ``stores``, ``guard``, ``guarded_stores``, ``guarded_manifest`` and
``blob_store``. Writes touch only collections ``retrieval.allowed_collections`` allows; deleted data
is removed from the blob store and (unless ``store.keep_versions``) from old table versions too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from mmrag_li.ingest.gc import collect_garbage, drop_asset_blobs, purge_quietly
from mmrag_li.ingest.pruning import PruneResult, prune_walked, walk_paths
from mmrag_li.ingest.recovery import reconcile

__all__ = ["StoreUpkeep"]


class StoreUpkeep:
    """Mixin: keeping the store consistent and removed data removed (see the module docstring)."""

    settings: Any
    manifest: Any
    stores: Any
    guard: Any
    guarded_stores: Any
    guarded_manifest: Any
    blob_store: Any

    def reconcile(self) -> List[str]:
        """Make the manifest and the stores agree (``ingest.recovery.reconcile``) for the collections
        the guard allows; returns what was done."""
        return reconcile(self.manifest, self.stores, guard=self.guard)

    def prune_report(self, roots: Sequence[str | Path]) -> PruneResult:
        """Forget the files under ``roots`` known to be gone (``ingest.pruning``); a missing root, an
        empty mount point or an unreadable folder prunes nothing under it and is listed in
        ``.skipped``. Blobs and (unless ``store.keep_versions``) old table versions go too.

        Args:
            roots: folders/files that were ingested.
        """
        result = prune_walked(self.manifest, self.stores, walk_paths(roots, self.settings), self.settings.ingest,
                              self.guard, self.blob_store.root)
        if result.pruned and not self.settings.store.keep_versions:
            purge_quietly(self.stores, self.manifest)
        return result

    def prune(self, roots: Sequence[str | Path]) -> int:
        """:meth:`prune_report`; returns how many files were pruned.

        Args:
            roots: folders/files that were ingested.
        """
        return self.prune_report(roots).pruned

    def delete(self, asset_id: str) -> int:
        """Delete an asset's nodes, manifest rows and the blobs no other stored node uses, then (unless
        ``store.keep_versions``) the old table versions that still hold its rows; returns the number
        of nodes deleted (0 for an asset outside ``retrieval.allowed_collections``, exactly as for a
        missing one).

        Args:
            asset_id: a full asset id (see ``resolve_asset``).
        """
        nodes = self.guarded_stores.get_asset_nodes(asset_id)
        n = self.guarded_stores.delete_asset(asset_id)
        for rec in self.guarded_manifest.by_asset(asset_id):
            self.manifest.remove(rec.source)
        if nodes:
            drop_asset_blobs(self.stores, self.blob_store.root, nodes)
        if n and not self.settings.store.keep_versions:
            purge_quietly(self.stores, self.manifest)
        return n

    def gc(self, grace_s: Optional[float] = None) -> Dict[str, Any]:
        """``mmrag gc``: remove blobs no stored node references and old table versions
        (``ingest.gc.collect_garbage``); counts and bytes freed.

        Args:
            grace_s: keep unreferenced blobs younger than this (default ``store.gc_grace_s``).
        """
        grace = self.settings.store.gc_grace_s if grace_s is None else grace_s
        return collect_garbage(self.manifest, self.stores, self.blob_store.root, grace_s=grace)
