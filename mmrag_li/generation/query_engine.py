"""`VerifiedCitationQueryEngine`: answers only from retrieved multimodal evidence, with checked [E#] citations.

Flow per query (each step observable, each step replaceable)::

    retrieve     retriever -> tenant guard -> node_postprocessors          (span, CBEventType.RETRIEVE)
    synthesize   evidence E1..Ek (thumbnails, caption, compressed OCR, text)
                 -> messages rendered from the engine's PromptTemplates (get_prompts/update_prompts)
                 -> LLM (or the offline extractive answerer)            (span, SynthesizeStart/EndEvent,
                                                                          CBEventType.SYNTHESIZE)
    verify       verifier(answer, evidence) -> Verification             (span, VerifyStart/EndEvent)
                 not verified: one retry with the stricter prompt and the checker's reasons;
                 still not: "I cannot verify an answer from the evidence." + reasons

When the evidence holds more images than ``max_images_per_call`` it is split into rounds whose
verified partial answers are merged (see `mmrag_li.generation.answer_flow`).

``Response.metadata``: "citations" ({id, asset_id, source, page, snippet, regions} per cited id),
"citation_ids", "verified", "answered", "verification" (``Verification.to_dict()``), "evidence"
(every item, marked "cited"), "timings", "extractive", "attempts", "rounds".

Streaming (``streaming=True``): a ``StreamingResponse`` yields the LLM's tokens as they arrive;
verification runs when the stream has been consumed and updates ``response.metadata`` in place;
an unverified answer gets a final "[Unverified: ...]" note. There is no retry while streaming;
use non-streaming queries where only verified text may reach the user.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import llama_index.core.instrumentation as instrument
from llama_index.core import Settings as LlamaSettings
from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.llms.types import ImageBlock
from llama_index.core.base.response.schema import (
    RESPONSE_TYPE,
    AsyncStreamingResponse,
    Response,
    StreamingResponse,
)
from llama_index.core.callbacks.base import CallbackManager
from llama_index.core.callbacks.schema import CBEventType, EventPayload
from llama_index.core.instrumentation.events.synthesis import SynthesizeEndEvent, SynthesizeStartEvent
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.prompts import BasePromptTemplate
from llama_index.core.prompts.mixin import PromptMixin
from llama_index.core.schema import NodeWithScore, QueryBundle

from mmrag_li.config import LLMConfig, Settings
from mmrag_li.generation.answer_flow import (
    AnswerFlow,
    Outcome,
    accepts_keyword,
    attempt,
    drive_async,
    drive_sync,
    no_evidence_verification,
    ordered_sources,
    pending_metadata,
    query_log_path,
    response_metadata,
    settle,
    split_rounds,
    verification_dict,
    write_query_log,
)
from mmrag_li.generation.events import VerifyEndEvent, VerifyStartEvent
from mmrag_li.generation.evidence import EvidenceItem, build_evidence, make_thumbnail
from mmrag_li.generation.extractive import ExtractiveAnswerer
from mmrag_li.generation.prompts import I_DONT_KNOW, CitationPrompts, as_template, build_messages
from mmrag_li.generation.streaming import (
    astream_tokens,
    awhole_stream,
    stream_tokens,
    verifying_finisher,
    whole_stream,
)
from mmrag_li.generation.verify import Verification, verify_answer

logger = logging.getLogger(__name__)
dispatcher = instrument.get_dispatcher(__name__)

Verifier = Callable[..., Verification]


class VerifiedCitationQueryEngine(BaseQueryEngine):
    """Answers only from retrieved evidence, with [E#] citations that a verifier checks.

    Build it with `from_defaults`. ``llm=None`` means the offline `ExtractiveAnswerer`.

    Args:
        retriever: any LlamaIndex ``BaseRetriever`` (or an object with ``retrieve``/``aretrieve``).
        llm: a LlamaIndex chat LLM (multimodal for image evidence), or None for extractive answers.
        evidence_k: evidence items (assets/pages) shown to the LLM.
        max_images_per_call: images per LLM call; more are split into rounds and merged.
        thumbnail_px: longest side of the evidence thumbnails.
        streaming: return streaming responses.
        log_path: append one JSON line per query here.
        extractive: the offline answerer used when ``llm`` is None.
        retry: one stricter retry when the check fails.
        ocr_chars: OCR characters kept per evidence item.
        text_chars: text characters kept per evidence item.
        callback_manager: LlamaIndex callback manager (default ``llama_index.core.Settings``').
        node_postprocessors: applied in order to the retrieved nodes before evidence is built.
        verifier: ``verifier(answer, evidence, **kw) -> Verification`` (default `verify_answer`);
            it also gets ``system_prompts=`` (the rendered system prompts) and ``question=`` when it
            accepts those keywords. LLM answers are then passed through `sanitize_answer`.
        prompts: a `CitationPrompts` or ``{key: PromptTemplate | str}`` overriding the defaults.
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
        node_postprocessors: Optional[Sequence[BaseNodePostprocessor]] = None,
        verifier: Optional[Verifier] = None,
        prompts: Optional[CitationPrompts | Mapping[str, BasePromptTemplate | str]] = None,
    ) -> None:
        callback_manager = callback_manager or LlamaSettings.callback_manager
        self._node_postprocessors: List[BaseNodePostprocessor] = list(node_postprocessors or [])
        for pp in self._node_postprocessors:
            pp.callback_manager = callback_manager
        super().__init__(callback_manager=callback_manager)
        self._retriever = retriever
        self._llm = llm
        self.evidence_k = evidence_k
        self.max_images_per_call = max(1, max_images_per_call)
        self.thumbnail_px = thumbnail_px
        self.streaming = streaming
        self.log_path = query_log_path(log_path)  # a RedactedLogPath stays one
        self._extractive = extractive or ExtractiveAnswerer()
        self.retry = retry
        self.ocr_chars = ocr_chars
        self.text_chars = text_chars
        self._verifier: Verifier = verifier or verify_answer
        self._verifier_takes_prompts = accepts_keyword(self._verifier, "system_prompts")
        self._verifier_takes_question = accepts_keyword(self._verifier, "question")
        if isinstance(prompts, CitationPrompts):
            self._prompts = prompts
        else:
            self._prompts = CitationPrompts().updated(prompts or {})

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
        node_postprocessors: Optional[Sequence[BaseNodePostprocessor]] = None,
        verifier: Optional[Verifier] = None,
        text_qa_template: Optional[BasePromptTemplate | str] = None,
        prompts: Optional[Mapping[str, BasePromptTemplate | str]] = None,
        **kwargs: Any,
    ) -> "VerifiedCitationQueryEngine":
        """Engine from `Settings` (``settings.llm``).

        Args:
            retriever: any LlamaIndex retriever (e.g. ``FusionRetriever``).
            settings: project settings; ``settings.llm`` gives the backend, evidence_k,
                max_images_per_call and thumbnail_px.
            llm: the chat LLM; built with `build_llm` from ``settings.llm`` when None and a
                generative backend (or a base URL) is configured.
            evidence_k: overrides ``settings.llm.evidence_k``.
            llm_base_url: a local OpenAI-compatible server for the LLM.
            streaming, log_path, extractive, retry, callback_manager, node_postprocessors,
            verifier: as in the constructor.
            text_qa_template: the citation policy (system prompt); same as
                ``prompts={"system_prompt": ...}``.
            prompts: ``{key: template}`` for any key of `CitationPrompts`.
            **kwargs: other constructor arguments (max_images_per_call, thumbnail_px, ocr_chars...).
        """
        settings = settings or Settings()
        cfg: LLMConfig = settings.llm
        if llm is None and (cfg.backend != "extractive" or cfg.api_base or llm_base_url):
            from mmrag_li.generation.llms import build_llm

            llm = build_llm(cfg, base_url=llm_base_url)
        overrides: Dict[str, Any] = dict(prompts or {})
        if text_qa_template is not None:
            overrides["system_prompt"] = text_qa_template
        return cls(
            retriever,
            llm,
            evidence_k=evidence_k or cfg.evidence_k,
            max_images_per_call=kwargs.pop("max_images_per_call", cfg.max_images_per_call),
            thumbnail_px=kwargs.pop("thumbnail_px", cfg.thumbnail_px),
            streaming=streaming,
            log_path=query_log_path(log_path, settings),  # PII redacted in the log with ingest.redact_pii
            extractive=extractive,
            retry=retry,
            callback_manager=callback_manager,
            node_postprocessors=node_postprocessors,
            verifier=verifier,
            prompts=overrides,
            **kwargs,
        )

    # -- PromptMixin ---------------------------------------------------------------------------
    def _get_prompts(self) -> Dict[str, BasePromptTemplate]:
        return self._prompts.as_dict()

    def _get_prompt_modules(self) -> Dict[str, PromptMixin]:
        return {f"node_postprocessor_{i}": pp for i, pp in enumerate(self._node_postprocessors)
                if isinstance(pp, PromptMixin)}

    def _update_prompts(self, prompts_dict: Mapping[str, BasePromptTemplate]) -> None:
        self._prompts = self._prompts.updated({k: as_template(v) for k, v in prompts_dict.items()})

    # -- parts ---------------------------------------------------------------------------------
    @property
    def retriever(self) -> BaseRetriever:
        """The retriever the engine asks."""
        return self._retriever

    @property
    def llm(self) -> Optional[Any]:
        """The chat LLM, or None (extractive answers)."""
        return self._llm

    @property
    def prompts(self) -> CitationPrompts:
        """The current templates (change them with ``update_prompts``)."""
        return self._prompts

    @property
    def node_postprocessors(self) -> List[BaseNodePostprocessor]:
        """The node postprocessors, in the order they run."""
        return list(self._node_postprocessors)

    @property
    def verifier(self) -> Verifier:
        """The answer checker."""
        return self._verifier

    # -- retrieve ------------------------------------------------------------------------------
    def _allowed_only(self, nodes: List[NodeWithScore]) -> List[NodeWithScore]:
        """Tenant guard on the answer path: evidence from a collection the retriever does not allow
        never reaches the LLM or the response, even if a retriever (a custom one, a bug) or a
        postprocessor returned it."""
        from mmrag_li.guard import CollectionGuard

        guard = getattr(self._retriever, "guard", None)
        if not isinstance(guard, CollectionGuard):  # a foreign retriever: its config's allowed_collections
            guard = CollectionGuard.from_config(getattr(self._retriever, "config", None))
        if guard.unrestricted:
            return nodes
        kept = guard.keep(nodes)
        if len(kept) != len(nodes):
            logger.warning("dropped %d retrieved node(s) outside the allowed collections %s",
                           len(nodes) - len(kept), guard.to_dict()["allowed_collections"])
        return kept

    # retrieve and aretrieve are sync/async twins (retrieve vs aretrieve, postprocess vs apostprocess).
    @dispatcher.span
    def retrieve(self, query_bundle: QueryBundle) -> List[NodeWithScore]:
        """Retrieved nodes after the tenant guard and the node postprocessors.

        Args:
            query_bundle: the query (text and/or ``image_path``).
        """
        with self.callback_manager.event(CBEventType.RETRIEVE,
                                         payload={EventPayload.QUERY_STR: query_bundle.query_str}) as ev:
            nodes = self._allowed_only(list(self._retriever.retrieve(query_bundle)))
            for pp in self._node_postprocessors:
                nodes = pp.postprocess_nodes(nodes, query_bundle=query_bundle)
            nodes = self._allowed_only(list(nodes))
            ev.on_end(payload={EventPayload.NODES: nodes})
        return nodes

    @dispatcher.span
    async def aretrieve(self, query_bundle: QueryBundle) -> List[NodeWithScore]:
        """Async twin of `retrieve`."""
        with self.callback_manager.event(CBEventType.RETRIEVE,
                                         payload={EventPayload.QUERY_STR: query_bundle.query_str}) as ev:
            nodes = self._allowed_only(list(await self._retriever.aretrieve(query_bundle)))
            for pp in self._node_postprocessors:
                nodes = await pp.apostprocess_nodes(nodes, query_bundle=query_bundle)
            nodes = self._allowed_only(list(nodes))
            ev.on_end(payload={EventPayload.NODES: nodes})
        return nodes

    def build_evidence(self, nodes: Sequence[NodeWithScore], question: str) -> List[EvidenceItem]:
        """Numbered evidence items E1..Ek from the nodes (thumbnails only when an LLM will see them).

        Args:
            nodes: retrieved (and postprocessed) nodes, best first.
            question: the question (OCR/text are compressed towards it).
        """
        return build_evidence(nodes, question, k=self.evidence_k, thumbnail_px=self.thumbnail_px,
                              thumbnails=self._llm is not None, ocr_chars=self.ocr_chars,
                              text_chars=self.text_chars)

    # -- verify --------------------------------------------------------------------------------
    @dispatcher.span
    def verify(self, answer: str, evidence: Sequence[EvidenceItem], question: Optional[str] = None) -> Verification:
        """Check ``answer`` against ``evidence`` with the engine's verifier (emits VerifyStart/EndEvent).

        Args:
            answer: the answer text with [E#] citations.
            evidence: the evidence items it may cite.
            question: the question (passed on when the verifier takes a ``question`` keyword).
        """
        dispatcher.event(VerifyStartEvent(answer=answer or "", evidence_ids=[e.id for e in evidence]))
        kwargs: Dict[str, Any] = {}
        if self._verifier_takes_prompts:
            kwargs["system_prompts"] = self._prompts.system_texts()
        if question is not None and self._verifier_takes_question:
            kwargs["question"] = question
        ver = self._verifier(answer, evidence, **kwargs)
        dispatcher.event(VerifyEndEvent(answer=answer or "", verified=getattr(ver, "verified", None),
                                        verification=verification_dict(ver)))
        return ver

    # -- synthesize ----------------------------------------------------------------------------
    def _query_image(self, qb: QueryBundle) -> Optional[ImageBlock]:
        if self._llm is None or not getattr(qb, "image_path", None):
            return None
        return make_thumbnail(qb.image_path, self.thumbnail_px)

    def _flow(self) -> AnswerFlow:
        return AnswerFlow(self._prompts, self.verify, retry=self.retry,
                          max_images_per_call=self.max_images_per_call)

    def _prepare(self, qb: QueryBundle, nodes: List[NodeWithScore], timings: Dict[str, float]):
        t = time.perf_counter()
        evidence = self.build_evidence(nodes, qb.query_str)
        query_image = self._query_image(qb)
        timings["prompt_s"] = time.perf_counter() - t
        return evidence, query_image

    def _extractive_outcome(self, qb: QueryBundle, evidence: List[EvidenceItem],
                            timings: Dict[str, float]) -> Outcome:
        t = time.perf_counter()
        answer = self._extractive.answer(qb.query_str, evidence)
        timings["llm_s"] = time.perf_counter() - t
        t = time.perf_counter()
        ver = self.verify(answer, evidence, question=qb.query_str)
        timings["verify_s"] = time.perf_counter() - t
        return settle(answer, ver, [attempt("extractive", answer, ver)], 1)

    def _early_outcome(self, qb: QueryBundle, evidence: List[EvidenceItem],
                       timings: Dict[str, float]) -> Optional[Outcome]:
        """The outcome when no LLM conversation is needed (no evidence, or extractive)."""
        if not evidence:
            timings.update(llm_s=0.0, verify_s=0.0)
            return Outcome(answer=I_DONT_KNOW, verification=no_evidence_verification())
        if self._llm is None:
            return self._extractive_outcome(qb, evidence, timings)
        return None

    def _response(self, qb: QueryBundle, nodes: List[NodeWithScore], evidence: List[EvidenceItem],
                  outcome: Outcome, timings: Dict[str, float],
                  extra_sources: Sequence[NodeWithScore] = ()) -> Response:
        meta = response_metadata(evidence, outcome, timings, extractive=self._llm is None)
        sources = ordered_sources(nodes, evidence, meta["citation_ids"]) + list(extra_sources)
        write_query_log(self.log_path, qb, nodes, evidence, outcome.answer, meta)
        return Response(response=outcome.answer, source_nodes=sources, metadata=meta)

    # synthesize and asynthesize are sync/async twins (drive_sync vs drive_async, stream vs astream).
    @dispatcher.span
    def synthesize(self, query_bundle: QueryBundle, nodes: List[NodeWithScore],
                   additional_source_nodes: Optional[Sequence[NodeWithScore]] = None,
                   *, timings: Optional[Dict[str, float]] = None) -> RESPONSE_TYPE:
        """Evidence -> LLM (or extractive) -> verified ``Response`` (``StreamingResponse`` when streaming).

        Args:
            query_bundle: the query.
            nodes: the retrieved nodes (`retrieve` output).
            additional_source_nodes: appended to the response's source nodes, not shown to the LLM.
            timings: a dict to record step timings in (``Response.metadata["timings"]``).
        """
        timings = {} if timings is None else timings
        dispatcher.event(SynthesizeStartEvent(query=query_bundle))
        with self.callback_manager.event(CBEventType.SYNTHESIZE,
                                         payload={EventPayload.QUERY_STR: query_bundle.query_str}) as ev:
            evidence, query_image = self._prepare(query_bundle, nodes, timings)
            extra = list(additional_source_nodes or [])
            if self.streaming:
                resp: RESPONSE_TYPE = self._stream_response(query_bundle, nodes, evidence, query_image, timings,
                                                            extra)
            else:
                outcome = self._early_outcome(query_bundle, evidence, timings)
                if outcome is None:
                    outcome = drive_sync(self._flow().run(query_bundle.query_str, evidence, query_image),
                                         self._llm, timings)
                resp = self._response(query_bundle, nodes, evidence, outcome, timings, extra)
            ev.on_end(payload={EventPayload.RESPONSE: resp})
        dispatcher.event(SynthesizeEndEvent(query=query_bundle, response=resp))
        return resp

    @dispatcher.span
    async def asynthesize(self, query_bundle: QueryBundle, nodes: List[NodeWithScore],
                          additional_source_nodes: Optional[Sequence[NodeWithScore]] = None,
                          *, timings: Optional[Dict[str, float]] = None) -> RESPONSE_TYPE:
        """Async twin of `synthesize` (``AsyncStreamingResponse`` when streaming)."""
        timings = {} if timings is None else timings
        dispatcher.event(SynthesizeStartEvent(query=query_bundle))
        with self.callback_manager.event(CBEventType.SYNTHESIZE,
                                         payload={EventPayload.QUERY_STR: query_bundle.query_str}) as ev:
            evidence, query_image = self._prepare(query_bundle, nodes, timings)
            extra = list(additional_source_nodes or [])
            if self.streaming:
                resp: RESPONSE_TYPE = await self._astream_response(query_bundle, nodes, evidence, query_image,
                                                                   timings, extra)
            else:
                outcome = self._early_outcome(query_bundle, evidence, timings)
                if outcome is None:
                    outcome = await drive_async(self._flow().run(query_bundle.query_str, evidence, query_image),
                                                self._llm, timings)
                resp = self._response(query_bundle, nodes, evidence, outcome, timings, extra)
            ev.on_end(payload={EventPayload.RESPONSE: resp})
        dispatcher.event(SynthesizeEndEvent(query=query_bundle, response=resp))
        return resp

    # -- query ---------------------------------------------------------------------------------
    # _query and _aquery are sync/async twins.
    def _query(self, query_bundle: QueryBundle) -> RESPONSE_TYPE:
        with self.callback_manager.event(CBEventType.QUERY,
                                         payload={EventPayload.QUERY_STR: query_bundle.query_str}) as ev:
            t = time.perf_counter()
            nodes = self.retrieve(query_bundle)
            timings = {"retrieval_s": time.perf_counter() - t}
            resp = self.synthesize(query_bundle, nodes, timings=timings)
            ev.on_end(payload={EventPayload.RESPONSE: resp})
        return resp

    async def _aquery(self, query_bundle: QueryBundle) -> RESPONSE_TYPE:
        with self.callback_manager.event(CBEventType.QUERY,
                                         payload={EventPayload.QUERY_STR: query_bundle.query_str}) as ev:
            t = time.perf_counter()
            nodes = await self.aretrieve(query_bundle)
            timings = {"retrieval_s": time.perf_counter() - t}
            resp = await self.asynthesize(query_bundle, nodes, timings=timings)
            ev.on_end(payload={EventPayload.RESPONSE: resp})
        return resp

    # -- streaming -----------------------------------------------------------------------------
    def _stream_plan(self, qb: QueryBundle, evidence: List[EvidenceItem], query_image: Optional[ImageBlock]):
        """Messages to stream, or None when the answer is computed whole (extractive, no evidence,
        or several rounds) and yielded as one chunk."""
        if self._llm is None or not evidence or len(split_rounds(evidence, self.max_images_per_call)) > 1:
            return None
        return build_messages(qb.query_str, evidence, query_image=query_image, prompts=self._prompts)

    # _stream_response and _astream_response are sync/async twins.
    def _stream_response(self, qb, nodes, evidence, query_image, timings, extra) -> StreamingResponse:
        msgs = self._stream_plan(qb, evidence, query_image)
        if msgs is None:
            outcome = self._early_outcome(qb, evidence, timings) or drive_sync(
                self._flow().run(qb.query_str, evidence, query_image), self._llm, timings)
            return whole_stream(self._response(qb, nodes, evidence, outcome, timings, extra))
        meta = pending_metadata(evidence, timings, extractive=False)
        sources = list(nodes) + list(extra)
        finish = verifying_finisher(self.verify, self.log_path, qb, nodes, evidence, timings, meta, sources, extra)
        return StreamingResponse(response_gen=stream_tokens(self._llm, msgs, finish), source_nodes=sources,
                                 metadata=meta)

    async def _astream_response(self, qb, nodes, evidence, query_image, timings, extra) -> AsyncStreamingResponse:
        msgs = self._stream_plan(qb, evidence, query_image)
        if msgs is None:
            outcome = self._early_outcome(qb, evidence, timings) or await drive_async(
                self._flow().run(qb.query_str, evidence, query_image), self._llm, timings)
            return awhole_stream(self._response(qb, nodes, evidence, outcome, timings, extra))
        meta = pending_metadata(evidence, timings, extractive=False)
        sources = list(nodes) + list(extra)
        finish = verifying_finisher(self.verify, self.log_path, qb, nodes, evidence, timings, meta, sources, extra)
        return AsyncStreamingResponse(response_gen=astream_tokens(self._llm, msgs, finish), source_nodes=sources,
                                      metadata=meta)
