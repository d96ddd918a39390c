"""Token streaming for `VerifiedCitationQueryEngine` (``streaming=True``).

The LLM's tokens are yielded as they arrive; when the stream has been consumed
``finish(text, llm_s)`` runs (verification, metadata, log: see `verifying_finisher`) and may
return a final note ("[Unverified: ...]") that is yielded last. There is no retry while
streaming: tokens already shown cannot be taken back. `stream_tokens`/`astream_tokens` and
`whole_stream`/`awhole_stream` are sync/async twins.
"""

from __future__ import annotations

import time
from typing import Any, AsyncGenerator, Callable, Dict, Generator, List, Optional, Sequence

from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.base.response.schema import AsyncStreamingResponse, Response, StreamingResponse
from llama_index.core.schema import NodeWithScore, QueryBundle

from mmrag_li.generation.answer_flow import (
    Outcome,
    attempt,
    ordered_sources,
    response_metadata,
    sanitized,
    verify_with_question,
    write_query_log,
)
from mmrag_li.generation.evidence import EvidenceItem
from mmrag_li.generation.verify import Verification

Finish = Callable[[str, float], Optional[str]]


def stream_tokens(llm: Any, msgs: List[ChatMessage], finish: Finish) -> Generator[str, None, None]:
    """Yield the deltas of ``llm.stream_chat(msgs)``, then ``finish(full_text)``'s note if any.

    Args:
        llm: a LlamaIndex chat LLM.
        msgs: the messages to send.
        finish: called once with the whole answer and the LLM's seconds; returns a note to append, or None.
    """
    t = time.perf_counter()
    text = ""
    for chunk in llm.stream_chat(msgs):
        delta = chunk.delta or ""
        text += delta
        if delta:
            yield delta
    note = finish(text, time.perf_counter() - t)
    if note:
        yield note


async def astream_tokens(llm: Any, msgs: List[ChatMessage], finish: Finish) -> AsyncGenerator[str, None]:
    """Async twin of `stream_tokens` (``await llm.astream_chat``)."""
    t = time.perf_counter()
    text = ""
    async for chunk in await llm.astream_chat(msgs):
        delta = chunk.delta or ""
        text += delta
        if delta:
            yield delta
    note = finish(text, time.perf_counter() - t)
    if note:
        yield note


def whole_stream(resp: Response) -> StreamingResponse:
    """A ``StreamingResponse`` that yields an already computed (and verified) answer as one chunk.

    Args:
        resp: the finished response.
    """

    def gen() -> Generator[str, None, None]:
        yield resp.response or ""

    return StreamingResponse(response_gen=gen(), source_nodes=resp.source_nodes, metadata=resp.metadata)


def awhole_stream(resp: Response) -> AsyncStreamingResponse:
    """Async twin of `whole_stream`.

    Args:
        resp: the finished response.
    """

    async def agen() -> AsyncGenerator[str, None]:
        yield resp.response or ""

    return AsyncStreamingResponse(response_gen=agen(), source_nodes=resp.source_nodes, metadata=resp.metadata)


def verifying_finisher(verify: Callable[..., Verification], log_path: Optional[str],
                       qb: QueryBundle, nodes: List[NodeWithScore], evidence: List[EvidenceItem],
                       timings: Dict[str, float], meta: Dict[str, Any], sources: List[NodeWithScore],
                       extra_sources: Sequence[NodeWithScore] = ()) -> Finish:
    """``finish(text, llm_s)`` for a token stream: verify the whole answer, fill ``meta`` and
    ``sources`` (the streaming response's own objects) in place, write the query log, and return
    the "[Unverified: ...]" note for an answer that fails. The answer in ``meta`` and the log is
    sanitized (`sanitize_answer`); the tokens already yielded cannot be taken back.

    Args:
        verify: ``verify(answer, evidence[, question=]) -> Verification`` (gets ``qb.query_str``
            when it takes a ``question`` keyword).
        log_path: the query log (None: no log).
        qb: the query.
        nodes: the retrieved nodes.
        evidence: the evidence items shown to the LLM.
        timings: step timings; ``llm_s`` and ``verify_s`` are added.
        meta: the response's metadata dict, replaced in place.
        sources: the response's source node list, replaced in place.
        extra_sources: appended after the ordered sources.
    """

    def finish(text: str, llm_s: float) -> Optional[str]:
        timings["llm_s"] = llm_s
        t = time.perf_counter()
        ver = verify_with_question(verify, text, evidence, qb.query_str)
        timings["verify_s"] = time.perf_counter() - t
        outcome = sanitized(Outcome(answer=text.strip(), verification=ver, attempts=[attempt("stream", text, ver)]),
                            evidence)
        meta.clear()
        meta.update(response_metadata(evidence, outcome, timings, extractive=False))
        sources[:] = ordered_sources(nodes, evidence, meta["citation_ids"]) + list(extra_sources)
        write_query_log(log_path, qb, nodes, evidence, outcome.answer, meta)
        if not ver.verified:
            return "\n\n[Unverified: " + "; ".join(ver.reasons) + "]"
        return None

    return finish
