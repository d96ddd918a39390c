"""The automatic ANN vector index (issue 14, ``store.ann_index_min_rows``): a collection that reaches
the threshold gets an IVF_HNSW_SQ index on the next optimise, searches go through it with the
configured ``nprobes``/``refine_factor``, and recall@10 against exact search stays >= 0.95.
Real on-disk LanceDB tables, 384-d vectors around shared centres (as real embeddings cluster)."""

from __future__ import annotations

import numpy as np

from mmrag_li.config import Settings
from mmrag_li.schema import make_text_node
from mmrag_li.stores import ModalityStores
from mmrag_li.stores.ann import has_vector_index

DIM = 384


def vectors(n: int, seed: int, centres: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = centres[rng.integers(0, len(centres), n)] + 0.6 * rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def nodes(vecs: np.ndarray, start: int):
    out = []
    for i, v in enumerate(vecs, start):
        n = make_text_node(f"note {i}", asset_id=f"a{i}", source=f"/data/a{i}.md", modality="text", id_parts=[i])
        n.embedding = v.tolist()
        out.append(n)
    return out


def test_index_is_built_past_the_threshold_and_keeps_recall(tmp_path):
    centres = np.random.default_rng(0).standard_normal((64, DIM)).astype(np.float32)
    data = vectors(3000, 1, centres)
    s = ModalityStores.from_config(Settings(store_dir=str(tmp_path / "store"), store={"ann_index_min_rows": 2000}))
    s.upsert("text", nodes(data[:1500], 0))
    s.upsert("ocr", nodes(data[:50], 0))
    s.optimize()
    text = s._s("text")
    assert not has_vector_index(text.dataset().describe_indices())  # 1,500 rows: exact search
    s.upsert("text", nodes(data[1500:], 1500))
    s.optimize()
    assert has_vector_index(text.dataset().describe_indices())  # 3,000 >= 2,000: indexed
    assert not has_vector_index(s._s("ocr").dataset().describe_indices())  # a small collection is not

    queries = vectors(50, 2, centres)
    ids = np.array([n.node_id for n in nodes(data, 0)])
    recall = []
    for q in queries:
        exact = set(ids[np.argsort(-(data @ q))[:10]])
        got = [h.node.node_id for h in s.query("text", q.tolist(), 10)]
        assert len(got) == 10
        recall.append(len(exact & set(got)) / 10)
    assert np.mean(recall) >= 0.95, np.mean(recall)

    # the read path really searches the index, with the configured parameters
    plan = text.dataset().scanner(columns=["id"], nearest={"column": "vector", "q": queries[0], "k": 10,
                                                           "metric": "cosine", **text.ann.nearest_params()}
                                  ).explain_plan()
    assert "ANN" in plan, plan
    s.close()
