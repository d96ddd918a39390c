"""The sink: embedded nodes into this project's four modality collections, as a ``TransformComponent``.

``IngestionPipeline(vector_store=...)`` takes one vector store; our nodes go to four collections
(image, caption, ocr, text) chosen by ``metadata["modality"]``, so the writer is the last
transformation instead::

    pipeline = IngestionPipeline(transformations=[CollectionStamp(), CachedEmbedder(...), StoreWriter(stores=stores)])
    pipeline.run(nodes=DirectoryReader.from_defaults(settings).load_data("docs/"))

Writes are upserts by node id: running the same files again replaces, never duplicates.
"""

from __future__ import annotations

import uuid
from typing import Any, Dict, List, Sequence

from llama_index.core.schema import BaseNode
from pydantic import Field, PrivateAttr

from mmrag_li.ingest.transforms import ThreadedTransform
from mmrag_li.schema import COLLECTIONS, collection_of


def by_collection(nodes: Sequence[BaseNode]) -> Dict[str, List[BaseNode]]:
    """Nodes grouped by the collection their ``metadata["modality"]`` belongs to (empty ones omitted).

    Args:
        nodes: nodes with a ``modality`` in their metadata (``text`` when missing).
    """
    groups: Dict[str, List[BaseNode]] = {c: [] for c in COLLECTIONS}
    for n in nodes:
        groups[collection_of(n.metadata.get("modality", "text"))].append(n)
    return {c: ns for c, ns in groups.items() if ns}


class StoreWriter(ThreadedTransform):
    """Upsert embedded nodes into ``stores`` (a ``mmrag_li.stores.ModalityStores``), routed by
    modality, and pass them on unchanged. Nodes without an embedding are refused (``ValueError``
    naming them): the store never embeds.

    Never served from ``IngestionPipeline``'s transformation cache: a sink must run every time.

    Args:
        stores: the ``ModalityStores`` to write to (anything with ``upsert(collection, nodes)``).
    """

    stores: Any = Field(..., description="ModalityStores (upsert(collection, nodes)).")

    _written: Dict[str, int] = PrivateAttr(default_factory=dict)

    @property
    def written(self) -> Dict[str, int]:
        """Nodes written so far, per collection."""
        return self._written

    def to_dict(self, **kwargs: Any) -> Dict[str, Any]:
        # IngestionPipeline hashes to_dict() to find cached results; a fresh value each time means
        # it never skips the write because an identical batch was written before.
        data = {"class_name": self.class_name(), "stores": repr(self.stores)}
        data["run"] = uuid.uuid4().hex
        return data

    def __call__(self, nodes: Sequence[BaseNode], **kwargs: Any) -> Sequence[BaseNode]:
        missing = [n.node_id for n in nodes if n.embedding is None]
        if missing:
            raise ValueError(f"StoreWriter got {len(missing)} node(s) without an embedding (e.g. {missing[:3]}); "
                             "put an embedder (CachedEmbedder) before it")
        for coll, group in by_collection(nodes).items():
            self.stores.upsert(coll, group)
            self._written[coll] = self._written.get(coll, 0) + len(group)
        return nodes



__all__ = ["StoreWriter", "by_collection"]
