"""Retrieval + fusion latency (no LLM, no query embedding) on the embedded LanceDB store at scale.

    python benchmarks/retrieval_latency.py --sizes 10000,100000,1000000 --queries 100 \
        --workdir /tmp/mmrag-latency --json benchmarks/results/retrieval_latency.json

N synthetic 384-d vectors in total, N/4 in each of the four collections (image, caption, ocr,
text), written straight into the store's LanceDB tables with the store's own Arrow schema and
node JSON (so ``ModalityStores``/``FusionRetriever`` read them like ingested nodes). Vectors are
drawn around 1,024 shared cluster centres (real embeddings cluster; uniform noise would make
every ANN index look bad); caption/ocr/text nodes get 8 words from a 5,000-word vocabulary for
BM25. Queries are centre + noise vectors returned by stub embedders, so the numbers are the
store + BM25 + fusion cost only (query embedding with MiniLM adds ~10 ms, measured separately).

Per size: latency of ``FusionRetriever.retrieve_assets`` (5 retrievers, RRF, evidence) p50/p95
flat (exact search), then with IVF_PQ and IVF_HNSW_SQ indexes (cosine) on every table, with the
index build time, ANN recall@10 against the flat result on the image table, disk per vector
(table data; index files) and process RSS.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mmrag_li.config import RetrievalConfig  # noqa: E402
from mmrag_li.schema import COLLECTIONS, make_image_node, make_text_node  # noqa: E402

DIM = 384
N_CENTRES = 1024


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


class StubEmbed:
    """Returns the next prepared query vector (both text and CLIP side)."""

    def __init__(self, vecs: np.ndarray):
        self.vecs = vecs
        self.i = 0

    def get_query_embedding(self, _q: str) -> List[float]:
        return self.vecs[self.i % len(self.vecs)].tolist()

    get_text_embedding = get_query_embedding

    def get_image_embedding(self, _p: Any) -> List[float]:
        return self.get_query_embedding("")


def _templates() -> Dict[str, Dict[str, Any]]:
    """One real node per collection through the store's own ``_prepare`` -> field template."""
    from mmrag_li.stores import prepare_node as _prepare

    out = {}
    for c in COLLECTIONS:
        if c == "image":
            n = make_image_node(asset_id="A", source="/synthetic/A.png", modality="image", image_path="/synthetic/A.png")
        else:
            n = make_text_node("T", asset_id="A", source="/synthetic/A.txt", modality={"caption": "caption", "ocr": "ocr",
                                                                                    "text": "text"}[c])
        n.embedding = [1.0] * DIM
        _clean, _vec, fields = _prepare(n, c)
        out[c] = fields
    return out


def build_store(store_dir: Path, n_total: int, seed: int = 0, batch: int = 50_000) -> Dict[str, float]:
    import lancedb
    import pyarrow as pa

    from mmrag_li.stores import lance_schema as _lance_schema

    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((N_CENTRES, DIM)).astype(np.float32)
    vocab = [f"w{i}" for i in range(5000)]
    schema = _lance_schema(DIM)
    meta_fields = [f.name for f in schema.field("metadata").type]
    templates = _templates()
    uri = store_dir / "lancedb"
    uri.mkdir(parents=True, exist_ok=True)
    conn = lancedb.connect(str(uri))
    t0 = time.perf_counter()
    per = n_total // len(COLLECTIONS)
    for c in COLLECTIONS:
        tbl = None
        tmpl = templates[c]
        node_json = json.loads(tmpl["_node_content"])
        for start in range(0, per, batch):
            m = min(batch, per - start)
            vec = centres[rng.integers(0, N_CENTRES, m)] + 0.6 * rng.standard_normal((m, DIM)).astype(np.float32)
            vec /= np.linalg.norm(vec, axis=1, keepdims=True)
            ids, texts, metas = [], [], []
            words = rng.integers(0, len(vocab), (m, 8))
            for j in range(m):
                k = start + j
                aid = f"{c[:2]}{k:09d}"
                nid = f"{aid}:{c}"
                text = "" if c == "image" else " ".join(vocab[w] for w in words[j])
                nj = dict(node_json)
                nj["id_"] = nid
                nj["text"] = text
                md = dict(nj.get("metadata") or {})
                md.update(asset_id=aid, source=f"/synthetic/{aid}")
                nj["metadata"] = md
                fields = dict(tmpl)
                fields.update(asset_id=aid, source=f"/synthetic/{aid}", _node_content=json.dumps(nj),
                              doc_id=aid, document_id=aid, ref_doc_id=aid)
                ids.append(nid)
                texts.append(text)
                metas.append({f: fields.get(f) for f in meta_fields})
            table = pa.Table.from_pydict({
                "id": ids, "doc_id": [i.split(":")[0] for i in ids],
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(vec.ravel(), pa.float32()), DIM),
                "text": texts, "metadata": metas}, schema=schema)
            if tbl is None:
                tbl = conn.create_table(c, data=table, schema=schema, mode="overwrite")
            else:
                tbl.add(table)
        print(f"  {c}: {per} rows", file=sys.stderr)
    return {"build_s": round(time.perf_counter() - t0, 1)}


