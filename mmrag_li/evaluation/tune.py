"""``mmrag tune``: learn the fusion from the user's own labelled queries, and say honestly whether it helps.

Per query every retriever runs ONCE (planned exactly as retrieval plans it, the query image's
caption + OCR cached as in ``mmrag eval``); the ranked per-retriever lists are kept in memory and
every fusion below is computed from the very same lists:

* ``rrf``: rank-only Reciprocal Rank Fusion with the configured weights;
* ``digit_rule``: RRF with ``retrieval.identifier_weights`` (BM25 x5 when the query holds a digit);
* ``score_aware`` / ``score_aware+digit``: RRF over the retrievers that do not abstain, weighted by
  calibrated confidence (:mod:`mmrag_li.retrieval.calibrated_fusion`), without / with the digit rule;
* ``calibrated`` / ``calibrated+digit``: RRF in which a retriever without signal for the query is
  down-weighted to ``retrieval.calibrated_floor`` instead of dropped, BM25's hits weighted by their
  confidence, without / with the digit rule (``calibrated+digit`` is ``retrieval.fusion: calibrated``);
* ``learned``: a logistic regression over candidate features (:mod:`mmrag_li.retrieval.features`),
  scored OUT OF FOLD: the queries are split into ``folds`` folds (stratified by query type, fixed
  seed), the model is fitted on the other folds and ranks the held-out fold's candidates.

The report lists R@k, NDCG, MRR per system, overall and per query type, all on the same folds and
lists. The learned model is recommended only when it beats RRF out of fold (higher MRR and no lower
R@5); otherwise ``tune`` says why and does not recommend it. The final model is fitted on all
queries and written as JSON (:class:`~mmrag_li.retrieval.learned.FusionModel`, no pickle).

Why logistic regression (scikit-learn's ``LogisticRegression``): labelled queries are few (tens
to hundreds, one or a few relevant items each), so a model with one weight per feature and L2
regularisation is what the data can support without overfitting; its weights are readable
("BM25 rank matters 3x more when the query holds a digit"); it is fitted in well under a second;
and it is a list of floats, so the model file is plain JSON that loads without scikit-learn and
without running code. A pairwise/listwise ranker (LightGBM LambdaRank) needs far more queries to
beat it and would bring a compiled dependency and a binary/text model format.
"""

from __future__ import annotations

import logging
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from mmrag_li.evaluation.harness import (EvalQuery, EvalUsageError, Evaluator, labels_for, load_queries, parse_ks,
                                         resolve_relevant)
from mmrag_li.evaluation.metrics import mean_metrics, metric_names, query_metrics

log = logging.getLogger("mmrag_li.eval")

SYSTEMS = ("rrf", "digit_rule", "score_aware", "score_aware+digit", "calibrated", "calibrated+digit", "learned")
Unit = Tuple[str, Optional[int]]


@dataclass
class QueryLists:
    """One query's per-retriever lists, as fusion sees them.

    Args:
        query: the labelled query.
        query_str: the planned (expanded) query text.
        image: whether it is an image query.
        ranked: retriever name -> ranked ``(key, score, hit)`` list.
    """

    query: EvalQuery
    query_str: str
    image: bool
    ranked: Dict[str, List[Tuple[str, float, Any]]]


def collect_lists(rag: Any, queries: Sequence[EvalQuery], progress: bool = True) -> Tuple[Any, List[QueryLists]]:
    """Run every planned retriever once per query; returns ``(fusion retriever, lists)``.

    Args:
        rag: an open ``MultiModalRAG``.
        queries: the labelled queries (relevant ids resolved).
        progress: show a progress bar on stderr.
    """
    from llama_index.core.schema import QueryBundle
    from tqdm import tqdm

    from mmrag_li.retrieval.hits import rank_assets

    ev = Evaluator(rag, [1, 5, 10], answers=False, progress=False)  # its query-image description cache
    retriever, cfg = ev.retriever, ev.cfg
    out = []
    for q in tqdm(queries, desc="tune: retrieving", unit="query", file=sys.stderr, disable=not progress):
        names, query_str, image = retriever.plan(QueryBundle(query_str=q.text, image_path=q.image),
                                                 describe=ev.describe)
        ranked = {}
        for n in names:
            hits = retriever.run_one(n, query_str, image, None, ev.per_k)
            if hits:
                ranked[n] = rank_assets(hits, cfg.group_by)
        out.append(QueryLists(q, query_str, bool(image), ranked))
    return retriever, out


