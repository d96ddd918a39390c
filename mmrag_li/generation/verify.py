"""Post-check of an answer against the evidence it cites: an honest verdict.

`verify_answer(answer, evidence, question=...)` returns a `Verification` with two verdicts and the
list of checks behind them:

``citations_valid``
    the answer cites at least one evidence id, every cited id (``[E1]``, ``[E1, E3]``,
    ``[E1][E2]``) was provided (an evidence-id-looking token such as ``E7`` that was not is
    reported too), and no sentence with factual content (a number, date or quote, or several
    content words) lacks a citation.

``supported``
    citations are valid AND

    * every number, amount, date and quoted string of a sentence occurs in an item that sentence
      cites (numbers by value, dates by calendar day: see `claims`);
    * the cited evidence is about the question (needs ``question``): it names the question's
      entity (the issuer after "from", an id such as "invoice 4711", a quoted or capitalised name)
      and mentions the asked field or the question's terms;
    * a value of the asked kind (the total for "total amount due", an id for "invoice number",
      a date for "when") is the value of that field's row in the cited item (needs
      ``question``): ``Tax $0.00`` is not the total, ``Kundennr. 47774`` is not the invoice
      number (`rows.field_rows`); a name ("which company issued invoice 4711?") must be named
      in a cited item, not only as its recipient (`names`); an identifier the question names
      must occur whole in every cited item (``invoice_number_1`` is not the word "1");
    * no other evidence item about the same entity (or sharing an id with the cited item)
      states a different value for the asked field: two totals for one invoice are a
      ``conflict`` (also without ``question``: the claim sentence gives the field and entity);
    * the answer holds no link or image whose URL is not in the cited evidence, and no
      instruction-like text ("ignore previous instructions", "enter your password"): see
      `answer_guard`;
    * it does not reproduce a long span of the system prompt (output guard).

``checks`` lists every check as ``{"check", "ok", "detail", "evidence_id"?}``; ``reasons`` the
failed ones in words. ``verified`` is an alias of ``supported`` (kept one release). Answer and
evidence are NFKC-normalised with format characters removed before any check.

"I don't know" is supported trivially (no claims) and reported with ``answered=False``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from mmrag_li.generation._text import content_terms
from mmrag_li.generation.answer_guard import instruction_checks, link_findings
from mmrag_li.generation.claims import (
    BARE_ID_RE,
    ItemText,
    blank,
    cited_ids,
    dates_match,
    extract_dates,
    extract_numbers,
    extract_quotes,
    is_dont_know,
    norm_text,
    normalize_unicode,
    number_values,
    reproduces_prompt,
    split_claim_sentences,
    strip_citations,
)
from mmrag_li.generation.evidence import EvidenceItem
from mmrag_li.generation.focus import (
    QuestionFocus,
    analyze_question,
    is_identifier,
    mentions_entity,
    typed_values,
)
from mmrag_li.generation.names import claimed_names, name_stated
from mmrag_li.generation.prompts import ALL_SYSTEM_PROMPTS
from mmrag_li.generation.rows import field_rows, label_strength

__all__ = [
    "Verification",
    "cited_ids",
    "extract_dates",
    "extract_numbers",
    "extract_quotes",
    "is_dont_know",
    "norm_text",
    "normalize_unicode",
    "number_values",
    "reproduces_prompt",
    "split_claim_sentences",
    "strip_citations",
    "verify_answer",
]


@dataclass(init=False)
class Verification:
    """The verdict on one answer (see module docstring).

    Args:
        verified: old name of ``supported`` (positional first argument, kept for callers).
        reasons: failed checks in words.
        citations: provided ids the answer cites, in first-cited order.
        unknown_ids: cited ids that were not provided.
        unsupported: claims not found in (or not stated as the asked field by) the cited items.
        uncited: factual sentences without a citation.
        answered: False for "I don't know".
        prompt_leak: the answer reproduces the system prompt.
        supported: the verdict (overrides ``verified``).
        citations_valid: the citation verdict (default: the same as ``supported``).
        checks: one dict per check.
        irrelevant: cited items that are not about the question.
        conflicts: evidence items that disagree with the answer on the asked value.
        flagged: links and instruction-like text found in the answer.
    """

    supported: bool
    citations_valid: bool
    checks: list[dict[str, Any]]
    reasons: list[str]
    citations: list[str]
    unknown_ids: list[str]
    unsupported: list[str]
    uncited: list[str]
    irrelevant: list[str]
    conflicts: list[str]
    flagged: list[str]
    answered: bool
    prompt_leak: bool

    def __init__(self, verified: bool | None = None, reasons: list[str] | None = None,
                 citations: list[str] | None = None, unknown_ids: list[str] | None = None,
                 unsupported: list[str] | None = None, uncited: list[str] | None = None,
                 answered: bool = True, prompt_leak: bool = False, *, supported: bool | None = None,
                 citations_valid: bool | None = None, checks: list[dict[str, Any]] | None = None,
                 irrelevant: list[str] | None = None, conflicts: list[str] | None = None,
                 flagged: list[str] | None = None):
        self.supported = bool(supported if supported is not None else verified)
        self.citations_valid = self.supported if citations_valid is None else bool(citations_valid)
        self.checks = list(checks or [])
        self.reasons = list(reasons or [])
        self.citations = list(citations or [])
        self.unknown_ids = list(unknown_ids or [])
        self.unsupported = list(unsupported or [])
        self.uncited = list(uncited or [])
        self.irrelevant = list(irrelevant or [])
        self.conflicts = list(conflicts or [])
        self.flagged = list(flagged or [])
        self.answered = answered
        self.prompt_leak = prompt_leak

    @property
    def verified(self) -> bool:
        """Alias of ``supported`` (the old single verdict; kept for one release)."""
        return self.supported

    @verified.setter
    def verified(self, value: bool) -> None:
        self.supported = bool(value)

    def check(self, name: str, ok: bool, detail: str, evidence_id: str | None = None) -> None:
        """Record one check.

        Args:
            name: check name ("citation", "cited_sentence", "number", "date", "quote", "relevance",
                "field_row", "conflict", "link", "instruction", "prompt_leak", "answer").
            ok: passed or not.
            detail: what was checked, in words.
            evidence_id: the evidence item it concerns, if one.
        """
        entry: dict[str, Any] = {"check": name, "ok": bool(ok), "detail": detail}
        if evidence_id:
            entry["evidence_id"] = evidence_id
        self.checks.append(entry)

    def to_dict(self) -> dict[str, Any]:
        """{"citations_valid", "supported", "verified", "checks", "reasons", "citations", ...}."""
        out = asdict(self)
        out["verified"] = self.supported
        return out


# ---------------------------------------------------------------------------------------------

_LIST_MARKER_RE = re.compile(r"^\s*(?:[-*•]|\d{1,2}[.)])\s+")
_META_TERMS = {"base", "evidence", "provid", "provide", "answer", "follow", "information", "available", "context",
               "item", "cite", "source", "extractive", "generative", "model", "configur", "configure", "accord",
               "here", "summary", "question", "ask", "follows", "docu", "document", "file", "page", "say", "show",
               "tell", "describe", "mention"}
_STRONG_ID_RE = re.compile(r"^(?=.*\d)(?:\d{4,}|[\w\-/]{5,})$")


def _same(kind: str | None, a: str, b: str) -> bool:
    """Do two values of this kind agree (amounts by value, ids without punctuation, dates by day)?"""
    if kind == "identifier":
        return re.sub(r"[^0-9a-z]", "", a.casefold()) == re.sub(r"[^0-9a-z]", "", b.casefold())
    if kind == "date":
        ka = set().union(*[k for _, k, _ in extract_dates(a)] or [set()])
        kb = set().union(*[k for _, k, _ in extract_dates(b)] or [set()])
        return bool(ka and kb and dates_match(ka, kb))
    return bool(number_values(a) & number_values(b)) if kind != "name" else norm_text(a) == norm_text(b)


def claimed_values(body: str, focus: QuestionFocus) -> list[str]:
    """Values of the asked kind that a sentence claims: those of its own label -> value row when
    it names the field ("The total of invoice 4711 is 42" -> 42), else its typed values.

    Args:
        body: the sentence without citations.
        focus: the question's (or the sentence's own) focus.
    """
    if focus.field is None or focus.kind == "name":
        return []
    rows = field_rows(body, focus, loose=True)
    if rows:
        return list(dict.fromkeys(v for r in rows for v in r.values))
    exclude = [t.lower() for t in focus.entity_tokens]
    return list(dict.fromkeys(typed_values(body, focus.kind, exclude)))


def _texts(item: EvidenceItem) -> list[str]:
    return [normalize_unicode(t) for t in (item.caption, item.ocr_text, *item.texts, f"source {item.source_name}") if t]


def _row_values(item: EvidenceItem, focus: QuestionFocus) -> list[str]:
    """Values of the item's strongest rows of the field (``Grand Total`` over ``Balance``)."""
    rows = [r for t in _texts(item) for r in field_rows(t, focus, loose=True)]
    top = max((r.strength for r in rows), default=0.0)
    return [v for r in rows if r.strength >= top for v in r.values]


