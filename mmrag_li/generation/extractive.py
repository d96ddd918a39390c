"""The offline answerer: quote the ONE evidence line or row that answers the question.

No generative model ships inside a package on this project's offline default path, so the
default "LLM" is extractive: it never writes a claim of its own, it quotes evidence verbatim
with its id, e.g.::

    Extractive answer (no generative model configured): "Invoice Number: 42183017" [E1]

and answers exactly "I don't know" when no evidence line qualifies. How it picks (see `focus`):

1. The question's entity (the issuer after "from", an id such as "invoice 4711", a quoted or
   capitalised name) restricts the evidence to the items that mention it; when the question
   names one and no item does, the answer is "I don't know" (another issuer's invoice is not
   an answer).
2. A question for a document field ("invoice number" -> an identifier, "total amount due" -> an
   amount, "when/date" -> a date, "who/which company" -> a name) is answered with the best
   label -> value row of that field (`rows.field_rows`): exact labels ("Invoice Number",
   "Grand Total", "Rechnungsnr.") before loose ones ("#", "Total"), labels of neighbouring
   fields ("Order ID", "Total HT", "Kundennr.") never; ties go to the better-ranked item.
   No row with a value of the asked kind -> "I don't know", except for "which company issued
   invoice 90342?": an issuer usually has no label, so the letterhead above the document's title
   line is its row (`rows.letterhead_row`; only at the top of an image or of page 1).
3. Other questions: candidates (caption sentences, OCR lines, text sentences, each read with the
   section heading it sits under, which is never quoted) are scored with
   the packaged all-MiniLM-L6-v2 sentence model when it loads (cosine, mixed with an
   IDF-weighted term overlap), else with the term overlap alone; a question asking for a count,
   amount or date keeps only candidates holding one. Open questions may quote up to
   ``max_quotes`` lines.

Lines that read like instructions ("ignore previous instructions") are never quoted. Quotes are
substrings of the cited item (whitespace aside), so the answer passes `verify_answer`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from mmrag_li.generation import _text
from mmrag_li.generation.answer_guard import is_instruction_like
from mmrag_li.generation.evidence import EvidenceItem, neutralize
from mmrag_li.generation.focus import (
    QuestionFocus,
    analyze_question,
    mentions_entity,
    typed_values,
)
from mmrag_li.generation.prompts import EXTRACTIVE_PREFIX, I_DONT_KNOW
from mmrag_li.generation.rows import Row, field_rows, letterhead_row

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
    """One quotable piece of evidence and its scores.

    Args:
        item_id: the evidence id it comes from.
        text: the quote.
        score: final score; cosine / lexical / relevance: its parts.
        order: position in the evidence (ties go to the earlier one).
        context: the section heading the text sits under ("A Principal Node Attributes"); it is
            scored with the text (a table row says "node" only in its heading) but never quoted.
    """

    item_id: str
    text: str
    score: float = 0.0
    context: str = ""
    cosine: float | None = None
    lexical: float = 0.0
    relevance: float = 0.0
    order: int = 0


def about_entities(focus: QuestionFocus, evidence: Sequence[EvidenceItem]) -> list[EvidenceItem]:
    """The evidence items that mention every entity the question names (all items when it names none).

    Args:
        focus: the analysed question.
        evidence: the evidence items.
    """
    if not focus.entities:
        return list(evidence)
    return [e for e in evidence
            if all(mentions_entity(e.full_text(), ent) for ent in focus.entities)]


def top_texts(item: EvidenceItem) -> list[str]:
    """The item's texts that start at the top of an image or of page 1 (where a letterhead is):
    its OCR text and the first text chunk of page 1 (a later chunk's first line is mid-page).

    Args:
        item: an evidence item.
    """
    if item.page not in (None, 1):
        return []
    out = [item.ocr_text] if item.ocr_text else []
    if not item.nodes:  # built by hand (no node metadata): the first text is the top
        return out + item.texts[:1]
    first = {_text.normalize_ws(getattr(n.node, "text", "") or "") for n in item.nodes
             if (n.node.metadata or {}).get("chunk_index") in (None, 0)}
    return out + [t for t in item.texts if _text.normalize_ws(t) in first]


def item_texts(item: EvidenceItem) -> list[str]:
    """The texts of an item, layout kept (caption, OCR, text chunks).

    Args:
        item: an evidence item.
    """
    return [t for t in (item.caption, item.ocr_text, *item.texts) if t]


class ExtractiveAnswerer:
    """Quote-the-evidence answerer used when no generative LLM is configured.

    Args:
        use_embeddings: True/False to force, None to use the MiniLM model when it loads.
        threshold: minimum combined score of the best candidate of an open question; below it
            the answer is "I don't know".
        max_quotes: most quotes in an answer to an open question (a question for a value or a
            field gets one); further quotes must score within ``margin`` of the best one.
        margin: see ``max_quotes``.
        max_quote_chars: quotes longer than this are cut at a word boundary (still a substring).
        max_candidates: candidates sent to the sentence model (pre-selected by term overlap).
        cosine_weight: weight of the sentence-model cosine against the term overlap.
    """

    prefix = EXTRACTIVE_PREFIX

    def __init__(self, use_embeddings: bool | None = None, threshold: float = 0.3, max_quotes: int = 3,
                 margin: float = 0.15, max_quote_chars: int = 300, max_candidates: int = 64,
                 cosine_weight: float = 0.6):
        self.use_embeddings = use_embeddings
        self.threshold = threshold
        self.max_quotes = max_quotes
        self.margin = margin
        self.max_quote_chars = max_quote_chars
        self.max_candidates = max_candidates
        self.cosine_weight = cosine_weight

    # -- field rows ----------------------------------------------------------------------------
    def best_row(self, focus: QuestionFocus, evidence: Sequence[EvidenceItem]) -> tuple[EvidenceItem, Row] | None:
        """The (item, row) that best states the asked field, or None.

        Args:
            focus: the analysed question (with a field).
            evidence: the items to search (already restricted to the question's entity).
        """
        best: tuple[float, int, EvidenceItem, Row] | None = None
        n = 0
        for rank, item in enumerate(evidence):
            for text in item_texts(item):
                for row in field_rows(text, focus):
                    n += 1
                    if is_instruction_like(row.quote):
                        continue
                    label_terms = set(_text.content_terms(row.label))
                    overlap = len(label_terms & set(focus.terms)) / max(1, len(focus.terms))
                    score = row.strength + 0.2 * overlap - 0.02 * rank
                    if best is None or score > best[0] + 1e-9:
                        best = (score, n, item, row)
        if best is None and focus.field is not None and focus.field.name == "issuer":
            for item in evidence:  # best-ranked item first
                for text in top_texts(item):
                    row = letterhead_row(text, focus)
                    if row is not None and not is_instruction_like(row.quote):
                        return item, row
        return (best[2], best[3]) if best else None

    # -- candidates ---------------------------------------------------------------------------
    def candidates(self, evidence: Sequence[EvidenceItem]) -> list[Candidate]:
        """Quotable pieces of the evidence: caption sentences, OCR lines, text sentences.

        Args:
            evidence: the evidence items.
        """
        out: list[Candidate] = []
        seen = set()
        n = 0
        for item in evidence:
            pieces: list[tuple[str, str]] = []  # (piece, section heading)
            if item.caption:
                pieces += [(p, "") for p in _text.split_sentences(item.caption)]
            if item.ocr_text:
                pieces += [(ln.strip(), "") for ln in item.ocr_text.splitlines() if ln.strip()]
            for t in item.texts:
                section = item.section_of(t) if hasattr(item, "section_of") else ""
                pieces += [(p, section) for p in _text.split_sentences(t)]
            for p, section in pieces:
                p = _clean_quote(p, self.max_quote_chars)
                if len(p) < 2 or not re.search(r"\w", p) or (item.id, p) in seen or is_instruction_like(p):
                    continue
                seen.add((item.id, p))
                context = section if section and _text.normalize_ws(section) not in p else ""
                out.append(Candidate(item_id=item.id, text=p, order=n, context=context))
                n += 1
        return out

    def rank(self, question: str, evidence: Sequence[EvidenceItem]) -> list[Candidate]:
        """Candidates scored against the question, best first (see module docstring, step 3).

        Args:
            question: the question.
            evidence: the evidence items.
        """
        cands = self.candidates(evidence)
        if not cands:
            return []
        scored = [f"{c.context}: {c.text}" if c.context else c.text for c in cands]  # heading as context
        lex = _text.lexical_scores(question, scored)
        for c, s in zip(cands, lex):
            c.lexical = s
        pool = cands
        if len(cands) > self.max_candidates:
            pool = sorted(cands, key=lambda c: (-c.lexical, c.order))[: self.max_candidates]
        cos = None
        if self.use_embeddings is not False:
            cos = _text.cosine_scores(question, [f"{c.context}: {c.text}" if c.context else c.text for c in pool])
            if cos is None and self.use_embeddings:
                raise RuntimeError("use_embeddings=True but the sentence model could not be loaded")
        if cos is not None:
            for c, s in zip(pool, cos):
                c.cosine = s
        amount_q, count_q, date_q = (bool(rx.search(question)) for rx in (_AMOUNT_Q, _COUNT_Q, _DATE_Q))
        w = self.cosine_weight
        rel: list[float] = []
        for c in cands:
            if c.cosine is not None:
                rel.append(w * max(c.cosine, 0.0) + (1 - w) * c.lexical)
            else:  # not pre-selected for the sentence model (or no model): overlap only
                rel.append((1 - w) * c.lexical if cos is not None else c.lexical)
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
        """The extractive answer: ``<prefix> "<quote>" [E#]`` or "I don't know".

        Args:
            question: the question ("" for an image-only query: the best item is described).
            evidence: the evidence items, best first.
        """
        if not evidence:
            return I_DONT_KNOW
        if not question.strip():
            return self._describe(evidence[0])
        focus = analyze_question(question)
        pool = about_entities(focus, evidence)
        if not pool:
            return I_DONT_KNOW
        if focus.field is not None:
            found = self.best_row(focus, pool)
            if found is None:
                return I_DONT_KNOW
            item, row = found
            return f'{self.prefix} "{_clean_quote(row.quote, self.max_quote_chars)}" [{item.id}]'
        ranked = self.rank(question, pool)
        if focus.kind in ("count", "amount", "date"):
            typed = [c for c in ranked if typed_values(c.text, focus.kind)]
            ranked = typed or ranked
        if not ranked or max(c.relevance for c in ranked) < self.threshold:
            return I_DONT_KNOW
        best = ranked[0].score
        limit = 1 if focus.kind else self.max_quotes
        chosen = [c for c in ranked if c.score >= max(self.threshold, best - self.margin)][:limit] or ranked[:1]
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
