"""``MultiModalRAG``: the one object most users touch.

file -> reader -> enrich -> nodes -> embed (cached) -> stores -> fusion retriever -> query engine.
Ingestion is incremental and crash-safe (see ``manifest.py``): unchanged files are skipped
without reading them, changed files replace their old nodes, and every batch is committed to
the stores before the manifest says ``done``.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

from llama_index.core.schema import BaseNode, ImageNode, MetadataMode, QueryBundle
from tqdm import tqdm

from mmrag_li.blobs import BlobStore
from mmrag_li.config import Settings
from mmrag_li.embeddings.cache import cache_key, open_cache
from mmrag_li.errors import IngestError
from mmrag_li.manifest import Manifest
from mmrag_li.schema import COLLECTIONS, collection_of, file_hash

log = logging.getLogger("mmrag_li")

NODE_KINDS = ("image", "page", "crop", "ocr", "caption", "text")


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

    def to_dict(self) -> Dict[str, Any]:
        return {"files": self.files, "nodes": self.nodes, "failed": self.failed,
                "skipped_unchanged": self.skipped_unchanged, "duplicates": self.duplicates,
                "pruned": self.pruned, "seconds": round(self.seconds, 3),
                "stages": {k: round(v, 3) for k, v in self.stages.items()}, "store": self.store}


@dataclass
class _Pending:
    source: str
    asset_id: str
    size: int
    mtime: float
    nodes: List[BaseNode]
    replaces: Optional[str] = None  # previous asset id of this source, to delete


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
        return self._get("manifest", lambda: Manifest(self.store_dir / "manifest.sqlite"))

    @property
    def blob_store(self) -> BlobStore:
        return self._get("blob_store", lambda: BlobStore(self.store_dir / "blobs"))

    @property
    def stores(self):
        from mmrag_li.stores import ModalityStores

        return self._get("stores", lambda: ModalityStores.from_config(self.settings))

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
        return self._get("cache", lambda: open_cache(
            self.store_dir / "embedding_cache.sqlite" if self.settings.embedding.cache else None))

    def reader(self):
        from mmrag_li.readers.directory import DirectoryReader

        return self._get("reader", lambda: DirectoryReader.from_defaults(
            self.settings, blob_store=self.blob_store, ocr=self.ocr, captioner=self.captioner))

    # ---- ingestion ------------------------------------------------------------------------
    def ingest(self, paths: Sequence[str | Path] | str | Path, prune: bool = False,
               workers: Optional[int] = None, batch_files: int = 16, progress: bool = True) -> IngestReport:
        """Read, enrich, embed and store every file under ``paths``; never aborts on a bad file."""
        t0 = time.perf_counter()
        paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
        report = IngestReport(store=str(self.store_dir.resolve()))
        stages = report.stages
        for p in paths:
            if not Path(p).exists():
                report.failed.append({"path": str(p), "reason": "no such file or directory"})
        reader = self.reader()
        files = [f for p in paths if Path(p).exists() for f in reader.iter_files(p)]
        report.files = len(files)
        todo: List[tuple] = []
        done_assets = self.manifest.done_assets()
        for f in files:
            source = str(Path(f).resolve())
            try:
                st = os.stat(f)
            except OSError as exc:
                self._fail(report, source, f"cannot stat: {exc.strerror or exc}")
                continue
            rec = self.manifest.get(source)
            if rec and rec.status == "done" and rec.size == st.st_size and rec.mtime == st.st_mtime:
                report.skipped_unchanged += 1
                continue
            todo.append((f, source, st, rec))

        workers = max(1, workers or self.settings.ingest.workers)
        batch: List[_Pending] = []
        bar = tqdm(total=len(todo), desc="ingest", unit="file", file=sys.stderr, disable=not progress)
        with cf.ThreadPoolExecutor(max_workers=workers) as pool:
            window = max(2 * workers, 2)  # back-pressure: only a few files in flight
            it = iter(todo)
            inflight: Dict[cf.Future, tuple] = {}

            def submit_next() -> bool:
                item = next(it, None)
                if item is None:
                    return False
                inflight[pool.submit(self._read_one, item, done_assets, stages)] = item
                return True

            for _ in range(window):
                if not submit_next():
                    break
            while inflight:
                finished, _ = cf.wait(list(inflight), timeout=self.settings.ingest.file_timeout_s,
                                      return_when=cf.FIRST_COMPLETED)
                if not finished:  # nothing finished within the per-file timeout: give up on the oldest
                    fut = next(iter(inflight))
                    f, source, _st, _rec = inflight.pop(fut)
                    fut.cancel()
                    self._fail(report, source, f"timed out after {self.settings.ingest.file_timeout_s:.0f} s")
                    bar.update(1)
                    submit_next()
                    continue
                for fut in finished:
                    f, source, _st, _rec = inflight.pop(fut)
                    bar.update(1)
                    try:
                        result = fut.result()
                    except IngestError as exc:
                        self._fail(report, source, exc.reason)
                    except Exception as exc:  # a reader bug must not lose the rest of the run
                        log.exception("unexpected error reading %s", source)
                        self._fail(report, source, f"{type(exc).__name__}: {exc}")
                    else:
                        if result == "unchanged":
                            report.skipped_unchanged += 1
                        elif result == "duplicate":
                            report.duplicates += 1
                        elif result is not None:
                            batch.append(result)
                    submit_next()
                if len(batch) >= batch_files:
                    self._commit(batch, report)
                    batch = []
            if batch:
                self._commit(batch, report)
        bar.close()
        if prune:
            report.pruned = self.prune(paths)
        report.seconds = time.perf_counter() - t0
        return report

    def _fail(self, report: IngestReport, source: str, reason: str) -> None:
        report.failed.append({"path": source, "reason": reason})
        try:
            st = os.stat(source)
            self.manifest.mark_failed(source, reason, size=st.st_size, mtime=st.st_mtime)
        except OSError:
            self.manifest.mark_failed(source, reason)

    def _read_one(self, item: tuple, done_assets: Dict[str, List[str]], stages: Dict[str, float]):
        f, source, st, rec = item
        t = time.perf_counter()
        asset_id = file_hash(f)
        if rec and rec.status == "done" and rec.asset_id == asset_id:
            self.manifest.mark_pending([(source, asset_id, st.st_size, st.st_mtime, rec.node_ids)])
            self.manifest.mark_done([source])  # only the mtime changed
            return "unchanged"
        if asset_id in done_assets and (rec is None or rec.asset_id != asset_id):
            # Same bytes already stored under another path: record it, encode nothing.
            self.manifest.mark_pending([(source, asset_id, st.st_size, st.st_mtime, done_assets[asset_id])])
            self.manifest.mark_done([source])
            return "duplicate"
        nodes = self.reader().read_file(f)
        stages["read"] = stages.get("read", 0.0) + time.perf_counter() - t
        replaces = rec.asset_id if rec and rec.asset_id else None
        return _Pending(source, asset_id, st.st_size, st.st_mtime, nodes, replaces)

    def _commit(self, batch: List[_Pending], report: IngestReport) -> None:
        """Embed and write one batch, then mark it done: the unit of crash safety."""
        stages = report.stages
        self.manifest.mark_pending([(p.source, p.asset_id, p.size, p.mtime, [n.node_id for n in p.nodes])
                                    for p in batch])
        nodes = [n for p in batch for n in p.nodes]
        t = time.perf_counter()
        self._embed_text([n for n in nodes if not isinstance(n, ImageNode)])
        stages["embed_text"] = stages.get("embed_text", 0.0) + time.perf_counter() - t
        t = time.perf_counter()
        self._embed_images([n for n in nodes if isinstance(n, ImageNode)])
        stages["embed_image"] = stages.get("embed_image", 0.0) + time.perf_counter() - t
        t = time.perf_counter()
        for p in batch:
            stale = {p.replaces, p.asset_id} - {None}
            for old in stale:
                if old != p.asset_id and any(r.source != p.source for r in self.manifest.by_asset(old)):
                    continue  # another file still holds these bytes
                self.stores.delete_asset(old)
        by_collection: Dict[str, List[BaseNode]] = {c: [] for c in COLLECTIONS}
        for n in nodes:
            by_collection[collection_of(n.metadata.get("modality", "text"))].append(n)
        for coll, ns in by_collection.items():
            if ns:
                self.stores.upsert(coll, ns)
        stages["store"] = stages.get("store", 0.0) + time.perf_counter() - t
        self.manifest.mark_done([p.source for p in batch])
        for n in nodes:
            kind = n.metadata.get("modality", "text")
            report.nodes[kind] = report.nodes.get(kind, 0) + 1

    def _embed_text(self, nodes: List[BaseNode]) -> None:
        if not nodes:
            return
        from mmrag_li.embeddings.text import text_model_identity

        emb = self.text_embed
        model_id, version = text_model_identity(emb)
        texts = [n.get_content(MetadataMode.EMBED) for n in nodes]
        keys = [cache_key(model_id, version, "text", t) for t in texts]
        vecs = self.embedding_cache.get_or_compute(
            keys, lambda idx: emb.get_text_embedding_batch([texts[i] for i in idx]))
        for n, v in zip(nodes, vecs):
            n.embedding = list(v)
            n.metadata["embed_model"] = model_id

    def _embed_images(self, nodes: List[ImageNode]) -> None:
        if not nodes:
            return
        clip = self.clip_embed
        paths = [n.image_path for n in nodes]
        keys = [cache_key(clip.model_id, clip.version, "image", file_hash(p)) for p in paths]
        vecs = self.embedding_cache.get_or_compute(
            keys, lambda idx: clip.get_image_embedding_batch([paths[i] for i in idx]))
        for n, v in zip(nodes, vecs):
            n.embedding = list(v)
            n.metadata["embed_model"] = clip.model_id

    def prune(self, roots: Sequence[str | Path]) -> int:
        """Delete the nodes of files under ``roots`` that no longer exist on disk."""
        roots_abs = [str(Path(r).resolve()) for r in roots]
        removed = 0
        for rec in self.manifest.all():
            if not any(rec.source == r or rec.source.startswith(r.rstrip(os.sep) + os.sep) for r in roots_abs):
                continue
            if Path(rec.source).exists():
                continue
            others = [r for r in self.manifest.by_asset(rec.asset_id or "") if r.source != rec.source]
            if rec.asset_id and not others:
                self.stores.delete_asset(rec.asset_id)
            self.manifest.remove(rec.source)
            removed += 1
        return removed

    def delete(self, asset_id: str) -> int:
        n = self.stores.delete_asset(asset_id)
        for rec in self.manifest.by_asset(asset_id):
            self.manifest.remove(rec.source)
        return n

    # ---- retrieval and answers --------------------------------------------------------------
    def describe_image(self, image_path: str) -> str:
        """Caption + OCR of a query image, used to expand an image query into the text retrievers."""
        from PIL import Image

        with Image.open(image_path) as im:
            im = im.convert("RGB")
            parts = []
            if self.captioner is not None:
                parts.extend(self.captioner.caption([im]))
            if self.ocr is not None:
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
            describe_image=self.describe_image))

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
            self.stores, "text", self.text_embed, self.clip_embed))

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
