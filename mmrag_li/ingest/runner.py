"""The ingestion run: walk, consult the manifest, read in a bounded worker pool, commit in batches.

* unchanged files (same size, mtime, collection and settings) are skipped without reading them;
  a file whose mtime changed but whose bytes did not is only re-stamped; identical bytes under
  another path are recorded, not re-encoded.
* files are read by at most ``workers`` daemon threads (:class:`WorkerPool`) with a window of
  ``2 * workers`` files in flight (back-pressure); a file that takes longer than its budget
  (:func:`file_budget`) is reported as "timed out after N s" and its thread abandoned.
* batches of ``batch_files`` read files are committed by :class:`~mmrag_li.ingest.batch.BatchCommitter`
  (write-new -> delete-old -> mark-done).
* Ctrl-C (or any error) cancels the files not started and gives the ones being read a short
  grace period to finish, so no thread is still inside native code (OCR, a model) while the
  interpreter shuts down.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import logging
import os
import stat as _stat
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple

from llama_index.core.schema import TransformComponent
from tqdm import tqdm

from mmrag_li.config import Settings
from mmrag_li.embeddings.resolve import config_identity
from mmrag_li.errors import IngestError
from mmrag_li.ingest.batch import BatchCommitter, FileItem, PendingFile
from mmrag_li.ingest.embed import CachedEmbedder
from mmrag_li.ingest.errors import CollectionNotAllowedError
from mmrag_li.ingest.gc import purge_quietly
from mmrag_li.ingest.pruning import prune_walked, walk_paths
from mmrag_li.ingest.recovery import check_store_writable, reconcile
from mmrag_li.ingest.report import DEFAULT_COLLECTION, IngestReport, display_path
from mmrag_li.ingest.sources import find_row, source_key
from mmrag_li.ingest.threads import capped_model_threads
from mmrag_li.ingest.transforms import check_collection, scoped_asset_id
from mmrag_li.schema import file_hash

log = logging.getLogger("mmrag_li")

GRACE_S = 30.0  # the longest an interrupted run waits for files being read


class WorkerPool:
    """A bounded pool of daemon threads: at most ``workers`` tasks run at once.

    A task past its deadline is *abandoned* -- its slot goes to the next task -- because a thread
    cannot be killed; daemon threads mean nothing (not even interpreter exit) waits for it.
    (``ThreadPoolExecutor`` joins its threads at exit, so one hung OCR call would hang the CLI.)

    Args:
        workers: the most tasks running at once (at least 1).
    """

    def __init__(self, workers: int):
        self._cv = threading.Condition()
        self._limit = max(1, workers)
        self._running = 0
        self._started: Dict[cf.Future, float] = {}
        self._abandoned: Set[cf.Future] = set()

    def submit(self, fn: Callable[..., Any], *args: Any) -> cf.Future:
        """Run ``fn(*args)`` in a daemon thread once a slot is free; returns its future.

        Args:
            fn: the task.
            *args: its arguments.
        """
        fut: cf.Future = cf.Future()

        def run() -> None:
            with self._cv:
                while self._running >= self._limit and not fut.cancelled():
                    self._cv.wait()
                if not fut.set_running_or_notify_cancel():
                    self._cv.notify()
                    return
                self._running += 1
                self._started[fut] = time.monotonic()
            try:
                result = fn(*args)
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                fut.set_exception(exc)
            else:
                fut.set_result(result)
            finally:
                with self._cv:
                    self._running -= 1
                    self._started.pop(fut, None)
                    if fut in self._abandoned:  # its slot was already handed on
                        self._abandoned.discard(fut)
                        self._limit -= 1
                    self._cv.notify_all()

        threading.Thread(target=run, name="mmrag-read", daemon=True).start()
        return fut

    def started_at(self, fut: cf.Future) -> Optional[float]:
        """When the task started (``time.monotonic()``), or None while it waits for a slot.

        Args:
            fut: a future returned by :meth:`submit`.
        """
        with self._cv:
            return self._started.get(fut)

    def abandon(self, fut: cf.Future) -> None:
        """Cancel a task that has not started; hand the slot of a running one to the next task.

        Args:
            fut: a future returned by :meth:`submit`.
        """
        with self._cv:
            if fut.cancel():
                self._cv.notify_all()  # its thread stops waiting for a slot
                return
            if fut in self._started and fut not in self._abandoned:
                self._abandoned.add(fut)
                self._limit += 1
                self._cv.notify_all()

    def shutdown(self, futures: Iterable[cf.Future], deadlines: Optional[Dict[cf.Future, float]] = None) -> None:
        """Cancel what has not started; abandon what is running. With ``deadlines``
        (future -> ``time.monotonic()`` limit), first wait for the running tasks until then, so a
        stopping process does not exit under a thread that is inside native code.

        Args:
            futures: the tasks still in flight.
            deadlines: how long to wait for each running task; None: do not wait.
        """
        futures = list(futures)
        for fut in futures:
            with self._cv:
                if fut.cancel():
                    self._cv.notify_all()
        running = [f for f in futures if not f.done() and f not in self._abandoned]
        if deadlines and running:
            until = max(deadlines.get(f, 0.0) for f in running)
            log.warning("stopping: waiting up to %.0f s for %d file(s) being read (Ctrl-C again to stop now)",
                        max(0.0, until - time.monotonic()), len(running))
            cf.wait(running, timeout=max(0.0, until - time.monotonic()))
        for fut in futures:
            self.abandon(fut)


def file_budget(path: str | Path, settings: Settings) -> float:
    """Reading time for one file: ``ingest.file_timeout_s``, plus ``ingest.page_timeout_s`` per
    page of a PDF (a 300-page scan legitimately needs far longer than a photo), at most
    ``ingest.max_file_budget_s``.

    Args:
        path: the file.
        settings: the settings (``ingest.file_timeout_s``, ``page_timeout_s``, ``max_pdf_pages``,
            ``max_file_budget_s``).
    """
    cfg = settings.ingest
    try:
        with open(path, "rb") as fh:
            is_pdf = b"%PDF-" in fh.read(1024)
        if not is_pdf:
            return cfg.file_timeout_s
        import pymupdf

        with pymupdf.open(str(path), filetype="pdf") as doc:
            pages = 0 if doc.needs_pass else min(doc.page_count, cfg.max_pdf_pages)
    except Exception:  # unreadable here means the reader fails fast too
        return cfg.file_timeout_s
    return min(cfg.file_timeout_s + cfg.page_timeout_s * pages, max(cfg.max_file_budget_s, cfg.file_timeout_s))


def config_fingerprint(settings: Settings, component: Optional[str] = None) -> str:
    """Hash of every setting that changes what nodes or vectors a file gives (OCR, captions,
    embedding models, tiling, chunking, renders, PII, safety). A file ingested under another
    fingerprint is read again (vectors still come from the cache where the inputs match).

    Args:
        settings: the settings.
        component: name of an injected safety checker class (part of the recipe too), if any.
    """
    s, i = settings, settings.ingest
    shaping: Dict[str, Any] = {
        # text_gate on (the default) keeps the fingerprint of stores made before the gate existed:
        # re-reading every file for it would cost more than the gate saves; off re-reads with full OCR
        "ocr": s.ocr.model_dump(exclude={"timeout_s"} | ({"text_gate"} if getattr(s.ocr, "text_gate", False) else set())),
        "caption": s.caption.model_dump(exclude={"batch_size"}),
        "embedding": config_identity(s.embedding),
        "tiling": s.tiling.model_dump(),
        "ingest": i.model_dump(include={"max_image_pixels", "model_max_side", "max_pdf_pages", "pdf_render_dpi",
                                        "pdf_ocr_dpi", "pdf_min_image_side", "chunk_size", "chunk_overlap",
                                        "thumbnail_px", "redact_pii", "pii_phone_regions", "safety_checker",
                                        "safety_threshold", "refuse_polyglots"}),
    }
    if component:
        shaping["safety_component"] = component
    blob = json.dumps(shaping, sort_keys=True, default=str).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]


def triage(item: FileItem, settings: Settings, done_assets: Dict[str, List[str]]) -> Tuple[str, Optional[PendingFile]]:
    """Hash a file the plan kept and decide whether it must be read at all (both executors call
    this before any reading; it sets ``item.content_hash`` and ``item.budget_s``).

    Args:
        item: a file :meth:`IngestRunner.plan` returned.
        settings: the settings (reading budget).
        done_assets: ``manifest.done_assets(fingerprint)`` (asset id -> node ids) of this run.

    Returns:
        ``(asset_id, pending)``: ``pending`` is a :class:`PendingFile` that needs no reading (``unchanged``:
        same bytes, only the mtime changed; ``duplicate``: the bytes are stored under another path), or
        None when the file must be read.

    Raises:
        IngestError: the file cannot be read (permission, I/O error).
    """
    try:
        raw = file_hash(item.path)
    except PermissionError:
        raise IngestError(item.source, "permission denied") from None
    except OSError as exc:
        raise IngestError(item.source, f"cannot read file: {exc.strerror or exc}") from None
    item.content_hash = raw
    item.budget_s = file_budget(item.path, settings)
    asset_id = scoped_asset_id(raw, item.collection)
    rec = item.rec
    if rec and rec.status == "done" and rec.asset_id == asset_id and rec.config in (None, item.config):
        return asset_id, PendingFile(item, asset_id, [], rec.node_ids, kind="unchanged")  # only the mtime changed
    if asset_id in done_assets and (rec is None or rec.asset_id != asset_id):
        # Same bytes already stored under another path (same collection): record, encode nothing.
        return asset_id, PendingFile(item, asset_id, [], done_assets[asset_id], kind="duplicate")
    return asset_id, None


class IngestRunner:
    """One ``ingest`` call: check the store, walk, consult the manifest, read in a worker pool,
    transform, commit in batches, prune, compact. Components arrive as zero-argument callables
    (providers) so that nothing is opened before the store is known to be writable and no model
    is loaded when nothing has to be read.

    Args:
        settings: the settings (``ingest.*``, ``store_dir``).
        manifest: returns the opened manifest (``recovery.open_manifest``).
        stores: returns the ``ModalityStores``.
        embedder: returns the ``CachedEmbedder`` (``CachedEmbedder.lazy``: models load on first use).
        reader: returns the ``DirectoryReader`` (called once, only when some file must be read).
        transforms: returns the node transforms for a collection, applied per file in a worker
            thread (``ingest_transforms(..., on_refuse="raise")``); called once, like ``reader``.
        fingerprint: :func:`config_fingerprint` of the settings.
        recovered: repairs made while opening the store, moved into the next report.
        guard: the tenant guard (``mmrag_li.guard.CollectionGuard``): a collection it hides cannot be
            ingested into, and its rows are never pruned, reconciled or replaced. None = all.
    """

    def __init__(self, settings: Settings, *, manifest: Callable[[], Any], stores: Callable[[], Any],
                 embedder: Callable[[], CachedEmbedder], reader: Callable[[], Any],
                 transforms: Callable[[str], Sequence[TransformComponent]], fingerprint: str,
                 recovered: Optional[List[str]] = None, guard: Any = None):
        self.guard = guard
        self.settings = settings
        self.store_dir = Path(settings.store_dir)
        self._providers = {"manifest": manifest, "stores": stores, "embedder": embedder}
        self._reader_factory = reader
        self._transforms_factory = transforms
        self.fingerprint = fingerprint
        self.recovered = recovered if recovered is not None else []

    def run(self, paths: Sequence[str | Path] | str | Path, collection: Optional[str] = None, prune: bool = False,
            workers: Optional[int] = None, batch_files: Optional[int] = None, progress: bool = True) -> IngestReport:
        """Ingest every file under ``paths``; never aborts on a bad file.

        Args:
            paths: files and folders.
            collection: stamped on every node (default ``ingest.collection``).
            prune: afterwards delete the nodes of files under ``paths`` that no longer exist.
            workers: reading threads (default ``ingest.workers``).
            batch_files: files per committed batch (default ``ingest.batch_files``).
            progress: show a progress bar on stderr.

        Raises:
            IngestAborted: the store could not be written (committed batches stay);
                ``StoreNotWritableError`` before anything changed.
            CollectionNotAllowedError: ``collection`` is outside ``retrieval.allowed_collections``.
        """
        t0 = time.perf_counter()
        cfg = self.settings.ingest
        collection = check_collection(collection or cfg.collection or DEFAULT_COLLECTION)
        if not self._may_write(collection):
            raise CollectionNotAllowedError(collection, self.guard.allowed)
        paths = [paths] if isinstance(paths, (str, bytes, os.PathLike)) else list(paths)
        paths = [os.fsdecode(p) if isinstance(p, bytes) else p for p in paths]
        check_store_writable(self.store_dir)
        report = IngestReport(store=display_path(self.store_dir.resolve()), collection=collection)
        self.manifest = self._providers["manifest"]()
        stores = self._providers["stores"]()
        if hasattr(stores, "probe"):
            stores.probe()  # a damaged data file is named before a batch is written
        self.committer = BatchCommitter(self.manifest, stores, self._providers["embedder"](), self.store_dir)
        report.recovered.extend(self.recovered)
        self.recovered.clear()
        report.recovered.extend(reconcile(self.manifest, stores, guard=self.guard))
        with capped_model_threads(cfg.model_threads, workers or cfg.workers):
            self._read_and_commit(self._plan(paths, report), report, workers, batch_files, progress)
        if prune:  # only what this run's walk saw gone; a missing root or unreadable folder prunes nothing
            pruned = prune_walked(self.manifest, stores, self.walk, cfg, self.guard, self.store_dir / "blobs")
            report.pruned, report.prune_skipped = pruned.pruned, pruned.skipped
        if (report.pruned or report.changed) and not self.settings.store.keep_versions:
            report.add_stage("compact", purge_quietly(stores, self.manifest))  # replaced rows leave no old version
        elif (sum(report.nodes.values()) or report.pruned) and hasattr(stores, "optimize"):
            t = time.perf_counter()
            try:
                stores.optimize()  # one compaction per run, not per batch
            except Exception as exc:  # compaction is an optimisation: never fail an ingest over it
                log.warning("store compaction skipped: %s", exc)
            report.add_stage("compact", time.perf_counter() - t)
        report.seconds = time.perf_counter() - t0
        return report

    def _read_and_commit(self, todo: List[FileItem], report: IngestReport, workers: Optional[int],
                         batch_files: Optional[int], progress: bool) -> None:
        """The loop: at most ``2 * workers`` files in flight, timeouts enforced, batches committed."""
        cfg = self.settings.ingest
        reader = transforms = None
        if todo:  # build shared components here, not racing in the worker threads
            reader = self._reader_factory()
            transforms = list(self._transforms_factory(report.collection))
        workers = max(1, workers or cfg.workers)
        batch_files = max(1, batch_files or cfg.batch_files)
        timeout = float(cfg.file_timeout_s)
        done_assets = self.manifest.done_assets(self.fingerprint)
        known_assets = self.manifest.known_assets()
        batch: List[PendingFile] = []
        bar = tqdm(total=len(todo), desc="ingest", unit="file", file=sys.stderr, disable=not progress)
        pool = WorkerPool(workers)
        window = max(2 * workers, 2)  # back-pressure: only a few files read ahead of the writer
        it = iter(todo)
        inflight: Dict[cf.Future, FileItem] = {}
        lock = threading.Lock()

        def submit_next() -> bool:
            item = next(it, None)
            if item is None:
                return False
            fut = pool.submit(self._read_one, item, reader, transforms, done_assets, known_assets, report, lock)
            inflight[fut] = item
            return True

        def deadline(fut: cf.Future, item: FileItem) -> Optional[float]:
            s = pool.started_at(fut)
            return None if s is None else s + (item.budget_s or timeout)

        for _ in range(window):
            if not submit_next():
                break
        finished_ok = False
        try:
            while inflight:
                ends = [d for f, item in inflight.items() for d in [deadline(f, item)] if d is not None]
                wait_s = 0.5 if not ends else min(max(min(ends) - time.monotonic(), 0.01), 5.0)
                finished, _ = cf.wait(list(inflight), timeout=wait_s, return_when=cf.FIRST_COMPLETED)
                for fut in finished:
                    item = inflight.pop(fut)
                    bar.update(1)
                    self._collect(fut, item, report, batch)
                    submit_next()
                now = time.monotonic()
                for fut, item in list(inflight.items()):
                    end = deadline(fut, item)
                    if end is not None and now > end and not fut.done():
                        inflight.pop(fut)
                        pool.abandon(fut)  # the thread may still be busy; nothing waits for it
                        bar.update(1)
                        report.timed_out += 1
                        self.committer.fail(report, item, f"timed out after {item.budget_s or timeout:g} s")
                        submit_next()
                if len(batch) >= batch_files:
                    self.committer.commit(batch, report)
                    batch = []
            if batch:
                self.committer.commit(batch, report)
            finished_ok = True
        finally:
            grace = None
            if not finished_ok:  # interrupted or aborted: let the files being read finish first
                cap = time.monotonic() + GRACE_S
                grace = {f: min(cap, d) for f, item in inflight.items() for d in [deadline(f, item)] if d}
            pool.shutdown(inflight, grace)
            bar.close()

    def _plan(self, paths: Sequence[str | Path], report: IngestReport) -> List[FileItem]:
        """Walk ``paths``; report what cannot be read, skip what is unchanged; the rest is to do."""
        cfg = self.settings.ingest
        self.walk = walk_paths(paths, self.settings)  # kept: --prune prunes only what this walk saw gone
        for p in self.walk.missing:
            report.failed.append({"path": display_path(p), "reason": "no such file or directory"})
        for path, reason in self.walk.failures:  # unreadable folders met during the walk
            report.failed.append({"path": display_path(path), "reason": reason})
        files: List[Path] = self.walk.files
        report.files = len(files)
        todo: List[FileItem] = []
        max_bytes = cfg.max_file_mb * 1024 * 1024
        for f in files:
            shown = display_path(f)
            if shown != os.fspath(f):
                report.failed.append({"path": shown, "reason": "file name is not valid UTF-8 (shown with \\x "
                                      "escapes); rename the file to ingest it"})
                continue
            source = source_key(f, cfg)  # the resolved path; with ingest.redact_pii no PII from the name
            rec = self._record(f, source)
            if rec is not None and not self._may_write(rec.collection or DEFAULT_COLLECTION):
                report.failed.append({"path": shown, "reason": "stored in a collection outside "
                                      "retrieval.allowed_collections: left as it is"})
                continue
            try:
                st = os.stat(f)
            except OSError as exc:
                reason = "broken symlink" if os.path.islink(f) else f"cannot stat: {exc.strerror or exc}"
                self.committer.fail(report, FileItem(Path(f), source, 0, 0.0, rec, report.collection), reason)
                continue
            item = FileItem(Path(f), source, st.st_size, st.st_mtime, rec, report.collection, self.fingerprint)
            if not _stat.S_ISREG(st.st_mode):  # FIFOs and devices would block or never end
                self.committer.fail(report, item, "not a regular file")
            elif st.st_size > max_bytes:
                self.committer.fail(report, item, f"file exceeds max_file_mb ({st.st_size / 1048576:.1f} MB > "
                                                  f"{cfg.max_file_mb:g} MB)")
            elif (rec and rec.status == "done" and rec.size == st.st_size and rec.mtime == st.st_mtime
                  and (rec.collection or DEFAULT_COLLECTION) == report.collection
                  and rec.config in (None, self.fingerprint)):
                report.skipped_unchanged += 1
            else:
                todo.append(item)
        return todo

    def _may_write(self, collection: str) -> bool:
        """Whether the tenant guard lets this run write rows/nodes of ``collection``."""
        return self.guard is None or self.guard.allows_collection(collection)

    def _record(self, path: Path, source: str) -> Any:
        """The manifest row of ``source`` (re-keyed from the real path first: ``sources.find_row``)."""
        return find_row(self.manifest, path, source, lambda r: self._may_write(r.collection or DEFAULT_COLLECTION))

    def _collect(self, fut: cf.Future, item: FileItem, report: IngestReport, batch: List[PendingFile]) -> None:
        """A finished read: into the batch, or a failure in the report."""
        try:
            result = fut.result()
        except IngestError as exc:
            self.committer.fail(report, item, exc.reason)
        except Exception as exc:  # a reader bug must not lose the rest of the run
            log.exception("unexpected error reading %s", item.source)
            self.committer.fail(report, item, f"{type(exc).__name__}: {exc}")
        else:
            if result.kind == "unchanged":
                report.skipped_unchanged += 1
            elif result.kind == "duplicate":
                report.duplicates += 1
            batch.append(result)

    def _read_one(self, item: FileItem, reader: Any, transforms: Sequence[TransformComponent],
                  done_assets: Dict[str, List[str]], known_assets: Set[str], report: IngestReport,
                  lock: threading.Lock) -> PendingFile:
        """Runs in a worker thread: no manifest or store writes here (the main thread owns them)."""
        t = time.perf_counter()
        asset_id, settled = triage(item, self.settings, done_assets)
        if settled is not None:
            return settled
        rec, raw = item.rec, item.content_hash
        nodes = reader.read_file(item.path)
        got = {n.metadata.get("content_hash") or n.metadata.get("asset_id") for n in nodes}
        if got and got != {raw}:
            raise IngestError(item.source, "file changed while it was being read; the next run reads it again")
        for transform in transforms:  # collection stamp, polyglot note, safety check, PII redaction
            nodes = list(transform(nodes, file_path=item.path))
        with lock:
            report.add_stage("read", time.perf_counter() - t)
        cleanup = rec is not None or asset_id in known_assets
        return PendingFile(item, asset_id, nodes, [n.node_id for n in nodes], kind="new", cleanup=cleanup)


__all__ = ["WorkerPool", "IngestRunner", "file_budget", "config_fingerprint", "triage", "GRACE_S"]
