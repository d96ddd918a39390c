"""Peak memory (max RSS, ``resource``/``wait4``) of an ingest and of a warm retrieval process.

    python benchmarks/memory_peak.py --folder examples/data --vectors 10000 \
        --json benchmarks/results/memory_peak.json

1. ``mmrag ingest FOLDER`` into a fresh store, in a child process: its peak RSS.
3. ``mmrag serve`` on that synthetic store after 3 + 20 ``/api/search`` requests: its peak RSS
   (``VmHWM``) and RSS, read from ``/proc`` before it is stopped.
2. A warm retrieval process over a synthetic store of ``--vectors`` vectors (built as in
   ``retrieval_latency.py``: N/4 per collection, 384-d, 8 words of text per node): the offline
   default models, ``FusionRetriever`` with all five retrievers (BM25 index built), 20 queries of
   real text; its peak RSS and the RSS after the queries.
Each runs in its own process (``os.wait4`` gives that child's own peak).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

WARM = """
import json, resource, sys
sys.path.insert(0, {root!r})
from mmrag_li.config import EmbeddingConfig, RetrievalConfig
from mmrag_li.embeddings.image import build_image_embedding
from mmrag_li.embeddings.text import build_text_embedding
from mmrag_li.retrieval.fusion import FusionRetriever
from mmrag_li.stores import ModalityStores
cfg = EmbeddingConfig(device="cpu", image_backend="packaged")
stores = ModalityStores.lancedb({store!r})
r = FusionRetriever.from_defaults(stores, build_text_embedding(cfg), build_image_embedding(cfg),
                                  RetrievalConfig(top_k=5, per_retriever_k=20))
for i in range(20):
    r.retrieve_assets(f"w{{7 * i}} w{{21 * i}} report invoice")
rss = [int(l.split()[1]) / 1024 for l in open("/proc/self/status") if l.startswith("VmRSS:")][0]
print(json.dumps({{"rss_after_mb": round(rss, 1), "modules": [m for m in ("torch", "transformers",
      "sentence_transformers", "lancedb") if m in sys.modules]}}))
"""


def child(cmd: List[str], env: Dict[str, str]) -> Dict[str, Any]:
    """Run ``cmd``; its own peak RSS (MB) and stdout."""
    proc = subprocess.Popen(cmd, cwd=str(ROOT), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = proc.stdout.read() if proc.stdout else ""
    err = proc.stderr.read() if proc.stderr else ""
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        print(err[-2000:], file=sys.stderr)
    return {"peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "rc": proc.returncode, "stdout": out}


def warm_server(store: Path, env: Dict[str, str]) -> Dict[str, Any]:
    """Start ``mmrag serve`` on ``store``, send 23 searches, return its peak and current RSS (MB)."""
    import time
    import urllib.parse

    from server_latency import free_port, get, wait_ready

    from mmrag_li.assets import MANIFEST_NAME
    from mmrag_li.ingest.manifest import Manifest

    Manifest(store / MANIFEST_NAME).close()  # the synthetic store has no files, but serve wants a store
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "mmrag_li.cli", "serve", "--store", str(store), "--port",
                               str(port)], cwd=str(ROOT), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        t = time.perf_counter()
        if not wait_ready(base, server):
            return {"error": "mmrag serve did not become ready"}
        ready_s = time.perf_counter() - t
        for i in range(23):
            get(base + "/api/search?" + urllib.parse.urlencode({"q": f"w{7 * i} w{21 * i} report invoice", "k": 5}))
        status = Path(f"/proc/{server.pid}/status").read_text()
        mb = {ln.split(":")[0]: round(int(ln.split()[1]) / 1024, 1) for ln in status.splitlines()
              if ln.startswith(("VmHWM:", "VmRSS:"))}
        return {"peak_rss_mb": mb["VmHWM"], "rss_after_mb": mb["VmRSS"], "ready_after_s": round(ready_s, 1)}
    finally:
        server.terminate()
        server.wait(timeout=60)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description="peak RSS of ingest and of a warm retrieval process")
    ap.add_argument("--folder", default=str(ROOT / "examples" / "data"))
    ap.add_argument("--vectors", type=int, default=10000)
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--keep", help="keep the ingested store here (e.g. to evaluate it) instead of deleting it")
    args = ap.parse_args(argv)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(ROOT), LANCE_LOG="error")
    tmp = Path(tempfile.mkdtemp(prefix="mmrag-mem-"))
    out: Dict[str, Any] = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}"}
    try:
        ing = child([sys.executable, "-m", "mmrag_li.cli", "ingest", args.folder, "--store", str(tmp / "ingest"),
                     "-q", "--json"], env)
        report = json.loads(ing["stdout"] or "{}")
        out["ingest"] = {"folder": args.folder, "files": report.get("files"), "seconds": report.get("seconds"),
                         "peak_rss_mb": ing["peak_rss_mb"]}
        from retrieval_latency import build_store

        build_store(tmp / "synthetic", args.vectors)
        warm = child([sys.executable, "-c", WARM.format(root=str(ROOT), store=str(tmp / "synthetic"))], env)
        info = json.loads(warm["stdout"].strip().splitlines()[-1]) if warm["rc"] == 0 else {}
        out["warm_retrieval"] = {"vectors": args.vectors, "peak_rss_mb": warm["peak_rss_mb"], **info}
        out["warm_server"] = {"vectors": args.vectors, **warm_server(tmp / "synthetic", env)}
    finally:
        if args.keep:
            shutil.rmtree(args.keep, ignore_errors=True)
            shutil.move(str(tmp / "ingest"), args.keep)
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
