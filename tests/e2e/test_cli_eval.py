"""`mmrag eval --json` end to end: a tiny corpus in tmp, real OCR, real packaged models, the CLI."""

from __future__ import annotations

import json
import shutil

import pytest
from PIL import ImageOps

from mmrag_li import cli
from tests.conftest import DATA_DIR, render_lines

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def eval_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalset")
    corpus = root / "corpus"
    corpus.mkdir()
    render_lines(["INVOICE 4711", "Customer: Muller GmbH, Berlin", "Total 1,939.00"]).save(corpus / "invoice_4711.png")
    render_lines(["RECEIPT 20931", "CAFE MORGENROT", "Cappuccino 3.60"]).save(corpus / "receipt_20931.png")
    (corpus / "travel.md").write_text("# Travel policy\n\nHotels are reimbursed up to 120 EUR per night; "
                                      "submit receipts within 30 days.\n")
    shutil.copyfile(DATA_DIR / "skimage_rocket.jpg", corpus / "rocket.jpg")
    qdir = root / "query_images"
    qdir.mkdir()
    from PIL import Image

    with Image.open(DATA_DIR / "skimage_rocket.jpg") as im:
        ImageOps.mirror(im.convert("RGB")).save(qdir / "rocket_flipped.png")
    queries = root / "queries.jsonl"
    rows = [
        {"id": "inv", "query": "invoice 4711", "relevant": ["invoice_4711.png"], "type": "doc-keyword"},
        {"id": "total", "query": "What is the total of invoice 4711?", "relevant": ["invoice_4711.png"],
         "type": "doc-question", "answer": "1,939.00"},
        {"id": "hotel", "query": "hotel costs per night", "relevant": ["travel.md"], "type": "doc-paraphrase"},
        {"id": "img", "query_image": "../query_images/rocket_flipped.png", "relevant": ["rocket.jpg"],
         "type": "query-by-image"},
    ]
    queries.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return root, corpus, queries


def _run(capsys, argv):
    code = cli.main(argv)
    out = capsys.readouterr().out
    return code, out


def test_eval_json_through_cli(eval_setup, capsys, tmp_path):
    root, corpus, queries = eval_setup
    out_dir = tmp_path / "report"
    code, out = _run(capsys, ["eval", "--queries", str(queries), "--corpus", str(corpus),
                              "--store", str(root / "store"), "--k", "1,3", "--ablate", "ocr,tiling",
                              "--baselines", "--out", str(out_dir), "--json"])
    assert code == 0
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert len(lines) == 1, "--json prints exactly one JSON document on stdout"
    report = json.loads(lines[0])

    # shape (DESIGN.md contract)
    assert report["queries"] == 4
    assert set(report["retrievers"]) >= {"image", "caption", "ocr", "text", "bm25", "image2image"}
    for m in list(report["retrievers"].values()) + [report["fused"]]:
        assert {"recall@1", "recall@3", "ndcg@1", "ndcg@3", "mrr", "queries"} <= set(m)
        assert all(0.0 <= m[k] <= 1.0 for k in m if k != "queries")
    assert report["retrievers"]["image2image"]["queries"] == 1  # image queries only
    assert set(report["ablations"]) == {"fused -ocr", "fused -tiling"}
    assert set(report["baselines"]) >= {"seed_one_model", "llamaindex_mm_index"}
    assert set(report["by_type"]) == {"doc-keyword", "doc-question", "doc-paraphrase", "query-by-image"}

    # BM25 and fused find the invoice by its number at rank 1
    inv = next(q for q in report["per_query"] if q["id"] == "inv")
    assert inv["ranks"]["bm25"] == 1
    assert inv["ranks"]["fused"] == 1
    assert report["by_type"]["doc-keyword"]["fused"]["recall@1"] == 1.0
    # the near-duplicate query image finds its original
    img = next(q for q in report["per_query"] if q["id"] == "img")
    assert img["ranks"]["image2image"] == 1

    # answer check ran for the query with an expected answer
    assert report["answers"]["queries"] == 1
    assert report["answers"]["rows"][0]["citation_relevant"] is True

    # files beside the report
    assert (out_dir / "report.json").is_file() and (out_dir / "report.md").is_file()
    assert (out_dir / "recall.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out_dir / "report.md").read_text()
    assert md.startswith("# Retrieval evaluation (4 queries") and "| **fused** |" in md and "| bm25 |" in md


def test_eval_usage_errors(eval_setup, capsys, tmp_path):
    _root, _corpus, queries = eval_setup
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "x"}\n')
    assert cli.main(["eval", "--queries", str(bad), "--store", str(tmp_path / "store"), "--json"]) == 2
    assert cli.main(["eval", "--queries", str(tmp_path / "missing.jsonl"), "--json"]) == 2
    assert cli.main(["eval", "--queries", str(queries), "--k", "0,5", "--json"]) == 2
    assert cli.main(["eval", "--queries", str(queries), "--ablate", "colour", "--json"]) == 2
    assert cli.main(["eval", "--queries", str(queries), "--corpus", str(tmp_path / "nope"), "--json"]) == 2
    assert capsys.readouterr().out == ""  # nothing on stdout for usage errors
