"""What a fresh ``mmrag`` process imports (issue 14): ``stats`` and ``inspect`` load no model at all,
a text ``search`` on a store of the packaged models loads neither torch, transformers,
sentence-transformers, an OCR engine, the captioner, LlamaIndex LLM modules nor lancedb. These are
import checks, not timings (timings: benchmarks/cold_start.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NEVER = ("torch", "transformers", "sentence_transformers", "lancedb", "efficientnet_lite_pytorch",
         "rapidocr_onnxruntime", "onnxruntime", "pytesseract", "cv2", "llama_index.llms.openai", "openai",
         "llama_index.embeddings.huggingface")
NO_MODEL = NEVER + ("tokenizers", "mmrag_li.embeddings.minilm")

PROBE = """
import json, sys
from mmrag_li.cli import main
rc = main({argv!r})
sys.stderr.write("\\nPROBE " + json.dumps({{"rc": rc, "modules": sorted(m for m in {watch!r} if m in sys.modules)}}) + "\\n")
"""


def env():
    return dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(ROOT))


def run_cli(argv, watch=NO_MODEL, **extra_env):
    proc = subprocess.run([sys.executable, "-c", PROBE.format(argv=argv, watch=watch)], cwd=str(ROOT),
                          env=dict(env(), **extra_env),
                          capture_output=True, text=True, timeout=900)
    line = [ln for ln in proc.stderr.splitlines() if ln.startswith("PROBE ")]
    assert line, proc.stderr[-3000:]
    return json.loads(line[-1][len("PROBE "):]), proc.stdout


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("cold")
    docs = root / "docs"
    docs.mkdir()
    (docs / "invoice_note.md").write_text("# Invoice 4711\n\nThe total of invoice 4711 is 1,939.00 EUR, due in March.\n")
    (docs / "hiking.md").write_text("# Hiking\n\nWe walked along the ridge to the lake and back before sunset.\n")
    store = root / "store"
    proc = subprocess.run([sys.executable, "-m", "mmrag_li.cli", "ingest", str(docs), "--store", str(store), "-q",
                           "--json"], cwd=str(ROOT), env=env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return store, docs


def test_stats_and_inspect_load_no_model(store):
    store_dir, docs = store
    res, out = run_cli(["stats", "--store", str(store_dir), "--json"])
    assert res == {"rc": 0, "modules": []}, res
    assert json.loads(out)["nodes"]["text"] >= 2
    res, out = run_cli(["inspect", str(docs / "invoice_note.md"), "--store", str(store_dir), "--json"])
    assert res == {"rc": 0, "modules": []}, res
    assert "4711" in json.dumps(json.loads(out))


def test_text_search_imports_no_torch_lancedb_ocr_or_llm(store):
    store_dir, _docs = store
    res, out = run_cli(["search", "invoice total", "--store", str(store_dir), "--json"], watch=NEVER)
    assert res == {"rc": 0, "modules": []}, res
    results = json.loads(out)["results"]
    assert results and results[0]["source"].endswith("invoice_note.md")


def test_search_that_calibrates_the_store_imports_no_torch(store):
    """The first search on a store without calibration embeds the null queries in that process
    (calibrated fusion); it uses the torch-free query encoder too, not sentence-transformers."""
    store_dir, _docs = store
    (store_dir / "calibration.json").unlink(missing_ok=True)
    res, out = run_cli(["search", "invoice total", "--store", str(store_dir), "--json"], watch=NEVER,
                       MMRAG_RETRIEVAL__CALIBRATION_MIN_NODES="1")
    assert res == {"rc": 0, "modules": []}, res
    assert (store_dir / "calibration.json").is_file()  # it did calibrate
    assert json.loads(out)["results"][0]["source"].endswith("invoice_note.md")
