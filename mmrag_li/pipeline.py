"""``MultiModalRAG``: the one object most users touch.

file -> reader -> enrich -> nodes -> embed (cached) -> stores -> fusion retriever -> query engine.

Ingestion is incremental, crash-safe and bounded (see ``manifest.py``):

* unchanged files (same size, mtime and collection) are skipped without reading them; a file
  whose mtime changed but whose bytes did not is only re-stamped; identical bytes under another
  path are recorded, not re-encoded; vectors come from the embedding cache when the content was
  seen before.
* a batch is embedded and written to the stores, then the nodes of the version it replaces are
  deleted, then the manifest says ``done`` -- in that order, so a kill at any instant leaves
  ``pending`` rows that the next run completes, never duplicates (upsert by id) and never
  orphans (previous asset ids stay in the manifest until deleted).
* files are read by at most ``workers`` daemon threads with a window of ``2 * workers`` files in
  flight (back-pressure); a file that takes longer than ``ingest.file_timeout_s`` is reported as
  "timed out after N s" and its thread abandoned (threads cannot be killed; nothing waits for it).
* ``collection`` (``ingest.collection`` or per call) is stamped on every node; the same bytes in
  two collections are two assets (the asset id is namespaced), so tenants never share nodes.
* optional PII redaction (``ingest.redact_pii``) and an image safety checker
  (``ingest.safety_checker``) run on the nodes before anything is embedded or stored.
"""

from __future__ import annotations

import concurrent.futures as cf
import errno
import hashlib
import logging
import os
import re
import stat as _stat
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Set

from llama_index.core.schema import BaseNode, ImageNode, MetadataMode, NodeRelationship, QueryBundle, RelatedNodeInfo
from tqdm import tqdm

from mmrag_li.blobs import BlobStore
from mmrag_li.config import Settings
from mmrag_li.embeddings.cache import cache_key, open_cache
from mmrag_li.errors import IngestError, MMRAGError
from mmrag_li.manifest import FileRecord, Manifest, ManifestCorruptError
from mmrag_li.schema import COLLECTIONS, collection_of, file_hash

log = logging.getLogger("mmrag_li")

NODE_KINDS = ("image", "page", "crop", "ocr", "caption", "text")
DEFAULT_COLLECTION = "default"
_COLLECTION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
# Node metadata keys whose presence is worth a line in the report's warnings.
_WARN_KEYS = ("ingest_warnings", "polyglot", "extension_mismatch", "pdf_repaired", "ocr_error", "caption_error")


class IngestAborted(MMRAGError):
    """A store or manifest write failed (disk full, read-only, damaged table): the run stopped.
    Batches committed before stay; the failed batch stays ``pending`` and the next run redoes it."""


class StoreCorruptError(MMRAGError):
    """A store file cannot be read; the message names it and says how to recover."""


def _damage_message(table_dir: Path, path: Optional[Path], exc: BaseException) -> str:
    where = f"data file {path}" if path else "its manifest/version files"
    return (f"LanceDB table {table_dir} is damaged: {where} cannot be read ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200]}). Recovery: move {table_dir} aside (mv {table_dir} "
            f"{table_dir}.damaged) and run the same `mmrag ingest` again: the files whose nodes were in it "
            "are read again (vectors come from the embedding cache), nothing else is touched.")


def _lance_damage(uri: Path, exc: BaseException) -> "StoreCorruptError":
    """Find which table fails to open, for the message."""
    try:
        import lancedb

        conn = lancedb.connect(str(uri))
        for c in COLLECTIONS:
            if (uri / f"{c}.lance").exists():
                try:
                    conn.open_table(c)
                except Exception as inner:  # the damaged one
                    return StoreCorruptError(_damage_message(uri / f"{c}.lance", None, inner))
    except Exception:
        pass
    return StoreCorruptError(f"cannot open the LanceDB store {uri}: {type(exc).__name__}: {exc}")


class StoreNotWritableError(IngestAborted):
    """The store directory cannot be written; checked before anything is changed."""


def scoped_asset_id(content_hash: str, collection: str) -> str:
    """Asset id of some bytes in a collection: the content hash itself in the default collection,
    a hash of (collection, content hash) elsewhere, so two tenants never share node ids."""
    if collection == DEFAULT_COLLECTION:
        return content_hash
    return hashlib.sha256(f"{collection}\0{content_hash}".encode("utf-8")).hexdigest()[:32]


def display_path(path: Any) -> str:
    """A path as JSON-safe text: bytes that are not UTF-8 are shown as ``\\xNN``."""
    s = os.fspath(path)
    if isinstance(s, bytes):
        return s.decode("utf-8", "backslashreplace")
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return os.fsencode(s).decode("utf-8", "backslashreplace")


def check_collection(name: str) -> str:
    if not isinstance(name, str) or not _COLLECTION_RE.match(name):
        raise ValueError(f"invalid collection name {name!r}: use 1-64 letters, digits, '_', '-' or '.'")
    return name


