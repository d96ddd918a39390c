"""The worker side of the Ray executor: the two ``map_batches`` stages and what they ship back.

Each stage is a callable class that Ray Data runs in an actor pool, so its models load once per
actor, not per batch:

* :class:`ReadStage` -- read + OCR + captions + node transforms (one ``DirectoryReader`` per actor);
* :class:`EmbedStage` -- text and image embeddings (one ``CachedEmbedder`` per actor).

Rows are plain columns (numbers, strings, bytes) so that they travel through Arrow blocks: a file
reference goes in (``idx``, ``path``, ``source``, ``hash``, ``budget``) and a row comes out with
``ok``/``reason`` and the pickled nodes. A file that cannot be read is a row with ``ok=False`` and
its reason -- never an exception, which would fail the job. Nothing here writes to the store or
the manifest: the driver commits (``ingest.ray_executor``). The only files a stage writes are
content-addressed blobs (page renders, thumbnails), atomically, under ``<store>/blobs``.

This module does not import Ray: Ray imports it on the workers.
"""

from __future__ import annotations

import json
import pickle
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Set

from llama_index.core.schema import BaseNode, ImageNode

from mmrag_li.config import Settings
from mmrag_li.errors import IngestError

PICKLE = pickle.HIGHEST_PROTOCOL


@dataclass
class WorkerSpec:
    """Everything a stage actor needs to build its components (pickled to every worker once).

    Args:
        settings: the run's settings, ``store_dir`` made absolute (blobs land under it).
        models: the store's ``StoreModels`` (recorded before anything is shipped).
        collection: the collection stamped on the nodes.
        cache_path: the store's embedding cache, read (never written) by the embed actors when
            they can open it; '' = none. New vectors travel back and the driver stores them.
    """

    settings: Settings
    models: Any
    collection: str
    cache_path: str = ""


def node_id() -> str:
    """The Ray node this process runs on ('' outside Ray)."""
    try:
        import ray

        return ray.get_runtime_context().get_node_id() or ""
    except Exception:  # not in a Ray worker
        return ""


