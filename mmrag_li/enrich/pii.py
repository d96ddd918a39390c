"""PII redaction for stored OCR and document text: e-mail addresses, phone numbers, IBANs, card numbers.

Detection is done by maintained libraries wherever one exists; regular expressions only find
*candidates*, a library decides:

* phone numbers: ``phonenumbers`` (Google's libphonenumber) ``PhoneNumberMatcher`` with
  ``Leniency.VALID`` for each region in ``phone_regions`` (international ``+CC`` numbers are found
  whatever the region; national formats need their region);
* IBANs: candidate ``CCdd`` + 11-30 alphanumerics, validated (length per country + mod-97
  checksum) by ``python-stdnum`` (``stdnum.iban``);
* card numbers: 13-19 digits (spaces/dashes allowed), Luhn checksum by ``stdnum.luhn`` plus the
  issuer prefix ranges of the major networks (so random Luhn-valid order numbers mostly pass);
* e-mail: an RFC-5322-lite candidate pattern, validated by ``email-validator`` (syntax only, no
  DNS lookups).

Presidio was considered: its analyzer needs a spaCy model (``en_core_web_sm``) that is not
published on PyPI, so it cannot be installed from the package registry alone.

Matches are replaced by typed placeholders (``[EMAIL]``, ``[PHONE]``, ``[IBAN]``, ``[CARD]``);
redacted OCR words are removed from the ``words`` metadata; ``pii_redacted`` records
``{type: count}``.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

PLACEHOLDERS = {"EMAIL": "[EMAIL]", "PHONE": "[PHONE]", "IBAN": "[IBAN]", "CARD": "[CARD]"}
DEFAULT_PHONE_REGIONS = ("US", "GB", "DE", "FR")

_EMAIL_CAND = re.compile(r"(?<![\w.+\-])[\w.!#$%&'*+/=?^`{|}~\-]+@[\w\-]+(?:\.[\w\-]+)+")
_IBAN_CAND = re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]){11,30}")
_CARD_CAND = re.compile(r"(?<![\d\-])\d(?:[ \-]?\d){12,18}(?![\d])")
# Issuer identification number ranges (Visa, Mastercard, Amex, Discover, JCB, Diners, UnionPay, Maestro).
_CARD_PREFIX = re.compile(r"^(?:4|5[1-5]|2(?:2[2-9]|[3-6]\d|7[01]|720)|3[47]|6011|64[4-9]|65|35(?:2[89]|[3-8]\d)"
                          r"|3(?:0[0-5]|[68])|62|5[06-9]|6\d)")
# Metadata text fields that may carry PII besides the node text (titles from documents).
TEXT_META_KEYS = ("title", "section")


@dataclass
class PIIMatch:
    kind: str
    start: int
    end: int
    text: str


class PIIRedactor:
    """Find and replace PII in text. Thread-safe (no mutable state)."""

    def __init__(self, phone_regions: Sequence[str] = DEFAULT_PHONE_REGIONS,
                 kinds: Iterable[str] = ("EMAIL", "IBAN", "CARD", "PHONE")):
        import email_validator  # noqa: F401 - fail early when a dependency is missing
        import phonenumbers  # noqa: F401
        import stdnum.iban  # noqa: F401

        self.phone_regions = [r.upper() for r in phone_regions]
        self.kinds = [k.upper() for k in kinds]

    # -- detection -------------------------------------------------------------------------------
    def find(self, text: str) -> List[PIIMatch]:
        """Non-overlapping matches, in text order (e-mail > IBAN > card > phone on overlap)."""
        if not text:
            return []
        found: List[PIIMatch] = []
        for kind in self.kinds:
            finder = getattr(self, f"_find_{kind.lower()}")
            for m in finder(text):
                if not any(m.start < o.end and o.start < m.end for o in found):
                    found.append(m)
        return sorted(found, key=lambda m: m.start)

    def _find_email(self, text: str) -> Iterable[PIIMatch]:
        from email_validator import EmailNotValidError, validate_email

        for m in _EMAIL_CAND.finditer(text):
            cand = m.group(0)
            try:
                validate_email(cand, check_deliverability=False)
            except EmailNotValidError:
                continue
            yield PIIMatch("EMAIL", m.start(), m.end(), cand)

    def _find_iban(self, text: str) -> Iterable[PIIMatch]:
        from stdnum import iban

        for m in _IBAN_CAND.finditer(text):
            s = m.group(0)
            # The candidate may run into following words ("... 00 BIC"): try the longest valid prefix.
            for end in range(len(s), 14, -1):
                if not s[end - 1].isalnum():
                    continue
                if iban.is_valid(s[:end]):
                    yield PIIMatch("IBAN", m.start(), m.start() + end, s[:end])
                    break

    def _find_card(self, text: str) -> Iterable[PIIMatch]:
        from stdnum import luhn

        for m in _CARD_CAND.finditer(text):
            digits = re.sub(r"\D", "", m.group(0))
            if 13 <= len(digits) <= 19 and _CARD_PREFIX.match(digits) and luhn.is_valid(digits):
                yield PIIMatch("CARD", m.start(), m.end(), m.group(0))

    def _find_phone(self, text: str) -> Iterable[PIIMatch]:
        import phonenumbers

        seen = set()
        for region in self.phone_regions:
            for m in phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.VALID):
                if (m.start, m.end) not in seen:
                    seen.add((m.start, m.end))
                    yield PIIMatch("PHONE", m.start, m.end, m.raw_string)

    # -- replacement -----------------------------------------------------------------------------
    def redact(self, text: str) -> Tuple[str, Dict[str, int], List[PIIMatch]]:
        """(redacted text, {kind: count}, matches in the original text)."""
        matches = self.find(text)
        if not matches:
            return text, {}, []
        out, pos = [], 0
        for m in matches:
            out.append(text[pos:m.start])
            out.append(PLACEHOLDERS[m.kind])
            pos = m.end
        out.append(text[pos:])
        return "".join(out), dict(Counter(m.kind for m in matches)), matches


def _word_spans(text: str, words: Sequence[Dict[str, Any]]) -> List[Optional[Tuple[int, int]]]:
    """Where each OCR word sits in the node text (words are in reading order)."""
    spans: List[Optional[Tuple[int, int]]] = []
    cursor = 0
    for w in words:
        wt = str(w.get("text", ""))
        at = text.find(wt, cursor) if wt else -1
        if at < 0:
            spans.append(None)
            continue
        spans.append((at, at + len(wt)))
        cursor = at + len(wt)
    return spans


def _merge(a: Dict[str, int], b: Dict[str, int]) -> Dict[str, int]:
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0) + v
    return out


def redact_nodes(nodes: Sequence[Any], redactor: PIIRedactor) -> bool:
    """Redact node text, OCR ``words`` and text metadata in place; True if anything was redacted."""
    any_found = False
    for n in nodes:
        text = getattr(n, "text", None)
        counts: Dict[str, int] = {}
        if isinstance(text, str) and text:
            new_text, counts, matches = redactor.redact(text)
            if matches:
                words = n.metadata.get("words")
                if isinstance(words, list) and words:
                    spans = _word_spans(text, words)
                    hits = [m.text for m in matches]
                    kept = []
                    for w, sp in zip(words, spans):
                        if sp is not None:
                            gone = any(sp[0] < m.end and m.start < sp[1] for m in matches)
                        else:  # not located: drop it if it is part of a redacted string
                            wt = str(w.get("text", ""))
                            gone = bool(wt) and any(wt in h for h in hits)
                        if not gone:
                            kept.append(w)
                    n.metadata["words"] = kept
                    if "n_words" in n.metadata:
                        n.metadata["n_words"] = len(kept)
                n.text = new_text
        for key in TEXT_META_KEYS:
            val = n.metadata.get(key)
            if isinstance(val, str) and val:
                red, c, _ = redactor.redact(val)
                if c:
                    n.metadata[key] = red
                    counts = _merge(counts, c)
        if counts:
            any_found = True
            n.metadata["pii_redacted"] = _merge(n.metadata.get("pii_redacted") or {}, counts)
            for keys in (n.excluded_embed_metadata_keys, n.excluded_llm_metadata_keys):
                if "pii_redacted" not in keys:
                    keys.append("pii_redacted")
    return any_found


__all__ = ["PIIRedactor", "PIIMatch", "redact_nodes", "PLACEHOLDERS", "DEFAULT_PHONE_REGIONS"]
