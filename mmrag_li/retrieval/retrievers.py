"""The built-in retrievers: ordinary LlamaIndex ``BaseRetriever`` subclasses.

- :class:`VectorCollectionRetriever`: nearest neighbours of the query text in one collection of
  :class:`~mmrag_li.stores.ModalityStores` (text->image with the image embedding's text tower,
  text->caption, text->OCR, text->text with the text embedding).
- :class:`BM25StoreRetriever`: exact keyword matching over the stores' text (a :class:`BM25Cache`).
- :class:`ImageToImageRetriever`: nearest pictures of the query image (``QueryBundle.image_path``).

Each one is scoped the same way: optional ``filters`` (LlamaIndex ``MetadataFilters``) and a
tenant guard (:class:`~mmrag_li.guard.CollectionGuard`, from ``allowed_collections``: None = all,
``[]`` = nothing, a list = those collections), plus a relevance floor ``min_score``: hits scoring
at or below it are noise, not evidence. The guard's filter is pushed down to the store, hits are
checked against it again, and a deny-all guard never queries the store. They work on their own (``retriever.retrieve("...")``), in a
stock LlamaIndex pipeline, or inside :class:`~mmrag_li.retrieval.fusion.FusionRetriever`.

Every retriever embeds the query itself and ignores ``QueryBundle.embedding``: an embedding cached
on a shared bundle by another retriever (another model, another dimension) must never be reused
(LlamaIndex's QueryFusionRetriever trap, see DESIGN.md). Within one fused query the vector retrievers
share a :class:`~mmrag_li.retrieval.query_vectors.QueryVectorMemo` (``scoped(vectors=...)``): one
encode per embedding space, never across spaces.
"""

from __future__ import annotations

import asyncio
import copy
from abc import abstractmethod
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.callbacks import CallbackManager
from llama_index.core.schema import NodeWithScore, QueryBundle
from llama_index.core.vector_stores.types import MetadataFilters

from mmrag_li.config import RetrievalConfig
from mmrag_li.guard.scope import CollectionGuard
from mmrag_li.retrieval.bm25 import BM25Cache, compile_filters
from mmrag_li.retrieval.query_vectors import QueryVectorMemo

TEXT_RETRIEVERS = ("caption", "ocr", "text")
IMAGE_RETRIEVERS = ("image", "image2image")
ALL_RETRIEVERS = ("image", "caption", "ocr", "text", "bm25", "image2image")
# Cosine floors for the sentence-embedding retrievers: below ~0.2 MiniLM similarities are noise.
TEXT_FLOOR = 0.2

Floor = Union[float, Callable[[], float], None]


def and_filters(*parts: Optional[MetadataFilters]) -> Optional[MetadataFilters]:
    """AND together the non-empty ``MetadataFilters`` in ``parts`` (None when all are empty).

    Args:
        parts: filters to combine; ``None`` and empty ones are skipped.
    """
    present = [p for p in parts if p is not None and p.filters]
    if not present:
        return None
    if len(present) == 1:
        return present[0]
    return MetadataFilters(filters=present, condition="and")


def combine_filters(filters: Optional[MetadataFilters], allowed_collections: Any
                    ) -> Optional[MetadataFilters]:
    """The caller's filters AND the tenant guard (``CollectionGuard.filters``).

    Args:
        filters: the caller's filters (or None).
        allowed_collections: collections the caller may see: None = no restriction, ``[]`` = none
            (the result matches nothing), a list = those; or a ``CollectionGuard``.
    """
    guard = CollectionGuard.from_config(allowed_collections)
    if guard.unrestricted:
        return filters
    return guard.filters(filters)


def guard_of(config: Optional[RetrievalConfig], kwargs: Dict[str, Any]) -> CollectionGuard:
    """The tenant guard of a built-in retriever: the config's, narrowed by a ``guard`` in ``kwargs``
    (an explicit guard can only take collections away, never add them).

    Args:
        config: retrieval settings (``allowed_collections``).
        kwargs: the caller's overrides (``guard`` is read).
    """
    return CollectionGuard.from_config(config).narrow(kwargs.get("guard"))


