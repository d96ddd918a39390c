"""Calibrated retriever confidence: when is a retriever's best hit more than noise?

Every dense retriever returns its k nearest neighbours however unrelated the query is, and rank-only
RRF then gives a photo that is first in the image and caption lists the same weight as a page that
is first in BM25 and OCR. Hand-set score floors do not transfer between models and collections.
Instead, each retriever of a store is *calibrated*: fixed unrelated queries (:data:`NULL_QUERIES`,
three length bins) run against the store, and each retriever's top-1 scores are kept as percentiles
in ``<store>/calibration.json`` with the model ids, floors and collection sizes. For a new query:

* ``confidence(name, score, n_tokens)`` is the fraction of unrelated queries (of the same length
  bin) whose top-1 score is below ``score`` (an empirical CDF, 0..1);
* a retriever whose top-1 confidence is not above ``ABSTAIN_QUANTILE`` (its p95 on unrelated
  queries) *abstains* (:meth:`Calibration.abstains`): it carries no signal for this query.

The fusers that use it are in :mod:`mmrag_li.retrieval.calibrated_fusion` (``retrieval.fusion:
calibrated``, the default, down-weights such a retriever; ``score_aware`` drops it). The calibration
is recomputed when models or floors change or a collection's size moves by more than
``STALE_FRACTION`` (seconds: one batch per embedding model). Retrievers without a calibration
(a foreign one, image->image) never abstain and get confidence 1.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import logging
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from mmrag_li.errors import MMRAGError
from mmrag_li.retrieval.null_queries import NULL_QUERIES

log = logging.getLogger("mmrag_li.retrieval")

CALIBRATION_FILE = "calibration.json"
CALIBRATION_VERSION = 1
ABSTAIN_QUANTILE = 0.95
STALE_FRACTION = 0.1
PERCENTILES = tuple(range(1, 100))
LENGTH_BINS = ((0, 4, "short"), (5, 9, "medium"), (10, 10 ** 6, "long"))
MIN_BIN = 15  # fewer samples in a bin: use all lengths together

_TOKEN = re.compile(r"\w+", re.UNICODE)


class CalibrationError(MMRAGError):
    """A calibration file that cannot be read or was made for other models (names the file)."""


def n_tokens(text: str) -> int:
    """Word-like tokens in ``text`` (the length bin of a query).

    Args:
        text: the query text.
    """
    return len(_TOKEN.findall(text or ""))


def length_bin(tokens: int) -> str:
    """The length bin ("short", "medium", "long") of a query with ``tokens`` tokens.

    Args:
        tokens: :func:`n_tokens` of the query.
    """
    for lo, hi, name in LENGTH_BINS:
        if lo <= tokens <= hi:
            return name
    return "long"


def percentiles(values: Sequence[float]) -> List[float]:
    """The 1st..99th percentiles of ``values`` (linear interpolation; [] for no values).

    Args:
        values: scores.
    """
    if not values:
        return []
    v = sorted(float(x) for x in values)
    out = []
    for p in PERCENTILES:
        pos = p / 100.0 * (len(v) - 1)
        lo = int(pos)
        hi = min(lo + 1, len(v) - 1)
        out.append(v[lo] + (v[hi] - v[lo]) * (pos - lo))
    return out


def ecdf(pcts: Sequence[float], score: float) -> float:
    """Fraction (0..1) of the calibrated distribution below ``score``, from its percentiles.

    Args:
        pcts: the 1st..99th percentiles (see :func:`percentiles`).
        score: a retriever score.
    """
    if not pcts:
        return 1.0
    i = bisect.bisect_left(list(pcts), score)
    if i == 0:
        return 0.0
    if i >= len(pcts):
        return 1.0
    lo, hi = pcts[i - 1], pcts[i]
    frac = (score - lo) / (hi - lo) if hi > lo else 0.0
    return (PERCENTILES[i - 1] + frac) / 100.0


@dataclass
class RetrieverCalibration:
    """One retriever's top-1 scores on unrelated queries.

    Args:
        model: the model id (embedding model, or "bm25").
        collection: the collection(s) searched.
        bins: length bin ("short", "medium", "long", "all") -> the 1st..99th percentiles.
        samples: length bin -> how many unrelated queries returned a hit.
    """

    model: str
    collection: str
    bins: Dict[str, List[float]] = field(default_factory=dict)
    samples: Dict[str, int] = field(default_factory=dict)

    def pcts(self, tokens: int) -> List[float]:
        """Percentiles for a query of ``tokens`` tokens (its bin, else all lengths).

        Args:
            tokens: the query's token count.
        """
        b = length_bin(tokens)  # no bins at all: not calibrated (too few nodes), confidence 1
        if self.samples.get(b, 0) >= MIN_BIN and self.bins.get(b):
            return self.bins[b]
        return self.bins.get("all", [])


@dataclass
class Calibration:
    """Per-retriever calibration of one store (what ``<store>/calibration.json`` holds).

    Args:
        retrievers: retriever name -> :class:`RetrieverCalibration`.
        counts: collection -> node count when calibrated (staleness check).
        created: unix time of the calibration.
        queries: how many unrelated queries were run.
        floors: retriever name -> the relevance floor it ran with (a changed floor changes the scores seen).
        min_nodes: ``retrieval.calibration_min_nodes`` it ran with (retrievers over fewer nodes were skipped).
    """

    retrievers: Dict[str, RetrieverCalibration] = field(default_factory=dict)
    counts: Dict[str, int] = field(default_factory=dict)
    created: float = 0.0
    queries: int = 0
    floors: Dict[str, float] = field(default_factory=dict)
    min_nodes: int = 0

    def confidence(self, name: str, score: float, tokens: int) -> float:
        """Calibrated confidence (0..1) of a score of retriever ``name`` for a ``tokens``-token query;
        1.0 for an uncalibrated retriever.

        Args:
            name: the retriever name.
            score: its score for a candidate (or its top-1).
            tokens: the query's token count.
        """
        rc = self.retrievers.get(name)
        return 1.0 if rc is None else ecdf(rc.pcts(tokens), score)

    def abstains(self, name: str, top_score: float, tokens: int) -> bool:
        """Whether retriever ``name`` carries no signal for this query: its top-1 score is not above
        its ``ABSTAIN_QUANTILE`` on unrelated queries (never for an uncalibrated retriever).

        Args:
            name: the retriever name.
            top_score: its best score for this query.
            tokens: the query's token count.
        """
        return name in self.retrievers and self.confidence(name, top_score, tokens) <= ABSTAIN_QUANTILE

    def models(self) -> Dict[str, str]:
        """retriever name -> ``"model@collection"`` (what a learned fusion model is checked against)."""
        return {n: f"{rc.model}@{rc.collection}" for n, rc in self.retrievers.items()}

    def is_stale(self, models: Mapping[str, str], counts: Mapping[str, int],
                 floors: Optional[Mapping[str, float]] = None, min_nodes: Optional[int] = None) -> bool:
        """Whether this calibration no longer fits: other retrievers/models/floors, or a collection
        whose size changed by more than ``STALE_FRACTION``.

        Args:
            models: the current retriever -> "model@collection" (see :func:`retriever_models`).
            counts: the current node count per collection.
            floors: the current retriever -> relevance floor (None: not checked).
            min_nodes: the current ``calibration_min_nodes`` (None: not checked).
        """
        if dict(models) != self.models() or (min_nodes is not None and min_nodes != self.min_nodes):
            return True
        if floors is not None and {k: round(float(v), 6) for k, v in floors.items()} != \
                {k: round(float(v), 6) for k, v in self.floors.items()}:
            return True
        for c, n in counts.items():
            old = self.counts.get(c, 0)
            if abs(n - old) > STALE_FRACTION * max(old, 1) and abs(n - old) > 2:
                return True
        return False

    def to_dict(self) -> Dict[str, Any]:
        """The JSON form."""
        return {"version": CALIBRATION_VERSION, "created": self.created, "queries": self.queries,
                "abstain_quantile": ABSTAIN_QUANTILE, "counts": dict(self.counts), "floors": dict(self.floors),
                "min_nodes": self.min_nodes,
                "retrievers": {n: {"model": rc.model, "collection": rc.collection, "samples": rc.samples,
                                   "percentiles": {b: [round(x, 6) for x in p] for b, p in rc.bins.items()}}
                               for n, rc in self.retrievers.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Calibration":
        """Parse :meth:`to_dict` output.

        Args:
            data: the parsed JSON.
        """
        rets = {n: RetrieverCalibration(str(r["model"]), str(r["collection"]),
                                        {b: [float(x) for x in p] for b, p in r["percentiles"].items()},
                                        {b: int(k) for b, k in r.get("samples", {}).items()})
                for n, r in data["retrievers"].items()}
        return cls(rets, {k: int(v) for k, v in data.get("counts", {}).items()}, float(data.get("created", 0)),
                   int(data.get("queries", 0)), {k: float(v) for k, v in data.get("floors", {}).items()},
                   int(data.get("min_nodes", 0)))

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write atomically to ``path``; returns it.

        Args:
            path: the file (usually ``<store>/calibration.json``).
        """
        path = Path(path)
        fd, tmp = tempfile.mkstemp(dir=str(path.parent), prefix=".calibration.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(self.to_dict(), fh, indent=1)
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; the file is not secret
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Optional["Calibration"]:
        """Read ``path``; None when it does not exist.

        Args:
            path: the calibration file.

        Raises:
            CalibrationError: the file is not a calibration of this version.
        """
        path = Path(path)
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("version") != CALIBRATION_VERSION:
                raise ValueError(f"version {data.get('version')!r}, expected {CALIBRATION_VERSION}")
            return cls.from_dict(data)
        except (ValueError, KeyError, TypeError) as exc:
            raise CalibrationError(f"{path}: not a usable calibration file ({exc}); delete it and it is "
                                   "recomputed on the next query") from None


def model_id(embed_model: Any) -> str:
    """A stable id of an embedding model: its ``model_name`` (or class name).

    Args:
        embed_model: a LlamaIndex embedding.
    """
    enc = getattr(embed_model, "encoder", None)  # a lazily loaded image encoder names itself once loaded
    name = getattr(enc, "model_id", "") or getattr(embed_model, "model_id", "") or getattr(embed_model, "model_name", "")
    return str(name or type(embed_model).__name__)


def retriever_models(retrievers: Mapping[str, Any]) -> Dict[str, str]:
    """retriever name -> "model@collection" for the retrievers that can be calibrated with text queries
    (vector retrievers with an ``embed_model`` and BM25); image->image and foreign ones are skipped.

    Args:
        retrievers: name -> retriever (e.g. ``FusionRetriever.retrievers``).
    """
    out = {}
    for name, r in retrievers.items():
        if getattr(r, "needs_image", False):
            continue
        if hasattr(r, "embed_model") and hasattr(r, "collection"):
            out[name] = f"{model_id(r.embed_model)}@{r.collection}"
        elif hasattr(r, "cache"):
            out[name] = "bm25@caption,ocr,text"
    return out


class _Precomputed:
    """Stands in for an embedding model during calibration: returns vectors computed in one batch."""

    def __init__(self, model: Any, vectors: Dict[str, List[float]]):
        self.model = model
        self.vectors = vectors

    def get_query_embedding(self, query: str) -> List[float]:
        vec = self.vectors.get(query)
        return vec if vec is not None else self.model.get_query_embedding(query)


def embed_queries(embed_model: Any, queries: Sequence[str]) -> Dict[str, List[float]]:
    """Query embeddings of ``queries``: through the model's ``get_query_embedding_batch`` when it has
    one, batched as texts when the model embeds queries and texts alike (checked on the first
    query), else one by one.

    Args:
        embed_model: a LlamaIndex embedding.
        queries: the query texts.
    """
    queries = list(dict.fromkeys(queries))
    if not queries:
        return {}
    query_batch = getattr(embed_model, "get_query_embedding_batch", None)
    if query_batch is not None:  # ours: torch-free when the model allows it (a search process stays light)
        return {q: list(v) for q, v in zip(queries, query_batch(queries))}
    first = embed_model.get_query_embedding(queries[0])
    batch = getattr(embed_model, "get_text_embedding_batch", None)
    if batch is not None:
        vecs = batch(queries)
        dot = sum(a * b for a, b in zip(first, vecs[0]))
        norm = (sum(a * a for a in first) * sum(b * b for b in vecs[0])) ** 0.5 or 1.0
        if dot / norm > 0.9999:
            return {q: list(v) for q, v in zip(queries, vecs)}
    return {q: (first if i == 0 else embed_model.get_query_embedding(q)) for i, q in enumerate(queries)}


def calibrate(fusion: Any, queries: Sequence[str] = NULL_QUERIES, k: int = 1) -> Calibration:
    """Run the unrelated ``queries`` through every calibratable retriever of ``fusion`` and keep the
    percentiles of their top-1 scores, per length bin and over all lengths. Each embedding model
    embeds the queries once, in a batch; each retriever then searches with its own scope and floor.

    Args:
        fusion: a ``FusionRetriever`` (``retrievers``, ``run_one``, ``floor``, ``stores``).
        queries: the unrelated queries.
        k: hits fetched per query (only the best is used).
    """
    from llama_index.core.schema import QueryBundle

    models = retriever_models(fusion.retrievers)
    counts = store_counts(getattr(fusion, "stores", None))
    min_nodes = int(getattr(fusion.config, "calibration_min_nodes", 0) or 0)
    vectors: Dict[int, Dict[str, List[float]]] = {}
    tops: Dict[str, Dict[str, List[float]]] = {n: {} for n in models}
    for name in models:
        searched = models[name].rpartition("@")[2].split(",")
        if counts and sum(counts.get(c, 0) for c in searched) < min_nodes:
            continue  # too few nodes to tell noise from signal: no percentiles = confidence 1 (plain RRF)
        r = fusion.retrievers[name]
        embed = getattr(r, "embed_model", None)
        scoped = None
        if embed is not None and hasattr(r, "scoped"):
            if id(embed) not in vectors:
                vectors[id(embed)] = embed_queries(embed, queries)
            scoped = r.scoped(getattr(fusion, "filters", None), k, fusion.config.allowed_collections)
            scoped.embed_model = _Precomputed(embed, vectors[id(embed)])  # on the copy only
        for qtext in queries:
            hits = scoped.retrieve(QueryBundle(query_str=qtext)) if scoped is not None else \
                fusion.run_one(name, qtext, None, None, k)
            # no hit above the retriever's floor counts as a top-1 at the floor (not as a missing sample)
            best = max(float(h.score or 0.0) for h in hits) if hits else float(fusion.floor(name) or 0.0)
            b = length_bin(n_tokens(qtext))
            tops[name].setdefault(b, []).append(best)
            tops[name].setdefault("all", []).append(best)
    rets = {}
    for name, spec in models.items():
        model, _, coll = spec.rpartition("@")
        rets[name] = RetrieverCalibration(model, coll, {b: percentiles(v) for b, v in tops[name].items()},
                                          {b: len(v) for b, v in tops[name].items()})
    return Calibration(rets, counts, time.time(), len(queries), retriever_floors(fusion, models), min_nodes)


def retriever_floors(fusion: Any, names: Sequence[str]) -> Dict[str, float]:
    """retriever name -> its relevance floor in ``fusion`` (0 when it has none).

    Args:
        fusion: a ``FusionRetriever``.
        names: the retrievers.
    """
    return {n: float(fusion.floor(n) or 0.0) for n in names}


def store_counts(stores: Any) -> Dict[str, int]:
    """Node count per collection (empty when ``stores`` cannot count).

    Args: stores: a ``ModalityStores`` or None.
    """
    try:
        return {str(k): int(v) for k, v in stores.count().items()} if stores is not None else {}
    except Exception:  # a foreign node source: no staleness check
        return {}


def calibration_path(stores: Any, scope: Optional[Sequence[str]] = None) -> Optional[Path]:
    """``<store>/calibration.json`` of ``stores`` (None when it has no directory); a tenant scope
    (allowed collections) gets its own ``calibration-<hash>.json``, measured on what it can see.

    Args:
        stores: a ``ModalityStores`` (or a guarded view of one).
        scope: the allowed collections (None = unrestricted).
    """
    d = getattr(stores, "store_dir", None)
    if not d:
        return None
    if scope is None:
        return Path(d) / CALIBRATION_FILE
    digest = hashlib.sha256("\n".join(sorted(scope)).encode("utf-8")).hexdigest()[:12]
    return Path(d) / f"calibration-{digest}.json"


def ensure_calibration(fusion: Any, refresh: bool = False) -> Calibration:
    """The store's calibration for ``fusion``'s retrievers: read from ``<store>/calibration.json``, or
    computed (and written there when the directory is writable) when missing, stale or ``refresh``.

    Args:
        fusion: a ``FusionRetriever``.
        refresh: recompute even when a fitting calibration exists.
    """
    allowed = getattr(getattr(fusion, "guard", None), "allowed", None)
    path = calibration_path(getattr(fusion, "stores", None), None if allowed is None else sorted(allowed))
    models = retriever_models(fusion.retrievers)
    cal = None if (path is None or refresh) else Calibration.load(path)
    min_nodes = int(getattr(fusion.config, "calibration_min_nodes", 0) or 0)
    if cal is not None and not cal.is_stale(models, store_counts(fusion.stores), retriever_floors(fusion, models),
                                            min_nodes):
        return cal
    t0 = time.perf_counter()
    cal = calibrate(fusion)
    log.info("calibrated %d retrievers on %d unrelated queries in %.1f s", len(cal.retrievers), cal.queries,
             time.perf_counter() - t0)
    if path is not None:
        try:
            cal.save(path)
        except OSError as exc:  # a read-only store: keep it in memory
            log.warning("could not write %s (%s); calibration kept in memory", path, exc)
    return cal


__all__ = ["ABSTAIN_QUANTILE", "CALIBRATION_FILE", "Calibration", "CalibrationError", "NULL_QUERIES",
           "RetrieverCalibration", "calibrate", "calibration_path", "ecdf", "embed_queries",
           "ensure_calibration",
           "length_bin", "model_id", "n_tokens", "percentiles", "retriever_models", "store_counts"]
