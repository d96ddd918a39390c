"""The parts a ``MultiModalRAG`` is made of, built from ``Settings`` on first use (the wiring).

Every part can be passed in ready-made instead (``MultiModalRAG(settings, text_embed=..., stores=...)``):
the facade in ``mmrag_li.pipeline`` only uses them. Factories: ``ModalityStores.from_config``,
``build_text_embedding``, ``ClipEmbedding.from_defaults``, ``get_ocr_engine``, ``build_captioner``,
``DirectoryReader.from_defaults``, ``ingest.transforms.ingest_transforms``.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

from mmrag_li.config import Settings


class PipelineComponents:
    """Lazily built, injectable parts of one store's pipeline; a context manager that closes them.

    Args:
        settings: the settings (default ``Settings()``).
        **components: ready-made parts used instead of building them: ``stores``, ``manifest``,
            ``text_embed``, ``clip_embed``, ``ocr``, ``captioner``, ``cache`` (embedding cache),
            ``blob_store``, ``reader``, ``safety_checker``, ``pii_redactor``.
    """

    def __init__(self, settings: Optional[Settings] = None, **components: Any):
        self.settings = settings or Settings()
        self.store_dir = Path(self.settings.store_dir)
        self._c: Dict[str, Any] = dict(components)
        self._injected = frozenset(components)
        self._recovered: List[str] = []  # what opening the store repaired; goes into the next report

    def __enter__(self) -> "PipelineComponents":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _get(self, key: str, build: Callable[[], Any]) -> Any:
        if key not in self._c:
            self._c[key] = build()
        return self._c[key]

    # ---- components, built on first use ------------------------------------------------------------
    @property
    def manifest(self):
        """The manifest (a corrupt one is moved aside and rebuilt from the stores)."""
        from mmrag_li.ingest.recovery import open_manifest

        return self._get("manifest", lambda: open_manifest(self.store_dir / "manifest.sqlite", lambda: self.stores,
                                                           self._recovered))

    @property
    def stores(self):
        """The ``ModalityStores`` (``StoreCorruptError`` names a damaged table and the recovery)."""
        from mmrag_li.stores import ModalityStores

        return self._get("stores", lambda: ModalityStores.from_config(self.settings))

    @property
    def guard(self):
        """The tenant guard (``CollectionGuard``) of ``retrieval.allowed_collections``: None = every
        collection, ``[]`` = none, a list = those. Every read path goes through it."""
        from mmrag_li.guard import CollectionGuard

        return CollectionGuard.from_config(self.settings)

    @property
    def guarded_stores(self):
        """The stores as this caller may see them (``GuardedStores``: search, node reads, counts and
        deletes limited to the guard's collections); retrieval, inspect, delete and stats use it."""
        from mmrag_li.guard import GuardedStores

        return GuardedStores.wrap(self.stores, self.guard)

    @property
    def guarded_manifest(self):
        """The manifest rows this caller may see (``GuardedManifest``, read-only)."""
        from mmrag_li.guard import GuardedManifest

        return GuardedManifest(self.manifest, self.guard)

    @property
    def embedding_cache(self):
        """The embedding cache (a corrupt one is moved aside and started afresh)."""
        from mmrag_li.ingest.recovery import open_embedding_cache

        path = self.store_dir / "embedding_cache.sqlite" if self.settings.embedding.cache else None
        return self._get("cache", lambda: open_embedding_cache(path, self._recovered))

    @property
    def blob_store(self):
        """Copies of originals, page renders and thumbnails under the store."""
        from mmrag_li.blobs import BlobStore

        return self._get("blob_store", lambda: BlobStore(self.store_dir / "blobs"))

    @property
    def models(self):
        """The store's embedding models (``embeddings.resolve.resolve_models``): its ``models.json``
        when it has one (``ModelMismatchError`` when the config names other models), else the
        configuration resolved once (no network for an existing store that predates models.json)."""
        from mmrag_li.embeddings.resolve import resolve_models

        legacy = (self.store_dir / "manifest.sqlite").exists()
        return self._get("models", lambda: resolve_models(self.settings.embedding, self.store_dir,
                                                          allow_network=not legacy))

    @property
    def text_embed(self):
        """The text embedding model (the store's, see :attr:`models`)."""
        from mmrag_li.embeddings.text import build_text_embedding

        return self._get("text_embed", lambda: build_text_embedding(self.settings.embedding, self.models))

    @property
    def clip_embed(self):
        """The image (CLIP-space) embedding model (the store's, see :attr:`models`)."""
        return self._get("clip_embed", self._build_image_embedding)

    def _build_image_embedding(self):
        from mmrag_li.embeddings.image import build_image_embedding

        return build_image_embedding(self.settings.embedding, self.models)

    def record_models(self):
        """Write the store's ``models.json`` unless it has one (loads both models first, so a model
        that cannot load is never recorded); returns what the store records. Ingest calls it
        before the first vector is written."""
        from mmrag_li.embeddings.resolve import record

        if not self._c.get("models_recorded"):
            self._c["models"] = record(self.store_dir, self.models, text_embed=self.text_embed,
                                       image_embed=self.clip_embed)
            self._c["models_recorded"] = True
        return self._c["models"]

    @property
    def ocr(self):
        """The OCR engine (None when ``ocr.kind`` is ``none``)."""
        from mmrag_li.enrich.ocr import get_ocr_engine

        return self._get("ocr", lambda: get_ocr_engine(self.settings.ocr))

    @property
    def captioner(self):
        """The captioner (None when captions are off)."""
        from mmrag_li.enrich.caption import build_captioner

        return self._get("captioner", lambda: build_captioner(self.settings.caption))

    def reader(self):
        """The ``DirectoryReader`` ingest uses (this pipeline's blob store, OCR engine and captioner)."""
        from mmrag_li.readers.directory import DirectoryReader

        return self._get("reader", lambda: DirectoryReader.from_defaults(
            self.settings, blob_store=self.blob_store, ocr=self.ocr, captioner=self.captioner))

    @contextmanager
    def checked_query_image(self, image: Optional[str | Path]) -> Iterator[Optional[str]]:
        """A query image checked once where it enters (``readers.image.open_query_image``: sniffed,
        bomb-checked before decoding, upright, downscaled to ``ingest.model_max_side``) and saved
        as a temporary PNG, whose path is yielded (removed afterwards): the retrievers and the
        reranker never decode the original. Yields None for no image.

        Args:
            image: the query image path, or None.

        Raises:
            QueryImageError: not an image, a decompression bomb, unreadable (a UsageError).
        """
        if image is None:
            yield None
            return
        from mmrag_li.readers.image import open_query_image

        checked = open_query_image(image, self.settings.ingest)
        with tempfile.TemporaryDirectory(prefix="mmrag-query-") as tmp:
            path = os.path.join(tmp, "query.png")
            checked.save(path)
            yield path

    def transforms(self, collection: str) -> List[Any]:
        """The node transforms ingest applies per file (``ingest_transforms``; refusals raise).

        Args:
            collection: the collection to stamp.
        """
        from mmrag_li.enrich.safety import build_safety_checker
        from mmrag_li.ingest.transforms import ingest_transforms

        cfg = self.settings.ingest
        if cfg.safety_checker:
            self._get("safety_checker", lambda: build_safety_checker(cfg.safety_checker, cfg.safety_threshold))
        return ingest_transforms(
            self.settings, collection=collection, safety_checker=self._c.get("safety_checker"),
            pii_redactor=self._c.get("pii_redactor"), on_refuse="raise")

    def embedder(self):
        """A ``CachedEmbedder`` over this pipeline's models and embedding cache; models load on first
        use, and the first one loaded records the store's models (:meth:`record_models`)."""
        from mmrag_li.ingest.embed import CachedEmbedder

        def load(name: str):
            self.record_models()
            return getattr(self, name)

        return CachedEmbedder.lazy(lambda: load("text_embed"), lambda: load("clip_embed"), self.embedding_cache)

    def fingerprint(self) -> str:
        """``ingest.runner.config_fingerprint`` of the settings (and of an injected safety checker)."""
        from mmrag_li.ingest.runner import config_fingerprint

        injected = type(self._c["safety_checker"]).__name__ if "safety_checker" in self._injected else None
        return config_fingerprint(self.settings, injected)

    def close(self) -> None:
        """Close the stores, the manifest and the embedding cache (they reopen on next use)."""
        for key in ("stores", "manifest", "cache"):
            comp = self._c.pop(key, None)
            if comp is not None and hasattr(comp, "close"):
                comp.close()


__all__ = ["PipelineComponents"]
