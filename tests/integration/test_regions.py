"""Page-level hits, snippets, regions and citations on REAL rendered and scanned pages.

One store (session scope) holds: a 3-page PDF with a text layer written by PyMuPDF, a 2-page PDF
whose second page is a scan (an image, OCRed at ingest), a scanned page as PNG (Pillow text, read
by Tesseract through the real reader), a large poster with a cat in one corner (tiled) and a photo.
The true box of each known line comes from the renderer (PyMuPDF font metrics, Pillow's textbbox)
and must overlap the region the search returns (IoU >= 0.5).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pymupdf
import pytest
from llama_index.core.postprocessor import SimilarityPostprocessor
from llama_index.core.schema import QueryBundle
from PIL import Image, ImageDraw, ImageFont

from mmrag_li.generation.evidence import build_evidence, citation_records
from mmrag_li.pipeline import MultiModalRAG
from mmrag_li.retrieval.regions import REGION_KINDS, iou, pdf_box_to_norm, pixel_box_to_norm

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "data"
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
CAT_BOX = (1800, 1150, 2251, 1450)

TEXT_PAGES = [
    ["Harbour almanac, first chapter", "The lighthouse keeper logs every passing ship at dawn.",
     "Tides are measured twice a day at the northern pier."],
    ["Harbour almanac, second chapter", "Fishing boats return before the evening bell rings.",
     "Marmalade reserves are stored in the north cellar.", "Rope and canvas are kept in the boathouse."],
    ["Harbour almanac, third chapter", "Storm warnings are raised on the signal mast.",
     "A new lighthouse keeper was hired in the spring."],
]
PHRASE_PDF = "Marmalade reserves are stored in the north cellar."
SCAN_PAGE = ["WAREHOUSE INVENTORY", "Copper kettles 48 units", "Walnut barrels 12 units", "Signed by the quartermaster"]
PHRASE_SCAN_PDF = "Walnut barrels 12 units"
PNG_LINES = ["DELIVERY SLIP", "Blue tarpaulin sheets", "Harbour gate 7", "Received with thanks"]
PHRASE_PNG = "Blue tarpaulin sheets"


def write_text_pdf(path: Path) -> dict:
    """A 3-page PDF with a text layer; returns the true normalised box of PHRASE_PDF (page 2)."""
    doc = pymupdf.open()
    font = pymupdf.Font("helv")
    truth = {}
    for lines in TEXT_PAGES:
        page = doc.new_page(width=595, height=842)
        for i, line in enumerate(lines):
            x, y, size = 72, 100 + 40 * i, 13
            page.insert_text((x, y), line, fontname="helv", fontsize=size)
            if line == PHRASE_PDF:
                box = (x, y - font.ascender * size, x + font.text_length(line, size), y - font.descender * size)
                truth = {"page": page.number + 1, "bbox": pdf_box_to_norm(box, page.rect.width, page.rect.height)}
    doc.save(path)
    return truth


def render_scan(lines, size, font_px, start=(90, 120), step=110):
    """Pillow text on white; returns the image and each line's true pixel box (textbbox)."""
    im = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(im)
    f = ImageFont.truetype(FONT, font_px)
    boxes = {}
    for i, line in enumerate(lines):
        xy = (start[0], start[1] + step * i)
        d.text(xy, line, font=f, fill="black")
        boxes[line] = d.textbbox(xy, line, font=f)
    return im, boxes


def write_scanned_pdf(path: Path, tmp: Path) -> dict:
    """Page 1: a text layer; page 2: a 200-dpi scan (an image only). Truth: PHRASE_SCAN_PDF's box."""
    im, boxes = render_scan(SCAN_PAGE, (1654, 2339), 44)  # A4 at 200 dpi
    scan = tmp / "scan.png"
    im.save(scan)
    doc = pymupdf.open()
    page = doc.new_page(width=595, height=842)
    page.insert_text((72, 100), "Cover sheet of the warehouse ledger for the harbour office.", fontsize=12)
    page = doc.new_page(width=595, height=842)
    page.insert_image(page.rect, filename=str(scan))
    doc.save(path)
    return {"page": 2, "bbox": pixel_box_to_norm(boxes[PHRASE_SCAN_PDF], *im.size)}


