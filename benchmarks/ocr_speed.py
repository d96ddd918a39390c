"""OCR seconds per page for each engine: a US-letter page at 200 dpi full of body text.

    python benchmarks/ocr_speed.py [--pages 3] [--dpi 200] [--json]

The page is rendered with Pillow (DejaVu Sans 11 pt, ~500 words), like a clean scan. Each engine is
built once (model load is reported separately) and warmed up on one page before timing.
Word accuracy is the share of the page's distinct words that the engine found.

Measured 2026-11-25 on the 2-core CPU dev machine (shared with other jobs, load average 2-4):

    engine     version            load s  s/page   recall
    tesseract  5.3.0                 0.3    2.3      1.0   (OSD + one pass; OMP_THREAD_LIMIT=1)
    rapidocr   1.4.4 (PP-OCRv4)      0.2    5.1-8    1.0   (varies with load; 16 s seen at load 4)

Without OMP_THREAD_LIMIT=1, tesseract took 5.8-13 s for the same page under the same load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from PIL import Image, ImageDraw, ImageFont  # noqa: E402

from mmrag_li.enrich.ocr import get_ocr_engine  # noqa: E402

TEXT = (
    "The quarterly report summarises revenue, costs and cash flow for every region. Sales in the "
    "northern region grew by twelve percent while costs stayed flat. Payment terms remain thirty "
    "days net from the date of the invoice. Please quote the invoice number on every transfer to "
    "avoid delays in processing. Our warehouse in Hamburg shipped 1,284 parcels in March, and the "
    "average delivery time fell to 2.4 days. Customers in Munich and Vienna asked for tripods, lens "
    "kits and calibration services; the calibration backlog is expected to clear by May. "
)
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"


def page(dpi: int) -> Image.Image:
    w, h = int(8.5 * dpi), int(11 * dpi)
    px = int(11 / 72 * dpi)
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    f = ImageFont.truetype(FONT, px)
    margin = dpi
    words, line, y = (TEXT * 8).split(), "", margin
    max_w = w - 2 * margin
    for word in words:
        trial = (line + " " + word).strip()
        if d.textlength(trial, font=f) > max_w:
            d.text((margin, y), line, font=f, fill="black")
            y += int(px * 1.45)
            line = word
            if y > h - margin:
                break
        else:
            line = trial
    return img


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pages", type=int, default=3)
    ap.add_argument("--dpi", type=int, default=200)
    ap.add_argument("--engines", default="tesseract,rapidocr")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    img = page(args.dpi)
    truth = {w.strip(".,;") for w in TEXT.split()}
    rows = []
    for name in args.engines.split(","):
        t0 = time.perf_counter()
        engine = get_ocr_engine({"kind": name})
        load_s = time.perf_counter() - t0
        engine.recognize(img)  # warm-up
        times, found = [], set()
        for _ in range(args.pages):
            t = time.perf_counter()
            result = engine.recognize(img)
            times.append(time.perf_counter() - t)
            found = {w.text.strip(".,;") for w in result.words}
        rows.append({
            "engine": name, "version": engine.version, "load_s": round(load_s, 2),
            "s_per_page": round(sum(times) / len(times), 2), "min_s": round(min(times), 2),
            "words": len(result.words), "word_recall": round(len(truth & found) / len(truth), 3),
        })
    info = {"dpi": args.dpi, "page_px": list(img.size), "cpus": os.cpu_count(), "python": platform.python_version(),
            "results": rows}
    if args.json:
        print(json.dumps(info, indent=2))
        return
    print(f"US-letter page at {args.dpi} dpi ({img.width}x{img.height} px), {os.cpu_count()} CPU cores")
    print(f"{'engine':<10} {'version':<20} {'load s':>7} {'s/page':>7} {'min s':>6} {'words':>6} {'recall':>7}")
    for r in rows:
        print(f"{r['engine']:<10} {r['version']:<20} {r['load_s']:>7} {r['s_per_page']:>7} {r['min_s']:>6} "
              f"{r['words']:>6} {r['word_recall']:>7}")


if __name__ == "__main__":
    main()
