"""One query encode per embedding space, shared by the retrievers of one fused query; the
retrievers run concurrently and give exactly what they give one after the other. No model loads."""

from __future__ import annotations

import threading
import time
from typing import List

from llama_index.core.schema import NodeWithScore, TextNode

from mmrag_li.config import RetrievalConfig
from mmrag_li.retrieval.fusion import FusionRetriever
from mmrag_li.retrieval.query_vectors import QueryVectorMemo, query_space, run_concurrently

NODES = [TextNode(id_=f"n{i}", text=f"red car number {i}", metadata={"asset_id": f"a{i}", "modality": m})
         for i, m in enumerate(["caption", "ocr", "text", "caption", "ocr", "text"])]


class CountingEmbed:
    """A query embedding that counts its calls; ``space`` set = it declares a query space."""

    def __init__(self, space=None, delay: float = 0.0):
        self.calls: List[str] = []
        self.delay = delay
        if space is not None:
            self.query_space = space
        self._lock = threading.Lock()

    def get_query_embedding(self, text: str) -> List[float]:
        time.sleep(self.delay)  # widen the window in which concurrent retrievers could both compute
        with self._lock:
            self.calls.append(text)
        return [float(len(text)), 1.0]

    def get_image_embedding(self, path) -> List[float]:
        return [0.0, 1.0]


class Stores:
    """The store calls the built-in retrievers and the evidence fill-in make (thread-safe)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.threads = set()

    def query(self, collection, embedding, k, filters=None):
        with self.lock:
            self.threads.add(threading.get_ident())
        time.sleep(0.02)
        hits = [NodeWithScore(node=n, score=0.9 - 0.1 * i) for i, n in enumerate(NODES)
                if n.metadata["modality"] == collection or collection == "image"]
        return hits[:k]

    def all_nodes(self, collection):
        return [n for n in NODES if n.metadata["modality"] == collection]

    def signature(self):
        return (len(NODES),)

    def get_assets_nodes(self, asset_ids):
        return {a: [n for n in NODES if n.metadata["asset_id"] == a] for a in asset_ids}


def test_memo_shares_within_a_space_and_never_across():
    memo = QueryVectorMemo()
    a, b = CountingEmbed(space=("minilm", "/m")), CountingEmbed(space=("minilm", "/m"))
    other = CountingEmbed(space=("clip", "/c"))
    plain1, plain2 = CountingEmbed(), CountingEmbed()
    assert memo.get(a, "q") == memo.get(b, "q") == memo.get(a, "q")
    assert len(a.calls) + len(b.calls) == 1
    memo.get(other, "q")
    memo.get(plain1, "q")
    memo.get(plain1, "q")
    memo.get(plain2, "q")
    assert (len(other.calls), len(plain1.calls), len(plain2.calls)) == (1, 1, 1)
    memo.get(a, "another text")
    assert memo.computed == 5
    assert query_space(a) == query_space(b) != query_space(plain1) != query_space(plain2)


def test_memo_computes_once_under_concurrency():
    memo = QueryVectorMemo()
    emb = CountingEmbed(space=("minilm", "/m"), delay=0.05)
    results = run_concurrently([lambda: memo.get(emb, "q") for _ in range(6)])
    assert results == [[1.0, 1.0]] * 6 and emb.calls == ["q"]


def test_run_concurrently_keeps_order_raises_and_does_not_nest():
    assert run_concurrently([lambda i=i: i * i for i in range(5)]) == [0, 1, 4, 9, 16]

    def boom():
        raise ValueError("x")

    try:
        run_concurrently([lambda: 1, boom])
    except ValueError:
        pass
    else:  # pragma: no cover
        raise AssertionError("the call's exception must surface")
    nested = run_concurrently([lambda: run_concurrently([lambda: 1, lambda: 2]) for _ in range(3)])
    assert nested == [[1, 2]] * 3


def test_fused_query_encodes_once_per_space_and_runs_retrievers_concurrently():
    cfg = RetrievalConfig(retrievers=["image", "caption", "ocr", "text", "bm25"], top_k=5)
    # packaged models: the text embedding and the image encoder's text side are the same MiniLM
    text, image = CountingEmbed(space=("minilm", "/m"), delay=0.02), CountingEmbed(space=("minilm", "/m"))
    stores = Stores()
    fr = FusionRetriever.from_defaults(stores, text, image, cfg)
    per = fr.run_all("red car")
    assert len(text.calls) + len(image.calls) == 1  # one encode for four vector retrievers
    assert set(per) == {"image", "caption", "ocr", "text", "bm25"}
    assert len(stores.threads) > 1  # the store searches overlapped

    # another image model (another space): one encode each
    text2, clip = CountingEmbed(space=("minilm", "/m")), CountingEmbed(space=("clip", "/c"))
    fr2 = FusionRetriever.from_defaults(Stores(), text2, clip, cfg)
    per2 = fr2.run_all("red car")
    assert (len(text2.calls), len(clip.calls)) == (1, 1)

    # same hits as running the retrievers one by one without sharing
    one_by_one = {n: fr2.run_one(n, "red car") for n in per2}
    assert {n: [(h.node.node_id, h.score) for h in hs] for n, hs in per2.items()} == \
        {n: [(h.node.node_id, h.score) for h in hs] for n, hs in one_by_one.items()}
    assert [h.asset_id for h in fr.retrieve_assets("red car")] == [h.asset_id for h in fr2.retrieve_assets("red car")]
