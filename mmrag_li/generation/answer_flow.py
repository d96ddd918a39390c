"""The answer conversation of `VerifiedCitationQueryEngine`: rounds, merge, retry, verification.

`AnswerFlow.run` is a generator that yields message lists and receives the LLM's answer texts,
so one flow serves both drivers: `drive_sync` (``llm.chat``) and its async twin `drive_async`
(``llm.achat``). Per question::

    one round  : answer -> verify -> (not verified and retry) strict retry with the reasons -> verify
    rounds > 1 : partial answer per round (verified against that round) -> merge -> verify
                 -> (not verified and retry) merge retry -> still not: the verified partials joined
    not verified in the end: "I cannot verify an answer from the evidence. Reasons: ..."

Also here: the `Outcome` of a flow and the response metadata / source order / query log built from
it, shared by the plain and the streaming paths.
"""

from __future__ import annotations

import copy
import inspect
import json
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass, field, is_dataclass, replace
from typing import Any, Callable, Dict, Generator, List, Optional, Sequence

from llama_index.core.base.llms.types import ChatMessage, ImageBlock
from llama_index.core.schema import NodeWithScore, QueryBundle

from mmrag_li.generation.answer_guard import sanitize_answer
from mmrag_li.generation.evidence import EvidenceItem, citation_records
from mmrag_li.generation.prompts import (
    CANNOT_VERIFY,
    I_DONT_KNOW,
    CitationPrompts,
    build_merge_messages,
    build_messages,
)
from mmrag_li.generation.verify import Verification

logger = logging.getLogger(__name__)

Verify = Callable[..., Verification]
Flow = Generator[List[ChatMessage], str, "Outcome"]

_LOG_LOCK = threading.Lock()


@dataclass
class Outcome:
    """Result of one answer flow.

    Args:
        answer: the final answer text (the refusal with reasons when not verified).
        verification: the verifier's verdict on ``answer``.
        attempts: one dict per LLM/extractive answer: kind, answer, verified, reasons.
        rounds: how many evidence rounds were asked.
        findings: what `sanitize_answer` removed or flagged in ``answer`` (check dicts); they are
            added to ``metadata["verification"]["checks"]`` with ``"stage": "sanitize"``.
    """

    answer: str
    verification: Verification
    attempts: List[Dict[str, Any]] = field(default_factory=list)
    rounds: int = 1
    findings: List[Dict[str, Any]] = field(default_factory=list)


def accepts_keyword(fn: Callable[..., Any], name: str) -> bool:
    """True when ``fn`` takes the keyword ``name`` (or ``**kwargs``).

    Args:
        fn: the callable to inspect.
        name: the keyword argument.
    """
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def verify_with_question(verify: Verify, answer: str, evidence: Sequence[EvidenceItem],
                         question: Optional[str]) -> Verification:
    """``verify(answer, evidence, question=question)``, without ``question`` when ``verify``
    does not take it (custom verifiers) or it is None.

    Args:
        verify: the verifier.
        answer: the answer text.
        evidence: the evidence items it may cite.
        question: the question, or None.
    """
    if question is not None and accepts_keyword(verify, "question"):
        return verify(answer, evidence, question=question)
    return verify(answer, evidence)


def sanitized(outcome: Outcome, evidence: Sequence[EvidenceItem]) -> Outcome:
    """``outcome`` with its answer passed through `sanitize_answer` (links/images whose URL the
    cited evidence lacks removed) and the findings recorded in ``outcome.findings``.

    Args:
        outcome: an LLM answer's outcome.
        evidence: the evidence items the answer may cite.
    """
    clean, findings = sanitize_answer(outcome.answer, evidence)
    if findings:
        logger.warning("sanitized the answer: %s", "; ".join(str(f.get("detail")) for f in findings))
    return replace(outcome, answer=clean, findings=list(outcome.findings) + [dict(f) for f in findings])


def text_of(chat_response: Any) -> str:
    """The message text of a ``ChatResponse`` (or ``str(obj)``), stripped."""
    msg = getattr(chat_response, "message", None)
    content = getattr(msg, "content", None) if msg is not None else None
    return (content if content is not None else str(chat_response or "")).strip()


def attempt(kind: str, answer: str, ver: Verification) -> Dict[str, Any]:
    """One entry of ``metadata["attempts"]``."""
    return {"kind": kind, "answer": answer, "verified": ver.verified, "reasons": list(ver.reasons)}