@dataclass
class IngestReport:
    files: int = 0
    nodes: Dict[str, int] = field(default_factory=lambda: {k: 0 for k in NODE_KINDS})
    failed: List[Dict[str, str]] = field(default_factory=list)
    skipped_unchanged: int = 0
    duplicates: int = 0
    pruned: int = 0
    seconds: float = 0.0
    stages: Dict[str, float] = field(default_factory=dict)
    store: str = ""
    collection: str = DEFAULT_COLLECTION
    # vectors computed by a model / served from the embedding cache in this run
    encoded: Dict[str, int] = field(default_factory=lambda: {"text": 0, "image": 0})
    cached: Dict[str, int] = field(default_factory=lambda: {"text": 0, "image": 0})
    timed_out: int = 0
    warnings: List[Dict[str, Any]] = field(default_factory=list)
    recovered: List[str] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        return {"files": self.files, "nodes": self.nodes, "failed": self.failed,
                "skipped_unchanged": self.skipped_unchanged, "duplicates": self.duplicates,
                "pruned": self.pruned, "seconds": round(self.seconds, 3),
                "stages": {k: round(v, 3) for k, v in self.stages.items()}, "store": self.store,
                "collection": self.collection, "encoded": dict(self.encoded), "cached": dict(self.cached),
                "timed_out": self.timed_out, "warnings": self.warnings, "recovered": self.recovered}


@dataclass
class _Item:
    path: Path
    source: str
    size: int
    mtime: float
    rec: Optional[FileRecord]
    collection: str
    config: Optional[str] = None  # fingerprint of the settings that shape nodes
    content_hash: Optional[str] = None  # set by the worker as soon as it is known
    budget_s: Optional[float] = None  # reading time allowed, once known (PDFs: by page count)


@dataclass
class _Pending:
    item: _Item
    asset_id: str
    nodes: List[BaseNode]
    node_ids: List[str]
    kind: str = "new"  # new | duplicate | unchanged
    cleanup: bool = False  # the asset may already have nodes in the store (redo after a crash, rebuild)

    @property
    def source(self) -> str:
        return self.item.source


class _Runner:
    """A bounded pool of daemon threads: at most ``workers`` tasks run at once. A task past its
    deadline is *abandoned* -- its slot goes to the next task -- because a thread cannot be
    killed; daemon threads mean nothing (not even interpreter exit) waits for it.
    (``ThreadPoolExecutor`` joins its threads at exit, so one hung OCR call would hang the CLI.)"""

    def __init__(self, workers: int):
        self._cv = threading.Condition()
        self._limit = max(1, workers)
        self._running = 0
        self._started: Dict[cf.Future, float] = {}
        self._abandoned: Set[cf.Future] = set()

    def submit(self, fn: Callable[..., Any], *args: Any) -> cf.Future:
        fut: cf.Future = cf.Future()

        def run() -> None:
            with self._cv:
                while self._running >= self._limit:
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
                    self._cv.notify()

        threading.Thread(target=run, name="mmrag-read", daemon=True).start()
        return fut

    def started_at(self, fut: cf.Future) -> Optional[float]:
        with self._cv:
            return self._started.get(fut)

    def abandon(self, fut: cf.Future) -> None:
        with self._cv:
            if fut.cancel():
                return
            if fut in self._started and fut not in self._abandoned:
                self._abandoned.add(fut)
                self._limit += 1
                self._cv.notify()

    def shutdown(self, futures: Iterable[cf.Future]) -> None:
        """Cancel what has not started; abandon what is running (never wait for it)."""
        for fut in list(futures):
            self.abandon(fut)


