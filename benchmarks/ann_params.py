"""ANN search parameters vs recall: one N-row table of clustered 384-d vectors (as in
retrieval_latency.py), the store's automatic index (``stores/ann.py``), then recall@10 against exact
search and p50 latency of 50 queries through ``lance`` (the store's read path) for several
``minimum_nprobes`` / ``refine_factor`` / ``ef`` settings. Chooses the ``store.ann_*`` defaults.

    python benchmarks/ann_params.py --rows 250000 --workdir /tmp/mmrag-ann > results/issue14_ann_params_250k.jsonl
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mmrag_li.stores.ann import AnnOptions, ensure_vector_index  # noqa: E402

DIM, N_CENTRES = 384, 1024
GRID = [{}, {"minimum_nprobes": 20}, {"minimum_nprobes": 20, "refine_factor": 2},
        {"minimum_nprobes": 20, "refine_factor": 5}, {"minimum_nprobes": 20, "ef": 100},
        {"minimum_nprobes": 30, "refine_factor": 2}, {"minimum_nprobes": 40, "refine_factor": 2},
        {"minimum_nprobes": 40, "refine_factor": 5}]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=250_000)
    ap.add_argument("--index", default="IVF_HNSW_SQ", choices=["IVF_HNSW_SQ", "IVF_PQ"])
    ap.add_argument("--workdir", default="/tmp/mmrag-ann")
    args = ap.parse_args()
    import lance
    import lancedb
    import pyarrow as pa

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((N_CENTRES, DIM)).astype(np.float32)
    shutil.rmtree(args.workdir, ignore_errors=True)
    db, tbl = lancedb.connect(args.workdir), None
    for s in range(0, args.rows, 50_000):
        m = min(50_000, args.rows - s)
        v = centres[rng.integers(0, N_CENTRES, m)] + 0.6 * rng.standard_normal((m, DIM)).astype(np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        t = pa.table({"id": [str(i) for i in range(s, s + m)],
                      "vector": pa.FixedSizeListArray.from_arrays(pa.array(v.ravel()), DIM)})
        if tbl is None:
            tbl = db.create_table("t", t)
        else:
            tbl.add(t)
    tbl.optimize()
    took = ensure_vector_index(tbl, AnnOptions(min_rows=1, index_type=args.index))
    print(json.dumps({"rows": args.rows, "index": args.index, "build_s": round(took or 0, 1)}), flush=True)
    ds = lance.dataset(f"{args.workdir}/t.lance")
    qr = np.random.default_rng(1)
    queries = centres[qr.integers(0, N_CENTRES, 50)] + 0.6 * qr.standard_normal((50, DIM)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)

    def run(**kw):
        out, ts = [], []
        for q in queries:
            t = time.perf_counter()
            r = ds.to_table(columns=["id", "_distance"],
                            nearest={"column": "vector", "q": q, "k": 10, "metric": "cosine", **kw})
            ts.append(time.perf_counter() - t)
            out.append(r.column("id").to_pylist())
        return out, round(1000 * float(np.median(ts)), 1)

    exact, t_exact = run(use_index=False)
    print(json.dumps({"params": "exact", "p50_ms": t_exact}), flush=True)
    for kw in GRID:
        got, t = run(**kw)
        rec = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact, got)]))
        print(json.dumps({"params": kw, "recall@10": round(rec, 3), "p50_ms": t}), flush=True)
    shutil.rmtree(args.workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
