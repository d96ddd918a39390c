"""`mmrag tune` and `mmrag eval --fusion learned --fusion-model F` end to end, through the CLI, on the
tiny labelled corpus shared with the calibration tests (one store per session)."""

from __future__ import annotations

import json

import pytest

from mmrag_li import cli
from mmrag_li.retrieval.features import feature_names
from mmrag_li.retrieval.learned import FusionModel
from tests.tune_corpus import shared_store

pytestmark = pytest.mark.slow

SYSTEMS = {"rrf", "digit_rule", "score_aware", "score_aware+digit", "calibrated", "calibrated+digit", "learned"}


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """The shared store, tuned once through the CLI: (corpus, model file, report, exit code)."""
    tc = shared_store(tmp_path_factory)
    model = tmp_path_factory.mktemp("tune") / "fusion.json"
    return tc, model


def run(capsys, argv):
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_tune_then_eval_learned(tuned, capsys):
    tc, model = tuned
    code, out, err = run(capsys, ["tune", "--queries", str(tc.queries), "--corpus", str(tc.corpus), "--store",
                                  str(tc.store), "--out", str(model), "--folds", "2", "--json"])
    assert code == 0, err[-2000:]
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert len(lines) == 1, "--json prints one JSON document"
    report = json.loads(lines[0])
    assert report["queries"] == 10 and report["folds"] == 2
    assert set(report["overall"]) == SYSTEMS
    assert set(report["by_type"]) == {"identifier", "photo", "paraphrase"}
    for row in report["overall"].values():
        assert {"recall@1", "recall@5", "mrr"} <= set(row) and all(0 <= v <= 1 for v in row.values())
    assert isinstance(report["recommended"], bool)
    assert report["recommended"] or report["reasons"], "a refusal says why"
    assert report["overall"]["digit_rule"]["recall@1"] >= 0.3  # four identifier queries out of ten

    data = json.loads(model.read_text())
    assert data["format"] == "mmrag_li.fusion_model" and data["kind"] == "logistic_regression"
    assert data["retrievers"] == ["image", "caption", "ocr", "text", "bm25", "image2image"]
    assert data["training"]["queries"] == 10 and "out_of_fold" in data["training"]

    code, out, err = run(capsys, ["eval", "--queries", str(tc.queries), "--corpus", str(tc.corpus), "--store",
                                  str(tc.store), "--fusion", "learned", "--fusion-model", str(model), "--k", "1,5",
                                  "--json"])
    assert code == 0, err[-2000:]
    ev = json.loads(out)
    assert ev["queries"] == 10 and ev["fused"]["recall@5"] >= 0.5


def test_tune_human_output_and_usage_errors(tuned, capsys, tmp_path):
    tc, model = tuned
    code, _out, err = run(capsys, ["eval", "--queries", str(tc.queries), "--store", str(tc.store),
                                   "--fusion", "learned"])
    assert code == 2 and "fusion-model" in err
    code, _out, err = run(capsys, ["eval", "--queries", str(tc.queries), "--store", str(tc.store),
                                   "--fusion-model", str(tmp_path / "missing.json")])
    assert code == 2 and "missing.json" in err
    code, _out, err = run(capsys, ["tune", "--queries", str(tc.queries), "--store", str(tc.store), "--folds", "1"])
    assert code == 2 and "folds" in err


def test_eval_with_model_of_other_retrievers_fails_clearly(tuned, capsys, tmp_path):
    tc, _model = tuned
    names = ["image", "caption", "ocr", "bm25"]  # fitted without "text" and "image2image"
    n = len(feature_names(names))
    other = FusionModel(names, feature_names(names), [0.0] * n, 0.0, [0.0] * n, [1.0] * n).save(tmp_path / "other.json")
    code, _out, err = run(capsys, ["eval", "--queries", str(tc.queries), "--corpus", str(tc.corpus), "--store",
                                   str(tc.store), "--fusion", "learned", "--fusion-model", str(other)])
    assert code == 1
    assert "other.json" in err and "fitted on retrievers" in err and "text" in err