def run_with_budget(fn: Callable[[], Any], budget_s: float, source: str) -> Any:
    """``fn()`` in a daemon thread, abandoned after ``budget_s`` seconds (as the local executor does).

    Args:
        fn: the work.
        budget_s: seconds allowed (<= 0: no limit).
        source: the file, named in the timeout error.

    Raises:
        IngestError: ``timed out after N s``; or whatever ``fn`` raised.
    """
    box: Dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the caller
            box["error"] = exc

    worker = threading.Thread(target=run, name="mmrag-ray-read", daemon=True)
    worker.start()
    worker.join(budget_s if budget_s > 0 else None)
    if worker.is_alive():
        raise IngestError(source, f"timed out after {budget_s:g} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


class ReadStage:
    """Ray Data stage: file references in, pickled nodes (or a reason) out.

    Args:
        spec: the :class:`WorkerSpec` (settings, collection).
    """

    def __init__(self, spec: WorkerSpec):
        from mmrag_li.blobs import BlobStore
        from mmrag_li.enrich.caption import build_captioner
        from mmrag_li.enrich.ocr import get_ocr_engine
        from mmrag_li.ingest.transforms import ingest_transforms
        from mmrag_li.readers.directory import DirectoryReader

        s = spec.settings
        self.reader = DirectoryReader.from_defaults(s, blob_store=BlobStore(Path(s.store_dir) / "blobs"),
                                                    ocr=get_ocr_engine(s.ocr), captioner=build_captioner(s.caption))
        self.transforms = ingest_transforms(s, collection=spec.collection, on_refuse="raise")
        self.node = node_id()

    def read(self, path: str, source: str, raw: str) -> List[BaseNode]:
        """Nodes of one file, checked against the hash the driver computed, transformed.

        Args:
            path: the file as walked.
            source: its resolved path (named in errors).
            raw: its content hash at planning time.
        """
        nodes = self.reader.read_file(path)
        got = {n.metadata.get("content_hash") or n.metadata.get("asset_id") for n in nodes}
        if got and got != {raw}:
            raise IngestError(source, "file changed while it was being read; the next run reads it again")
        for transform in self.transforms:  # collection stamp, polyglot note, safety check, PII redaction
            nodes = list(transform(nodes, file_path=Path(path)))
        return nodes

    def __call__(self, batch: Dict[str, Any]) -> Dict[str, List[Any]]:
        """Read every file of ``batch`` (columns ``idx``, ``path``, ``source``, ``hash``, ``budget``).

        Args:
            batch: one Ray Data batch (numpy format).
        """
        out: Dict[str, List[Any]] = {k: [] for k in ("idx", "ok", "reason", "timed_out", "nodes", "read_s",
                                                     "read_node", "read_batch")}
        batch_id = uuid.uuid4().hex[:12]
        for k in range(len(batch["idx"])):
            path, source, raw = str(batch["path"][k]), str(batch["source"][k]), str(batch["hash"][k])
            t = time.perf_counter()
            ok, reason, payload, timed_out = True, "", b"", False
            try:
                nodes = run_with_budget(lambda: self.read(path, source, raw), float(batch["budget"][k]), source)
                payload = pickle.dumps(nodes, protocol=PICKLE)
            except IngestError as exc:
                ok, reason, timed_out = False, exc.reason, exc.reason.startswith("timed out after")
            except MemoryError:
                ok, reason = False, "out of memory while reading"
            except Exception as exc:  # a reader bug is one bad file, not a failed job
                ok, reason = False, f"{type(exc).__name__}: {exc}"
            for key, val in (("idx", int(batch["idx"][k])), ("ok", ok), ("reason", reason), ("timed_out", timed_out),
                             ("nodes", payload), ("read_s", time.perf_counter() - t), ("read_node", self.node),
                             ("read_batch", batch_id)):
                out[key].append(val)
        return out


class ReadOnlyCache:
    """The embedding cache as an embed actor sees it: looked up (read-only SQLite, when the
    worker can open the store's file), never written; what it computes is kept in ``new`` for
    the driver to store. Records which keys the last call computed.

    Args:
        path: the store's ``embedding_cache.sqlite``; '' or unreadable = no lookups.
    """

    def __init__(self, path: str = ""):
        self._db: Optional[sqlite3.Connection] = None
        if path and Path(path).exists():
            try:
                self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False, timeout=30)
                self._db.execute("SELECT 1 FROM vectors LIMIT 1").fetchall()
            except sqlite3.Error:
                self._db = None
        self.new: Dict[str, Any] = {}
        self.last_keys: List[str] = []
        self.last_missing: Set[int] = set()

    def _lookup(self, keys: Sequence[str]) -> Dict[str, List[float]]:
        import numpy as np

        found: Dict[str, List[float]] = {}
        if self._db is None:
            return found
        try:
            for start in range(0, len(keys), 500):
                chunk = list(keys[start:start + 500])
                rows = self._db.execute(f"SELECT key, vec FROM vectors WHERE key IN ({','.join('?' * len(chunk))})",
                                        chunk)
                found.update({key: np.frombuffer(blob, dtype=np.float32).tolist() for key, blob in rows})
        except sqlite3.Error:  # a cache is an optimisation: compute instead
            return {}
        return found

    def get_or_compute(self, keys: Sequence[str], compute: Callable[[List[int]], List[List[float]]]
                       ) -> List[List[float]]:
        """One vector per key; ``compute(indices)`` once for the keys not found (``EmbeddingCache`` API).

        Args:
            keys: cache keys, one per node.
            compute: computes the vectors of the given indices.
        """
        found = self._lookup(keys)
        missing = [i for i, key in enumerate(keys) if key not in found]
        self.last_keys, self.last_missing = list(keys), set(missing)
        if missing:
            new = {keys[i]: v for i, v in zip(missing, compute(missing))}
            self.new.update(new)
            found.update(new)
        return [found[key] for key in keys]


