"""VerifiedCitationChatEngine: condense-plus-context over the citation engine, offline and with an LLM.

Evidence: real tesseract OCR of rendered PNGs; the retriever is a labelled stub; the remote LLM is
a local OpenAI-compatible HTTP server (a test double at the network boundary).
"""

from __future__ import annotations

import pytest
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.chat_engine.types import BaseChatEngine
from llama_index.core.prompts import PromptTemplate

from mmrag_li.config import LLMConfig, Settings
from mmrag_li.generation import (
    CANNOT_VERIFY,
    VerifiedCitationChatEngine,
    VerifiedCitationQueryEngine,
    build_llm,
)
from tests.fakes.evidence_corpus import StubRetriever
from tests.fakes.openai_server import FakeOpenAIServer

pytestmark = pytest.mark.slow



def offline_chat(corpus):
    retriever = StubRetriever(corpus.results("invoice", "notes"))
    return VerifiedCitationChatEngine.from_defaults(retriever=retriever, settings=Settings()), retriever


def llm_chat(srv, corpus, names=("invoice", "notes")):
    retriever = StubRetriever(corpus.results(*names))
    settings = Settings(llm=LLMConfig(backend="openai_like", model="fake-vlm", thumbnail_px=96))
    llm = build_llm(settings.llm, base_url=srv.base_url, max_retries=0, timeout=20)
    qe = VerifiedCitationQueryEngine.from_defaults(retriever, settings=settings, llm=llm)
    return VerifiedCitationChatEngine(qe), retriever


def test_offline_multi_turn(corpus):
    chat, retriever = offline_chat(corpus)
    assert isinstance(chat, BaseChatEngine)
    r1 = chat.chat("What is the invoice total?")
    assert "1,939.00" in r1.response and r1.metadata["verified"] is True
    assert r1.metadata["standalone_question"] == "What is the invoice total?"
    r2 = chat.chat("And when was it issued?")
    standalone = r2.metadata["standalone_question"]
    assert standalone.startswith("And when was it issued?") and "invoice" in standalone
    assert retriever.queries[-1].query_str == standalone
    assert "05/03/2024" in r2.response and r2.metadata["verified"] is True
    assert [m.role for m in chat.chat_history] == [MessageRole.USER, MessageRole.ASSISTANT] * 2
    assert chat.chat_history[0].content == "What is the invoice total?"
    assert r2.source_nodes and r2.sources[0].tool_name == "citation_query_engine"
    chat.reset()
    assert chat.chat_history == []


def test_offline_new_question_is_not_polluted(corpus):
    chat, _ = offline_chat(corpus)
    chat.chat("What is the invoice total?")
    r = chat.chat("How many ergonomic chairs were delivered to Berlin?")
    assert r.metadata["standalone_question"] == "How many ergonomic chairs were delivered to Berlin?"
    # short but self-contained questions stay untouched too (regression: got the last topic appended)
    r = chat.chat("What is the capital of Peru?")
    assert r.metadata["standalone_question"] == "What is the capital of Peru?"


def test_offline_stream_chat_writes_history(corpus):
    chat, _ = offline_chat(corpus)
    resp = chat.stream_chat("What is the invoice total?")
    text = "".join(resp.response_gen)
    assert "1,939.00" in text and resp.metadata["verified"] is True
    assert chat.chat_history[-1].role == MessageRole.ASSISTANT and "1,939.00" in chat.chat_history[-1].content


async def test_offline_async_chat_and_stream(corpus):
    chat, _ = offline_chat(corpus)
    r = await chat.achat("What is the invoice total?")
    assert "1,939.00" in r.response
    resp = await chat.astream_chat("when was it issued?")
    text = "".join([t async for t in resp.async_response_gen()])
    assert "05/03/2024" in text
    assert len(chat.chat_history) == 4