def unit_map(ranked: Dict[str, List[Tuple[str, float, Any]]]) -> Dict[str, Unit]:
    """key -> ``(asset_id, page)`` of every candidate (its page is its best node's), in first-seen order.

    Args:
        ranked: retriever name -> ranked ``(key, score, hit)`` list.
    """
    from mmrag_li.retrieval.hits import asset_of

    best: Dict[str, Tuple[float, Any]] = {}
    for items in ranked.values():
        for key, score, h in items:
            if key not in best or score > best[key][0]:
                best[key] = (score, h)
    return {k: (asset_of(h.node), h.node.metadata.get("page")) for k, (_s, h) in best.items()}


def order_units(fused: Dict[str, float], ranked: Dict[str, List[Tuple[str, float, Any]]]) -> List[Unit]:
    """Fused scores -> ranked ``(asset_id, page)`` units, in the order ``FusionRetriever`` returns them
    (score descending, ties in first-seen order).

    Args:
        fused: key -> fused score.
        ranked: the per-retriever lists the scores came from.
    """
    units = unit_map(ranked)
    return [units[k] for k in sorted(units, key=lambda k: -fused.get(k, 0.0))]


def labels(ql: QueryLists, keys: Sequence[str]) -> List[int]:
    """1/0 relevance of each candidate key of a query (the same label rule as ``mmrag eval``).

    Args:
        ql: the query's lists.
        keys: candidate keys (see :func:`~mmrag_li.retrieval.features.build_features`).
    """
    units = unit_map(ql.ranked)
    rel = set(ql.query.relevant)
    return [int(f"{units[k][0]}#p{units[k][1]}" in rel or units[k][0] in rel) for k in keys]


def stratified_folds(queries: Sequence[EvalQuery], folds: int, seed: int = 0) -> Dict[str, int]:
    """qid -> fold (0..folds-1), each query type spread evenly over the folds.

    Args:
        queries: the queries.
        folds: number of folds (>= 2).
        seed: shuffling seed.
    """
    rng = random.Random(seed)
    out: Dict[str, int] = {}
    start = 0
    for qtype in sorted({q.qtype for q in queries}):
        ids = sorted(q.qid for q in queries if q.qtype == qtype)
        rng.shuffle(ids)
        for i, qid in enumerate(ids):
            out[qid] = (start + i) % folds
        start += len(ids)
    return out


def fit_model(rows: Sequence[Sequence[float]], ys: Sequence[int], retrievers: Sequence[str], models: Dict[str, str],
              rrf_k: int, c: float = 1.0) -> Any:
    """Fit the logistic regression on standardised features; returns a
    :class:`~mmrag_li.retrieval.learned.FusionModel`.

    Args:
        rows: feature rows (:func:`~mmrag_li.retrieval.features.feature_names` order).
        ys: 1 = relevant, 0 = not.
        retrievers: the retriever names (feature order).
        models: retriever -> "model@collection" of the calibration used.
        rrf_k: the RRF constant of the rank features.
        c: inverse L2 regularisation strength.
    """
    import numpy as np
    import sklearn
    from sklearn.linear_model import LogisticRegression

    from mmrag_li.retrieval.features import feature_names
    from mmrag_li.retrieval.learned import FusionModel

    x = np.asarray(rows, dtype=float)
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-9] = 1.0
    clf = LogisticRegression(C=c, class_weight="balanced", max_iter=5000)
    clf.fit((x - mean) / scale, np.asarray(ys, dtype=int))
    return FusionModel(list(retrievers), feature_names(retrievers), [float(v) for v in clf.coef_[0]],
                       float(clf.intercept_[0]), [float(v) for v in mean], [float(v) for v in scale], dict(models),
                       rrf_k, sklearn.__version__)


def _metrics(units: Sequence[Unit], q: EvalQuery, ks: Sequence[int], depth: int) -> Dict[str, float]:
    return query_metrics(labels_for(list(units)[:depth], q.relevant), q.relevant, ks, mrr_k=depth)


def _summaries(per_query: Dict[str, Dict[str, Dict[str, float]]], qids: Sequence[str], ks: Sequence[int]
               ) -> Dict[str, Dict[str, float]]:
    names = metric_names(ks)
    return {s: {k: round(v, 4) for k, v in mean_metrics([rows[q] for q in qids], names).items()}
            for s, rows in per_query.items()}