def encoder_floor(image_embed: Any, name: str) -> float:
    """The image encoder's own relevance floor for ``name`` ("image" or "image2image"), 0 if none.

    Args:
        image_embed: the image embedding (e.g. ``ClipEmbedding``); its ``encoder.floors`` is read.
        name: the retriever name the floor is for.
    """
    enc = getattr(image_embed, "encoder", None)
    return float(getattr(enc, "floors", {}).get(name, 0.0))


def default_floor(name: str, config: Optional[RetrievalConfig] = None, image_embed: Any = None) -> Floor:
    """Relevance floor of one built-in retriever: configured, else the embedding model's own default.

    Without floors every retriever returns k hits however unrelated, and RRF then rewards an asset
    for merely appearing in many lists. Image floors come back as a zero-argument callable so the
    image encoder is loaded only when the retriever first runs.

    Args:
        name: retriever name (one of :data:`ALL_RETRIEVERS`).
        config: retrieval settings; ``config.min_scores[name]`` wins when set.
        image_embed: the image embedding whose encoder knows the image floors.
    """
    if config is not None and name in config.min_scores:
        return float(config.min_scores[name])
    if name in TEXT_RETRIEVERS:
        return TEXT_FLOOR
    if name in IMAGE_RETRIEVERS:
        return lambda: encoder_floor(image_embed, name)
    return 0.0


