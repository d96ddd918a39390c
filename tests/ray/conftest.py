"""One two-node Ray cluster on this machine for the Ray executor tests, and their input folder.

The cluster is started once per session with ``ray start`` (a head with 2 CPUs and a second node
with 1 CPU and the custom resource ``node2``, both in a private ``--temp-dir`` and on free ports)
and stopped by process id: every process of the two ``ray start`` process groups and their
descendants. Never ``ray stop``: it kills every Ray process on the machine by name.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Set

import pytest

from tests.conftest import DENSE_TEXT, render_lines, wrap

REPO = Path(__file__).resolve().parents[2]
# Environment of the cluster's processes (their workers inherit it) and of driver subprocesses.
RAY_ENV = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", RAY_USAGE_STATS_ENABLED="0",
               PYTHONUNBUFFERED="1", PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH"))
                                                                 if p))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RayCluster:
    """The processes this session started; ``address`` is what drivers connect to."""

    def __init__(self, temp_dir: str):
        self.temp_dir = temp_dir
        self.groups: List[int] = []  # process group ids of the `ray start` commands (their daemons keep them)
        self.address = ""
        self.node2 = ""  # Ray node id of the second node

    def start(self, *args: str) -> str:
        proc = subprocess.Popen(["ray", "start", *args, f"--temp-dir={self.temp_dir}", "--disable-usage-stats"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=RAY_ENV,
                                start_new_session=True)
        self.groups.append(proc.pid)
        out, _ = proc.communicate(timeout=180)
        assert proc.returncode == 0, out[-3000:]
        return out

    def processes(self) -> Set["object"]:
        """Every live process of this cluster: the daemons (by process group) and their descendants
        (workers get their own group but stay children of their raylet)."""
        import psutil

        found = set()
        for p in psutil.process_iter(["pid", "cmdline"]):
            try:
                if os.getpgid(p.pid) in self.groups or self.temp_dir in " ".join(p.info["cmdline"] or []):
                    found.add(p)
                    found.update(p.children(recursive=True))
            except (psutil.Error, OSError):
                continue
        return found

    def actor_pids(self, stage: str) -> Set[int]:
        """Live actor processes of a Ray Data stage, e.g. ``EmbedStage`` (title ``ray::MapWorker(MapBatches(EmbedStage))``)."""
        import psutil

        pids = set()
        for p in self.processes():
            try:
                if p.status() != psutil.STATUS_ZOMBIE and f"MapBatches({stage})" in " ".join(p.cmdline()):
                    pids.add(p.pid)
            except psutil.Error:
                continue
        return pids

    def stop(self) -> None:
        import psutil

        procs = self.processes()
        for p in procs:
            try:
                p.send_signal(signal.SIGKILL)
            except psutil.Error:
                pass
        psutil.wait_procs(list(procs), timeout=15)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_cluster():
    """A head (2 CPUs) and a second node (1 CPU, resource ``node2``); this process is connected as a driver."""
    ray = pytest.importorskip("ray", reason="the Ray executor tests need ray[data] (pip install mmrag_li[ray])")
    # A short temp dir: Ray's Unix socket paths live under it and must stay under 108 bytes.
    cluster = RayCluster(tempfile.mkdtemp(prefix="mmray", dir="/tmp"))
    try:
        port = free_port()
        ports = lambda: [f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}"]
        out = cluster.start("--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
                            f"--dashboard-port={free_port()}", "--node-ip-address=127.0.0.1", *ports())
        found = re.search(r"--address='([^']+)'", out)
        cluster.address = found.group(1) if found else f"127.0.0.1:{port}"
        cluster.start(f"--address={cluster.address}", "--num-cpus=1", "--resources={\"node2\": 1}",
                      "--node-ip-address=127.0.0.1", *ports())
        ray.init(address=cluster.address, log_to_driver=False, logging_level="WARNING")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not cluster.node2:
            cluster.node2 = next((n["NodeID"] for n in ray.nodes() if n["Alive"] and "node2" in n["Resources"]), "")
            time.sleep(0.5)
        assert cluster.node2, "the second node did not join"
        yield cluster
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.stop()


def _pdf(path: Path, lines: List[str], pages: int = 1) -> Path:
    import pymupdf

    doc = pymupdf.open()
    for p in range(pages):
        page = doc.new_page(width=360, height=240)  # small pages: small renders
        for i, line in enumerate(lines):
            page.insert_text((24, 36 + 16 * i), f"{line} (page {p + 1})", fontsize=10)
    doc.save(path)
    doc.close()
    return path


@pytest.fixture(scope="session")
def mixed_corpus(tmp_path_factory) -> Dict[str, object]:
    """~100 files: 34 small text images, 12 PDFs, 48 markdown notes and 6 hostile files (``root``), and a
    30-file copy of some of them (``small``: 10 images, 4 PDFs, 14 notes, 2 hostile) for the kill tests."""
    root = tmp_path_factory.mktemp("ray_corpus")
    good: List[Path] = []
    for i in range(34):
        path = root / "images" / f"scan_{i:03d}.png"
        path.parent.mkdir(exist_ok=True)
        render_lines([f"RAY SCAN {i}", f"code R-{i:05d}"], size=(320, 110), font_px=26).save(path)
        good.append(path)
    for i in range(12):
        path = root / "pdfs" / f"report_{i:02d}.pdf"
        path.parent.mkdir(exist_ok=True)
        good.append(_pdf(path, [f"Report {i}", f"ticket T-{i:04d}"] + wrap(DENSE_TEXT, 60)[:4], pages=1 + i % 2))
    for i in range(48):
        path = root / "notes" / f"note_{i:03d}.md"
        path.parent.mkdir(exist_ok=True)
        path.write_text(f"# Note {i}\n\nNote {i} is about topic {i % 9} and item N-{i:05d}.\n", encoding="utf-8")
        good.append(path)
    bad = root / "bad"
    bad.mkdir()
    png = good[0].read_bytes()
    pdf = good[34].read_bytes()
    (bad / "empty.png").write_bytes(b"")
    (bad / "truncated.png").write_bytes(png[: len(png) // 2])
    (bad / "garbage.pdf").write_bytes(b"%PDF-1.7\n" + bytes(range(256)) * 4)
    (bad / "fake.png").write_text("this is text, not an image\n")
    (bad / "truncated.pdf").write_bytes(pdf[: len(pdf) // 3])
    (bad / "empty.md").write_bytes(b"")
    hostile = sorted(bad.iterdir())
    # A smaller folder for the kill tests: copies (same bytes, hence the same asset and node ids).
    small = tmp_path_factory.mktemp("ray_small")
    picked = {"good": good[:10] + good[34:38] + good[46:60], "hostile": hostile[:2]}
    small_sets: Dict[str, List[Path]] = {}
    for kind, paths in picked.items():
        for p in paths:
            dst = small / p.parent.name / p.name
            dst.parent.mkdir(exist_ok=True)
            shutil.copy2(p, dst)
            small_sets.setdefault(kind, []).append(dst)
    return {"root": root, "good": good, "hostile": hostile, "small": small, "small_good": small_sets["good"],
            "small_hostile": small_sets["hostile"]}

