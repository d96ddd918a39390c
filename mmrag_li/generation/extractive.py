"""The offline answerer: quote the evidence sentences most related to the question.

No generative model ships inside a package on this project's offline default path, so the
default "LLM" is extractive: it never writes a claim of its own, it quotes evidence verbatim
(caption sentences, OCR lines, text sentences) with their ids, e.g.::

    Extractive answer (no generative model configured): "Total 1,939.00" [E1]

and answers exactly "I don't know" when nothing is related enough. Candidates are scored with
the packaged all-MiniLM-L6-v2 sentence model when it loads (cosine, mixed with an IDF-weighted
term overlap), else with the term overlap alone. Questions that ask for an amount or a date favour
candidates that contain one. Quotes are exact substrings of the cited item, so the answer passes
`verify_answer`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import List, Optional, Sequence

from mmrag_li.generation import _text
from mmrag_li.generation.evidence import EvidenceItem, neutralize
from mmrag_li.generation.prompts import EXTRACTIVE_PREFIX, I_DONT_KNOW

_AMOUNT_Q = re.compile(r"\b(how much|total|amount|price|cost|sum|pay|paid|payable|due|balance|fee|charge|"
                       r"vat|tax|net|gross|spend|spent|owe)\b", re.IGNORECASE)
_COUNT_Q = re.compile(r"\b(how many|number of|count|quantity|qty)\b", re.IGNORECASE)
_DATE_Q = re.compile(r"\b(when|date|dated|day|year|month|deadline)\b", re.IGNORECASE)
_AMOUNT_RE = re.compile(r"(?:[$€£¥₹]|\b(?:rs|inr|usd|eur|gbp|chf)\b)\s?\d|\d[\d,.' ]*[.,]\d{2}(?!\d)", re.IGNORECASE)
_NUMBER_RE = re.compile(r"\d")
_DATE_RE = re.compile(
    r"\b\d{4}-\d{1,2}-\d{1,2}\b|\b\d{1,2}[/.]\d{1,2}[/.]\d{2,4}\b|"
    r"\b(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?\s+\d{1,2}|\b\d{1,2}\.?\s+(?:of\s+)?"
    r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*",
    re.IGNORECASE,
)


@dataclass
class Candidate:
    item_id: str
    text: str
    score: float = 0.0
    cosine: Optional[float] = None
    lexical: float = 0.0
    relevance: float = 0.0
    order: int = 0


class ExtractiveAnswerer:
    """Quote-the-evidence answerer used when no generative LLM is configured.

    Args:
        use_embeddings: True/False to force, None to use the MiniLM model when it loads.
        threshold: minimum combined score of the best candidate; below it the answer is
            "I don't know".
        max_quotes: most quotes in one answer; further quotes must score within ``margin`` of
            the best one.
        max_quote_chars: quotes longer than this are cut at a word boundary (still a substring).
        max_candidates: candidates sent to the sentence model (pre-selected by term overlap).
    """

    prefix = EXTRACTIVE_PREFIX

    def __init__(self, use_embeddings: Optional[bool] = None, threshold: float = 0.3, max_quotes: int = 3,
                 margin: float = 0.15, max_quote_chars: int = 300, max_candidates: int = 64,
                 cosine_weight: float = 0.6):
        self.use_embeddings = use_embeddings
        self.threshold = threshold
        self.max_quotes = max_quotes
        self.margin = margin
        self.max_quote_chars = max_quote_chars
        self.max_candidates = max_candidates
        self.cosine_weight = cosine_weight

    # -- candidates ---------------------------------------------------------------------------
    def candidates(self, evidence: Sequence[EvidenceItem]) -> List[Candidate]:
        out: List[Candidate] = []
        seen = set()
        n = 0
        for item in evidence:
            pieces: List[str] = []
            if item.caption:
                pieces += _text.split_sentences(item.caption)
            if item.ocr_text:
                pieces += [ln.strip() for ln in item.ocr_text.splitlines() if ln.strip()]
            for t in item.texts:
                pieces += _text.split_sentences(t)
            for p in pieces:
                p = _clean_quote(p, self.max_quote_chars)
                if len(p) < 2 or not re.search(r"\w", p) or (item.id, p) in seen:
                    continue
                seen.add((item.id, p))
                out.append(Candidate(item_id=item.id, text=p, order=n))
                n += 1
        return out

    def rank(self, question: str, evidence: Sequence[EvidenceItem]) -> List[Candidate]:
        cands = self.candidates(evidence)
        if not cands:
            return []
        texts = [c.text for c in cands]
        lex = _text.lexical_scores(question, texts)
        for c, s in zip(cands, lex):
            c.lexical = s
        pool = cands
        if len(cands) > self.max_candidates:
            pool = sorted(cands, key=lambda c: (-c.lexical, c.order))[: self.max_candidates]
        cos = None
        if self.use_embeddings is not False:
            cos = _text.cosine_scores(question, [c.text for c in pool])
            if cos is None and self.use_embeddings:
                raise RuntimeError("use_embeddings=True but the sentence model could not be loaded")
        if cos is not None:
            for c, s in zip(pool, cos):
                c.cosine = s
        amount_q = bool(_AMOUNT_Q.search(question))
        count_q = bool(_COUNT_Q.search(question))
        date_q = bool(_DATE_Q.search(question))
        w = self.cosine_weight
        rel: List[float] = []
        for c in cands:
            if c.cosine is not None:
                rel.append(w * max(c.cosine, 0.0) + (1 - w) * c.lexical)
            elif cos is not None:  # not pre-selected for the sentence model: overlap only
                rel.append((1 - w) * c.lexical)
            else:
                rel.append(c.lexical)
        item_rel: dict = {}
        for c, r in zip(cands, rel):
            item_rel[c.item_id] = max(item_rel.get(c.item_id, 0.0), r)
        for c, r in zip(cands, rel):
            # A line is scored with its item: "Date: 05/03/2024" answers "when was the invoice
            # issued?" because its item is about the invoice, not because the line says "invoice".
            ir = item_rel[c.item_id]
            boost = 0.0
            if ir >= self.threshold:
                if amount_q and _AMOUNT_RE.search(c.text):
                    boost = max(boost, 0.2)
                if count_q and _NUMBER_RE.search(c.text):
                    boost = max(boost, 0.2)
                if date_q and _DATE_RE.search(c.text):
                    boost = max(boost, 0.3)
            c.relevance = r
            c.score = 0.5 * r + 0.5 * ir + boost
        return sorted(cands, key=lambda c: (-c.score, c.order))

    # -- answer --------------------------------------------------------------------------------
    def answer(self, question: str, evidence: Sequence[EvidenceItem]) -> str:
        if not evidence:
            return I_DONT_KNOW
        if not question.strip():
            return self._describe(evidence[0])
        ranked = self.rank(question, evidence)
        if not ranked or max(c.relevance for c in ranked) < self.threshold:
            return I_DONT_KNOW
        best = ranked[0].score
        chosen = [c for c in ranked if c.score >= max(self.threshold, best - self.margin)][: self.max_quotes]
        quotes = "; ".join(f'"{c.text}" [{c.item_id}]' for c in chosen)
        return f"{self.prefix} {quotes}"

    def _describe(self, item: EvidenceItem) -> str:
        """Image-only query: describe the best-matching evidence item by quoting it."""
        text = ""
        for src in (item.caption, item.ocr_text, *item.texts):
            pieces = _text.split_sentences(src) if src else []
            if pieces:
                text = _clean_quote(pieces[0], self.max_quote_chars)
                break
        where = item.source_name + (f", page {item.page}" if item.page is not None else "")
        if text:
            return f'{self.prefix} the best match is {where} [{item.id}]: "{text}" [{item.id}]'
        return f"{self.prefix} the best match is {where} [{item.id}]"


def _clean_quote(text: str, max_chars: int) -> str:
    """Whitespace-collapsed, neutralised, double quotes swapped for single ones, capped at a word
    boundary. The result is still found by the verifier (which unifies quotes and whitespace)."""
    t = _text.normalize_ws(neutralize(text)).replace('"', "'").replace("“", "'").replace("”", "'")
    if len(t) > max_chars:
        cut = t.rfind(" ", 0, max_chars)
        t = t[: cut if cut > max_chars // 2 else max_chars].rstrip(" ,;:")
    return t
