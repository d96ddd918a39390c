"""Exact keyword retrieval (BM25, via ``bm25s``) over OCR, caption and document text.

Vector search blurs identifiers: "invoice 4711" must find the page that literally says 4711.
Tokens are lower-cased with plurals folded (`fold_plural`: "nodes" finds "Node"), and a chunk
whose section heading (metadata ``section``: a PDF heading, a Markdown header path) holds query
terms scores higher (:data:`SECTION_BONUS`): "the default fontsize for nodes" belongs to the
"Principal Node Attributes" table, not to the edge or graph tables that list fontsize too.
The index is rebuilt in memory from the stores when their contents change (~4 s per 75k short
chunks, read as rows without building LlamaIndex objects), so it never disagrees with what is
stored; it keeps its nodes packed (:mod:`mmrag_li.retrieval.packed_nodes`: ~200 MB of RSS for
75k chunks where the node objects took ~830 MB) and rebuilds only the hits. It is built per tenant scope
(the collections a caller may see, :class:`BM25Cache`), so scores never depend on hidden documents.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from typing import Any, Callable, Dict, FrozenSet, Iterable, List, Optional, Tuple, Union

import bm25s

# bm25s sets its own logger to DEBUG on import, which prints on every index build; use the default.
logging.getLogger("bm25s").setLevel(logging.NOTSET)
import numpy as np
from llama_index.core.schema import BaseNode, MetadataMode, NodeWithScore

from mmrag_li.errors import MMRAGError
from mmrag_li.guard.scope import CollectionGuard
from mmrag_li.retrieval.packed_nodes import PackedNodes
from mmrag_li.stores.nodes import NodeRecord, record_of

# Keep 1-char tokens out; underscores split tokens (file names like invoice_4711.png).
TOKEN_PATTERN = r"(?u)[^\W_]{2,}"
_WORD = re.compile(TOKEN_PATTERN)
PHRASE_BONUS = 0.5  # score x (1 + bonus * share of the query's adjacent word pairs found in order)
HEADING_BONUS = 0.25  # extra share when the phrase sits in the first words (a title, "INVOICE 4711")
HEADING_WORDS = 12
SECTION_BONUS = 1.0  # score x (1 + bonus * share of the query's terms found in the chunk's section heading)
_STOPWORDS = frozenset(bm25s.stopwords.STOPWORDS_EN)
_NUM_SEP = re.compile(r"(?<=\d)[,.'’](?=\d{3}\b)")  # 1,939.00 -> 1939.00


def normalise_text(text: str) -> str:
    """Drop thousands separators so "1,939.00" and "1939.00" are one token.

    Args:
        text: the text to normalise.
    """
    return _NUM_SEP.sub("", text)


def fold_plural(token: str) -> str:
    """A lower-cased token with a plural ending folded ("nodes" -> "node", "entries" -> "entry";
    "class", "bus", "4s" stay). Applied to documents and queries alike, so over-folding only merges.

    Args:
        token: one word.
    """
    t = token.lower()
    if len(t) > 4 and t.endswith("ies"):
        return t[:-3] + "y"
    if len(t) > 3 and t.endswith("s") and not t.endswith("ss") and not t[-2].isdigit():
        return t[:-1]
    return t


def _fold_all(tokens: List[str]) -> List[str]:
    return [fold_plural(t) for t in tokens]


def _terms(text: str) -> set:
    """The folded, non-stop-word terms of ``text`` (for the section bonus)."""
    return {fold_plural(w) for w in _WORD.findall(text or "") if w.lower() not in _STOPWORDS}


def _pairs(text: str) -> set:
    """Adjacent lower-cased word pairs: "INVOICE 4711" matches the query "invoice 4711" as a phrase."""
    words = [fold_plural(w) for w in _WORD.findall(text)]
    return set(zip(words, words[1:]))


class BM25Index:
    """An in-memory BM25 index over the text of ``nodes`` (empty-text nodes are left out), with a
    phrase bonus for query word pairs found in order, more so in the first words (a heading), and a
    bonus for query terms in the node's ``section`` metadata (module docstring). The nodes are kept
    packed (:class:`~mmrag_li.retrieval.packed_nodes.PackedNodes`) and rebuilt only as hits.

    Args:
        nodes: the nodes to index: LlamaIndex nodes or :class:`NodeRecord` s (a store's rows).
    """

    def __init__(self, nodes: Iterable[Union[BaseNode, NodeRecord]]):
        self.nodes = PackedNodes()
        corpus: List[str] = []
        self._sections: Dict[int, set] = {}  # position -> section terms, only where there are any
        for item in nodes:
            record = item if isinstance(item, NodeRecord) else record_of(item)
            if not record.text.strip():
                continue
            section = _terms(str(record.metadata.get("section") or ""))
            if section:
                self._sections[len(corpus)] = section
            corpus.append(normalise_text(record.text))
            self.nodes.append(record)
        self._bm25: Optional[bm25s.BM25] = None
        if corpus:
            tokens = bm25s.tokenize(corpus, token_pattern=TOKEN_PATTERN, stopwords="en", stemmer=_fold_all,
                                    show_progress=False)
            del corpus
            self._bm25 = bm25s.BM25()
            self._bm25.index(tokens, show_progress=False)

    def __len__(self) -> int:
        return len(self.nodes)

    def search(self, query: str, k: int, predicate: Optional[Callable[[Dict[str, Any]], bool]] = None
               ) -> List[NodeWithScore]:
        """Top-``k`` nodes for ``query`` (BM25 score with the phrase bonus), best first; only
        positive scores.

        Args:
            query: the query text.
            k: result size.
            predicate: keeps only nodes whose metadata dict it accepts (filters, see
                :func:`compile_filters`); None keeps all.
        """
        if self._bm25 is None or not query.strip():
            return []
        query = normalise_text(query)
        tokens = bm25s.tokenize([query], token_pattern=TOKEN_PATTERN, stopwords="en",
                                stemmer=_fold_all, show_progress=False, return_ids=False)[0]
        ids = self._bm25.get_tokens_ids(tokens)
        if not ids:
            return []
        mask = None
        if predicate is not None:
            mask = np.array([1.0 if predicate(self.nodes.metadata(i)) else 0.0 for i in range(len(self.nodes))],
                            dtype=np.float32)
            if not mask.any():
                return []
        scores = self._bm25.get_scores_from_ids(ids, weight_mask=mask)
        # Top of the matching nodes only: np.argpartition over every node's score (mostly zeros)
        # took ~170 ms at 750k nodes; the matches are a few thousand. Ties go by position.
        matches = np.flatnonzero(scores > 0)
        pool = 2 * k  # the bonuses below may lift a node from just outside k
        top = matches[np.lexsort((matches, -scores[matches]))[:pool]]
        pairs = _pairs(query)
        terms = _terms(query)
        out = []
        for i, s in zip(top, scores[top]):
            node = self.nodes.node(int(i))
            if pairs:
                text = normalise_text(node.get_content(MetadataMode.NONE))
                found = pairs & _pairs(text)
                heading = pairs & _pairs(" ".join(_WORD.findall(text)[:HEADING_WORDS]))
                s = s * (1 + (PHRASE_BONUS * len(found) + HEADING_BONUS * len(heading)) / len(pairs))
            section = self._sections.get(int(i))
            if terms and section:
                s = s * (1 + SECTION_BONUS * len(terms & section) / len(terms))
            out.append(NodeWithScore(node=node, score=float(s)))
        # ties (two documents with the same words) go by node id, not by the order they were stored in
        return sorted(out, key=lambda h: (-(h.score or 0.0), h.node.node_id))[:k]


class BM25Cache:
    """BM25 indexes of the stores' text, one per tenant scope, rebuilt when the stores' change
    signature moves.

    Each scope (a set of allowed collections, or None for everything) gets an index built over the
    nodes of that scope only, so document frequencies, average length and therefore every score a
    tenant sees depend on that tenant's documents alone: words that exist only in another
    collection cannot move a visible hit's score (no side channel through BM25 statistics).

    Args:
        load_nodes: returns the nodes (or :class:`NodeRecord` s) to index, all scopes (each scope
            keeps its own collections); an iterator is consumed as it is read.
        signature: returns a value that changes whenever those nodes may have changed.
        max_scopes: how many scopes' indexes are kept (least recently used ones are dropped).
    """

    def __init__(self, load_nodes: Callable[[], Iterable[BaseNode]], signature: Callable[[], Tuple],
                 max_scopes: int = 8):
        self._load = load_nodes
        self._signature = signature
        self._max = max(1, int(max_scopes))
        self._indexes: "OrderedDict[Optional[FrozenSet[str]], Tuple[Tuple, BM25Index]]" = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def for_stores(cls, stores, collections: Iterable[str]) -> "BM25Cache":
        """Indexes over the text of ``collections``, rebuilt when ``stores.signature()`` changes.

        Args:
            stores: a ``ModalityStores`` or a ``GuardedStores`` (``all_nodes(collection)`` and
                ``signature()``); a guarded view indexes only what its guard allows.
            collections: the collections whose nodes are indexed.
        """
        collections = tuple(collections)
        # rows as NodeRecords where the store can (no LlamaIndex objects), streamed: never all at once
        read = getattr(stores, "all_records", None) or stores.all_nodes
        return cls(lambda: (n for c in collections for n in read(c)), stores.signature)

    def get(self, scope: Any = None) -> BM25Index:
        """The current index of ``scope``, rebuilt first if the signature moved since its build.

        Args:
            scope: the collections the index may hold: a ``CollectionGuard``, an iterable of names
                (``[]`` = an empty index), or None for every node ``load_nodes`` returns.
        """
        guard = CollectionGuard.from_config(scope)
        key = guard.scope
        sig = self._signature()
        with self._lock:
            entry = self._indexes.get(key)
            if entry is None or entry[0] != sig:
                nodes = () if guard.denies_all else (n for n in self._load() if guard.allows(n))
                entry = (sig, BM25Index(nodes))
                self._indexes[key] = entry
            self._indexes.move_to_end(key)
            while len(self._indexes) > self._max:
                self._indexes.popitem(last=False)
            return entry[1]


class UnsupportedFilterError(MMRAGError, ValueError):
    """A metadata filter uses an operator or condition the in-memory matcher does not know."""


def _is_empty(value: Any) -> bool:
    return value is None or value == "" or (isinstance(value, (list, tuple, set)) and not value)


def _as_list(value: Any) -> List[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple, set)) else [value]


def _text_match(value: Any, target: Any, fold: bool) -> bool:
    v, t = str(value), str(target)
    return (t.lower() in v.lower()) if fold else (t in v)


# LlamaIndex ``FilterOperator`` semantics (as in llama_index.core.vector_stores.utils), on flat
# metadata: a missing value matches only "!=" and "nin"; array operators treat a scalar as [scalar].
_OPS: Dict[str, Callable[[Any, Any], bool]] = {
    "==": lambda v, t: v == t,
    "!=": lambda v, t: v != t,
    ">": lambda v, t: v > t,
    ">=": lambda v, t: v >= t,
    "<": lambda v, t: v < t,
    "<=": lambda v, t: v <= t,
    "in": lambda v, t: v in _as_list(t),
    "nin": lambda v, t: v not in _as_list(t),
    "any": lambda v, t: any(x in _as_list(v) for x in _as_list(t)),
    "all": lambda v, t: all(x in _as_list(v) for x in _as_list(t)),
    "contains": lambda v, t: t in _as_list(v),
    "text_match": lambda v, t: _text_match(v, t, fold=False),
    "text_match_insensitive": lambda v, t: _text_match(v, t, fold=True),
}
_MISSING_MATCHES = ("!=", "nin")
_CONDITIONS = ("and", "or", "not")

Matcher = Callable[[Dict], bool]


def _compile_one(f: Any) -> Matcher:
    op = getattr(f.operator, "value", f.operator)
    key, target = f.key, f.value
    if op == "is_empty":
        return lambda meta: _is_empty(meta.get(key))
    fn = _OPS.get(op)
    if fn is None:
        raise UnsupportedFilterError(
            f"metadata filter on {key!r}: operator {op!r} is not supported for keyword (BM25) retrieval; "
            f"use one of {', '.join(list(_OPS) + ['is_empty'])}")

    def match(meta: Dict) -> bool:
        value = meta.get(key)
        if value is None:
            return op in _MISSING_MATCHES
        try:
            return bool(fn(value, target))
        except TypeError:  # e.g. a number compared with a string: no match
            return False

    return match


def compile_filters(filters: Any) -> Matcher:
    """Turn LlamaIndex ``MetadataFilters`` into a predicate over a node's metadata dict.

    Validates the whole filter tree first, so an unknown operator or condition fails before any
    node is looked at, even on an empty index.

    Args:
        filters: ``MetadataFilters`` (nested ones allowed) or None (matches everything).

    Raises:
        UnsupportedFilterError: an operator or condition outside LlamaIndex's ``FilterOperator`` /
            ``FilterCondition`` (the matcher never treats what it does not understand as a match).
    """
    if filters is None or not getattr(filters, "filters", None):
        return lambda meta: True
    parts = [compile_filters(f) if hasattr(f, "filters") else _compile_one(f) for f in filters.filters]
    cond = getattr(filters, "condition", None)
    cond = getattr(cond, "value", cond) or "and"
    if cond not in _CONDITIONS:
        raise UnsupportedFilterError(f"metadata filter condition {cond!r} is not supported "
                                     f"(use one of {', '.join(_CONDITIONS)})")
    if cond == "or":
        return lambda meta: any(p(meta) for p in parts)
    if cond == "not":  # LlamaIndex: match when none of the filters match
        return lambda meta: not any(p(meta) for p in parts)
    return lambda meta: all(p(meta) for p in parts)


def matches_filters(meta: Dict, filters: Any) -> bool:
    """Evaluate LlamaIndex ``MetadataFilters`` against a node's metadata (for BM25 hits).

    Args:
        meta: the node's metadata.
        filters: ``MetadataFilters`` or None.

    Raises:
        UnsupportedFilterError: see :func:`compile_filters`.
    """
    return compile_filters(filters)(meta)
