"""Multi-turn chat over images, scanned PDFs and notes, with cited and verified answers.

    python examples/chat_example.py                       # offline: extractive answers
    python examples/chat_example.py --interactive         # type your own questions
    python examples/chat_example.py --llm-base-url http://127.0.0.1:8000/v1 --model qwen2-vl
    OPENAI_API_KEY=... python examples/chat_example.py --backend openai --model gpt-4o-mini

Ingests examples/data/ (or --data DIR) into --store (default: ./.mmrag-chat-example), then runs a
short scripted conversation whose follow-ups lean on earlier turns ("Who issued it?"). Each answer
prints its citations (E# -> file, page) and whether the verifier accepted it. Without an LLM the
answerer is extractive: it quotes evidence lines and says "I don't know" when nothing fits.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a checkout without installing

from mmrag_li.pipeline import MultiModalRAG  # noqa: E402

SCRIPT = [
    "What is the total of invoice 4711?",
    "Who issued it?",
    "How much weight can the tripod carry?",
    "What is the capital of Peru?",
]


def show(resp) -> None:
    meta = getattr(resp, "metadata", None) or {}
    print(f"assistant> {resp}")
    if meta.get("standalone_question"):
        print(f"  (standalone question: {meta['standalone_question']})")
    cited = set(meta.get("citation_ids") or [])
    for ev in meta.get("evidence") or []:
        if ev["id"] in cited:
            page = f", page {ev['page']}" if ev.get("page") is not None else ""
            print(f"  [{ev['id']}] {ev['source']}{page}  (asset {ev['asset_id'][:12]}, score {ev['score']})")
    print(f"  verified={meta.get('verified')}  timings={meta.get('timings')}")
    reasons = (meta.get("verification") or {}).get("reasons")
    if reasons:
        print(f"  verification: {'; '.join(reasons)}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(HERE / "data"), help="folder or file to ingest")
    ap.add_argument("--store", default=os.environ.get("MMRAG_STORE", ".mmrag-chat-example"))
    ap.add_argument("--config", default=None, help="YAML config (default: offline defaults)")
    ap.add_argument("--backend", choices=["extractive", "openai", "openai_like"], default=None)
    ap.add_argument("--model", default=None, help="chat model name for openai / openai_like")
    ap.add_argument("--llm-base-url", default=None, help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1")
    ap.add_argument("--interactive", action="store_true", help="chat on stdin after the scripted turns")
    ap.add_argument("--stream", action="store_true", help="stream answers token by token")
    args = ap.parse_args()

    overrides = {}
    if args.backend:
        overrides["llm.backend"] = args.backend
    if args.model:
        overrides["llm.model"] = args.model
    rag = MultiModalRAG.from_config(args.config, store_dir=args.store, **overrides)

    t = time.perf_counter()
    report = rag.ingest([args.data])
    print(f"ingested {args.data} in {time.perf_counter() - t:.1f}s: "
          f"{report.to_dict() if hasattr(report, 'to_dict') else report}", file=sys.stderr)

    chat = rag.as_chat_engine(llm_base_url=args.llm_base_url)
    mode = "extractive (no generative model configured)" if chat.query_engine.llm is None else \
        type(chat.query_engine.llm).__name__
    print(f"answerer: {mode}\n")

    def turn(question: str) -> None:
        print(f"user> {question}")
        if args.stream:
            resp = chat.stream_chat(question)
            print("assistant> ", end="", flush=True)
            for tok in resp.response_gen:
                print(tok, end="", flush=True)
            print()
        else:
            show(chat.chat(question))
        print()

    for q in SCRIPT:
        turn(q)
    if args.interactive:
        print("(empty line or 'exit' to quit, 'reset' to forget the conversation)")
        while True:
            try:
                q = input("user> ").strip()
            except EOFError:
                break
            if q in ("", "exit", "quit"):
                break
            if q == "reset":
                chat.reset()
                continue
            show(chat.chat(q))
            print()
    rag.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
