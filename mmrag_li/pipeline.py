"""``MultiModalRAG``: a thin facade that builds the pieces from config on first use and delegates.

file -> ``readers`` -> ``ingest`` (transforms, cached embedder, crash-safe runner) -> ``stores`` ->
``retrieval.FusionRetriever`` -> ``generation.VerifiedCitationQueryEngine``. Each piece also works
on its own (e.g. the readers and transforms in a stock ``IngestionPipeline``: examples/ingestion_pipeline.py).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from llama_index.core.schema import QueryBundle

from mmrag_li.components import PipelineComponents
from mmrag_li.config import Settings
from mmrag_li.errors import UsageError
from mmrag_li.ingest.errors import IngestAborted, StoreNotWritableError
from mmrag_li.ingest.report import DEFAULT_COLLECTION, NODE_KINDS, IngestReport, display_path
from mmrag_li.ingest.transforms import check_collection, scoped_asset_id
from mmrag_li.ingest.upkeep import StoreUpkeep
from mmrag_li.stores import StoreCorruptError

log = logging.getLogger("mmrag_li")

__all__ = ["MultiModalRAG", "IngestReport", "IngestAborted", "StoreNotWritableError", "StoreCorruptError",
           "scoped_asset_id", "check_collection", "display_path", "NODE_KINDS", "DEFAULT_COLLECTION"]


def _bundle(text: Optional[str], image: Optional[str | Path]) -> QueryBundle:
    return QueryBundle(query_str=text or "", image_path=str(image) if image else None)


class MultiModalRAG(PipelineComponents, StoreUpkeep):
    """Ingest, retrieve and answer over a folder of images, PDFs and text.

    Heavy parts (models, stores) are built on first use (:class:`~mmrag_li.components.PipelineComponents`),
    so ``inspect`` and ``stats`` stay fast. A context manager: ``with MultiModalRAG.from_config("default")
    as rag:`` closes the store on exit.

    Args:
        settings: the settings (default ``Settings()``).
        **components: ready-made parts used instead of building them (see ``PipelineComponents``).
    """

    @classmethod
    def from_config(cls, path: Optional[str | Path] = None, store_dir: Optional[str | Path] = None,
                    **overrides: Any) -> "MultiModalRAG":
        """Build from a config file or preset name (``Settings.load``).

        Args:
            path: a YAML path or preset name; None = defaults (+ ``MMRAG_*`` environment).
            store_dir: the store directory (overrides the config's).
            **overrides: settings overrides, e.g. ``ocr={"kind": "none"}``.
        """
        settings = Settings.load(path, **overrides)
        if store_dir is not None:
            settings.store_dir = str(store_dir)
        return cls(settings)

    from_defaults = from_config

    # ---- ingestion (reconcile, prune, prune_report, delete, gc: ingest.upkeep.StoreUpkeep) ---------------
    def ingest(self, paths: Sequence[str | Path] | str | Path, prune: bool = False, workers: Optional[int] = None,
               batch_files: Optional[int] = None, progress: bool = True, collection: Optional[str] = None,
               executor: Optional[str] = None, ray_address: Optional[str] = None) -> IngestReport:
        """Read, enrich, embed and store every file under ``paths``; never aborts on a bad file
        (``IngestAborted`` only when the store cannot be written; see ``ingest.runner.IngestRunner.run``).

        Args:
            paths: files and folders.
            prune: also delete the nodes of files under ``paths`` that no longer exist.
            workers: reading threads (default ``ingest.workers``).
            batch_files: files per committed batch (default ``ingest.batch_files``).
            progress: progress bar on stderr.
            collection: stamped on every node (default ``ingest.collection``).
            executor: ``local`` or ``ray`` (default ``ingest.executor``; see ``ingest.ray_executor``).
            ray_address: the Ray cluster for ``executor="ray"`` (default ``ingest.ray.address``).
        """
        from mmrag_li.ingest.runner import IngestRunner

        self.models  # a config naming other models than the store was built with fails here, before any change
        kind, extra = executor or self.settings.ingest.executor, {}
        if kind == "ray":
            from mmrag_li.ingest.ray_executor import RayIngestRunner as IngestRunner  # noqa: F811

            extra = {"record_models": self.record_models, "ray_address": ray_address, "injected": self._injected}
        elif kind != "local":
            raise UsageError(f"unknown executor {kind!r}: use local or ray")
        runner = IngestRunner(self.settings, manifest=lambda: self.manifest, stores=lambda: self.stores,
                              embedder=self.embedder, reader=self.reader, transforms=self.transforms,
                              fingerprint=self.fingerprint(), recovered=self._recovered, guard=self.guard, **extra)
        report = runner.run(paths, collection=collection, prune=prune, workers=workers, batch_files=batch_files,
                            progress=progress)
        if self.settings.retrieval.fusion not in ("rrf", "weighted"):  # calibrate now, not on the first query
            from mmrag_li.retrieval.calibration import ensure_calibration

            ensure_calibration(self.as_retriever())
        return report

    # ---- retrieval and answers ----------------------------------------------------------------------
    def describe_image(self, image_path: str, captions: bool = True, ocr: bool = True) -> str:
        """Caption + OCR text of a query image (expands an image query into the text retrievers).

        Args:
            image_path: the query image.
            captions: include the caption; ocr: include the OCR text (switches for ablations).
        """
        from mmrag_li.readers.image import open_query_image

        im = open_query_image(image_path, self.settings.ingest)  # sniffed, bomb-checked, upright RGB
        parts = list(self.captioner.caption([im])) if captions and self.captioner is not None else []
        if ocr and self.ocr is not None:
            try:
                parts.append(self.ocr.recognize(im).text)
            except Exception as exc:  # OCR of a query image is a bonus, not a requirement
                log.warning("OCR of query image %s failed: %s", image_path, exc)
        return " ".join(p for p in parts if p).strip()

    def as_retriever(self, **overrides: Any):
        """The ``FusionRetriever`` over this store; ``overrides`` change ``retrieval.*`` (one retriever each)."""
        from mmrag_li.retrieval.bm25 import BM25Cache
        from mmrag_li.retrieval.fusion import TEXT_RETRIEVERS, FusionRetriever
        from mmrag_li.retrieval.rerank import build_reranker

        cfg = self.settings.retrieval.model_copy(update=overrides)
        bm25 = self._get("bm25", lambda: BM25Cache.for_stores(self.guarded_stores, TEXT_RETRIEVERS))
        return self._get("retriever" + repr(sorted((k, repr(v)) for k, v in overrides.items())),
                         lambda: FusionRetriever.from_defaults(
                             self.guarded_stores, self.text_embed, self.clip_embed, cfg,
                             reranker=build_reranker(self.settings, self.clip_embed) if cfg.rerank else None,
                             describe_image=self.describe_image, bm25=bm25, guard=self.guard))

    def retrieve(self, query: Optional[str] = None, image: Optional[str | Path] = None, k: Optional[int] = None,
                 filters=None):
        """Best assets (``AssetHit``s, best first) for ``query`` text and/or an ``image`` path, ``k`` of them,
        within optional LlamaIndex ``MetadataFilters`` ``filters``."""
        with self.checked_query_image(image) as path:
            return self.as_retriever().retrieve_assets(_bundle(query, path), filters=filters, top_k=k)

    def as_query_engine(self, llm=None, llm_base_url: Optional[str] = None, **kwargs: Any):
        """A ``VerifiedCitationQueryEngine`` over :meth:`as_retriever`: ``llm`` (default from ``settings.llm``),
        ``llm_base_url`` for an OpenAI-compatible server, ``kwargs`` for its ``from_defaults``."""
        from mmrag_li.generation.llms import build_llm
        from mmrag_li.generation.query_engine import VerifiedCitationQueryEngine

        if llm is None:
            llm = build_llm(self.settings.llm, base_url=llm_base_url)
        return VerifiedCitationQueryEngine.from_defaults(
            self.as_retriever(), settings=self.settings, llm=llm,
            log_path=self.store_dir / "logs" / "queries.jsonl", **kwargs)

    def query(self, question: str, image: Optional[str | Path] = None, **kwargs: Any):
        """Answer ``question`` (about an optional ``image``) with verified citations; ``kwargs`` as for
        :meth:`as_query_engine`."""
        with self.checked_query_image(image) as path:
            return self.as_query_engine(**kwargs).query(_bundle(question, path))

    async def aquery(self, question: str, image: Optional[str | Path] = None, **kwargs: Any):
        """Async twin of :meth:`query` (same arguments: ``question``, ``image``, ``kwargs``)."""
        with self.checked_query_image(image) as path:
            return await self.as_query_engine(**kwargs).aquery(_bundle(question, path))

    def as_chat_engine(self, llm=None, llm_base_url: Optional[str] = None, **kwargs: Any):
        """A ``VerifiedCitationChatEngine`` around :meth:`as_query_engine` (``llm``, ``llm_base_url``);
        ``kwargs`` go to its ``from_defaults``."""
        from mmrag_li.generation.chat_engine import VerifiedCitationChatEngine

        engine = self.as_query_engine(llm=llm, llm_base_url=llm_base_url)
        return VerifiedCitationChatEngine.from_defaults(
            query_engine=engine, llm=engine.llm, **kwargs)

    def as_tools(self, **kwargs: Any):
        """Agent tools (question answering + evidence search); ``kwargs`` as for :meth:`as_query_engine`."""
        from mmrag_li.generation.tools import make_tools

        return make_tools(self.as_query_engine(**kwargs), self.as_retriever())

    as_tool = as_tools

    @property
    def index(self):
        """A LlamaIndex ``MultiModalVectorStoreIndex`` over the text and image collections."""
        from mmrag_li.stores import build_multimodal_index

        return self._get("index", lambda: build_multimodal_index(
            self.guarded_stores, "text", embed_model=self.text_embed, image_embed_model=self.clip_embed))

    # ---- inspection ---------------------------------------------------------------------------------
    def resolve_asset(self, path_or_id: str) -> Optional[str]:
        """The asset id of an ingested file, a full id or a unique id prefix among the collections
        ``retrieval.allowed_collections`` allows; None if nothing matches (``AssetIdError``: prefix
        too short or ambiguous).

        Args:
            path_or_id: a file path, an asset id or an id prefix.
        """
        from mmrag_li.ingest.catalog import resolve_asset

        return resolve_asset(self.guarded_manifest, path_or_id, ingest=self.settings.ingest)

    def inspect(self, path_or_id: str) -> Optional[Dict[str, Any]]:
        """``{"asset_id", "source", "status", "nodes": [{"id", "modality", "text", "metadata"}]}`` or None.

        Args:
            path_or_id: as for :meth:`resolve_asset`.
        """
        from mmrag_li.ingest.catalog import describe_asset

        asset_id = self.resolve_asset(path_or_id)
        return None if asset_id is None else describe_asset(self.guarded_manifest, self.guarded_stores, asset_id)

    def stats(self) -> Dict[str, Any]:
        """``{"assets", "files": {status: n}, "nodes": {collection: n}, "store", "backend"}``."""
        from mmrag_li.ingest.catalog import store_stats

        return store_stats(self.guarded_manifest, self.guarded_stores, self.store_dir, self.settings.store.backend)

