"""Distributed ingestion on Ray Data, with the local executor's guarantees.

``MultiModalRAG.ingest(paths, executor="ray")`` / ``mmrag ingest PATH --executor ray``:

1. The driver (this process) plans exactly as the local executor (:class:`IngestRunner`): walk,
   stat, consult the manifest; unchanged files are skipped before anything is shipped. It then
   hashes the remaining files (:func:`~mmrag_li.ingest.runner.triage`): a file whose bytes did not
   change (only its mtime) or that is stored under another path is settled here too.
2. The rest become a Ray Dataset of file references (``ray.data.from_items``), in waves of
   ``ingest.ray.wave_files``, through two ``map_batches`` stages over actor pools
   (``ActorPoolStrategy``; fractional ``num_cpus``, optional ``num_gpus`` / custom ``resources``;
   ``max_restarts``/``max_task_retries``): :class:`~mmrag_li.ingest.ray_stages.ReadStage` (read +
   OCR + captions + transforms) and :class:`~mmrag_li.ingest.ray_stages.EmbedStage` (text and
   image vectors). Each actor loads its models once.
3. Batches stream back to the driver (``iter_batches``, never ``take_all``), which commits them
   with the same :class:`~mmrag_li.ingest.batch.BatchCommitter` (write-new -> delete-old ->
   mark-done): a killed driver leaves pending rows that the next run completes, with no duplicate
   and no missing node. A file that cannot be read comes back as a row with its reason. If the
   job itself fails (a batch whose actor keeps dying), what came back is kept, the files still out
   are re-sent one per task (``ingest.ray.retry_rounds``) and those still lost are reported failed.

Where files and the store must be: workers open the walked paths and write page renders and
thumbnails under ``<store>/blobs``, so on a multi-machine cluster the input folders and the store
directory must be mounted at the same path on every node (NFS, a cloud file share, s3fs/gcsfuse
for a bucket). ``s3://``/``gs://`` URLs are not read directly (the readers open local paths). Only
the driver writes the manifest and the vector store.

Ray is imported here only, when this executor runs (``pip install mmrag_li[ray]``).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

from tqdm import tqdm

from mmrag_li.errors import IngestError, MMRAGError, UsageError
from mmrag_li.ingest.batch import FileItem, PendingFile
from mmrag_li.ingest.errors import IngestAborted
from mmrag_li.ingest.ray_stages import EmbedStage, ReadStage, WorkerSpec
from mmrag_li.ingest.report import IngestReport
from mmrag_li.ingest.runner import IngestRunner, triage

log = logging.getLogger("mmrag_li")

INSTALL_HINT = "the Ray executor needs Ray: pip install 'mmrag_li[ray]'"
# Driver environment the workers get too (a cluster started elsewhere has its own environment).
FORWARDED_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
# Injected components the workers cannot receive: they build theirs from the settings.
WORKER_BUILT = ("text_embed", "clip_embed", "ocr", "captioner", "reader", "safety_checker", "pii_redactor", "blob_store")


def import_ray() -> Any:
    """``import ray`` (with Ray Data), or :class:`MMRAGError` saying what to install."""
    try:
        import ray
        import ray.data  # noqa: F401 - the executor needs Ray Data, not only Ray core
    except ImportError as exc:
        raise MMRAGError(f"{INSTALL_HINT} ({exc})") from None
    return ray


def check_local_paths(paths: Sequence[Any]) -> None:
    """Refuse URLs: the readers open local paths (a bucket must be mounted on every node).

    Args:
        paths: what ``ingest`` was given.

    Raises:
        UsageError: a path is a URL (``s3://``, ``gs://``, ``file://``...).
    """
    for p in paths:
        text = os.fsdecode(p) if isinstance(p, bytes) else os.fspath(p)
        if "://" in text:
            raise UsageError(f"{text}: the Ray executor reads local paths only; mount the bucket or share "
                             "(s3fs, gcsfuse, NFS) at the same path on the driver and on every worker and "
                             "ingest that path")


class ShippedEmbedder:
    """The driver's embedder for :class:`BatchCommitter` when vectors were computed on the cluster:
    it embeds nothing, checks that every node has its vector, counts which were computed (vs
    served by the cache) and stores the workers' new vectors in the driver's embedding cache.

    Args:
        cache: the store's ``EmbeddingCache`` (or ``NullCache``/None: nothing is stored).
    """

    def __init__(self, cache: Any = None):
        self.cache = cache
        self._computed: Set[str] = set()

    def accept(self, computed_ids: Sequence[str], new_vectors: Dict[str, Any]) -> None:
        """Record a file that came back: its computed node ids and new cache entries.

        Args:
            computed_ids: node ids whose vector a model computed.
            new_vectors: ``{cache key: vector}`` to store.
        """
        self._computed.update(computed_ids)
        if new_vectors and hasattr(self.cache, "put_many"):
            self.cache.put_many(new_vectors)

    def embed_text(self, nodes: Sequence[Any]) -> Tuple[int, int]:
        """Check the vectors of ``nodes``; returns (computed, cached) like ``CachedEmbedder``.

        Args:
            nodes: nodes that came back from the embed stage.
        """
        missing = [n.node_id for n in nodes if n.embedding is None]
        if missing:
            raise ValueError(f"{len(missing)} node(s) came back without a vector (e.g. {missing[:3]})")
        encoded = sum(1 for n in nodes if n.node_id in self._computed)
        self._computed.difference_update(n.node_id for n in nodes)
        return encoded, len(nodes) - encoded

    embed_images = embed_text


@dataclass
class ExecutorStats:
    """Where the batches ran; ``to_dict()`` becomes ``IngestReport.executor``.

    Args:
        address: the cluster's GCS address.
        shipped: files sent to the cluster.
        rounds: Datasets run (a retry round adds one).
        lost: files reported failed because the job failed.
        batches: stage -> Ray node id -> batch ids run there.
    """

    address: str = ""
    shipped: int = 0
    rounds: int = 0
    lost: int = 0
    batches: Dict[str, Dict[str, Set[str]]] = field(default_factory=lambda: {"read": {}, "embed": {}})

    def add(self, stage: str, node: str, batch: str) -> None:
        """Note that batch ``batch`` of ``stage`` ran on ``node``.

        Args:
            stage: ``read`` or ``embed``.
            node: the Ray node id.
            batch: the batch id the actor gave it.
        """
        self.batches.setdefault(stage, {}).setdefault(node, set()).add(batch)

    def to_dict(self) -> Dict[str, Any]:
        """``{"kind": "ray", "address", "shipped", "rounds", "lost", "nodes": {node: batches},
        "stages": {stage: {node: batches}}}``."""
        nodes: Dict[str, int] = {}
        for per_node in self.batches.values():
            for node, ids in per_node.items():
                nodes[node] = nodes.get(node, 0) + len(ids)
        return {"kind": "ray", "address": self.address, "shipped": self.shipped, "rounds": self.rounds,
                "lost": self.lost, "nodes": nodes,
                "stages": {s: {n: len(ids) for n, ids in per.items()} for s, per in self.batches.items()}}


class RayIngestRunner(IngestRunner):
    """:class:`IngestRunner` whose reading and embedding run on a Ray cluster; planning, commits,
    prune and compaction are the local executor's own (same store, same manifest, same report).

    Args:
        settings: the settings (``ingest.ray.*``).
        record_models: records the store's models before the first vector (``PipelineComponents.record_models``)
            and returns them; they are shipped to the embed actors.
        ray_address: the cluster (default ``ingest.ray.address``, then ``$RAY_ADDRESS``, else a local
            Ray started for this run and stopped after it). An already initialised Ray is used as is.
        injected: names of components injected into the facade (the workers build their own from
            the settings; a warning names those that are not used).
        **runner: the :class:`IngestRunner` arguments (manifest, stores, embedder, reader, transforms,
            fingerprint, recovered); only the embedder's ``cache`` is used here.
    """

    def __init__(self, settings: Any, *, record_models: Callable[[], Any], ray_address: Optional[str] = None,
                 injected: Sequence[str] = (), **runner: Any):
        embedder = runner.pop("embedder")
        super().__init__(settings, embedder=lambda: ShippedEmbedder(getattr(embedder(), "cache", None)), **runner)
        self._record_models = record_models
        self.ray_address = ray_address
        self.unused = sorted(set(injected) & set(WORKER_BUILT))

    def run(self, paths: Any, **kwargs: Any) -> IngestReport:
        """Ingest every file under ``paths`` on the cluster; same arguments and report as
        :meth:`IngestRunner.run` (``workers`` is ignored: the actor pools are sized by ``ingest.ray``).

        Args:
            paths: local files and folders (visible at the same path on every node).
            **kwargs: ``collection``, ``prune``, ``workers``, ``batch_files``, ``progress``.
        """
        check_local_paths([paths] if isinstance(paths, (str, bytes, os.PathLike)) else list(paths))
        if self.unused:
            log.warning("executor ray: the workers build their own %s from the settings; the injected ones are "
                        "not used", ", ".join(self.unused))
        return super().run(paths, **kwargs)

    # ---- the driver loop --------------------------------------------------------------------------
    def _read_and_commit(self, todo: List[FileItem], report: IngestReport, workers: Optional[int],
                         batch_files: Optional[int], progress: bool) -> None:
        stats = ExecutorStats()
        report.executor = stats.to_dict()
        if not todo:
            return
        ray = import_ray()
        cfg = self.settings.ingest.ray
        batch_files = max(1, batch_files or self.settings.ingest.batch_files)
        done_assets = self.manifest.done_assets(self.fingerprint)
        known = self.manifest.known_assets()
        bar = tqdm(total=len(todo), desc="ingest (ray)", unit="file", file=sys.stderr, disable=not progress)
        started, spec, next_idx = False, None, 0
        try:
            for start in range(0, len(todo), cfg.wave_files):
                remote = self._settle(todo[start:start + cfg.wave_files], done_assets, report, batch_files, bar)
                if not remote:
                    continue
                if spec is None:
                    started = self._connect(ray, stats, progress)
                    spec = self._spec(report.collection)
                keyed = {next_idx + i: entry for i, entry in enumerate(remote)}
                next_idx += len(remote)
                self._run_wave(ray, spec, keyed, known, report, batch_files, bar, stats)
        finally:
            bar.close()
            report.executor = stats.to_dict()
            if started:
                ray.shutdown()

    def _settle(self, wave: List[FileItem], done_assets: Dict[str, List[str]], report: IngestReport,
                batch_files: int, bar: Any) -> List[Tuple[str, FileItem]]:
        """Hash ``wave`` here; commit what needs no reading; return ``(asset_id, item)`` to ship."""
        remote: List[Tuple[str, FileItem]] = []
        batch: List[PendingFile] = []
        for item in wave:
            try:
                asset_id, pending = triage(item, self.settings, done_assets)
            except IngestError as exc:
                bar.update(1)
                self.committer.fail(report, item, exc.reason)
                continue
            if pending is None:
                remote.append((asset_id, item))
                continue
            bar.update(1)
            if pending.kind == "unchanged":
                report.skipped_unchanged += 1
            else:
                report.duplicates += 1
            batch.append(pending)
            if len(batch) >= batch_files:
                self.committer.commit(batch, report)
                batch = []
        if batch:
            self.committer.commit(batch, report)
        return remote

    def _connect(self, ray: Any, stats: ExecutorStats, progress: bool) -> bool:
        """Join (or start) the cluster; True when this run initialised Ray (and shuts it down)."""
        started = False
        if not ray.is_initialized():
            address = self.ray_address or self.settings.ingest.ray.address or os.environ.get("RAY_ADDRESS") or "local"
            env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
            kwargs: Dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
            if env:
                kwargs["runtime_env"] = {"env_vars": env}
            if address == "local":
                kwargs["include_dashboard"] = False
            try:
                ray.init(address=address, **kwargs)
            except Exception as exc:
                where = "start a local Ray" if address == "local" else f"reach the Ray cluster at {address}"
                raise MMRAGError(f"cannot {where}: {type(exc).__name__}: {exc}") from exc
            started = True
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # the driver shows one bar over files
        if not progress:
            logging.getLogger("ray.data").setLevel(logging.WARNING)
        stats.address = str(ray.get_runtime_context().gcs_address or "")
        return started

    def _spec(self, collection: str) -> WorkerSpec:
        """What the actors need: settings (absolute store dir), recorded models, cache path."""
        models = self._record_models()  # models.json before the first vector, as the local executor does
        settings = self.settings.model_copy(update={"store_dir": str(self.store_dir.resolve())})
        cache = getattr(self.committer.embedder, "cache", None)
        return WorkerSpec(settings, models, collection, str(getattr(cache, "path", "") or ""))

    def _dataset(self, ray: Any, spec: WorkerSpec, remote: Dict[int, Tuple[str, FileItem]], isolate: bool) -> Any:
        """The Dataset of file references through the read and embed stages (``isolate``: one file per task)."""
        cfg = self.settings.ingest.ray
        timeout = float(self.settings.ingest.file_timeout_s)
        rows = [{"idx": idx, "path": str(item.path), "source": item.source, "hash": item.content_hash,
                 "budget": float(item.budget_s or timeout)} for idx, (_, item) in remote.items()]
        ds = ray.data.from_items(rows)
        for fn, stage in ((ReadStage, cfg.read), (EmbedStage, cfg.embed)):
            args: Dict[str, Any] = {
                "batch_size": 1 if isolate else stage.batch_size, "batch_format": "numpy",
                "compute": ray.data.ActorPoolStrategy(min_size=min(stage.min_actors, stage.actors),
                                                      max_size=stage.actors),
                "fn_constructor_args": (spec,), "num_cpus": stage.num_cpus}
            if stage.num_gpus:
                args["num_gpus"] = stage.num_gpus
            if stage.resources:
                args["resources"] = dict(stage.resources)
            with warnings.catch_warnings():  # actor fault tolerance still goes through **ray_remote_args
                warnings.simplefilter("ignore", DeprecationWarning)
                ds = ds.map_batches(fn, max_restarts=cfg.max_restarts, max_task_retries=cfg.max_task_retries, **args)
        return ds

    def _run_wave(self, ray: Any, spec: WorkerSpec, remote: Dict[int, Tuple[str, FileItem]], known: Set[str],
                  report: IngestReport, batch_files: int, bar: Any, stats: ExecutorStats) -> None:
        """Ship ``remote``, commit what streams back; retry what a failed job lost, then report it."""
        remaining = dict(remote)
        stats.shipped += len(remote)
        error: Optional[BaseException] = None
        for rnd in range(1 + self.settings.ingest.ray.retry_rounds):
            if not remaining:
                break
            stats.rounds += 1
            batch: List[PendingFile] = []
            error = None
            try:
                ds = self._dataset(ray, spec, remaining, isolate=rnd > 0)
                for rows in ds.iter_batches(batch_size=batch_files, batch_format="numpy"):
                    batch.extend(self._accept(rows, remaining, known, report, stats, bar))
                    if len(batch) >= batch_files:
                        self.committer.commit(batch, report)
                        batch = []
            except IngestAborted:
                raise
            except Exception as exc:  # the job failed: keep what came back, re-send the rest
                error = exc
                log.warning("Ray job failed with %d file(s) still out (%s: %s)%s", len(remaining), type(exc).__name__,
                            str(exc).splitlines()[0][:300] if str(exc) else "",
                            "; re-sending them one per task" if rnd < self.settings.ingest.ray.retry_rounds else "")
            if batch:
                self.committer.commit(batch, report)
        if remaining:
            stats.lost += len(remaining)
            what = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}" if error else "no result"
            for _, item in remaining.values():
                bar.update(1)
                self.committer.fail(report, item, f"the Ray job lost this file ({what}); the next run reads it again")

    def _accept(self, rows: Dict[str, Any], remaining: Dict[int, Tuple[str, FileItem]], known: Set[str],
                report: IngestReport, stats: ExecutorStats, bar: Any) -> List[PendingFile]:
        """Rows that came back: read files to commit; failed ones reported now."""
        out: List[PendingFile] = []
        embedder = self.committer.embedder
        for k in range(len(rows["idx"])):
            entry = remaining.pop(int(rows["idx"][k]), None)
            if entry is None:  # already accepted (a retried task's twin): commit once
                continue
            asset_id, item = entry
            bar.update(1)
            stats.add("read", str(rows["read_node"][k]), str(rows["read_batch"][k]))
            stats.add("embed", str(rows["embed_node"][k]), str(rows["embed_batch"][k]))
            report.add_stage("read", float(rows["read_s"][k]))
            report.add_stage("embed", float(rows["embed_s"][k]))
            if not bool(rows["ok"][k]):
                report.timed_out += int(bool(rows["timed_out"][k]))
                self.committer.fail(report, item, str(rows["reason"][k]))
                continue
            nodes = pickle.loads(rows["nodes"][k])
            embedder.accept(json.loads(str(rows["encoded_ids"][k])), pickle.loads(rows["new_vectors"][k]))
            cleanup = item.rec is not None or asset_id in known
            out.append(PendingFile(item, asset_id, nodes, [n.node_id for n in nodes], kind="new", cleanup=cleanup))
        return out


__all__ = ["RayIngestRunner", "ShippedEmbedder", "ExecutorStats", "import_ray", "check_local_paths", "INSTALL_HINT"]
