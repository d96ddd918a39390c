"""The lines a citing sentence relied on: the ``regions`` and ``snippet`` of one citation.

An answer sentence such as ``The total is "Total 1,939.00 EUR" [E1].`` cites E1 for what it quotes
and for its numbers, not for the question's words. So the lines of a cited item are looked up in
this order (each step over the item's OCR lines / PDF text-layer lines, with their boxes):

1. the sentence's quoted strings (``"…"``, ``“…”``, ``«…»``, ``‘…’``): lines holding at least half
   of a quote's terms, best first;
2. its numbers (amounts, ids, dates; compared digit by digit, so ``1,939.00`` matches ``1939.00``
   and ``1.939,00``): lines holding them, numbers the question does not already state first;
3. its other words: lines holding at least ``min_score`` of the sentence's terms
   (`mmrag_li.retrieval.regions.match_lines`).

The first step that finds lines wins. `citation_regions` then adds the item's own question-matching
lines after them (so the document's heading the question named stays boxed, second), and
`citation_snippet` marks the sentence's terms in the relied lines.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Sequence

from mmrag_li.retrieval.regions import Line, match_lines, mark_terms, node_lines, query_terms, region

__all__ = ["claim_quotes", "claim_numbers", "relied_lines", "citation_regions", "citation_snippet"]

MAX_RELIED = 3
_QUOTE = re.compile(r'"([^"\n]{2,300})"|\u201c([^\u201d\n]{2,300})\u201d|\u00ab([^\u00bb\n]{2,300})\u00bb'
                    r"|\u2018([^\u2019\n]{2,300})\u2019")
_NUMBER = re.compile(r"\d(?:[\d.,'\u00a0\u202f]*\d)?")
_EXTRACTIVE_LEAD = re.compile(r"^\s*Extractive answer \([^)]*\):\s*", re.IGNORECASE)


def claim_quotes(claim: str) -> List[str]:
    """The quoted strings of ``claim`` (straight, curly, guillemet or single curly quotes), in order.

    Args:
        claim: the answer sentence(s) citing one evidence item.
    """
    return [next(g for g in m.groups() if g).strip() for m in _QUOTE.finditer(claim or "")]


def _digits(token: str) -> str:
    return re.sub(r"\D", "", token)


def claim_numbers(claim: str, question: str = "") -> List[str]:
    """The numbers of ``claim`` as digit strings (separators dropped), those not in ``question`` first;
    single digits are left out (they match nearly every line).

    Args:
        claim: the answer sentence(s).
        question: the question (its numbers go last: they name the document, not the answer).
    """
    asked = {_digits(m.group(0)) for m in _NUMBER.finditer(question or "")}
    found = [d for d in dict.fromkeys(_digits(m.group(0)) for m in _NUMBER.finditer(claim or "")) if len(d) >= 2]
    return [d for d in found if d not in asked] + [d for d in found if d in asked]


def _item_lines(item: Any) -> List[Line]:
    page = getattr(item, "page", None)
    out: List[Line] = []
    seen = set()
    for nws in getattr(item, "nodes", None) or []:
        for ln in node_lines(nws):
            if page is not None and ln.page not in (page, None):
                continue
            key = (ln.text, ln.page, tuple(ln.bbox) if ln.bbox else None)
            if ln.bbox and key not in seen:
                seen.add(key)
                out.append(ln)
    return out


def _by_quotes(lines: Sequence[Line], quotes: Sequence[str]) -> List[Line]:
    out: List[Line] = []
    for quote in quotes:
        found = match_lines(lines, quote)
        out += [ln for ln in found if ln.score >= 0.375 and ln.score >= 0.5 * found[0].score]  # >= half its terms
    return out


def _by_numbers(lines: Sequence[Line], numbers: Sequence[str], claim: str) -> List[Line]:
    scored = []
    for i, ln in enumerate(lines):
        have = {_digits(m.group(0)) for m in _NUMBER.finditer(ln.text or "")}
        hits = [j for j, d in enumerate(numbers) if d in have]
        if hits:
            # earlier numbers (not in the question) weigh more; ties: more numbers, then reading order
            rank = (min(hits), -len(hits), i)
            scored.append((rank, ln))
    if not scored:
        return []
    scored.sort(key=lambda t: t[0])
    best = scored[0][0][0]
    out = [ln for rank, ln in scored if rank[0] == best]
    terms = match_lines(out, claim)  # sets .score from the claim's terms
    return terms + [ln for ln in out if ln not in terms]


def relied_lines(item: Any, claim: str, question: str = "", min_score: float = 0.5) -> List[Dict[str, Any]]:
    """Regions of the lines of ``item`` that ``claim`` quotes or relies on (module docstring: quotes,
    then numbers, then words), best first, at most three; [] when none qualifies.

    Args:
        item: an evidence item (``nodes`` with OCR words / text-layer lines, ``page``).
        claim: the answer sentence(s) citing it (citations removed).
        question: the question (its numbers rank after the claim's own).
        min_score: the least line score for the word step (see `mmrag_li.retrieval.regions.line_score`).
    """
    claim = _EXTRACTIVE_LEAD.sub("", claim or "")
    lines = _item_lines(item)
    if not lines or not claim.strip():
        return []
    found = _by_quotes(lines, claim_quotes(claim))
    if not found:
        found = _by_numbers(lines, claim_numbers(claim, question), claim)
    if not found:
        found = [ln for ln in match_lines(lines, claim) if ln.score >= min_score]
    out: List[Dict[str, Any]] = []
    for ln in found:
        r = region(ln.page, ln.bbox, ln.text, ln.kind, max(ln.score, 0.5))
        if all((r["text"], r["bbox"]) != (o["text"], o["bbox"]) for o in out):
            out.append(r)
    return out[:MAX_RELIED]


def citation_regions(relied: Sequence[Dict[str, Any]], own: Sequence[Dict[str, Any]],
                     limit: int = MAX_RELIED + 2) -> List[Dict[str, Any]]:
    """The regions of one citation: the ``relied`` lines first, then the item's ``own`` line regions
    (the lines matching the question; word boxes and whole pictures left out) not already there.
    With nothing relied on, the item's own regions as they are.

    Args:
        relied: from :func:`relied_lines`.
        own: the evidence item's regions (``EvidenceItem.regions``).
        limit: at most this many regions when ``relied`` is not empty.
    """
    if not relied:
        return list(own)
    out = list(relied)
    for r in own:
        if r.get("kind") in ("ocr_line", "text_span") and all(
                (r.get("text"), r.get("bbox")) != (o["text"], o["bbox"]) for o in out):
            out.append(dict(r))
    return out[:limit]


def citation_snippet(relied: Sequence[Dict[str, Any]], claim: str, fallback: str = "",
                     max_lines: int = 2) -> str:
    """The relied lines (at most ``max_lines``, joined with " … ") with the claim's terms marked «…»
    (a number such as 1,939.00 marked whole); ``fallback`` when nothing was relied on.

    Args:
        relied: from :func:`relied_lines`.
        claim: the citing sentence(s).
        fallback: the item's own snippet.
        max_lines: how many lines at most.
    """
    if not relied:
        return fallback
    terms = query_terms(_EXTRACTIVE_LEAD.sub("", claim or ""))
    return " … ".join(dict.fromkeys(mark_terms(r["text"], terms) for r in relied[:max_lines]))