class ScopedRetriever(BaseRetriever):
    """Base of the built-in retrievers: a result size, a relevance floor and a filter scope.

    Subclasses implement :meth:`search`; ``_retrieve``/``_aretrieve`` add the scope and the floor.

    Args:
        similarity_top_k: how many hits one query returns at most.
        min_score: relevance floor; only hits scoring above it are returned. A float, a zero-argument
            callable evaluated on first use, or None for no floor.
        filters: LlamaIndex ``MetadataFilters`` applied to every query.
        allowed_collections: collections this retriever may return (None = all, ``[]`` = none).
        guard: a ``CollectionGuard`` (or anything ``CollectionGuard.from_config`` takes); combined
            with ``allowed_collections``, the retriever sees what both allow.
        callback_manager: LlamaIndex callback manager.
        verbose: LlamaIndex verbosity flag.
    """

    #: True for retrievers that need ``QueryBundle.image_path`` (fusion runs them for image queries only).
    needs_image: bool = False
    #: Query vectors shared with the other retrievers of the same query (set by :meth:`scoped`).
    vectors: Optional[QueryVectorMemo] = None

    def __init__(self, similarity_top_k: int = 20, min_score: Floor = None,
                 filters: Optional[MetadataFilters] = None, allowed_collections: Optional[Sequence[str]] = None,
                 guard: Any = None, callback_manager: Optional[CallbackManager] = None, verbose: bool = False):
        super().__init__(callback_manager=callback_manager, verbose=verbose)
        self.similarity_top_k = similarity_top_k
        self.min_score = min_score
        self.filters = filters
        self.guard = CollectionGuard.from_config(guard).narrow(CollectionGuard(allowed_collections))

    @property
    def allowed_collections(self) -> Optional[List[str]]:
        """The guard's collections, sorted (None = unrestricted, ``[]`` = none)."""
        return None if self.guard.allowed is None else sorted(self.guard.allowed)

    @allowed_collections.setter
    def allowed_collections(self, value: Optional[Sequence[str]]) -> None:
        self.guard = CollectionGuard(value)

    @property
    def floor(self) -> Optional[float]:
        """The resolved relevance floor (a callable ``min_score`` is evaluated once and kept)."""
        if callable(self.min_score):
            self.min_score = float(self.min_score())
        return self.min_score

    def scope(self, extra: Optional[MetadataFilters] = None) -> Optional[MetadataFilters]:
        """This retriever's filters AND ``extra`` AND its tenant guard.

        Args:
            extra: further filters for one query (or None).
        """
        return combine_filters(and_filters(self.filters, extra), self.guard)

    def scoped(self, filters: Optional[MetadataFilters] = None, top_k: Optional[int] = None,
               allowed_collections: Optional[Sequence[str]] = None, guard: Any = None,
               vectors: Optional[QueryVectorMemo] = None) -> "ScopedRetriever":
        """A shallow copy narrowed for one query: more filters, another k, a further tenant guard.

        Args:
            filters: filters ANDed with this retriever's own.
            top_k: result size for the copy (None keeps ``similarity_top_k``).
            allowed_collections: collections intersected with this retriever's guard (None = none added).
            guard: a further ``CollectionGuard`` intersected with it (None = none added).
            vectors: query vectors shared with the other retrievers of this query (None keeps the own).
        """
        _ = self.floor  # resolve a lazy floor once, here, rather than in every copy
        new = copy.copy(self)
        if vectors is not None:
            new.vectors = vectors
        new.similarity_top_k = top_k or self.similarity_top_k
        new.guard = self.guard.narrow(CollectionGuard(allowed_collections)).narrow(guard)
        new.filters = and_filters(self.filters, filters)
        return new

    def usable(self, query_bundle: QueryBundle) -> bool:
        """Whether the query holds what this retriever needs (text, or an image for image ones).

        Args:
            query_bundle: the query.
        """
        if self.needs_image:
            return bool(query_bundle.image_path)
        return bool((query_bundle.query_str or "").strip())

    @abstractmethod
    def search(self, query_bundle: QueryBundle, filters: Optional[MetadataFilters], k: int) -> List[NodeWithScore]:
        """Raw top-``k`` hits for the query under ``filters``, best first, before the floor.

        Args:
            query_bundle: the query (text and/or ``image_path``).
            filters: the complete scope (already combined with the tenant guard).
            k: result size.
        """

    def _retrieve(self, query_bundle: QueryBundle) -> List[NodeWithScore]:
        if self.guard.denies_all or not self.usable(query_bundle):
            return []
        floor = self.floor
        hits = self.guard.keep(self.search(query_bundle, self.scope(), self.similarity_top_k))
        return [h for h in hits if floor is None or (h.score or 0.0) > floor]

    async def _aretrieve(self, query_bundle: QueryBundle) -> List[NodeWithScore]:
        # async twin of _retrieve: the embedding models and LanceDB calls are blocking, so the
        # whole flow runs in a worker thread and concurrent retrievers really overlap.
        return await asyncio.to_thread(self._retrieve, query_bundle)


