"""Citation-enforcing query engine over a multimodal chat LLM (or the offline extractive answerer).

Flow per query::

    retrieve -> evidence E1..Ek (thumbnails, caption, compressed OCR, text)
             -> messages (system policy + interleaved text/image blocks)
             -> LLM (or extractive) -> verify
             -> not verified: one retry with the stricter prompt and the checker's reasons
             -> still not verified: "I cannot verify an answer from the evidence." + reasons

When the evidence holds more images than ``max_images_per_call``, it is split into rounds; each
round gets a partial cited answer (checked against that round's items) and one text-only merge
call combines the verified partials, keeping citations. If the merge cannot be verified the
verified partial answers themselves are returned.

Streaming (``streaming=True``): the response is a ``StreamingResponse`` whose generator yields the
LLM's tokens as they arrive; verification runs when the stream has been consumed, updates
``response.metadata`` in place ("verified", "verification", "citations", ...) and, if the answer
fails, the generator yields a final "[Unverified: ...]" note. There is no retry while streaming
(tokens already shown cannot be taken back); use non-streaming queries where only verified text
may reach the user.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, AsyncGenerator, Dict, Generator, List, Optional, Sequence

from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.llms.types import ChatMessage, ImageBlock
from llama_index.core.base.response.schema import (
    RESPONSE_TYPE,
    AsyncStreamingResponse,
    Response,
    StreamingResponse,
)
from llama_index.core.callbacks.base import CallbackManager
from llama_index.core.schema import NodeWithScore, QueryBundle

from mmrag_li.config import LLMConfig, Settings
from mmrag_li.generation.evidence import EvidenceItem, build_evidence, make_thumbnail
from mmrag_li.generation.extractive import ExtractiveAnswerer
from mmrag_li.generation.prompts import (
    CANNOT_VERIFY,
    I_DONT_KNOW,
    PARTIAL_SYSTEM_PROMPT,
    build_merge_messages,
    build_messages,
)
from mmrag_li.generation.verify import Verification, verify_answer

logger = logging.getLogger(__name__)

_LOG_LOCK = threading.Lock()


@dataclass
class _Outcome:
    answer: str
    verification: Verification
    attempts: List[Dict[str, Any]] = field(default_factory=list)
    rounds: int = 1


def _text_of(chat_response: Any) -> str:
    msg = getattr(chat_response, "message", None)
    content = getattr(msg, "content", None) if msg is not None else None
    return (content if content is not None else str(chat_response or "")).strip()


class CitationQueryEngine(BaseQueryEngine):
    """Answers only from retrieved evidence, with [E#] citations that are checked.

    Build with `from_defaults`. ``llm=None`` means the offline `ExtractiveAnswerer`.
    """

    def __init__(
        self,
        retriever: BaseRetriever,
        llm: Optional[Any] = None,
        *,
        evidence_k: int = 5,
        max_images_per_call: int = 6,
        thumbnail_px: int = 512,
        streaming: bool = False,
        log_path: Optional[str] = None,
        extractive: Optional[ExtractiveAnswerer] = None,
        retry: bool = True,
        ocr_chars: int = 700,
        text_chars: int = 1200,
        callback_manager: Optional[CallbackManager] = None,
    ) -> None:
        super().__init__(callback_manager=callback_manager)
        self._retriever = retriever
        self._llm = llm
        self.evidence_k = evidence_k
        self.max_images_per_call = max(1, max_images_per_call)
        self.thumbnail_px = thumbnail_px
        self.streaming = streaming
        self.log_path = str(log_path) if log_path else None
        self._extractive = extractive or ExtractiveAnswerer()
        self.retry = retry
        self.ocr_chars = ocr_chars
        self.text_chars = text_chars

    @classmethod
    def from_defaults(
        cls,
        retriever: BaseRetriever,
        settings: Optional[Settings] = None,
        llm: Optional[Any] = None,
        evidence_k: Optional[int] = None,
        *,
        llm_base_url: Optional[str] = None,
        streaming: bool = False,
        log_path: Optional[str] = None,
        extractive: Optional[ExtractiveAnswerer] = None,
        retry: bool = True,
        callback_manager: Optional[CallbackManager] = None,
        **kwargs: Any,
    ) -> "CitationQueryEngine":
        """Engine from `Settings` (``settings.llm``): the LLM is built with `build_llm` unless
        given; ``llm_base_url`` points it at a local OpenAI-compatible server."""
        settings = settings or Settings()
        cfg: LLMConfig = settings.llm
        if llm is None and (cfg.backend != "extractive" or cfg.api_base or llm_base_url):
            from mmrag_li.generation.llms import build_llm

            llm = build_llm(cfg, base_url=llm_base_url)
        return cls(
            retriever,
            llm,
            evidence_k=evidence_k or cfg.evidence_k,
            max_images_per_call=kwargs.pop("max_images_per_call", cfg.max_images_per_call),
            thumbnail_px=kwargs.pop("thumbnail_px", cfg.thumbnail_px),
            streaming=streaming,
            log_path=log_path,
            extractive=extractive,
            retry=retry,
            callback_manager=callback_manager,
            **kwargs,
        )

    # -- PromptMixin ---------------------------------------------------------------------------
    def _get_prompts(self) -> Dict[str, Any]:
        return {}

    def _get_prompt_modules(self) -> Dict[str, Any]:
        return {}

    def _update_prompts(self, prompts: Dict[str, Any]) -> None:
        pass

    @property
    def retriever(self) -> BaseRetriever:
        return self._retriever

    @property
    def llm(self) -> Optional[Any]:
        return self._llm

    # -- steps -----------------------------------------------------------------------------------
    def retrieve(self, query_bundle: QueryBundle) -> List[NodeWithScore]:
        return self._retriever.retrieve(query_bundle)

    def build_evidence(self, nodes: Sequence[NodeWithScore], question: str) -> List[EvidenceItem]:
        return build_evidence(nodes, question, k=self.evidence_k, thumbnail_px=self.thumbnail_px,
                              thumbnails=self._llm is not None, ocr_chars=self.ocr_chars,
                              text_chars=self.text_chars)

    def _query_image(self, qb: QueryBundle) -> Optional[ImageBlock]:
        if self._llm is None or not getattr(qb, "image_path", None):
            return None
        return make_thumbnail(qb.image_path, self.thumbnail_px)

    def _rounds(self, evidence: Sequence[EvidenceItem]) -> List[List[EvidenceItem]]:
        if sum(1 for e in evidence if e.has_image) <= self.max_images_per_call:
            return [list(evidence)]
        rounds: List[List[EvidenceItem]] = [[]]
        n_img = 0
        for item in evidence:
            if item.has_image and n_img >= self.max_images_per_call:
                rounds.append([])
                n_img = 0
            rounds[-1].append(item)
            n_img += int(item.has_image)
        return rounds

    def _flow(self, question: str, evidence: List[EvidenceItem], query_image: Optional[ImageBlock]
              ) -> Generator[List[ChatMessage], str, _Outcome]:
        """The LLM conversation as a generator: yields message lists, receives answer texts.
        The sync and async drivers differ only in how they call the LLM."""
        attempts: List[Dict[str, Any]] = []
        rounds = self._rounds(evidence)
        if len(rounds) == 1:
            answer = yield build_messages(question, evidence, query_image=query_image)
            ver = verify_answer(answer, evidence)
            attempts.append({"kind": "answer", "answer": answer, "verified": ver.verified, "reasons": ver.reasons})
            if not ver.verified and self.retry:
                answer = yield build_messages(question, evidence, strict=True, feedback=ver.reasons,
                                              query_image=query_image)
                ver = verify_answer(answer, evidence)
                attempts.append({"kind": "retry", "answer": answer, "verified": ver.verified,
                                 "reasons": ver.reasons})
            return self._settle(answer, ver, attempts, 1)

        partials: List[str] = []
        partial_reasons: List[str] = []
        for i, part in enumerate(rounds, 1):
            ans = yield build_messages(question, part, query_image=query_image, system_prompt=PARTIAL_SYSTEM_PROMPT)
            ver = verify_answer(ans, part)
            attempts.append({"kind": f"round{i}", "answer": ans, "verified": ver.verified, "reasons": ver.reasons})
            if ver.verified and ver.answered:
                partials.append(ans)
            elif not ver.verified:
                partial_reasons += [f"round {i}: {r}" for r in ver.reasons]
        if not partials:
            if partial_reasons:
                return self._settle("", Verification(verified=False, reasons=partial_reasons), attempts, len(rounds))
            return self._settle(I_DONT_KNOW, verify_answer(I_DONT_KNOW, evidence), attempts, len(rounds))
        if len(partials) == 1:
            return self._settle(partials[0], verify_answer(partials[0], evidence), attempts, len(rounds))
        merged = yield build_merge_messages(question, partials, evidence)
        ver = verify_answer(merged, evidence)
        attempts.append({"kind": "merge", "answer": merged, "verified": ver.verified, "reasons": ver.reasons})
        if not ver.verified and self.retry:
            merged = yield build_merge_messages(question, partials, evidence, feedback=ver.reasons)
            ver = verify_answer(merged, evidence)
            attempts.append({"kind": "merge_retry", "answer": merged, "verified": ver.verified,
                             "reasons": ver.reasons})
        if not ver.verified:
            joined = "\n".join(partials)
            jver = verify_answer(joined, evidence)
            if jver.verified:
                return self._settle(joined, jver, attempts, len(rounds))
        return self._settle(merged, ver, attempts, len(rounds))

    @staticmethod
    def _settle(answer: str, ver: Verification, attempts: List[Dict[str, Any]], rounds: int) -> _Outcome:
        if ver.verified:
            return _Outcome(answer=answer.strip(), verification=ver, attempts=attempts, rounds=rounds)
        reasons = "; ".join(ver.reasons) or "unknown reason"
        failed = Verification(verified=False, reasons=list(ver.reasons), citations=[], unknown_ids=ver.unknown_ids,
                              unsupported=ver.unsupported, uncited=ver.uncited, answered=False,
                              prompt_leak=ver.prompt_leak)
        return _Outcome(answer=f"{CANNOT_VERIFY} Reasons: {reasons}", verification=failed, attempts=attempts,
                        rounds=rounds)

    # -- response assembly ---------------------------------------------------------------------
    def _response(self, qb: QueryBundle, nodes: List[NodeWithScore], evidence: List[EvidenceItem],
                  outcome: _Outcome, timings: Dict[str, float]) -> Response:
        meta = self._metadata(evidence, outcome, timings)
        resp = Response(response=outcome.answer, source_nodes=self._ordered_sources(nodes, evidence, meta),
                        metadata=meta)
        self._log(qb, nodes, evidence, outcome.answer, meta)
        return resp

    def _metadata(self, evidence: List[EvidenceItem], outcome: _Outcome, timings: Dict[str, float]) -> Dict[str, Any]:
        by_id = {e.id: e for e in evidence}
        cited = [i for i in outcome.verification.citations if i in by_id]
        return {
            "citations": list(dict.fromkeys(by_id[i].asset_id for i in cited)),
            "citation_ids": cited,
            "verified": outcome.verification.verified,
            "answered": outcome.verification.answered,
            "verification": list(outcome.verification.reasons),
            "evidence": [e.to_dict() for e in evidence],
            "timings": {k: round(v, 4) for k, v in timings.items()},
            "extractive": self._llm is None,
            "attempts": outcome.attempts,
            "rounds": outcome.rounds,
        }

    @staticmethod
    def _ordered_sources(nodes: List[NodeWithScore], evidence: List[EvidenceItem],
                         meta: Dict[str, Any]) -> List[NodeWithScore]:
        by_id = {e.id: e for e in evidence}
        out: List[NodeWithScore] = []
        seen = set()
        for eid in meta.get("citation_ids", []):
            for n in by_id[eid].nodes:
                if id(n) not in seen:
                    seen.add(id(n))
                    out.append(n)
        for n in nodes:
            if id(n) not in seen:
                seen.add(id(n))
                out.append(n)
        return out

    def _log(self, qb: QueryBundle, nodes: List[NodeWithScore], evidence: List[EvidenceItem], answer: str,
             meta: Dict[str, Any]) -> None:
        if not self.log_path:
            return
        record = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "question": qb.query_str,
            "image_path": getattr(qb, "image_path", None),
            "retrieved": [{"node_id": n.node.node_id, "asset_id": (n.node.metadata or {}).get("asset_id"),
                           "score": n.score} for n in nodes],
            "evidence": [{"id": e.id, "asset_id": e.asset_id, "source": e.source, "page": e.page,
                          "score": e.score} for e in evidence],
            "answer": answer,
            "citations": meta.get("citations"),
            "citation_ids": meta.get("citation_ids"),
            "verified": meta.get("verified"),
            "verification": meta.get("verification"),
            "timings": meta.get("timings"),
            "extractive": meta.get("extractive"),
            "attempts": len(meta.get("attempts") or []),
        }
        try:
            os.makedirs(os.path.dirname(os.path.abspath(self.log_path)), exist_ok=True)
            line = json.dumps(record, ensure_ascii=False, default=str)
            with _LOG_LOCK, open(self.log_path, "a", encoding="utf-8") as fh:
                fh.write(line + "\n")
        except OSError as exc:  # logging must never fail a query
            logger.warning("could not write query log %s: %s", self.log_path, exc)

    # -- shared prologue / epilogue ------------------------------------------------------------
    def _visible(self, nodes: List[NodeWithScore]) -> List[NodeWithScore]:
        """Tenant guard on the answer path: evidence from a collection the retriever does not allow
        never reaches the LLM or the response, even if a retriever (a custom one, a bug) returned it."""
        cfg = getattr(self._retriever, "config", None)
        allowed = getattr(cfg, "allowed_collections", None)
        if not allowed:
            return nodes
        kept = [n for n in nodes if n.node.metadata.get("collection", "default") in allowed]
        if len(kept) != len(nodes):
            logger.warning("dropped %d retrieved node(s) outside the allowed collections %s",
                           len(nodes) - len(kept), list(allowed))
        return kept

    def _prepare(self, qb: QueryBundle, nodes: List[NodeWithScore], timings: Dict[str, float]):
        t = time.perf_counter()
        evidence = self.build_evidence(nodes, qb.query_str)
        query_image = self._query_image(qb)
        timings["prompt_s"] = time.perf_counter() - t
        return evidence, query_image

    def _extractive_outcome(self, qb: QueryBundle, evidence: List[EvidenceItem], timings: Dict[str, float]) -> _Outcome:
        t = time.perf_counter()
        answer = self._extractive.answer(qb.query_str, evidence)
        timings["llm_s"] = time.perf_counter() - t
        t = time.perf_counter()
        ver = verify_answer(answer, evidence)
        timings["verify_s"] = time.perf_counter() - t
        attempts = [{"kind": "extractive", "answer": answer, "verified": ver.verified, "reasons": ver.reasons}]
        return self._settle(answer, ver, attempts, 1)

    @staticmethod
    def _no_evidence() -> _Outcome:
        return _Outcome(answer=I_DONT_KNOW, verification=Verification(verified=True, answered=False,
                                                                      reasons=["no evidence retrieved"]))

    # -- sync ----------------------------------------------------------------------------------
    def _query(self, query_bundle: QueryBundle) -> RESPONSE_TYPE:
        timings: Dict[str, float] = {}
        t = time.perf_counter()
        nodes = self._visible(list(self._retriever.retrieve(query_bundle)))
        timings["retrieval_s"] = time.perf_counter() - t
        evidence, query_image = self._prepare(query_bundle, nodes, timings)
        if self.streaming:
            return self._stream_response(query_bundle, nodes, evidence, query_image, timings)
        outcome = self._answer_sync(query_bundle, evidence, query_image, timings)
        return self._response(query_bundle, nodes, evidence, outcome, timings)

    def _answer_sync(self, qb: QueryBundle, evidence: List[EvidenceItem], query_image: Optional[ImageBlock],
                     timings: Dict[str, float]) -> _Outcome:
        if not evidence:
            timings.update(llm_s=0.0, verify_s=0.0)
            return self._no_evidence()
        if self._llm is None:
            return self._extractive_outcome(qb, evidence, timings)
        llm_s = 0.0
        t_all = time.perf_counter()
        gen = self._flow(qb.query_str, evidence, query_image)
        try:
            msgs = next(gen)
            while True:
                t = time.perf_counter()
                text = _text_of(self._llm.chat(msgs))
                llm_s += time.perf_counter() - t
                msgs = gen.send(text)
        except StopIteration as stop:
            outcome: _Outcome = stop.value
        timings["llm_s"] = llm_s
        timings["verify_s"] = max(0.0, time.perf_counter() - t_all - llm_s)
        return outcome

    # -- async ---------------------------------------------------------------------------------
    async def _aquery(self, query_bundle: QueryBundle) -> RESPONSE_TYPE:
        timings: Dict[str, float] = {}
        t = time.perf_counter()
        nodes = self._visible(list(await self._retriever.aretrieve(query_bundle)))
        timings["retrieval_s"] = time.perf_counter() - t
        evidence, query_image = self._prepare(query_bundle, nodes, timings)
        if self.streaming:
            return self._astream_response(query_bundle, nodes, evidence, query_image, timings)
        outcome = await self._answer_async(query_bundle, evidence, query_image, timings)
        return self._response(query_bundle, nodes, evidence, outcome, timings)

    async def _answer_async(self, qb: QueryBundle, evidence: List[EvidenceItem],
                            query_image: Optional[ImageBlock], timings: Dict[str, float]) -> _Outcome:
        if not evidence:
            timings.update(llm_s=0.0, verify_s=0.0)
            return self._no_evidence()
        if self._llm is None:
            return self._extractive_outcome(qb, evidence, timings)
        llm_s = 0.0
        t_all = time.perf_counter()
        gen = self._flow(qb.query_str, evidence, query_image)
        try:
            msgs = next(gen)
            while True:
                t = time.perf_counter()
                text = _text_of(await self._llm.achat(msgs))
                llm_s += time.perf_counter() - t
                msgs = gen.send(text)
        except StopIteration as stop:
            outcome: _Outcome = stop.value
        timings["llm_s"] = llm_s
        timings["verify_s"] = max(0.0, time.perf_counter() - t_all - llm_s)
        return outcome

    # -- streaming -----------------------------------------------------------------------------
    def _stream_plan(self, qb: QueryBundle, evidence: List[EvidenceItem], query_image: Optional[ImageBlock]
                     ) -> Optional[List[ChatMessage]]:
        """Messages to stream, or None when the answer is computed whole (extractive, no evidence,
        or several rounds) and yielded as one chunk."""
        if self._llm is None or not evidence or len(self._rounds(evidence)) > 1:
            return None
        return build_messages(qb.query_str, evidence, query_image=query_image)

    def _finish_stream(self, qb, nodes, evidence, text, timings, meta, sources, t_llm) -> Optional[str]:
        timings["llm_s"] = time.perf_counter() - t_llm
        t = time.perf_counter()
        ver = verify_answer(text, evidence)
        timings["verify_s"] = time.perf_counter() - t
        outcome = _Outcome(answer=text.strip(), verification=ver,
                           attempts=[{"kind": "stream", "answer": text, "verified": ver.verified,
                                      "reasons": ver.reasons}])
        meta.clear()
        meta.update(self._metadata(evidence, outcome, timings))
        sources[:] = self._ordered_sources(nodes, evidence, meta)
        self._log(qb, nodes, evidence, outcome.answer, meta)
        if not ver.verified:
            return "\n\n[Unverified: " + "; ".join(ver.reasons) + "]"
        return None

    def _pending_meta(self, evidence: List[EvidenceItem], timings: Dict[str, float]) -> Dict[str, Any]:
        return {"citations": [], "citation_ids": [], "verified": None, "answered": None,
                "verification": ["pending: verification runs when the stream has been consumed"],
                "evidence": [e.to_dict() for e in evidence], "timings": timings,
                "extractive": self._llm is None, "attempts": [], "rounds": 1}

    def _stream_response(self, qb, nodes, evidence, query_image, timings) -> StreamingResponse:
        msgs = self._stream_plan(qb, evidence, query_image)
        if msgs is None:
            outcome = self._answer_sync(qb, evidence, query_image, timings)
            resp = self._response(qb, nodes, evidence, outcome, timings)

            def whole() -> Generator[str, None, None]:
                yield resp.response or ""

            return StreamingResponse(response_gen=whole(), source_nodes=resp.source_nodes, metadata=resp.metadata)
        meta = self._pending_meta(evidence, timings)
        sources = list(nodes)

        def gen() -> Generator[str, None, None]:
            t_llm = time.perf_counter()
            text = ""
            for chunk in self._llm.stream_chat(msgs):
                delta = chunk.delta or ""
                text += delta
                if delta:
                    yield delta
            note = self._finish_stream(qb, nodes, evidence, text, timings, meta, sources, t_llm)
            if note:
                yield note

        return StreamingResponse(response_gen=gen(), source_nodes=sources, metadata=meta)

    def _astream_response(self, qb, nodes, evidence, query_image, timings) -> AsyncStreamingResponse:
        msgs = self._stream_plan(qb, evidence, query_image)
        meta = self._pending_meta(evidence, timings)
        sources = list(nodes)
        engine = self

        async def agen() -> AsyncGenerator[str, None]:
            if msgs is None:
                outcome = await engine._answer_async(qb, evidence, query_image, timings)
                resp = engine._response(qb, nodes, evidence, outcome, timings)
                meta.clear()
                meta.update(resp.metadata or {})
                sources[:] = resp.source_nodes
                yield resp.response or ""
                return
            t_llm = time.perf_counter()
            text = ""
            async for chunk in await engine._llm.astream_chat(msgs):
                delta = chunk.delta or ""
                text += delta
                if delta:
                    yield delta
            note = engine._finish_stream(qb, nodes, evidence, text, timings, meta, sources, t_llm)
            if note:
                yield note

        return AsyncStreamingResponse(response_gen=agen(), source_nodes=sources, metadata=meta)
