"""The Ray executor (``ingest(..., executor="ray")``) on a real two-node Ray cluster, no mocks:
the store equals a local-executor ingest of the same folder node for node; a batch runs on the
second node; hostile files come back as failures with reasons; a second run ships nothing new; a
driver SIGKILLed mid-run and a worker actor killed mid-run both end with exactly the right nodes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from mmrag_li.config import Settings
from mmrag_li.ingest.manifest import status_counts
from mmrag_li.ingest.transforms import scoped_asset_id
from mmrag_li.pipeline import MultiModalRAG
from mmrag_li.schema import file_hash
from tests.ingest_checks import assert_store_matches_manifest, stored_ids
from tests.ray.conftest import RAY_ENV, REPO

pytestmark = pytest.mark.slow


def settings_for(store: Path, batch_files: int = 8, embed_batch: int = 8) -> Settings:
    """OCR off (not the point here); the embed stage pinned to the second node by its custom resource."""
    return Settings(store_dir=str(store), ocr={"kind": "none"},
                    ingest={"batch_files": batch_files,
                            "ray": {"read": {"actors": 2, "batch_size": 4},
                                    "embed": {"batch_size": embed_batch, "resources": {"node2": 1}}}})


def failures(report) -> dict:
    return {f["path"]: f["reason"] for f in report.failed}


@pytest.fixture(scope="module")
def ray_run(ray_cluster, mixed_corpus, tmp_path_factory):
    rag = MultiModalRAG(settings_for(tmp_path_factory.mktemp("ray_store")))
    t = time.perf_counter()
    report = rag.ingest(mixed_corpus["root"], executor="ray", ray_address=ray_cluster.address, progress=False)
    print(f"ray ingest of {report.files} files: {time.perf_counter() - t:.1f} s; executor {report.executor}")
    yield rag, report
    rag.close()


@pytest.fixture(scope="module")
def expected_ids(mixed_corpus, tmp_path_factory):
    """Node ids of a local-executor ingest of the same folder (and its report)."""
    rag = MultiModalRAG(settings_for(tmp_path_factory.mktemp("local_store")))
    report = rag.ingest(mixed_corpus["root"], progress=False)
    ids = stored_ids(rag.stores)
    rag.close()
    return ids, report


def test_ray_ingest_equals_local_ingest(ray_run, expected_ids, ray_cluster, mixed_corpus):
    rag, report = ray_run
    local_ids, local = expected_ids
    n_files = len(mixed_corpus["good"]) + len(mixed_corpus["hostile"])
    assert report.files == local.files == n_files
    assert stored_ids(rag.stores) == local_ids  # same assets, same node ids, no duplicate
    assert_store_matches_manifest(rag)
    assert report.nodes == local.nodes and report.new == local.new == len(mixed_corpus["good"])
    # Hostile files: reported with the same reasons as the local executor, never a failed job.
    assert set(failures(report)) == {str(p) for p in mixed_corpus["hostile"]}
    assert failures(report) == failures(local) and all(failures(report).values())
    ex = report.executor
    assert ex["kind"] == "ray" and ex["shipped"] == n_files and ex["lost"] == 0 and ex["rounds"] == 1
    assert ex["stages"]["embed"].get(ray_cluster.node2, 0) >= 1, ex  # the second node ran batches
    assert ex["nodes"][ray_cluster.node2] >= 1 and local.executor == {"kind": "local"}


def test_second_run_ships_nothing_new(ray_run, ray_cluster, mixed_corpus):
    rag, _ = ray_run
    good, hostile = mixed_corpus["good"], mixed_corpus["hostile"]
    again = rag.ingest(mixed_corpus["root"], executor="ray", ray_address=ray_cluster.address, progress=False)
    assert again.skipped_unchanged == len(good) and sum(again.nodes.values()) == 0
    assert (again.new, again.changed) == (0, 0) and again.encoded == {"text": 0, "image": 0}
    # Only the files that failed are tried again (as the local executor does: a failure may pass).
    assert again.executor["shipped"] == len(hostile) and set(failures(again)) == {str(p) for p in hostile}
    clean = rag.ingest([p for p in mixed_corpus["root"].iterdir() if p.name != "bad"], executor="ray",
                       ray_address=ray_cluster.address, progress=False)
    assert clean.skipped_unchanged == len(good) and clean.failed == []
    assert clean.executor["shipped"] == 0 and clean.executor["rounds"] == 0  # the cluster was not used


def _wait_for(predicate, timeout: float = 240.0, step: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(step)
    return False


def expected_small(ray_run, corpus) -> dict:
    """The full run's node ids of the assets in the small folder (copies: same bytes, same ids)."""
    assets = {scoped_asset_id(file_hash(p), "default") for p in corpus["small_good"]}
    expected = {a: ids for a, ids in stored_ids(ray_run[0].stores).items() if a in assets}
    assert len(expected) == len(corpus["small_good"])
    return expected


