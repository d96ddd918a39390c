"""``mmrag eval``: retrieval quality per retriever, fused, ablations, baselines and answer checks.

One run, one store, one set of models. Per query every single retriever (image, caption, ocr,
text, bm25; image2image for image queries) runs ONCE through ``FusionRetriever.run_one``; its
node hits collapse to assets (best node wins) and are scored on their own, and the very same
lists are fused with ``fuse_results`` – so "fused" is exactly the fusion of the lists scored
above it. Ablations re-run only the retrievers they change and fuse again.

Queries file (JSON lines)::

    {"query": "invoice 4711", "relevant": ["scans/invoice_4711.png"], "type": "doc-keyword",
     "answer": "1,939.00", "id": "q1"}
    {"query_image": "../query_images/cat_flipped.png", "relevant": ["photos/cat.png"]}
    {"query": "...", "relevant": ["docs/manual.pdf#page=5"]}

``relevant`` entries are paths relative to ``--corpus`` (mapped to asset ids through the manifest
after ingesting the corpus; ingest is incremental) or asset ids. ``path#page=N`` makes the label
page-specific: the asset counts only when its best evidence is on page N. ``query_image`` is
resolved against ``--corpus`` first, then the queries file's folder. ``type`` groups queries in
the report (default ``text`` / ``image``); ``answer`` turns on the end-to-end answer check.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from mmrag_li.errors import UsageError
from mmrag_li.evaluation.metrics import mean_metrics, metric_names, query_metrics, recall_curve

log = logging.getLogger("mmrag_li.eval")

SINGLE_RETRIEVERS = ("image", "caption", "ocr", "text", "bm25", "image2image")
ABLATIONS = ("captions", "ocr", "tiling", "rerank")

Unit = Tuple[str, Optional[int]]  # (asset_id, page)


class EvalUsageError(UsageError, ValueError):
    """Bad queries file or arguments (``mmrag eval`` turns it into exit code 2); a ValueError too,
    for callers that caught it as one."""


@dataclass
class EvalQuery:
    qid: str
    text: str = ""
    image: Optional[str] = None  # absolute path
    relevant_raw: List[str] = field(default_factory=list)
    relevant: List[str] = field(default_factory=list)  # labels: asset_id or asset_id#pN
    qtype: str = "text"
    answer: Optional[str] = None
    unresolved: List[str] = field(default_factory=list)

    @property
    def relevant_assets(self) -> List[str]:
        return list(dict.fromkeys(r.split("#p")[0] for r in self.relevant))


# ---- parsing -------------------------------------------------------------------------------------
def parse_ks(spec: str | Sequence[int]) -> List[int]:
    if isinstance(spec, str):
        try:
            ks = [int(x) for x in spec.replace(" ", "").split(",") if x]
        except ValueError:
            raise EvalUsageError(f"--k: expected comma-separated integers like 1,5,10, got {spec!r}") from None
    else:
        ks = [int(x) for x in spec]
    if not ks or any(k < 1 for k in ks):
        raise EvalUsageError(f"--k: every k must be >= 1 (got {spec!r})")
    return sorted(set(ks))


def parse_ablations(spec: str | Sequence[str] | None) -> List[str]:
    if not spec:
        return []
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s and s.strip()]
    if "all" in items:
        return list(ABLATIONS)
    bad = [s for s in items if s not in ABLATIONS]
    if bad:
        raise EvalUsageError(f"--ablate: unknown part(s) {', '.join(bad)} (choose from {', '.join(ABLATIONS)})")
    return list(dict.fromkeys(items))


_PAGE_RE = re.compile(r"#page=(\d+)$")


def load_queries(path: str | Path, corpus: Optional[str | Path] = None) -> List[EvalQuery]:
    """Read and validate the JSON-lines queries file (relevant ids are resolved later)."""
    p = Path(path)
    if not p.is_file():
        raise EvalUsageError(f"queries file not found: {path}")
    base = Path(corpus) if corpus else None
    out: List[EvalQuery] = []
    for lineno, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EvalUsageError(f"{path}:{lineno}: not JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise EvalUsageError(f"{path}:{lineno}: each line must be a JSON object")
        text = str(obj.get("query") or "").strip()
        img = obj.get("query_image")
        if not text and not img:
            raise EvalUsageError(f"{path}:{lineno}: needs \"query\" or \"query_image\"")
        rel = obj.get("relevant")
        if isinstance(rel, str):
            rel = [rel]
        if not rel or not isinstance(rel, list):
            raise EvalUsageError(f"{path}:{lineno}: needs a non-empty \"relevant\" list")
        image_abs = None
        if img:
            cands = [Path(img)] if Path(img).is_absolute() else \
                ([base / img] if base else []) + [p.parent / img, Path(img)]
            found = next((c for c in cands if c.is_file()), None)
            if found is None:
                raise EvalUsageError(f"{path}:{lineno}: query_image not found: {img}")
            image_abs = str(found.resolve())
        out.append(EvalQuery(
            qid=str(obj.get("id") or f"q{lineno}"), text=text, image=image_abs,
            relevant_raw=[str(r) for r in rel], qtype=str(obj.get("type") or ("image" if img else "text")),
            answer=(str(obj["answer"]) if obj.get("answer") not in (None, "") else None)))
    if not out:
        raise EvalUsageError(f"{path}: no queries")
    return out


def resolve_relevant(rag: Any, queries: Sequence[EvalQuery], corpus: Optional[str | Path]) -> None:
    """Map ``relevant`` paths (relative to the corpus) or asset ids to labels."""
    base = Path(corpus) if corpus else Path(".")
    manifest = getattr(rag, "guarded_manifest", None) or rag.manifest  # the tenant guard's rows only
    for q in queries:
        q.relevant, q.unresolved = [], []
        for raw in q.relevant_raw:
            m = _PAGE_RE.search(raw)
            page = int(m.group(1)) if m else None
            ref = raw[: m.start()] if m else raw
            asset = None
            cand = Path(ref) if Path(ref).is_absolute() else base / ref
            if cand.exists():
                rec = manifest.get(str(cand.resolve()))
                asset = rec.asset_id if rec and rec.status == "done" else None
            elif manifest.by_asset(ref):
                asset = ref
            if asset is None:
                q.unresolved.append(raw)
                continue
            label = f"{asset}#p{page}" if page is not None else asset
            if label not in q.relevant:
                q.relevant.append(label)


def labels_for(units: Sequence[Unit], relevant: Sequence[str]) -> List[str]:
    """Ranked (asset, page) units -> labels comparable with the query's relevant labels (``asset#pN``
    when that page is relevant, else the asset, once: a later page of a listed asset keeps its page label).

    Args:
        units: ranked ``(asset_id, page)`` pairs.
        relevant: the query's labels (``asset`` or ``asset#pN``).
    """
    rel = set(relevant)
    out: List[str] = []
    seen = set()
    for aid, page in units:
        page_label = f"{aid}#p{page}"
        out.append(page_label if page_label in rel or aid in seen else aid)
        seen.add(aid)
    return out


def collapse(hits: Sequence[Any], group_by: str = "page") -> List[Unit]:
    """Node hits -> (asset, page) units ranked by their best node (the same rule fusion uses).

    Args:
        hits: one retriever's node hits.
        group_by: "page" or "asset" (``retrieval.group_by``).
    """
    from mmrag_li.retrieval.hits import asset_of, rank_assets

    return [(asset_of(h.node), h.node.metadata.get("page")) for _k, _s, h in rank_assets(hits, group_by)]


# ---- the evaluation --------------------------------------------------------------------------------
class Evaluator:
    """Runs every system on every query and keeps per-query ranked labels and metrics."""

    def __init__(self, rag: Any, ks: Sequence[int], ablations: Sequence[str] = (), baselines: bool = False,
                 answers: bool = True, progress: bool = True):
        self.rag = rag
        self.ks = list(ks)
        self.depth = max(max(self.ks), 10)
        self.ablations = list(ablations)
        self.baselines = baselines
        self.answers = answers
        self.progress = progress
        self.retriever = rag.as_retriever()
        self.cfg = self.retriever.config
        self.per_k = max(self.cfg.per_retriever_k, self.depth)
        # system -> qid -> metrics / curve / ranked sources
        self.rows: Dict[str, Dict[str, Dict[str, float]]] = {}
        self.curves: Dict[str, Dict[str, List[float]]] = {}
        self.latency: Dict[str, List[float]] = {}
        self.per_query: List[Dict[str, Any]] = []
        self.answer_rows: List[Dict[str, Any]] = []
        self._describe_cache: Dict[Tuple[str, bool, bool], str] = {}
        self._baselines: List[Any] = []
        self._source_of: Dict[str, str] = {}

    # -- helpers ------------------------------------------------------------------------------
    def _score(self, system: str, q: EvalQuery, units: Sequence[Unit]) -> Dict[str, Any]:
        labels = labels_for(units[: self.depth], q.relevant)
        m = query_metrics(labels, q.relevant, self.ks, mrr_k=self.depth)
        self.rows.setdefault(system, {})[q.qid] = m
        self.curves.setdefault(system, {})[q.qid] = recall_curve(labels, q.relevant, self.depth)
        rel = set(q.relevant)
        first = next((i for i, lab in enumerate(labels, start=1) if lab in rel), None)
        return {"rank": first, "top": [u[0] for u in units[:3]]}

    def describe(self, image_path: str, captions: bool = True, ocr: bool = True) -> str:
        """Caption + OCR of a query image (what the retriever appends to an image query)."""
        key = (image_path, captions, ocr)
        if key in self._describe_cache:
            return self._describe_cache[key]
        text = self.rag.describe_image(image_path, captions=captions, ocr=ocr)
        self._describe_cache[key] = text
        return text

    def _plan(self, q: EvalQuery, captions: bool = True, ocr: bool = True) -> Tuple[List[str], str]:
        """The retriever's own plan, with the (cached, ablation-aware) query-image description."""
        from llama_index.core.schema import QueryBundle

        names, query_str, _ = self.retriever.plan(QueryBundle(query_str=q.text, image_path=q.image),
                                                  describe=lambda p: self.describe(p, captions, ocr))
        return names, query_str

    def _run(self, names: Sequence[str], query_str: str, image: Optional[str], filters: Any = None,
             timings: Optional[Dict[str, float]] = None) -> Dict[str, List[Any]]:
        out = {}
        for n in names:
            t = time.perf_counter()
            out[n] = self.retriever.run_one(n, query_str, image, filters, self.per_k)
            if timings is not None:
                timings[n] = time.perf_counter() - t
        return out

    def _fuse(self, per: Dict[str, List[Any]], query_str: str, retriever: Any = None) -> List[Unit]:
        r = retriever or self.retriever
        hits = r.fuse_results(per, query_str, top_k=self.depth)
        for h in hits:
            self._source_of.setdefault(h.asset_id, h.source)
        return [(h.asset_id, h.page) for h in hits]

    @staticmethod
    def _not_modality(modality: str):
        from llama_index.core.vector_stores.types import FilterOperator, MetadataFilter, MetadataFilters

        return MetadataFilters(filters=[MetadataFilter(key="modality", value=modality, operator=FilterOperator.NE)])

    # -- one query ------------------------------------------------------------------------------
    def run_query(self, q: EvalQuery) -> None:
        rec: Dict[str, Any] = {"id": q.qid, "type": q.qtype, "query": q.text,
                               "query_image": q.image, "relevant": q.relevant_raw, "ranks": {}}
        names, query_str = self._plan(q)
        timings: Dict[str, float] = {}
        per = self._run(names, query_str, q.image, timings=timings)
        for n in names:
            rec["ranks"][n] = self._score(n, q, collapse(per[n], self.cfg.group_by))["rank"]
        t = time.perf_counter()
        fused_units = self._fuse(per, query_str)
        timings["fusion"] = time.perf_counter() - t
        s = self._score("fused", q, fused_units)
        rec["ranks"]["fused"] = s["rank"]
        rec["fused_top"] = [self._source_of.get(a, a) for a in s["top"]]
        self.latency.setdefault("fused", []).append(sum(timings.values()))
        for n in names:
            self.latency.setdefault(n, []).append(timings[n])

        for abl in self.ablations:
            units = self._ablated(abl, q, per, query_str)
            label = f"fused -{abl}" if abl != "rerank" else self._rerank_label()
            rec["ranks"][label] = self._score(label, q, units)["rank"]
        for b in self._baselines:
            t = time.perf_counter()
            units = b.retrieve(q.text, q.image, self.depth)
            self.latency.setdefault(b.name, []).append(time.perf_counter() - t)
            rec["ranks"][b.name] = self._score(b.name, q, units)["rank"]
        if self.answers and q.answer:
            rec["answer_check"] = self._answer_check(q)
        self.per_query.append(rec)

    def _rerank_label(self) -> str:
        return "fused +rerank" if not self.cfg.rerank else "fused -rerank"

    def _ablated(self, abl: str, q: EvalQuery, per: Dict[str, List[Any]], query_str: str) -> List[Unit]:
        if abl == "rerank":
            other = self.rag.as_retriever(rerank=not self.cfg.rerank)
            return self._fuse(per, query_str, other)
        if abl == "tiling":
            no_crop = self._not_modality("crop")
            changed = self._run([n for n in ("image", "image2image") if n in per], query_str, q.image, no_crop)
            return self._fuse({**per, **changed}, query_str)
        # captions / ocr: drop the retriever, drop that evidence from BM25, and (image queries)
        # from the query image's expansion
        modality = "caption" if abl == "captions" else "ocr"
        names = [n for n in per if n != modality]
        qs = query_str
        new = dict(per)
        new.pop(modality, None)
        if q.image:
            _n, qs = self._plan(q, captions=(abl != "captions"), ocr=(abl != "ocr"))
            if qs != query_str:
                new.update(self._run([n for n in names if n not in ("bm25", "image2image")], qs, q.image))
        if "bm25" in names:
            new.update(self._run(["bm25"], qs, q.image, self._not_modality(modality)))
        return self._fuse(new, qs)

    def _answer_check(self, q: EvalQuery) -> Dict[str, Any]:
        from mmrag_li.evaluation.answers import check_answer

        try:
            t = time.perf_counter()
            resp = self.rag.query(q.text or "What is shown?", image=q.image)
            seconds = time.perf_counter() - t
        except Exception as exc:  # one failing answer must not end the evaluation
            row = {"id": q.qid, "error": f"{type(exc).__name__}: {exc}", "exact": False,
                   "numbers_match": False, "entities_match": False, "citation_contains_answer": False,
                   "citation_relevant": False}
            self.answer_rows.append(row)
            return row
        meta = resp.metadata or {}
        cited = list(dict.fromkeys(c.get("asset_id") if isinstance(c, dict) else c  # objects since issue 11
                                   for c in meta.get("citations") or []))

        def asset_text(aid: str) -> str:
            from llama_index.core.schema import MetadataMode

            from mmrag_li.guard import guarded_stores_of  # the tenant guard: hidden assets have no text

            return "\n".join(n.get_content(MetadataMode.NONE) for n in guarded_stores_of(self.rag).get_asset_nodes(aid))

        row = {"id": q.qid, "type": q.qtype, "question": q.text, "expected": q.answer,
               **check_answer(str(resp.response), q.answer or "", cited, asset_text, q.relevant_assets),
               "verified": bool(meta.get("verified")), "seconds": round(seconds, 3)}
        self.answer_rows.append(row)
        return row

    # -- all queries ------------------------------------------------------------------------------
    def run(self, queries: Sequence[EvalQuery]) -> None:
        from tqdm import tqdm

        if self.baselines:
            from mmrag_li.evaluation.baselines import LlamaIndexDefaultBaseline, SeedBaseline

            self._baselines = [SeedBaseline(self.rag, rrf_k=60, per_list_k=self.per_k),
                               LlamaIndexDefaultBaseline(self.rag, "text"),
                               LlamaIndexDefaultBaseline(self.rag, "ocr")]
        for q in tqdm(queries, desc="eval", unit="query", file=sys.stderr, disable=not self.progress):
            self.run_query(q)

    # -- aggregation ------------------------------------------------------------------------------
    def summary(self, systems: Sequence[str], qids: Optional[set] = None) -> Dict[str, Dict[str, Any]]:
        names = metric_names(self.ks)
        out: Dict[str, Dict[str, Any]] = {}
        for s in systems:
            rows = [m for qid, m in self.rows.get(s, {}).items() if qids is None or qid in qids]
            if not rows:
                continue
            mm = {k: round(v, 4) for k, v in mean_metrics(rows, names).items()}
            mm["queries"] = len(rows)
            out[s] = mm
        return out

    def curve(self, system: str, qids: Optional[set] = None) -> List[float]:
        cs = [c for qid, c in self.curves.get(system, {}).items() if qids is None or qid in qids]
        if not cs:
            return []
        return [round(sum(c[i] for c in cs) / len(cs), 4) for i in range(self.depth)]


