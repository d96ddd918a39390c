"""The command-line contract (DESIGN.md) on the real example data: real OCR, models, store.

One real subprocess proves that ``--json`` keeps stdout clean and that exit codes hold; the other
commands run in-process through ``mmrag_li.cli.main`` so the models load once.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageOps

from mmrag_li.cli import main
from tests.e2e.conftest import EXAMPLES


def run_cli(capsys, *args):
    code = main(list(args))
    out = capsys.readouterr().out
    return code, json.loads(out) if "--json" in args else out


@pytest.fixture(scope="module")
def corpus(ingested):
    """The session store (tests/e2e/conftest.py): examples/data ingested by a real subprocess."""
    return ingested.root, ingested.data, ingested.store, ingested.proc


def test_ingest_json_is_the_only_stdout_and_counts_nodes(corpus):
    _root, data, _store, proc = corpus
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)  # exactly one JSON document, nothing else
    assert report["files"] == len(list(data.iterdir()))
    assert report["failed"] == []
    nodes = report["nodes"]
    assert nodes["image"] >= 3 and nodes["page"] >= 3 and nodes["ocr"] >= 2 and nodes["text"] >= 2
    assert nodes["caption"] >= 2
    assert {"files", "nodes", "failed", "skipped_unchanged", "seconds"} <= set(report)


def test_reingest_skips_unchanged_files(corpus, capsys):
    _root, data, store, _ = corpus
    code, report = run_cli(capsys, "ingest", str(data), "--store", str(store), "--json", "-q")
    assert code == 0
    assert report["skipped_unchanged"] == report["files"]
    assert sum(report["nodes"].values()) == 0


def test_inspect_shows_ocr_words_with_boxes_and_confidence(corpus, capsys):
    _root, data, store, _ = corpus
    code, info = run_cli(capsys, "inspect", str(data / "invoice_4711.png"), "--store", str(store), "--json")
    assert code == 0 and info["source"].endswith("invoice_4711.png")
    ocr = [n for n in info["nodes"] if n["modality"] == "ocr"]
    assert ocr and "4711" in ocr[0]["text"]
    meta = ocr[0]["metadata"]
    assert meta["ocr_engine"] == "tesseract" and 0 < meta["ocr_conf"] <= 100
    w, h = meta["width"], meta["height"]
    word = next(x for x in meta["words"] if x["text"] == "4711")
    x0, y0, x1, y1 = word["bbox"]
    assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h and word["conf"] > 50
    # the scanned PDF page (no text layer) was OCRed, with the render's dpi
    code, scan = run_cli(capsys, "inspect", str(data / "delivery_note_scan.pdf"), "--store", str(store), "--json")
    page_ocr = [n for n in scan["nodes"] if n["modality"] == "ocr"]
    assert page_ocr and page_ocr[0]["metadata"]["page"] == 1 and page_ocr[0]["metadata"]["dpi"]
    assert "DELIVERY" in page_ocr[0]["text"].upper()
    # human-readable output names the words and boxes too
    code, text = run_cli(capsys, "inspect", str(data / "invoice_4711.png"), "--store", str(store))
    assert "bbox=" in text and "conf=" in text


def test_search_ranks_photos_and_documents(corpus, capsys):
    _root, _data, store, _ = corpus
    code, res = run_cli(capsys, "search", "a photo of a cat", "--store", str(store), "--json")
    assert code == 0
    top = res["results"][0]
    assert top["source"].endswith("cat_chelsea.jpg")
    assert {"asset_id", "source", "page", "score", "scores"} <= set(top)
    assert top["scores"]["image"] > 0.4  # the image retriever itself found it
    sources = [r["source"] for r in res["results"]]
    assert len(sources) == len(set(sources))  # one entry per asset

    code, res = run_cli(capsys, "search", "delivery note shipment", "--store", str(store), "--json")
    assert res["results"][0]["source"].endswith("delivery_note_scan.pdf")
    assert res["results"][0]["page"] == 1


def test_search_by_image_finds_the_near_duplicate(corpus, capsys, tmp_path):
    _root, data, store, _ = corpus
    with Image.open(data / "cat_chelsea.jpg") as im:
        query = ImageOps.mirror(im.convert("RGB")).crop((20, 10, im.width - 30, im.height - 15)).resize((300, 200))
    q = tmp_path / "query_cat.jpg"
    query.save(q, quality=80)
    code, res = run_cli(capsys, "search", "--image", str(q), "--store", str(store), "--json")
    assert code == 0
    assert res["results"][0]["source"].endswith("cat_chelsea.jpg")
    assert res["results"][0]["scores"]["image2image"] > 0.9


def test_query_answers_with_verified_citations(corpus, capsys):
    _root, _data, store, _ = corpus
    code, ans = run_cli(capsys, "query", "What is the total of invoice 4711?", "--store", str(store), "--json",
                        "--extractive")
    assert code == 0
    assert ans["verified"] is True, ans["verification"]
    assert "1,939.00" in ans["answer"]
    assert ans["citations"] and {c["asset_id"] for c in ans["citations"]} <= {s["asset_id"] for s in ans["sources"]}
    assert all({"id", "asset_id", "source", "page", "snippet", "regions"} <= set(c) for c in ans["citations"])
    assert [c["id"] for c in ans["citations"]] == ans["citation_ids"]
    assert {"answer", "citations", "verified", "verification", "sources"} <= set(ans)

    code, ans = run_cli(capsys, "query", "What is the capital of Peru?", "--store", str(store), "--json",
                        "--extractive")
    assert ans["answer"] == "I don't know" and ans["citations"] == []


def test_stats_and_delete(corpus, capsys, tmp_path):
    _root, data, store, _ = corpus
    code, stats = run_cli(capsys, "stats", "--store", str(store), "--json")
    assert code == 0 and stats["assets"] == len(list(data.iterdir()))
    assert stats["nodes"]["image"] >= 3 and stats["nodes"]["ocr"] >= 2
    # delete works on a copy of the store so other tests keep theirs
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    code, info = run_cli(capsys, "inspect", str(data / "coffee_cup.jpg"), "--store", str(copy), "--json")
    code, out = run_cli(capsys, "delete", info["asset_id"], "--store", str(copy), "--json", "--yes")
    assert code == 0 and out["deleted_nodes"] == len(info["nodes"])
    code, stats2 = run_cli(capsys, "stats", "--store", str(copy), "--json")
    assert stats2["assets"] == stats["assets"] - 1


def test_bad_files_are_reported_and_good_ones_stored(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(EXAMPLES / "invoice_4711.png", folder / "good.png")
    (folder / "notes.md").write_text("# Notes\n\nThe shipment arrives on Monday.\n")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "fake.png").write_text("this is not an image at all")
    png = (EXAMPLES / "invoice_4711.png").read_bytes()
    (folder / "truncated.png").write_bytes(png[: len(png) // 3])
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-m", "mmrag_li.cli", "ingest", str(folder), "--store",
                           str(tmp_path / "st"), "--json", "-q"], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 3, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    failed = {Path(f["path"]).name: f["reason"] for f in report["failed"]}
    assert set(failed) == {"empty.jpg", "fake.png", "truncated.png"}
    assert "empty" in failed["empty.jpg"]
    assert all(reason for reason in failed.values())
    assert report["nodes"]["image"] == 1 and report["nodes"]["text"] >= 1


def test_usage_and_unknown_targets(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["ingest"])  # missing PATH
    assert exc.value.code == 2
    assert main(["inspect", "no-such-asset", "--store", str(tmp_path / "s")]) == 1
    assert main(["search", "--store", str(tmp_path / "s")]) == 2


def test_query_with_llm_base_url_sends_images_and_verifies_the_reply(corpus, capsys):
    """`--llm-base-url` talks to an OpenAI-compatible server (here the labelled local test double)."""
    from tests.fakes.openai_server import FakeOpenAIServer

    def reply(request):
        # answer from whichever evidence id holds the invoice, as a real model would
        text = " ".join(p.get("text", "") for m in request["messages"] if isinstance(m["content"], list)
                        for p in m["content"] if p.get("type") == "text")
        import re
        for block in re.findall(r'<evidence id="(E\d+)"(.*?)</evidence>', text, flags=re.S):
            if "1,939.00" in block[1]:
                return f"The invoice total is 1,939.00 EUR [{block[0]}]."
        return "I don't know"

    _root, _data, store, _ = corpus
    with FakeOpenAIServer([reply]) as srv:
        code, ans = run_cli(capsys, "query", "What is the total of invoice 4711?", "--store", str(store),
                            "--json", "--llm-base-url", srv.base_url, "--llm-model", "fake-vlm")
        request = srv.requests[0]
    assert code == 0 and ans["verified"] is True, ans
    assert "1,939.00" in ans["answer"] and ans["extractive"] is False
    parts = [p for m in request["messages"] if isinstance(m["content"], list) for p in m["content"]]
    assert any(p["type"] == "image_url" and p["image_url"]["url"].startswith("data:image/") for p in parts)
    system = next(m for m in request["messages"] if m["role"] == "system")
    assert "cite" in str(system["content"]).lower()