class VectorCollectionRetriever(ScopedRetriever):
    """Nearest neighbours of the query text's embedding in one collection of the stores.

    One class serves text->image (``collection="image"`` with the image embedding, whose text
    tower embeds the query), text->caption, text->OCR and text->text (with the text embedding).

    Args:
        stores: a ``ModalityStores`` (anything with ``query(collection, embedding, k, filters)``).
        collection: the collection to search ("image", "caption", "ocr" or "text").
        embed_model: embeds the query text (``get_query_embedding``) into that collection's space.
        **kwargs: :class:`ScopedRetriever` arguments (similarity_top_k, min_score, filters,
            allowed_collections, guard, callback_manager, verbose).
    """

    def __init__(self, stores: Any, collection: str, embed_model: Any, **kwargs: Any):
        super().__init__(**kwargs)
        self.stores = stores
        self.collection = collection
        self.embed_model = embed_model

    @classmethod
    def from_defaults(cls, stores: Any, collection: str, embed_model: Any, config: Optional[RetrievalConfig] = None,
                      name: Optional[str] = None, image_embed: Any = None, **kwargs: Any) -> "VectorCollectionRetriever":
        """A retriever with the configured k, floor and tenant guard.

        Args:
            stores: the ``ModalityStores``.
            collection: the collection to search.
            embed_model: the query embedding model for that collection.
            config: retrieval settings (``per_retriever_k``, ``min_scores``, ``allowed_collections``).
            name: the retriever name the floor is looked up under (default: ``collection``).
            image_embed: the image embedding whose encoder knows the image floors
                (default: ``embed_model`` when ``collection == "image"``).
            **kwargs: overrides of :class:`ScopedRetriever` arguments (a ``guard`` narrows the config's).
        """
        config = config or RetrievalConfig()
        name = name or collection
        if image_embed is None and collection == "image":
            image_embed = embed_model
        opts: Dict[str, Any] = {"similarity_top_k": config.per_retriever_k,
                                "min_score": default_floor(name, config, image_embed),
                                "guard": CollectionGuard.from_config(config)}
        opts.update(kwargs, guard=guard_of(config, kwargs))
        return cls(stores, collection, embed_model, **opts)

    def search(self, query_bundle: QueryBundle, filters: Optional[MetadataFilters], k: int) -> List[NodeWithScore]:
        """Cosine top-``k`` of the query text in ``collection`` (see :meth:`ScopedRetriever.search`)."""
        if self.vectors is not None:
            vec = self.vectors.get(self.embed_model, query_bundle.query_str)
        else:
            vec = self.embed_model.get_query_embedding(query_bundle.query_str)
        return self.stores.query(self.collection, vec, k, filters)


class ImageToImageRetriever(ScopedRetriever):
    """Nearest pictures of the query image (``QueryBundle.image_path``) in the image collection.

    Args:
        stores: a ``ModalityStores``.
        image_embed: embeds the query image (``get_image_embedding(path)``).
        collection: the collection to search (default "image").
        **kwargs: :class:`ScopedRetriever` arguments.
    """

    needs_image = True

    def __init__(self, stores: Any, image_embed: Any, collection: str = "image", **kwargs: Any):
        super().__init__(**kwargs)
        self.stores = stores
        self.image_embed = image_embed
        self.collection = collection

    @classmethod
    def from_defaults(cls, stores: Any, image_embed: Any, config: Optional[RetrievalConfig] = None,
                      **kwargs: Any) -> "ImageToImageRetriever":
        """A retriever with the configured k, floor ("image2image") and tenant guard.

        Args:
            stores: the ``ModalityStores``.
            image_embed: the image embedding.
            config: retrieval settings.
            **kwargs: overrides of the constructor's arguments (a ``guard`` narrows the config's).
        """
        config = config or RetrievalConfig()
        opts: Dict[str, Any] = {"similarity_top_k": config.per_retriever_k,
                                "min_score": default_floor("image2image", config, image_embed),
                                "guard": CollectionGuard.from_config(config)}
        opts.update(kwargs, guard=guard_of(config, kwargs))
        return cls(stores, image_embed, **opts)

    def search(self, query_bundle: QueryBundle, filters: Optional[MetadataFilters], k: int) -> List[NodeWithScore]:
        """Cosine top-``k`` of the query image (see :meth:`ScopedRetriever.search`)."""
        vec = self.image_embed.get_image_embedding(query_bundle.image_path)
        return self.stores.query(self.collection, vec, k, filters)


