"""One real store for the command-line tests, built once per session by the real CLI.

The corpus is ``examples/data`` plus one Markdown file whose NAME and TEXT carry terminal control
sequences (ESC, BEL), so the tests can check that human output escapes them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "data"
EVIL_NAME = "evil\x1b[31mred\x07.md"
EVIL_TEXT = "# Zebra notes\n\nThe zebra marmalade \x1b[2J access code is 8842.\n"
CLI_ENV = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
for _var in ("MMRAG_STORE", "MMRAG_SERVER", "MMRAG_API_KEY"):
    CLI_ENV.pop(_var, None)


def mmrag(*args: str, stdin=subprocess.DEVNULL, env=None, timeout: float = 600, cwd=None):
    """Run the real CLI (``python -m mmrag_li.cli``) in a subprocess; returns the CompletedProcess."""
    return subprocess.run([sys.executable, "-m", "mmrag_li.cli", *args], capture_output=True, text=True,
                          stdin=stdin, env=env or CLI_ENV, timeout=timeout, cwd=cwd or REPO)


@dataclass
class IngestedStore:
    """The session store: its corpus folder, store folder and the first ``ingest --json`` run."""

    root: Path
    data: Path
    store: Path
    proc: subprocess.CompletedProcess

    @property
    def files(self) -> List[Path]:
        return sorted(self.data.iterdir())

    def copy(self, dest: Path) -> Path:
        """A private copy of the store (for tests that delete)."""
        shutil.copytree(self.store, dest)
        return dest


@pytest.fixture(scope="session")
def ingested(tmp_path_factory) -> IngestedStore:
    root = tmp_path_factory.mktemp("cli-store")
    data = root / "data"
    shutil.copytree(EXAMPLES, data)
    (data / EVIL_NAME).write_text(EVIL_TEXT, encoding="utf-8")
    store = root / "store"
    proc = mmrag("ingest", str(data), "--store", str(store), "--json")
    return IngestedStore(root, data, store, proc)


@pytest.fixture(scope="session")
def store(ingested) -> Path:
    """The store folder, after checking that the ingest that built it succeeded."""
    assert ingested.proc.returncode == 0, ingested.proc.stderr[-3000:]
    return ingested.store


@pytest.fixture(scope="session")
def asset_id(store, ingested):
    """``asset_id(file_name)`` -> the file's asset id, from ``inspect --json`` (cached)."""
    cache = {}

    def lookup(name: str) -> str:
        if name not in cache:
            proc = mmrag("inspect", str(ingested.data / name), "--store", str(store), "--json")
            assert proc.returncode == 0, proc.stderr[-2000:]
            cache[name] = json.loads(proc.stdout)["asset_id"]
        return cache[name]

    return lookup