def cross_validate(lists: Sequence[QueryLists], config: Any, calibration: Any, retrievers: Sequence[str],
                   folds: int = 5, ks: Sequence[int] = (1, 5, 10), seed: int = 0, depth: int = 10
                   ) -> Dict[str, Any]:
    """Every system of :data:`SYSTEMS` on the same lists; learned fusion out of fold.

    Args:
        lists: per-query lists from :func:`collect_lists`.
        config: the ``RetrievalConfig`` (weights, identifier_weights, rrf_k).
        calibration: the store's :class:`~mmrag_li.retrieval.calibration.Calibration`.
        retrievers: the retriever names the model uses.
        folds: number of folds (>= 2; capped at the number of queries).
        ks: metric cut-offs.
        seed: fold seed.
        depth: ranking depth scored (MRR cut).

    Returns:
        ``{"per_query": {system: {qid: metrics}}, "folds": {qid: fold}, "rows": [...], "ys": [...],
        "groups": [...]}`` (rows/ys/groups: all candidates, for the final fit).
    """
    from mmrag_li.retrieval.calibrated_fusion import CalibratedFuser, ScoreAwareFuser
    from mmrag_li.retrieval.features import build_features
    from mmrag_li.retrieval.fusion import fuse, query_weights

    folds = max(2, min(folds, len(lists)))
    fold_of = stratified_folds([ql.query for ql in lists], folds, seed)
    plain = dict(config.weights)
    sa = ScoreAwareFuser(calibration, config.rrf_k)
    cf = CalibratedFuser(calibration, config.rrf_k, config.calibrated_floor, config.hit_confidence)
    per_query: Dict[str, Dict[str, Dict[str, float]]] = {s: {} for s in SYSTEMS}
    feats = []
    for ql in lists:
        q = ql.query
        digit = query_weights(ql.query_str, config)
        fused = {"rrf": fuse(ql.ranked, "rrf", config.rrf_k, plain),
                 "digit_rule": fuse(ql.ranked, "rrf", config.rrf_k, digit),
                 "score_aware": sa.fuse(ql.ranked, ql.query_str, plain),
                 "score_aware+digit": sa.fuse(ql.ranked, ql.query_str, digit),
                 "calibrated": cf.fuse(ql.ranked, ql.query_str, plain),
                 "calibrated+digit": cf.fuse(ql.ranked, ql.query_str, digit)}
        for s, f in fused.items():
            per_query[s][q.qid] = _metrics(order_units(f, ql.ranked), q, ks, depth)
        keys, rows = build_features(ql.ranked, ql.query_str, retrievers, calibration, ql.image, config.rrf_k)
        feats.append((keys, rows, labels(ql, keys) if keys else []))
    models = calibration.models() if calibration is not None else {}
    for f in range(folds):
        train = [i for i, ql in enumerate(lists) if fold_of[ql.query.qid] != f]
        x = [r for i in train for r in feats[i][1]]
        y = [v for i in train for v in feats[i][2]]
        model = fit_model(x, y, retrievers, models, config.rrf_k) if 0 < sum(y) < len(y) else None
        for i, ql in enumerate(lists):
            if fold_of[ql.query.qid] != f:
                continue
            keys, rows, _y = feats[i]
            scores = {k: (model.probability(r) if model else 0.0) for k, r in zip(keys, rows)}
            per_query["learned"][ql.query.qid] = _metrics(order_units(scores, ql.ranked), ql.query, ks, depth)
    return {"per_query": per_query, "folds": fold_of,
            "rows": [r for _k, rows, _y in feats for r in rows], "ys": [v for _k, _r, ys in feats for v in ys]}


def recommendation(overall: Dict[str, Dict[str, float]]) -> Tuple[bool, List[str]]:
    """Whether learned fusion beats RRF out of fold (higher MRR, no lower R@5), and why (not).

    Args:
        overall: system -> mean metrics (out of fold for learned).
    """
    lr, rrf = overall.get("learned", {}), overall.get("rrf", {})
    if not lr or not rrf:
        return False, ["no out-of-fold result"]
    reasons = []
    if lr["mrr"] <= rrf["mrr"]:
        reasons.append(f"out of fold its MRR {lr['mrr']:.3f} does not beat RRF's {rrf['mrr']:.3f}")
    if lr.get("recall@5", 0) < rrf.get("recall@5", 0):
        reasons.append(f"out of fold its R@5 {lr['recall@5']:.3f} is below RRF's {rrf['recall@5']:.3f}")
    best = max(overall, key=lambda s: (overall[s]["mrr"], overall[s].get("recall@5", 0)))
    if not reasons and best != "learned":
        reasons.append(f"note: {best} is better still (MRR {overall[best]['mrr']:.3f})")
        return True, reasons
    return not reasons, reasons


