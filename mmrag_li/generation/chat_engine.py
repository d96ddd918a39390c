"""Multi-turn chat over multimodal evidence (condense-plus-context, answered by the citation engine).

Each turn:

1. condense the follow-up and the history into a standalone question: with the chat LLM when one
   is configured (`CONDENSE_PROMPT`), offline by appending the previous question's key terms to a
   follow-up that leans on it ("and its date?" -> "and its date? (invoice total)");
2. answer the standalone question with `VerifiedCitationQueryEngine` (retrieval with images,
   cited, verified);
3. keep the turn in a ``ChatMemoryBuffer``.

Streaming (`stream_chat`/`astream_chat`) streams the already-verified answer: a chat reply is
verified before any of it is shown, so unverified text never reaches the user. The response's
``metadata`` attribute carries the query engine's metadata plus ``standalone_question``.

Prompts: ``get_prompts()`` lists ``condense_prompt`` (``{history}``, ``{question}``) and the query
engine's prompts as ``query_engine:<key>``; ``update_prompts`` changes either.
"""

from __future__ import annotations

import asyncio
import logging
import re
from threading import Thread
from typing import Any, AsyncGenerator, Dict, Generator, List, Optional

from llama_index.core.base.llms.types import ChatMessage, ChatResponse, MessageRole
from llama_index.core.base.response.schema import AsyncStreamingResponse, Response, StreamingResponse
from llama_index.core.chat_engine.types import (
    AgentChatResponse,
    BaseChatEngine,
    StreamingAgentChatResponse,
)
from llama_index.core.memory import ChatMemoryBuffer
from llama_index.core.prompts import BasePromptTemplate
from llama_index.core.prompts.mixin import PromptMixin
from llama_index.core.tools import ToolOutput

from mmrag_li.generation._text import STOPWORDS, tokenize
from mmrag_li.generation.prompts import DEFAULT_CONDENSE_PROMPT, as_template
from mmrag_li.generation.query_engine import VerifiedCitationQueryEngine

logger = logging.getLogger(__name__)

_QUERY_ENGINE_KWARGS = ("evidence_k", "log_path", "llm_base_url", "node_postprocessors", "verifier",
                        "text_qa_template", "prompts", "retry", "callback_manager")

_ANAPHORA = re.compile(
    r"\b(it|its|it's|this|that|these|those|they|them|their|there|he|she|him|her|his|same|one|ones|"
    r"former|latter|above|previous|also|and|what about|how about)\b",
    re.IGNORECASE,
)


