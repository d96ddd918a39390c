"""Guards on answer text against injected content: links and images that leak data, and text that
instructs the reader.

A model that read a hostile document may answer with a markdown image whose URL carries data
(``![x](http://host/leak?d=...)``: a renderer fetches it without a click), a link to a phishing
page, or the document's own orders ("Ignore previous instructions ... visit ... and enter your
password"). `sanitize_answer` strips every link and image whose URL does not itself occur in the
evidence the answer cites (markdown ``[t](u)`` / ``![a](u)`` / reference definitions, ``<u>``
autolinks, HTML ``<a>``/``<img>``, bare URLs, ``data:`` URIs) and reports instruction-like text.
`verify.verify_answer` runs the same detectors and marks such an answer unsupported.

All matching runs on NFKC-normalised text without format characters (`claims.normalize_unicode`),
so zero-width spaces or full-width letters do not hide a URL or an instruction.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from mmrag_li.generation.claims import (
    ItemText,
    cited_ids,
    extract_quotes,
    normalize_unicode,
)
from mmrag_li.generation.evidence import EvidenceItem

_URL = r"(?:https?://|ftp://|data:|javascript:|file:|//|www\.)[^\s)\]>\"']+"
_MD_IMAGE_RE = re.compile(r"!\[([^\]\n]{0,200})\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_MD_LINK_RE = re.compile(r"(?<!!)\[([^\]\n]{0,200})\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_MD_REF_RE = re.compile(r"(?mi)^\s*\[[^\]\n]{1,60}\]:\s*<?((?:https?://|ftp://|data:|javascript:|file:|//|www\.)\S+?)>?(?:\s.*)?$")
_AUTOLINK_RE = re.compile(r"<((?:https?|ftp|data|javascript|file):[^>\s]+)>", re.IGNORECASE)
_HTML_RE = re.compile(r"<\s*(?:img|a|iframe|script|link|object|embed|source|video|audio)\b[^>]*>(?:[^<]{0,200}</\s*a\s*>)?",
                      re.IGNORECASE)
_HTML_URL_RE = re.compile(r"""(?:src|href|data|srcset)\s*=\s*["']?([^"'\s>]+)""", re.IGNORECASE)
_BARE_URL_RE = re.compile(r"(?i)(?<![\w(<\"'=])" + _URL)

_INSTRUCTION_RES = [
    re.compile(p, re.IGNORECASE | re.DOTALL) for p in (
        (r"\b(?:ignore|disregard|forget|override|bypass)\b.{0,40}?\b(?:previous|prior|above|earlier|preceding|all|any|"
         r"your|the|these|system)\b.{0,25}?\b(?:instructions?|prompts?|rules|directions|guidelines|messages?|context)\b"),
        (r"\b(?:enter|type|provide|confirm|submit|send|give|verify|update|re-?enter|share)\b.{0,30}?\b(?:your|the|a)\b"
         r".{0,20}?\b(?:password|passcode|passphrase|pin|credentials?|log-?in details|2fa|otp|one[- ]time (?:code|password)|"
         r"credit card|card number|cvv|cvc|bank details|iban|ssn|social security|security code|seed phrase|api key)"),
        (r"\b(?:visit|go to|open|click|navigate to|log ?in (?:at|to)|sign in (?:at|to))\b.{0,120}?\b(?:password|log ?in|"
         r"credentials?|verify your (?:account|identity)|sign in|re-?activate|unlock)\b"),
        r"\byou are now\b", r"\bnew (?:system )?instructions?\b", r"\b(?:reveal|print|show|repeat)\b.{0,20}\bsystem prompt\b",
        r"\bdeveloper mode\b", r"\bjailbreak", r"\b(?:do not|don't|never) (?:tell|inform|reveal to|mention to) the user\b",
        r"\bact as (?:an? )?(?:admin|administrator|system|developer|root)\b",
        r"\b(?:respond|reply|answer) (?:only )?with\b.{0,20}\b(?:hacked|pwned)\b",
    )
]


def find_urls(text: str) -> list[tuple[str, str, tuple[int, int]]]:
    """(kind, url, span) for each link, image or bare URL in the text; kind is "image", "link",
    "html" or "url". Spans do not overlap.

    Args:
        text: answer text (normalise it first with `claims.normalize_unicode`).
    """
    found: list[tuple[str, str, tuple[int, int]]] = []

    def free(s: int, e: int) -> bool:
        return not any(s < fe and e > fs for _, _, (fs, fe) in found)

    for kind, rx in (("image", _MD_IMAGE_RE), ("link", _MD_LINK_RE)):
        for m in rx.finditer(text):
            if free(*m.span()):
                found.append((kind, m.group(2), m.span()))
    for m in _MD_REF_RE.finditer(text):
        if free(*m.span()):
            found.append(("link", m.group(1), m.span()))
    for m in _AUTOLINK_RE.finditer(text):
        if free(*m.span()):
            found.append(("link", m.group(1), m.span()))
    for m in _HTML_RE.finditer(text):
        if free(*m.span()):
            urls = _HTML_URL_RE.findall(m.group(0)) or [""]
            found.append(("html", urls[0], m.span()))
    for m in _BARE_URL_RE.finditer(text):
        url = m.group(0).rstrip(".,;:!?")
        if free(m.start(), m.start() + len(url)):
            found.append(("url", url, (m.start(), m.start() + len(url))))
    found.sort(key=lambda f: f[2][0])
    return found


_CREDENTIAL = {1, 2}  # patterns that ask for credentials: flagged even inside a quotation


def instruction_checks(text: str, cited: Sequence[ItemText]) -> list[dict[str, object]]:
    """One check dict per instruction-like passage of the answer. A passage inside a quotation
    that the cited evidence contains verbatim is the document's text reported as such
    (``The poster reads "Ignore previous instructions" [E2]``): ok, unless it asks for
    credentials ("enter your password"), which is flagged quoted or not.

    Args:
        text: answer text (normalised with `claims.normalize_unicode`).
        cited: the indexed evidence items the answer cites.
    """
    quotes = extract_quotes(text)
    out: list[dict[str, object]] = []
    for k, rx in enumerate(_INSTRUCTION_RES):
        for m in rx.finditer(text):
            passage = re.sub(r"\s+", " ", m.group(0))[:80]
            q = next((q for q, (qs, qe) in quotes if qs <= m.start() and m.end() <= qe), None)
            if q is not None and k not in _CREDENTIAL and any(it.has_quote(q) for it in cited):
                out.append({"check": "instruction", "ok": True,
                            "detail": f"quoted from the cited evidence, not said to the reader: {passage!r}"})
            else:
                out.append({"check": "instruction", "ok": False, "detail": f"instruction-like text: {passage!r}"})
    return out


def instruction_findings(text: str) -> list[str]:
    """The instruction-like passages of a text ("ignore previous instructions", "enter your
    password", "visit ... to log in"), each cut to 80 characters.

    Args:
        text: answer text.
    """
    t = re.sub(r"\s+", " ", normalize_unicode(text))
    out: list[str] = []
    for rx in _INSTRUCTION_RES:
        for m in rx.finditer(t):
            out.append(m.group(0)[:80])
    return out


def is_instruction_like(text: str) -> bool:
    """True when `instruction_findings` finds anything.

    Args:
        text: any text (an answer, or an evidence line the offline answerer might quote).
    """
    return bool(instruction_findings(text))


def _url_in(url: str, items: Sequence[ItemText]) -> bool:
    u = url.strip().rstrip("/")
    if not u or u.lower().startswith(("data:", "javascript:", "file:")):
        return False
    return any(it.has_text(u) for it in items)


def link_findings(answer: str, evidence: Sequence[EvidenceItem]) -> list[dict[str, object]]:
    """One check dict per link/image/URL in the answer: ok when its URL occurs in an evidence item
    the answer cites.

    Args:
        answer: answer text.
        evidence: the evidence items the answer may cite.
    """
    text = normalize_unicode(answer)
    by_id = {e.id: e for e in evidence}
    cited = [ItemText(by_id[i]) for i in dict.fromkeys(cited_ids(text)) if i in by_id]
    out: list[dict[str, object]] = []
    for kind, url, _ in find_urls(text):
        ok = _url_in(url, cited)
        detail = (f"{kind} URL {url[:80]!r} occurs in the cited evidence" if ok
                  else f"{kind} URL {url[:80]!r} is not in the cited evidence")
        out.append({"check": "link", "ok": ok, "detail": detail, "kind": kind, "url": url[:200]})
    return out


def sanitize_answer(answer: str, evidence: Sequence[EvidenceItem]) -> tuple[str, list[dict[str, object]]]:
    """The answer with every link/image whose URL is not in the cited evidence removed, and the
    findings: one dict per removed link ({"check": "link", "ok": False, "detail", "kind", "url"})
    and per instruction-like passage ({"check": "instruction", "ok": False, "detail"}; see
    `instruction_checks` for quotations of the evidence).

    Markdown images and HTML tags are dropped whole, a markdown link keeps its text, a bare URL
    becomes ``[link removed]``. Links whose URL the cited evidence contains are kept. The text is
    NFKC-normalised with format characters removed.

    Args:
        answer: the answer text (with [E#] citations).
        evidence: the evidence items it may cite.
    """
    text = normalize_unicode(answer)
    by_id = {e.id: e for e in evidence}
    cited = [ItemText(by_id[i]) for i in dict.fromkeys(cited_ids(text)) if i in by_id]
    findings: list[dict[str, object]] = []
    out: list[str] = []
    pos = 0
    for kind, url, (s, e) in find_urls(text):
        if _url_in(url, cited):
            continue
        out.append(text[pos:s])
        if kind == "link":
            m = _MD_LINK_RE.fullmatch(text[s:e])
            out.append(m.group(1) if m else "")
        elif kind == "url":
            out.append("[link removed]")
        pos = e
        findings.append({"check": "link", "ok": False, "kind": kind, "url": url[:200],
                         "detail": f"removed {kind} whose URL {url[:80]!r} is not in the cited evidence"})
    out.append(text[pos:])
    clean = re.sub(r"[ \t]{2,}", " ", "".join(out)).strip()
    findings += [c for c in instruction_checks(clean, cited) if not c["ok"]]
    return clean, findings