def failed_verification(ver: Verification, reasons: Optional[List[str]] = None) -> Verification:
    """A copy of ``ver`` marking the answer as refused: no citations, not answered."""
    out = copy.copy(ver)
    if reasons is not None:
        out.reasons = list(reasons)
    out.citations = []
    out.answered = False
    return out


def no_evidence_verification() -> Verification:
    """The verdict for "I don't know" when nothing was retrieved (trivially verified)."""
    return Verification(verified=True, answered=False, reasons=["no evidence retrieved"])


def settle(answer: str, ver: Verification, attempts: List[Dict[str, Any]], rounds: int) -> Outcome:
    """The outcome: the answer when verified, otherwise the refusal naming the checker's reasons."""
    if ver.verified:
        return Outcome(answer=answer.strip(), verification=ver, attempts=attempts, rounds=rounds)
    reasons = "; ".join(ver.reasons) or "unknown reason"
    return Outcome(answer=f"{CANNOT_VERIFY} Reasons: {reasons}", verification=failed_verification(ver),
                   attempts=attempts, rounds=rounds)


def split_rounds(evidence: Sequence[EvidenceItem], max_images: int) -> List[List[EvidenceItem]]:
    """Evidence split so that no round holds more than ``max_images`` images (order kept)."""
    if sum(1 for e in evidence if e.has_image) <= max_images:
        return [list(evidence)]
    rounds: List[List[EvidenceItem]] = [[]]
    n_img = 0
    for item in evidence:
        if item.has_image and n_img >= max_images:
            rounds.append([])
            n_img = 0
        rounds[-1].append(item)
        n_img += int(item.has_image)
    return rounds


class AnswerFlow:
    """The LLM conversation for one question, independent of how the LLM is called.

    Args:
        prompts: the templates the messages are rendered from.
        verify: ``verify(answer, evidence[, question=]) -> Verification``; it gets the question
            when it takes a ``question`` keyword.
        retry: one stricter retry (and one merge retry) when a check fails.
        max_images_per_call: images per LLM call; more evidence images are split into rounds.
    """

    def __init__(self, prompts: CitationPrompts, verify: Verify, *, retry: bool = True,
                 max_images_per_call: int = 6) -> None:
        self.prompts = prompts
        self.verify = verify
        self.retry = retry
        self.max_images_per_call = max(1, max_images_per_call)

    def _verify_for(self, question: str) -> Callable[[str, Sequence[EvidenceItem]], Verification]:
        return lambda answer, evidence: verify_with_question(self.verify, answer, evidence, question)

    def run(self, question: str, evidence: List[EvidenceItem], query_image: Optional[ImageBlock]) -> Flow:
        """Yields message lists, receives answer texts, returns the `Outcome` (answer sanitized
        with `sanitize_answer`).

        Args:
            question: the question text.
            evidence: the evidence items (non-empty).
            query_image: the user's query image, if any.
        """
        outcome = yield from self._run(question, evidence, query_image)
        return sanitized(outcome, evidence)

    def _run(self, question: str, evidence: List[EvidenceItem], query_image: Optional[ImageBlock]) -> Flow:
        p = self.prompts
        verify = self._verify_for(question)
        attempts: List[Dict[str, Any]] = []
        rounds = split_rounds(evidence, self.max_images_per_call)
        if len(rounds) == 1:
            answer = yield build_messages(question, evidence, query_image=query_image, prompts=p)
            ver = verify(answer, evidence)
            attempts.append(attempt("answer", answer, ver))
            if not ver.verified and self.retry:
                answer = yield build_messages(question, evidence, strict=True, feedback=ver.reasons,
                                              query_image=query_image, prompts=p)
                ver = verify(answer, evidence)
                attempts.append(attempt("retry", answer, ver))
            return settle(answer, ver, attempts, 1)

        partials: List[str] = []
        partial_reasons: List[str] = []
        last_failed: Optional[Verification] = None
        for i, part in enumerate(rounds, 1):
            ans = yield build_messages(question, part, query_image=query_image, prompts=p, kind="partial")
            ver = verify(ans, part)
            attempts.append(attempt(f"round{i}", ans, ver))
            if ver.verified and ver.answered:
                partials.append(ans)
            elif not ver.verified:
                last_failed = ver
                partial_reasons += [f"round {i}: {r}" for r in ver.reasons]
        n = len(rounds)
        if not partials:
            if last_failed is not None:
                return settle("", failed_verification(last_failed, partial_reasons), attempts, n)
            return settle(I_DONT_KNOW, verify(I_DONT_KNOW, evidence), attempts, n)
        if len(partials) == 1:
            return settle(partials[0], verify(partials[0], evidence), attempts, n)
        merged = yield build_merge_messages(question, partials, evidence, prompts=p)
        ver = verify(merged, evidence)
        attempts.append(attempt("merge", merged, ver))
        if not ver.verified and self.retry:
            merged = yield build_merge_messages(question, partials, evidence, feedback=ver.reasons, prompts=p)
            ver = verify(merged, evidence)
            attempts.append(attempt("merge_retry", merged, ver))
        if not ver.verified:
            joined = "\n".join(partials)
            jver = verify(joined, evidence)
            if jver.verified:
                return settle(joined, jver, attempts, n)
        return settle(merged, ver, attempts, n)


