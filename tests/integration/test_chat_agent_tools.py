"""Agent tools (`make_tools`) called directly and through a LlamaIndex FunctionAgent.

The agent's function-calling LLM and the answering LLM are local OpenAI-compatible HTTP servers
(test doubles at the network boundary) that reply with scripted tool calls / answers. Evidence is
real tesseract OCR of rendered PNGs; the retriever is a labelled stub.
"""

from __future__ import annotations

import pytest
from llama_index.core.tools import FunctionTool, QueryEngineTool

from mmrag_li.config import LLMConfig, Settings
from mmrag_li.generation import VerifiedCitationQueryEngine, build_llm, make_tools
from tests.fakes.evidence_corpus import StubRetriever
from tests.fakes.openai_server import FakeOpenAIServer

pytestmark = pytest.mark.slow



def test_tools_offline(corpus):
    retriever = StubRetriever(corpus.results("invoice", "notes"))
    qe = VerifiedCitationQueryEngine.from_defaults(retriever, settings=Settings())
    qa, search = make_tools(qe, retriever)
    assert isinstance(qa, QueryEngineTool) and isinstance(search, FunctionTool)
    assert qa.metadata.name == "multimodal_evidence_qa"
    assert "cited" in qa.metadata.description and "verified" in qa.metadata.description
    assert search.metadata.name == "search_evidence"
    assert "query" in search.metadata.get_parameters_dict()["properties"]

    out = qa.call("What is the invoice total?")
    assert "1,939.00" in out.content and "Sources: E1 = " in out.content and "invoice_4711.png" in out.content
    assert "Verified: True" in out.content and out.raw_output.metadata["verified"] is True

    res = search.call(query="invoice total", k=5).raw_output
    assert [r["source"].rsplit("/", 1)[-1] for r in res] == ["invoice_4711.png", "delivery_notes.txt"]
    assert set(res[0]) == {"asset_id", "source", "page", "score", "snippet"}
    assert "1,939.00" in res[0]["snippet"] and res[0]["score"] >= res[1]["score"]
    assert len(search.call(query="x", k=1).raw_output) == 1


async def test_tools_async(corpus):
    retriever = StubRetriever(corpus.results("invoice", "notes"))
    qa, search = make_tools(VerifiedCitationQueryEngine.from_defaults(retriever, settings=Settings()), retriever)
    out = await qa.acall("What is the invoice total?")
    assert "1,939.00" in out.content
    assert (await search.acall(query="invoice")).raw_output[0]["asset_id"]


async def test_function_agent_uses_the_qa_tool(corpus):
    from llama_index.core.agent.workflow import FunctionAgent
    from llama_index.llms.openai_like import OpenAILike

    with FakeOpenAIServer(["The invoice total is 1,939.00 [E1]."]) as answer_srv, FakeOpenAIServer([
        {"content": None, "tool_calls": [{"name": "multimodal_evidence_qa",
                                           "arguments": {"input": "What is the invoice total?"}}]},
        "The invoice total is 1,939.00 (invoice_4711.png).",
    ]) as agent_srv:
        retriever = StubRetriever(corpus.results("invoice", "notes"))
        settings = Settings(llm=LLMConfig(backend="openai_like", model="fake-vlm", thumbnail_px=96))
        qe = VerifiedCitationQueryEngine.from_defaults(
            retriever, settings=settings, llm=build_llm(settings.llm, base_url=answer_srv.base_url, max_retries=0))
        agent_llm = OpenAILike(model="fake-agent", api_base=agent_srv.base_url, api_key="x", is_chat_model=True,
                               is_function_calling_model=True, max_retries=0, timeout=20)
        agent = FunctionAgent(tools=make_tools(qe, retriever), llm=agent_llm,
                              system_prompt="Use the tools to answer with citations.")
        result = await agent.run("How much is the invoice?")
        assert "1,939.00" in str(result)
        # the agent was offered both tools and saw the tool's cited, verified output
        tool_names = {t["function"]["name"] for t in agent_srv.requests[0]["tools"]}
        assert tool_names == {"multimodal_evidence_qa", "search_evidence"}
        tool_msgs = [m for m in agent_srv.requests[1]["messages"] if m["role"] == "tool"]
        assert tool_msgs and "Verified: True" in str(tool_msgs[0]["content"])
        assert len(answer_srv.requests) == 1