@pytest.fixture(scope="session")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("regions")
    corpus = root / "corpus"
    corpus.mkdir()
    truth = {"almanac.pdf": write_text_pdf(corpus / "almanac.pdf"),
             "ledger.pdf": write_scanned_pdf(corpus / "ledger.pdf", root)}
    im, boxes = render_scan(PNG_LINES, (1400, 700), 52, start=(70, 60), step=140)
    im.save(corpus / "slip.png")
    truth["slip.png"] = {"page": None, "bbox": pixel_box_to_norm(boxes[PHRASE_PNG], *im.size)}
    canvas = Image.new("RGB", (2400, 1600), "white")
    with Image.open(EXAMPLES / "cat_chelsea.jpg") as cat:
        canvas.paste(cat.convert("RGB"), CAT_BOX[:2])
    canvas.save(corpus / "poster.png")
    shutil.copy(EXAMPLES / "coffee_cup.jpg", corpus / "coffee.jpg")
    rag = MultiModalRAG.from_config("default", store_dir=root / "store")
    report = rag.ingest([corpus], progress=False)
    assert report.failed == [], report.failed
    yield rag, corpus, truth
    rag.close()


def first_hit_of(hits, name):
    return next(h for h in hits if Path(h.source).name == name)


def assert_line_region(hit, phrase, truth, kind):
    regs = [r for r in hit.regions if r["kind"] == kind and phrase.lower().rstrip(".") in r["text"].lower()]
    assert regs, hit.regions
    best = max(regs, key=lambda r: iou(r["bbox"], truth["bbox"]))
    assert iou(best["bbox"], truth["bbox"]) >= 0.5, (best, truth)
    assert best["page"] == truth["page"]
    for r in hit.regions:
        assert r["kind"] in REGION_KINDS and set(r) == {"page", "bbox", "text", "kind", "score"}
        x0, y0, x1, y1 = r["bbox"]
        assert 0 <= x0 <= x1 <= 1 and 0 <= y0 <= y1 <= 1


def test_text_layer_phrase_returns_its_page_and_the_line(store):
    rag, _corpus, truth = store
    hits = rag.retrieve("marmalade reserves stored in the north cellar", k=5)
    hit = hits[0]
    assert Path(hit.source).name == "almanac.pdf" and hit.page == 2
    assert_line_region(hit, PHRASE_PDF, truth["almanac.pdf"], "text_span")
    assert "«Marmalade»" in hit.snippet and "«cellar»" in hit.snippet


def test_scanned_pdf_page_region_comes_from_ocr_words(store):
    rag, _corpus, truth = store
    hits = rag.retrieve("walnut barrels", k=5)
    hit = first_hit_of(hits, "ledger.pdf")
    assert hit is hits[0] and hit.page == 2
    assert_line_region(hit, PHRASE_SCAN_PDF, truth["ledger.pdf"], "ocr_line")
    words = [r for r in hit.regions if r["kind"] == "ocr_word"]
    assert {w["text"].lower() for w in words} >= {"walnut", "barrels"}


def test_scanned_image_region_holds_the_phrase(store):
    rag, _corpus, truth = store
    hit = rag.retrieve("blue tarpaulin sheets", k=3)[0]
    assert Path(hit.source).name == "slip.png" and hit.page is None
    assert_line_region(hit, PHRASE_PNG, truth["slip.png"], "ocr_line")


def test_pages_of_one_pdf_are_separate_hits_unless_grouped_by_asset(store):
    rag, _corpus, _truth = store
    query = QueryBundle("lighthouse keeper")
    by_page = rag.as_retriever().retrieve_assets(query, top_k=6)
    pages = [h.page for h in by_page if Path(h.source).name == "almanac.pdf"]
    assert {1, 3} <= set(pages) and len(pages) == len(set(pages))
    by_asset = rag.as_retriever(group_by="asset").retrieve_assets(query, top_k=6)
    assert [Path(h.source).name for h in by_asset].count("almanac.pdf") == 1