FUSIONS = ("calibrated", "rrf", "weighted", "score_aware", "learned")


def fusion_overrides(fusion: Optional[str], fusion_model: Optional[str]) -> Dict[str, str]:
    """Settings overrides for ``mmrag eval --fusion X [--fusion-model FILE]``, checked before anything
    loads (``--fusion-model`` alone means learned).

    Args:
        fusion: calibrated, rrf, weighted, score_aware or learned (None: the configured one).
        fusion_model: the learned model file.

    Raises:
        EvalUsageError: learned without a model file, a model file that does not exist, an unknown fusion.
    """
    fusion = fusion or ("learned" if fusion_model else None)
    if not fusion:
        return {}
    if fusion not in FUSIONS:
        raise EvalUsageError(f"--fusion: choose one of {', '.join(FUSIONS)} (got {fusion!r})")
    if fusion != "learned":
        if fusion_model:
            raise EvalUsageError("--fusion-model goes with --fusion learned")
        return {"retrieval.fusion": fusion}
    if not fusion_model:
        raise EvalUsageError("--fusion learned needs --fusion-model FILE (written by `mmrag tune --out FILE`)")
    if not Path(fusion_model).is_file():
        raise EvalUsageError(f"--fusion-model: file not found: {fusion_model}")
    return {"retrieval.fusion": "learned", "retrieval.fusion_model": str(Path(fusion_model).resolve())}


def check_tune_args(queries_path: str | Path, corpus: Optional[str | Path], folds: int, ks: str | Sequence[int]) -> None:
    """Every usage check of ``mmrag tune`` before a model loads or a store opens.

    Args:
        queries_path: the queries file.
        corpus: the corpus folder (or None).
        folds: the number of folds.
        ks: metric cut-offs.

    Raises:
        EvalUsageError: the first problem found (exit code 2).
    """
    parse_ks(ks)
    if int(folds) < 2:
        raise EvalUsageError(f"--folds must be >= 2 (got {folds})")
    if corpus and not Path(corpus).is_dir():
        raise EvalUsageError(f"--corpus is not a folder: {corpus}")
    load_queries(queries_path, corpus)


def run_tune(rag: Any, queries_path: str | Path, corpus: Optional[str | Path] = None,
             out: Optional[str | Path] = None, folds: int = 5, ks: str | Sequence[int] = "1,5,10", seed: int = 0,
             ingest: bool = True, progress: bool = True) -> Dict[str, Any]:
    """Library form of ``mmrag tune``: collect lists, calibrate, cross-validate, fit, write the model.

    Args:
        rag: an open ``MultiModalRAG``.
        queries_path: the labelled JSON-lines queries (the ``mmrag eval`` format).
        corpus: folder the relevant paths are relative to; ingested first when ``ingest``.
        out: where to write the model JSON (None: not written).
        folds: cross-validation folds (>= 2).
        ks: metric cut-offs.
        seed: fold seed.
        ingest: ingest ``corpus`` first (incremental).
        progress: progress bars on stderr.

    Returns:
        The report: ``{"queries", "folds", "overall": {system: metrics}, "by_type": {type: {system: metrics}},
        "recommended", "reasons", "weights", "model_file", "calibration", "seconds"}``.

    Raises:
        EvalUsageError: bad queries file, corpus or folds (a UsageError: exit 2).
        FusionModelError: the store has no retrievers to learn from.
    """
    from mmrag_li.retrieval.calibration import ensure_calibration

    t0 = time.perf_counter()
    ks_l = parse_ks(ks)
    if int(folds) < 2:
        raise EvalUsageError(f"--folds must be >= 2 (got {folds})")
    queries = load_queries(queries_path, corpus)
    if corpus:
        if not Path(corpus).is_dir():
            raise EvalUsageError(f"--corpus is not a folder: {corpus}")
        if ingest:
            rag.ingest([str(corpus)], progress=progress)
    resolve_relevant(rag, queries, corpus)
    usable = [q for q in queries if q.relevant]
    if len(usable) < 2:
        raise EvalUsageError(f"{queries_path}: fewer than 2 queries whose relevant ids are in the store")
    retriever, lists = collect_lists(rag, usable, progress)
    cal = ensure_calibration(retriever, refresh=True)
    names = list(retriever.retrievers)
    depth = max(max(ks_l), 10)
    cv = cross_validate(lists, retriever.config, cal, names, folds, ks_l, seed, depth)
    qids = [ql.query.qid for ql in lists]
    overall = _summaries(cv["per_query"], qids, ks_l)
    by_type = {t: {"queries": sum(1 for q in usable if q.qtype == t),
                   **_summaries(cv["per_query"], [q.qid for q in usable if q.qtype == t], ks_l)}
               for t in sorted({q.qtype for q in usable})}
    ok, reasons = recommendation(overall)
    if not 0 < sum(cv["ys"]) < len(cv["ys"]):
        raise EvalUsageError("no relevant item was retrieved by any retriever (or every one was): nothing to learn")
    model = fit_model(cv["rows"], cv["ys"], names, cal.models(), retriever.config.rrf_k)
    model.training = {"queries": len(lists), "candidates": len(cv["ys"]), "positives": int(sum(cv["ys"])),
                      "folds": max(2, min(folds, len(lists))), "seed": seed, "queries_file": str(queries_path),
                      "store": str(getattr(rag, "store_dir", "")), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                             time.gmtime()),
                      "out_of_fold": overall, "recommended": ok, "reasons": reasons}
    written = str(model.save(out)) if out else None
    return {"queries": len(lists), "skipped": [q.qid for q in queries if not q.relevant],
            "folds": model.training["folds"], "systems": list(SYSTEMS), "overall": overall, "by_type": by_type,
            "recommended": ok, "reasons": reasons, "weights": model.weights(), "model_file": written,
            "calibration": {n: {"p95": _p95(cal, n)} for n in cal.retrievers},
            "seconds": round(time.perf_counter() - t0, 2)}


