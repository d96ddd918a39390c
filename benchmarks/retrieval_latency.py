"""Retrieval + fusion latency (no LLM, no query embedding) on the embedded LanceDB store at scale.

    python benchmarks/retrieval_latency.py --sizes 10000,100000,1000000 --queries 100 \
        --workdir /tmp/mmrag-latency --json benchmarks/results/retrieval_latency.json

N synthetic 384-d vectors in total, N/4 in each of the four collections (image, caption, ocr,
text), written straight into the store's LanceDB tables with the store's own Arrow schema, its
node JSON and its BTREE index on ``asset_id`` (so ``ModalityStores``/``FusionRetriever`` read
them like ingested nodes). Vectors are
drawn around 1,024 shared cluster centres (real embeddings cluster; uniform noise would make
every ANN index look bad); caption/ocr/text nodes get 8 words from a 5,000-word vocabulary for
BM25. Queries are centre + noise vectors returned by stub embedders; by default each stub first
embeds the query text with the real offline models (thrown away), so the latency includes real
query encoding (``--stub-encoder``: store + BM25 + fusion cost only, as in the first version).
Every row also has the reference the fused latency is compared with (issue 14): one query encode
plus one vector search on the largest collection, and their ratio. ``--store DIR --queries-file
F.jsonl`` measures the same on an ingested store (e.g. the dev set) with the facade's retriever.

Per size: latency of ``FusionRetriever.retrieve_assets`` (5 retrievers, RRF, evidence) p50/p95
flat (exact search), then with IVF_PQ and IVF_HNSW_SQ indexes (cosine) on every table, or
``auto``: the index the store itself builds past ``store.ann_index_min_rows`` (``stores/ann.py``),
with the index build time, ANN recall@10 against the flat result on the image table, disk per
vector (table data; index files) and process RSS. Every search goes through the store's read path,
so it uses the configured ``store.ann_nprobes`` / ``store.ann_refine_factor``.
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
from typing import Any, Dict, List, Optional, Tuple

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
    """Returns the next prepared query vector (both text and CLIP side). With ``real`` (an embedding),
    the query text is first embedded by it and the result thrown away, so the latency includes the
    real query-encoding cost while the vector still matches the synthetic clusters; ``query_space``
    is the real embedding's (retrieval then shares one encode between embeddings of one space)."""

    def __init__(self, vecs: np.ndarray, real: Any = None):
        self.vecs = vecs
        self.i = 0
        self.real = real

    @property
    def query_space(self) -> Any:
        return getattr(self.real, "query_space", None) if self.real is not None else None

    def get_query_embedding(self, q: str) -> List[float]:
        if self.real is not None:
            self.real.get_query_embedding(q)
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
    from mmrag_li.stores.lancedb import ensure_asset_index

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
        ensure_asset_index(tbl)  # as every table the store creates has (evidence lookups by asset id)
        print(f"  {c}: {per} rows", file=sys.stderr)
    return {"build_s": round(time.perf_counter() - t0, 1)}