def _pct(values: Sequence[float], p: float) -> float:
    if not values:
        return 0.0
    v = sorted(values)
    i = min(len(v) - 1, max(0, int(round(p / 100.0 * (len(v) - 1)))))
    return v[i]


def build_report(ev: Evaluator, queries: Sequence[EvalQuery], skipped: Sequence[Dict[str, Any]],
                 extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    singles = [s for s in SINGLE_RETRIEVERS if s in ev.rows]
    ablation_systems = [s for s in ev.rows if s.startswith("fused ")]
    baseline_systems = [b.name for b in ev._baselines]
    main_metric = f"recall@{max(ev.ks)}" if 5 not in ev.ks else "recall@5"
    report: Dict[str, Any] = {
        "queries": len(queries),
        "k": ev.ks,
        "depth": ev.depth,
        "retrievers": ev.summary(singles),
        "fused": ev.summary(["fused"]).get("fused", {}),
        "ablations": ev.summary(ablation_systems),
        "baselines": ev.summary(baseline_systems),
        "by_type": {},
        "recall_curves": {s: ev.curve(s) for s in singles + ["fused"] + baseline_systems},
        "latency_ms": {s: {"p50": round(_pct(v, 50) * 1000, 1), "p95": round(_pct(v, 95) * 1000, 1)}
                       for s, v in ev.latency.items()},
        "main_metric": main_metric,
        "skipped": list(skipped),
        "per_query": ev.per_query,
    }
    for qtype in sorted({q.qtype for q in queries}):
        qids = {q.qid for q in queries if q.qtype == qtype}
        singles_t = ev.summary(singles, qids)
        fused_t = ev.summary(["fused"], qids).get("fused", {})
        best = max(singles_t, key=lambda s: (singles_t[s][main_metric], singles_t[s]["mrr"])) if singles_t else None
        report["by_type"][qtype] = {
            "queries": len(qids), "retrievers": singles_t, "fused": fused_t,
            "ablations": ev.summary(ablation_systems, qids), "baselines": ev.summary(baseline_systems, qids),
            "best_single": best,
            "fused_minus_best": {m: round(fused_t.get(m, 0) - singles_t[best][m], 4)
                                 for m in metric_names(ev.ks)} if best else {},
        }
    if ev.answer_rows:
        n = len(ev.answer_rows)
        report["answers"] = {
            "queries": n,
            **{k: round(sum(1 for r in ev.answer_rows if r.get(k)) / n, 4)
               for k in ("exact", "numbers_match", "entities_match", "citation_contains_answer",
                         "citation_relevant", "verified")},
            "rows": ev.answer_rows,
        }
    if extra:
        report.update(extra)
    return report


# ---- entry points --------------------------------------------------------------------------------
def evaluate(rag: Any, queries_path: str | Path, corpus: Optional[str | Path] = None, ks: str | Sequence[int] = "1,5,10",
             ablate: str | Sequence[str] | None = None, baselines: bool = False, answers: bool = True,
             ingest: bool = True, progress: bool = True) -> Dict[str, Any]:
    """Evaluate retrieval (and answers) of ``rag`` on a queries file; returns the report dict
    (see :func:`build_report`). ``mmrag eval`` is a thin wrapper around it (in ``mmrag_li.cli``).

    Args:
        rag: an open ``MultiModalRAG`` (or anything with its ``ingest``/``as_retriever``/
            ``manifest``/``query``/``store_dir``).
        queries_path: the JSON-lines queries file (see the module docstring).
        corpus: folder the ``relevant`` paths are relative to; ingested first when ``ingest``.
        ks: cut-offs, ``"1,5,10"`` or a sequence of ints (each >= 1).
        ablate: parts to switch off one at a time: captions, ocr, tiling, rerank (or ``all``).
        baselines: also run the baseline pipelines.
        answers: run the answer check for queries with an ``answer``.
        ingest: ingest ``corpus`` before evaluating (incremental).
        progress: show progress bars on stderr.

    Raises:
        EvalUsageError: a malformed queries file or argument.
    """
    t0 = time.perf_counter()
    ks_l = parse_ks(ks)
    abl = parse_ablations(ablate)
    queries = load_queries(queries_path, corpus)
    extra: Dict[str, Any] = {"store": str(Path(rag.store_dir).resolve())}
    if corpus:
        if not Path(corpus).is_dir():
            raise EvalUsageError(f"--corpus is not a folder: {corpus}")
        extra["corpus"] = str(Path(corpus).resolve())
        if ingest:
            rep = rag.ingest([str(corpus)], progress=progress)
            extra["ingest"] = {"files": rep.files, "skipped_unchanged": rep.skipped_unchanged,
                               "failed": rep.failed, "seconds": round(rep.seconds, 2)}
    resolve_relevant(rag, queries, corpus)
    skipped = []
    usable = []
    for q in queries:
        if q.unresolved:
            log.warning("query %s: relevant id(s) not in the store: %s", q.qid, ", ".join(q.unresolved))
        if q.relevant:
            usable.append(q)
        else:
            skipped.append({"id": q.qid, "reason": "no relevant id resolved: " + ", ".join(q.unresolved)})
    ev = Evaluator(rag, ks_l, abl, baselines, answers, progress)
    ev.run(usable)
    extra["seconds"] = round(time.perf_counter() - t0, 2)
    extra["unresolved"] = {q.qid: q.unresolved for q in queries if q.unresolved}
    return build_report(ev, usable, skipped, extra)