def _p95(cal: Any, name: str) -> Optional[float]:
    p = cal.retrievers[name].bins.get("all") or []
    return round(p[94], 4) if len(p) >= 95 else None


def format_tune(report: Dict[str, Any]) -> str:
    """The human-readable ``mmrag tune`` report: the out-of-fold table, per type, the verdict, the weights.

    Args:
        report: :func:`run_tune` output.
    """
    metrics = ("recall@1", "recall@5", "mrr")
    head = "| system | " + " | ".join(m.replace("recall@", "R@").upper() if m == "mrr" else m.replace("recall@", "R@")
                                       for m in metrics) + " |"
    lines = [f"mmrag tune: {report['queries']} queries, {report['folds']}-fold cross-validation "
             "(learned = out of fold; the others need no training)", "", head, "|---|---:|---:|---:|"]
    for s in report["systems"]:
        m = report["overall"].get(s, {})
        lines.append(f"| {s} | " + " | ".join(f"{m.get(k, 0):.3f}" for k in metrics) + " |")
    lines += ["", "R@5 / MRR per query type:", "",
              "| type | n | " + " | ".join(report["systems"]) + " |", "|---|---:|" + "---:|" * len(report["systems"])]
    for t, row in report["by_type"].items():
        cells = [f"{row[s]['recall@5']:.2f}/{row[s]['mrr']:.2f}" if s in row else "-" for s in report["systems"]]
        lines.append(f"| {t} | {row['queries']} | " + " | ".join(cells) + " |")
    lines.append("")
    if report["recommended"]:
        lines.append("RECOMMENDED: learned fusion beats RRF out of fold. Use it with "
                     f"retrieval.fusion: learned and retrieval.fusion_model: {report.get('model_file') or 'FILE'}")
        lines += [f"  {r}" for r in report["reasons"]]
    else:
        lines.append("NOT RECOMMENDED: " + "; ".join(report["reasons"]) + ". Keep the current fusion.")
    top = list(report["weights"].items())[:12]
    lines += ["", "largest feature weights (standardised): " + ", ".join(f"{k} {v:+.2f}" for k, v in top)]
    if report.get("model_file"):
        lines.append(f"model written to {report['model_file']}")
    return "\n".join(lines)


__all__ = ["FUSIONS", "QueryLists", "SYSTEMS", "check_tune_args", "collect_lists", "cross_validate", "fit_model",
           "format_tune", "fusion_overrides", "labels",
           "order_units", "recommendation", "run_tune", "stratified_folds", "unit_map"]
