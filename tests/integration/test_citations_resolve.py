"""Citations that resolve (issue 11 item 4): every ``[E#]`` of an answer maps to exactly one
citation object with its own asset, source and page, and uncited evidence is listed as such.

Evidence is real: a two-page PDF rendered with PyMuPDF and read by the real `PDFReader` (text
layer, page renders), plus a text file. The LLM is the local OpenAI-compatible test server
(tests/fakes/openai_server.py) and the retriever a labelled stub returning those nodes in order.
"""

from __future__ import annotations

import re

import pymupdf
import pytest
from llama_index.core.schema import NodeWithScore

from mmrag_li.blobs import BlobStore
from mmrag_li.config import LLMConfig, Settings
from mmrag_li.generation import VerifiedCitationQueryEngine, build_llm
from mmrag_li.present import query_json
from mmrag_li.readers import PDFReader
from tests.fakes.evidence_corpus import NOTES_TEXT, StubRetriever, text_asset_nodes
from tests.fakes.openai_server import FakeOpenAIServer

ANSWER = "The invoice number is 4711 [E1]. The total due is 1,939.00 EUR [E2]."
CITATION_KEYS = {"id", "asset_id", "source", "page", "snippet", "regions"}


@pytest.fixture(scope="module")
def evidence_nodes(tmp_path_factory):
    """Nodes of a two-page invoice PDF (page 1: number, page 2: total) and of a delivery note."""
    root = tmp_path_factory.mktemp("cite")
    doc = pymupdf.open()
    p1 = doc.new_page()
    p1.insert_text((72, 72), "INVOICE 4711", fontsize=14)
    p1.insert_text((72, 100), "ACME Office Supplies, Berlin", fontsize=11)
    p2 = doc.new_page()
    p2.insert_text((72, 72), "Summary of charges", fontsize=11)
    p2.insert_text((72, 100), "Total due 1,939.00 EUR", fontsize=11)
    pdf = root / "invoice_two_pages.pdf"
    doc.save(pdf)
    doc.close()
    reader = PDFReader.from_defaults(Settings(), blob_store=BlobStore(root / "blobs"), ocr=None)
    pdf_nodes = reader.load_data(pdf)
    notes = text_asset_nodes(root / "delivery_notes.txt", NOTES_TEXT)
    return [NodeWithScore(node=n, score=0.9) for n in pdf_nodes] + [NodeWithScore(node=n, score=0.3) for n in notes]


@pytest.fixture()
def server():
    with FakeOpenAIServer([ANSWER]) as srv:
        yield srv


def make_engine(srv, results, **kw):
    settings = Settings(llm=LLMConfig(backend="openai_like", model="fake-vlm", thumbnail_px=128))
    llm = build_llm(settings.llm, base_url=srv.base_url, max_retries=0, timeout=20)
    return VerifiedCitationQueryEngine.from_defaults(StubRetriever(results), settings=settings, llm=llm, **kw)


def unmarked(snippet):
    """A snippet without its «term» marks."""
    return snippet.replace("«", "").replace("»", "")


def check_citations_resolve(answer, meta, pages):
    """Every [E#] in ``answer`` -> exactly one citation object, with the page of its evidence item."""
    evidence = {e["id"]: e for e in meta["evidence"]}
    ids_in_answer = list(dict.fromkeys(re.findall(r"\bE\d+\b", " ".join(re.findall(r"\[([^\]]*)\]", answer)))))
    assert ids_in_answer == meta["citation_ids"] == [c["id"] for c in meta["citations"]]
    for eid in ids_in_answer:
        found = [c for c in meta["citations"] if c["id"] == eid]
        assert len(found) == 1, eid
        c = found[0]
        assert set(c) >= CITATION_KEYS
        ev = evidence[eid]
        assert (c["asset_id"], c["source"], c["page"]) == (ev["asset_id"], ev["source"], ev["page"])
        assert c["page"] == pages[eid]
        assert all(r["page"] == c["page"] for r in c["regions"])


def test_each_citation_has_its_own_page_and_uncited_evidence_is_marked(server, evidence_nodes):
    resp = make_engine(server, evidence_nodes).query("What are the invoice number and the total due?")
    assert resp.response == ANSWER, resp.response
    meta = resp.metadata
    assert meta["verified"] is True
    assert [(e["id"], e["page"]) for e in meta["evidence"]] == [("E1", 1), ("E2", 2), ("E3", None)]
    check_citations_resolve(resp.response, meta, {"E1": 1, "E2": 2})
    e1, e2 = meta["citations"]
    assert e1["asset_id"] == e2["asset_id"] and e1["source"].endswith("invoice_two_pages.pdf")
    # the regions are the lines each sentence relies on, on that sentence's own page
    assert any("4711" in r["text"] for r in e1["regions"]) and "4711" in unmarked(e1["snippet"])
    assert any("1,939.00" in r["text"] for r in e2["regions"]) and "1,939.00" in unmarked(e2["snippet"])
    assert [e["cited"] for e in meta["evidence"]] == [True, True, False]

    data = query_json(resp)  # the `mmrag query --json` / POST /api/query document
    assert data["citations"] == meta["citations"] and data["citation_ids"] == ["E1", "E2"]
    assert data["verified"] is True and data["verification"]["supported"] is True
    assert {"citations_valid", "supported", "checks"} <= set(data["verification"])
    srcs = {s["id"]: s for s in data["sources"]}
    assert set(srcs) == {"E1", "E2", "E3"}
    assert srcs["E3"]["cited"] is False and srcs["E3"]["source"].endswith("delivery_notes.txt")
    assert srcs["E1"]["cited"] is True and (srcs["E1"]["page"], srcs["E2"]["page"]) == (1, 2)
    for s in srcs.values():
        assert {"id", "asset_id", "source", "page", "snippet", "cited"} <= set(s)


def test_streaming_answer_gets_the_same_citations(server, evidence_nodes):
    resp = make_engine(server, evidence_nodes, streaming=True).query("What are the invoice number and the total due?")
    text = "".join(resp.response_gen)
    assert text == ANSWER
    check_citations_resolve(text, resp.metadata, {"E1": 1, "E2": 2})
    assert [e["cited"] for e in resp.metadata["evidence"]] == [True, True, False]


def test_refused_answer_cites_nothing_and_marks_all_uncited(server, evidence_nodes):
    server.replies = ["The total due is 9,999.00 EUR [E2].", "The total due is 9,999.00 EUR [E2]."]
    resp = make_engine(server, evidence_nodes).query("What is the total due?")
    meta = resp.metadata
    assert meta["verified"] is False and meta["citations"] == [] and meta["citation_ids"] == []
    data = query_json(resp)
    assert data["verified"] is False and all(s["cited"] is False for s in data["sources"])
