"""What happens to a file's nodes between reading and embedding, as LlamaIndex ``TransformComponent``s.

Each works in ``MultiModalRAG.ingest`` and in a stock ``llama_index.core.ingestion.IngestionPipeline``::

    IngestionPipeline(transformations=[CollectionStamp(collection="tenant-a"), PolyglotNote(),
                                       PIIRedaction.from_defaults(), CachedEmbedder(...), StoreWriter(stores)])

* :class:`CollectionStamp` stamps ``collection`` on every node and, outside the default collection,
  moves the nodes to a collection-scoped asset id (two tenants never share node ids).
* :class:`PolyglotNote` notes (or refuses) files that are valid in two formats at once.
* :class:`ImageSafetyFilter` runs an image safety checker on the whole-image nodes of each file.
* :class:`PIIRedaction` redacts e-mail addresses, phone numbers, IBANs and card numbers.

Transforms that look at whole files group the nodes by ``metadata["source"]``. A refused file
raises :class:`~mmrag_li.errors.IngestError` with ``on_refuse="raise"`` (what the ingest runner
uses: the file is reported as failed) or is dropped with a warning and listed in ``refused``
with ``on_refuse="drop"`` (the default: one bad file does not stop a pipeline run).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
from typing import Any, Dict, List, Literal, Optional, Sequence

from llama_index.core.schema import BaseNode, NodeRelationship, RelatedNodeInfo, TransformComponent
from pydantic import Field, PrivateAttr

from mmrag_li.config import Settings
from mmrag_li.errors import IngestError
from mmrag_li.ingest.report import DEFAULT_COLLECTION

log = logging.getLogger("mmrag_li")

_COLLECTION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


def scoped_asset_id(content_hash: str, collection: str) -> str:
    """Asset id of some bytes in a collection: the content hash itself in the default collection,
    a hash of (collection, content hash) elsewhere, so two tenants never share node ids.

    Args:
        content_hash: ``schema.file_hash`` of the file's bytes.
        collection: the collection name.
    """
    if collection == DEFAULT_COLLECTION:
        return content_hash
    return hashlib.sha256(f"{collection}\0{content_hash}".encode("utf-8")).hexdigest()[:32]


def check_collection(name: str) -> str:
    """Return ``name`` if it is a valid collection name, else raise ``ValueError``.

    Args:
        name: 1-64 letters, digits, ``_``, ``-`` or ``.``, starting with a letter or digit.
    """
    if not isinstance(name, str) or not _COLLECTION_RE.match(name):
        raise ValueError(f"invalid collection name {name!r}: use 1-64 letters, digits, '_', '-' or '.'")
    return name


def _by_source(nodes: Sequence[BaseNode]) -> Dict[str, List[BaseNode]]:
    groups: Dict[str, List[BaseNode]] = {}
    for n in nodes:
        groups.setdefault(str(n.metadata.get("source") or ""), []).append(n)
    return groups


def _hide_key(node: BaseNode, key: str) -> None:
    """Keep a metadata key away from the embedding model and the LLM."""
    for keys in (node.excluded_embed_metadata_keys, node.excluded_llm_metadata_keys):
        if key not in keys:
            keys.append(key)


def _unlink(path: Any) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


class ThreadedTransform(TransformComponent):
    """Base of the mmrag transforms: ``class_name()`` is the class name and ``acall`` runs
    ``__call__`` in a worker thread (the work is file I/O and synchronous model inference)."""

    @classmethod
    def class_name(cls) -> str:
        return cls.__name__

    async def acall(self, nodes: Sequence[BaseNode], **kwargs: Any) -> Sequence[BaseNode]:
        """Async twin of ``__call__`` (runs it in a thread).

        Args:
            nodes: the nodes to transform.
            **kwargs: passed on to ``__call__``.
        """
        return await asyncio.to_thread(self.__call__, nodes, **kwargs)


class NodeTransform(ThreadedTransform):
    """Base of the transforms that may refuse a file; refusals follow ``on_refuse``.

    Args:
        on_refuse: ``"raise"`` (IngestError for the file) or ``"drop"`` (drop its nodes, log, list it in ``refused``).
    """

    on_refuse: Literal["raise", "drop"] = Field("drop", description="What a refused file does: raise or drop.")

    _refused: List[IngestError] = PrivateAttr(default_factory=list)

    @property
    def refused(self) -> List[IngestError]:
        """Files dropped so far with ``on_refuse="drop"`` (``err.path``, ``err.reason``)."""
        return self._refused

    def _refuse(self, source: str, reason: str) -> None:
        err = IngestError(source, reason)
        if self.on_refuse == "raise":
            raise err
        log.warning("dropped %s", err)
        self._refused.append(err)


class CollectionStamp(ThreadedTransform):
    """Stamp ``collection`` on every node; outside the default collection, rename the nodes to the
    collection-scoped asset id (:func:`scoped_asset_id`), links included. Idempotent.

    Args:
        collection: the collection name (see :func:`check_collection`).
    """

    collection: str = Field(DEFAULT_COLLECTION, description="Collection stamped on every node.")

    def __call__(self, nodes: Sequence[BaseNode], **kwargs: Any) -> Sequence[BaseNode]:
        coll = check_collection(self.collection)
        for n in nodes:
            raw = n.metadata.get("content_hash") or n.metadata.get("asset_id")
            if raw and coll != DEFAULT_COLLECTION:
                _rescope(n, raw, scoped_asset_id(raw, coll))
            n.metadata["collection"] = coll
        return nodes


def _rescope(n: BaseNode, raw: str, asset_id: str) -> None:
    """Move a node read from bytes ``raw`` to the collection-scoped ``asset_id`` (ids, links)."""
    if n.id_.startswith(raw):
        n.id_ = asset_id + n.id_[len(raw):]
    n.metadata["asset_id"] = asset_id
    pid = n.metadata.get("parent_image_id")
    if isinstance(pid, str) and pid.startswith(raw):
        n.metadata["parent_image_id"] = asset_id + pid[len(raw):]
    src = n.relationships.get(NodeRelationship.SOURCE)
    if src is not None and getattr(src, "node_id", None) == raw:
        n.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=asset_id)


class PolyglotNote(NodeTransform):
    """Note a second format hidden in a file (e.g. a ZIP appended to a PNG) on its nodes, or refuse
    the file (``refuse=True``). Reads the file at ``metadata["source"]``, or at the ``file_path``
    keyword when all ``nodes`` come from that one file (the ingest runner passes it: with
    ``ingest.redact_pii`` a ``source`` holding PII is redacted and no longer a path).

    Args:
        refuse: refuse polyglot files instead of noting them (``ingest.refuse_polyglots``).
        on_refuse: see :class:`NodeTransform`.
    """

    refuse: bool = Field(False, description="Refuse polyglot files instead of noting them.")

    def __call__(self, nodes: Sequence[BaseNode], **kwargs: Any) -> Sequence[BaseNode]:
        from mmrag_li.readers.polyglot import polyglot_note

        out: List[BaseNode] = []
        file_path = kwargs.get("file_path")
        for source, group in _by_source(nodes).items():
            path = str(file_path) if file_path else source
            note = polyglot_note(path, str(group[0].metadata.get("mime_type") or "")) if path else None
            if note and self.refuse:
                self._refuse(path, f"polyglot file refused: {note}")
                continue
            if note:
                for n in group:
                    n.metadata["polyglot"] = note
                    _hide_key(n, "polyglot")
            out.extend(group)
        return out


class ImageSafetyFilter(NodeTransform):
    """Run an image safety checker (``check(PIL.Image) -> SafetyVerdict``) on the image and page
    nodes of each file; a refused file's nodes go, and so do the copies and renders the reader
    wrote to the blob store.

    Args:
        checker: an ``ImageSafetyChecker`` (see ``mmrag_li.enrich.safety``).
        on_refuse: see :class:`NodeTransform`.
    """

    checker: Any = Field(..., description="An image safety checker: check(image) -> SafetyVerdict.")

    @classmethod
    def from_defaults(cls, name: str = "open_nsfw", threshold: float = 0.8,
                      on_refuse: Literal["raise", "drop"] = "drop") -> "ImageSafetyFilter":
        """A filter with a built-in checker.

        Args:
            name: built-in checker name (``ingest.safety_checker``).
            threshold: refusal threshold (``ingest.safety_threshold``).
            on_refuse: see :class:`NodeTransform`.
        """
        from mmrag_li.enrich.safety import build_safety_checker

        return cls(checker=build_safety_checker(name, threshold=threshold), on_refuse=on_refuse)

    def __call__(self, nodes: Sequence[BaseNode], **kwargs: Any) -> Sequence[BaseNode]:
        from mmrag_li.enrich.safety import check_nodes

        out: List[BaseNode] = []
        for source, group in _by_source(nodes).items():
            verdict = check_nodes(self.checker, group)
            if verdict is not None and not verdict.allowed:
                _discard_blobs(group)
                self._refuse(source, f"refused by safety checker: {verdict.label} {verdict.score:.2f}")
                continue
            out.extend(group)
        return out


def _discard_blobs(nodes: Sequence[BaseNode]) -> None:
    """Refused content is not kept: remove the copies and renders the reader wrote."""
    for n in nodes:
        for key in ("blob_path", "thumbnail_path", "image_path"):
            p = n.metadata.get(key) or (getattr(n, "image_path", None) if key == "image_path" else None)
            if p:
                _unlink(p)


class PIIRedaction(NodeTransform):
    """Redact PII in node text, OCR words and text metadata (``mmrag_li.enrich.pii``); a file with
    PII keeps no verbatim copy of its text in the blob store.

    Args:
        redactor: a ``mmrag_li.enrich.pii.PIIRedactor``.
    """

    redactor: Any = Field(..., description="A mmrag_li.enrich.pii.PIIRedactor.")

    @classmethod
    def from_defaults(cls, phone_regions: Optional[Sequence[str]] = None) -> "PIIRedaction":
        """A redaction transform with a default redactor.

        Args:
            phone_regions: regions whose phone number formats are recognised (``ingest.pii_phone_regions``).
        """
        from mmrag_li.enrich.pii import DEFAULT_PHONE_REGIONS, PIIRedactor

        regions = DEFAULT_PHONE_REGIONS if phone_regions is None else phone_regions
        return cls(redactor=PIIRedactor(phone_regions=regions))

    def __call__(self, nodes: Sequence[BaseNode], **kwargs: Any) -> Sequence[BaseNode]:
        from mmrag_li.enrich.pii import redact_nodes

        for group in _by_source(nodes).values():
            if redact_nodes(group, self.redactor):
                for n in group:  # no verbatim copy of a text file stays in the blob store
                    if n.metadata.get("mime_type", "").startswith("text/") and n.metadata.get("blob_path"):
                        _unlink(n.metadata.pop("blob_path"))
        return nodes


def ingest_transforms(settings: Optional[Settings] = None, *, collection: Optional[str] = None,
                      safety_checker: Any = None, pii_redactor: Any = None,
                      on_refuse: Literal["raise", "drop"] = "drop") -> List[TransformComponent]:
    """The transforms ``MultiModalRAG.ingest`` applies between reading and embedding, in order:
    collection stamp, polyglot note, safety filter (when a checker is given or configured), PII
    redaction (when ``ingest.redact_pii``).

    Args:
        settings: the settings (``ingest.*``); defaults to ``Settings()``.
        collection: the collection; defaults to ``ingest.collection``.
        safety_checker: a checker to use instead of the one named in ``ingest.safety_checker``.
        pii_redactor: a ``PIIRedactor`` to use instead of one built from ``ingest.pii_phone_regions``.
        on_refuse: see :class:`NodeTransform`.
    """
    cfg = (settings or Settings()).ingest
    out: List[TransformComponent] = [
        CollectionStamp(collection=collection or cfg.collection or DEFAULT_COLLECTION),
        PolyglotNote(refuse=cfg.refuse_polyglots, on_refuse=on_refuse)]
    if safety_checker is None and cfg.safety_checker:
        from mmrag_li.enrich.safety import build_safety_checker

        safety_checker = build_safety_checker(cfg.safety_checker, threshold=cfg.safety_threshold)
    if safety_checker is not None:
        out.append(ImageSafetyFilter(checker=safety_checker, on_refuse=on_refuse))
    if cfg.redact_pii:
        out.append(PIIRedaction(redactor=pii_redactor, on_refuse=on_refuse) if pii_redactor is not None
                   else PIIRedaction.from_defaults(cfg.pii_phone_regions))
    return out


__all__ = ["ThreadedTransform", "NodeTransform", "CollectionStamp", "PolyglotNote", "ImageSafetyFilter", "PIIRedaction",
           "ingest_transforms", "scoped_asset_id", "check_collection"]