def _strong_ids(item: ItemText) -> set[str]:
    return {t.casefold() for t in typed_values(item.raw, "identifier") if _STRONG_ID_RE.match(t)
            and not re.fullmatch(r"(?:19|20)\d\d", t)}


def about_question(item: ItemText, focus: QuestionFocus) -> str | None:
    """None when the item is about the question, else why not (in words).

    It must name every entity of the question (an identifier whole), and mention the asked field
    (one of its labels) or one of the question's terms; for a name question the identifier of
    the document it names is enough.

    Args:
        item: the indexed evidence item.
        focus: the analysed question.
    """
    for ent in focus.entities:
        if not mentions_entity(item.raw, ent):
            return f"does not mention {ent!r}"
    if focus.field is not None and any(label_strength(ln, focus.field)[0] for ln in item.raw.splitlines()):
        return None
    if focus.kind == "name" and any(is_identifier(e) for e in focus.entities):
        return None  # the named invoice itself: its issuer is often an unlabelled letterhead
    terms = set(focus.terms) - _META_TERMS
    if terms and not terms & set(content_terms(item.raw)):
        return "mentions none of the question's terms (" + ", ".join(sorted(terms)[:5]) + ")"
    return None


def _conflicts(value: str, cited: Sequence[str], focus: QuestionFocus, provided: dict[str, EvidenceItem],
               idx: Any) -> list[str]:
    """Ids of evidence items (other assets than the cited ones) about the same entity that state
    the asked field with values none of which is ``value``."""
    cited_assets = {provided[i].asset_id for i in cited}
    shared: set[str] = set()
    if not focus.entities:
        for i in cited:
            shared |= _strong_ids(idx(i))
        shared -= {v.casefold() for v in [value]}
    out: list[str] = []
    for eid, item in provided.items():
        if eid in cited or item.asset_id in cited_assets:
            continue
        it = idx(eid)
        if focus.entities:
            if not all(mentions_entity(it.raw, e) for e in focus.entities):
                continue
        elif not shared & _strong_ids(it):
            continue
        vals = _row_values(item, focus)
        if vals and not any(_same(focus.kind, value, v) for v in vals):
            out.append(eid)
    return out