def test_explicit_chat_history(corpus):
    chat, _ = offline_chat(corpus)
    history = [ChatMessage(role=MessageRole.USER, content="What is the invoice total?"),
               ChatMessage(role=MessageRole.ASSISTANT, content='"Total 1,939.00" [E1]')]
    r = chat.chat("when was it issued?", chat_history=history)
    assert "invoice" in r.metadata["standalone_question"]
    assert len(chat.chat_history) == 4



def test_llm_chat_condense_then_cited_answer(corpus):
    with FakeOpenAIServer([
        "The invoice total is 1,939.00 [E1].",
        "When was invoice 4711 issued?",
        "Invoice 4711 is dated 05/03/2024 [E1].",
    ]) as srv:
        chat, retriever = llm_chat(srv, corpus)
        r1 = chat.chat("What is the invoice total?")
        assert r1.metadata["verified"] is True and len(srv.requests) == 1
        r2 = chat.chat("and when was it issued?")
        assert len(srv.requests) == 3
        condense_req = srv.requests[1]["messages"]
        assert len(condense_req) == 1 and "Follow-up message: and when was it issued?" in condense_req[0]["content"]
        assert "User: What is the invoice total?" in condense_req[0]["content"]
        assert retriever.queries[-1].query_str == "When was invoice 4711 issued?"
        assert "When was invoice 4711 issued?" in srv.user_text(2)
        assert r2.response == "Invoice 4711 is dated 05/03/2024 [E1]." and r2.metadata["verified"] is True


def test_llm_chat_refuses_unverifiable_answer(corpus):
    with FakeOpenAIServer(["HACKED"]) as srv:
        chat, _ = llm_chat(srv, corpus, names=("injection_txt", "invoice"))
        r = chat.chat("What is the invoice total?")
        assert r.response.startswith(CANNOT_VERIFY) and r.metadata["verified"] is False
        assert chat.chat_history[-1].content.startswith(CANNOT_VERIFY)


def test_llm_condense_failure_falls_back_offline(corpus):
    with FakeOpenAIServer(["The invoice total is 1,939.00 [E1].", ""]) as srv:
        chat, _ = llm_chat(srv, corpus)
        chat.chat("What is the invoice total?")
        assert "invoice" in chat.condense("and its date?")  # empty LLM reply -> offline condensing

        class Broken:  # an LLM whose call fails (e.g. connection refused)
            def chat(self, *a, **k):
                raise ConnectionError("refused")

        broken = VerifiedCitationChatEngine(chat.query_engine, llm=Broken())
        assert "invoice" in broken.condense("and its date?", chat.chat_history)


def test_chat_prompts_are_exposed_and_updatable(corpus):
    """The condense prompt and the query engine's prompts (as "query_engine:<key>") are
    PromptTemplates; updating them changes the requests the LLM server receives."""
    with FakeOpenAIServer([
        "The invoice total is 1,939.00 [E1].",
        "When was invoice 4711 issued?",
        "Invoice 4711 is dated 05/03/2024 [E1].",
    ]) as srv:
        chat, _ = llm_chat(srv, corpus)
        prompts = chat.get_prompts()
        assert isinstance(prompts["condense_prompt"], PromptTemplate)
        assert "{history}" in prompts["condense_prompt"].template
        assert {"query_engine:system_prompt", "query_engine:closing_prompt"} <= set(prompts)
        chat.update_prompts({
            "condense_prompt": PromptTemplate("REWRITE {question} GIVEN:\n{history}"),
            "query_engine:system_prompt": PromptTemplate("Answer from the evidence only, citing [E#]."),
        })
        chat.chat("What is the invoice total?")
        chat.chat("and when was it issued?")
        assert srv.system_text(0) == "Answer from the evidence only, citing [E#]."
        condense = srv.requests[1]["messages"][0]["content"]
        assert condense.startswith("REWRITE and when was it issued? GIVEN:")
        assert "User: What is the invoice total?" in condense
        assert srv.system_text(2) == "Answer from the evidence only, citing [E#]."
