"""``mmrag`` command line: ingest | inspect | search | query | eval | stats | delete.

Contract (DESIGN.md): ``--json`` prints exactly one JSON document on stdout; progress and logs
go to stderr. Exit codes: 0 ok, 3 some files failed (the rest stored), 1 fatal, 2 usage.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

EXIT_OK, EXIT_FATAL, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2, 3


def _store_dir(args: argparse.Namespace) -> str:
    return args.store or os.environ.get("MMRAG_STORE") or ".mmrag"


def _rag(args: argparse.Namespace, **overrides: Any):
    from mmrag_li.pipeline import MultiModalRAG

    return MultiModalRAG.from_config(getattr(args, "config", None), store_dir=_store_dir(args), **overrides)


def _emit(args: argparse.Namespace, data: Dict[str, Any], human: str) -> None:
    if args.json:  # the real stdout: main() points sys.stdout at stderr while commands run
        out = getattr(args, "stdout", None) or sys.stdout
        out.write(json.dumps(data, ensure_ascii=False, default=str) + "\n")
        out.flush()
    else:
        print(human)


def _rel(path: Optional[str]) -> str:
    if not path:
        return "-"
    try:
        return os.path.relpath(path)
    except ValueError:
        return path


# ---- commands -----------------------------------------------------------------------------
def cmd_ingest(args: argparse.Namespace) -> int:
    rag = _rag(args)
    report = rag.ingest(args.paths, prune=args.prune, workers=args.workers, progress=not args.quiet,
                        collection=args.collection)
    data = report.to_dict()
    lines = [f"Ingested {data['files']} file(s) in {data['seconds']:.1f} s into {data['store']}",
             "  nodes: " + ", ".join(f"{k}={v}" for k, v in data["nodes"].items()),
             f"  unchanged (skipped): {data['skipped_unchanged']}   duplicates: {data['duplicates']}"
             + (f"   pruned: {data['pruned']}" if args.prune else "")]
    if data["stages"]:
        lines.append("  stage seconds: " + ", ".join(f"{k}={v:.2f}" for k, v in data["stages"].items()))
    if data["failed"]:
        lines.append(f"  FAILED {len(data['failed'])} file(s):")
        lines += [f"    {_rel(f['path'])}: {f['reason']}" for f in data["failed"]]
    _emit(args, data, "\n".join(lines))
    rag.close()
    return EXIT_PARTIAL if data["failed"] else EXIT_OK


def cmd_inspect(args: argparse.Namespace) -> int:
    rag = _rag(args)
    data = rag.inspect(args.target)
    if data is None:
        print(f"mmrag: '{args.target}' is not an ingested file or asset id in {_store_dir(args)}", file=sys.stderr)
        return EXIT_FATAL
    lines = [f"asset {data['asset_id']}  source {_rel(data['source'])}  ({len(data['nodes'])} nodes)"]
    for n in data["nodes"]:
        m = n["metadata"]
        head = f"- [{n['modality']}] {n['id']}" + (f"  page {m.get('page')}" if m.get("page") else "")
        if m.get("ocr_engine"):
            head += f"  ocr={m.get('ocr_engine')}/{m.get('ocr_lang')} conf={m.get('ocr_conf')}"
        if m.get("width"):
            head += f"  {m.get('width')}x{m.get('height')}" + (f" @{m.get('dpi')}dpi" if m.get("dpi") else "")
        lines.append(head)
        text = (n["text"] or "").strip().replace("\n", " | ")
        if text:
            lines.append(f"    text: {text[:300]}{'…' if len(text) > 300 else ''}")
        words = m.get("words") or []
        for w in words[:8]:
            lines.append(f"    word {w.get('text')!r} conf={w.get('conf')} bbox={w.get('bbox')}")
        if len(words) > 8:
            lines.append(f"    … {len(words) - 8} more words")
        if m.get("bbox"):
            lines.append(f"    bbox: {m.get('bbox')}")
    _emit(args, data, "\n".join(lines))
    rag.close()
    return EXIT_OK


def _result_rows(hits) -> List[Dict[str, Any]]:
    return [{"asset_id": h.asset_id, "source": h.source, "page": h.page, "score": round(h.score, 6),
             "scores": {k: round(v, 6) for k, v in h.scores.items()}, "ranks": h.ranks} for h in hits]


def _format_results(rows: List[Dict[str, Any]]) -> str:
    if not rows:
        return "no results"
    out = []
    for i, r in enumerate(rows, 1):
        page = f" p.{r['page']}" if r.get("page") else ""
        out.append(f"{i:>2}. {r['score']:.4f}  {_rel(r['source'])}{page}  [{r['asset_id'][:12]}]")
        out.append("      " + "  ".join(f"{k}={v:.3f}(#{r['ranks'].get(k)})" for k, v in r["scores"].items()))
    return "\n".join(out)


def cmd_search(args: argparse.Namespace) -> int:
    if not args.text and not args.image:
        print("mmrag search: give TEXT and/or --image PATH", file=sys.stderr)
        return EXIT_USAGE
    if args.image and not Path(args.image).exists():
        print(f"mmrag search: image not found: {args.image}", file=sys.stderr)
        return EXIT_USAGE
    rag = _rag(args)
    hits = rag.retrieve(args.text or "", image=args.image, k=args.k)
    rows = _result_rows(hits)
    _emit(args, {"results": rows}, _format_results(rows))
    rag.close()
    return EXIT_OK


def cmd_query(args: argparse.Namespace) -> int:
    if args.image and not Path(args.image).exists():
        print(f"mmrag query: image not found: {args.image}", file=sys.stderr)
        return EXIT_USAGE
    overrides: Dict[str, Any] = {}
    if args.llm_model:
        overrides["llm.model"] = args.llm_model
    if args.llm_base_url:
        overrides["llm.backend"] = "openai_like"
        overrides["llm.api_base"] = args.llm_base_url
    elif os.environ.get("OPENAI_API_KEY") and not args.extractive:
        overrides["llm.backend"] = "openai"
    if args.k:
        overrides["llm.evidence_k"] = args.k
        overrides["retrieval.top_k"] = args.k
    rag = _rag(args, **overrides)
    resp = rag.query(args.question, image=args.image)
    meta = resp.metadata or {}
    hits_by_asset: Dict[str, Dict[str, Any]] = {}
    for e in meta.get("evidence", []):
        hits_by_asset.setdefault(e["asset_id"], {"asset_id": e["asset_id"], "source": e.get("source"),
                                                 "page": e.get("page"), "score": e.get("score"),
                                                 "scores": e.get("scores", {}), "evidence_id": e.get("id")})
    data = {"answer": str(resp.response), "citations": meta.get("citations", []),
            "citation_ids": meta.get("citation_ids", []), "verified": bool(meta.get("verified")),
            "verification": meta.get("verification", []), "sources": list(hits_by_asset.values()),
            "extractive": meta.get("extractive"), "timings": meta.get("timings", {})}
    lines = [data["answer"], "", f"verified: {data['verified']}"]
    lines += [f"  - {r}" for r in data["verification"]]
    lines.append("sources:")
    for s in data["sources"]:
        mark = "*" if s["asset_id"] in data["citations"] else " "
        page = f" p.{s['page']}" if s.get("page") else ""
        score = f"  score={s['score']:.4f}" if s.get("score") is not None else ""
        lines.append(f" {mark}[{s.get('evidence_id')}] {_rel(s['source'])}{page}{score}")
    _emit(args, data, "\n".join(lines))
    rag.close()
    return EXIT_OK


def cmd_eval(args: argparse.Namespace) -> int:
    from mmrag_li.evaluation.harness import run_eval_cli

    return run_eval_cli(args)


def cmd_stats(args: argparse.Namespace) -> int:
    rag = _rag(args)
    data = rag.stats()
    human = (f"store {data['store']} ({data['backend']}): {data['assets']} assets\n"
             + "\n".join(f"  {k}: {v}" for k, v in data["nodes"].items())
             + ("\n  files: " + ", ".join(f"{k}={v}" for k, v in data["files"].items()) if data["files"] else ""))
    _emit(args, data, human)
    rag.close()
    return EXIT_OK


def cmd_delete(args: argparse.Namespace) -> int:
    rag = _rag(args)
    asset = rag.resolve_asset(args.target)
    if asset is None:
        print(f"mmrag delete: unknown file or asset id '{args.target}'", file=sys.stderr)
        return EXIT_FATAL
    n = rag.delete(asset)
    _emit(args, {"asset_id": asset, "deleted_nodes": n}, f"deleted {n} node(s) of asset {asset}")
    rag.close()
    return EXIT_OK


# ---- parser ----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--store", help="store directory (default: $MMRAG_STORE or ./.mmrag)")
    common.add_argument("--config", help="YAML config (default: built-in offline defaults)")
    common.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    common.add_argument("-v", "--verbose", action="store_true", help="log to stderr")

    p = argparse.ArgumentParser(prog="mmrag", description="Multimodal RAG over images, PDFs and text.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("ingest", parents=[common], help="read, enrich, embed and store files")
    s.add_argument("paths", nargs="+")
    s.add_argument("--prune", action="store_true", help="delete nodes of files that no longer exist")
    s.add_argument("--workers", type=int, default=None)
    s.add_argument("--collection", default=None,
                   help="collection (tenant) stamped on every node (default: ingest.collection)")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_ingest)

    s = sub.add_parser("inspect", parents=[common], help="show what was extracted from a file")
    s.add_argument("target", metavar="PATH_OR_ASSET_ID")
    s.set_defaults(func=cmd_inspect)

    s = sub.add_parser("search", parents=[common], help="ranked assets with per-retriever scores")
    s.add_argument("text", nargs="?", default="")
    s.add_argument("--image", help="query by image")
    s.add_argument("--k", type=int, default=5)
    s.set_defaults(func=cmd_search)

    s = sub.add_parser("query", parents=[common], help="cited, verified answer")
    s.add_argument("question")
    s.add_argument("--image")
    s.add_argument("--k", type=int, default=None, help="evidence items handed to the LLM")
    s.add_argument("--llm-base-url", help="OpenAI-compatible server (vLLM, Ollama, llama.cpp, LM Studio)")
    s.add_argument("--llm-model", help="model name for the LLM backend")
    s.add_argument("--extractive", action="store_true", help="force the offline extractive answerer")
    s.set_defaults(func=cmd_query)

    s = sub.add_parser("eval", parents=[common], help="retrieval quality per retriever and fused")
    s.add_argument("--queries", required=True, help="JSON lines: {query|query_image, relevant, answer?}")
    s.add_argument("--corpus", help="folder the relevant paths are relative to (ingested if needed)")
    s.add_argument("--k", default="1,5,10")
    s.add_argument("--ablate", default="", help="comma list of captions,ocr,tiling,rerank")
    s.add_argument("--out", help="folder for report.json, report.md and recall.png")
    s.add_argument("--baselines", action="store_true", help="also run the baseline pipelines")
    s.set_defaults(func=cmd_eval)

    s = sub.add_parser("stats", parents=[common], help="assets and nodes per collection")
    s.set_defaults(func=cmd_stats)

    s = sub.add_parser("delete", parents=[common], help="remove one asset from every collection")
    s.add_argument("target", metavar="PATH_OR_ASSET_ID")
    s.set_defaults(func=cmd_delete)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        # Libraries that print to stdout must not corrupt --json output.
        if args.json:
            args.stdout, sys.stdout = sys.stdout, sys.stderr
            try:
                return args.func(args)
            finally:
                sys.stdout = args.stdout
        return args.func(args)
    except KeyboardInterrupt:
        print("mmrag: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # fatal: say what and why, no traceback unless -v
        if args.verbose:
            logging.exception("fatal")
        print(f"mmrag {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_FATAL


if __name__ == "__main__":
    sys.exit(main())
