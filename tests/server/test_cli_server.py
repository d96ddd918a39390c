"""The CLI and the server print the same documents: ``mmrag search|query --server URL --json``
equals the server's JSON, and a cold ``mmrag search --json`` equals ``/api/search``.
``mmrag serve --host 0.0.0.0`` warns before it loads anything."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from mmrag_li.server.run import host_warning, is_loopback
from tests.server.conftest import REPO, free_port

ENV = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
ENV.pop("MMRAG_SERVER", None)
ENV.pop("MMRAG_STORE", None)


def mmrag(*args: str, env=None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mmrag_li.cli", *args], capture_output=True, text=True,
                          env=env or ENV, timeout=timeout, cwd=REPO)


def cli_has(sub: str, flag: str) -> bool:
    return flag in mmrag(sub, "--help", timeout=120).stdout


def test_loopback_and_warning():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    assert host_warning("127.0.0.1", False) is None
    msg = host_warning("0.0.0.0", False)
    assert msg.startswith("WARNING") and "server.api_keys" in msg


def test_search_and_query_via_server_equal_server_json(live, corpus):
    if not cli_has("search", "--server"):
        pytest.skip("mmrag search has no --server yet (CLI edit requested in /work/coord/CONTRACTS.md)")
    from mmrag_li.server.client import ServerClient

    api = ServerClient(live, api_key="")
    proc = mmrag("search", "invoice total", "--k", "3", "--server", live, "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout) == api.search("invoice total", k=3)
    env = dict(ENV, MMRAG_SERVER=live)
    proc = mmrag("query", "What is the invoice total?", "--json", env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["answer"] == api.query("What is the invoice total?")["answer"]
    human = mmrag("search", "invoice total", "--server", live)
    assert human.returncode == 0 and "invoice_4711.png" in human.stdout
    bad = mmrag("search", "x", "--server", "http://127.0.0.1:9", "--json")
    assert bad.returncode == 1 and "cannot reach" in bad.stderr


def test_cold_cli_search_equals_api(client, corpus):
    proc = mmrag("search", "invoice total", "--k", "3", "--store", str(corpus.store), "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout) == client.get("/api/search", params={"q": "invoice total", "k": 3}).json()


def test_serve_on_all_interfaces_warns(corpus):
    if not cli_has("serve", "--host"):
        pytest.skip("mmrag has no serve command yet (CLI edit requested in /work/coord/CONTRACTS.md)")
    proc = subprocess.Popen([sys.executable, "-m", "mmrag_li.cli", "serve", "--host", "0.0.0.0", "--port",
                             str(free_port()), "--store", str(corpus.store)], stderr=subprocess.PIPE, text=True,
                            env=ENV, cwd=REPO)
    try:
        deadline = time.monotonic() + 120
        seen = ""
        while "WARNING" not in seen and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            seen += line
        assert "WARNING" in seen and "0.0.0.0" in seen
    finally:
        proc.terminate()
        proc.wait(timeout=60)
