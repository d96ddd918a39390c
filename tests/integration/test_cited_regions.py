"""A citation boxes the line the answer quoted, through the real readers (Tesseract OCR on the example
invoice PNG, PyMuPDF text layer on the example PDF) and the real query engine; PDF text-layer hits
get line regions, not a whole-page box.

The invoice's true line boxes come from its renderer (examples/make_example_data.py: DejaVu Sans
Bold 32 px, "Total" at (50, 640), the amount at (600, 640) on a 900 x 1100 image); the PDF's from
PyMuPDF's own text layer.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pymupdf
import pytest
from PIL import Image, ImageDraw, ImageFont

from mmrag_li.pipeline import MultiModalRAG
from mmrag_li.present import query_json, search_json
from mmrag_li.retrieval.regions import iou, pdf_box_to_norm, pixel_box_to_norm

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "data"
BOLD = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"


def total_line_box():
    """The normalised box of the invoice's "Total ... 1,939.00 EUR" line, from the renderer's layout."""
    draw = ImageDraw.Draw(Image.new("RGB", (900, 1100)))
    font = ImageFont.truetype(BOLD, 32)
    a = draw.textbbox((50, 640), "Total", font=font)
    b = draw.textbbox((600, 640), "1,939.00 EUR", font=font)
    return pixel_box_to_norm([a[0], min(a[1], b[1]), b[2], max(a[3], b[3])], 900, 1100)


@pytest.fixture(scope="module")
def rag(tmp_path_factory):
    if shutil.which("tesseract") is None:
        pytest.skip("tesseract is not installed")
    root = tmp_path_factory.mktemp("cited")
    corpus = root / "corpus"
    corpus.mkdir()
    for name in ("invoice_4711.png", "quarterly_report.pdf"):
        shutil.copy(EXAMPLES / name, corpus / name)
    rag = MultiModalRAG.from_config("default", store_dir=root / "store")
    report = rag.ingest([corpus], progress=False)
    assert report.failed == [], report.failed
    yield rag
    rag.close()


def test_cited_region_is_the_quoted_total_line_not_the_question_line(rag):
    data = query_json(rag.query("What is the total of invoice 4711?"))
    assert "1,939.00" in data["answer"]
    cite = data["citations"][0]
    assert cite["source"].endswith("invoice_4711.png") and cite["page"] is None
    first = cite["regions"][0]
    assert "1,939.00" in first["text"] and first["kind"] == "ocr_line"
    assert iou(first["bbox"], total_line_box()) >= 0.5, (first, total_line_box())
    assert "«1,939.00»" in cite["snippet"] and "INVOICE" not in cite["snippet"].upper()
    # the question's own line may follow, never before the quoted one
    assert all("1,939.00" not in r["text"] for r in cite["regions"][1:])


def test_pdf_text_layer_hit_gets_line_regions_not_the_whole_page(rag):
    rows = search_json(rag.retrieve("quarterly report revenue", k=3))["results"]
    hit = next(r for r in rows if r["source"].endswith("quarterly_report.pdf"))
    assert hit["page"] == 1
    spans = [r for r in hit["regions"] if r["kind"] == "text_span"]
    assert spans and hit["regions"][0]["kind"] == "text_span"  # lines first; a picture box only after them
    assert all(r["bbox"] != [0, 0, 1, 1] for r in spans)
    page = pymupdf.open(EXAMPLES / "quarterly_report.pdf")[0]
    truth = next(ln["bbox"] for b in page.get_text("dict")["blocks"] for ln in b.get("lines", [])
                 if "Revenue grew" in "".join(s["text"] for s in ln["spans"]))
    truth = pdf_box_to_norm(truth, page.rect.width, page.rect.height)
    revenue = [r for r in spans if "Revenue" in r["text"]]
    assert revenue and iou(revenue[0]["bbox"], truth) >= 0.5, (revenue, truth)
    assert "«Revenue»" in hit["snippet"]
