"""This project's reader, transforms, cached embedder and store writer inside a stock LlamaIndex
``IngestionPipeline`` (sync ``run`` and async ``arun``), on real files, with the offline models and
LanceDB: the nodes land in the modality collections and are found again by vector search."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from llama_index.core.ingestion import IngestionPipeline
from llama_index.core.readers.base import ReaderConfig
from llama_index.core.schema import ImageNode
from PIL import Image

from mmrag_li.blobs import BlobStore
from mmrag_li.config import Settings
from mmrag_li.embeddings.cache import open_cache
from mmrag_li.enrich.safety import SafetyVerdict
from mmrag_li.ingest import (CachedEmbedder, CollectionStamp, ImageSafetyFilter, PIIRedaction, PolyglotNote,
                             StoreWriter, scoped_asset_id)
from mmrag_li.pipeline import MultiModalRAG
from mmrag_li.readers.directory import DirectoryReader
from mmrag_li.schema import file_hash
from mmrag_li.stores import ModalityStores
from tests.conftest import DATA_DIR
from tests.ingest_checks import text_png


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    rag = MultiModalRAG(Settings(store_dir=str(tmp_path_factory.mktemp("models"))))
    return {"text_embed": rag.text_embed, "clip_embed": rag.clip_embed, "captioner": rag.captioner}


class DarkImageChecker:
    """Test double for an image safety model: refuses mostly-black images."""

    def check(self, image):
        mean = sum(image.convert("L").resize((8, 8)).getdata()) / 64
        return SafetyVerdict(allowed=mean > 60, label="dark" if mean <= 60 else "safe", score=1 - mean / 255)


@pytest.fixture()
def docs(tmp_path):
    d = tmp_path / "docs"
    d.mkdir()
    shutil.copy(DATA_DIR / "skimage_rocket.jpg", d / "rocket.jpg")  # a real photograph
    text_png(d / "invoice.png", ["INVOICE 4711", "Total 1,939.00"])
    Image.new("RGB", (200, 100), "black").save(d / "dark.png")
    (d / "notes.md").write_text("# Submarine notes\n\nThe submarine dives at dawn. Contact jane.doe@example.com "
                                "for the dive log.\n", encoding="utf-8")
    return d


def _pipeline(store: Path, docs: Path, models, cache_path: Path):
    settings = Settings(store_dir=str(store), ocr={"kind": "none"})
    reader = DirectoryReader.from_defaults(settings, blob_store=BlobStore(store / "blobs"), ocr=None,
                                           captioner=models["captioner"])
    stores = ModalityStores.lancedb(store)
    embedder = CachedEmbedder(embed_model=models["text_embed"], image_embed_model=models["clip_embed"],
                              cache=open_cache(cache_path))
    safety = ImageSafetyFilter(checker=DarkImageChecker())
    pipeline = IngestionPipeline(
        readers=[ReaderConfig(reader=reader, reader_kwargs={"paths": [str(docs)]})],
        transformations=[CollectionStamp(collection="tenant-a"), PolyglotNote(), safety,
                         PIIRedaction.from_defaults(), embedder, StoreWriter(stores=stores)])
    return pipeline, stores, embedder, safety


def test_stock_ingestion_pipeline_writes_retrievable_nodes(tmp_path, docs, models):
    store = tmp_path / "store"
    pipeline, stores, embedder, safety = _pipeline(store, docs, models, tmp_path / "cache.sqlite")
    nodes = pipeline.run()

    # The safety filter dropped the dark image (and the blob copies the reader made of it).
    dark_raw = file_hash(docs / "dark.png")
    assert [Path(e.path).name for e in safety.refused] == ["dark.png"]
    assert "refused by safety checker: dark" in safety.refused[0].reason
    assert not list((store / "blobs").rglob(f"{dark_raw}*"))
    assert all(n.metadata["content_hash"] != dark_raw for n in nodes)

    # Every node: embedded, stamped, collection-scoped id; the counts are what the stores hold.
    assert nodes and all(n.embedding for n in nodes)
    assert all(n.metadata["collection"] == "tenant-a" for n in nodes)
    assert all(n.metadata["asset_id"] == scoped_asset_id(n.metadata["content_hash"], "tenant-a") for n in nodes)
    assert all(n.node_id.startswith(n.metadata["asset_id"]) for n in nodes)
    written = stores.count()
    assert written["image"] == 2 and written["caption"] == 2 and written["text"] >= 1
    assert sum(written.values()) == len(nodes)
    assert embedder.encoded["image"] == 2 and embedder.cached["image"] == 0

    # PII redacted before embedding and storing.
    notes_id = scoped_asset_id(file_hash(docs / "notes.md"), "tenant-a")
    stored_notes = stores.get_asset_nodes(notes_id)
    assert stored_notes and all("jane.doe" not in n.text for n in stored_notes)
    assert "[EMAIL]" in " ".join(n.text for n in stored_notes)

    # Retrievable: text -> text and image -> image nearest neighbours are the right assets.
    te, ce = models["text_embed"], models["clip_embed"]
    top_text = stores.query("text", te.get_query_embedding("when does the submarine dive"), 1)
    assert top_text[0].node.metadata["asset_id"] == notes_id
    rocket_id = scoped_asset_id(file_hash(docs / "rocket.jpg"), "tenant-a")
    top_image = stores.query("image", ce.get_image_embedding(str(docs / "rocket.jpg")), 1)
    assert top_image[0].node.metadata["asset_id"] == rocket_id and isinstance(top_image[0].node, ImageNode)
    assert top_image[0].score > 0.99

    # Running again changes nothing in the stores (upserts by id; the write is never skipped).
    before = {c: sorted(n.node_id for n in stores.all_nodes(c)) for c in written}
    again = pipeline.run()
    assert len(again) == len(nodes) and stores.count() == written
    assert {c: sorted(n.node_id for n in stores.all_nodes(c)) for c in written} == before
    stores.close()


def test_async_pipeline_serves_vectors_from_the_embedding_cache(tmp_path, docs, models):
    cache = tmp_path / "cache.sqlite"
    first, stores1, _, _ = _pipeline(tmp_path / "s1", docs, models, cache)
    first.run()
    second, stores2, embedder, _ = _pipeline(tmp_path / "s2", docs, models, cache)
    nodes = asyncio.run(second.arun())
    assert embedder.encoded == {"text": 0, "image": 0} and embedder.cached["image"] == 2
    assert stores2.count() == stores1.count() and sum(stores2.count().values()) == len(nodes)
    stores1.close()
    stores2.close()
