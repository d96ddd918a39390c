"""The eval report as Markdown, JSON and a Recall@k plot (``report.md``, ``report.json``, ``recall.png``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from mmrag_li.evaluation.metrics import metric_names


def _table(rows: Dict[str, Dict[str, Any]], names: Sequence[str], first: str = "system",
           bold: Optional[str] = None) -> List[str]:
    head = [first, "n"] + list(names)
    out = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for name, m in rows.items():
        cells = [f"**{name}**" if name == bold else name, str(m.get("queries", ""))]
        cells += [f"{m[n]:.3f}" if isinstance(m.get(n), (int, float)) else "" for n in names]
        out.append("| " + " | ".join(cells) + " |")
    return out


def render_markdown(report: Dict[str, Any]) -> str:
    ks = report.get("k", [1, 5, 10])
    names = metric_names(ks)
    main = report.get("main_metric", "recall@5")
    lines = [f"# Retrieval evaluation ({report.get('queries', 0)} queries, k = {', '.join(map(str, ks))}, "
             f"MRR@{report.get('depth', max(ks))})", ""]
    rows: Dict[str, Dict[str, Any]] = dict(report.get("retrievers", {}))
    if report.get("fused"):
        rows["fused"] = report["fused"]
    rows.update(report.get("baselines", {}))
    lines += _table(rows, names, bold="fused")
    if report.get("ablations"):
        lines += ["", "## Ablations (fused, one part changed)", ""]
        ab = {"fused": report["fused"], **report["ablations"]}
        lines += _table(ab, names, bold="fused")
    by_type = report.get("by_type") or {}
    if by_type:
        lines += ["", f"## By query type ({main} / MRR)", ""]
        systems: List[str] = []
        for t in by_type.values():
            for s in list(t["retrievers"]) + ["fused"] + list(t.get("baselines", {})):
                if s not in systems:
                    systems.append(s)
        lines.append("| type | n | " + " | ".join(systems) + " | best single | fused − best |")
        lines.append("|---|---:|" + "---:|" * len(systems) + "---|---:|")
        for qtype, t in by_type.items():
            allrows = {**t["retrievers"], "fused": t["fused"], **t.get("baselines", {})}
            cells = []
            for s in systems:
                m = allrows.get(s)
                cells.append(f"{m[main]:.2f} / {m['mrr']:.2f}" if m else "–")
            best = t.get("best_single") or "–"
            delta = (t.get("fused_minus_best") or {}).get(main)
            tail = f" | {best} | {delta:+.2f} |" if delta is not None else " | – | – |"
            lines.append(f"| {qtype} | {t['queries']} | " + " | ".join(cells) + tail)
    ans = report.get("answers")
    if ans:
        lines += ["", f"## Answers ({ans['queries']} queries with an expected answer, offline query engine)", "",
                  "| exact (numbers+entities) | numbers | entities | cited item contains answer | cited item relevant | verified |",
                  "|---:|---:|---:|---:|---:|---:|",
                  f"| {ans['exact']:.2f} | {ans['numbers_match']:.2f} | {ans['entities_match']:.2f} | "
                  f"{ans['citation_contains_answer']:.2f} | {ans['citation_relevant']:.2f} | {ans['verified']:.2f} |"]
    lat = report.get("latency_ms") or {}
    if lat:
        lines += ["", "## Latency per query (ms, p50 / p95)", "",
                  "| system | p50 | p95 |", "|---|---:|---:|"]
        lines += [f"| {s} | {v['p50']:.1f} | {v['p95']:.1f} |" for s, v in lat.items()]
    if report.get("skipped"):
        lines += ["", f"Skipped {len(report['skipped'])} queries: "
                  + "; ".join(f"{s['id']} ({s['reason']})" for s in report["skipped"][:10])]
    misses = [q for q in report.get("per_query", []) if q["ranks"].get("fused") is None]
    if misses:
        lines += ["", f"## Fused misses (no relevant item in the top {report.get('depth')})", ""]
        for q in misses[:30]:
            what = q["query"] or os.path.basename(q.get("query_image") or "")
            lines.append(f"- `{q['id']}` [{q['type']}] {what!r} → top: "
                         + ", ".join(os.path.basename(s) for s in q.get("fused_top", [])))
    return "\n".join(lines) + "\n"


def plot_recall(report: Dict[str, Any], path: str | Path) -> Optional[str]:
    """Recall@k for k = 1..depth, one line per retriever, fused and baselines."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # matplotlib is a dev extra
        return None
    curves = {s: c for s, c in (report.get("recall_curves") or {}).items() if c}
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(9.5, 5.0), dpi=120)
    baselines = set(report.get("baselines") or {})
    for s, c in curves.items():
        ks = list(range(1, len(c) + 1))
        if s == "fused":
            ax.plot(ks, c, color="black", linewidth=2.8, marker="o", markersize=4, label="fused", zorder=5)
        elif s in baselines:
            ax.plot(ks, c, linestyle="--", linewidth=1.6, label=f"baseline: {s}")
        else:
            n = (report.get("retrievers", {}).get(s) or {}).get("queries")
            ax.plot(ks, c, linewidth=1.4, marker=".", label=f"{s} (n={n})" if n else s)
    ax.set_xlabel("k")
    ax.set_ylabel("Recall@k")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(1, max(len(c) for c in curves.values()))
    ax.set_xticks(list(range(1, max(len(c) for c in curves.values()) + 1)))
    ax.grid(True, alpha=0.3)
    ax.set_title(f"Recall@k per retriever ({report.get('queries', 0)} queries)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return str(path)


def write_outputs(report: Dict[str, Any], markdown: str, out_dir: str | Path) -> List[str]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    (out / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False, default=str) + "\n")
    written.append(str(out / "report.json"))
    (out / "report.md").write_text(markdown)
    written.append(str(out / "report.md"))
    png = plot_recall(report, out / "recall.png")
    if png:
        written.append(png)
    return written
