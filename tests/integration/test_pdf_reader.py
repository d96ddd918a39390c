"""PDFReader with real PyMuPDF (+ tesseract for the scanned page)."""

from pathlib import Path

import pymupdf
import pytest
from llama_index.core.schema import ImageNode, TextNode
from PIL import Image

from mmrag_li.config import Settings
from mmrag_li.errors import IngestError
from mmrag_li.readers import PDFReader
from mmrag_li.schema import file_hash


def by_modality(nodes):
    out = {}
    for n in nodes:
        out.setdefault(n.metadata["modality"], []).append(n)
    return out


@pytest.fixture(scope="module")
def text_pdf_nodes(files, tmp_path_factory, tesseract):
    from mmrag_li.blobs import BlobStore

    reader = PDFReader.from_defaults(Settings(), blob_store=BlobStore(tmp_path_factory.mktemp("b")), ocr=tesseract)
    return reader.load_data(files["text_pdf"])


@pytest.fixture(scope="module")
def scanned_nodes(files, tmp_path_factory, tesseract):
    from mmrag_li.blobs import BlobStore

    reader = PDFReader.from_defaults(Settings(), blob_store=BlobStore(tmp_path_factory.mktemp("b")), ocr=tesseract)
    return reader.load_data(files["scanned_pdf"])


def test_text_layer_chunks_with_page_numbers(text_pdf_nodes, files):
    mods = by_modality(text_pdf_nodes)
    texts = mods["text"]
    assert all(isinstance(n, TextNode) for n in texts)
    assert {n.metadata["page"] for n in texts} == {1, 2}
    page1 = " ".join(n.text for n in texts if n.metadata["page"] == 1)
    assert "INVOICE 4711" in page1 and "Total 1,939.00 EUR" in page1
    assert "rocket lifts off" in " ".join(n.text for n in texts if n.metadata["page"] == 2)
    asset = file_hash(files["text_pdf"])
    assert {n.metadata["asset_id"] for n in text_pdf_nodes} == {asset}
    for n in text_pdf_nodes:
        m = n.metadata
        assert m["mime_type"] == "application/pdf" and m["producer"] == "pymupdf"
        assert m["producer_version"].startswith(pymupdf.__version__)
        assert m["source"] == str(Path(files["text_pdf"]).resolve()) and m["title"] == "Quarterly Report"
    assert "ocr" not in mods  # pages have a text layer


def test_page_images(text_pdf_nodes):
    pages = by_modality(text_pdf_nodes)["page"]
    assert [p.metadata["page"] for p in pages] == [1, 2]
    assert "INVOICE 4711" in pages[0].text and "rocket lifts off" in pages[1].text
    for p in pages:
        assert isinstance(p, ImageNode) and p.text  # its content is the page's text layer (issue 11)
        m = p.metadata
        assert m["dpi"] == 110 and m["bbox_units"] == "px"
        img = Image.open(p.image_path)
        assert img.size == (m["width"], m["height"]) == (round(612 * 110 / 72), round(792 * 110 / 72))
        assert Path(m["thumbnail_path"]).exists() and Path(m["blob_path"]).exists()
        assert m["has_text_layer"] is True


def test_embedded_image_with_bbox(text_pdf_nodes):
    images = by_modality(text_pdf_nodes)["image"]
    assert len(images) == 1
    img = images[0]
    m = img.metadata
    assert m["page"] == 2 and m["bbox_units"] == "pt"
    # Inserted at Rect(72, 100, 372, 300), aspect kept: the 640x427 photo fills the width.
    x0, y0, x1, y1 = m["bbox"]
    assert x0 == pytest.approx(72, abs=1) and x1 == pytest.approx(372, abs=1)
    assert 100 <= y0 < y1 <= 300 and (y1 - y0) == pytest.approx(300 * 427 / 640, abs=2)
    assert (m["width"], m["height"]) == (640, 427)
    assert Image.open(img.image_path).size == (640, 427)


