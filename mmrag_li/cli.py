"""``mmrag`` command line: ingest | inspect | search | query | eval | stats | delete | gc | serve.

Thin on purpose: parse, open the facade (``with MultiModalRAG.from_config(...) as rag``), call it,
print. Contract (../DESIGN.md, "Command-line contract"): ``--json`` prints exactly one JSON
document on stdout; progress, prompts and errors go to stderr. Exit codes: 0 ok, 3 some files
failed (the rest stored), 1 fatal (including "no store here"), 2 usage. An error is one line that
names the file or key and how to recover; ``--verbose`` adds the traceback.

Read-only commands (search, query, inspect, stats, delete; eval without ``--corpus``) never
create a store: on a directory without one they exit 1 and leave the disk as it was. ``search``
and ``query`` with ``--server URL`` (or ``$MMRAG_SERVER``) ask a running ``mmrag serve`` instead
(its JSON is the same document, built by :mod:`mmrag_li.present`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

from mmrag_li.assets import AssetNotFoundError, MIN_ASSET_PREFIX, UsageError, require_store
from mmrag_li.cli_format import (clean, format_answer, format_eval_done, format_gc, format_ingest, format_inspect,
                                 format_results, format_stats)
from mmrag_li.errors import ConfigError, MMRAGError
from mmrag_li.present import query_json, search_json

EXIT_OK, EXIT_FATAL, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2, 3

log = logging.getLogger("mmrag_li.cli")


# ---- plumbing ------------------------------------------------------------------------------
def store_dir(args: argparse.Namespace) -> str:
    """The store directory: ``--store``, else ``$MMRAG_STORE``, else ``./.mmrag``."""
    return getattr(args, "store", None) or os.environ.get("MMRAG_STORE") or ".mmrag"


def open_rag(args: argparse.Namespace, need_store: bool = True, **overrides: Any):
    """The facade for this command (use it as a context manager). With ``need_store`` a missing
    store raises :class:`~mmrag_li.assets.StoreNotFoundError` before anything is created."""
    where = store_dir(args)
    if need_store:
        require_store(where)
    from mmrag_li.pipeline import MultiModalRAG

    return MultiModalRAG.from_config(getattr(args, "config", None), store_dir=where, **overrides)


def emit(args: argparse.Namespace, data: Dict[str, Any], human: str) -> None:
    """Print ``data`` as one JSON document (``--json``) or ``human`` (control characters escaped)."""
    if args.json:  # the real stdout: main() points sys.stdout at stderr while commands run
        out = getattr(args, "stdout", None) or sys.stdout
        out.write(json.dumps(data, ensure_ascii=False, default=str) + "\n")
        out.flush()
    else:
        print(clean(human, keep_newlines=True))


def query_image(path: Optional[str]) -> Optional[str]:
    """Check ``--image PATH`` before any model loads: one existing image file, not a PDF or folder."""
    if not path:
        return None
    p = Path(path)
    shown = clean(path)
    if not p.exists():
        raise UsageError(f"--image {shown}: no such file")
    if p.is_dir():
        raise UsageError(f"--image {shown}: is a directory; give one image file (PNG, JPEG, WebP, TIFF, BMP, GIF)")
    if not p.is_file():
        raise UsageError(f"--image {shown}: not a regular file")
    from mmrag_li.readers.sniff import sniff_type

    try:
        kind = sniff_type(p)
    except OSError as exc:
        raise UsageError(f"--image {shown}: cannot read it ({exc.strerror or exc})") from None
    if kind == "pdf":
        raise UsageError(f"--image {shown}: is a PDF, not an image; search its text with `mmrag search TEXT` "
                         "(after `mmrag ingest`), or render the page to PNG first")
    if kind != "image":
        raise UsageError(f"--image {shown}: is not an image ({getattr(kind, 'mime', kind)}); "
                         "give a PNG, JPEG, WebP, TIFF, BMP or GIF file")
    return str(p)


def check_asset_text(target: str) -> None:
    """An asset id prefix shorter than the minimum is a usage error even before the store is asked
    (the facade's ``resolve_asset`` applies the full rule: unambiguous, visible collections only)."""
    t = target.strip().lower()
    if t and not Path(target).exists() and all(c in "0123456789abcdef" for c in t) and len(t) < MIN_ASSET_PREFIX:
        raise UsageError(f"asset id prefix {target!r} is too short: give at least {MIN_ASSET_PREFIX} "
                         "hex characters (see `mmrag inspect FILE` for the full id)")


def resolve(rag: Any, target: str) -> str:
    """The asset id ``target`` (a file path or asset id/prefix) names, or an error."""
    check_asset_text(target)
    asset = rag.resolve_asset(target)
    if asset is None:
        raise AssetNotFoundError(target, store_dir_of(rag))
    return asset


def store_dir_of(rag: Any) -> str:
    return clean(str(getattr(rag, "store_dir", "")))


def server(args: argparse.Namespace) -> Optional[str]:
    """``--server URL`` or ``$MMRAG_SERVER``: the running ``mmrag serve`` to ask, else None."""
    from mmrag_li.server.client import server_url

    return server_url(getattr(args, "server", None))


# ---- commands -----------------------------------------------------------------------------
def cmd_ingest(args: argparse.Namespace) -> int:
    with open_rag(args, need_store=False) as rag:
        report = rag.ingest(args.paths, prune=args.prune, workers=args.workers, progress=not args.quiet,
                            collection=args.collection, executor=args.executor, ray_address=args.ray_address)
    data = report.to_dict()
    emit(args, data, format_ingest(data, prune=args.prune))
    return EXIT_PARTIAL if data["failed"] else EXIT_OK


def cmd_inspect(args: argparse.Namespace) -> int:
    with open_rag(args) as rag:
        data = rag.inspect(resolve(rag, args.target))
        if data is None:
            raise AssetNotFoundError(args.target, store_dir_of(rag))
    emit(args, data, format_inspect(data))
    return EXIT_OK


def cmd_search(args: argparse.Namespace) -> int:
    text = (args.text or "").strip()
    if not text and not args.image:
        raise UsageError("give TEXT and/or --image PATH")
    image = query_image(args.image)
    url = server(args)
    if url:  # a running `mmrag serve` computes it with its warm models
        from mmrag_li.server.client import ServerClient

        data = ServerClient(url).search(text, image=image, k=args.k)
    else:
        with open_rag(args) as rag:
            data = search_json(rag.retrieve(text, image=image, k=args.k))
    emit(args, data, format_results(data["results"]))
    return EXIT_OK


def cmd_query(args: argparse.Namespace) -> int:
    question = (args.question or "").strip()
    if not question:
        raise UsageError("give a QUESTION (it is empty)")
    image = query_image(args.image)
    url = server(args)
    if url:
        if args.llm_base_url or args.llm_model or args.extractive:
            raise UsageError("--llm-base-url/--llm-model/--extractive configure the server's LLM: "
                             "set llm.* in the config `mmrag serve` reads")
        from mmrag_li.server.client import ServerClient

        data = ServerClient(url).query(question, image=image, k=args.k)
        emit(args, data, format_answer(data))
        return EXIT_OK
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
    with open_rag(args, **overrides) as rag:
        data = query_json(rag.query(question, image=image))
    emit(args, data, format_answer(data))
    return EXIT_OK


def cmd_eval(args: argparse.Namespace) -> int:
    from mmrag_li.evaluation.harness import EvalUsageError, evaluate, load_queries, parse_ablations, parse_ks
    from mmrag_li.evaluation.report import render_markdown, write_outputs

    # every usage check before a model loads or a store opens (EvalUsageError is a UsageError: exit 2)
    ks = parse_ks(args.k or "1,5,10")
    abl = parse_ablations(args.ablate or "")
    if args.corpus and not Path(args.corpus).is_dir():
        raise EvalUsageError(f"--corpus is not a folder: {args.corpus}")
    load_queries(args.queries, args.corpus)
    from mmrag_li.evaluation.tune import fusion_overrides

    overrides = fusion_overrides(args.fusion, args.fusion_model)
    with open_rag(args, need_store=not args.corpus, **overrides) as rag:
        report = evaluate(rag, args.queries, args.corpus, ks, abl, baselines=args.baselines, progress=True)
    md = render_markdown(report)
    if args.out:
        report["written"] = write_outputs(report, md, args.out)
        print(format_eval_done(report["written"]), file=sys.stderr)
    emit(args, report, md)
    return EXIT_OK


def cmd_tune(args: argparse.Namespace) -> int:
    from mmrag_li.evaluation.tune import check_tune_args, format_tune, run_tune

    check_tune_args(args.queries, args.corpus, args.folds, args.k)  # usage errors (exit 2) before any load
    with open_rag(args, need_store=not args.corpus) as rag:
        report = run_tune(rag, args.queries, args.corpus, args.out, args.folds, args.k, args.seed, progress=True)
    emit(args, report, format_tune(report))
    return EXIT_OK


def cmd_stats(args: argparse.Namespace) -> int:
    with open_rag(args) as rag:
        data = rag.stats()
    emit(args, data, format_stats(data))
    return EXIT_OK


def confirm_delete(args: argparse.Namespace, rag: Any, asset: str) -> bool:
    """Ask on the terminal; refuse (usage error) when nobody can answer and ``--yes`` is missing."""
    if args.yes:
        return True
    if not (sys.stdin and sys.stdin.isatty()):
        raise UsageError(f"not deleting asset {asset} without confirmation: stdin is not a terminal; "
                         "pass --yes to delete it")
    info = rag.inspect(asset) or {}
    sys.stderr.write(f"delete asset {asset} ({clean(info.get('source'))}, {len(info.get('nodes') or [])} "
                     f"nodes) from {store_dir_of(rag)}? [y/N] ")
    sys.stderr.flush()
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def cmd_delete(args: argparse.Namespace) -> int:
    with open_rag(args) as rag:
        asset = resolve(rag, args.target)
        if not confirm_delete(args, rag, asset):
            print("mmrag delete: not deleted", file=sys.stderr)
            return EXIT_FATAL
        n = rag.delete(asset)
    emit(args, {"asset_id": asset, "deleted_nodes": n}, f"deleted {n} node(s) of asset {asset}")
    return EXIT_OK


def cmd_gc(args: argparse.Namespace) -> int:
    with open_rag(args) as rag:
        data = rag.gc(grace_s=args.grace)
    emit(args, data, format_gc(data))
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from mmrag_li.server.run import serve

    serve(host=args.host, port=args.port, store_dir=store_dir(args), config=getattr(args, "config", None),
          log_level="info" if args.verbose else "warning")
    return EXIT_OK


# ---- parser ----------------------------------------------------------------------------------
def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1 (``--k 0`` and negatives are usage errors)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def port_number(text: str) -> int:
    """argparse type: a TCP port, 0-65535 (0 = any free port)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0-65535, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The ``mmrag`` argument parser (one sub-command per facade call)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--store", help="store directory (default: $MMRAG_STORE or ./.mmrag)")
    common.add_argument("--config", help="YAML config path or preset name (default: built-in offline defaults)")
    common.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    common.add_argument("-v", "--verbose", action="store_true",
                        help="log to stderr, show model-loading progress and tracebacks")

    p = argparse.ArgumentParser(prog="mmrag", description="Multimodal RAG over images, PDFs and text.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("ingest", parents=[common], help="read, enrich, embed and store files")
    s.add_argument("paths", nargs="+")
    s.add_argument("--prune", action="store_true", help="delete nodes of files that no longer exist")
    s.add_argument("--workers", type=positive_int, default=None)
    s.add_argument("--collection", default=None,
                   help="collection (tenant) stamped on every node (default: ingest.collection)")
    s.add_argument("--executor", choices=["local", "ray"], default=None,
                   help="local threads, or a Ray cluster (pip install mmrag_li[ray]); default: ingest.executor")
    s.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="Ray cluster for --executor ray (host:port; default: ingest.ray.address, $RAY_ADDRESS, "
                        "else a local Ray for the run)")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_ingest)

    s = sub.add_parser("inspect", parents=[common], help="show what was extracted from a file")
    s.add_argument("target", metavar="PATH_OR_ASSET_ID",
                   help=f"an ingested file, or an asset id (a unique prefix of >= {MIN_ASSET_PREFIX} characters)")
    s.set_defaults(func=cmd_inspect)

    s = sub.add_parser("search", parents=[common], help="ranked hits with per-retriever scores")
    s.add_argument("text", nargs="?", default="")
    s.add_argument("--image", help="query by image (one PNG/JPEG/WebP/TIFF/BMP/GIF file)")
    s.add_argument("--k", type=positive_int, default=5, help="number of results (>= 1)")
    s.add_argument("--server", default=None, help="URL of a running `mmrag serve` (default: $MMRAG_SERVER); "
                   "it computes the result with its warm models")
    s.set_defaults(func=cmd_search)

    s = sub.add_parser("query", parents=[common], help="cited, verified answer")
    s.add_argument("question")
    s.add_argument("--image", help="a picture the question is about")
    s.add_argument("--k", type=positive_int, default=None, help="evidence items handed to the LLM (>= 1)")
    s.add_argument("--llm-base-url", help="OpenAI-compatible server (vLLM, Ollama, llama.cpp, LM Studio)")
    s.add_argument("--llm-model", help="model name for the LLM backend")
    s.add_argument("--extractive", action="store_true", help="force the offline extractive answerer")
    s.add_argument("--server", default=None, help="URL of a running `mmrag serve` (default: $MMRAG_SERVER); "
                   "it computes the result with its warm models")
    s.set_defaults(func=cmd_query)

    s = sub.add_parser("eval", parents=[common], help="retrieval quality per retriever and fused")
    s.add_argument("--queries", required=True, help="JSON lines: {query|query_image, relevant, answer?}")
    s.add_argument("--corpus", help="folder the relevant paths are relative to (ingested if needed)")
    s.add_argument("--k", default="1,5,10", help="cut-offs for Recall@k and NDCG@k, comma-separated")
    s.add_argument("--ablate", default="", help="comma list of captions,ocr,tiling,rerank")
    s.add_argument("--out", help="folder for report.json, report.md and recall.png")
    s.add_argument("--baselines", action="store_true", help="also run the baseline pipelines")
    s.add_argument("--fusion", choices=["calibrated", "rrf", "weighted", "score_aware", "learned"],
                   help="evaluate with this fusion instead of the configured one")
    s.add_argument("--fusion-model", help="learned fusion model file (from `mmrag tune --out`); implies --fusion learned")
    s.set_defaults(func=cmd_eval)

    s = sub.add_parser("tune", parents=[common], help="learn the fusion from labelled queries (cross-validated)")
    s.add_argument("--queries", required=True, help="JSON lines, the `mmrag eval` format")
    s.add_argument("--corpus", help="folder the relevant paths are relative to (ingested if needed)")
    s.add_argument("--out", help="write the fusion model (JSON) here")
    s.add_argument("--folds", type=int, default=5, help="cross-validation folds (>= 2)")
    s.add_argument("--k", default="1,5,10", help="cut-offs for Recall@k, comma-separated")
    s.add_argument("--seed", type=int, default=0, help="fold assignment seed")
    s.set_defaults(func=cmd_tune)

    s = sub.add_parser("stats", parents=[common], help="assets and nodes per collection")
    s.set_defaults(func=cmd_stats)

    s = sub.add_parser("delete", parents=[common], help="remove one asset (nodes, blobs, old table versions)")
    s.add_argument("target", metavar="PATH_OR_ASSET_ID",
                   help=f"an ingested file, or an asset id (a unique prefix of >= {MIN_ASSET_PREFIX} characters)")
    s.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    s.set_defaults(func=cmd_delete)

    s = sub.add_parser("gc", parents=[common], help="remove blobs no stored node uses and old table versions")
    s.add_argument("--grace", type=float, default=None, metavar="SECONDS",
                   help="keep unreferenced blobs younger than this (default store.gc_grace_s)")
    s.set_defaults(func=cmd_gc)

    s = sub.add_parser("serve", parents=[common], help="HTTP API + web page over the store (models load once)")
    s.add_argument("--host", default=None,
                   help="interface to bind (default 127.0.0.1; 0.0.0.0 = the network, prints a warning)")
    s.add_argument("--port", type=port_number, default=None, help="port (default 8765; 0 = any free port)")
    s.set_defaults(func=cmd_serve)
    return p


def quiet_libraries(verbose: bool) -> None:
    """Keep model-loading chatter ("Loading weights" bars, advisory warnings) off stderr unless
    ``--verbose``. Must run before transformers / huggingface_hub are imported; also switches the
    bars off in-process when they already are (the ingest progress bar is our own and stays)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if verbose:
        return
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    if "huggingface_hub" in sys.modules:
        sys.modules["huggingface_hub"].utils.disable_progress_bars()
    if "transformers" in sys.modules:
        tlog = sys.modules["transformers"].utils.logging
        tlog.disable_progress_bar()
        tlog.set_verbosity_error()


def one_line(exc: BaseException) -> str:
    """An exception as one printable line (multi-line messages are joined with '; ')."""
    parts = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return clean("; ".join(parts) or type(exc).__name__)


def main(argv: Optional[List[str]] = None) -> int:
    """Run ``mmrag`` with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    args = build_parser().parse_args(argv)
    quiet_libraries(args.verbose)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    real_stdout = sys.stdout
    try:
        if args.json:  # libraries that print to stdout must not corrupt --json output
            args.stdout, sys.stdout = real_stdout, sys.stderr
        return args.func(args)
    except KeyboardInterrupt:
        print("mmrag: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `mmrag search ... | head`: the reader left; say nothing more
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FATAL
    except (UsageError, ConfigError) as exc:  # a bad argument, a config typo: exit 2
        if args.verbose:
            log.exception("usage")
        print(f"mmrag {args.command}: {one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except MMRAGError as exc:
        if args.verbose:
            log.exception("fatal")
        print(f"mmrag {args.command}: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_FATAL
    except Exception as exc:  # fatal: say what and why, no traceback unless -v
        if args.verbose:
            log.exception("fatal")
        hint = "" if args.verbose else " (run with --verbose for the traceback)"
        print(f"mmrag {args.command}: error: {type(exc).__name__}: {one_line(exc)}{hint}", file=sys.stderr)
        return EXIT_FATAL
    finally:
        sys.stdout = real_stdout


if __name__ == "__main__":
    sys.exit(main())
