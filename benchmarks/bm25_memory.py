"""BM25 keyword index at scale: build seconds, RSS it adds, search p50 (plain and filtered).

    python benchmarks/bm25_memory.py --vectors 100000 --store /tmp/syn100k \
        --json benchmarks/results/issue14_bm25_100k_after.json

The store is the synthetic one of ``retrieval_latency.py`` (N/4 rows per collection; the caption,
ocr and text collections hold 8 words per row, so 3N/4 nodes are indexed), built once at
``--store`` and reused. The index is built the way a retriever builds it
(``BM25Cache.for_stores``) after the store is open, so the RSS delta is the index (and what the
allocator keeps from building it). Run it in the same sitting with an older checkout for a
before/after pair (the script only uses ``BM25Cache`` and ``compile_filters``).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path
from typing import List, Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        return [int(line.split()[1]) / 1024 for line in fh if line.startswith("VmRSS:")][0]


def p50_ms(times: List[float]) -> float:
    return round(1000 * sorted(times)[len(times) // 2], 2)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description="BM25 index build time, memory and search latency")
    ap.add_argument("--vectors", type=int, default=100_000)
    ap.add_argument("--store", default="/tmp/mmrag-bm25-store", help="synthetic store (built if missing)")
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    store = Path(args.store)
    if not store.exists():
        from retrieval_latency import build_store

        build_store(store, args.vectors)
    from llama_index.core.vector_stores.types import FilterOperator, MetadataFilter, MetadataFilters

    from mmrag_li.retrieval.bm25 import BM25Cache, compile_filters
    from mmrag_li.stores import ModalityStores

    stores = ModalityStores.lancedb(str(store))
    stores.count()
    gc.collect()
    before = rss_mb()
    t = time.perf_counter()
    index = BM25Cache.for_stores(stores, ("caption", "ocr", "text")).get()
    build = time.perf_counter() - t
    gc.collect()
    added = rss_mb() - before
    match = compile_filters(MetadataFilters(filters=[MetadataFilter(key="modality", value="ocr",
                                                                    operator=FilterOperator.EQ)]))
    plain, filtered = [], []
    for i in range(args.queries):
        q = f"w{7 * i} w{21 * i} report"
        t = time.perf_counter()
        index.search(q, 20)
        plain.append(time.perf_counter() - t)
        if i < 10:
            t = time.perf_counter()
            try:  # older versions pass the node, newer ones its metadata
                index.search(q, 20, match)
            except (AttributeError, TypeError):
                index.search(q, 20, lambda n: match(n.metadata))
            filtered.append(time.perf_counter() - t)
    out = {"vectors": args.vectors, "indexed_nodes": len(index), "build_s": round(build, 2),
           "rss_added_mb": round(added, 1), "search_p50_ms": p50_ms(plain), "filtered_search_p50_ms": p50_ms(filtered)}
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    stores.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
