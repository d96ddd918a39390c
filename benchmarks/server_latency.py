"""Warm ``/api/search`` of ``mmrag serve`` vs one cold ``mmrag search`` CLI run, in one run.

    python benchmarks/server_latency.py --data examples/data --n 50 \
        --json benchmarks/results/server_latency.json

1. Ingests ``--data`` into ``--store`` (a temporary folder by default; not timed against anything).
2. Cold CLI: ``mmrag search QUERY --json`` in a fresh process (imports + model loading + search),
   wall time, ``--cold`` runs (default 1).
3. Server: starts ``mmrag serve`` on 127.0.0.1 in a fresh process, times start-up until
   ``/healthz`` is ready, sends 3 warm-up searches, then ``--n`` timed ``GET /api/search``
   (queries cycle through a fixed list; each is an HTTP round trip from this process),
   and ``--cli-server`` runs of ``mmrag search --server URL --json`` (a fresh CLI process that
   asks the warm server).
Prints p50/p95 and writes them to ``--json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Dict, List

REPO = Path(__file__).resolve().parent.parent
QUERIES = ["invoice total", "quarterly report revenue", "delivery note", "a cat", "coffee cup",
           "field notes office", "INVOICE 4711", "payment terms"]


def cli(*args: str, env: Dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mmrag_li.cli", *args], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=1200)


def pct(values: List[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def summary(values: List[float]) -> Dict[str, float]:
    return {"n": len(values), "p50_ms": round(pct(values, 0.5) * 1000, 1), "p95_ms": round(pct(values, 0.95) * 1000, 1),
            "mean_ms": round(statistics.fmean(values) * 1000, 1), "max_ms": round(max(values) * 1000, 1)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, timeout: float = 300) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def wait_ready(base: str, server: subprocess.Popen, limit_s: float = 900) -> bool:
    """Poll ``/healthz`` until the server says ready (True) or exits / ``limit_s`` passes (False)."""
    t = time.perf_counter()
    while True:
        try:
            if get(base + "/healthz", timeout=5).get("ready"):
                return True
        except Exception:
            pass
        if server.poll() is not None or time.perf_counter() - t > limit_s:
            return False
        time.sleep(0.2)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(REPO / "examples" / "data"))
    ap.add_argument("--store", default=None, help="store folder (default: a temporary one)")
    ap.add_argument("--n", type=int, default=50, help="timed warm /api/search requests")
    ap.add_argument("--cold", type=int, default=1, help="cold `mmrag search` runs")
    ap.add_argument("--cli-server", type=int, default=5, help="`mmrag search --server` runs")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args()

    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.pop("MMRAG_SERVER", None)
    store = Path(args.store or tempfile.mkdtemp(prefix="mmrag-server-bench-")) / "store"
    t = time.perf_counter()
    proc = cli("ingest", args.data, "--store", str(store), "--json", "--quiet", env=env)
    if proc.returncode not in (0, 3):
        print(proc.stderr[-3000:], file=sys.stderr)
        return 1
    ingest_s = time.perf_counter() - t
    print(f"ingest: {ingest_s:.1f} s ({store})", file=sys.stderr)

    cold: List[float] = []
    for i in range(args.cold):
        t = time.perf_counter()
        proc = cli("search", QUERIES[0], "--store", str(store), "--k", str(args.k), "--json", env=env)
        cold.append(time.perf_counter() - t)
        assert proc.returncode == 0, proc.stderr[-2000:]
        print(f"cold CLI search #{i + 1}: {cold[-1]:.2f} s", file=sys.stderr)

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    t = time.perf_counter()
    server = subprocess.Popen([sys.executable, "-m", "mmrag_li.cli", "serve", "--store", str(store),
                               "--port", str(port)], env=env, cwd=REPO, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        if not wait_ready(base, server):
            print("mmrag serve did not become ready", file=sys.stderr)
            return 1
        startup_s = time.perf_counter() - t
        print(f"server ready after {startup_s:.1f} s", file=sys.stderr)
        for q in QUERIES[:3]:
            get(base + "/api/search?" + urllib.parse.urlencode({"q": q, "k": args.k}))
        warm: List[float] = []
        for i in range(args.n):
            url = base + "/api/search?" + urllib.parse.urlencode({"q": QUERIES[i % len(QUERIES)], "k": args.k})
            t = time.perf_counter()
            data = get(url)
            warm.append(time.perf_counter() - t)
            assert "results" in data
        via: List[float] = []
        for i in range(args.cli_server):
            t = time.perf_counter()
            proc = cli("search", QUERIES[i % len(QUERIES)], "--server", base, "--k", str(args.k), "--json", env=env)
            via.append(time.perf_counter() - t)
            assert proc.returncode == 0, proc.stderr[-2000:]
    finally:
        server.terminate()
        server.wait(timeout=60)

    out = {"machine": f"{platform.machine()} {os.cpu_count()} cpu, Python {platform.python_version()}",
           "load_avg_1m": round(os.getloadavg()[0], 2), "files": len(list(Path(args.data).iterdir())),
           "ingest_s": round(ingest_s, 1), "cold_cli_search_s": [round(c, 2) for c in cold],
           "server_startup_s": round(startup_s, 1), "warm_api_search": summary(warm),
           "cli_via_server": summary(via) if via else None}
    out["speedup_p50"] = round(min(cold) / (out["warm_api_search"]["p50_ms"] / 1000), 1)
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