class BM25StoreRetriever(ScopedRetriever):
    """Exact keyword retrieval (BM25) over the text the stores hold; finds "invoice 4711".

    Scores are BM25 scores (not 0..1); the default floor is 0 (any keyword overlap counts).

    Args:
        cache: the :class:`BM25Cache` (rebuilt when the stores change).
        **kwargs: :class:`ScopedRetriever` arguments.
    """

    def __init__(self, cache: BM25Cache, **kwargs: Any):
        kwargs.setdefault("min_score", 0.0)
        super().__init__(**kwargs)
        self.cache = cache

    @classmethod
    def from_defaults(cls, stores: Any = None, config: Optional[RetrievalConfig] = None,
                      cache: Optional[BM25Cache] = None, collections: Sequence[str] = TEXT_RETRIEVERS,
                      **kwargs: Any) -> "BM25StoreRetriever":
        """A keyword retriever over ``collections`` of ``stores`` (or over a shared ``cache``).

        Args:
            stores: the ``ModalityStores`` (not needed when ``cache`` is given).
            config: retrieval settings (``per_retriever_k``, ``min_scores["bm25"]``, ``allowed_collections``).
            cache: a shared keyword index; default: one over ``collections`` of ``stores``.
            collections: the collections whose text is indexed.
            **kwargs: overrides of :class:`ScopedRetriever` arguments (a ``guard`` narrows the config's).
        """
        if cache is None:
            if stores is None:
                raise ValueError("BM25StoreRetriever.from_defaults needs stores or a BM25Cache")
            cache = BM25Cache.for_stores(stores, collections)
        config = config or RetrievalConfig()
        opts: Dict[str, Any] = {"similarity_top_k": config.per_retriever_k,
                                "min_score": default_floor("bm25", config),
                                "guard": CollectionGuard.from_config(config)}
        opts.update(kwargs, guard=guard_of(config, kwargs))
        return cls(cache, **opts)

    def search(self, query_bundle: QueryBundle, filters: Optional[MetadataFilters], k: int) -> List[NodeWithScore]:
        """BM25 top-``k`` among the nodes matching ``filters``, scored by the index of this
        retriever's tenant scope alone (see :class:`BM25Cache` and :meth:`ScopedRetriever.search`)."""
        match = compile_filters(filters)  # raises on an operator it does not know, before any work
        predicate = None if filters is None else match
        return self.cache.get(self.guard).search(query_bundle.query_str, k, predicate)


def default_retrievers(stores: Any, text_embed: Any, image_embed: Any, config: Optional[RetrievalConfig] = None,
                       bm25: Optional[BM25Cache] = None, filters: Optional[MetadataFilters] = None,
                       guard: Any = None) -> Dict[str, BaseRetriever]:
    """The built-in retrievers named in ``config.retrievers`` (plus "image2image", which fusion runs
    for image queries only), in that order.

    Args:
        stores: the ``ModalityStores``.
        text_embed: the text embedding (caption, OCR and text collections).
        image_embed: the image embedding (text tower for "image", image tower for "image2image").
        config: retrieval settings.
        bm25: a shared keyword index (default: one over the text collections of ``stores``).
        filters: filters every built-in retriever applies.
        guard: a ``CollectionGuard`` narrowing ``config.allowed_collections`` (None = the config's).
    """
    config = config or RetrievalConfig()
    scope = {"filters": filters, "guard": guard_of(config, {"guard": guard})}
    out: Dict[str, BaseRetriever] = {}
    for name in [n for n in config.retrievers if n != "image2image"] + ["image2image"]:
        if name == "image":
            out[name] = VectorCollectionRetriever.from_defaults(stores, "image", image_embed, config, **scope)
        elif name in TEXT_RETRIEVERS:
            out[name] = VectorCollectionRetriever.from_defaults(stores, name, text_embed, config, **scope)
        elif name == "bm25":
            out[name] = BM25StoreRetriever.from_defaults(stores, config, cache=bm25, **scope)
        elif name == "image2image":
            out[name] = ImageToImageRetriever.from_defaults(stores, image_embed, config, **scope)
        else:
            raise ValueError(f"unknown retriever {name!r} in retrieval.retrievers "
                             f"(choose from {', '.join(ALL_RETRIEVERS)})")
    return out


__all__ = ["ALL_RETRIEVERS", "BM25StoreRetriever", "IMAGE_RETRIEVERS", "ImageToImageRetriever", "ScopedRetriever",
           "TEXT_FLOOR", "TEXT_RETRIEVERS", "VectorCollectionRetriever", "and_filters", "combine_filters",
           "default_floor", "default_retrievers", "encoder_floor", "guard_of"]