def test_driver_killed_mid_run_then_rerun_is_exact(ray_run, ray_cluster, mixed_corpus, tmp_path):
    store, folder = tmp_path / "store", mixed_corpus["small"]
    config = tmp_path / "ray.yaml"  # what settings_for(store, batch_files=4) sets, for the CLI
    config.write_text(yaml.safe_dump({"ocr": {"kind": "none"}, "ingest": {
        "batch_files": 4, "ray": {"read": {"actors": 2, "batch_size": 4},
                                  "embed": {"batch_size": 8, "resources": {"node2": 1}}}}}))
    proc = subprocess.Popen([sys.executable, "-m", "mmrag_li.cli", "ingest", str(folder), "--store", str(store),
                             "--config", str(config), "--executor", "ray", "--ray-address", ray_cluster.address,
                             "--json", "-q"], env=RAY_ENV, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        assert _wait_for(lambda: status_counts(store).get("done", 0) >= 4 or proc.poll() is not None)
        assert proc.poll() is None, "the driver finished before it could be killed:\n" + proc.stdout.read()[-3000:]
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate()
    killed_at = status_counts(store)
    assert 4 <= killed_at.get("done", 0) < len(mixed_corpus["small_good"]), killed_at

    rag = MultiModalRAG(settings_for(store))
    report = rag.ingest(folder, executor="ray", ray_address=ray_cluster.address, progress=False)
    assert report.executor["lost"] == 0
    assert set(failures(report)) == {str(p) for p in mixed_corpus["small_hostile"]}
    assert_store_matches_manifest(rag)  # nothing pending, no orphan, no duplicate
    assert stored_ids(rag.stores) == expected_small(ray_run, mixed_corpus), f"killed at {killed_at}"
    rag.close()


def test_worker_actor_killed_mid_run_is_restarted(ray_run, ray_cluster, mixed_corpus, tmp_path):
    store = tmp_path / "store"
    rag = MultiModalRAG(settings_for(store, embed_batch=2))
    box = {}

    def ingest():
        try:
            box["report"] = rag.ingest(mixed_corpus["small"], executor="ray", ray_address=ray_cluster.address,
                                       progress=False)
        except BaseException as exc:  # shown by the assertion below
            box["error"] = exc

    run = threading.Thread(target=ingest)
    run.start()
    try:  # the embed actor lives longest (the read stage may finish first): kill it once batches came back
        assert _wait_for(lambda: status_counts(store).get("done", 0) >= 2 and ray_cluster.actor_pids("EmbedStage")
                         or not run.is_alive())
        victims = ray_cluster.actor_pids("EmbedStage")
        assert run.is_alive() and victims, f"the run ended before an embed actor could be killed: {box}"
        os.kill(min(victims), signal.SIGKILL)
        # Ray restarts the actor (max_restarts) and retries its batch (max_task_retries): a new process.
        assert _wait_for(lambda: bool(ray_cluster.actor_pids("EmbedStage") - victims), timeout=180), \
            "no embed actor came back"
    finally:
        run.join(timeout=600)
    assert "error" not in box, box
    report = box["report"]
    assert report.executor["lost"] == 0 and report.executor["rounds"] == 1  # retried by Ray, not re-sent by us
    assert set(failures(report)) == {str(p) for p in mixed_corpus["small_hostile"]}
    assert_store_matches_manifest(rag)
    assert stored_ids(rag.stores) == expected_small(ray_run, mixed_corpus)
    rag.close()


def test_urls_and_unknown_executors_are_refused_before_anything(tmp_path):
    from mmrag_li.errors import UsageError

    rag = MultiModalRAG(settings_for(tmp_path / "store"))
    with pytest.raises(UsageError, match="mount the bucket"):
        rag.ingest("s3://bucket/scans", executor="ray")
    with pytest.raises(UsageError, match="unknown executor"):
        rag.ingest(tmp_path, executor="dask")
    assert not (tmp_path / "store" / "manifest.sqlite").exists()
