"""Tenant isolation on every path to stored nodes (issue 12 §1), with a real private/public pair.

One store holds a ``public`` and a ``private`` collection (Markdown + rendered text images, real
OCR). Three views of it differ only in ``retrieval.allowed_collections``: ``["public"]``, ``[]``
(deny all) and absent (everything). Covered: each built-in retriever alone (``run_one``), fused
search (sync and async), answers, the stock LlamaIndex index, BM25 statistics (a public hit's
score must not move when private documents with the query words are added), the evaluation
baselines and ``evaluate(..., baselines=True)``, inspect / delete / stats by path, full id and
8-char prefix through the library, and inspect / delete / stats / search through the real CLI
(a hidden asset gets exactly the answer a missing one gets; 1-char prefixes are usage errors).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from llama_index.core.schema import MetadataMode

from mmrag_li.assets import AssetIdError, AssetNotFoundError
from mmrag_li.config import Settings
from mmrag_li.evaluation.baselines import LlamaIndexDefaultBaseline, SeedBaseline
from mmrag_li.evaluation.harness import evaluate
from mmrag_li.guard import CollectionGuard, GuardedStores
from mmrag_li.pipeline import MultiModalRAG
from mmrag_li.retrieval.bm25 import BM25Index, matches_filters
from mmrag_li.retrieval.fusion import ALL_RETRIEVERS, TEXT_RETRIEVERS, combine_filters
from mmrag_li.schema import COLLECTIONS
from tests.ingest_checks import text_png

SECRET = "ZEBRA7731"
NO_FLOOR = {n: -1.0 for n in ALL_RETRIEVERS}  # every retriever returns its k nearest: only the guard decides
BM25_QUERY = "office invoices nine"
REPO = Path(__file__).resolve().parents[2]
CLI_ENV = {k: v for k, v in os.environ.items() if not k.startswith("MMRAG_")}
CLI_ENV.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")


def view(rag: MultiModalRAG, allowed) -> MultiModalRAG:
    """The same store, models and manifest seen with ``retrieval.allowed_collections = allowed``."""
    settings = rag.settings.model_copy(deep=True)
    settings.retrieval = settings.retrieval.model_copy(update={"allowed_collections": allowed})
    return MultiModalRAG(settings, stores=rag.stores, manifest=rag.manifest, text_embed=rag.text_embed,
                         clip_embed=rag.clip_embed, ocr=rag.ocr, captioner=rag.captioner)


@pytest.fixture(scope="module")
def t(tmp_path_factory):
    root = tmp_path_factory.mktemp("tenant-guard")
    pub, priv = root / "public", root / "private"
    pub.mkdir()
    priv.mkdir()
    (pub / "handbook.md").write_text("# Handbook\n\nThe office opens at nine. Invoices are paid within 30 days.\n")
    text_png(pub / "poster.png", ["OFFICE POSTER", "Opening hours nine to five"], size=(800, 200), font_px=40)
    (priv / "salaries.md").write_text(
        f"# Salaries\n\nThe invoice code {SECRET} belongs to the confidential salary review. Invoices office nine.\n")
    text_png(priv / "memo.png", [f"MEMO {SECRET}", "Office invoice nine"], size=(800, 200), font_px=40)
    rag = MultiModalRAG(Settings(store_dir=str(root / "store"), ocr={"kind": "tesseract"}))
    assert rag.ingest(pub, collection="public", progress=False).failed == []
    assert rag.ingest(priv, collection="private", progress=False).failed == []
    ids = {p.name: rag.manifest.get(str(p.resolve())).asset_id
           for p in (pub / "handbook.md", pub / "poster.png", priv / "salaries.md", priv / "memo.png")}
    public_ids = {ids["handbook.md"], ids["poster.png"]}
    private_ids = {ids["salaries.md"], ids["memo.png"]}
    # A well-formed id nobody has, sharing no 8-char prefix with a real one.
    size = len(ids["salaries.md"])
    missing = next(c * size for c in "0123456789abcdef" if not any(i.startswith(c) for i in ids.values()))
    return SimpleNamespace(rag=rag, pub=view(rag, ["public"]), deny=view(rag, []), all=view(rag, None),
                           root=root, store=root / "store", public=pub, private=priv, ids=ids,
                           public_ids=public_ids, private_ids=private_ids, missing=missing)


def collections_of(hits):
    return {h.node.metadata.get("collection") for h in hits}


def texts(nodes):
    return " ".join(getattr(n, "node", n).get_content(MetadataMode.NONE) for n in nodes)


# ---- the guard itself ------------------------------------------------------------------------------
def test_guard_semantics_none_all_empty_nothing():
    assert CollectionGuard.from_config(Settings()).unrestricted
    assert CollectionGuard(None).filters() is None and combine_filters(None, None) is None
    deny = CollectionGuard.from_config(Settings(retrieval={"allowed_collections": []}))
    assert deny.denies_all and not deny.allows({"collection": "public"})
    assert not matches_filters({"collection": "public"}, deny.filters())
    assert not matches_filters({"collection": "public"}, combine_filters(None, []))  # [] is nothing, not everything
    pub = CollectionGuard(["public"])
    assert pub.allows({"collection": "public"}) and not pub.allows({"collection": "private"})
    assert not pub.allows({})  # no collection: not provably allowed
    assert matches_filters({"collection": "public"}, pub.filters()) and not matches_filters(
        {"collection": "private"}, pub.filters())
    assert CollectionGuard(["a", "b"]).narrow(["b", "c"]) == CollectionGuard(["b"])
    assert CollectionGuard(None).narrow([]).denies_all and pub.narrow(None) == pub
    # A hidden record and a missing one raise the same error with the same message.
    hidden = SimpleNamespace(source="/x", asset_id="ab" * 32, collection="private")
    with pytest.raises(AssetNotFoundError) as e1:
        pub.check_asset(hidden, asked="abababab")
    with pytest.raises(AssetNotFoundError) as e2:
        pub.check_asset(None, asked="abababab")
    assert str(e1.value) == str(e2.value)


# ---- retrieval ---------------------------------------------------------------------------------------
def test_every_built_in_retriever_alone_is_guarded(t):
    public = t.pub.as_retriever(min_scores=NO_FLOOR)
    everything = t.all.as_retriever(min_scores=NO_FLOOR)
    nothing = t.deny.as_retriever(min_scores=NO_FLOOR)
    query = f"invoice office nine {SECRET} poster memo salary"
    for name in [n for n in ALL_RETRIEVERS if n != "image2image"]:
        hits = public.run_one(name, query)
        assert hits and collections_of(hits) == {"public"}, name
        assert SECRET not in texts(hits), name
        assert "private" in collections_of(everything.run_one(name, query)), name  # the guard is what hides them
        assert nothing.run_one(name, query) == [], name
    memo = str(t.private / "memo.png")  # the private picture as the query image
    i2i = public.run_one("image2image", "", image_path=memo)
    assert i2i and collections_of(i2i) == {"public"}
    assert "private" in collections_of(everything.run_one("image2image", "", image_path=memo))
    assert nothing.run_one("image2image", "", image_path=memo) == []


def test_search_query_and_the_stock_index_are_guarded(t):
    query = f"{SECRET} salary memo invoice office"
    hits = t.pub.retrieve(query, k=10)
    assert hits and {h.asset_id for h in hits} <= t.public_ids
    assert all(collections_of(h.nodes) == {"public"} for h in hits)
    assert SECRET not in " ".join(texts(h.nodes) for h in hits)
    ahits = asyncio.run(t.pub.as_retriever().aretrieve_assets(query, top_k=10))
    assert ahits and {h.asset_id for h in ahits} <= t.public_ids
    assert t.private_ids & {h.asset_id for h in t.all.retrieve(query, k=10)}
    assert t.deny.retrieve(query, k=10) == []

    resp = t.pub.query(f"What does the code {SECRET} belong to?")
    assert "salary review" not in str(resp.response).lower() and SECRET not in str(resp.response)
    assert resp.source_nodes and collections_of(resp.source_nodes) == {"public"}
    assert t.deny.query(f"What does the code {SECRET} belong to?").source_nodes == []

    stock = t.pub.index.as_retriever(similarity_top_k=10, image_similarity_top_k=10).retrieve(query)
    assert stock and collections_of(stock) == {"public"}
    assert t.deny.index.as_retriever(similarity_top_k=10, image_similarity_top_k=10).retrieve(query) == []


def test_bm25_scores_do_not_depend_on_private_documents(t):
    public = t.pub.as_retriever(min_scores=NO_FLOOR)
    everything = t.all.as_retriever(min_scores=NO_FLOOR)

    def score(retriever):
        hits = retriever.run_one("bm25", BM25_QUERY)
        return next(h.score for h in hits if h.node.metadata["asset_id"] == t.ids["handbook.md"])

    before_pub, before_all = score(public), score(everything)
    # The public score is that of an index over the public text alone ...
    only_public = BM25Index(n for c in TEXT_RETRIEVERS for n in t.rag.stores.all_nodes(c)
                            if n.metadata.get("collection") == "public")
    alone = next(h.score for h in only_public.search(BM25_QUERY, 10) if h.node.metadata["asset_id"] == t.ids["handbook.md"])
    assert before_pub == pytest.approx(alone, rel=1e-9)
    # ... and adding private documents full of the query words moves nothing a public caller sees.
    extra = t.root / "private_more"
    extra.mkdir()
    for i in range(3):
        (extra / f"more_{i}.md").write_text(f"# Note {i}\n\nOffice invoices nine. Office nine invoices office {i}.\n")
    assert t.rag.ingest(extra, collection="private", progress=False).failed == []
    assert score(public) == pytest.approx(before_pub, rel=1e-9)
    assert score(everything) != pytest.approx(before_all, rel=1e-6)  # the statistics an unscoped index leaks


# ---- evaluation baselines ----------------------------------------------------------------------------
def test_eval_baselines_never_rank_private_assets(t):
    query = f"{SECRET} salary memo invoice office"
    memo = str(t.private / "memo.png")
    for make in (lambda r: SeedBaseline(r), lambda r: LlamaIndexDefaultBaseline(r, "text"),
                 lambda r: LlamaIndexDefaultBaseline(r, "ocr")):
        pub = make(t.pub)
        for units in (pub.retrieve(query, k=20), pub.retrieve("", image_path=memo, k=20)):
            assert units and {a for a, _p in units} <= t.public_ids
        assert {a for a, _p in make(t.all).retrieve(query, k=20)} & t.private_ids  # without the guard they would
        assert make(t.deny).retrieve(query, k=20) == []

    queries = t.root / "queries.jsonl"
    queries.write_text("\n".join(json.dumps(q) for q in (
        {"id": "pub", "query": "office opening hours nine", "relevant": [str(t.public / "handbook.md")]},
        {"id": "priv", "query": f"{SECRET} salary review", "relevant": [str(t.private / "salaries.md")]},
    )) + "\n")
    report = evaluate(t.pub, queries, ks="1,5", baselines=True, answers=False, ingest=False, progress=False)
    assert {"seed_one_model", "llamaindex_mm_index", "llamaindex_mm_index_ocr"} <= set(report["baselines"])
    assert [s["id"] for s in report["skipped"]] == ["priv"]  # a hidden file does not even resolve
    assert all(Path(src).parent.name == "public" for q in report["per_query"] for src in q["fused_top"])
    assert not evaluate(t.all, queries, ks="1,5", answers=False, ingest=False, progress=False)["skipped"]


# ---- inspect / delete / stats through the library -----------------------------------------------------
def test_inspect_delete_and_stats_through_the_library(t):
    priv_id, pub_id = t.ids["salaries.md"], t.ids["handbook.md"]
    for target in (priv_id, priv_id[:8], str(t.private / "salaries.md")):
        assert t.pub.resolve_asset(target) is None and t.pub.inspect(target) is None, target
        assert t.deny.inspect(target) is None, target
        assert t.all.inspect(target)["asset_id"] == priv_id, target
    assert t.pub.resolve_asset(t.missing) is None and t.pub.resolve_asset(t.missing[:8]) is None
    shown = t.pub.inspect(pub_id[:8])
    assert shown["asset_id"] == pub_id and {n["metadata"]["collection"] for n in shown["nodes"]} == {"public"}
    assert t.deny.inspect(pub_id) is None
    for short in (priv_id[:1], pub_id[:1], t.missing[:7]):
        with pytest.raises(AssetIdError, match="too short"):
            t.pub.resolve_asset(short)

    assert t.pub.delete(priv_id) == 0 == t.pub.delete(t.missing)  # hidden = missing: nothing happens
    assert t.deny.delete(pub_id) == 0
    assert t.rag.stores.get_asset_nodes(priv_id) and t.rag.manifest.by_asset(priv_id)
    assert t.rag.stores.get_asset_nodes(pub_id) and t.rag.manifest.by_asset(pub_id)

    view = GuardedStores(t.rag.stores, CollectionGuard(["public"]))
    assert view.asset_ids() == t.public_ids and view.get_asset_nodes(priv_id) == []
    stats = t.pub.stats()
    expected = {c: sum(1 for n in t.rag.stores.all_nodes(c) if n.metadata["collection"] == "public")
                for c in COLLECTIONS}
    assert stats["nodes"] == expected and stats["assets"] == len(t.public_ids)
    nothing = t.deny.stats()
    assert nothing["assets"] == 0 and set(nothing["nodes"].values()) == {0}


# ---- the real command line ------------------------------------------------------------------------------
def mmrag(*args, config=None):
    return subprocess.run([sys.executable, "-m", "mmrag_li.cli", *args, *(["--config", str(config)] if config else [])],
                          capture_output=True, text=True, env=CLI_ENV, cwd=REPO, timeout=600,
                          stdin=subprocess.DEVNULL)


def same_answer(a, b, a_text, b_text):
    """Two CLI runs told the caller the same thing (up to the text each was asked about)."""
    assert a.returncode == b.returncode, (a.stderr, b.stderr)
    assert a.stdout.replace(a_text, "<T>") == b.stdout.replace(b_text, "<T>")
    assert a.stderr.replace(a_text, "<T>") == b.stderr.replace(b_text, "<T>"), (a.stderr, b.stderr)


def test_cli_inspect_delete_stats_and_search_hide_private_assets(t):
    pub_cfg = t.root / "public-only.yaml"
    pub_cfg.write_text("retrieval:\n  allowed_collections: [public]\n")
    store = ["--store", str(t.store)]
    priv_id, pub_id = t.ids["salaries.md"], t.ids["poster.png"]
    pairs = [(priv_id, t.missing), (priv_id[:8], t.missing[:8]),
             (str(t.private / "salaries.md"), str(t.private / "no_such_file.md"))]
    for hidden, missing in pairs:
        a = mmrag("inspect", hidden, *store, "--json", config=pub_cfg)
        b = mmrag("inspect", missing, *store, "--json", config=pub_cfg)
        assert a.returncode == 1 and a.stdout == "", a.stderr
        same_answer(a, b, hidden, missing)
    for short in (priv_id[:1], pub_id[:1]):  # no enumeration by trying 0-f
        proc = mmrag("inspect", short, *store, config=pub_cfg)
        assert proc.returncode == 2 and "too short" in proc.stderr
    a = mmrag("delete", priv_id[:8], "--yes", *store, "--json", config=pub_cfg)
    b = mmrag("delete", t.missing[:8], "--yes", *store, "--json", config=pub_cfg)
    assert a.returncode == 1
    same_answer(a, b, priv_id[:8], t.missing[:8])
    assert t.all.inspect(priv_id)["nodes"]  # still there

    stats = json.loads(mmrag("stats", *store, "--json", config=pub_cfg).stdout)
    assert stats["assets"] == len(t.public_ids)
    found = json.loads(mmrag("search", f"{SECRET} salary memo invoice", *store, "--json", config=pub_cfg).stdout)
    assert found["results"] and {r["asset_id"] for r in found["results"]} <= t.public_ids

    proc = mmrag("delete", pub_id[:8], "--yes", *store, "--json", config=pub_cfg)  # a visible one: deleted
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["deleted_nodes"] > 0
    assert mmrag("inspect", pub_id, *store, config=pub_cfg).returncode == 1
