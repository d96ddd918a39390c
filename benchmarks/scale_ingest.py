"""Scale + crash run: N generated files, `mmrag ingest --workers 2`, SIGKILL in the middle, resume,
then an exact check of the store against the manifest. Not a CI test: a number for the notes.

    python benchmarks/scale_ingest.py [--n 5000] [--kill-at 0.5] [--workers 2] [--out DIR]
                                      [--captions on|off] [--ocr none|tesseract] [--json-out F]

Corpus (deterministic, seed 7): ~65 % markdown and ~10 % plain-text notes of a few sentences,
~20 % small rendered-text PNGs (480x160), ~5 % hostile files spread over five kinds:
zero-byte .png, truncated PNG, garbage .pdf (random bytes), encrypted PDF, PNG bomb header
(60000 x 60000 pixels claimed in ~100 bytes).

Steps: (1) `mmrag ingest` in a subprocess, SIGKILLed once ``kill_at`` of the files are recorded
in the manifest; (2) the same command again (resume) to completion; (3) once more (idempotence:
nothing re-encoded); (4) exact check: no pending rows, every good file `done`, every hostile
file `failed` with its reason, and the node ids in LanceDB equal the manifest's node ids per
asset (no duplicate, no missing node). Prints one JSON summary.

OCR is off by default (``--ocr none``): OCR cost is measured in benchmarks/ocr_speed.py, and the
PNGs here are about the pipeline (read, caption, embed, store, crash safety), not OCR.

Measured 2026-11-25, ``--n 5000 --captions off`` (OCR none), 2-core CPU dev machine shared with
other jobs (load average 4-6), offline models (MiniLM text, EfficientNet-tagger image encoder):

    corpus          5000 files: 3250 .md, 500 .txt, 1000 PNG, 250 hostile (5 kinds x 50)
    run 1           SIGKILL at 296.8 s: 2252 done, 250 failed, 16 pending in the manifest
    run 2 (resume)  151.1 s for the other 2498 files (exit 3: the hostile ones); 0 recovered notes
    run 3 (again)   6.2 s: 4750 skipped unchanged, 0 vectors encoded, the 250 refusals re-checked
    final           4750 done + 250 failed; LanceDB rows 4750 (text 3750, image 1000) = manifest
                    node ids exactly: 0 missing, 0 extra, 0 duplicate ids
    refused         50 each: empty file, truncated/corrupt image, not a PDF (garbage),
                    encrypted PDF, decompression bomb
    stage seconds   (run 2) read 9.1, embed_text 94.4, embed_image 39.4, store 4.7

Same corpus, default captions on (offline tagger), machine idle (load average < 1):

    run 1           SIGKILL at 57.6 s: 2264 done, 250 failed, 16 pending
    run 2 (resume)  92.7 s for the other 2486 files (1000 PNGs + captions); stages read 71.0,
                    embed_text 22.3, embed_image 26.6, store 5.6 (982 caption vectors from the cache:
                    the tagger gives identical captions to similar PNGs)
    run 3 (again)   11.6 s (includes loading the reader's models for the 250 refusals it re-checks)
    final           4750 done + 250 failed; rows 5750 (text 3750, image 1000, caption 1000) =
                    manifest exactly: 0 missing, 0 extra, 0 duplicate ids
The loaded-machine run above was 2-5x slower per file (the CPU was shared with other test suites).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from collections import Counter
from pathlib import Path
from typing import Dict, Tuple

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mmrag_li.manifest import status_counts  # noqa: E402  (after the path insert)

WORDS = ("invoice report rocket harbour meadow quarterly revenue shipment tripod lens customer region "
         "warehouse delivery payment contract river mountain coffee engine battery garden library").split()
HOSTILE_KINDS = ("zero_byte_png", "truncated_png", "garbage_pdf", "encrypted_pdf", "bomb_png")
CATEGORIES = [  # (category, regex on the failure reason)
    ("empty file", r"^empty file"),
    ("truncated/corrupt image", r"^truncated or corrupt image"),
    ("not a PDF (garbage)", r"^not a PDF|corrupt PDF|truncated PDF"),
    ("encrypted PDF", r"^encrypted PDF"),
    ("decompression bomb", r"^decompression bomb"),
    ("timed out", r"^timed out"),
]


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png() -> bytes:
    ihdr = struct.pack(">IIBBBBB", 60000, 60000, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 16))
            + _png_chunk(b"IEND", b""))


def generate(root: Path, n: int, seed: int = 7) -> Dict[str, int]:
    """Write the corpus; returns {kind: count}."""
    import pymupdf
    from PIL import Image, ImageDraw, ImageFont

    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    font_path = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
    font = ImageFont.truetype(font_path, 26) if os.path.exists(font_path) else None
    n_hostile = max(len(HOSTILE_KINDS), n // 20)
    n_png = n // 5
    n_txt = n // 10
    n_md = n - n_hostile - n_png - n_txt
    counts: Counter = Counter()

    def sentence() -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 14))).capitalize() + "."

    for i in range(n_md):
        sub = root / f"md{i // 500:02d}"
        sub.mkdir(exist_ok=True)
        body = "\n\n".join(" ".join(sentence() for _ in range(rng.randint(2, 5))) for _ in range(rng.randint(1, 3)))
        (sub / f"note_{i:05d}.md").write_text(f"# Note {i}\n\nReference MD-{i:05d}.\n\n{body}\n", encoding="utf-8")
        counts["md"] += 1
    for i in range(n_txt):
        sub = root / f"txt{i // 500:02d}"
        sub.mkdir(exist_ok=True)
        (sub / f"memo_{i:05d}.txt").write_text(f"Memo TX-{i:05d}. " + " ".join(sentence() for _ in range(3)) + "\n")
        counts["txt"] += 1
    good_png = b""
    for i in range(n_png):
        sub = root / f"png{i // 500:02d}"
        sub.mkdir(exist_ok=True)
        img = Image.new("RGB", (480, 160), (255 - rng.randint(0, 40), 255, 255 - rng.randint(0, 40)))
        d = ImageDraw.Draw(img)
        d.text((16, 20), f"PICTURE PN-{i:05d}", font=font, fill="black")
        d.text((16, 80), " ".join(rng.choice(WORDS) for _ in range(3)), font=font, fill=(20, 20, 120))
        p = sub / f"pic_{i:05d}.png"
        img.save(p)
        good_png = good_png or p.read_bytes()
        counts["png"] += 1
    enc_buf = io.BytesIO()
    doc = pymupdf.open()
    doc.new_page().insert_text((72, 72), "secret")
    doc.save(enc_buf, encryption=pymupdf.PDF_ENCRYPT_AES_256, user_pw="u", owner_pw="o")
    doc.close()
    hostile = root / "hostile"
    hostile.mkdir(exist_ok=True)
    for i in range(n_hostile):
        kind = HOSTILE_KINDS[i % len(HOSTILE_KINDS)]
        if kind == "zero_byte_png":
            (hostile / f"zero_{i:04d}.png").write_bytes(b"")
        elif kind == "truncated_png":
            (hostile / f"trunc_{i:04d}.png").write_bytes(good_png[: rng.randint(40, len(good_png) // 2)])
        elif kind == "garbage_pdf":
            (hostile / f"garbage_{i:04d}.pdf").write_bytes(os.urandom(rng.randint(500, 5000)))
        elif kind == "encrypted_pdf":
            (hostile / f"locked_{i:04d}.pdf").write_bytes(enc_buf.getvalue() + f"\n% copy {i}\n".encode())
        else:
            (hostile / f"bomb_{i:04d}.png").write_bytes(bomb_png())
        counts[kind] += 1
    return dict(counts)


def run_cli(corpus: Path, store: Path, env: Dict[str, str], workers: int, kill_after: int = 0
            ) -> Tuple[float, int, Dict, Dict[str, int]]:
    """(seconds, return code, JSON report or {}, manifest counts at the end / at the kill)."""
    cmd = [sys.executable, "-m", "mmrag_li.cli", "ingest", str(corpus), "--store", str(store), "--json", "-q",
           "--workers", str(workers)]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=REPO, text=True)
    if kill_after:
        while proc.poll() is None:
            c = status_counts(store)
            if c.get("done", 0) + c.get("failed", 0) >= kill_after:
                proc.send_signal(signal.SIGKILL)
                proc.communicate()
                return time.monotonic() - t0, -9, {}, status_counts(store)
            time.sleep(0.05)
    out, err = proc.communicate()
    took = time.monotonic() - t0
    report = json.loads(out) if out.strip() else {}
    if proc.returncode not in (0, 3):
        sys.stderr.write(err[-3000:])
    return took, proc.returncode, report, status_counts(store)


def verify(store: Path, ocr: str) -> Dict:
    """Exact agreement of LanceDB and the manifest, plus duplicate-id check."""
    from mmrag_li.config import Settings
    from mmrag_li.pipeline import MultiModalRAG
    from mmrag_li.schema import COLLECTIONS

    rag = MultiModalRAG(Settings(store_dir=str(store), ocr={"engine": ocr}))
    expected = {a: set(ids) for a, ids in rag.manifest.expected_nodes().items()}
    stored: Dict[str, set] = {}
    rows = dupes = 0
    for c in COLLECTIONS:
        ids = []
        for node in rag.stores.all_nodes(c):
            ids.append(node.node_id)
            stored.setdefault(node.metadata["asset_id"], set()).add(node.node_id)
        rows += len(ids)
        dupes += len(ids) - len(set(ids))
    missing = sum(len(ids - stored.get(a, set())) for a, ids in expected.items())
    extra = sum(len(ids - expected.get(a, set())) for a, ids in stored.items())
    failed = Counter()
    other = []
    for rec in rag.manifest.all("failed"):
        cat = next((name for name, rx in CATEGORIES if re.search(rx, rec.reason or "")), None)
        if cat is None:
            other.append(rec.reason)
            cat = "other"
        failed[cat] += 1
    out = {"manifest": rag.manifest.counts(), "store_rows": rows, "store_rows_by_collection": rag.stores.count(),
           "assets_in_store": len(stored), "assets_in_manifest": len(expected),
           "missing_nodes": missing, "extra_nodes": extra, "duplicate_ids": dupes,
           "refused_by_category": dict(failed), "refused_other_reasons": other[:10]}
    rag.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--kill-at", type=float, default=0.5, help="fraction of files recorded before SIGKILL")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default="/tmp/mmrag-scale")
    ap.add_argument("--captions", choices=("on", "off"), default="on")
    ap.add_argument("--ocr", choices=("none", "tesseract", "rapidocr"), default="none")
    ap.add_argument("--json-out", help="also write the summary here")
    args = ap.parse_args()

    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    corpus, store = out / "corpus", out / "store"
    t = time.monotonic()
    kinds = generate(corpus, args.n)
    gen_s = time.monotonic() - t
    n_files = sum(kinds.values())
    n_hostile = sum(kinds.get(k, 0) for k in HOSTILE_KINDS)
    env = dict(os.environ, MMRAG_OCR__ENGINE=args.ocr, MMRAG_CAPTION__ENABLED="true" if args.captions == "on" else "false",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")

    kill_s, _, _, at_kill = run_cli(corpus, store, env, args.workers, kill_after=max(1, int(n_files * args.kill_at)))
    resume_s, rc2, rep2, after_resume = run_cli(corpus, store, env, args.workers)
    again_s, rc3, rep3, _ = run_cli(corpus, store, env, args.workers)
    check = verify(store, args.ocr)

    done = check["manifest"].get("done", 0)
    summary = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "settings": {"n_requested": args.n, "workers": args.workers, "ocr": args.ocr, "captions": args.captions,
                     "batch_files": 16, "kill_at_fraction": args.kill_at},
        "corpus": {"files": n_files, "by_kind": kinds, "hostile": n_hostile, "generate_s": round(gen_s, 1)},
        "run1_killed": {"seconds_until_kill": round(kill_s, 1), "manifest_at_kill": at_kill},
        "run2_resume": {"seconds": round(resume_s, 1), "exit_code": rc2, "report_nodes": rep2.get("nodes"),
                        "skipped_unchanged": rep2.get("skipped_unchanged"), "failed": len(rep2.get("failed", [])),
                        "encoded": rep2.get("encoded"), "cached": rep2.get("cached"),
                        "recovered": rep2.get("recovered"), "stages": rep2.get("stages")},
        "run3_again": {"seconds": round(again_s, 1), "exit_code": rc3, "skipped_unchanged": rep3.get("skipped_unchanged"),
                       "encoded": rep3.get("encoded"), "failed": len(rep3.get("failed", []))},
        "final": check,
        "files_indexed": done,
        "ok": (done == n_files - n_hostile and check["manifest"].get("failed", 0) == n_hostile
               and check["manifest"].get("pending", 0) == 0 and check["missing_nodes"] == 0
               and check["extra_nodes"] == 0 and check["duplicate_ids"] == 0
               and rep3.get("encoded") == {"text": 0, "image": 0}),
    }
    text = json.dumps(summary, indent=2)
    print(text)
    if args.json_out:
        Path(args.json_out).write_text(text + "\n")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