class VerifiedCitationChatEngine(BaseChatEngine, PromptMixin):
    """Condense-plus-context chat engine whose answers come from `VerifiedCitationQueryEngine`.

    Args:
        query_engine: answers each standalone question (cited, verified).
        llm: the LLM that condenses follow-ups (default: the query engine's; None: offline condensing).
        memory: chat memory (default ``ChatMemoryBuffer`` with ``token_limit``).
        condense_prompt: ``PromptTemplate`` (or string) with ``{history}`` and ``{question}``.
        condense_with_llm: condense with the LLM when there is one.
        token_limit: token limit of the default memory.
        history_turns: turns of history shown to the condensing LLM.
    """

    def __init__(
        self,
        query_engine: VerifiedCitationQueryEngine,
        llm: Optional[Any] = None,
        memory: Optional[Any] = None,
        *,
        condense_prompt: BasePromptTemplate | str = DEFAULT_CONDENSE_PROMPT,
        condense_with_llm: bool = True,
        token_limit: int = 3000,
        history_turns: int = 6,
    ) -> None:
        self._query_engine = query_engine
        self._llm = llm if llm is not None else getattr(query_engine, "llm", None)
        self._memory = memory or ChatMemoryBuffer.from_defaults(token_limit=token_limit)
        self._condense_prompt = as_template(condense_prompt)
        self._condense_with_llm = condense_with_llm
        self._history_turns = history_turns
        self._standalone: List[str] = []  # standalone questions of earlier turns (offline condensing)

    @classmethod
    def from_defaults(
        cls,
        query_engine: Optional[VerifiedCitationQueryEngine] = None,
        retriever: Optional[Any] = None,
        settings: Optional[Any] = None,
        llm: Optional[Any] = None,
        memory: Optional[Any] = None,
        chat_history: Optional[List[ChatMessage]] = None,
        **kwargs: Any,
    ) -> "VerifiedCitationChatEngine":
        """From a query engine, or from a retriever (+ settings/llm) to build one.

        Args:
            query_engine: the engine that answers; built with
                ``VerifiedCitationQueryEngine.from_defaults`` from ``retriever`` when None.
            retriever: used only to build the query engine.
            settings: project settings for the query engine.
            llm: the chat LLM (answers and condensing).
            memory: chat memory.
            chat_history: messages to start from.
            **kwargs: query-engine arguments (evidence_k, log_path, llm_base_url, node_postprocessors,
                verifier, text_qa_template, prompts) when it is built here; the rest go to the constructor.
        """
        if query_engine is None:
            if retriever is None:
                raise ValueError("VerifiedCitationChatEngine needs a query_engine or a retriever")
            qe_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in _QUERY_ENGINE_KWARGS}
            query_engine = VerifiedCitationQueryEngine.from_defaults(retriever, settings=settings, llm=llm,
                                                                     **qe_kwargs)
        engine = cls(query_engine, llm=llm, memory=memory, **kwargs)
        if chat_history:
            engine._memory.set(list(chat_history))
        return engine

    # -- PromptMixin ---------------------------------------------------------------------------
    def _get_prompts(self) -> Dict[str, BasePromptTemplate]:
        return {"condense_prompt": self._condense_prompt}

    def _get_prompt_modules(self) -> Dict[str, PromptMixin]:
        return {"query_engine": self._query_engine}

    def _update_prompts(self, prompts_dict: Dict[str, BasePromptTemplate]) -> None:
        if "condense_prompt" in prompts_dict:
            self._condense_prompt = as_template(prompts_dict["condense_prompt"])

    # -- state ---------------------------------------------------------------------------------
    @property
    def chat_history(self) -> List[ChatMessage]:
        """The conversation so far."""
        return self._memory.get_all()

    @property
    def query_engine(self) -> VerifiedCitationQueryEngine:
        """The engine that answers each standalone question."""
        return self._query_engine

    @property
    def llm(self) -> Optional[Any]:
        """The LLM that condenses follow-ups (None: offline condensing)."""
        return self._llm

    def reset(self) -> None:
        """Forget the conversation."""
        self._memory.reset()
        self._standalone = []

    # -- condensing ----------------------------------------------------------------------------
    def _history_text(self, history: List[ChatMessage]) -> str:
        lines = []
        for m in history[-2 * self._history_turns:]:
            role = "User" if m.role == MessageRole.USER else "Assistant"
            lines.append(f"{role}: {m.content or ''}")
        return "\n".join(lines)

    def _previous_question(self, history: List[ChatMessage]) -> Optional[str]:
        if self._standalone:
            return self._standalone[-1]
        for m in reversed(history):
            if m.role == MessageRole.USER and m.content:
                return m.content
        return None

    def condense_offline(self, message: str, history: List[ChatMessage]) -> str:
        """Append the previous question's key terms to a follow-up that depends on it.

        Args:
            message: the follow-up message.
            history: the conversation so far.
        """
        prev = self._previous_question(history)
        if not prev:
            return message
        words = [t for t in tokenize(message) if t not in STOPWORDS]
        if not (_ANAPHORA.search(message) or len(words) <= 1):  # "And the date?" yes; "capital of Peru?" no
            return message  # a self-contained new question
        have = set(tokenize(message))
        terms = [t for t in dict.fromkeys(tokenize(prev)) if t not in STOPWORDS and t not in have and len(t) > 1]
        if not terms:
            return message
        return f"{message.rstrip()} ({' '.join(terms[:8])})"

    def _llm_condense_messages(self, message: str, history: List[ChatMessage]) -> List[ChatMessage]:
        prompt = self._condense_prompt.format(history=self._history_text(history), question=message)
        return [ChatMessage(role=MessageRole.USER, content=prompt)]

    @staticmethod
    def _clean_condensed(text: str) -> Optional[str]:
        text = (text or "").strip().strip('"').strip()
        text = re.sub(r"^(standalone question:\s*)", "", text, flags=re.IGNORECASE)
        return text if 0 < len(text) <= 1000 else None

    # condense and acondense are sync/async twins (llm.chat vs llm.achat).
    def condense(self, message: str, history: Optional[List[ChatMessage]] = None) -> str:
        """The follow-up rewritten as a standalone question (LLM, else offline).

        Args:
            message: the follow-up message.
            history: the conversation (default: this engine's memory).
        """
        history = self.chat_history if history is None else history
        if not any(m.role == MessageRole.USER for m in history):
            return message
        if self._llm is not None and self._condense_with_llm:
            try:
                resp = self._llm.chat(self._llm_condense_messages(message, history))
                condensed = self._clean_condensed(resp.message.content or "")
                if condensed:
                    return condensed
            except Exception as exc:  # a failing condense step should not fail the turn
                logger.warning("condensing with the LLM failed, using offline condensing: %s", exc)
        return self.condense_offline(message, history)

    async def acondense(self, message: str, history: Optional[List[ChatMessage]] = None) -> str:
        """Async twin of `condense`."""
        history = self.chat_history if history is None else history
        if not any(m.role == MessageRole.USER for m in history):
            return message
        if self._llm is not None and self._condense_with_llm:
            try:
                resp = await self._llm.achat(self._llm_condense_messages(message, history))
                condensed = self._clean_condensed(resp.message.content or "")
                if condensed:
                    return condensed
            except Exception as exc:
                logger.warning("condensing with the LLM failed, using offline condensing: %s", exc)
        return self.condense_offline(message, history)

    # -- helpers -------------------------------------------------------------------------------
    @staticmethod
    def _as_response(resp: Any) -> Response:
        if isinstance(resp, StreamingResponse):
            return resp.get_response()
        return resp

    @staticmethod
    async def _aas_response(resp: Any) -> Response:
        if isinstance(resp, AsyncStreamingResponse):
            return await resp.get_response()
        if isinstance(resp, StreamingResponse):
            return resp.get_response()
        return resp

    def _result(self, message: str, standalone: str, resp: Response) -> Dict[str, Any]:
        answer = str(resp.response or "")
        meta = dict(resp.metadata or {})
        meta["standalone_question"] = standalone
        source = ToolOutput(tool_name="citation_query_engine", content=answer,
                            raw_input={"message": message, "standalone_question": standalone}, raw_output=resp)
        self._standalone.append(standalone)
        return {"answer": answer, "meta": meta, "source": source, "nodes": list(resp.source_nodes)}

    def _set_history(self, chat_history: Optional[List[ChatMessage]]) -> None:
        if chat_history is not None:
            self._memory.set(list(chat_history))
            self._standalone = []

    @staticmethod
    def _tokens(answer: str) -> List[str]:
        return re.findall(r"\S+\s*|\s+", answer) or [answer]

    # -- chat ----------------------------------------------------------------------------------
    # chat/achat and stream_chat/astream_chat are sync/async twins.
    def chat(self, message: str, chat_history: Optional[List[ChatMessage]] = None) -> AgentChatResponse:
        """One turn: condense, answer (cited, verified), remember.

        Args:
            message: the user's message.
            chat_history: replaces the memory before the turn when given.
        """
        self._set_history(chat_history)
        standalone = self.condense(message)
        r = self._result(message, standalone, self._as_response(self._query_engine.query(standalone)))
        self._memory.put(ChatMessage(role=MessageRole.USER, content=message))
        self._memory.put(ChatMessage(role=MessageRole.ASSISTANT, content=r["answer"]))
        return AgentChatResponse(response=r["answer"], sources=[r["source"]], source_nodes=r["nodes"],
                                 metadata=r["meta"])

    async def achat(self, message: str, chat_history: Optional[List[ChatMessage]] = None) -> AgentChatResponse:
        """Async twin of `chat`."""
        self._set_history(chat_history)
        standalone = await self.acondense(message)
        r = self._result(message, standalone, await self._aas_response(await self._query_engine.aquery(standalone)))
        await self._memory.aput(ChatMessage(role=MessageRole.USER, content=message))
        await self._memory.aput(ChatMessage(role=MessageRole.ASSISTANT, content=r["answer"]))
        return AgentChatResponse(response=r["answer"], sources=[r["source"]], source_nodes=r["nodes"],
                                 metadata=r["meta"])

    def stream_chat(self, message: str, chat_history: Optional[List[ChatMessage]] = None
                    ) -> StreamingAgentChatResponse:
        """`chat`, with the verified answer streamed token by token (same arguments)."""
        self._set_history(chat_history)
        standalone = self.condense(message)
        r = self._result(message, standalone, self._as_response(self._query_engine.query(standalone)))
        self._memory.put(ChatMessage(role=MessageRole.USER, content=message))
        tokens = self._tokens(r["answer"])

        def gen() -> Generator[ChatResponse, None, None]:
            acc = ""
            for tok in tokens:
                acc += tok
                yield ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=acc), delta=tok)

        resp = StreamingAgentChatResponse(chat_stream=gen(), sources=[r["source"]], source_nodes=r["nodes"])
        resp.metadata = r["meta"]  # type: ignore[attr-defined]
        thread = Thread(target=resp.write_response_to_history, args=(self._memory,), daemon=True)
        resp.write_response_to_history_thread = thread
        thread.start()
        return resp

    async def astream_chat(self, message: str, chat_history: Optional[List[ChatMessage]] = None
                           ) -> StreamingAgentChatResponse:
        """Async twin of `stream_chat`."""
        self._set_history(chat_history)
        standalone = await self.acondense(message)
        r = self._result(message, standalone, await self._aas_response(await self._query_engine.aquery(standalone)))
        await self._memory.aput(ChatMessage(role=MessageRole.USER, content=message))
        tokens = self._tokens(r["answer"])

        async def agen() -> AsyncGenerator[ChatResponse, None]:
            acc = ""
            for tok in tokens:
                acc += tok
                yield ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=acc), delta=tok)

        resp = StreamingAgentChatResponse(achat_stream=agen(), sources=[r["source"]], source_nodes=r["nodes"])
        resp.metadata = r["meta"]  # type: ignore[attr-defined]
        resp.awrite_response_to_history_task = asyncio.create_task(resp.awrite_response_to_history(self._memory))
        return resp
