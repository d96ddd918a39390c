"""Calibrated abstention: percentiles/ECDF, the calibration file, and on a small real store (the
session's shared tune corpus) a retriever abstains on an unrelated query and not on a related one."""

from __future__ import annotations

import json

import pytest

from mmrag_li.retrieval.calibrated_fusion import CalibratedFuser, ScoreAwareFuser
from mmrag_li.retrieval.calibration import (CALIBRATION_FILE, Calibration, CalibrationError, RetrieverCalibration,
                                            ecdf, ensure_calibration, n_tokens, percentiles)
from tests.tune_corpus import RELATED, UNRELATED, shared_store

# Floors off: calibration alone must tell signal from noise (every dense retriever returns k hits).
NO_FLOORS = {"image": -1.0, "caption": -1.0, "ocr": -1.0, "text": -1.0, "image2image": -1.0}


def test_percentiles_and_ecdf():
    p = percentiles([float(i) for i in range(101)])
    assert len(p) == 99 and p[0] == pytest.approx(1.0) and p[94] == pytest.approx(95.0)
    assert ecdf(p, -5) == 0.0 and ecdf(p, 500) == 1.0
    assert ecdf(p, 50.0) == pytest.approx(0.5, abs=0.011)
    assert ecdf(p, 10) < ecdf(p, 20) < ecdf(p, 90)
    assert ecdf([], 3.0) == 1.0  # nothing calibrated: full confidence


def test_calibration_file_round_trip_and_staleness(tmp_path):
    cal = Calibration({"text": RetrieverCalibration("minilm", "text", {"all": percentiles([0.1, 0.2, 0.3])},
                                                    {"all": 3})}, {"text": 100}, 1.0, 3, {"text": 0.2})
    path = cal.save(tmp_path / CALIBRATION_FILE)
    again = Calibration.load(path)
    assert again.models() == {"text": "minilm@text"} and again.counts == {"text": 100}
    assert again.confidence("text", 0.25, 3) == pytest.approx(cal.confidence("text", 0.25, 3))
    assert again.abstains("text", 0.2, 3) and not again.abstains("text", 0.9, 3)
    assert not again.abstains("bm25", 0.0, 3)  # uncalibrated retrievers never abstain
    assert not again.is_stale({"text": "minilm@text"}, {"text": 105}, {"text": 0.2})
    assert again.is_stale({"text": "minilm@text"}, {"text": 150}, {"text": 0.2})  # grew by 50 %
    assert again.is_stale({"text": "other@text"}, {"text": 100})  # another model
    assert again.is_stale({"text": "minilm@text"}, {"text": 100}, {"text": 0.0})  # another floor
    assert Calibration.load(tmp_path / "missing.json") is None
    (tmp_path / "bad.json").write_text(json.dumps({"version": 99}))
    with pytest.raises(CalibrationError, match="bad.json"):
        Calibration.load(tmp_path / "bad.json")


@pytest.fixture(scope="module")
def rag(tmp_path_factory):
    from mmrag_li.pipeline import MultiModalRAG

    tc = shared_store(tmp_path_factory)
    with MultiModalRAG.from_config(None, store_dir=str(tc.store)) as r:
        yield r


def _cal(**tops):
    """A calibration whose retrievers' unrelated-query top-1 scores are 0.00, 0.01, ... 0.99 (plus ``tops``'
    scale): confidence(score) == score for scores in 0..1, so the expected fusion is computable by hand."""
    pcts = percentiles([i / 100 for i in range(101)])
    return Calibration({n: RetrieverCalibration("m", n, {"all": pcts}, {"all": 101}) for n in tops})


def test_calibrated_fusion_down_weights_a_retriever_in_its_null_range_but_keeps_it():
    # "image" tops out at 0.50 (its median on unrelated queries): no signal, weight = floor, not 0.
    # "bm25" tops out at 0.99 (above p95): signal; its hits count with their own confidence.
    # "ocr" is confident too, and not in hit_confidence: plain RRF. "i2i" is uncalibrated: plain RRF.
    cal = _cal(image=1, bm25=1, ocr=1)
    ranked = {"image": [("photo", 0.50, None), ("page", 0.40, None)],
              "bm25": [("page", 0.99, None), ("other", 0.60, None)],
              "ocr": [("other", 0.97, None), ("page", 0.96, None)],
              "i2i": [("photo", 0.10, None)]}
    fuser = CalibratedFuser(cal, rrf_k=1, floor=0.25, hit_confidence=["bm25"])
    assert fuser.factors(ranked, "q") == {"image": [0.25, 0.25], "bm25": [pytest.approx(0.99, abs=0.01),
                                                                         pytest.approx(0.60, abs=0.01)],
                                          "ocr": [1.0, 1.0], "i2i": [1.0]}
    fused = fuser.fuse(ranked, "q")
    # by hand, k = 1: photo = 0.25/2 + 1/2 = 0.625; page = 0.25/3 + 0.99/2 + 1/3 = 0.912;
    # other = 0.60/3 + 1/2 = 0.70
    assert fused["photo"] == pytest.approx(0.625)
    assert fused["page"] == pytest.approx(0.25 / 3 + 0.99 / 2 + 1 / 3, abs=0.01)
    assert fused["other"] == pytest.approx(0.70, abs=0.01)
    assert sorted(fused, key=lambda k: -fused[k]) == ["page", "other", "photo"]
    # the abstaining fuser drops "image" entirely; floor 1 and no hit confidence is plain RRF
    assert ScoreAwareFuser(cal, rrf_k=1).fuse(ranked, "q")["photo"] == pytest.approx(0.5)
    plain = CalibratedFuser(cal, rrf_k=1, floor=1.0, hit_confidence=[]).fuse(ranked, "q")
    assert plain == pytest.approx({"photo": 1.0, "page": 1 / 3 + 1 / 2 + 1 / 3, "other": 1 / 3 + 1 / 2})
    with pytest.raises(ValueError, match="floor"):
        CalibratedFuser(cal, floor=1.5)
    # a hit_confidence list is weighted hit by hit even when its top-1 sits in the unrelated range
    # (BM25 on one manual): never the whole-list floor
    weak = {"bm25": [("p31", 0.40, None), ("p14", 0.30, None)], "image": [("photo", 0.50, None)]}
    assert fuser.factors(weak, "q") == {"bm25": [pytest.approx(0.40, abs=0.01), pytest.approx(0.30, abs=0.01)],
                                        "image": [0.25]}


