"""One cached embedder for text and image nodes, as a LlamaIndex ``TransformComponent``.

Vectors are looked up in the embedding cache by (model id, model version, kind, content): the
text the model sees (``MetadataMode.EMBED``) or the hash of the image file's bytes. Only misses
reach a model, once per batch; ``encoded``/``cached`` count both per kind.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Sequence, Tuple

from llama_index.core.schema import BaseNode, ImageNode, MetadataMode
from pydantic import Field, PrivateAttr

from mmrag_li.embeddings.cache import NullCache, cache_key
from mmrag_li.ingest.transforms import ThreadedTransform
from mmrag_li.schema import file_hash


class CachedEmbedder(ThreadedTransform):
    """Set ``node.embedding`` (and ``metadata["embed_model"]``) on text and image nodes, through the cache.

    ``ImageNode``s with an ``image_path`` go to ``image_embed_model`` (a ``ClipEmbedding``: the
    image itself is embedded), every other node to ``embed_model``.

    Args:
        embed_model: a LlamaIndex text ``BaseEmbedding``; required only when text nodes arrive.
        image_embed_model: a ``MultiModalEmbedding`` with ``model_id``/``version`` (e.g. ``ClipEmbedding``);
            required only when image nodes arrive.
        cache: an ``EmbeddingCache`` (``mmrag_li.embeddings.cache.open_cache``); default: no cache.
    """

    embed_model: Any = Field(None, description="Text embedding model (LlamaIndex BaseEmbedding).")
    image_embed_model: Any = Field(None, description="Image embedding model (ClipEmbedding).")
    cache: Any = Field(default_factory=NullCache, description="EmbeddingCache or NullCache.")

    _loaders: Dict[str, Callable[[], Any]] = PrivateAttr(default_factory=dict)
    _encoded: Dict[str, int] = PrivateAttr(default_factory=lambda: {"text": 0, "image": 0})
    _cached: Dict[str, int] = PrivateAttr(default_factory=lambda: {"text": 0, "image": 0})

    @classmethod
    def lazy(cls, text_model: Callable[[], Any], image_model: Callable[[], Any], cache: Any = None) -> "CachedEmbedder":
        """An embedder whose models are loaded on first use: a run that embeds no image never
        loads the image model.

        Args:
            text_model: returns the text embedding model.
            image_model: returns the image embedding model.
            cache: an ``EmbeddingCache``; default: no cache.
        """
        embedder = cls(cache=cache if cache is not None else NullCache())
        embedder._loaders = {"embed_model": text_model, "image_embed_model": image_model}
        return embedder

    def _model(self, field: str) -> Any:
        model = getattr(self, field)
        if model is None and field in self._loaders:
            model = self._loaders.pop(field)()
            setattr(self, field, model)
        if model is None:
            raise ValueError(f"CachedEmbedder has no {field} for the nodes it got")
        return model

    @property
    def encoded(self) -> Dict[str, int]:
        """Vectors computed by a model so far, per kind (``text``, ``image``)."""
        return self._encoded

    @property
    def cached(self) -> Dict[str, int]:
        """Vectors served from the cache so far, per kind."""
        return self._cached

    def __call__(self, nodes: Sequence[BaseNode], **kwargs: Any) -> Sequence[BaseNode]:
        self.embed_text([n for n in nodes if not isinstance(n, ImageNode)])
        self.embed_images([n for n in nodes if isinstance(n, ImageNode)])
        return nodes


    def embed_text(self, nodes: Sequence[BaseNode]) -> Tuple[int, int]:
        """Embed the text of ``nodes`` (as the model sees it); returns (encoded, cached).

        Args:
            nodes: text nodes (anything but image nodes).
        """
        if not nodes:
            return 0, 0
        from mmrag_li.embeddings.text import text_model_identity

        emb = self._model("embed_model")
        model_id, version = text_model_identity(emb)
        texts = [n.get_content(MetadataMode.EMBED) for n in nodes]
        return self._embed("text", nodes, model_id, version, texts, texts, emb.get_text_embedding_batch)

    def embed_images(self, nodes: Sequence[ImageNode]) -> Tuple[int, int]:
        """Embed the image files of ``nodes``; returns (encoded, cached).

        Args:
            nodes: image nodes with an ``image_path``.
        """
        if not nodes:
            return 0, 0
        clip = self._model("image_embed_model")
        paths = [n.image_path for n in nodes]
        return self._embed("image", nodes, clip.model_id, clip.version, [file_hash(p) for p in paths], paths,
                           clip.get_image_embedding_batch)

    def _embed(self, kind: str, nodes: Sequence[BaseNode], model_id: str, version: str, contents: List[str],
               inputs: List[Any], encode: Callable[[List[Any]], List[List[float]]]) -> Tuple[int, int]:
        keys = [cache_key(model_id, version, kind, c) for c in contents]
        computed = [0]

        def compute(idx: List[int]) -> List[List[float]]:
            computed[0] += len(idx)
            return encode([inputs[i] for i in idx])

        vecs = self.cache.get_or_compute(keys, compute)
        for n, v in zip(nodes, vecs):
            n.embedding = list(v)
            n.metadata["embed_model"] = model_id
        self._encoded[kind] += computed[0]
        self._cached[kind] += len(nodes) - computed[0]
        return computed[0], len(nodes) - computed[0]


__all__ = ["CachedEmbedder"]
