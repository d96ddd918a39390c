"""Features of one fusion candidate, for learned fusion (``retrieval.fusion: learned``).

A candidate is one hit key (an asset, or a page of one) that at least one retriever returned for
the query. Its features, all numbers, come only from what retrieval already has in hand (the
ranked per-retriever lists, their nodes' metadata, the query text and the store's calibration), so
they cost nothing at query time and are the same in ``mmrag tune`` and in ``FusionRetriever``:

* per retriever ``r``: ``r:present``, ``r:rrf`` (``(k+1)/(k+rank)``: 1 at rank 1, 0 when absent),
  ``r:score`` (raw; BM25 as ``log1p``), ``r:conf`` (calibrated confidence of the candidate's score,
  see :mod:`mmrag_li.retrieval.calibration`), ``r:active`` (``r:rrf`` when the retriever does not
  abstain for this query, else 0), and ``r:rrf*digit`` / ``r:rrf*image`` / ``r:rrf*long``
  (interactions with the query features: a linear model needs them to weight a retriever
  differently per kind of query; constant query features alone cannot change a ranking);
* query: ``q:digit`` (holds a number or code), ``q:quoted`` (a quoted phrase), ``q:image`` (an
  image query), ``q:long`` (10 tokens or more), ``q:log_tokens``;
* candidate: ``c:lists`` (share of the lists that hold it), ``c:pdf``, ``c:image_file``,
  ``c:ocr_conf`` (0..1), ``c:ocr_words``, ``c:caption_words``, ``c:page_count`` (log1p each),
  and ``c:image_file*image`` / ``c:image_file*digit`` / ``c:image_file*long``.

This module lives in ``retrieval`` (not ``evaluation``) because ``FusionRetriever`` needs it at
query time and retrieval may not import from evaluation (DESIGN.md: data flows left to right).
"""

from __future__ import annotations

import math
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from mmrag_li.retrieval.calibration import Calibration, n_tokens

FEATURE_VERSION = 1
PER_RETRIEVER = ("present", "rrf", "score", "conf", "active", "rrf*digit", "rrf*image", "rrf*long")
QUERY_FEATURES = ("q:digit", "q:quoted", "q:image", "q:long", "q:log_tokens")
CANDIDATE_FEATURES = ("c:lists", "c:pdf", "c:image_file", "c:ocr_conf", "c:ocr_words", "c:caption_words",
                      "c:page_count", "c:image_file*image", "c:image_file*digit", "c:image_file*long")
LONG_QUERY = 10

_DIGIT = re.compile(r"\d")
_QUOTED = re.compile(r"[\"“”„«»].+?[\"“”„«»]")

Ranked = Mapping[str, Sequence[Tuple[str, float, Any]]]


def feature_names(retrievers: Sequence[str]) -> List[str]:
    """The feature list for a model over ``retrievers`` (in that order).

    Args:
        retrievers: the retriever names the model knows.
    """
    return [f"{r}:{f}" for r in retrievers for f in PER_RETRIEVER] + list(QUERY_FEATURES) + list(CANDIDATE_FEATURES)


def query_features(query_str: str, image_query: bool) -> Dict[str, float]:
    """The query's own features (see the module docstring).

    Args:
        query_str: the query text (for image queries: including the image's caption and OCR).
        image_query: whether the query has an image.
    """
    tokens = n_tokens(query_str)
    return {"q:digit": float(bool(_DIGIT.search(query_str or ""))),
            "q:quoted": float(bool(_QUOTED.search(query_str or ""))),
            "q:image": float(bool(image_query)), "q:long": float(tokens >= LONG_QUERY),
            "q:log_tokens": math.log1p(tokens)}


def _meta(hit: Any) -> Dict[str, Any]:
    node = getattr(hit, "node", None)
    return dict(getattr(node, "metadata", None) or {})


def _words(hit: Any) -> int:
    node = getattr(hit, "node", None)
    try:
        return len(str(node.get_content()).split())
    except Exception:
        return 0


