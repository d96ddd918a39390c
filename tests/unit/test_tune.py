"""Learned fusion: feature building, the model file round trip, the mismatch errors, the honest
recommendation and the fold split. No store, no model: nodes are made by hand."""

from __future__ import annotations

import json

import pytest
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.schema import NodeWithScore, TextNode

from mmrag_li.config import RetrievalConfig
from mmrag_li.errors import MMRAGError
from mmrag_li.evaluation.harness import EvalQuery
from mmrag_li.evaluation.tune import fit_model, recommendation, stratified_folds
from mmrag_li.retrieval.calibration import Calibration, RetrieverCalibration, percentiles
from mmrag_li.retrieval.features import build_features, feature_names, query_features
from mmrag_li.retrieval.fusion import FusionRetriever
from mmrag_li.retrieval.hits import rank_assets
from mmrag_li.retrieval.learned import FusionModel, FusionModelError, LearnedFuser

RETRIEVERS = ["image", "caption", "ocr", "bm25"]


def hit(asset: str, score: float, modality: str = "ocr", **meta) -> NodeWithScore:
    text = meta.pop("text", f"text of {asset}")
    md = {"asset_id": asset, "modality": modality, "source": f"/c/{asset}", **meta}
    return NodeWithScore(node=TextNode(text=text, id_=f"{asset}:{modality}", metadata=md), score=score)


def lists():
    """An identifier query: BM25 and OCR agree on the invoice, image and caption return photos."""
    return {
        "bm25": rank_assets([hit("inv", 7.5, "ocr", mime_type="image/png", ocr_conf=91.0, n_words=40),
                             hit("other", 1.2, "ocr", mime_type="image/png", ocr_conf=80.0, n_words=20)]),
        "ocr": rank_assets([hit("other", 0.55, "ocr"), hit("inv", 0.52, "ocr")]),
        "image": rank_assets([hit("cat", 0.30, "image", mime_type="image/jpeg"), hit("dog", 0.28, "image")]),
        "caption": rank_assets([hit("cat", 0.22, "caption", mime_type="image/jpeg", text="a tabby cat on a sofa")]),
    }


def calibration() -> Calibration:
    """Unrelated queries gave dense top-1 scores around 0.2-0.35 and BM25 up to ~2."""
    def rc(lo, hi):
        vals = [lo + (hi - lo) * i / 99 for i in range(100)]
        return RetrieverCalibration("m", "c", {"all": percentiles(vals)}, {"all": 100})
    return Calibration({"image": rc(0.1, 0.35), "caption": rc(0.1, 0.3), "ocr": rc(0.1, 0.4), "bm25": rc(0.0, 2.0)})


def test_query_features():
    q = query_features('invoice number "4711"', image_query=False)
    assert q["q:digit"] == 1.0 and q["q:quoted"] == 1.0 and q["q:image"] == 0.0 and q["q:long"] == 0.0
    assert query_features("a cat on a sofa", image_query=True)["q:digit"] == 0.0


def test_build_features_rows_and_flags():
    keys, rows = build_features(lists(), "invoice number 4711", RETRIEVERS, calibration(), image_query=False)
    names = feature_names(RETRIEVERS)
    assert len(names) == len(set(names)) and all(len(r) == len(names) for r in rows)
    assert sorted(keys) == ["cat", "dog", "inv", "other"]
    row = dict(zip(names, rows[keys.index("inv")]))
    assert row["bm25:present"] == 1.0 and row["bm25:rrf"] == 1.0  # rank 1 -> 1
    assert row["ocr:present"] == 1.0 and row["ocr:rrf"] == pytest.approx(61 / 62)
    assert row["image:present"] == 0.0 and row["image:rrf"] == 0.0
    assert row["bm25:rrf*digit"] == 1.0 and row["q:digit"] == 1.0
    assert row["bm25:conf"] == 1.0 and row["bm25:active"] == 1.0  # 7.5 is far above unrelated queries
    assert row["c:ocr_conf"] == pytest.approx(0.91) and row["c:image_file"] == 1.0 and row["c:lists"] == 0.5
    cat = dict(zip(names, rows[keys.index("cat")]))
    assert cat["image:active"] == 0.0  # image's best score 0.30 is within its unrelated range: abstains
    assert cat["caption:present"] == 1.0 and cat["c:caption_words"] > 0


def test_build_features_without_calibration_never_abstains():
    keys, rows = build_features(lists(), "a cat", RETRIEVERS, None, image_query=False)
    names = feature_names(RETRIEVERS)
    cat = dict(zip(names, rows[keys.index("cat")]))
    assert cat["image:conf"] == 1.0 and cat["image:active"] == cat["image:rrf"] == 1.0


def _model(tmp_path):
    keys, rows = build_features(lists(), "invoice number 4711", RETRIEVERS, calibration(), False)
    ys = [int(k == "inv") for k in keys]
    return fit_model(rows * 3, ys * 3, RETRIEVERS, {"bm25": "bm25@caption,ocr,text"}, 60), keys, rows


