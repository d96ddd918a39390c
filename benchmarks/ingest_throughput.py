"""Ingest throughput per stage and end to end, with 1 and 2 workers.

    python benchmarks/build_devset.py --out /tmp/mmrag-devset     # once
    python benchmarks/ingest_throughput.py --devset /tmp/mmrag-devset --workers 1,2 \
        --json benchmarks/results/ingest_throughput.json

Two workloads from the dev set: IMAGES (corpus/photos + corpus/scans + corpus/emoji: photos get
caption + OCR + image vector; A4 scans also get tiles) and PAGES (corpus/docs: two text-layer
PDFs; every page is rendered and embedded, its text chunked and embedded). Each run uses a fresh
store (so the embedding cache is empty) in a process whose models are already loaded (model load
is reported once, separately). ``IngestReport.stages`` gives read (file -> nodes, includes OCR,
captioning, tiling, PDF rendering), embed_text, embed_image and store seconds; with 2 workers
the read stage runs in two threads. Overhead = wall − (read + embed_text + embed_image + store):
manifest, hashing, batching and waiting. It is negative when stages overlap: even with one
worker, the pool thread reads the next files while the main thread embeds and stores a batch.
OCR seconds per page per engine: see ``benchmarks/ocr_speed.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mmrag_li.pipeline import MultiModalRAG  # noqa: E402


def _workload(devset: Path, name: str, tmp: Path) -> Path:
    """Copy the workload into its own folder (symlinks are not followed by the walker)."""
    dst = tmp / name
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    subs = {"images": ("photos", "scans", "emoji"), "photos": ("photos",), "pages": ("docs",)}[name]
    for s in subs:
        shutil.copytree(devset / "corpus" / s, dst / s)
    return dst


def _pages(folder: Path) -> int:
    import pymupdf

    n = 0
    for p in folder.rglob("*.pdf"):
        with pymupdf.open(str(p)) as d:
            n += d.page_count
    return n


def warm(config: Optional[str]) -> Dict[str, float]:
    """Load every model once (the process keeps them; later MultiModalRAG objects get them passed in)."""
    from PIL import Image

    t = time.perf_counter()
    rag = MultiModalRAG.from_config(config, store_dir=tempfile.mkdtemp(prefix="mmrag-warm-"))
    comps = {"text_embed": rag.text_embed, "clip_embed": rag.clip_embed, "ocr": rag.ocr, "captioner": rag.captioner}
    img = Image.new("RGB", (64, 64), "white")
    rag.text_embed.get_text_embedding("warm up")
    rag.clip_embed.embed_pil([img])
    if rag.captioner is not None:
        rag.captioner.caption([img])
    try:  # the OCR text gate (issue 14), where this version has one: load its model before timing
        from mmrag_li.enrich.ocr.gate import shared_text_gate

        shared_text_gate().has_text(img)
    except ImportError:
        pass
    return {"model_load_s": round(time.perf_counter() - t, 2)}, comps


def _cpu_s() -> float:
    """CPU seconds of this process and its finished children (tesseract runs as a child)."""
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def run_once(folder: Path, workers: int, config: Optional[str], comps: Dict[str, Any],
             overrides: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    store = Path(tempfile.mkdtemp(prefix="mmrag-bench-"))
    try:
        rag = MultiModalRAG.from_config(config, store_dir=store, **(overrides or {}))
        rag._c.update(comps)  # reuse loaded models; the reader, stores, manifest and cache are fresh
        t, c = time.perf_counter(), _cpu_s()
        rep = rag.ingest([str(folder)], workers=workers, progress=False)
        wall, cpu = time.perf_counter() - t, _cpu_s() - c
        rag.close()
    finally:
        shutil.rmtree(store, ignore_errors=True)
    st = rep.stages
    busy = sum(st.get(k, 0.0) for k in ("read", "embed_text", "embed_image", "store"))
    return {"workers": workers, "files": rep.files, "failed": len(rep.failed), "wall_s": round(wall, 2),
            "cpu_s": round(cpu, 2),
            "stages_s": {k: round(v, 2) for k, v in st.items()}, "stage_sum_s": round(busy, 2), "nodes": rep.nodes,
            "overhead_s": round(wall - busy, 2), "overhead_pct": round(100 * (wall - busy) / wall, 1)}


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description="ingest throughput per stage, 1 and 2 workers")
    ap.add_argument("--devset", required=True, help="folder written by benchmarks/build_devset.py")
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--config", default=None)
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--workloads", default="images,pages", help="comma list of images, photos (photos only), pages")
    ap.add_argument("--text-gate", default="", help="'on,off': run each workload with ocr.text_gate on and off, "
                    "alternating (the gate's speed-up measured in one process; '' = the config's setting)")
    ap.add_argument("--repeats", type=int, default=1, help="runs per workload (and gate setting)")
    ap.add_argument("--threads", default="", help="comma list of ingest.model_threads values to alternate "
                    "(e.g. 'auto,0': the cap on torch/onnxruntime threads vs no cap); '' = the config's setting")
    args = ap.parse_args(argv)
    gates = [g for g in args.text_gate.split(",") if g] or [""]
    thread_caps = [t for t in args.threads.split(",") if t] or [""]
    tmp = Path(tempfile.mkdtemp(prefix="mmrag-ingest-bench-"))
    load, comps = warm(args.config)
    results: Dict[str, Any] = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                                          f"load average at start {os.getloadavg()[0]:.1f}", **load, "runs": []}
    try:
        for name in [w for w in args.workloads.split(",") if w]:
            folder = _workload(Path(args.devset), name, tmp)
            pages = _pages(folder)
            runs = [(w, g, tc) for _ in range(args.repeats) for w in [int(x) for x in args.workers.split(",") if x]
                    for g in gates for tc in thread_caps]
            for w, g, tc in runs:
                overrides = dict({"ocr.text_gate": g == "on"} if g else {},
                                 **({"ingest.model_threads": tc} if tc else {}))
                r = run_once(folder, w, args.config, comps, overrides or None)
                r["workload"] = name
                if g:
                    r["text_gate"] = g
                if tc:
                    r["model_threads"] = tc
                if name in ("images", "photos"):
                    r["images_per_s"] = round(r["files"] / r["wall_s"], 2)
                else:
                    r["pages"] = pages
                    r["pages_per_s"] = round(pages / r["wall_s"], 2)
                results["runs"].append(r)
                print(json.dumps(r), file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    results["load_average_end"] = round(os.getloadavg()[0], 1)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
