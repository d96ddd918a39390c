"""The lines a citing sentence relied on (quotes, then numbers, then words) become a citation's
regions and snippet; the question's own lines come after them. No models."""

from llama_index.core.schema import NodeWithScore, TextNode

from mmrag_li.generation.cited_lines import (citation_regions, citation_snippet, claim_numbers, claim_quotes,
                                             relied_lines)
from mmrag_li.generation.evidence import build_evidence, citation_records
from mmrag_li.retrieval.regions import mark_terms, query_terms

LINES = [("INVOICE 4711", 50), ("Date: 2024-03-15", 120), ("Lens kit 1,200.00", 200), ("Total 1,939.00 EUR", 300),
         ("IBAN DE02 1203 0000", 450)]


def invoice_node():
    """An OCR node of a 1000 x 500 px invoice: one word list with a line index per word."""
    words = []
    for i, (text, y) in enumerate(LINES):
        x = 100
        for w in text.split():
            words.append({"text": w, "bbox": [x, y, x + 20 * len(w), y + 30], "line": i})
            x += 20 * len(w) + 15
    return TextNode(id_="ocr", text="\n".join(t for t, _y in LINES),
                    metadata={"modality": "ocr", "asset_id": "inv", "source": "/data/invoice.png", "page": None,
                              "words": words, "width": 1000, "height": 500})


def evidence(question):
    return build_evidence([NodeWithScore(node=invoice_node(), score=0.9)], question, thumbnails=False)


def test_quotes_and_numbers_are_read_from_the_claim():
    claim = 'Extractive answer: "Total 1,939.00 EUR" and «Lens kit»'
    assert claim_quotes(claim) == ["Total 1,939.00 EUR", "Lens kit"]
    assert claim_quotes("“curly quotes”, ‘single ones’") == ["curly quotes", "single ones"]
    # numbers compare by digits; the question's numbers go last, single digits are left out
    assert claim_numbers("Invoice 4711 totals 1,939.00 EUR in 3 parts", "total of invoice 4711?") == ["193900", "4711"]


def test_a_quoted_line_is_relied_on_before_the_question_terms():
    question = "What is the total of invoice 4711?"
    [item] = evidence(question)
    assert item.regions[0]["text"] == "INVOICE 4711"  # the item's own regions follow the question
    answer = 'Extractive answer (no generative model configured): "Total 1,939.00 EUR" [E1]'
    [cite] = citation_records([item], answer, ["E1"])
    assert cite["regions"][0]["text"] == "Total 1,939.00 EUR" and cite["regions"][0]["kind"] == "ocr_line"
    assert cite["regions"][0]["bbox"][1] == 0.6  # y 300 px of 500
    assert [r["text"] for r in cite["regions"][1:]] == ["INVOICE 4711"]  # then the question's line
    assert cite["snippet"] == "«Total» «1,939.00» «EUR»"


def test_numbers_decide_when_nothing_is_quoted_and_the_question_number_ranks_last():
    question = "What is the total of invoice 4711?"
    [item] = evidence(question)
    relied = relied_lines(item, "The total of invoice 4711 is 1939.00 EUR.", question)
    assert [r["text"] for r in relied] == ["Total 1,939.00 EUR"]
    relied = relied_lines(item, "It was issued on 2024-03-15.", question)
    assert [r["text"] for r in relied] == ["Date: 2024-03-15"]
    # no quote, no number: the claim's words (at least half of them, weighted)
    assert [r["text"] for r in relied_lines(item, "The lens kit was billed.", question)] == ["Lens kit 1,200.00"]
    assert relied_lines(item, "Something else entirely.", question) == []


def test_without_relied_lines_a_citation_keeps_the_items_own_regions_and_snippet():
    own = [{"page": None, "bbox": [0, 0, 1, 1], "text": "image", "kind": "image", "score": 0.1}]
    assert citation_regions([], own) == own
    assert citation_snippet([], "anything", "own snippet") == "own snippet"
    relied = [{"page": 1, "bbox": [0, 0.1, 1, 0.2], "text": "Total 9.00", "kind": "text_span", "score": 1.0}]
    words = {"page": 1, "bbox": [0, 0.1, 0.1, 0.2], "text": "Total", "kind": "ocr_word", "score": 1.0}
    line = {"page": 1, "bbox": [0, 0.5, 1, 0.6], "text": "Invoice 7", "kind": "text_span", "score": 0.5}
    assert citation_regions(relied, [dict(relied[0]), words, line]) == relied + [line]


def test_numbers_are_marked_whole():
    assert mark_terms("Total 1,939.00 EUR on 2024-03-15", query_terms("total 1,939.00 2024-03-15")) == \
        "«Total» «1,939.00» EUR on «2024-03-15»"
