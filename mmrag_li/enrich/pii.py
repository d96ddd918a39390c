"""PII redaction for stored OCR and document text: e-mail addresses, phone numbers, IBANs, card numbers.

Detection is done by maintained libraries wherever one exists; regular expressions only find
*candidates*, a library decides:

* phone numbers: ``phonenumbers`` (Google's libphonenumber) ``PhoneNumberMatcher`` with
  ``Leniency.VALID`` for each region in ``phone_regions`` (international ``+CC`` numbers are found
  whatever the region; national formats need their region);
* IBANs: candidate ``CCdd`` + 11-30 alphanumerics, any case, grouped by spaces, dashes or dots,
  validated (length per country + mod-97 checksum) by ``python-stdnum`` (``stdnum.iban``);
* card numbers: 13-19 digits (grouped by spaces, dashes, dots or slashes), Luhn checksum by
  ``stdnum.luhn`` plus the
  issuer prefix ranges of the major networks (so random Luhn-valid order numbers mostly pass);
* e-mail: an RFC-5322-lite candidate pattern, validated by ``email-validator`` (syntax only, no
  DNS lookups).

Presidio was considered: its analyzer needs a spaCy model (``en_core_web_sm``) that is not
published on PyPI, so it cannot be installed from the package registry alone.

Matches are replaced by typed placeholders (``[EMAIL]``, ``[PHONE]``, ``[IBAN]``, ``[CARD]``);
redacted OCR words are removed from the ``words`` metadata; ``pii_redacted`` records
``{type: count}``.

Where to redact: `redact_text` on a whole file's / page's text *before* it is cut into chunks
(the readers do this with ``ingest.redact_pii``: an IBAN or address cut in two by a chunk
boundary would escape a per-chunk pass); `redact_ocr_result` likewise for OCR lines before they
are chunked; `redact_nodes` on finished nodes (the ingest transform, a second net); and
`redact_source` for what is shown as a file's ``source`` / ``file_name``.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

PLACEHOLDERS = {"EMAIL": "[EMAIL]", "PHONE": "[PHONE]", "IBAN": "[IBAN]", "CARD": "[CARD]"}
DEFAULT_PHONE_REGIONS = ("US", "GB", "DE", "FR")

_EMAIL_CAND = re.compile(r"(?<![\w.+\-])[\w.!#$%&'*+/=?^`{|}~\-]+@[\w\-]+(?:\.[\w\-]+)+")
_SEP = "[ \u00a0\u202f]?[\\-./]?[ \u00a0\u202f]?"  # one group separator: space, dash, dot (optionally spaced)
# IBAN groups may also be split by one line break (a wrapped line, an OCR line end): the
# country code + mod-97 checksum keep that from matching ordinary text.
_IBAN_CAND = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}(?:(?:[ \u00a0\u202f\-.]|[ \t]*\r?\n[ \t]*)?[A-Za-z0-9]){11,30}")
_CARD_CAND = re.compile(r"(?<![\d\-.])\d(?:" + _SEP + r"\d){12,18}(?![\d])")
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
                if iban.is_valid(re.sub(r"\s", " ", s[:end])):
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


@functools.lru_cache(maxsize=8)
def get_redactor(phone_regions: Optional[Tuple[str, ...]] = None) -> PIIRedactor:
    """A shared `PIIRedactor` for ``phone_regions`` (None = `DEFAULT_PHONE_REGIONS`); it is stateless."""
    return PIIRedactor(phone_regions=phone_regions or DEFAULT_PHONE_REGIONS)


def _redactor(phone_regions: Optional[Sequence[str]], redactor: Optional[PIIRedactor]) -> PIIRedactor:
    return redactor or get_redactor(tuple(phone_regions) if phone_regions else None)


def redact_text(text: str, phone_regions: Optional[Sequence[str]] = None,
                redactor: Optional[PIIRedactor] = None) -> Tuple[str, Dict[str, int]]:
    """(redacted text, {kind: count}) for a whole text, meant to run BEFORE it is split into chunks.

    Args:
        text: a file's or page's full text.
        phone_regions: regions whose national phone formats count (default `DEFAULT_PHONE_REGIONS`).
        redactor: a `PIIRedactor` to use instead of the shared one.
    """
    if not text:
        return text, {}
    red, counts, _ = _redactor(phone_regions, redactor).redact(text)
    return red, counts


_NAME_SEPARATORS = re.compile(r"[_+~]")
_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,6}$")


def redact_source(name: str, phone_regions: Optional[Sequence[str]] = None,
                  redactor: Optional[PIIRedactor] = None) -> str:
    """A path or file name with PII in any of its parts replaced by placeholders.

    Each path component is checked on its own, without its extension, once as it is (an e-mail
    with ``_`` in it) and once with ``_``/``+``/``~`` read as spaces (``invoice_+49 30 1234567``).

    Args:
        name: a path (``/in/jane.doe@example.com_cv.pdf``) or a bare file name.
        phone_regions: as for `redact_text`.
        redactor: a `PIIRedactor` to use instead of the shared one.
    """
    if not name:
        return name
    r = _redactor(phone_regions, redactor)
    parts = re.split(r"([/\\])", name)
    out = []
    for part in parts:
        if not part or part in ("/", "\\"):
            out.append(part)
            continue
        m = _SUFFIX.search(part)
        stem, ext = (part[:m.start()], part[m.start():]) if m and m.start() > 0 else (part, "")
        found = r.find(stem)
        if ext and not found and r.find(part):  # the "extension" was part of it: a folder "jane@example.com"
            stem, ext, found = part, "", r.find(part)
        probe = _NAME_SEPARATORS.sub(" ", stem)
        for extra in (r.find(probe) if probe != stem else []):
            if not any(extra.start < o.end and o.start < extra.end for o in found):
                found.append(extra)
        pos, pieces = 0, []
        for hit in sorted(found, key=lambda h: h.start):
            pieces.append(stem[pos:hit.start])
            pieces.append(PLACEHOLDERS[hit.kind])
            pos = hit.end
        pieces.append(stem[pos:])
        out.append("".join(pieces) + ext)
    return "".join(out)


def redact_ocr_result(result: Any, phone_regions: Optional[Sequence[str]] = None,
                      redactor: Optional[PIIRedactor] = None) -> Dict[str, int]:
    """Redact an `OCRResult` in place, across its lines, before it is chunked; {kind: count}.

    PII spanning a line break is found because the page's whole text is searched; each line's
    text gets the placeholders and OCR words inside a match are dropped (their boxes would show
    where the PII was and their text would restore it).
    """
    lines = list(getattr(result, "lines", []) or [])
    full = "\n".join(lines)
    matches = _redactor(phone_regions, redactor).find(full)
    if not matches:
        return {}
    starts, pos = [], 0
    for line in lines:
        starts.append(pos)
        pos += len(line) + 1
    gone_spans: Dict[int, List[Tuple[int, int]]] = {}
    new_lines = []
    for i, line in enumerate(lines):
        a, b = starts[i], starts[i] + len(line)
        pieces, cur = [], a
        for m in matches:
            if m.end <= a or m.start >= b:
                continue
            s0, e0 = max(m.start, a), min(m.end, b)
            pieces.append(full[cur:s0])
            if s0 == m.start:  # the placeholder goes where the match starts; later lines lose their part
                pieces.append(PLACEHOLDERS[m.kind])
            cur = e0
            gone_spans.setdefault(i, []).append((s0 - a, e0 - a))
        pieces.append(full[cur:b])
        new_lines.append("".join(pieces))
    kept = []
    by_line: Dict[int, int] = {}
    for w in getattr(result, "words", []) or []:
        spans = gone_spans.get(w.line)
        if not spans:
            kept.append(w)
            continue
        line = lines[w.line] if 0 <= w.line < len(lines) else ""
        at = line.find(w.text, by_line.get(w.line, 0)) if w.text else -1
        if at < 0:
            if not any(w.text and w.text in m.text for m in matches):
                kept.append(w)
            continue
        by_line[w.line] = at + len(w.text)
        if not any(at < e and s < at + len(w.text) for s, e in spans):
            kept.append(w)
    result.lines = new_lines
    result.words = kept
    return dict(Counter(m.kind for m in matches))


def placeholder_counts(text: str) -> Dict[str, int]:
    """{kind: count} of redaction placeholders in ``text`` (which chunk lost what)."""
    out = {k: text.count(v) for k, v in PLACEHOLDERS.items()}
    return {k: v for k, v in out.items() if v}


__all__ = ["PIIRedactor", "PIIMatch", "redact_nodes", "redact_text", "redact_source", "redact_ocr_result",
           "placeholder_counts", "get_redactor", "PLACEHOLDERS", "DEFAULT_PHONE_REGIONS"]