def candidate_features(hits: Sequence[Any], lists: int, total_lists: int) -> Dict[str, float]:
    """Features of a candidate from the nodes by which retrievers found it.

    Args:
        hits: the candidate's best hit in each list that holds it (``NodeWithScore``).
        lists: how many lists hold it.
        total_lists: how many lists there are for this query.
    """
    metas = [_meta(h) for h in hits]
    mime = next((str(m.get("mime_type")) for m in metas if m.get("mime_type")), "")
    ocr = [(m, h) for m, h in zip(metas, hits) if m.get("modality") == "ocr"]
    caps = [h for m, h in zip(metas, hits) if m.get("modality") == "caption"]
    pages = max((float(m.get("n_pages") or 0) for m in metas), default=0.0)
    return {"c:lists": lists / max(total_lists, 1),
            "c:pdf": float(mime == "application/pdf"),
            "c:image_file": float(mime.startswith("image/")),
            "c:ocr_conf": max((float(m.get("ocr_conf") or 0.0) / 100.0 for m, _h in ocr), default=0.0),
            "c:ocr_words": max((math.log1p(float(m.get("n_words") or _words(h))) for m, h in ocr), default=0.0),
            "c:caption_words": max((math.log1p(_words(h)) for h in caps), default=0.0),
            "c:page_count": math.log1p(pages)}


def build_features(ranked: Ranked, query_str: str, retrievers: Sequence[str], calibration: Optional[Calibration],
                   image_query: bool, rrf_k: int = 60) -> Tuple[List[str], List[List[float]]]:
    """One feature row per candidate of a query, in :func:`feature_names` order.

    Args:
        ranked: retriever name -> ranked ``(key, score, hit)`` list (``rank_assets`` output); lists of
            retrievers the model does not know are ignored.
        query_str: the (expanded) query text.
        retrievers: the model's retriever names (feature order).
        calibration: the store's calibration (None: confidence 1, nobody abstains).
        image_query: whether the query has an image.
        rrf_k: the RRF constant used for the rank features.

    Returns:
        ``(keys, rows)``: the candidate keys in first-seen order and their feature rows.
    """
    q = query_features(query_str, image_query)
    tokens = n_tokens(query_str)
    keys: List[str] = []
    per: Dict[str, Dict[str, Tuple[int, float, Any]]] = {}
    for name in retrievers:
        for rank, (key, score, hit) in enumerate(ranked.get(name) or (), start=1):
            if key not in per:
                keys.append(key)
                per[key] = {}
            per[key].setdefault(name, (rank, float(score), hit))
    total = sum(1 for r in retrievers if ranked.get(r))
    abstain = {r: bool(calibration and ranked.get(r) and calibration.abstains(r, float(ranked[r][0][1]), tokens))
               for r in retrievers}
    names = feature_names(retrievers)
    rows = []
    for key in keys:
        found = per[key]
        row: Dict[str, float] = {}
        for r in retrievers:
            if r in found:
                rank, score, _h = found[r]
                rrf = (rrf_k + 1) / (rrf_k + rank)
                conf = calibration.confidence(r, score, tokens) if calibration else 1.0
                raw = math.log1p(max(score, 0.0)) if r == "bm25" else score
                vals = (1.0, rrf, raw, conf, 0.0 if abstain[r] else rrf,
                        rrf * q["q:digit"], rrf * q["q:image"], rrf * q["q:long"])
            else:
                vals = (0.0,) * len(PER_RETRIEVER)
            row.update({f"{r}:{f}": v for f, v in zip(PER_RETRIEVER, vals)})
        row.update(q)
        c = candidate_features([h for _r, _s, h in found.values()], len(found), total)
        c.update({"c:image_file*image": c["c:image_file"] * q["q:image"],
                  "c:image_file*digit": c["c:image_file"] * q["q:digit"],
                  "c:image_file*long": c["c:image_file"] * q["q:long"]})
        row.update(c)
        rows.append([row[f] for f in names])
    return keys, rows


__all__ = ["CANDIDATE_FEATURES", "FEATURE_VERSION", "PER_RETRIEVER", "QUERY_FEATURES", "build_features",
           "candidate_features", "feature_names", "query_features"]