def test_scanned_page_is_ocred(scanned_nodes):
    mods = by_modality(scanned_nodes)
    assert "text" not in mods and "image" not in mods  # the scan itself is the page node
    ocr = mods["ocr"]
    text = "\n".join(n.text for n in ocr)
    assert "INVOICE 4711" in text and "quarterly report" in text
    w, h = 8.5 * 200, 11 * 200
    for n in ocr:
        m = n.metadata
        assert m["page"] == 1 and m["dpi"] == 200 and m["bbox_units"] == "px"
        assert (m["width"], m["height"]) == (w, h)
        assert m["ocr_engine"] == "tesseract" and m["ocr_conf"] > 60
        for word in m["words"]:
            x0, y0, x1, y1 = word["bbox"]
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
    # "INVOICE" is the heading at the top-left margin (0.9 in = 180 px at 200 dpi).
    heading = next(wd for n in ocr for wd in n.metadata["words"] if wd["text"] == "INVOICE")
    assert heading["bbox"][0] == pytest.approx(180, abs=15) and heading["bbox"][1] < 260
    assert mods["page"][0].metadata["has_text_layer"] is False


def test_scanned_page_without_ocr_engine_is_flagged(files, blobs):
    nodes = PDFReader.from_defaults(Settings(), blob_store=blobs, ocr=None).load_data(files["scanned_pdf"])
    assert [n.metadata["modality"] for n in nodes] == ["page"]
    assert nodes[0].metadata["needs_ocr"] is True


def test_encrypted_pdf(files, blobs):
    with pytest.raises(IngestError) as err:
        PDFReader.from_defaults(blob_store=blobs).load_data(files["encrypted_pdf"])
    assert err.value.reason == "encrypted PDF (password required)"
    assert err.value.path == str(files["encrypted_pdf"])


def test_truncated_pdf(files, blobs):
    with pytest.raises(IngestError, match="truncated PDF"):
        PDFReader.from_defaults(blob_store=blobs).load_data(files["truncated_pdf"])


def test_empty_pdf(files, blobs):
    with pytest.raises(IngestError, match=r"empty file \(0 bytes\)"):
        PDFReader.from_defaults(blob_store=blobs).load_data(files["empty"])


def test_too_many_pages(files, blobs):
    s = Settings.load(**{"ingest.max_pdf_pages": 1})
    with pytest.raises(IngestError, match="2 pages, more than max_pdf_pages=1"):
        PDFReader.from_defaults(s, blob_store=blobs).load_data(files["text_pdf"])


def test_owner_password_only_pdf_is_read(tmp_path, blobs):
    doc = pymupdf.open()
    doc.new_page().insert_text((72, 72), "Owner password only, readable by anyone.")
    p = tmp_path / "owner_only.pdf"
    doc.save(p, encryption=pymupdf.PDF_ENCRYPT_AES_256, owner_pw="owner", user_pw="")
    nodes = PDFReader.from_defaults(blob_store=blobs).load_data(p)
    assert any("readable by anyone" in n.text for n in nodes)


def test_lazy_load_yields_page_by_page(files, blobs):
    it = PDFReader.from_defaults(blob_store=blobs).lazy_load_data(files["text_pdf"])
    first = next(it)
    assert first.metadata["modality"] == "page" and first.metadata["page"] == 1


@pytest.fixture()
def pdf_with_broken_page(tmp_path):
    """Three pages; page 2 claims a 300,000 pt square MediaBox and a missing content stream."""
    doc = pymupdf.open()
    for i in range(3):
        doc.new_page().insert_text((72, 72), f"Page {i + 1} says hello from the good pages.")
    xref = doc[1].xref
    parent = doc.xref_get_key(xref, "Parent")[1]
    doc.update_object(xref, f"<< /Type /Page /Parent {parent} /MediaBox [0 0 300000 300000] /Contents 999 0 R >>")
    p = tmp_path / "broken_page.pdf"
    doc.save(p)
    return p


def test_broken_page_does_not_lose_the_others(pdf_with_broken_page, blobs):
    reader = PDFReader.from_defaults(blob_store=blobs)
    nodes = reader.load_data(pdf_with_broken_page)
    assert {n.metadata["page"] for n in nodes} == {1, 3}
    assert any("page 2 failed" in w and "page too large to render" in w for w in reader.warnings)


def test_broken_page_recorded_in_node_metadata(pdf_with_broken_page):
    from llama_index.core.schema import MetadataMode

    from mmrag_li.readers import DirectoryReader

    nodes = DirectoryReader.from_defaults().read_file(pdf_with_broken_page)
    assert nodes and all("page too large to render" in n.metadata["ingest_warnings"][0] for n in nodes)
    assert "ingest_warnings" not in nodes[1].get_content(metadata_mode=MetadataMode.EMBED)