def test_a_store_too_small_to_calibrate_is_plain_rrf(rag):
    # the default calibration_min_nodes (50) is more than this tiny store holds: no retriever gets
    # percentiles, every factor is 1, and the calibrated fusion ranks exactly as plain RRF
    assert rag.settings.retrieval.calibration_min_nodes == 50
    small = rag.as_retriever()
    cal = ensure_calibration(small, refresh=True)
    assert cal.min_nodes == 50 and all(not rc.bins for rc in cal.retrievers.values())
    query = "invoice number 58213"
    per = small.run_all(query)
    from mmrag_li.retrieval.hits import rank_assets

    ranked = {n: rank_assets(h) for n, h in per.items() if h}
    assert all(g == 1.0 for gs in small.fuser().factors(ranked, query).values() for g in gs)
    rrf = rag.as_retriever(fusion="rrf")
    assert [h.key for h in small.retrieve_assets(query, top_k=5)] == [h.key for h in rrf.retrieve_assets(query, top_k=5)]
    # asking for calibration on it (min nodes 0) makes the file stale: recomputed, with percentiles
    tuned = ensure_calibration(rag.as_retriever(calibration_min_nodes=0))
    assert tuned.min_nodes == 0 and all(rc.bins for rc in tuned.retrievers.values())


def test_abstains_on_unrelated_not_on_related(rag):
    # the corpus is far below calibration_min_nodes: calibrate it anyway, to test the mechanism
    retriever = rag.as_retriever(min_scores=NO_FLOORS, calibration_min_nodes=0)
    cal = ensure_calibration(retriever)
    assert (rag.store_dir / CALIBRATION_FILE).is_file()
    assert set(cal.retrievers) == {"image", "caption", "ocr", "text", "bm25"}

    def tops(query):
        out = {}
        for name in cal.retrievers:
            hits = retriever.run_one(name, query, None, None, 5)
            if hits:
                out[name] = max(h.score for h in hits)
        return out

    unrelated = tops(UNRELATED)
    assert {"image", "caption", "ocr", "text"} <= set(unrelated)  # without floors they all return hits...
    assert all(cal.abstains(n, s, n_tokens(UNRELATED)) for n, s in unrelated.items())  # ...and all abstain
    related = tops(RELATED)
    assert not cal.abstains("ocr", related["ocr"], n_tokens(RELATED))
    assert not cal.abstains("bm25", related["bm25"], n_tokens(RELATED))
    assert cal.abstains("text", related["text"], n_tokens(RELATED))  # no text document mentions invoices
    photo = tops("a cat")
    assert not cal.abstains("image", photo["image"], n_tokens("a cat"))

    again = ensure_calibration(retriever)  # same models, floors and store: read back, not recomputed
    assert again.created == cal.created


@pytest.mark.slow
def test_score_aware_fusion_on_store(rag):
    retriever = rag.as_retriever(min_scores=NO_FLOORS, fusion="score_aware", calibration_min_nodes=0)
    assert isinstance(retriever.fuser(), ScoreAwareFuser)
    top = retriever.retrieve_assets("invoice number 58213", top_k=3)
    assert top[0].source.endswith("invoice_58213.png")
    assert retriever.retrieve_assets("a cat", top_k=3)[0].source.endswith("cat_chelsea.jpg")
    per = retriever.run_all("invoice number 58213")
    from mmrag_li.retrieval.hits import rank_assets

    ranked = {n: rank_assets(h) for n, h in per.items() if h}
    active = retriever.fuser().active(ranked, "invoice number 58213")
    assert "bm25" in active and "image" not in active
    calibrated = rag.as_retriever(min_scores=NO_FLOORS, fusion="calibrated", calibration_min_nodes=0)
    assert isinstance(calibrated.fuser(), CalibratedFuser)
    assert calibrated.fuser().factors(ranked, "invoice number 58213")["image"][0] == calibrated.config.calibrated_floor
    assert calibrated.retrieve_assets("invoice number 58213", top_k=3)[0].source.endswith("invoice_58213.png")
    assert calibrated.retrieve_assets("a cat", top_k=3)[0].source.endswith("cat_chelsea.jpg")