def queries(n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).standard_normal((N_CENTRES, DIM)).astype(np.float32)
    q = centres[rng.integers(0, N_CENTRES, n)] + 0.6 * rng.standard_normal((n, DIM)).astype(np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def real_embeddings() -> Tuple[Any, Any]:
    """The offline default text embedding and image embedding (packaged models), warmed up."""
    from mmrag_li.config import EmbeddingConfig
    from mmrag_li.embeddings.image import build_image_embedding
    from mmrag_li.embeddings.text import build_text_embedding

    cfg = EmbeddingConfig(device="cpu", image_backend="packaged")
    text, image = build_text_embedding(cfg), build_image_embedding(cfg)
    text.get_query_embedding("warm up")
    image.get_query_embedding("warm up")
    return text, image


def measure(store_dir: Path, qv: np.ndarray, bm25: bool, warm: int = 5, real: Tuple[Any, Any] = (None, None)
            ) -> Dict[str, Any]:
    from mmrag_li.retrieval.fusion import FusionRetriever
    from mmrag_li.stores import ModalityStores

    stores = ModalityStores.lancedb(store_dir)
    emb, img_emb = StubEmbed(qv, real[0]), StubEmbed(qv, real[1])
    retrievers = ["image", "caption", "ocr", "text"] + (["bm25"] if bm25 else [])
    r = FusionRetriever.from_defaults(stores, emb, img_emb,
                                      RetrievalConfig(retrievers=retrievers, top_k=5, per_retriever_k=20))
    out: Dict[str, Any] = {"retrievers": retrievers, "query_encoding": "real" if real[0] is not None else "stub"}
    if bm25:
        t = time.perf_counter()
        r.bm25.get()
        out["bm25_build_s"] = round(time.perf_counter() - t, 2)
    words = [f"w{i}" for i in range(0, 5000, 7)]
    times, search, fusion, image_top, ref = [], [], [], [], []
    counts = stores.count()
    largest = max(counts, key=lambda c: counts[c])
    for i in range(warm + len(qv)):
        emb.i = img_emb.i = i
        q = f"{words[i % len(words)]} {words[(3 * i) % len(words)]}"
        t = time.perf_counter()
        per = r.run_all(q)  # == retrieve_assets(q, top_k=5), split in its two halves
        t1 = time.perf_counter()
        r.fuse_results(per, q, 5)
        t2 = time.perf_counter()
        # the reference: one query encode + one vector search on the largest collection
        stores.query(largest, emb.get_query_embedding(q), 20)
        t3 = time.perf_counter()
        if i >= warm:
            times.append(t2 - t)
            search.append(t1 - t)
            fusion.append(t2 - t1)
            ref.append(t3 - t2)
    # ANN recall probe: image-table top-10 ids for the same queries
    for v in qv:
        image_top.append([h.node.node_id for h in stores.query("image", v.tolist(), 10)])
    ts = sorted(times)
    out.update(p50_ms=round(1000 * ts[len(ts) // 2], 1), p95_ms=round(1000 * ts[min(len(ts) - 1, int(0.95 * len(ts)))], 1),
               mean_ms=round(1000 * sum(ts) / len(ts), 1),
               search_p50_ms=round(1000 * sorted(search)[len(search) // 2], 1),
               fusion_p50_ms=round(1000 * sorted(fusion)[len(fusion) // 2], 1), rss_mb=round(rss_mb(), 0),
               reference_p50_ms=round(1000 * sorted(ref)[len(ref) // 2], 2), reference_collection=largest)
    out["ratio_p50_vs_reference"] = round(out["p50_ms"] / max(out["reference_p50_ms"], 1e-6), 2)
    stores.close()
    return out, image_top


def measure_store(store_dir: str, queries_file: Optional[str], n_queries: int, warm: int = 5) -> Dict[str, Any]:
    """Fused retrieval (the facade's retriever, real models) on an ingested store vs one query encode
    plus one vector search on its largest collection, p50 over the text queries of ``queries_file``."""
    from mmrag_li.pipeline import MultiModalRAG

    texts = ["invoice total"] * n_queries
    if queries_file:
        rows = [json.loads(line) for line in Path(queries_file).read_text().splitlines() if line.strip()]
        texts = [r["query"] for r in rows if r.get("query") and not r.get("query_image")][:n_queries]
    rag = MultiModalRAG.from_config(None, store_dir=store_dir)
    r = rag.as_retriever()
    stores, text_embed = rag.stores, rag.text_embed
    counts = stores.count()
    largest = max(counts, key=lambda c: counts[c])
    fused, ref = [], []
    for i, q in enumerate(texts[:warm] + texts):
        t0 = time.perf_counter()
        r.retrieve_assets(q)
        t1 = time.perf_counter()
        stores.query(largest, text_embed.get_query_embedding(q), r.config.per_retriever_k)
        t2 = time.perf_counter()
        if i >= warm:
            fused.append(t1 - t0)
            ref.append(t2 - t1)
    p50 = sorted(fused)[len(fused) // 2]
    p50_ref = sorted(ref)[len(ref) // 2]
    out = {"store": store_dir, "vectors": sum(counts.values()), "counts": counts, "queries": len(fused),
           "p50_ms": round(1000 * p50, 1), "p95_ms": round(1000 * sorted(fused)[int(0.95 * (len(fused) - 1))], 1),
           "reference_p50_ms": round(1000 * p50_ref, 2), "reference_collection": largest,
           "ratio_p50_vs_reference": round(p50 / max(p50_ref, 1e-9), 2), "rss_mb": round(rss_mb(), 0)}
    rag.close()
    return out


def create_indexes(store_dir: Path, kind: str) -> Dict[str, Any]:
    import lancedb

    conn = lancedb.connect(str(store_dir / "lancedb"))
    t0 = time.perf_counter()
    for c in COLLECTIONS:
        tbl = conn.open_table(c)
        if kind == "auto":  # the store's own index (what optimize() builds past store.ann_index_min_rows)
            from mmrag_li.stores.ann import AnnOptions, ensure_vector_index

            ensure_vector_index(tbl, AnnOptions(min_rows=1))
            continue
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
            if idx.index_type != "BTree":  # the asset_id index stays: every store has it
                tbl.drop_index(idx.name)


def run_size(n: int, workdir: Path, n_queries: int, kinds: List[str], bm25_max: int,
             real: Tuple[Any, Any] = (None, None)) -> Dict[str, Any]:
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
    flat, flat_top = measure(store_dir, qv, bm25, real=real)
    flat["rss_delta_mb"] = round(flat["rss_mb"] - rss0, 0)
    res["flat"] = flat
    for kind in kinds:
        print(f"  index {kind} ...", file=sys.stderr)
        info = create_indexes(store_dir, kind)
        info["index_bytes_per_vector"] = round(index_bytes(store_dir) / n, 1)
        m, top = measure(store_dir, qv, bm25, real=real)
        info.update(m)
        info["ann_recall@10_image"] = round(float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(flat_top, top)])), 3)
        res[kind] = info
        drop_indexes(store_dir)
    return res


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description="retrieval + fusion latency at scale (LanceDB)")
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--index", default="IVF_PQ,IVF_HNSW_SQ",
                    help="comma list; '' for flat only; auto = the store's automatic index (store.ann_*), "
                         "searched with the configured nprobes/refine_factor")
    ap.add_argument("--bm25-max", type=int, default=1_000_000, help="skip BM25 above this many vectors")
    ap.add_argument("--workdir", default="/tmp/mmrag-latency")
    ap.add_argument("--keep", action="store_true", help="keep the synthetic stores")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--stub-encoder", action="store_true",
                    help="no real query encoding (the numbers of the first version of this benchmark)")
    ap.add_argument("--store", help="also measure on this ingested store (e.g. the dev set's) with real queries")
    ap.add_argument("--queries-file", help="queries.jsonl for --store (the 'query' texts are used)")
    args = ap.parse_args(argv)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    kinds = [k for k in args.index.split(",") if k]
    results = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
               "sizes": []}
    real = (None, None) if args.stub_encoder else real_embeddings()
    if args.store:
        results["store"] = measure_store(args.store, args.queries_file, args.queries)
        print(json.dumps(results["store"]), file=sys.stderr)
    for n in [int(s) for s in args.sizes.split(",") if s]:
        r = run_size(n, workdir, args.queries, kinds, args.bm25_max, real=real)
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