def test_scores_are_on_0_1_with_raw_scores_ranks_and_why(store):
    rag, _corpus, _truth = store
    hits = rag.retrieve("marmalade reserves stored in the north cellar", k=5)
    scores = [h.score for h in hits]
    assert all(0.0 <= s <= 1.0 for s in scores) and scores == sorted(scores, reverse=True)
    top = hits[0].to_dict()
    assert set(top) >= {"asset_id", "source", "page", "score", "raw_score", "scores", "ranks", "why", "snippet",
                        "regions"}
    assert top["raw_score"] > 0 and top["raw_score"] < top["score"]  # RRF sums are small numbers
    assert "bm25 rank 1" in top["why"]
    # nodes from as_retriever() carry the 0-1 score, so a stock cutoff works on them
    nodes = rag.as_retriever().retrieve("marmalade reserves stored in the north cellar")
    assert all(0.0 <= n.score <= 1.0 for n in nodes)
    kept = SimilarityPostprocessor(similarity_cutoff=hits[0].score - 1e-9).postprocess_nodes(nodes)
    assert kept and {n.node.metadata["page"] for n in kept} == {2}


def test_image_query_region_is_the_matching_tile(store):
    rag, _corpus, _truth = store
    hits = rag.retrieve(image=EXAMPLES / "cat_chelsea.jpg", k=3)
    poster = first_hit_of(hits, "poster.png")
    tiles = [r for r in poster.regions if r["kind"] == "tile"]
    assert tiles, poster.regions
    cat = pixel_box_to_norm(CAT_BOX, 2400, 1600)
    x0, y0, x1, y1 = tiles[0]["bbox"]
    inside = max(0, min(x1, cat[2]) - max(x0, cat[0])) * max(0, min(y1, cat[3]) - max(y0, cat[1]))
    assert inside >= 0.5 * (cat[2] - cat[0]) * (cat[3] - cat[1])  # the tile holds most of the cat
    coffee = first_hit_of(rag.retrieve(image=EXAMPLES / "coffee_cup.jpg", k=3), "coffee.jpg")
    assert [r["kind"] for r in coffee.regions] == ["image"] and coffee.regions[0]["bbox"] == [0, 0, 1, 1]


def test_citations_resolve_to_their_own_page_and_the_quoted_line(store):
    rag, _corpus, truth = store
    question = "Where are the marmalade reserves stored?"
    nodes = rag.as_retriever().retrieve(question)
    evidence = build_evidence(nodes, question, thumbnails=False)
    first = evidence[0]
    assert first.source.endswith("almanac.pdf") and first.page == 2
    assert first.snippet and first.regions and first.to_dict()["regions"] == first.regions
    answer = f"They are stored in the north cellar [{first.id}]."
    cites = citation_records(evidence, answer, [first.id])
    assert [c["id"] for c in cites] == [first.id]
    c = cites[0]
    assert c["page"] == 2 and c["asset_id"] == first.asset_id and "«cellar»" in c["snippet"]
    assert any(iou(r["bbox"], truth["almanac.pdf"]["bbox"]) >= 0.5 for r in c["regions"])
    assert citation_records(evidence, answer, ["E99"]) == []


def test_page_image_nodes_carry_their_text_as_content(store):
    rag, corpus, _truth = store
    asset = rag.retrieve("marmalade reserves", k=1)[0].asset_id
    pages = {n.metadata["page"]: n for n in rag.stores.get_asset_nodes(asset) if n.metadata["modality"] == "page"}
    assert "Marmalade reserves" in pages[2].get_content()
    scan = rag.retrieve("walnut barrels", k=1)[0].asset_id
    page2 = next(n for n in rag.stores.get_asset_nodes(scan)
                 if n.metadata["modality"] == "page" and n.metadata["page"] == 2)
    assert "Walnut" in page2.get_content()