def test_model_file_round_trip(tmp_path):
    model, keys, rows = _model(tmp_path)
    path = model.save(tmp_path / "fusion.json")
    data = json.loads(path.read_text())  # plain JSON, no pickle
    assert data["format"] == "mmrag_li.fusion_model" and data["features"] == feature_names(RETRIEVERS)
    assert data["retrievers"] == RETRIEVERS and data["sklearn_version"] and len(data["coef"]) == len(data["features"])
    again = FusionModel.load(path)
    for r in rows:
        assert again.probability(r) == pytest.approx(model.probability(r), abs=1e-6)
    fuser = LearnedFuser(again, calibration())
    fused = fuser.fuse(lists(), "invoice number 4711")
    assert max(fused, key=fused.get) == "inv"
    assert list(again.weights())[0] in again.features


def test_model_file_errors(tmp_path):
    with pytest.raises(FusionModelError, match="not found: .*nope.json"):
        FusionModel.load(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "something else"}')
    with pytest.raises(FusionModelError, match="bad.json"):
        FusionModel.load(bad)
    assert issubclass(FusionModelError, MMRAGError)


def test_mismatch_error_names_file_and_retrievers(tmp_path):
    model, _k, _r = _model(tmp_path)
    with pytest.raises(FusionModelError) as exc:
        model.check(["image", "caption", "ocr", "text"], None, "fusion.json")
    msg = str(exc.value)
    assert "fusion.json" in msg and "missing here: bm25" in msg and "not in the model: text" in msg
    with pytest.raises(FusionModelError, match="other models"):
        model.check(RETRIEVERS, {"bm25": "bm25@text"}, "fusion.json")
    model.check(RETRIEVERS, {"bm25": "bm25@caption,ocr,text"}, "fusion.json")  # fits: no error


class _Fixed(BaseRetriever):
    def __init__(self, hits):
        super().__init__()
        self.hits = hits

    def _retrieve(self, query_bundle):
        return list(self.hits)


def test_fusion_retriever_learned_fails_clearly(tmp_path):
    model, _k, _r = _model(tmp_path)
    path = model.save(tmp_path / "fusion.json")
    rets = {"image": _Fixed([hit("cat", 0.3, "image")]), "text": _Fixed([hit("inv", 0.5, "text")])}
    fr = FusionRetriever(rets, config=RetrievalConfig(fusion="learned", fusion_model=str(path)))
    with pytest.raises(FusionModelError, match=r"fusion.json.*fitted on retrievers"):
        fr.retrieve_assets("invoice number 4711")
    fr = FusionRetriever(rets, config=RetrievalConfig(fusion="learned"))
    with pytest.raises(FusionModelError, match="fusion_model is not set"):
        fr.retrieve_assets("invoice number 4711")
    fr = FusionRetriever(rets, config=RetrievalConfig(fusion="learned", fusion_model=str(tmp_path / "gone.json")))
    with pytest.raises(FusionModelError, match="gone.json"):
        fr.retrieve_assets("x")


@pytest.mark.parametrize("fusion", ["score_aware", "calibrated"])
def test_calibrated_fusions_without_calibratable_retrievers_are_rrf(fusion):
    rets = {"a": _Fixed([hit("x", 0.9), hit("y", 0.5)]), "b": _Fixed([hit("y", 0.8)])}
    fr = FusionRetriever(rets, config=RetrievalConfig(fusion=fusion))
    plain = FusionRetriever(rets, config=RetrievalConfig(fusion="rrf"))
    assert [h.asset_id for h in fr.retrieve_assets("q")] == [h.asset_id for h in plain.retrieve_assets("q")]
    assert [h.score for h in fr.retrieve_assets("q")] == [h.score for h in plain.retrieve_assets("q")]


def test_recommendation_refuses_when_not_better_out_of_fold():
    ok, why = recommendation({"rrf": {"mrr": 0.70, "recall@5": 0.80}, "learned": {"mrr": 0.69, "recall@5": 0.85}})
    assert not ok and "does not beat RRF" in why[0]
    ok, why = recommendation({"rrf": {"mrr": 0.70, "recall@5": 0.80}, "learned": {"mrr": 0.75, "recall@5": 0.78}})
    assert not ok and "R@5" in why[0]
    ok, why = recommendation({"rrf": {"mrr": 0.70, "recall@5": 0.80}, "learned": {"mrr": 0.75, "recall@5": 0.80}})
    assert ok


def test_stratified_folds_spread_every_type():
    qs = [EvalQuery(qid=f"{t}{i}", text="x", qtype=t) for t in ("a", "b") for i in range(10)]
    folds = stratified_folds(qs, 5, seed=3)
    assert folds == stratified_folds(qs, 5, seed=3)  # deterministic
    for t in ("a", "b"):
        per = [sum(1 for q in qs if q.qtype == t and folds[q.qid] == f) for f in range(5)]
        assert per == [2] * 5


def test_fusion_overrides_for_eval(tmp_path):
    from mmrag_li.errors import UsageError
    from mmrag_li.evaluation.tune import fusion_overrides

    model = tmp_path / "fusion.json"
    model.write_text("{}")
    assert fusion_overrides(None, None) == {}
    assert fusion_overrides("score_aware", None) == {"retrieval.fusion": "score_aware"}
    assert fusion_overrides("calibrated", None) == {"retrieval.fusion": "calibrated"}
    assert fusion_overrides(None, str(model)) == {"retrieval.fusion": "learned", "retrieval.fusion_model": str(model)}
    with pytest.raises(UsageError, match="fusion-model"):
        fusion_overrides("learned", None)
    with pytest.raises(UsageError, match="missing.json"):
        fusion_overrides("learned", str(tmp_path / "missing.json"))
    with pytest.raises(UsageError):
        fusion_overrides("rrf", str(model))
