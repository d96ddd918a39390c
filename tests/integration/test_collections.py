"""Tenant isolation: every retriever (vector and BM25) and the answer path respect
``allowed_collections``; a private document's unique string never reaches a public caller."""

from __future__ import annotations

import json
import shutil

import pytest
from llama_index.core.schema import NodeWithScore, QueryBundle

from mmrag_li.config import LLMConfig, RetrievalConfig, Settings
from mmrag_li.pipeline import MultiModalRAG
from tests.fakes.openai_server import FakeOpenAIServer
from tests.ingest_checks import assert_store_matches_manifest, text_png

SECRET = "ZEBRA7731"
RETRIEVERS = ("image", "caption", "ocr", "text", "bm25")
# No relevance floors here: every retriever returns its k nearest, so only the filter decides.
NO_FLOOR = {n: -1.0 for n in RETRIEVERS + ("image2image",)}


@pytest.fixture(scope="module")
def tenants(tmp_path_factory):
    root = tmp_path_factory.mktemp("tenants")
    pub, priv = root / "public", root / "private"
    pub.mkdir()
    priv.mkdir()
    (pub / "handbook.md").write_text("# Handbook\n\nThe office opens at nine. Invoices are paid within 30 days.\n")
    text_png(pub / "poster.png", ["OFFICE POSTER", "Opening hours nine to five"], size=(800, 200), font_px=40)
    (priv / "salaries.md").write_text(
        f"# Salaries\n\nThe invoice code {SECRET} belongs to the confidential salary review. Invoices office nine.\n")
    text_png(priv / "memo.png", [f"MEMO {SECRET}", "Office invoice nine"], size=(800, 200), font_px=40)
    shutil.copy(pub / "poster.png", priv / "poster_copy.png")  # the same bytes in both tenants
    settings = Settings(store_dir=str(root / "store"), ocr={"engine": "tesseract"})
    rag = MultiModalRAG(settings)
    assert rag.ingest(pub, collection="public", progress=False).failed == []
    assert rag.ingest(priv, collection="private", progress=False).failed == []
    assert_store_matches_manifest(rag)
    return rag, pub, priv


def _texts(hits):
    return " ".join(h.node.get_content() for h in hits)


def test_every_retriever_filters_by_collection(tenants):
    rag, pub, priv = tenants
    public = rag.as_retriever(allowed_collections=["public"], min_scores=NO_FLOOR)
    private = rag.as_retriever(allowed_collections=["private"], min_scores=NO_FLOOR)
    query = f"invoice office nine {SECRET} poster memo salary"
    for name in RETRIEVERS:
        hits = public.run_one(name, query)
        assert hits, name  # the public tenant does get results ...
        assert {h.node.metadata["collection"] for h in hits} == {"public"}, name
        assert SECRET not in _texts(hits), name
        # ... and the filter is what keeps the private ones out: the private caller sees them.
        assert {h.node.metadata["collection"] for h in private.run_one(name, query)} == {"private"}, name
    assert SECRET in _texts(private.run_one("bm25", SECRET))
    # image -> image with the private memo as the query image: still only public images.
    i2i = public.run_one("image2image", "", image_path=str(priv / "memo.png"))
    assert i2i and {h.node.metadata["collection"] for h in i2i} == {"public"}


def test_same_bytes_in_two_collections_are_two_assets(tenants):
    rag, pub, priv = tenants
    public = rag.manifest.get(str((pub / "poster.png").resolve()))
    private = rag.manifest.get(str((priv / "poster_copy.png").resolve()))
    assert public.asset_id != private.asset_id
    assert not set(public.node_ids) & set(private.node_ids)
    for rec, coll in ((public, "public"), (private, "private")):
        nodes = rag.stores.get_asset_nodes(rec.asset_id)
        assert nodes and {n.metadata["collection"] for n in nodes} == {coll}


def test_fused_results_and_evidence_stay_in_the_allowed_collection(tenants):
    rag, _, _ = tenants
    hits = rag.as_retriever(allowed_collections=["public"], min_scores=NO_FLOOR).retrieve_assets(f"{SECRET} salary memo invoice", top_k=10)
    assert hits
    for h in hits:
        assert {n.node.metadata["collection"] for n in h.nodes} == {"public"}
        assert SECRET not in _texts(h.nodes)


def test_answers_never_reveal_private_evidence(tenants):
    rag, _, _ = tenants
    question = f"What does the code {SECRET} belong to? Which salary review?"
    retriever = rag.as_retriever(allowed_collections=["public"], min_scores=NO_FLOOR)
    from mmrag_li.generation.query_engine import VerifiedCitationQueryEngine

    extractive = VerifiedCitationQueryEngine.from_defaults(retriever, settings=rag.settings)
    resp = extractive.query(question)
    assert "salary review" not in str(resp.response).lower()
    assert all(n.node.metadata["collection"] == "public" for n in resp.source_nodes)

    # A maximally leaky LLM: it repeats everything it was sent. Nothing private may be in it.
    def echo(req):
        return json.dumps(req["messages"])

    with FakeOpenAIServer([echo]) as srv:
        from mmrag_li.generation import build_llm

        llm = build_llm(LLMConfig(backend="openai_like", model="fake-vlm"), base_url=srv.base_url,
                        max_retries=0, timeout=30)
        engine = VerifiedCitationQueryEngine.from_defaults(retriever, settings=rag.settings, llm=llm)
        resp = engine.query(question)
        sent = json.dumps(srv.requests)
    assert srv.requests and "office opens at nine" in sent.lower()  # public evidence was sent ...
    assert "confidential salary review" not in sent and "salaries.md" not in sent  # ... private was not
    assert "confidential salary review" not in str(resp.response)
    assert all(n.node.metadata["collection"] == "public" for n in resp.source_nodes)


class LeakyRetriever:
    """A retriever that ignores its own allowed_collections (a bug or a custom retriever)."""

    def __init__(self, nodes, allowed):
        self.nodes = nodes
        self.config = RetrievalConfig(allowed_collections=allowed)

    def retrieve(self, qb):
        return list(self.nodes)

    async def aretrieve(self, qb):
        return list(self.nodes)


async def test_query_engine_drops_evidence_outside_allowed_collections(tenants):
    rag, _, priv = tenants
    private_nodes = rag.stores.get_asset_nodes(rag.manifest.get(str((priv / "salaries.md").resolve())).asset_id)
    assert private_nodes
    from mmrag_li.generation.query_engine import VerifiedCitationQueryEngine

    leaky = LeakyRetriever([NodeWithScore(node=n, score=1.0) for n in private_nodes], ["public"])
    engine = VerifiedCitationQueryEngine(leaky)
    for resp in (engine.query(QueryBundle(f"What is {SECRET}?")), await engine.aquery(QueryBundle(f"What is {SECRET}?"))):
        assert SECRET not in str(resp.response) and resp.source_nodes == []
        assert resp.metadata["evidence"] == []
