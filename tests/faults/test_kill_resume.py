"""SIGKILL during a multi-batch `mmrag ingest` at random points, then resume: the store ends up with
exactly the nodes the manifest lists -- the same node ids a clean run produces, none twice."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

from mmrag_li.ingest.manifest import status_counts
from mmrag_li.pipeline import MultiModalRAG
from tests.faults.conftest import CLI_ENV, REPO, cli, settings_for
from tests.ingest_checks import assert_store_matches_manifest, small_corpus, stored_ids, text_png


def _start(docs: Path, store: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(cli("ingest", str(docs), "--store", str(store), "--json", "-q", "--workers", "2", *extra),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=CLI_ENV, cwd=REPO, text=True)


def _kill_when(proc: subprocess.Popen, store: Path, done_at_least: int, delay: float) -> bool:
    """SIGKILL once the manifest shows ``done_at_least`` finished files, plus ``delay`` seconds
    (so the kill lands anywhere inside a later batch: embedding, upsert, delete, manifest)."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        if status_counts(store).get("done", 0) >= done_at_least:
            time.sleep(delay)
            if proc.poll() is not None:
                break
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
            return True
        time.sleep(0.01)
    proc.communicate()
    return False


def test_sigkill_at_random_points_then_resume(tmp_path, models):
    seed = int(os.environ.get("MMRAG_FAULT_SEED") or time.time())
    rng = random.Random(seed)
    docs = small_corpus(tmp_path / "docs", n_md=36, n_png=12)
    store = tmp_path / "store"
    kills = []
    for round_ in range(3):
        before = status_counts(store).get("done", 0)
        proc = _start(docs, store)
        target, delay = before + rng.randint(1, 9), rng.uniform(0.0, 0.5)
        if _kill_when(proc, store, target, delay):
            kills.append((target, round(delay, 2), status_counts(store)))
        if round_ == 0:
            # Files change and disappear between the crash and the resume.
            (docs / "doc_000.md").write_text("# Doc 0\n\nRewritten after the crash: topic walrus.\n")
            text_png(docs / "doc_img_000.png", ["REPLACED PICTURE", "after the crash"])
            (docs / "doc_001.md").unlink()
    assert len(kills) >= 2, f"seed {seed}: the kills missed the runs ({kills})"
    print(f"seed {seed}; kills (done target, delay s, manifest after kill): {kills}")

    final = _start(docs, store, "--prune")
    out, err = final.communicate(timeout=300)
    assert final.returncode == 0, f"seed {seed}: {err[-2000:]}"
    report = json.loads(out)
    assert report["failed"] == []

    rag = MultiModalRAG(settings_for(store), **models)
    files = sorted(p for p in docs.iterdir())
    assert rag.manifest.counts() == {"done": len(files)}, f"seed {seed}, kills {kills}"
    have = assert_store_matches_manifest(rag)  # exact agreement, no duplicate ids

    # The same folder ingested once, cleanly, gives exactly the same node ids.
    ref = MultiModalRAG(settings_for(tmp_path / "ref"), **models)
    assert ref.ingest(docs, progress=False).failed == []
    assert stored_ids(ref.stores) == have, f"seed {seed}, kills {kills}"


def test_ctrl_c_stops_cleanly_and_the_next_run_completes(tmp_path, models):
    """SIGINT while worker threads are inside RapidOCR (onnxruntime): the CLI exits 130 with one
    line -- no C++ "terminate called without an active exception" abort from a thread left in
    native code at interpreter exit, no traceback -- and the next run completes the store exactly."""
    docs = small_corpus(tmp_path / "docs", n_md=6, n_png=6)
    store = tmp_path / "store"
    env = dict(CLI_ENV, MMRAG_OCR__KIND="rapidocr")
    proc = subprocess.Popen(cli("ingest", str(docs), "--store", str(store), "--json", "-q", "--workers", "2"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=REPO, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None and status_counts(store).get("done", 0) < 6:
        time.sleep(0.01)
    time.sleep(1.0)  # the markdown files are stored; the workers are now reading the images
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "terminate called" not in err and "Traceback" not in err and "interrupted" in err, err[-2000:]

    final = subprocess.run(cli("ingest", str(docs), "--store", str(store), "--json", "-q"), capture_output=True,
                           text=True, env=env, cwd=REPO, timeout=600)
    assert final.returncode == 0, final.stderr[-2000:]
    assert json.loads(final.stdout)["failed"] == []
    rag = MultiModalRAG(settings_for(store), **models)
    assert rag.manifest.counts() == {"done": 12}
    assert_store_matches_manifest(rag)