class MultiModalRAG:
    """Ingest, retrieve and answer over a folder of images, PDFs and text.

    Heavy parts (models, stores) are built on first use, so ``inspect`` and ``stats`` stay fast.
    """

    def __init__(self, settings: Optional[Settings] = None, **components: Any):
        self.settings = settings or Settings()
        self.store_dir = Path(self.settings.store_dir)
        self._c: Dict[str, Any] = dict(components)

    @classmethod
    def from_config(cls, path: Optional[str | Path] = None, store_dir: Optional[str | Path] = None,
                    **overrides: Any) -> "MultiModalRAG":
        settings = Settings.load(path, **overrides)
        if store_dir is not None:
            settings.store_dir = str(store_dir)
        return cls(settings)

    from_defaults = from_config

    # ---- lazily built components ----------------------------------------------------------
    def _get(self, name: str, build) -> Any:
        if name not in self._c:
            self._c[name] = build()
        return self._c[name]

    @property
    def manifest(self) -> Manifest:
        return self._get("manifest", self._open_manifest)

    @property
    def blob_store(self) -> BlobStore:
        return self._get("blob_store", lambda: BlobStore(self.store_dir / "blobs"))

    @property
    def stores(self):
        from mmrag_li.stores import ModalityStores

        return self._get("stores", lambda: self._open_stores(ModalityStores))

    @property
    def text_embed(self):
        from mmrag_li.embeddings.text import build_text_embedding

        return self._get("text_embed", lambda: build_text_embedding(self.settings.embedding))

    @property
    def clip_embed(self):
        from mmrag_li.embeddings.clip import ClipEmbedding

        e = self.settings.embedding
        return self._get("clip_embed", lambda: ClipEmbedding.from_defaults(
            e.image_model, e.image_backend, e.image_pretrained, e.device, e.batch_size))

    @property
    def ocr(self):
        from mmrag_li.enrich.ocr import get_ocr_engine

        return self._get("ocr", lambda: get_ocr_engine(self.settings.ocr))

    @property
    def captioner(self):
        from mmrag_li.enrich.caption import build_captioner

        return self._get("captioner", lambda: build_captioner(self.settings.caption))

    @property
    def embedding_cache(self):
        return self._get("cache", self._open_cache)

    def reader(self):
        from mmrag_li.readers.directory import DirectoryReader

        return self._get("reader", lambda: DirectoryReader.from_defaults(
            self.settings, blob_store=self.blob_store, ocr=self.ocr, captioner=self.captioner))

    # ---- ingestion ------------------------------------------------------------------------
    def _open_manifest(self) -> Manifest:
        """Open the manifest; a corrupt one is moved aside and rebuilt from the stores."""
        path = self.store_dir / "manifest.sqlite"
        try:
            return Manifest(path)
        except ManifestCorruptError as exc:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            moved = path.with_name(f"{path.name}.corrupt-{stamp}")
            os.replace(path, moved)
            for suffix in ("-wal", "-shm"):
                side = Path(str(path) + suffix)
                if side.exists():
                    os.replace(side, Path(str(moved) + suffix))
            log.warning("%s; moved to %s, rebuilding from the stores", exc, moved)
            manifest = Manifest(path)
            self._c["manifest"] = manifest
            n = self._rebuild_manifest(manifest)
            self._recovered.append(
                f"manifest {path} was corrupt ({exc.detail}): moved to {moved.name}; rebuilt {n} file "
                "record(s) from the stores as pending, so the next ingest re-reads them (vectors come "
                "from the embedding cache)")
            return manifest

    def _open_cache(self):
        """The embedding cache; a corrupt cache file is only a cache: moved aside and started afresh."""
        if not self.settings.embedding.cache:
            return open_cache(None)
        import sqlite3

        path = self.store_dir / "embedding_cache.sqlite"
        try:
            cache = open_cache(path)
            cache._db.execute("SELECT COUNT(*) FROM vectors LIMIT 1").fetchone()
            return cache
        except sqlite3.DatabaseError as exc:
            moved = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
            os.replace(path, moved)
            for suffix in ("-wal", "-shm"):
                Path(str(path) + suffix).unlink(missing_ok=True)
            self._recovered.append(f"embedding cache {path} was corrupt ({exc}): moved to {moved.name}; "
                                   "started an empty cache (vectors are recomputed)")
            log.warning(self._recovered[-1])
            return open_cache(path)

    def _open_stores(self, klass):
        """The stores; a LanceDB table that cannot be opened is named with a recovery hint."""
        try:
            return klass.from_config(self.settings)
        except MMRAGError:
            raise
        except Exception as exc:
            if self.settings.store.backend != "lancedb":
                raise
            raise _lance_damage(self.store_dir / "lancedb", exc) from exc

    def _probe_stores(self) -> None:
        """Read the id column of every LanceDB data file (footers and one small column: cheap) so a
        damaged file is named before a batch is written, not discovered halfway through."""
        if self.settings.store.backend != "lancedb":
            return
        for c in COLLECTIONS:
            vs = self.stores.vector_store(c)
            tbl = vs.lance_table()
            if tbl is None:
                continue
            table_dir = self.store_dir / "lancedb" / f"{c}.lance"
            try:
                ds = tbl.to_lance()
                fragments = ds.get_fragments()
            except Exception as exc:
                raise StoreCorruptError(_damage_message(table_dir, None, exc)) from exc
            for frag in fragments:
                try:
                    frag.to_table(columns=["id"])
                except Exception as exc:
                    files = [getattr(f, "path", str(f)) for f in frag.data_files()]
                    path = table_dir / "data" / os.path.basename(files[0]) if files else None
                    raise StoreCorruptError(_damage_message(table_dir, path, exc)) from exc

    @property
    def _recovered(self) -> List[str]:
        return self._c.setdefault("_recovered", [])

    def _rebuild_manifest(self, manifest: Manifest) -> int:
        """Rows for every (source, asset) found in the stores, marked pending (their completeness
        cannot be known), with the stored node ids, so nothing stored becomes untracked."""
        rows: Dict[str, Dict[str, Any]] = {}
        for c in COLLECTIONS:
            for node in self.stores.all_nodes(c):
                m = node.metadata
                src, aid = m.get("source"), m.get("asset_id")
                if not src or not aid:
                    continue
                row = rows.setdefault(src, {"asset": aid, "ids": set(), "collection": m.get("collection")})
                if row["asset"] == aid:
                    row["ids"].add(node.node_id)
        manifest.mark_pending([(src, r["asset"], -1, -1.0, sorted(r["ids"]), r["collection"])
                               for src, r in rows.items()])
        return len(rows)

    def _check_store_writable(self) -> None:
        """Fail before changing anything when the store cannot be written (read-only mount,
        permissions): a clear message instead of a half-written batch."""
        try:
            self.store_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreNotWritableError(
                f"cannot create store directory {self.store_dir}: {exc.strerror or exc}; nothing was changed") from None
        import tempfile

        for d in [self.store_dir] + [self.store_dir / s for s in ("lancedb", "blobs")]:
            if not d.is_dir():
                continue
            try:
                with tempfile.TemporaryFile(dir=d, prefix=".write-test-"):
                    pass
            except OSError as exc:
                raise StoreNotWritableError(
                    f"store directory {d} is not writable ({exc.strerror or exc}); nothing was changed. "
                    "Fix its permissions or pass another --store") from None
        for f in (self.store_dir / "manifest.sqlite", self.store_dir / "embedding_cache.sqlite"):
            if f.exists() and not os.access(f, os.W_OK):
                raise StoreNotWritableError(f"{f} is read-only; nothing was changed")

    @property
    def safety_checker(self):
        from mmrag_li.enrich.safety import build_safety_checker

        cfg = self.settings.ingest
        return self._get("safety_checker", lambda: build_safety_checker(
            cfg.safety_checker, threshold=cfg.safety_threshold))

    @property
    def pii_redactor(self):
        from mmrag_li.enrich.pii import PIIRedactor

        regions = self.settings.ingest.pii_phone_regions
        return self._get("pii_redactor", lambda: PIIRedactor(phone_regions=regions))

    def config_fingerprint(self) -> str:
        """Hash of every setting that changes what nodes or vectors a file gives (OCR, captions,
        embedding models, tiling, chunking, renders, PII, safety). A file ingested under another
        fingerprint is read again (vectors still come from the cache where the inputs match)."""
        import json as _json

        s = self.settings
        i = s.ingest
        shaping = {
            "ocr": s.ocr.model_dump(exclude={"timeout_s"}),
            "caption": s.caption.model_dump(exclude={"batch_size"}),
            "embedding": s.embedding.model_dump(include={"text_model", "image_backend", "image_model",
                                                         "image_pretrained"}),
            "tiling": s.tiling.model_dump(),
            "ingest": i.model_dump(include={"max_image_pixels", "model_max_side", "max_pdf_pages", "pdf_render_dpi",
                                            "pdf_ocr_dpi", "pdf_min_image_side", "chunk_size", "chunk_overlap",
                                            "thumbnail_px", "redact_pii", "pii_phone_regions", "safety_checker",
                                            "safety_threshold", "refuse_polyglots"}),
        }
        if "safety_checker" in self._c:  # an injected checker is part of the recipe too
            shaping["safety_component"] = type(self._c["safety_checker"]).__name__
        blob = _json.dumps(shaping, sort_keys=True, default=str).encode("utf-8")
        return hashlib.sha256(blob).hexdigest()[:16]

    def ingest(self, paths: Sequence[str | Path] | str | Path, prune: bool = False,
               workers: Optional[int] = None, batch_files: Optional[int] = None, progress: bool = True,
               collection: Optional[str] = None) -> IngestReport:
        """Read, enrich, embed and store every file under ``paths``; never aborts on a bad file.

        ``collection`` (default ``ingest.collection``) is stamped on every node and checked by the
        retrievers' ``allowed_collections``. Raises :class:`IngestAborted` only when the store
        itself cannot be written (what was committed stays; the rest is redone next run).
        """
        t0 = time.perf_counter()
        cfg = self.settings.ingest
        collection = check_collection(collection or cfg.collection or DEFAULT_COLLECTION)
        paths = [paths] if isinstance(paths, (str, bytes, os.PathLike)) else list(paths)
        paths = [os.fsdecode(p) if isinstance(p, bytes) else p for p in paths]
        self._check_store_writable()
        report = IngestReport(store=display_path(self.store_dir.resolve()), collection=collection)
        manifest = self.manifest
        self._probe_stores()
        self.embedding_cache
        report.recovered.extend(self._recovered)
        self._recovered.clear()
        report.recovered.extend(self.reconcile())
        stages = report.stages
        stage_lock = threading.Lock()

        # The walk needs no models: a bare reader, so a run with nothing to do loads none.
        from mmrag_li.readers.directory import DirectoryReader

        walker = DirectoryReader.from_defaults(self.settings)
        files: List[Path] = []
        for p in paths:
            if not os.path.lexists(p):
                report.failed.append({"path": display_path(p), "reason": "no such file or directory"})
                continue
            files.extend(walker.iter_files(p))
        for err in walker.failures:  # unreadable folders met during the walk
            report.failed.append({"path": display_path(err.path), "reason": err.reason})
        report.files = len(files)

        todo: List[_Item] = []
        max_bytes = cfg.max_file_mb * 1024 * 1024
        fingerprint = self.config_fingerprint()
        for f in files:
            shown = display_path(f)
            if shown != os.fspath(f):
                report.failed.append({"path": shown, "reason": "file name is not valid UTF-8 (shown with \\x "
                                      "escapes); rename the file to ingest it"})
                continue
            source = str(Path(f).resolve())
            try:
                st = os.stat(f)
            except OSError as exc:
                reason = "broken symlink" if os.path.islink(f) else f"cannot stat: {exc.strerror or exc}"
                self._fail(report, _Item(Path(f), source, 0, 0.0, manifest.get(source), collection), reason)
                continue
            rec = manifest.get(source)
            item = _Item(Path(f), source, st.st_size, st.st_mtime, rec, collection, fingerprint)
            if not _stat.S_ISREG(st.st_mode):  # FIFOs and devices would block or never end
                self._fail(report, item, "not a regular file")
                continue
            if st.st_size > max_bytes:
                self._fail(report, item, f"file exceeds max_file_mb ({st.st_size / 1048576:.1f} MB > "
                                         f"{cfg.max_file_mb:g} MB)")
                continue
            if (rec and rec.status == "done" and rec.size == st.st_size and rec.mtime == st.st_mtime
                    and (rec.collection or DEFAULT_COLLECTION) == collection and rec.config in (None, fingerprint)):
                report.skipped_unchanged += 1
                continue
            todo.append(item)

        if todo:  # build shared components here, not racing in the worker threads
            self.reader()
            if cfg.safety_checker and "safety_checker" not in self._c:
                self.safety_checker
            if cfg.redact_pii:
                self.pii_redactor
        workers = max(1, workers or cfg.workers)
        batch_files = max(1, batch_files or cfg.batch_files)
        timeout = float(cfg.file_timeout_s)
        done_assets = manifest.done_assets(fingerprint)
        known_assets = manifest.known_assets()
        batch: List[_Pending] = []
        bar = tqdm(total=len(todo), desc="ingest", unit="file", file=sys.stderr, disable=not progress)
        runner = _Runner(workers)
        window = max(2 * workers, 2)  # back-pressure: only a few files read ahead of the writer
        it = iter(todo)
        inflight: Dict[cf.Future, _Item] = {}

        def submit_next() -> bool:
            item = next(it, None)
            if item is None:
                return False
            inflight[runner.submit(self._read_one, item, done_assets, known_assets, stages, stage_lock)] = item
            return True

        for _ in range(window):
            if not submit_next():
                break
        try:
            while inflight:
                ends = [s + (item.budget_s or timeout) for f, item in inflight.items()
                        for s in [runner.started_at(f)] if s is not None]
                wait_s = 0.5 if not ends else min(max(min(ends) - time.monotonic(), 0.01), 5.0)
                finished, _ = cf.wait(list(inflight), timeout=wait_s, return_when=cf.FIRST_COMPLETED)
                for fut in finished:
                    item = inflight.pop(fut)
                    bar.update(1)
                    try:
                        result = fut.result()
                    except IngestError as exc:
                        self._fail(report, item, exc.reason)
                    except Exception as exc:  # a reader bug must not lose the rest of the run
                        log.exception("unexpected error reading %s", item.source)
                        self._fail(report, item, f"{type(exc).__name__}: {exc}")
                    else:
                        if result.kind == "unchanged":
                            report.skipped_unchanged += 1
                        elif result.kind == "duplicate":
                            report.duplicates += 1
                        batch.append(result)
                    submit_next()
                now = time.monotonic()
                for fut, item in list(inflight.items()):
                    s = runner.started_at(fut)
                    budget = item.budget_s or timeout
                    if s is not None and now - s > budget and not fut.done():
                        inflight.pop(fut)
                        runner.abandon(fut)  # the thread may still be busy; nothing waits for it
                        bar.update(1)
                        report.timed_out += 1
                        self._fail(report, item, f"timed out after {budget:g} s")
                        submit_next()
                if len(batch) >= batch_files:
                    self._commit_safe(batch, report)
                    batch = []
            if batch:
                self._commit_safe(batch, report)
        finally:
            runner.shutdown(inflight)
            bar.close()
        if prune:
            report.pruned = self.prune(paths)
        if (sum(report.nodes.values()) or report.pruned) and hasattr(self.stores, "optimize"):
            t = time.perf_counter()
            try:
                self.stores.optimize()  # one compaction per run, not per batch
            except Exception as exc:  # compaction is an optimisation: never fail an ingest over it
                log.warning("store compaction skipped: %s", exc)
            report.stages["compact"] = time.perf_counter() - t
        report.seconds = time.perf_counter() - t0
        return report

    def _fail(self, report: IngestReport, item: _Item, reason: str) -> None:
        """Report a file and record it in the manifest. Nodes of the version still stored stay
        tracked, unless the file's content is known to have changed (they no longer describe it)
        or its row was mid-write (pending): then they are deleted."""
        report.failed.append({"path": display_path(item.source), "reason": reason})
        rec = item.rec
        new_asset = scoped_asset_id(item.content_hash, item.collection) if item.content_hash else None
        keep = bool(rec and rec.status in ("done", "failed") and (new_asset is None or new_asset == rec.asset_id))
        try:
            if rec and not keep:
                for old in rec.stale_assets():
                    if not any(r.source != item.source for r in self.manifest.by_asset(old)):
                        self.stores.delete_asset(old)
            self.manifest.mark_failed(item.source, reason, size=item.size, mtime=item.mtime, keep_nodes=keep,
                                      collection=item.collection)
        except Exception as exc:
            raise IngestAborted(f"recording the failure of {display_path(item.source)} failed: "
                                f"{type(exc).__name__}: {exc}") from exc

    def _read_one(self, item: _Item, done_assets: Dict[str, List[str]], known_assets: Set[str],
                  stages: Dict[str, float], stage_lock: threading.Lock) -> _Pending:
        """Runs in a worker thread: no manifest or store writes here (the main thread owns them)."""
        t = time.perf_counter()
        try:
            raw = file_hash(item.path)
        except PermissionError:
            raise IngestError(item.source, "permission denied") from None
        except OSError as exc:
            raise IngestError(item.source, f"cannot read file: {exc.strerror or exc}") from None
        item.content_hash = raw
        item.budget_s = self._budget(item.path)
        asset_id = scoped_asset_id(raw, item.collection)
        rec = item.rec
        if rec and rec.status == "done" and rec.asset_id == asset_id and rec.config in (None, item.config):
            return _Pending(item, asset_id, [], rec.node_ids, kind="unchanged")  # only the mtime changed
        if asset_id in done_assets and (rec is None or rec.asset_id != asset_id):
            # Same bytes already stored under another path (same collection): record, encode nothing.
            return _Pending(item, asset_id, [], done_assets[asset_id], kind="duplicate")
        nodes = self.reader().read_file(item.path)
        got = {n.metadata.get("content_hash") or n.metadata.get("asset_id") for n in nodes}
        if got and got != {raw}:
            raise IngestError(item.source, "file changed while it was being read; the next run reads it again")
        nodes = self._prepare_nodes(nodes, item, raw, asset_id)
        with stage_lock:
            stages["read"] = stages.get("read", 0.0) + time.perf_counter() - t
        cleanup = rec is not None or asset_id in known_assets
        return _Pending(item, asset_id, nodes, [n.node_id for n in nodes], kind="new", cleanup=cleanup)

    def _budget(self, path: Path) -> float:
        """Reading time for one file: ``file_timeout_s``, plus ``page_timeout_s`` per page of a PDF
        (a 300-page scan legitimately needs far longer than a photo)."""
        cfg = self.settings.ingest
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
        return cfg.file_timeout_s + cfg.page_timeout_s * pages

    def _prepare_nodes(self, nodes: List[BaseNode], item: _Item, raw: str, asset_id: str) -> List[BaseNode]:
        """Collection stamp (and namespaced ids), polyglot note, safety check, PII redaction."""
        cfg = self.settings.ingest
        if asset_id != raw:
            _rescope(nodes, raw, asset_id)
        for n in nodes:
            n.metadata["collection"] = item.collection
        if nodes:
            from mmrag_li.readers.polyglot import polyglot_note

            note = polyglot_note(item.path, str(nodes[0].metadata.get("mime_type") or ""))
            if note:
                if cfg.refuse_polyglots:
                    raise IngestError(item.source, f"polyglot file refused: {note}")
                for n in nodes:
                    n.metadata["polyglot"] = note
                    for keys in (n.excluded_embed_metadata_keys, n.excluded_llm_metadata_keys):
                        if "polyglot" not in keys:
                            keys.append("polyglot")
        checker = self._c.get("safety_checker") or (self.safety_checker if cfg.safety_checker else None)
        if checker is not None:
            from mmrag_li.enrich.safety import check_nodes

            verdict = check_nodes(checker, nodes)
            if verdict is not None and not verdict.allowed:
                _discard_blobs(nodes)
                raise IngestError(item.source, f"refused by safety checker: {verdict.label} {verdict.score:.2f}")
        if cfg.redact_pii:
            from mmrag_li.enrich.pii import redact_nodes

            if redact_nodes(nodes, self.pii_redactor):
                _discard_text_originals(nodes)
        return nodes

    def _commit_safe(self, batch: List[_Pending], report: IngestReport) -> None:
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

    def _commit(self, batch: List[_Pending], report: IngestReport) -> None:
        """Embed and write one batch, delete what it replaces, then mark it done: the unit of crash safety."""
        stages = report.stages
        for p in batch:
            if p.kind == "unchanged":
                self.manifest.touch(p.source, p.item.size, p.item.mtime)
        writes = [p for p in batch if p.kind != "unchanged"]
        if not writes:
            return
        self.manifest.mark_pending([(p.source, p.asset_id, p.item.size, p.item.mtime, p.node_ids, p.item.collection,
                                     p.item.config) for p in writes])
        nodes = [n for p in writes for n in p.nodes]
        t = time.perf_counter()
        self._embed_text([n for n in nodes if not isinstance(n, ImageNode)], report)
        stages["embed_text"] = stages.get("embed_text", 0.0) + time.perf_counter() - t
        t = time.perf_counter()
        self._embed_images([n for n in nodes if isinstance(n, ImageNode)], report)
        stages["embed_image"] = stages.get("embed_image", 0.0) + time.perf_counter() - t
        t = time.perf_counter()
        by_collection: Dict[str, List[BaseNode]] = {c: [] for c in COLLECTIONS}
        for n in nodes:
            by_collection[collection_of(n.metadata.get("modality", "text"))].append(n)
        for coll, ns in by_collection.items():
            if ns:
                self.stores.upsert(coll, ns)
        # Only now, with the new nodes stored, remove what they replace (a query never sees a gap).
        for p in writes:
            rec = self.manifest.get(p.source)
            for old in (rec.prev_assets if rec else []):
                if not any(r.source != p.source for r in self.manifest.by_asset(old)):
                    self.stores.delete_asset(old)
            if p.cleanup and p.kind == "new":
                self._delete_leftovers(p.asset_id, set(p.node_ids))
        stages["store"] = stages.get("store", 0.0) + time.perf_counter() - t
        self.manifest.mark_done([p.source for p in writes])
        for p in writes:
            for n in p.nodes:
                kind = n.metadata.get("modality", "text")
                report.nodes[kind] = report.nodes.get(kind, 0) + 1
            warn = _warnings_of(p.nodes)
            if warn:
                report.warnings.append({"path": display_path(p.source), "warnings": warn})

    def _delete_leftovers(self, asset_id: str, keep: Set[str]) -> None:
        """Nodes of ``asset_id`` from an earlier, different write (a crashed run, another reader
        configuration) that this write does not contain."""
        stale: Dict[str, List[str]] = {}
        for node in self.stores.get_asset_nodes(asset_id):
            if node.node_id not in keep:
                stale.setdefault(collection_of(node.metadata.get("modality", "text")), []).append(node.node_id)
        for coll, ids in stale.items():
            self.stores.vector_store(coll).delete_nodes(node_ids=ids)

    def _embed_text(self, nodes: List[BaseNode], report: Optional[IngestReport] = None) -> None:
        if not nodes:
            return
        from mmrag_li.embeddings.text import text_model_identity

        emb = self.text_embed
        model_id, version = text_model_identity(emb)
        texts = [n.get_content(MetadataMode.EMBED) for n in nodes]
        keys = [cache_key(model_id, version, "text", t) for t in texts]
        computed = [0]

        def compute(idx: List[int]) -> List[List[float]]:
            computed[0] += len(idx)
            return emb.get_text_embedding_batch([texts[i] for i in idx])

        vecs = self.embedding_cache.get_or_compute(keys, compute)
        if report is not None:
            report.encoded["text"] += computed[0]
            report.cached["text"] += len(nodes) - computed[0]
        for n, v in zip(nodes, vecs):
            n.embedding = list(v)
            n.metadata["embed_model"] = model_id

    def _embed_images(self, nodes: List[ImageNode], report: Optional[IngestReport] = None) -> None:
        if not nodes:
            return
        clip = self.clip_embed
        paths = [n.image_path for n in nodes]
        keys = [cache_key(clip.model_id, clip.version, "image", file_hash(p)) for p in paths]
        computed = [0]

        def compute(idx: List[int]) -> List[List[float]]:
            computed[0] += len(idx)
            return clip.get_image_embedding_batch([paths[i] for i in idx])

        vecs = self.embedding_cache.get_or_compute(keys, compute)
        if report is not None:
            report.encoded["image"] += computed[0]
            report.cached["image"] += len(nodes) - computed[0]
        for n, v in zip(nodes, vecs):
            n.embedding = list(v)
            n.metadata["embed_model"] = clip.model_id

    def reconcile(self) -> List[str]:
        """Make the manifest and the stores agree before a run (after a lost table, a restored
        backup, a manifest rebuilt elsewhere). Cheap when they agree (row counts only); else
        rows whose nodes are missing go back to pending and untracked assets are deleted."""
        expected = self.manifest.expected_nodes()
        want: Dict[str, int] = {c: 0 for c in COLLECTIONS}
        for ids in _unique_ids(expected).values():
            for c, n in ids.items():
                want[c] += n
        have = self.stores.count()
        pending = self.manifest.counts().get("pending", 0)
        if all(have.get(c, 0) == want[c] for c in COLLECTIONS) or (
                pending and all(have.get(c, 0) >= want[c] for c in COLLECTIONS)):
            return []
        stored: Dict[str, Set[str]] = {}
        for c in COLLECTIONS:
            for node in self.stores.all_nodes(c):
                stored.setdefault(node.metadata.get("asset_id") or "", set()).add(node.node_id)
        notes: List[str] = []
        redo = [rec for rec in self.manifest.all() if rec.status in ("done", "failed") and rec.node_ids
                and not set(rec.node_ids) <= stored.get(rec.asset_id or "", set())]
        if redo:
            self.manifest.mark_pending([(r.source, r.asset_id, -1, -1.0, r.node_ids, r.collection, r.config)
                                        for r in redo])
            notes.append(f"{len(redo)} file(s) had nodes missing from the stores: marked for re-reading")
        known = self.manifest.known_assets()
        orphans = [a for a in stored if a and a not in known]
        for a in orphans:
            self.stores.delete_asset(a)
        if orphans:
            notes.append(f"deleted the nodes of {len(orphans)} asset(s) that no manifest row tracks")
        for n in notes:
            log.warning("reconcile: %s", n)
        return notes

    def prune(self, roots: Sequence[str | Path]) -> int:
        """Delete the nodes of files under ``roots`` that no longer exist on disk."""
        roots_abs = [str(Path(r).resolve()) for r in roots]
        removed = 0
        for rec in self.manifest.all():
            if not any(rec.source == r or rec.source.startswith(r.rstrip(os.sep) + os.sep) for r in roots_abs):
                continue
            if os.path.exists(rec.source):
                continue
            for old in rec.stale_assets():
                if not any(r.source != rec.source for r in self.manifest.by_asset(old)):
                    self.stores.delete_asset(old)
            self.manifest.remove(rec.source)
            removed += 1
        return removed

    def delete(self, asset_id: str) -> int:
        n = self.stores.delete_asset(asset_id)
        for rec in self.manifest.by_asset(asset_id):
            self.manifest.remove(rec.source)
        return n

    # ---- retrieval and answers --------------------------------------------------------------
    def describe_image(self, image_path: str, captions: bool = True, ocr: bool = True) -> str:
        """Caption + OCR of a query image, used to expand an image query into the text retrievers
        (``captions``/``ocr`` switch a part off, for ablations)."""
        from PIL import Image

        with Image.open(image_path) as im:
            im = im.convert("RGB")
            parts = []
            if captions and self.captioner is not None:
                parts.extend(self.captioner.caption([im]))
            if ocr and self.ocr is not None:
                try:
                    parts.append(self.ocr.recognize(im).text)
                except Exception as exc:  # OCR of a query image is a bonus, not a requirement
                    log.warning("OCR of query image %s failed: %s", image_path, exc)
        return " ".join(p for p in parts if p).strip()

    def as_retriever(self, **overrides: Any):
        from mmrag_li.retrieval.fusion import FusionRetriever

        cfg = self.settings.retrieval.model_copy(update=overrides)
        key = ("retriever", tuple(sorted((k, repr(v)) for k, v in overrides.items())))
        return self._get(str(key), lambda: FusionRetriever(
            self.stores, self.text_embed, self.clip_embed, cfg, reranker=self._reranker(cfg),
            describe_image=self.describe_image, bm25=self._bm25_cache()))

    def _bm25_cache(self):
        """One keyword index shared by every retriever of this pipeline."""
        from mmrag_li.retrieval.bm25 import BM25Cache
        from mmrag_li.retrieval.fusion import TEXT_RETRIEVERS

        return self._get("bm25", lambda: BM25Cache.for_stores(self.stores, TEXT_RETRIEVERS))

    def _reranker(self, cfg):
        if not cfg.rerank:
            return None
        from mmrag_li.retrieval.rerank import build_reranker

        return build_reranker(self.settings, self.clip_embed)

    def retrieve(self, query: Optional[str] = None, image: Optional[str | Path] = None, k: Optional[int] = None,
                 filters=None):
        bundle = QueryBundle(query_str=query or "", image_path=str(image) if image else None)
        return self.as_retriever().retrieve_assets(bundle, filters=filters, top_k=k)

    def as_query_engine(self, llm=None, llm_base_url: Optional[str] = None, **kwargs: Any):
        from mmrag_li.generation.llms import build_llm
        from mmrag_li.generation.query_engine import CitationQueryEngine

        if llm is None:
            llm = build_llm(self.settings.llm, base_url=llm_base_url)
        return CitationQueryEngine.from_defaults(
            self.as_retriever(), settings=self.settings, llm=llm,
            log_path=self.store_dir / "logs" / "queries.jsonl", **kwargs)

    def query(self, question: str, image: Optional[str | Path] = None, **kwargs: Any):
        engine = self.as_query_engine(**kwargs)
        return engine.query(QueryBundle(query_str=question, image_path=str(image) if image else None))

    async def aquery(self, question: str, image: Optional[str | Path] = None, **kwargs: Any):
        engine = self.as_query_engine(**kwargs)
        return await engine.aquery(QueryBundle(query_str=question, image_path=str(image) if image else None))

    def as_chat_engine(self, llm=None, llm_base_url: Optional[str] = None, **kwargs: Any):
        from mmrag_li.generation.chat_engine import MultiModalChatEngine

        engine = self.as_query_engine(llm=llm, llm_base_url=llm_base_url)
        return MultiModalChatEngine.from_defaults(query_engine=engine, llm=engine.llm, **kwargs)

    def as_tools(self, **kwargs: Any):
        from mmrag_li.generation.tools import make_tools

        return make_tools(self.as_query_engine(**kwargs), self.as_retriever())

    as_tool = as_tools

    @property
    def index(self):
        """A LlamaIndex ``MultiModalVectorStoreIndex`` over the text and image collections."""
        from mmrag_li.stores import build_multimodal_index

        return self._get("index", lambda: build_multimodal_index(
            self.stores, "text", embed_model=self.text_embed, image_embed_model=self.clip_embed))

    # ---- inspection ---------------------------------------------------------------------------
    def resolve_asset(self, path_or_id: str) -> Optional[str]:
        p = Path(path_or_id)
        if p.exists():
            rec = self.manifest.get(str(p.resolve()))
            return rec.asset_id if rec else None
        if self.manifest.by_asset(path_or_id):
            return path_or_id
        matches = [r.asset_id for r in self.manifest.all() if r.asset_id and r.asset_id.startswith(path_or_id)]
        return matches[0] if len(set(matches)) == 1 else None

    def inspect(self, path_or_id: str) -> Optional[Dict[str, Any]]:
        asset_id = self.resolve_asset(path_or_id)
        if asset_id is None:
            return None
        recs = self.manifest.by_asset(asset_id)
        nodes = sorted(self.stores.get_asset_nodes(asset_id),
                       key=lambda n: (n.metadata.get("page") or 0, NODE_KINDS.index(n.metadata.get("modality", "text"))
                                      if n.metadata.get("modality") in NODE_KINDS else 9, n.node_id))
        return {"asset_id": asset_id, "source": recs[0].source if recs else None,
                "status": recs[0].status if recs else None,
                "nodes": [{"id": n.node_id, "modality": n.metadata.get("modality"),
                           "text": n.get_content(MetadataMode.NONE), "metadata": n.metadata} for n in nodes]}

    def stats(self) -> Dict[str, Any]:
        counts = self.manifest.counts()
        return {"assets": len(self.manifest.done_assets()), "files": counts,
                "nodes": self.stores.count(), "store": str(self.store_dir.resolve()),
                "backend": self.settings.store.backend}

    def close(self) -> None:
        for name in ("stores", "manifest", "cache"):
            comp = self._c.pop(name, None)
            if comp is not None and hasattr(comp, "close"):
                comp.close()