def verify_answer(
    answer: str,
    evidence: Sequence[EvidenceItem],
    *,
    require_citation: bool = True,
    min_content_terms: int = 4,
    system_prompts: Iterable[str] = ALL_SYSTEM_PROMPTS,
    question: str | None = None,
) -> Verification:
    """Check an answer against the evidence it cites (see module docstring).

    Args:
        answer: the answer text with [E#] citations.
        evidence: the evidence items the answer could cite.
        require_citation: an answer must cite at least one item.
        min_content_terms: content words that make a sentence without numbers/dates/quotes factual.
        system_prompts: texts the answer must not reproduce (output guard).
        question: the question; enables the "about the question" and field-row checks.
    """
    text = normalize_unicode(answer or "").strip()
    provided = {e.id: e for e in evidence}
    v = Verification(supported=False, citations_valid=False)
    if not text:
        v.reasons.append("empty answer")
        v.check("answer", False, "empty answer")
        v.answered = False
        return v
    if reproduces_prompt(text, system_prompts):
        v.prompt_leak = True
        v.reasons.append("answer reproduces the system prompt")
        v.check("prompt_leak", False, "answer reproduces the system prompt")
    cited_items = [ItemText(provided[i]) for i in dict.fromkeys(cited_ids(text)) if i in provided]
    for c in instruction_checks(text, cited_items):
        v.check("instruction", bool(c["ok"]), str(c["detail"]))
        if not c["ok"]:
            v.flagged.append(str(c["detail"]))
            v.reasons.append(f"{c['detail']} in the answer")
    for finding in link_findings(text, evidence):
        v.check("link", bool(finding["ok"]), str(finding["detail"]))
        if not finding["ok"]:
            v.flagged.append(str(finding["url"]))
            v.reasons.append(str(finding["detail"]))
    if is_dont_know(text):
        v.answered = False
        v.citations_valid = True
        v.supported = not v.reasons
        return v

    index: dict[str, ItemText] = {}

    def idx(eid: str) -> ItemText:
        if eid not in index:
            index[eid] = ItemText(provided[eid])
        return index[eid]

    qfocus = analyze_question(question) if question else None
    relevance: dict[str, str | None] = {}
    stated: list[str] = []
    for sent in split_claim_sentences(text):
        stated += _check_sentence(v, sent, provided, idx, qfocus, relevance, min_content_terms)
    if qfocus is not None and qfocus.field is not None:
        ok = bool(stated)
        v.check("answers_question", ok, f"states the {qfocus.field.name}: " + ", ".join(stated[:3]) if ok
                else f"the answer states no {qfocus.field.name} ({qfocus.kind})")
        if not ok:
            v.unsupported.append(f"the answer states no {qfocus.field.name} ({qfocus.kind}) as the question asks")

    if v.unknown_ids:
        v.reasons.append("cites evidence ids that were not provided: " + ", ".join(v.unknown_ids))
    if require_citation and not v.citations:
        v.reasons.append("the answer cites no evidence")
        v.check("citation", False, "the answer cites no evidence")
    if v.uncited:
        v.reasons.append(f"{len(v.uncited)} sentence(s) with factual content have no citation: "
                         + " | ".join(_short(s) for s in v.uncited[:3]))
    v.citations_valid = not v.unknown_ids and not v.uncited and (bool(v.citations) or not require_citation)
    v.reasons.extend(v.unsupported)
    v.reasons.extend(v.irrelevant)
    v.reasons.extend(v.conflicts)
    v.supported = v.citations_valid and not v.reasons
    return v


