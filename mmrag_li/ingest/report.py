"""What one ingestion run did: :class:`IngestReport` (the CLI's ``ingest --json`` document)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Sequence

from llama_index.core.schema import BaseNode

NODE_KINDS = ("image", "page", "crop", "ocr", "caption", "text")
DEFAULT_COLLECTION = "default"
# Node metadata keys whose presence is worth a line in the report's warnings.
WARN_KEYS = ("ingest_warnings", "polyglot", "extension_mismatch", "pdf_repaired", "ocr_error", "caption_error")


def display_path(path: Any) -> str:
    """A path as JSON-safe text: bytes that are not UTF-8 are shown as ``\\xNN``.

    Args:
        path: a ``str``, ``bytes`` or ``os.PathLike``.
    """
    s = os.fspath(path)
    if isinstance(s, bytes):
        return s.decode("utf-8", "backslashreplace")
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return os.fsencode(s).decode("utf-8", "backslashreplace")


def node_warnings(nodes: Sequence[BaseNode]) -> List[str]:
    """Distinct warning lines carried by the nodes of one file (reader warnings, polyglot note,
    extension mismatch, repaired PDF, OCR/caption errors).

    Args:
        nodes: the nodes of one file.
    """
    out: List[str] = []
    for n in nodes:
        for key in WARN_KEYS:
            val = n.metadata.get(key)
            if not val:
                continue
            for v in (val if isinstance(val, list) else [val]):
                line = f"{key}: {v}" if key != "ingest_warnings" else str(v)
                if line not in out:
                    out.append(line)
    return out


@dataclass
class IngestReport:
    """Counts, failures and timings of one ``ingest`` run; ``to_dict()`` is the CLI's JSON.

    Args:
        files: files found under the given paths.
        new: files read and stored that the manifest did not know.
        changed: files read and stored again (content or settings changed, or an interrupted write).
        nodes: nodes written, per modality.
        failed: ``{"path", "reason"}`` per file that could not be stored.
        skipped_unchanged: files skipped because nothing changed (or only their mtime).
        duplicates: files whose bytes were already stored under another path.
        pruned: files removed by ``prune``.
        prune_skipped: ``{"path", "reason"}`` per root or folder under which ``prune`` removed nothing
            because it could not be read (missing, unmounted, permission denied).
        seconds: wall time of the run.
        stages: seconds per stage (read, embed_text, embed_image, store, compact).
        store: the store directory.
        collection: the collection stamped on the nodes.
        encoded: vectors computed by a model, per kind (text, image).
        cached: vectors served from the embedding cache, per kind.
        timed_out: files abandoned after their reading budget.
        warnings: ``{"path", "warnings"}`` per stored file with non-fatal problems.
        recovered: what was repaired before the run (corrupt manifest/cache, reconcile).
        executor: how files were read: ``{"kind": "local"}`` or, for the Ray executor,
            ``{"kind": "ray", "nodes": {node_id: batches}, "stages": {stage: {node_id: batches}}, ...}``.
    """

    files: int = 0
    new: int = 0
    changed: int = 0
    nodes: Dict[str, int] = field(default_factory=lambda: {k: 0 for k in NODE_KINDS})
    failed: List[Dict[str, str]] = field(default_factory=list)
    skipped_unchanged: int = 0
    duplicates: int = 0
    pruned: int = 0
    prune_skipped: List[Dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    stages: Dict[str, float] = field(default_factory=dict)
    store: str = ""
    collection: str = DEFAULT_COLLECTION
    encoded: Dict[str, int] = field(default_factory=lambda: {"text": 0, "image": 0})
    cached: Dict[str, int] = field(default_factory=lambda: {"text": 0, "image": 0})
    timed_out: int = 0
    warnings: List[Dict[str, Any]] = field(default_factory=list)
    recovered: List[str] = field(default_factory=list)
    executor: Dict[str, Any] = field(default_factory=lambda: {"kind": "local"})

    def to_dict(self) -> Dict[str, Any]:
        """The JSON document of ``mmrag ingest --json`` (DESIGN.md, command-line contract)."""
        return {"files": self.files, "new": self.new, "changed": self.changed, "nodes": self.nodes, "failed": self.failed,
                "skipped_unchanged": self.skipped_unchanged, "duplicates": self.duplicates,
                "pruned": self.pruned, "prune_skipped": self.prune_skipped, "seconds": round(self.seconds, 3),
                "stages": {k: round(v, 3) for k, v in self.stages.items()}, "store": self.store,
                "collection": self.collection, "encoded": dict(self.encoded), "cached": dict(self.cached),
                "timed_out": self.timed_out, "warnings": self.warnings, "recovered": self.recovered,
                "executor": self.executor}

    def add_stage(self, name: str, seconds: float) -> None:
        """Add ``seconds`` to the time of stage ``name``.

        Args:
            name: stage name (read, embed_text, embed_image, store, compact).
            seconds: time to add.
        """
        self.stages[name] = self.stages.get(name, 0.0) + seconds


__all__ = ["IngestReport", "NODE_KINDS", "DEFAULT_COLLECTION", "display_path", "node_warnings"]
