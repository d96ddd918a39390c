"""Eval harness pieces without models: queries file, labels, answer checks, report and plot."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from mmrag_li.evaluation.answers import check_answer, contains_answer, entities
from mmrag_li.evaluation.harness import (
    EvalUsageError,
    build_report,
    labels_for,
    load_queries,
    parse_ablations,
    parse_ks,
    resolve_relevant,
)
from mmrag_li.evaluation.report import plot_recall, render_markdown, write_outputs


def test_parse_ks_and_ablations():
    assert parse_ks("10,1,5,5") == [1, 5, 10]
    assert parse_ks([3]) == [3]
    for bad in ("", "0,5", "a,b"):
        with pytest.raises(EvalUsageError):
            parse_ks(bad)
    assert parse_ablations("ocr, captions") == ["ocr", "captions"]
    assert parse_ablations("all") == ["captions", "ocr", "tiling", "rerank"]
    assert parse_ablations("") == []
    with pytest.raises(EvalUsageError):
        parse_ablations("ocr,colour")


def test_load_queries(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (tmp_path / "q.png").write_bytes(b"x")
    f = tmp_path / "queries.jsonl"
    f.write_text("\n".join([
        json.dumps({"query": "invoice 4711", "relevant": "a.png", "answer": "1,939.00", "type": "kw"}),
        "# a comment",
        "",
        json.dumps({"query_image": "../q.png", "relevant": ["b.pdf#page=2"]}),
    ]))
    qs = load_queries(f, corpus)
    assert [q.qtype for q in qs] == ["kw", "image"]
    assert qs[0].relevant_raw == ["a.png"] and qs[0].answer == "1,939.00" and qs[0].qid == "q1"
    assert qs[1].image == str((tmp_path / "q.png").resolve()) and qs[1].text == ""
    for line, msg in [('{"query": "x"}', "relevant"), ('{"relevant": ["a"]}', "query"), ("[1]", "object"),
                      ("{nope", "JSON"), ('{"query_image": "missing.png", "relevant": ["a"]}', "not found")]:
        f.write_text(line + "\n")
        with pytest.raises(EvalUsageError, match=msg):
            load_queries(f, corpus)
    f.write_text("\n")
    with pytest.raises(EvalUsageError, match="no queries"):
        load_queries(f, corpus)


def test_resolve_relevant_paths_pages_and_ids(tmp_path):
    corpus = tmp_path / "c"
    corpus.mkdir()
    (corpus / "a.png").write_bytes(b"a")
    (corpus / "b.pdf").write_bytes(b"b")
    recs = {str((corpus / "a.png").resolve()): "AAA", str((corpus / "b.pdf").resolve()): "BBB"}
    manifest = SimpleNamespace(
        get=lambda p: SimpleNamespace(asset_id=recs[p], status="done") if p in recs else None,
        by_asset=lambda a: [1] if a == "CCC" else [])
    rag = SimpleNamespace(manifest=manifest)
    f = tmp_path / "q.jsonl"
    f.write_text(json.dumps({"query": "x", "relevant": ["a.png", "b.pdf#page=3", "CCC", "gone.png"]}) + "\n")
    (q,) = load_queries(f, corpus)
    resolve_relevant(rag, [q], corpus)
    assert q.relevant == ["AAA", "BBB#p3", "CCC"]
    assert q.unresolved == ["gone.png"]
    assert q.relevant_assets == ["AAA", "BBB", "CCC"]


def test_labels_page_level():
    rel = ["AAA", "BBB#p3"]
    units = [("BBB", 2), ("BBB", 3), ("AAA", None), ("ZZZ", 1)]
    assert labels_for(units, rel) == ["BBB", "BBB#p3", "AAA", "ZZZ"]


def test_answer_checks_normalise_numbers_and_entities():
    assert contains_answer("The total is EUR 1939.00 [E1]", "1,939.00")["numbers_match"]
    assert contains_answer("Total: 1.939,00", "1,939.00")["numbers_match"]
    assert not contains_answer("Total 1,993.00", "1,939.00")["numbers_match"]
    c = contains_answer("Issued by GRÜNWALD office furniture.", "Grünwald Office Furniture")
    assert c["entities_match"] and not c["has_numbers"]
    assert not contains_answer("Issued by Keller", "Grünwald Office Furniture")["entities_match"]
    assert entities("the Alpine Print & Copy") == ["alpine", "print", "copy"]
    texts = {"A": "INVOICE 4711 Total 1,939.00", "B": "INVOICE 58213 Total 518.90"}
    row = check_answer('"Total 1,939.00" [E1]', "1,939.00", ["B", "A"], texts.__getitem__, ["A"])
    assert row["exact"] and row["citation_contains_answer"] and row["citation_relevant"]
    row = check_answer('"Total 1,939.00" [E1]', "1,939.00", ["B"], texts.__getitem__, ["A"])
    assert not row["citation_contains_answer"] and not row["citation_relevant"]


def _fake_evaluator():
    from mmrag_li.evaluation.harness import EvalQuery, Evaluator

    ev = Evaluator.__new__(Evaluator)
    ev.ks, ev.depth = [1, 5], 10
    ev.rows, ev.curves, ev.latency = {}, {}, {"fused": [0.1, 0.2], "bm25": [0.01]}
    ev.per_query, ev.answer_rows, ev._baselines, ev._source_of = [], [], [SimpleNamespace(name="seed_one_model")], {}
    qs = [EvalQuery(qid="q1", text="invoice 4711", relevant=["A"], qtype="kw"),
          EvalQuery(qid="q2", text="a cat", relevant=["C"], qtype="photo")]
    runs = {"bm25": {"q1": [("A", None)], "q2": [("X", None), ("C", None)]},
            "image": {"q1": [("X", None)], "q2": [("C", None)]},
            "fused": {"q1": [("A", None)], "q2": [("C", None)]},
            "fused -ocr": {"q1": [("X", None)], "q2": [("C", None)]},
            "seed_one_model": {"q1": [], "q2": [("C", None)]}}
    for system, per in runs.items():
        for q in qs:
            ev._score(system, q, per[q.qid])
    for q in qs:
        ev.per_query.append({"id": q.qid, "type": q.qtype, "query": q.text, "query_image": None,
                             "ranks": {"fused": 1}, "fused_top": []})
    return ev, qs


def test_report_shape_markdown_and_plot(tmp_path):
    ev, qs = _fake_evaluator()
    rep = build_report(ev, qs, [])
    assert rep["queries"] == 2
    assert rep["retrievers"]["bm25"] == {"recall@1": 0.5, "recall@5": 1.0, "ndcg@1": 0.5,
                                         "ndcg@5": pytest.approx((1 + 1 / 1.58496) / 2, abs=1e-4),
                                         "mrr": 0.75, "queries": 2}
    assert rep["fused"]["recall@1"] == 1.0
    assert rep["ablations"]["fused -ocr"]["recall@1"] == 0.5
    assert rep["baselines"]["seed_one_model"]["recall@5"] == 0.5
    assert rep["by_type"]["kw"]["best_single"] == "bm25"
    assert rep["by_type"]["photo"]["best_single"] == "image"
    assert rep["recall_curves"]["bm25"][:2] == [0.5, 1.0] and len(rep["recall_curves"]["bm25"]) == 10
    md = render_markdown(rep)
    assert "| **fused** | 2 | 1.000 |" in md and "## Ablations" in md and "| kw | 1 |" in md
    written = write_outputs(rep, md, tmp_path / "out")
    assert [p.rsplit("/", 1)[-1] for p in written] == ["report.json", "report.md", "recall.png"]
    assert json.loads((tmp_path / "out" / "report.json").read_text())["fused"]["recall@1"] == 1.0
    assert plot_recall({"recall_curves": {}}, tmp_path / "none.png") is None