def _check_sentence(v: Verification, sent: str, provided: dict[str, EvidenceItem], idx: Any,
                    qfocus: QuestionFocus | None, relevance: dict[str, str | None], min_terms: int) -> list[str]:
    """All checks of one answer sentence (claims, relevance, field row, conflicts); returns the
    values of the asked kind it states."""
    ids = cited_ids(sent)
    for i in ids:
        if i in provided:
            if i not in v.citations:
                v.citations.append(i)
        elif i not in v.unknown_ids:
            v.unknown_ids.append(i)
            v.check("citation", False, f"{i} was not provided", i)
    valid = [i for i in dict.fromkeys(ids) if i in provided]
    body = _LIST_MARKER_RE.sub(" ", strip_citations(sent))
    for m in BARE_ID_RE.finditer(body):  # bare evidence-id-looking tokens that were not provided
        eid = f"E{int(m.group(1))}"
        if eid not in provided and eid not in v.unknown_ids and not any(eid.lower() in idx(c).text for c in valid):
            v.unknown_ids.append(eid)
            v.check("citation", False, f"{eid} is named but was not provided", eid)
    quotes = extract_quotes(body)
    rest = blank(body, [sp for _, sp in quotes])
    dates = extract_dates(rest)
    rest = blank(rest, [sp for _, _, sp in dates])
    numbers = extract_numbers(rest)
    terms = [t for t in content_terms(rest) if t not in _META_TERMS and not t[0].isdigit()]
    if not valid:
        if quotes or dates or numbers or len(terms) >= min_terms:
            v.uncited.append(sent)
            v.check("cited_sentence", False, f"no citation: {_short(sent)}")
        return []
    v.check("cited_sentence", True, f"cites {', '.join(valid)}: {_short(sent, 60)}")
    pool = [idx(i) for i in valid]
    cite_txt = "".join(f"[{i}]" for i in valid)

    def where(found: list[bool]) -> str | None:
        return next((i for i, f in zip(valid, found) if f), None)

    for q, _ in quotes:
        hits = [p.has_quote(q) for p in pool]
        v.check("quote", any(hits), f'quote "{_short(q, 60)}" ' + ("found" if any(hits) else f"not found in {cite_txt}"),
                where(hits))
        if not any(hits):
            v.unsupported.append(f'quote "{q}" not found in {cite_txt}')
    for span, keys, _ in dates:
        hits = [dates_match(keys, p.dates) for p in pool]
        v.check("date", any(hits), f"date '{span}' " + ("found" if any(hits) else f"not found in {cite_txt}"), where(hits))
        if not any(hits):
            v.unsupported.append(f"date '{span}' not found in {cite_txt}")
    for tok, vals in numbers:
        if not vals:
            continue
        hits = [p.has_number(tok, vals) for p in pool]
        if any(hits):
            v.check("number", True, f"number '{tok}' found", where(hits))
            continue
        elsewhere = [e for e in provided if e not in valid and idx(e).has_number(tok, vals)]
        hint = f" (it occurs in {', '.join(elsewhere)})" if elsewhere else ""
        v.check("number", False, f"number '{tok}' not found in {cite_txt}{hint}")
        v.unsupported.append(f"number '{tok}' not found in {cite_txt}{hint}")
    if qfocus is not None:
        for i in valid:
            if i not in relevance:
                relevance[i] = about_question(idx(i), qfocus)
                ok = relevance[i] is None
                v.check("relevance", ok, f"{i} is about the question" if ok else f"{i} {relevance[i]}", i)
                if not ok:
                    v.irrelevant.append(f"{i} is not about the question: it {relevance[i]}")
    if qfocus is not None and qfocus.kind == "name":
        return _check_names(v, body, valid, idx, qfocus, cite_txt)
    focus = qfocus if qfocus is not None and qfocus.field is not None else analyze_question(body)
    if focus.field is None:
        return []
    values = claimed_values(body, focus)
    for value in values:
        if qfocus is not None:  # the value must be the asked field's value in a cited item
            rows = [i for i in valid if any(_same(focus.kind, value, rv) for rv in _row_values(provided[i], focus))]
            v.check("field_row", bool(rows), f"'{value}' is stated as {focus.field.name} in {rows[0]}" if rows
                    else f"'{value}' is not stated as {focus.field.name} in {cite_txt}", rows[0] if rows else None)
            if not rows:
                v.unsupported.append(f"'{value}' is not stated as the {focus.field.name} in {cite_txt}")
        others = _conflicts(value, valid, focus, provided, idx)
        for o in others:
            v.check("conflict", False, f"{o} states a different {focus.field.name} than '{value}' {cite_txt}", o)
            v.conflicts.append(f"conflict: {o} states a different {focus.field.name} than '{value}' in {cite_txt}")
        if not others:
            v.check("conflict", True, f"no other evidence states a different {focus.field.name} than '{value}'")
    return values


