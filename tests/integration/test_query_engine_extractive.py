"""VerifiedCitationQueryEngine with the offline extractive answerer, on real OCR'd files.

Evidence comes from PNGs rendered with Pillow and OCR'd by real tesseract (tests/fakes/
evidence_corpus.py); the retriever is a labelled stub that returns those nodes in a fixed order.
"""

from __future__ import annotations

import json
import time

import pytest
from llama_index.core.postprocessor import SimilarityPostprocessor
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import QueryBundle

from mmrag_li.config import Settings
from mmrag_li.generation import (
    EXTRACTIVE_PREFIX,
    I_DONT_KNOW,
    ExtractiveAnswerer,
    VerifiedCitationQueryEngine,
    build_evidence,
    verify_answer,
)
from tests.fakes.evidence_corpus import StubRetriever

pytestmark = pytest.mark.slow



def engine(results, **kw):
    return VerifiedCitationQueryEngine.from_defaults(StubRetriever(results), settings=Settings(), **kw)


def test_ocr_really_read_the_invoice(corpus):
    ocr = [n for n in corpus.assets["invoice"] if n.metadata["modality"] == "ocr"][0]
    assert "1,939.00" in ocr.text and "4711" in ocr.text
    assert ocr.metadata["ocr_conf"] > 50 and ocr.metadata["words"]


def test_invoice_total_is_quoted_cited_and_verified(corpus, tmp_path):
    log = tmp_path / "logs" / "queries.jsonl"
    eng = engine(corpus.results("invoice", "notes"), log_path=str(log))
    resp = eng.query("What is the invoice total?")
    ans = resp.response
    assert ans.startswith(EXTRACTIVE_PREFIX)
    assert '"Total 1,939.00" [E1]' in ans
    md = resp.metadata
    assert md["verified"] is True and md["answered"] is True and md["extractive"] is True
    assert md["citation_ids"][0] == "E1"
    invoice_asset = corpus.assets["invoice"][0].metadata["asset_id"]
    first = md["citations"][0]
    assert first["id"] == "E1" and first["asset_id"] == invoice_asset and first["page"] is None
    assert set(first) >= {"id", "asset_id", "source", "page", "snippet", "regions"}
    assert first["source"].endswith("invoice_4711.png") and "1,939.00" in first["snippet"]
    assert [c["id"] for c in md["citations"]] == md["citation_ids"]
    assert md["evidence"][0]["cited"] is True and md["evidence"][1]["cited"] is False
    assert set(md["timings"]) >= {"retrieval_s", "prompt_s", "llm_s", "verify_s"}
    assert [e["id"] for e in md["evidence"]] == ["E1", "E2"]
    assert md["evidence"][0]["asset_id"] == invoice_asset and md["evidence"][0]["node_ids"]
    # cited evidence first in source_nodes
    assert resp.source_nodes[0].node.metadata["asset_id"] == invoice_asset
    # one JSON line per query
    rec = json.loads(log.read_text().splitlines()[-1])
    assert rec["question"] == "What is the invoice total?" and rec["verified"] is True
    assert rec["citation_ids"] == md["citation_ids"] and rec["retrieved"][0]["score"] is not None
    assert [e["id"] for e in rec["evidence"]] == ["E1", "E2"]


def test_unrelated_question_gives_i_dont_know(corpus):
    resp = engine(corpus.results("invoice", "notes")).query("What is the capital of Peru?")
    assert resp.response == I_DONT_KNOW
    assert resp.metadata["verified"] is True and resp.metadata["answered"] is False
    assert resp.metadata["citations"] == []


def test_injection_is_data_and_never_the_answer(corpus):
    order = ("injection_txt", "injection_img", "invoice", "notes")
    eng = engine(corpus.results(*order))
    for q in ("What is the capital of Peru?", "What is the weather in Lima tomorrow?"):
        resp = eng.query(q)
        assert resp.response == I_DONT_KNOW, resp.response
        assert "HACKED" not in resp.response
    resp = eng.query("What is the invoice total?")
    assert "1,939.00" in resp.response and resp.metadata["verified"]
    assert resp.response.strip() != "HACKED"