# ---- helpers of the ingestion path ----------------------------------------------------------------
def _rescope(nodes: List[BaseNode], raw: str, asset_id: str) -> None:
    """Move nodes read from bytes ``raw`` to the collection-scoped ``asset_id`` (ids, links)."""
    for n in nodes:
        if n.id_.startswith(raw):
            n.id_ = asset_id + n.id_[len(raw):]
        n.metadata["asset_id"] = asset_id
        pid = n.metadata.get("parent_image_id")
        if isinstance(pid, str) and pid.startswith(raw):
            n.metadata["parent_image_id"] = asset_id + pid[len(raw):]
        src = n.relationships.get(NodeRelationship.SOURCE)
        if src is not None and getattr(src, "node_id", None) == raw:
            n.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=asset_id)


def _warnings_of(nodes: Sequence[BaseNode]) -> List[str]:
    out: List[str] = []
    for n in nodes:
        for key in _WARN_KEYS:
            val = n.metadata.get(key)
            if not val:
                continue
            for v in (val if isinstance(val, list) else [val]):
                line = f"{key}: {v}" if key != "ingest_warnings" else str(v)
                if line not in out:
                    out.append(line)
    return out


def _discard_blobs(nodes: Sequence[BaseNode]) -> None:
    """Refused content is not kept: remove the copies and renders the reader wrote."""
    for n in nodes:
        for key in ("blob_path", "thumbnail_path", "image_path"):
            p = n.metadata.get(key) or (getattr(n, "image_path", None) if key == "image_path" else None)
            if p:
                try:
                    os.unlink(p)
                except OSError:
                    pass


def _discard_text_originals(nodes: Sequence[BaseNode]) -> None:
    """With PII redaction, a verbatim copy of a text file must not stay in the blob store."""
    for n in nodes:
        if n.metadata.get("mime_type", "").startswith("text/") and n.metadata.get("blob_path"):
            try:
                os.unlink(n.metadata["blob_path"])
            except OSError:
                pass
            n.metadata.pop("blob_path", None)


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
