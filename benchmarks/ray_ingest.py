"""Ray executor vs local executor on this machine, and a paper estimate for a real cluster.

    python benchmarks/ray_ingest.py --files 60 --json benchmarks/results/ray_ingest.json
    python benchmarks/ray_ingest.py --files 60 --ocr tesseract        # with OCR on every image/page

One generated mixed folder (text images, 1-2 page PDFs, Markdown notes), ingested into a fresh
store three times: the local executor with 1 and 2 reading threads (models already loaded in this
process), then the Ray executor on a single-node Ray this script starts (``ray.init(num_cpus=2)``;
its start-up time is reported separately; the actors load their models inside the timed run,
as they do in production). On 2 cores Ray cannot be faster: the same CPUs do the same work plus
Ray's scheduling, serialisation and actor start-up. What it shows is the overhead, and the
per-stage costs the estimate is built from.

Paper estimate (printed and written to the JSON): one worker machine of ``--worker-cores`` cores
runs about ``cores * efficiency / (read + embed CPU-seconds per file)`` files/s (the stages are CPU
bound on CPU-only machines; efficiency 0.8 for Ray and memory-bandwidth overhead); the driver
commits at most ``1 / store-seconds-per-file`` files/s (one writer: manifest + vector store) and
hashes at the measured MB/s. files/hour(N) = min(N x worker rate, driver commit rate, hash rate).
The per-file seconds come from the local run with the smaller read + embed total (the first run
also pays the models' first-call warm-up) on this shared, loaded machine, so they are pessimistic.
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
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mmrag_li.config import Settings  # noqa: E402
from mmrag_li.pipeline import MultiModalRAG  # noqa: E402

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"


def make_corpus(root: Path, n: int) -> Path:
    """``n`` files: 40 % text images (480x160), 15 % PDFs (1-2 small pages with text), 45 % Markdown."""
    import pymupdf
    from PIL import Image, ImageDraw, ImageFont

    root.mkdir(parents=True, exist_ok=True)
    n_img, n_pdf = int(n * 0.40), int(n * 0.15)
    font = ImageFont.truetype(FONT, 28) if os.path.exists(FONT) else None
    for i in range(n_img):
        im = Image.new("RGB", (480, 160), "white")
        d = ImageDraw.Draw(im)
        d.text((16, 16), f"SCAN {i} invoice", font=font, fill="black")
        d.text((16, 60), f"code B-{i:05d} total {i * 7}.00", font=font, fill="black")
        im.save(root / f"scan_{i:04d}.png")
    for i in range(n_pdf):
        doc = pymupdf.open()
        for p in range(1 + i % 2):
            page = doc.new_page(width=420, height=300)
            for k, line in enumerate([f"Report {i} page {p + 1}", f"ticket T-{i:04d}",
                                      "Payment terms remain thirty days net from the invoice date.",
                                      "Sales in the northern region grew by twelve percent."]):
                page.insert_text((30, 40 + 18 * k), line, fontsize=11)
        doc.save(root / f"report_{i:04d}.pdf")
        doc.close()
    for i in range(n - n_img - n_pdf):
        (root / f"note_{i:04d}.md").write_text(f"# Note {i}\n\nNote {i} is about topic {i % 9}, item N-{i:05d}.\n"
                                               "It has a second sentence so that it is a real chunk.\n")
    return root


def settings(store: Path, ocr: str) -> Settings:
    """One store's settings: OCR as asked; Ray stages as the defaults (2 read actors, 1 embed actor)."""
    return Settings(store_dir=str(store), ocr={"kind": ocr})


def row(name: str, report: Any, wall: float, files: int) -> Dict[str, Any]:
    st = report.stages
    return {"executor": name, "files": files, "wall_s": round(wall, 1), "files_per_s": round(files / wall, 2),
            "read_s": round(st.get("read", 0.0), 1),
            "embed_s": round(st.get("embed", 0.0) + st.get("embed_text", 0.0) + st.get("embed_image", 0.0), 1),
            "store_s": round(st.get("store", 0.0), 1), "nodes": sum(report.nodes.values()),
            "failed": len(report.failed), "executor_info": report.executor}


