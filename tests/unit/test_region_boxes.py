"""Region converters (PDF points, pixels <-> normalised 0-1, top-left origin) and lexical line matching."""

import pytest
from llama_index.core.schema import TextNode

from mmrag_li.retrieval.regions import (iou, mark_terms, match_lines, node_lines, norm_to_pdf_box, norm_to_pixel_box,
                                        pdf_box_to_norm, pixel_box_to_norm, query_terms, regions_for_nodes,
                                        snippet_for_nodes)


@pytest.mark.parametrize("box", [[0, 0, 612, 792], [72.5, 100.25, 300, 114.75], [10, 700, 20, 790]])
def test_pdf_points_round_trip_in_both_origins(box):
    for origin in ("top-left", "bottom-left"):
        norm = pdf_box_to_norm(box, 612, 792, origin)
        assert all(0 <= c <= 1 for c in norm) and norm[0] <= norm[2] and norm[1] <= norm[3]
        assert norm_to_pdf_box(norm, 612, 792, origin) == pytest.approx(box)


def test_bottom_left_origin_is_flipped_to_top_left():
    # a line 100 pt above the bottom of a 792 pt page is near the bottom of the normalised page
    assert pdf_box_to_norm([0, 90, 612, 100], 612, 792, "bottom-left") == pytest.approx(
        [0, (792 - 100) / 792, 1, (792 - 90) / 792])
    with pytest.raises(ValueError):
        pdf_box_to_norm([0, 0, 1, 1], 612, 792, "middle")


@pytest.mark.parametrize("box,size", [([0, 0, 1000, 400], (1000, 400)), ([37, 52, 411, 96], (1654, 2339)),
                                      ([5, 5, 6, 6], (7, 9))])
def test_pixel_boxes_round_trip(box, size):
    norm = pixel_box_to_norm(box, *size)
    assert all(0 <= c <= 1 for c in norm)
    assert norm_to_pixel_box(norm, *size) == box


def test_boxes_are_ordered_and_clamped_and_iou():
    assert pixel_box_to_norm([100, 80, 0, -10], 100, 80) == [0, 0, 1, 1]
    assert iou([0, 0, 1, 1], [0, 0, 1, 1]) == 1.0 and iou([0, 0, 0.5, 1], [0.5, 0, 1, 1]) == 0.0
    assert iou([0, 0, 0.5, 1], [0.25, 0, 0.75, 1]) == pytest.approx(1 / 3)


def test_ocr_words_become_lines_and_words_with_marked_snippet():
    words = [{"text": "INVOICE", "bbox": [100, 50, 300, 90], "line": 0}, {"text": "4711", "bbox": [320, 50, 400, 90], "line": 0},
             {"text": "Total", "bbox": [100, 150, 200, 190], "line": 1}, {"text": "12.40", "bbox": [220, 150, 330, 190], "line": 1}]
    node = TextNode(id_="o", text="INVOICE 4711\nTotal 12.40",
                    metadata={"modality": "ocr", "words": words, "width": 1000, "height": 500, "page": None})
    lines = node_lines(node)
    assert [ln.text for ln in lines] == ["INVOICE 4711", "Total 12.40"]
    assert lines[0].bbox == pytest.approx([0.1, 0.1, 0.4, 0.18])
    regs = regions_for_nodes([node], "invoice 4711")
    assert regs[0]["kind"] == "ocr_line" and regs[0]["text"] == "INVOICE 4711" and regs[0]["score"] == 1.0
    assert {r["text"] for r in regs if r["kind"] == "ocr_word"} == {"INVOICE", "4711"}
    assert snippet_for_nodes([node], "invoice 4711") == "«INVOICE» «4711»"
    # words of an older store (no line index) are split into lines by position
    old = TextNode(id_="o2", text=node.text, metadata={**node.metadata, "words": [
        {k: v for k, v in w.items() if k != "line"} for w in words]})
    assert [ln.text for ln in node_lines(old)] == ["INVOICE 4711", "Total 12.40"]


def test_terms_numbers_count_double_and_stop_words_drop():
    assert query_terms("What is the total of invoice 4711?") == ["total", "invoice", "4711"]
    found = match_lines(node_lines(TextNode(id_="t", text="x", metadata={
        "modality": "text", "page": 2, "page_width_pt": 100, "page_height_pt": 100,
        "lines": [{"text": "invoice total", "bbox": [0, 0, 50, 10]}, {"text": "ref 4711", "bbox": [0, 20, 50, 30]}]})),
        "invoice 4711")
    assert [ln.text for ln in found] == ["ref 4711", "invoice total"]  # the number weighs double
    assert found[0].kind == "text_span" and found[0].page == 2 and found[0].bbox == pytest.approx([0, 0.2, 0.5, 0.3])
    assert mark_terms("Nodes and edges", query_terms("node")) == "«Nodes» and edges"
