"""The unit of crash safety: one batch of read files is embedded and committed in the order
write-new -> delete-old -> mark-done.

A kill at any instant leaves ``pending`` manifest rows that the next run completes: never
duplicates (upserts by deterministic node id), never orphans (replaced asset ids stay in the
manifest until their nodes are deleted), and a query never sees a gap (old nodes go only after
the new ones are stored). The manifest and the stores are written from one thread only.
"""

from __future__ import annotations

import errno
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Sequence, Set

from llama_index.core.schema import BaseNode, ImageNode

from mmrag_li.ingest.embed import CachedEmbedder
from mmrag_li.ingest.errors import IngestAborted
from mmrag_li.ingest.manifest import FileRecord, Manifest
from mmrag_li.ingest.recovery import drop_unshared
from mmrag_li.ingest.report import IngestReport, display_path, node_warnings
from mmrag_li.ingest.transforms import scoped_asset_id
from mmrag_li.ingest.writer import StoreWriter, by_collection


@dataclass
class FileItem:
    """One file of a run, as found by the walk.

    Args:
        path: the path as walked.
        source: the resolved path (the manifest key).
        size: size in bytes at the walk.
        mtime: mtime at the walk.
        rec: the file's manifest row, if any.
        collection: the collection of this run.
        config: fingerprint of the settings that shape nodes.
        content_hash: set by the worker as soon as it is known.
        budget_s: reading time allowed, once known (PDFs: by page count).
    """

    path: Path
    source: str
    size: int
    mtime: float
    rec: Optional[FileRecord]
    collection: str
    config: Optional[str] = None
    content_hash: Optional[str] = None
    budget_s: Optional[float] = None


@dataclass
class PendingFile:
    """A read file waiting for its batch to be committed.

    Args:
        item: the file.
        asset_id: its collection-scoped asset id.
        nodes: the nodes to write (none for ``unchanged`` and ``duplicate``).
        node_ids: the node ids the manifest records for it.
        kind: ``new``, ``duplicate`` (same bytes stored under another path) or ``unchanged`` (only the mtime changed).
        cleanup: the asset may already have nodes in the store (redo after a crash, rebuild).
    """

    item: FileItem
    asset_id: str
    nodes: List[BaseNode]
    node_ids: List[str]
    kind: str = "new"
    cleanup: bool = False

    @property
    def source(self) -> str:
        """The file's resolved path."""
        return self.item.source


class BatchCommitter:
    """Commits batches and records failed files; owns every manifest and store write of a run.

    Args:
        manifest: the manifest.
        stores: the ``ModalityStores``.
        embedder: the ``CachedEmbedder`` (see ``CachedEmbedder.lazy``: models load on first use).
        store_dir: the store directory (named in recovery hints).
    """

    def __init__(self, manifest: Manifest, stores: Any, embedder: CachedEmbedder, store_dir: Path):
        self.manifest = manifest
        self.stores = stores
        self.embedder = embedder
        self.store_dir = Path(store_dir)
        self.writer = StoreWriter(stores=stores)

    def commit(self, batch: Sequence[PendingFile], report: IngestReport) -> None:
        """Embed, write, delete what is replaced, mark done; any store error becomes
        :class:`IngestAborted` with a recovery hint (the batch stays pending).

        Args:
            batch: the read files.
            report: the run's report (counts, stages, warnings).
        """
        try:
            self._commit(batch, report)
        except IngestAborted:
            raise
        except Exception as exc:
            hint = ""
            if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
                hint = " Free some disk space and run the same ingest again."
            elif "lance" in type(exc).__module__.lower() or "lance" in str(exc).lower():
                hint = (f" If a table under {self.store_dir / 'lancedb'} is damaged, move that <collection>.lance "
                        "folder aside and run the same ingest again: files whose nodes are missing are re-read.")
            raise IngestAborted(
                f"storing a batch of {len(batch)} file(s) failed: {type(exc).__name__}: {exc}. Batches committed "
                f"before are kept; these files stay pending and the next run redoes them.{hint}") from exc

    def _commit(self, batch: Sequence[PendingFile], report: IngestReport) -> None:
        for p in batch:
            if p.kind == "unchanged":
                self.manifest.touch(p.source, p.item.size, p.item.mtime)
        writes = [p for p in batch if p.kind != "unchanged"]
        if not writes:
            return
        self.manifest.mark_pending([(p.source, p.asset_id, p.item.size, p.item.mtime, p.node_ids, p.item.collection,
                                     p.item.config) for p in writes])
        nodes = [n for p in writes for n in p.nodes]
        for kind, embed, group in (("text", self.embedder.embed_text, [n for n in nodes if not isinstance(n, ImageNode)]),
                                   ("image", self.embedder.embed_images, [n for n in nodes if isinstance(n, ImageNode)])):
            t = time.perf_counter()
            encoded, cached = embed(group)
            report.encoded[kind] += encoded
            report.cached[kind] += cached
            report.add_stage(f"embed_{kind}", time.perf_counter() - t)
        t = time.perf_counter()
        self.writer(nodes)
        # Only now, with the new nodes stored, remove what they replace (a query never sees a gap).
        for p in writes:
            rec = self.manifest.get(p.source)
            drop_unshared(self.manifest, self.stores, p.source, rec.prev_assets if rec else [])
            if p.cleanup and p.kind == "new":
                self._delete_leftovers(p.asset_id, set(p.node_ids))
        report.add_stage("store", time.perf_counter() - t)
        self.manifest.mark_done([p.source for p in writes])
        for p in writes:
            if p.kind == "new":  # read and stored: first time, or a new version of a known file
                if p.item.rec is None:
                    report.new += 1
                else:
                    report.changed += 1
            for n in p.nodes:
                kind = n.metadata.get("modality", "text")
                report.nodes[kind] = report.nodes.get(kind, 0) + 1
            warn = node_warnings(p.nodes)
            if warn:
                report.warnings.append({"path": display_path(p.source), "warnings": warn})

    def _delete_leftovers(self, asset_id: str, keep: Set[str]) -> None:
        """Nodes of ``asset_id`` from an earlier, different write (a crashed run, another reader
        configuration) that this write does not contain."""
        stale = [n for n in self.stores.get_asset_nodes(asset_id) if n.node_id not in keep]
        for coll, group in by_collection(stale).items():
            self.stores.vector_store(coll).delete_nodes(node_ids=[n.node_id for n in group])

    def fail(self, report: IngestReport, item: FileItem, reason: str) -> None:
        """Report a file and record it in the manifest. Nodes of the version still stored stay
        tracked, unless the file's content is known to have changed (they no longer describe it)
        or its row was mid-write (pending): then they are deleted.

        Args:
            report: the run's report.
            item: the file.
            reason: why it failed.
        """
        report.failed.append({"path": display_path(item.source), "reason": reason})
        rec = item.rec
        new_asset = scoped_asset_id(item.content_hash, item.collection) if item.content_hash else None
        keep = bool(rec and rec.status in ("done", "failed") and (new_asset is None or new_asset == rec.asset_id))
        try:
            if rec and not keep:
                drop_unshared(self.manifest, self.stores, item.source, rec.stale_assets())
            self.manifest.mark_failed(item.source, reason, size=item.size, mtime=item.mtime, keep_nodes=keep,
                                      collection=item.collection)
        except Exception as exc:
            raise IngestAborted(f"recording the failure of {display_path(item.source)} failed: "
                                f"{type(exc).__name__}: {exc}") from exc


__all__ = ["FileItem", "PendingFile", "BatchCommitter"]