def hash_rate(folder: Path) -> float:
    """MB/s of the driver's content hashing over ``folder`` (warm page cache)."""
    from mmrag_li.schema import file_hash

    files = [p for p in folder.rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    t = time.perf_counter()
    for _ in range(5):
        for p in files:
            file_hash(p)
    return 5 * size / 1e6 / (time.perf_counter() - t)


def estimate(local1: Dict[str, Any], mb_per_file: float, hash_mb_s: float, cores: int,
             nodes: List[int], efficiency: float = 0.8) -> Dict[str, Any]:
    """files/hour for N worker machines of ``cores`` cores (see the module docstring)."""
    files = local1["files"]
    cpu_per_file = (local1["read_s"] + local1["embed_s"]) / files
    store_per_file = max(local1["store_s"] / files, 1e-6)
    worker = cores * efficiency / cpu_per_file
    driver = 1.0 / store_per_file
    hashing = hash_mb_s / max(mb_per_file, 1e-9)
    out = {"cpu_s_per_file": round(cpu_per_file, 3), "store_s_per_file": round(store_per_file, 4),
           "worker_cores": cores, "efficiency": efficiency, "worker_files_per_hour": round(worker * 3600),
           "driver_commit_files_per_hour": round(driver * 3600), "hash_files_per_hour": round(hashing * 3600),
           "by_workers": {}}
    for n in nodes:
        rate = min(n * worker, driver, hashing)
        limit = "workers" if rate == n * worker else ("driver commit" if rate == driver else "driver hashing")
        out["by_workers"][n] = {"files_per_hour": round(rate * 3600), "bound_by": limit}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=60)
    ap.add_argument("--ocr", default="none", choices=["none", "tesseract", "rapidocr"])
    ap.add_argument("--worker-cores", type=int, default=16, help="cores of one worker machine in the estimate")
    ap.add_argument("--nodes", default="1,4,16,64", help="worker machine counts in the estimate")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    tmp = Path(tempfile.mkdtemp(prefix="mmrag-raybench-"))
    rows: List[Dict[str, Any]] = []
    try:
        corpus = make_corpus(tmp / "corpus", args.files)
        mb_per_file = sum(p.stat().st_size for p in corpus.iterdir()) / 1e6 / args.files
        t = time.perf_counter()
        warm = MultiModalRAG(settings(tmp / "warm", args.ocr))
        models = {"text_embed": warm.text_embed, "clip_embed": warm.clip_embed, "captioner": warm.captioner,
                  "ocr": warm.ocr}
        load_s = time.perf_counter() - t
        for workers in (1, 2):
            rag = MultiModalRAG(settings(tmp / f"local{workers}", args.ocr), **models)
            t = time.perf_counter()
            rep = rag.ingest(corpus, workers=workers, progress=False)
            rows.append(row(f"local, {workers} thread(s)", rep, time.perf_counter() - t, args.files))
            rag.close()
        import ray

        t = time.perf_counter()
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 logging_level="WARNING")
        ray_start_s = time.perf_counter() - t
        try:
            rag = MultiModalRAG(settings(tmp / "ray", args.ocr))
            t = time.perf_counter()
            rep = rag.ingest(corpus, executor="ray", progress=False)
            rows.append(row("ray, 1 node x 2 CPUs (2 read + 1 embed actors)", rep, time.perf_counter() - t,
                            args.files))
            rag.close()
        finally:
            ray.shutdown()
        warm_row = min(rows[:2], key=lambda r: r["read_s"] + r["embed_s"])  # the 1st run pays first-call warm-up
        est = estimate(warm_row, mb_per_file, hash_rate(corpus), args.worker_cores,
                       [int(x) for x in args.nodes.split(",")])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n{args.files} files (OCR {args.ocr}); model load in-process {load_s:.1f} s; "
          f"ray.init (local, 2 CPUs) {ray_start_s:.1f} s; {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}\n")
    print("| executor | wall s | files/s | read s | embed s | store s | nodes | failed |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['executor']} | {r['wall_s']} | {r['files_per_s']} | {r['read_s']} | {r['embed_s']} | "
              f"{r['store_s']} | {r['nodes']} | {r['failed']} |")
    print(f"\nestimate: {est['cpu_s_per_file']} CPU-s/file (read+embed), {est['store_s_per_file']} s/file commit; "
          f"one {args.worker_cores}-core worker ~{est['worker_files_per_hour']:,} files/h; driver commit cap "
          f"~{est['driver_commit_files_per_hour']:,} files/h; hashing cap ~{est['hash_files_per_hour']:,} files/h")
    for n, v in est["by_workers"].items():
        print(f"  {n:>3} worker(s): ~{v['files_per_hour']:,} files/h (bound by {v['bound_by']})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"files": args.files, "ocr": args.ocr, "model_load_s": round(load_s, 1),
                                         "ray_init_s": round(ray_start_s, 1), "cores": os.cpu_count(),
                                         "machine": platform.platform(), "load_avg": os.getloadavg()[0],
                                         "rows": rows, "estimate": est}, indent=2, default=str))


if __name__ == "__main__":
    main()