# drive_sync and drive_async are sync/async twins: they differ only in llm.chat vs await llm.achat.
def drive_sync(flow: Flow, llm: Any, timings: Dict[str, float]) -> Outcome:
    """Run ``flow`` with ``llm.chat``; adds ``llm_s`` and ``verify_s`` to ``timings``."""
    llm_s = 0.0
    t_all = time.perf_counter()
    try:
        msgs = next(flow)
        while True:
            t = time.perf_counter()
            text = text_of(llm.chat(msgs))
            llm_s += time.perf_counter() - t
            msgs = flow.send(text)
    except StopIteration as stop:
        outcome: Outcome = stop.value
    timings["llm_s"] = llm_s
    timings["verify_s"] = max(0.0, time.perf_counter() - t_all - llm_s)
    return outcome


async def drive_async(flow: Flow, llm: Any, timings: Dict[str, float]) -> Outcome:
    """Async twin of `drive_sync` (``await llm.achat``)."""
    llm_s = 0.0
    t_all = time.perf_counter()
    try:
        msgs = next(flow)
        while True:
            t = time.perf_counter()
            text = text_of(await llm.achat(msgs))
            llm_s += time.perf_counter() - t
            msgs = flow.send(text)
    except StopIteration as stop:
        outcome: Outcome = stop.value
    timings["llm_s"] = llm_s
    timings["verify_s"] = max(0.0, time.perf_counter() - t_all - llm_s)
    return outcome


# -- response pieces ------------------------------------------------------------------------------
def verification_dict(ver: Any) -> Dict[str, Any]:
    """``ver.to_dict()`` (or its fields), always with "verified" and "reasons"."""
    if hasattr(ver, "to_dict"):
        out = dict(ver.to_dict())
    elif is_dataclass(ver):
        out = asdict(ver)
    else:
        out = {}
    out.setdefault("verified", getattr(ver, "verified", None))
    out.setdefault("reasons", list(getattr(ver, "reasons", []) or []))
    return out


def evidence_rows(evidence: Sequence[EvidenceItem], citation_ids: Optional[Sequence[str]]) -> List[Dict[str, Any]]:
    """``metadata["evidence"]``: every evidence item (``EvidenceItem.to_dict()``: its own id,
    asset_id, source, page, snippet, regions, ...) plus ``"cited"``.

    Args:
        evidence: the evidence items shown to the answerer.
        citation_ids: the ids the answer cites; None = not known yet ("cited" is None).
    """
    cited = None if citation_ids is None else set(citation_ids)
    return [dict(e.to_dict(), cited=None if cited is None else e.id in cited) for e in evidence]


def response_metadata(evidence: List[EvidenceItem], outcome: Outcome, timings: Dict[str, float],
                      extractive: bool) -> Dict[str, Any]:
    """``Response.metadata``: "citations" (one object per cited id, see
    `mmrag_li.generation.evidence.citation_records`), "citation_ids", the verdict ("verified" and
    the "verification" dict), "evidence" (every item, marked "cited"), timings, attempts and rounds.

    Args:
        evidence: the evidence items the answer was written from.
        outcome: the flow's result (answer and verification).
        timings: step timings in seconds.
        extractive: True when the offline extractive answerer wrote the answer.
    """
    by_id = {e.id: e for e in evidence}
    cited = [i for i in outcome.verification.citations if i in by_id]
    verification = verification_dict(outcome.verification)
    if outcome.findings:
        verification["checks"] = list(verification.get("checks") or []) + [
            dict(f, stage="sanitize") for f in outcome.findings]
    return {
        "citations": citation_records(evidence, outcome.answer, cited),
        "citation_ids": cited,
        "verified": outcome.verification.verified,
        "answered": outcome.verification.answered,
        "verification": verification,
        "evidence": evidence_rows(evidence, cited),
        "timings": {k: round(v, 4) for k, v in timings.items()},
        "extractive": extractive,
        "attempts": outcome.attempts,
        "rounds": outcome.rounds,
    }


