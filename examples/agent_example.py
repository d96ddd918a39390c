"""A LlamaIndex FunctionAgent that uses the multimodal RAG tools.

    OPENAI_API_KEY=... python examples/agent_example.py
    python examples/agent_example.py --llm-base-url http://127.0.0.1:8000/v1 --model qwen2.5-7b-instruct
    python examples/agent_example.py            # offline: calls the tools directly (see below)

Tools (from ``rag.as_tools()``):
  * multimodal_evidence_qa: a cited ([E1]) and verified answer from images, scanned PDFs and text;
  * search_evidence: ranked assets (asset_id, source, page, score, snippet) without answering.

An agent needs a chat model that can call functions. With OPENAI_API_KEY (OpenAI) or
--llm-base-url (any OpenAI-compatible server whose model supports tool calling) the example runs
``FunctionAgent(tools=..., llm=...)``. Offline there is no function-calling model, so the
example calls the two tools itself and says so.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a checkout without installing

from mmrag_li.pipeline import MultiModalRAG  # noqa: E402

QUESTION = "Which document mentions the espresso machine, and when was it serviced?"


def agent_llm(args):
    """The agent's function-calling LLM, or None offline."""
    if args.llm_base_url:
        from llama_index.llms.openai_like import OpenAILike

        return OpenAILike(model=args.model or "local-model", api_base=args.llm_base_url,
                          api_key=os.environ.get("OPENAI_API_KEY") or "not-needed", is_chat_model=True,
                          is_function_calling_model=True, context_window=32768, timeout=120)
    if os.environ.get("OPENAI_API_KEY"):
        from llama_index.llms.openai import OpenAI

        return OpenAI(model=args.model or "gpt-4o-mini", temperature=0.0)
    return None


async def run_agent(tools, llm, question: str) -> None:
    from llama_index.core.agent.workflow import FunctionAgent, ToolCallResult

    agent = FunctionAgent(
        tools=tools,
        llm=llm,
        system_prompt=("You answer questions about the user's documents and images. Use search_evidence to find "
                       "files and multimodal_evidence_qa to get cited, verified answers. Keep the [E#] citations "
                       "and name the source files. If the tool says it cannot verify or does not know, say so."),
    )
    handler = agent.run(question)
    async for ev in handler.stream_events():
        if isinstance(ev, ToolCallResult):
            print(f"  tool {ev.tool_name}({json.dumps(ev.tool_kwargs)}) ->\n    "
                  + str(ev.tool_output.content).replace("\n", "\n    "))
    result = await handler
    print(f"\nagent> {result}")


def run_tools_directly(tools, question: str) -> None:
    by_name = {t.metadata.name: t for t in tools}
    print("No function-calling model is configured (set OPENAI_API_KEY, or pass --llm-base-url for a local "
          "OpenAI-compatible server), so there is no agent to decide which tool to call. Calling the tools "
          "directly instead.\n")
    hits = by_name["search_evidence"].call(query=question, k=3).raw_output
    print("search_evidence ->")
    for h in hits:
        page = f" page {h['page']}" if h.get("page") is not None else ""
        print(f"  {h['score']}  {h['source']}{page}: {h['snippet'][:100]}")
    out = by_name["multimodal_evidence_qa"].call(question)
    print("\nmultimodal_evidence_qa ->\n  " + out.content.replace("\n", "\n  "))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(HERE / "data"))
    ap.add_argument("--store", default=os.environ.get("MMRAG_STORE", ".mmrag-agent-example"))
    ap.add_argument("--config", default=None)
    ap.add_argument("--model", default=None, help="agent model (and answering model with --llm-base-url)")
    ap.add_argument("--llm-base-url", default=None, help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1")
    ap.add_argument("--question", default=QUESTION)
    args = ap.parse_args()

    overrides = {"llm.model": args.model} if args.model else {}
    if os.environ.get("OPENAI_API_KEY") and not args.llm_base_url:
        overrides["llm.backend"] = "openai"
    rag = MultiModalRAG.from_config(args.config, store_dir=args.store, **overrides)
    report = rag.ingest([args.data])
    print(f"ingested: {report.to_dict() if hasattr(report, 'to_dict') else report}", file=sys.stderr)

    tools = rag.as_tools(llm_base_url=args.llm_base_url)
    print(f"question: {args.question}\n")
    llm = agent_llm(args)
    if llm is None:
        run_tools_directly(tools, args.question)
    else:
        asyncio.run(run_agent(tools, llm, args.question))
    rag.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
