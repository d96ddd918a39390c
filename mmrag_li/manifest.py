"""Moved to :mod:`mmrag_li.ingest.manifest`; this name keeps old imports working."""

from mmrag_li.ingest.manifest import FileRecord, Manifest, ManifestCorruptError, status_counts

__all__ = ["FileRecord", "Manifest", "ManifestCorruptError", "status_counts"]