def pending_metadata(evidence: List[EvidenceItem], timings: Dict[str, float], extractive: bool) -> Dict[str, Any]:
    """Metadata of a streaming response before its stream has been consumed and verified
    (no citations yet; evidence items have ``"cited": None``).

    Args:
        evidence: the evidence items shown to the LLM.
        timings: step timings so far.
        extractive: True for the extractive answerer.
    """
    reasons = ["pending: verification runs when the stream has been consumed"]
    return {"citations": [], "citation_ids": [], "verified": None, "answered": None,
            "verification": {"citations_valid": None, "supported": None, "verified": None, "checks": [],
                             "pending": True, "reasons": reasons},
            "evidence": evidence_rows(evidence, None), "timings": timings,
            "extractive": extractive, "attempts": [], "rounds": 1}


def ordered_sources(nodes: List[NodeWithScore], evidence: List[EvidenceItem],
                    citation_ids: Sequence[str]) -> List[NodeWithScore]:
    """Source nodes with the cited evidence's nodes first, then the rest in retrieval order."""
    by_id = {e.id: e for e in evidence}
    out: List[NodeWithScore] = []
    seen = set()
    for eid in citation_ids:
        for n in by_id[eid].nodes if eid in by_id else []:
            if id(n) not in seen:
                seen.add(id(n))
                out.append(n)
    for n in nodes:
        if id(n) not in seen:
            seen.add(id(n))
            out.append(n)
    return out


class RedactedLogPath(str):
    """A query-log path whose records keep no PII: the question, the answer and the verification's
    text go through ``enrich.pii.redact_text`` (e-mails, phones, IBANs, cards -> placeholders).

    Args:
        path: the log file.
        phone_regions: ``ingest.pii_phone_regions``.
    """

    phone_regions: Optional[Sequence[str]]

    def __new__(cls, path: Any, phone_regions: Optional[Sequence[str]] = None) -> "RedactedLogPath":
        obj = super().__new__(cls, os.fspath(path))
        obj.phone_regions = tuple(phone_regions) if phone_regions else None
        return obj


def query_log_path(path: Any, settings: Any = None) -> Optional[str]:
    """The engine's query-log path: a :class:`RedactedLogPath` when ``settings.ingest.redact_pii``.

    Args:
        path: the log file, or None (no log).
        settings: the ``Settings`` (or None: the path as is).
    """
    if not path:
        return None
    ingest = getattr(settings, "ingest", None)
    if ingest is not None and getattr(ingest, "redact_pii", False):
        return RedactedLogPath(path, getattr(ingest, "pii_phone_regions", None))
    return path if isinstance(path, str) else os.fspath(path)


def _redacted(value: Any, regions: Optional[Sequence[str]]) -> Any:
    from mmrag_li.enrich.pii import redact_text

    if isinstance(value, str):
        return redact_text(value, phone_regions=regions)[0]
    if isinstance(value, dict):
        return {k: _redacted(v, regions) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redacted(v, regions) for v in value]
    return value


def write_query_log(path: Optional[str], qb: QueryBundle, nodes: List[NodeWithScore],
                    evidence: List[EvidenceItem], answer: str, meta: Dict[str, Any]) -> None:
    """Append one JSON line per query to ``path`` (no-op without a path; never raises). A
    :class:`RedactedLogPath` gets the question, answer and verification with PII redacted."""
    if not path:
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
        "citations": [{k: c.get(k) for k in ("id", "asset_id", "page")} if isinstance(c, dict) else c
                      for c in meta.get("citations") or []],
        "citation_ids": meta.get("citation_ids"),
        "verified": meta.get("verified"),
        "verification": meta.get("verification"),
        "timings": meta.get("timings"),
        "extractive": meta.get("extractive"),
        "attempts": len(meta.get("attempts") or []),
    }
    if isinstance(path, RedactedLogPath):
        for key in ("question", "answer", "verification"):
            record[key] = _redacted(record[key], path.phone_regions)
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        line = json.dumps(record, ensure_ascii=False, default=str)
        with _LOG_LOCK, open(path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
    except OSError as exc:  # logging must never fail a query
        logger.warning("could not write query log %s: %s", path, exc)
