"""Exact keyword retrieval (BM25, via ``bm25s``) over OCR, caption and document text.

Vector search blurs identifiers: "invoice 4711" must find the page that literally says 4711.
The index is rebuilt in memory from the stores when their contents change (cheap: ~1 s per
100k short chunks), so it never disagrees with what is stored.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import bm25s

# bm25s sets its own logger to DEBUG on import, which prints on every index build; use the default.
logging.getLogger("bm25s").setLevel(logging.NOTSET)
import numpy as np
from llama_index.core.schema import BaseNode, MetadataMode, NodeWithScore

# Keep 1-char tokens out; underscores split tokens (file names like invoice_4711.png).
TOKEN_PATTERN = r"(?u)[^\W_]{2,}"
_WORD = re.compile(TOKEN_PATTERN)
PHRASE_BONUS = 0.5  # score x (1 + bonus * share of the query's adjacent word pairs found in order)
HEADING_BONUS = 0.25  # extra share when the phrase sits in the first words (a title, "INVOICE 4711")
HEADING_WORDS = 12
_NUM_SEP = re.compile(r"(?<=\d)[,.'’](?=\d{3}\b)")  # 1,939.00 -> 1939.00


def normalise_text(text: str) -> str:
    return _NUM_SEP.sub("", text)


def _pairs(text: str) -> set:
    """Adjacent lower-cased word pairs: "INVOICE 4711" matches the query "invoice 4711" as a phrase."""
    words = [w.lower() for w in _WORD.findall(text)]
    return set(zip(words, words[1:]))


class BM25Index:
    def __init__(self, nodes: Iterable[BaseNode]):
        self.nodes: List[BaseNode] = [n for n in nodes if n.get_content(MetadataMode.NONE).strip()]
        self._bm25: Optional[bm25s.BM25] = None
        if self.nodes:
            corpus = [normalise_text(n.get_content(MetadataMode.NONE)) for n in self.nodes]
            tokens = bm25s.tokenize(corpus, token_pattern=TOKEN_PATTERN, stopwords="en", show_progress=False)
            self._bm25 = bm25s.BM25()
            self._bm25.index(tokens, show_progress=False)

    def __len__(self) -> int:
        return len(self.nodes)

    def search(self, query: str, k: int, predicate: Optional[Callable[[BaseNode], bool]] = None
               ) -> List[NodeWithScore]:
        if self._bm25 is None or not query.strip():
            return []
        q = bm25s.tokenize([normalise_text(query)], token_pattern=TOKEN_PATTERN, stopwords="en",
                           show_progress=False, allow_empty=True)
        if not len(q.vocab):
            return []
        mask = None
        if predicate is not None:
            mask = np.array([1.0 if predicate(n) else 0.0 for n in self.nodes], dtype=np.float32)
            if not mask.any():
                return []
        k = min(k, len(self.nodes))
        idx, scores = self._bm25.retrieve(q, k=k, show_progress=False, weight_mask=mask, n_threads=1)
        pairs = _pairs(normalise_text(query))
        out = []
        for i, s in zip(idx[0], scores[0]):
            if s > 0:
                node = self.nodes[int(i)]
                if pairs:
                    text = normalise_text(node.get_content(MetadataMode.NONE))
                    found = pairs & _pairs(text)
                    heading = pairs & _pairs(" ".join(_WORD.findall(text)[:HEADING_WORDS]))
                    s = s * (1 + (PHRASE_BONUS * len(found) + HEADING_BONUS * len(heading)) / len(pairs))
                out.append(NodeWithScore(node=node, score=float(s)))
        return sorted(out, key=lambda h: -(h.score or 0.0))


class BM25Cache:
    """Rebuilds the BM25 index only when the stores' change signature moves."""

    def __init__(self, load_nodes: Callable[[], Iterable[BaseNode]], signature: Callable[[], Tuple]):
        self._load = load_nodes
        self._signature = signature
        self._index: Optional[BM25Index] = None
        self._sig: Optional[Tuple] = None
        self._lock = threading.Lock()

    @classmethod
    def for_stores(cls, stores, collections: Iterable[str]) -> "BM25Cache":
        """An index over the text of ``collections``, rebuilt when ``stores.signature()`` changes."""
        collections = tuple(collections)
        return cls(lambda: [n for c in collections for n in stores.all_nodes(c)], stores.signature)

    def get(self) -> BM25Index:
        sig = self._signature()
        with self._lock:
            if self._index is None or sig != self._sig:
                self._index = BM25Index(self._load())
                self._sig = sig
            return self._index


def matches_filters(meta: Dict, filters) -> bool:
    """Evaluate LlamaIndex ``MetadataFilters`` against a node's metadata (for BM25 hits)."""
    if filters is None or not getattr(filters, "filters", None):
        return True
    results = []
    for f in filters.filters:
        if hasattr(f, "filters"):  # nested MetadataFilters
            results.append(matches_filters(meta, f))
            continue
        value = meta.get(f.key)
        op = getattr(f.operator, "value", f.operator)
        target = f.value
        try:
            if op == "==":
                ok = value == target
            elif op == "!=":
                ok = value != target
            elif op == "in":
                ok = value in (target or [])
            elif op == "nin":
                ok = value not in (target or [])
            elif op == ">":
                ok = value is not None and value > target
            elif op == ">=":
                ok = value is not None and value >= target
            elif op == "<":
                ok = value is not None and value < target
            elif op == "<=":
                ok = value is not None and value <= target
            elif op == "text_match":
                ok = value is not None and str(target) in str(value)
            else:
                ok = True
        except TypeError:
            ok = False
        results.append(ok)
    cond = getattr(getattr(filters, "condition", None), "value", "and")
    return any(results) if cond == "or" else all(results)