def queries(n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).standard_normal((N_CENTRES, DIM)).astype(np.float32)
    q = centres[rng.integers(0, N_CENTRES, n)] + 0.6 * rng.standard_normal((n, DIM)).astype(np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def measure(store_dir: Path, qv: np.ndarray, bm25: bool, warm: int = 5) -> Dict[str, Any]:
    from mmrag_li.retrieval.fusion import FusionRetriever
    from mmrag_li.stores import ModalityStores

    stores = ModalityStores.lancedb(store_dir)
    emb = StubEmbed(qv)
    retrievers = ["image", "caption", "ocr", "text"] + (["bm25"] if bm25 else [])
    r = FusionRetriever(stores, emb, emb, RetrievalConfig(retrievers=retrievers, top_k=5, per_retriever_k=20))
    out: Dict[str, Any] = {"retrievers": retrievers}
    if bm25:
        t = time.perf_counter()
        r.bm25.get()
        out["bm25_build_s"] = round(time.perf_counter() - t, 2)
    words = [f"w{i}" for i in range(0, 5000, 7)]
    times, search, fusion, image_top = [], [], [], []
    for i in range(warm + len(qv)):
        emb.i = i
        q = f"{words[i % len(words)]} {words[(3 * i) % len(words)]}"
        t = time.perf_counter()
        per = r.run_all(q)  # == retrieve_assets(q, top_k=5), split in its two halves
        t1 = time.perf_counter()
        r.fuse_results(per, q, 5)
        t2 = time.perf_counter()
        if i >= warm:
            times.append(t2 - t)
            search.append(t1 - t)
            fusion.append(t2 - t1)
    # ANN recall probe: image-table top-10 ids for the same queries
    for v in qv:
        image_top.append([h.node.node_id for h in stores.query("image", v.tolist(), 10)])
    ts = sorted(times)
    out.update(p50_ms=round(1000 * ts[len(ts) // 2], 1), p95_ms=round(1000 * ts[min(len(ts) - 1, int(0.95 * len(ts)))], 1),
               mean_ms=round(1000 * sum(ts) / len(ts), 1),
               search_p50_ms=round(1000 * sorted(search)[len(search) // 2], 1),
               fusion_p50_ms=round(1000 * sorted(fusion)[len(fusion) // 2], 1), rss_mb=round(rss_mb(), 0))
    stores.close()
    return out, image_top


def create_indexes(store_dir: Path, kind: str) -> Dict[str, Any]:
    import lancedb

    conn = lancedb.connect(str(store_dir / "lancedb"))
    t0 = time.perf_counter()
    for c in COLLECTIONS:
        tbl = conn.open_table(c)
        n = tbl.count_rows()
        parts = max(1, int(math.sqrt(n)))
        if kind == "IVF_PQ":
            tbl.create_index(metric="cosine", index_type="IVF_PQ", num_partitions=parts, num_sub_vectors=48,
                             replace=True)
        elif kind == "IVF_HNSW_SQ":
            tbl.create_index(metric="cosine", index_type="IVF_HNSW_SQ", num_partitions=max(1, parts // 8),
                             replace=True)
        else:
            raise ValueError(kind)
    return {"index_build_s": round(time.perf_counter() - t0, 1)}


def index_bytes(store_dir: Path) -> int:
    return sum(du(p) for p in (store_dir / "lancedb").glob("*.lance/_indices"))


def drop_indexes(store_dir: Path) -> None:
    import lancedb

    conn = lancedb.connect(str(store_dir / "lancedb"))
    for c in COLLECTIONS:
        tbl = conn.open_table(c)
        for idx in tbl.list_indices():
            tbl.drop_index(idx.name)


def run_size(n: int, workdir: Path, n_queries: int, kinds: List[str], bm25_max: int) -> Dict[str, Any]:
    store_dir = workdir / f"n{n}"
    res: Dict[str, Any] = {"vectors": n, "per_collection": n // 4, "dim": DIM}
    if store_dir.exists():
        shutil.rmtree(store_dir)
    print(f"building {n} vectors ...", file=sys.stderr)
    res.update(build_store(store_dir, n))
    data_bytes = du(store_dir / "lancedb")
    res["disk_bytes_per_vector"] = round(data_bytes / n, 1)
    res["raw_vector_bytes"] = DIM * 4
    qv = queries(n_queries)
    bm25 = n <= bm25_max
    gc.collect()
    rss0 = rss_mb()
    flat, flat_top = measure(store_dir, qv, bm25)
    flat["rss_delta_mb"] = round(flat["rss_mb"] - rss0, 0)
    res["flat"] = flat
    for kind in kinds:
        print(f"  index {kind} ...", file=sys.stderr)
        info = create_indexes(store_dir, kind)
        info["index_bytes_per_vector"] = round(index_bytes(store_dir) / n, 1)
        m, top = measure(store_dir, qv, bm25)
        info.update(m)
        info["ann_recall@10_image"] = round(float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(flat_top, top)])), 3)
        res[kind] = info
        drop_indexes(store_dir)
    return res


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description="retrieval + fusion latency at scale (LanceDB)")
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--index", default="IVF_PQ,IVF_HNSW_SQ", help="comma list; '' for flat only")
    ap.add_argument("--bm25-max", type=int, default=1_000_000, help="skip BM25 above this many vectors")
    ap.add_argument("--workdir", default="/tmp/mmrag-latency")
    ap.add_argument("--keep", action="store_true", help="keep the synthetic stores")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    kinds = [k for k in args.index.split(",") if k]
    results = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
               "sizes": []}
    for n in [int(s) for s in args.sizes.split(",") if s]:
        r = run_size(n, workdir, args.queries, kinds, args.bm25_max)
        results["sizes"].append(r)
        print(json.dumps(r), file=sys.stderr)
        if not args.keep:
            shutil.rmtree(workdir / f"n{n}", ignore_errors=True)
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
