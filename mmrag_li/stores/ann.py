"""The automatic ANN vector index of a LanceDB collection (``store.ann_index_*``).

Exact (flat) search reads every vector: fine up to ~100k rows, ~2 s per query at 1M on two cores.
Past ``store.ann_index_min_rows`` rows a collection gets an IVF_HNSW_SQ (or IVF_PQ) index on its
next optimise (the end of every ingest); LanceDB's ``optimize()`` then folds later rows into it,
and rows not yet in it are still searched exactly, so nothing goes missing. Searches pass
``nprobes``/``refine_factor``/``ef`` from the same config (:meth:`AnnOptions.nearest_params`);
the defaults keep recall@10 against exact search >= 0.95 (``tests/integration/test_ann_index.py``,
``benchmarks/retrieval_latency.py --index auto``).

This module imports ``lancedb`` only to build an index (the write path has loaded it already).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Dict, Optional

__all__ = ["AnnOptions", "ensure_vector_index", "has_vector_index"]

_log = logging.getLogger(__name__)
VECTOR_COLUMN = "vector"
INDEX_TYPES = ("IVF_HNSW_SQ", "IVF_PQ")


@dataclass(frozen=True)
class AnnOptions:
    """When to build the vector index, which one, and how searches use it.

    Args:
        min_rows: rows a collection needs before it gets an index (0 = never).
        index_type: ``IVF_HNSW_SQ`` or ``IVF_PQ``.
        nprobes: IVF partitions searched per query, at least.
        refine_factor: re-rank ``k * refine_factor`` candidates with the full vectors (0 = off).
        ef: HNSW candidate list size (0 = Lance's default).
    """

    min_rows: int = 100_000
    index_type: str = "IVF_HNSW_SQ"
    nprobes: int = 20
    refine_factor: int = 2
    ef: int = 0

    @classmethod
    def from_store_config(cls, store: Any) -> "AnnOptions":
        """The options of a ``StoreConfig`` (``store.ann_index_min_rows`` ... ``store.ann_ef``).

        Args:
            store: ``settings.store`` (anything with those attributes; missing ones keep the defaults).
        """
        d = cls()
        return cls(min_rows=int(getattr(store, "ann_index_min_rows", d.min_rows)),
                   index_type=str(getattr(store, "ann_index_type", d.index_type)),
                   nprobes=int(getattr(store, "ann_nprobes", d.nprobes)),
                   refine_factor=int(getattr(store, "ann_refine_factor", d.refine_factor)),
                   ef=int(getattr(store, "ann_ef", d.ef)))

    def nearest_params(self) -> Dict[str, int]:
        """Extra keys of a ``lance`` ``nearest`` query (ignored by exact search, so always safe)."""
        out = {"minimum_nprobes": self.nprobes}
        if self.refine_factor:
            out["refine_factor"] = self.refine_factor
        if self.ef:
            out["ef"] = self.ef
        return out

    def partitions(self, rows: int) -> int:
        """IVF partitions for ``rows`` vectors: sqrt(rows) for PQ; HNSW partitions hold a graph and
        can be 8x larger (the sizes measured in benchmarks/README.md section 3).

        Args:
            rows: the table's row count.
        """
        root = math.sqrt(max(rows, 1))
        return max(1, int(root if self.index_type == "IVF_PQ" else root / 8))


def has_vector_index(indices: Any) -> bool:
    """Whether a table's index list (lancedb ``list_indices()`` or lance ``describe_indices()``) holds
    an index on the vector column.

    Args:
        indices: the list; entries have ``columns`` (lancedb) or ``fields``/``field_names`` (lance).
    """
    for idx in indices or []:
        cols = (getattr(idx, "columns", None) or getattr(idx, "field_names", None)
                or getattr(idx, "fields", None) or [])
        if VECTOR_COLUMN in [str(c) for c in cols]:
            return True
    return False


def ensure_vector_index(tbl: Any, opts: AnnOptions, rows: Optional[int] = None) -> Optional[float]:
    """Build the vector index of a LanceDB table that has ``opts.min_rows`` rows or more and none yet.
    Seconds spent, or None when nothing was built. Never raises: a failed build leaves exact search.

    Args:
        tbl: a native ``lancedb`` table.
        opts: the ANN options.
        rows: the table's row count if known (else counted here).
    """
    if opts.min_rows <= 0 or opts.index_type not in INDEX_TYPES:
        return None
    try:
        n = int(tbl.count_rows()) if rows is None else rows
        if n < opts.min_rows or has_vector_index(tbl.list_indices()):
            return None
        t0 = time.perf_counter()
        from lancedb.index import HnswSq, IvfPq  # the write path: lancedb is loaded already

        if opts.index_type == "IVF_PQ":
            dim = int(tbl.schema.field(VECTOR_COLUMN).type.list_size)
            config: Any = IvfPq(distance_type="cosine", num_partitions=opts.partitions(n),
                                num_sub_vectors=max(1, dim // 8))  # 8 dims per one-byte code
        else:
            config = HnswSq(distance_type="cosine", num_partitions=opts.partitions(n))
        tbl.create_index(VECTOR_COLUMN, config=config, replace=False)
        took = time.perf_counter() - t0
        _log.info("built %s vector index on %s rows in %.1f s", opts.index_type, n, took)
        return took
    except Exception as exc:  # an index is an optimisation; exact search still answers
        _log.warning("could not build the vector index (%s rows): %s", rows, exc)
        return None
