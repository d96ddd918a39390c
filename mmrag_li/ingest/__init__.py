"""Ingestion as components: incremental, crash-safe and bounded.

Layout:

* ``runner``     – ``IngestRunner`` (walk -> manifest -> read in a ``WorkerPool`` -> commit), ``file_budget``,
                   ``config_fingerprint``
* ``batch``      – ``BatchCommitter``: write-new -> delete-old -> mark-done, failure records
* ``transforms`` – ``TransformComponent``s: ``CollectionStamp``, ``PolyglotNote``, ``ImageSafetyFilter``,
                   ``PIIRedaction`` (+ ``ingest_transforms``, ``scoped_asset_id``)
* ``embed``      – ``CachedEmbedder``: one cached embedder for text and image nodes
* ``writer``     – ``StoreWriter``: the sink into the four modality collections (for ``IngestionPipeline``)
* ``recovery``   – manifest/cache open with repair, writability check, ``reconcile``
* ``pruning``    – ``prune``: only files known to be gone (a missing root or unreadable folder prunes nothing)
* ``gc``         – unreferenced blobs and old table versions (``mmrag gc``); ``sources`` – manifest keys
* ``manifest``   – the SQLite manifest of ingested files
* ``catalog``    – resolve an asset, describe it, store stats
* ``report``     – ``IngestReport``; ``errors`` – ``IngestAborted``, ``StoreNotWritableError``

"""

from mmrag_li.ingest.batch import BatchCommitter, FileItem, PendingFile
from mmrag_li.ingest.embed import CachedEmbedder
from mmrag_li.ingest.errors import IngestAborted, StoreNotWritableError
from mmrag_li.ingest.manifest import FileRecord, Manifest, ManifestCorruptError, status_counts
from mmrag_li.ingest.pruning import prune
from mmrag_li.ingest.recovery import (check_store_writable, drop_unshared, open_embedding_cache, open_manifest,
                                      rebuild_manifest, reconcile)
from mmrag_li.ingest.report import DEFAULT_COLLECTION, NODE_KINDS, IngestReport, display_path
from mmrag_li.ingest.runner import IngestRunner, WorkerPool, config_fingerprint, file_budget
from mmrag_li.ingest.transforms import (CollectionStamp, ImageSafetyFilter, NodeTransform, PIIRedaction, PolyglotNote,
                                        ThreadedTransform, check_collection, ingest_transforms, scoped_asset_id)
from mmrag_li.ingest.writer import StoreWriter, by_collection

__all__ = [
    "IngestRunner", "WorkerPool", "file_budget", "config_fingerprint", "BatchCommitter", "FileItem", "PendingFile",
    "ThreadedTransform", "NodeTransform", "CollectionStamp", "PolyglotNote", "ImageSafetyFilter", "PIIRedaction",
    "ingest_transforms", "scoped_asset_id", "check_collection", "CachedEmbedder", "StoreWriter", "by_collection",
    "open_manifest", "open_embedding_cache", "check_store_writable", "rebuild_manifest", "reconcile", "prune",
    "drop_unshared", "Manifest", "FileRecord", "ManifestCorruptError", "status_counts", "IngestReport",
    "NODE_KINDS", "DEFAULT_COLLECTION", "display_path", "IngestAborted", "StoreNotWritableError",
]
