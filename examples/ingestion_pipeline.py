"""This project's readers and transforms inside a stock LlamaIndex ``IngestionPipeline``.

    python examples/ingestion_pipeline.py [FOLDER] [--store DIR] [--config PRESET_OR_YAML] [--collection C]

The reader (``DirectoryReader``: images, PDFs, text; OCR and captions) feeds LlamaIndex's own
``IngestionPipeline``; the transformations are ``TransformComponent``s from ``mmrag_li.ingest``:
collection stamp -> polyglot note -> PII redaction -> cached embedder (text and image nodes) ->
``StoreWriter`` (the four modality collections of a ``ModalityStores``; ``IngestionPipeline``'s
``vector_store=`` takes only one store). The stored nodes are then searched with ``FusionRetriever``.

Unlike ``MultiModalRAG.ingest`` this keeps no manifest (no skipping of unchanged files, no
crash-safe batches, no prune): use a store directory of its own -- ``MultiModalRAG`` on the same
directory would treat these nodes as untracked and delete them.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a checkout without installing

from llama_index.core.ingestion import IngestionPipeline  # noqa: E402
from llama_index.core.readers.base import ReaderConfig  # noqa: E402
from llama_index.core.schema import QueryBundle  # noqa: E402

from mmrag_li.blobs import BlobStore  # noqa: E402
from mmrag_li.config import Settings  # noqa: E402
from mmrag_li.embeddings.cache import open_cache  # noqa: E402
from mmrag_li.embeddings.image import build_image_embedding  # noqa: E402
from mmrag_li.embeddings.resolve import resolve_models  # noqa: E402
from mmrag_li.embeddings.text import build_text_embedding  # noqa: E402
from mmrag_li.enrich.caption import build_captioner  # noqa: E402
from mmrag_li.enrich.ocr import get_ocr_engine  # noqa: E402
from mmrag_li.ingest import CachedEmbedder, CollectionStamp, PIIRedaction, PolyglotNote, StoreWriter  # noqa: E402
from mmrag_li.readers.directory import DirectoryReader  # noqa: E402
from mmrag_li.retrieval.fusion import FusionRetriever  # noqa: E402
from mmrag_li.stores import ModalityStores  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", nargs="?", default=str(HERE / "data"))
    ap.add_argument("--store", default=".mmrag-ingestion-pipeline")
    ap.add_argument("--config", default=None, help="a preset name or YAML path")
    ap.add_argument("--collection", default="default")
    args = ap.parse_args()

    settings = Settings.load(args.config)
    settings.store_dir = args.store
    store = Path(args.store)
    models = resolve_models(settings.embedding, store)  # once: the same models for text and images
    text_embed = build_text_embedding(settings.embedding, models)
    image_embed = build_image_embedding(settings.embedding, models)
    reader = DirectoryReader.from_defaults(settings, blob_store=BlobStore(store / "blobs"),
                                           ocr=get_ocr_engine(settings.ocr), captioner=build_captioner(settings.caption))

    with ModalityStores.from_config(settings) as stores:
        writer = StoreWriter(stores=stores)
        embedder = CachedEmbedder(embed_model=text_embed, image_embed_model=image_embed,
                                  cache=open_cache(store / "embedding_cache.sqlite"))
        pipeline = IngestionPipeline(
            readers=[ReaderConfig(reader=reader, reader_kwargs={"paths": [args.folder]})],
            transformations=[CollectionStamp(collection=args.collection), PolyglotNote(),
                             PIIRedaction.from_defaults(settings.ingest.pii_phone_regions), embedder, writer])
        nodes = pipeline.run(show_progress=False)
        print(f"{len(nodes)} nodes from {args.folder} -> {store}")
        print("  by modality:", dict(Counter(n.metadata["modality"] for n in nodes)))
        print("  written per collection:", writer.written, "| vectors encoded:", embedder.encoded,
              "from cache:", embedder.cached)
        for err in reader.failures:
            print(f"  skipped {err.path}: {err.reason}")

        retriever = FusionRetriever.from_defaults(stores, text_embed, image_embed, settings.retrieval)
        for query in ("a photo of a cat", "delivery note for order 4711"):
            print(f"\nsearch: {query}")
            for hit in retriever.retrieve_assets(QueryBundle(query_str=query), top_k=3):
                print(f"  {hit.score:.3f}  {Path(hit.source).name}  page={hit.page}")


if __name__ == "__main__":
    main()
