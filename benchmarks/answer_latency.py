"""Answer latency split (retrieval / prompt build / LLM / verify) for the citation query engine.

    python benchmarks/answer_latency.py --store DIR [--corpus examples/data] [--repeat 3]

Two answerers: the offline extractive one, and an OpenAI-compatible chat endpoint. On a machine
without a model server the endpoint is the project's local test double (tests/fakes), which
replies instantly: that row measures our side of a remote call (evidence, thumbnails, request
encoding, verification), not a model.
"""

import argparse
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

QUESTIONS = [
    "What is the total of invoice 4711?",
    "When did the shipment for order 4711 leave the warehouse?",
    "How much weight can the tripod carry?",
    "Which document mentions the espresso machine?",
    "What is the capital of Peru?",
]


def run(engine, repeat: int):
    rows = []
    for _ in range(repeat):
        for q in QUESTIONS:
            rows.append(engine.query(q).metadata["timings"])
    keys = rows[0].keys()
    return {k: {"p50_ms": round(1000 * statistics.median(r[k] for r in rows), 1),
                "max_ms": round(1000 * max(r[k] for r in rows), 1)} for k in keys}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", required=True)
    ap.add_argument("--corpus", default=str(REPO / "examples" / "data"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--llm-base-url", default=None, help="a real OpenAI-compatible server; default: local test double")
    args = ap.parse_args()

    from mmrag_li.pipeline import MultiModalRAG

    rag = MultiModalRAG.from_config(None, store_dir=args.store)
    rag.ingest([args.corpus], progress=False)
    engine = rag.as_query_engine()
    engine.query(QUESTIONS[0])  # warm-up: model loads, BM25 build
    out = {"extractive": run(engine, args.repeat)}

    def reply(request):
        import re
        text = json.dumps(request["messages"])
        ids = re.findall(r'evidence id=\\"(E\d+)\\"', text)
        return f"The answer is in the evidence [{ids[0]}]." if ids else "I don't know"

    if args.llm_base_url:
        out["remote"] = run(rag.as_query_engine(llm_base_url=args.llm_base_url), args.repeat)
    else:
        from tests.fakes.openai_server import FakeOpenAIServer

        with FakeOpenAIServer([reply]) as srv:
            out["openai_compatible_test_double"] = run(rag.as_query_engine(llm_base_url=srv.base_url), args.repeat)
    print(json.dumps(out, indent=2))
    rag.close()


if __name__ == "__main__":
    main()