def test_extractive_answer_verifies_against_real_evidence(corpus):
    ev = build_evidence(corpus.results("invoice", "notes"), "When was the invoice issued?")
    ans = ExtractiveAnswerer().answer("When was the invoice issued?", ev)
    assert "05/03/2024" in ans and "[E1]" in ans
    assert verify_answer(ans, ev).verified
    ans = ExtractiveAnswerer().answer("How many chairs were delivered?", ev)
    assert "12 ergonomic chairs" in ans and "[E2]" in ans and verify_answer(ans, ev).verified


def test_lexical_fallback_without_sentence_model(corpus):
    ev = build_evidence(corpus.results("invoice", "notes"), "What is the invoice total?")
    x = ExtractiveAnswerer(use_embeddings=False)
    ans = x.answer("What is the invoice total?", ev)
    assert "1,939.00" in ans and verify_answer(ans, ev).verified
    assert x.answer("What is the capital of Peru?", ev) == I_DONT_KNOW


def test_no_evidence_means_i_dont_know():
    resp = engine([]).query("anything")
    assert resp.response == I_DONT_KNOW and resp.metadata["verified"] is True


def test_image_query_extractive_describes_best_match(corpus):
    img = corpus.assets["invoice"][0].metadata["image_path"]
    resp = engine(corpus.results("invoice")).query(QueryBundle(query_str="", image_path=img))
    assert "invoice_4711.png" in resp.response and "[E1]" in resp.response
    assert resp.metadata["verified"]


async def test_async_extractive(corpus):
    resp = await engine(corpus.results("invoice", "notes")).aquery("What is the invoice total?")
    assert "1,939.00" in resp.response and resp.metadata["verified"]


def test_streaming_extractive_yields_whole_answer(corpus):
    resp = engine(corpus.results("invoice"), streaming=True).query("What is the invoice total?")
    text = "".join(resp.response_gen)
    assert "1,939.00" in text and resp.metadata["verified"] is True


def test_latency_of_extractive_answer(corpus):
    ev = build_evidence(corpus.results("invoice", "notes", "injection_img", "injection_txt"), "total")
    x = ExtractiveAnswerer()
    x.answer("warm up", ev)
    t = time.perf_counter()
    for _ in range(5):
        x.answer("What is the invoice total?", ev)
    per = (time.perf_counter() - t) / 5
    assert per < 2.0, per


class ReverseAssets(BaseNodePostprocessor):
    """A user's node postprocessor: puts the assets in reverse order (nodes of one asset stay together)."""

    @classmethod
    def class_name(cls) -> str:
        return "ReverseAssets"

    def _postprocess_nodes(self, nodes, query_bundle=None):
        order = list(dict.fromkeys(n.node.metadata["asset_id"] for n in nodes))[::-1]
        return [n for a in order for n in nodes if n.node.metadata["asset_id"] == a]


@pytest.mark.parametrize("use_async", [False, True])
async def test_node_postprocessors_shape_the_evidence(corpus, use_async):
    results = corpus.results("invoice", "notes", "injection_txt")  # asset scores 1.0, 0.5, 0.333
    invoice, notes = (corpus.assets[k][0].metadata["asset_id"] for k in ("invoice", "notes"))
    eng = engine(results, node_postprocessors=[SimilarityPostprocessor(similarity_cutoff=0.4), ReverseAssets()])
    assert [type(p).__name__ for p in eng.node_postprocessors] == ["SimilarityPostprocessor", "ReverseAssets"]
    q = "What is the invoice total?"
    resp = await eng.aquery(q) if use_async else eng.query(q)
    ev = resp.metadata["evidence"]
    assert [e["asset_id"] for e in ev] == [notes, invoice]  # injection_txt dropped, order reversed
    assert [e["id"] for e in ev] == ["E1", "E2"]
    assert '"Total 1,939.00" [E2]' in resp.response and resp.metadata["citation_ids"] == ["E2"]
    assert {n.node.metadata["asset_id"] for n in resp.source_nodes} == {notes, invoice}
    nodes = await eng.aretrieve(QueryBundle(q)) if use_async else eng.retrieve(QueryBundle(q))
    assert nodes[0].node.metadata["asset_id"] == notes


def test_synthesize_over_given_nodes(corpus):
    eng = engine([])
    resp = eng.synthesize(QueryBundle("What is the invoice total?"), corpus.results("invoice"),
                          additional_source_nodes=corpus.results("notes"))
    assert "1,939.00" in resp.response and resp.metadata["verified"] is True
    assert resp.source_nodes[-1].node.metadata["asset_id"] == corpus.assets["notes"][0].metadata["asset_id"]