def _check_names(v: Verification, body: str, valid: list[str], idx: Any, qfocus: QuestionFocus,
                 cite_txt: str) -> list[str]:
    """A name answer is checked like a field value: each name it gives must be stated, not as the
    recipient, in an item it cites (and `about_question` already holds those items to the
    document the question names); returns the names.

    Args:
        v: the verdict being built.
        body: the sentence without citations.
        valid: the provided ids it cites.
        idx: evidence id -> `ItemText`.
        qfocus: the analysed question (kind "name").
        cite_txt: the citations as written, for messages.
    """
    names = claimed_names(body, qfocus)
    for name in names:
        why = [name_stated(name, idx(i).raw) for i in valid]
        at = next((i for i, w in zip(valid, why) if w is None), None)
        v.check("name", at is not None, f"'{name}' is named in {at}" if at else
                f"{cite_txt}: " + "; ".join(dict.fromkeys(w for w in why if w)), at)
        if at is None:
            v.unsupported.append(f"the {qfocus.field.name if qfocus.field else 'name'} '{name}' is not stated in "
                                 f"{cite_txt}: " + "; ".join(dict.fromkeys(w for w in why if w)))
    return names


def _short(s: str, n: int = 80) -> str:
    s = re.sub(r"\s+", " ", s).strip()
    return s if len(s) <= n else s[: n - 1] + "…"