class EmbedStage:
    """Ray Data stage: pickled nodes in, the same nodes with their vectors out (per row: which node
    ids were computed and the new cache entries, for the driver's report and cache).

    Args:
        spec: the :class:`WorkerSpec` (settings, store models, cache path).
    """

    def __init__(self, spec: WorkerSpec):
        from mmrag_li.embeddings.image import build_image_embedding
        from mmrag_li.embeddings.text import build_text_embedding
        from mmrag_li.ingest.embed import CachedEmbedder

        cfg, models = spec.settings.embedding, spec.models
        self.cache = ReadOnlyCache(spec.cache_path)
        self.embedder = CachedEmbedder.lazy(lambda: build_text_embedding(cfg, models),
                                            lambda: build_image_embedding(cfg, models), self.cache)
        self.node = node_id()

    def _embed(self, nodes: List[BaseNode]) -> Dict[str, str]:
        """Embed ``nodes`` in place (two model calls at most); returns node id -> cache key of the
        nodes whose vector was computed (not found in the cache)."""
        computed: Dict[str, str] = {}
        for embed, group in ((self.embedder.embed_text, [n for n in nodes if not isinstance(n, ImageNode)]),
                             (self.embedder.embed_images, [n for n in nodes if isinstance(n, ImageNode)])):
            self.cache.last_keys, self.cache.last_missing = [], set()
            embed(group)
            computed.update({group[i].node_id: self.cache.last_keys[i] for i in self.cache.last_missing})
        return computed

    def __call__(self, batch: Dict[str, Any]) -> Dict[str, List[Any]]:
        """Embed the nodes of every ``ok`` row of ``batch``; rows pass through with ``encoded_ids``
        (JSON list), ``new_vectors`` (pickled ``{cache key: vector}``), ``embed_s``, ``embed_node``,
        ``embed_batch`` added. A file whose embedding fails becomes a failed row.

        Args:
            batch: one Ray Data batch (numpy format) from :class:`ReadStage`.
        """
        import numpy as np

        t = time.perf_counter()
        n = len(batch["idx"])
        out: Dict[str, List[Any]] = {k: [v.item() if hasattr(v, "item") else v for v in batch[k]] for k in batch}
        files = [pickle.loads(out["nodes"][k]) if out["ok"][k] else [] for k in range(n)]
        self.cache.new = {}
        try:
            computed = self._embed([node for nodes in files for node in nodes])
        except Exception:  # find the file(s) at fault: embed one by one
            computed = {}
            for k in range(n):
                if not out["ok"][k]:
                    continue
                try:
                    computed.update(self._embed(files[k]))
                except Exception as exc:
                    out["ok"][k], out["reason"][k] = False, f"embedding failed: {type(exc).__name__}: {exc}"
                    files[k] = []
        out["encoded_ids"], out["new_vectors"] = [], []
        for k in range(n):
            ids = [node.node_id for node in files[k] if node.node_id in computed]
            out["encoded_ids"].append(json.dumps(ids))
            out["nodes"][k] = pickle.dumps(files[k], protocol=PICKLE) if out["ok"][k] else b""
            new = {computed[i]: np.asarray(self.cache.new[computed[i]], dtype=np.float32)
                   for i in ids if computed[i] in self.cache.new}
            out["new_vectors"].append(pickle.dumps(new, protocol=PICKLE))
        seconds = time.perf_counter() - t
        out["embed_s"] = [seconds / max(n, 1)] * n
        out["embed_node"] = [self.node] * n
        out["embed_batch"] = [uuid.uuid4().hex[:12]] * n
        return out


__all__ = ["WorkerSpec", "ReadStage", "EmbedStage", "ReadOnlyCache", "run_with_budget", "node_id"]
