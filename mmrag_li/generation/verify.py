"""Post-check of an answer against the evidence it cites.

`verify_answer(answer, evidence)` accepts an answer only when:

* it cites at least one evidence id, and every cited id (``[E1]``, ``[E1, E3]``, ``[E1][E2]``) was
  provided; an evidence-id-looking token (``E7``) that was not provided is reported too;
* every number, amount, date and quoted string in a sentence occurs in the text (caption + OCR +
  text, plus source name and page) of at least one item cited by that sentence; numbers are
  compared by value (``1,939.00`` == ``1939`` == ``1939.0`` == ``Rs 1939`` == ``₹1,939`` ==
  ``1.939,00``), dates by calendar day (``2024-03-05`` == ``05/03/2024`` == ``5 March 2024`` ==
  ``March 5, 2024``; day/month order is ambiguous in numeric dates, so both readings count);
* no sentence with factual content (a number, date or quote, or several content words) lacks a
  citation;
* it does not reproduce a long span of the system prompt (output guard).

"I don't know" is verified trivially (no claims) and reported with ``answered=False``.

Dates are parsed with regular expressions rather than ``dateutil.parser`` (installed here):
dateutil fills missing fields from today's date and its fuzzy mode reads numbers that are not
dates as dates, which would make the check accept claims it should reject.
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import asdict, dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

from mmrag_li.generation._text import content_terms
from mmrag_li.generation.evidence import EvidenceItem, neutralize
from mmrag_li.generation.prompts import ALL_SYSTEM_PROMPTS


@dataclass
class Verification:
    verified: bool
    reasons: List[str] = field(default_factory=list)
    citations: List[str] = field(default_factory=list)  # provided ids cited, in first-cited order
    unknown_ids: List[str] = field(default_factory=list)  # cited ids that were not provided
    unsupported: List[str] = field(default_factory=list)  # claims not found in the cited items
    uncited: List[str] = field(default_factory=list)  # factual sentences without a citation
    answered: bool = True  # False for "I don't know"
    prompt_leak: bool = False

    def to_dict(self) -> Dict[str, object]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# Normalisation helpers.

_QUOTE_CHARS = "\"'“”‘’„‚«»‹›`´"
_QUOTE_TABLE = str.maketrans({c: "'" for c in _QUOTE_CHARS} | {"–": "-", "—": "-", "−": "-", "\u00a0": " ",
                                                               "\u202f": " ", "⟦": "[", "⟧": "]"})


def norm_text(text: str) -> str:
    """Case-folded, quote/dash-unified, whitespace-collapsed text for substring checks."""
    t = (text or "").translate(_QUOTE_TABLE).casefold()
    return re.sub(r"\s+", " ", t).strip()


_CURRENCY_WORD_RE = re.compile(r"(?i)\b(rs\.?|inr|usd|eur|gbp|chf|jpy|cny|aud|cad|us\$|a\$|c\$)(?=\d)")

# A number: 1,939.00 / 1.939,00 / 1'939 / 1939 / 0.5 / ,5 is not a number. Not part of an
# identifier such as E1, A4 or MP3 (no letter or digit directly before it).
_NUM_RE = re.compile(
    r"(?<![A-Za-z0-9])(?:\d{1,3}(?:(?:,\d{3})+|(?:\.\d{3})+|(?:'\d{3})+|(?:[\u00a0\u202f]\d{3})+)(?:[.,]\d+)?"
    r"|\d+(?:[.,]\d+)?)(?!\d)"
)


def number_values(token: str) -> Set[str]:
    """All plausible values of a number token, as canonical decimal strings.

    Unambiguous forms give one value; ``1,939`` (English thousands or European decimal) and
    ``1.939`` give both readings.
    """
    t = token.strip().replace("'", "").replace("\u00a0", "").replace("\u202f", "")
    vals: List[str] = []
    if "," in t and "." in t:
        if t.rfind(",") > t.rfind("."):  # 1.939,00
            vals.append(t.replace(".", "").replace(",", "."))
        else:  # 1,939.00
            vals.append(t.replace(",", ""))
    elif "," in t:
        if re.fullmatch(r"\d{1,3}(,\d{3})+", t):
            vals.append(t.replace(",", ""))
            if t.count(",") == 1:
                vals.append(t.replace(",", "."))
        else:
            vals.append(t.replace(",", ".") if t.count(",") == 1 else t.replace(",", ""))
    elif "." in t:
        if re.fullmatch(r"\d{1,3}(\.\d{3})+", t):
            vals.append(t.replace(".", ""))
            if t.count(".") == 1:
                vals.append(t)
        else:
            vals.append(t if t.count(".") == 1 else t.replace(".", ""))
    else:
        vals.append(t)
    out: Set[str] = set()
    for v in vals:
        try:
            d = Decimal(v)
        except InvalidOperation:
            continue
        out.add(_canon(d))
    return out


def _canon(d: Decimal) -> str:
    d = d.normalize()
    s = format(d, "f")
    return s if s != "-0" else "0"


def extract_numbers(text: str) -> List[Tuple[str, Set[str]]]:
    """(token as written, its values) for each number in the text."""
    text = _CURRENCY_WORD_RE.sub(lambda m: m.group(1) + " ", text or "")
    return [(m.group(0), number_values(m.group(0))) for m in _NUM_RE.finditer(text)]


_MONTHS = {
    "january": 1, "jan": 1, "february": 2, "feb": 2, "march": 3, "mar": 3, "april": 4, "apr": 4,
    "may": 5, "june": 6, "jun": 6, "july": 7, "jul": 7, "august": 8, "aug": 8, "september": 9,
    "sep": 9, "sept": 9, "october": 10, "oct": 10, "november": 11, "nov": 11, "december": 12, "dec": 12,
    # German, for European documents
    "januar": 1, "jänner": 1, "februar": 2, "märz": 3, "maerz": 3, "mai": 5, "juni": 6, "juli": 7,
    "oktober": 10, "okt": 10, "dezember": 12, "dez": 12,
}
_MONTH_ALT = "|".join(sorted((re.escape(m) for m in _MONTHS), key=len, reverse=True))
_ORD = r"(?:st|nd|rd|th|\.)?"
_DATE_PATTERNS = [
    ("ymd", re.compile(r"(?<!\d)(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})(?!\d)")),
    ("dmy_num", re.compile(r"(?<!\d)(\d{1,2})[/.\-](\d{1,2})[/.\-](\d{4}|\d{2})(?!\d)")),
    ("d_month_y", re.compile(r"(?i)(?<![\w])(\d{1,2})" + _ORD + r"\s+(?:of\s+)?(" + _MONTH_ALT + r")\.?,?\s+(\d{4})(?!\d)")),
    ("month_d_y", re.compile(r"(?i)(?<![\w])(" + _MONTH_ALT + r")\.?\s+(\d{1,2})" + _ORD + r",?\s+(\d{4})(?!\d)")),
    ("month_y", re.compile(r"(?i)(?<![\w])(" + _MONTH_ALT + r")\.?,?\s+(\d{4})(?!\d)")),
]

DateKey = Tuple[int, int, Optional[int]]  # (year, month, day or None for month precision)


def _mk(y: int, m: int, d: Optional[int]) -> Optional[DateKey]:
    if y < 100:
        y += 2000 if y < 70 else 1900
    try:
        _dt.date(y, m, d or 1)
    except ValueError:
        return None
    return (y, m, d)


def extract_dates(text: str) -> List[Tuple[str, Set[DateKey], Tuple[int, int]]]:
    """(span text, possible calendar dates, span) for each date in the text; overlapping
    matches of later (looser) patterns are skipped."""
    found: List[Tuple[str, Set[DateKey], Tuple[int, int]]] = []
    taken: List[Tuple[int, int]] = []
    for kind, rx in _DATE_PATTERNS:
        for m in rx.finditer(text or ""):
            s, e = m.span()
            if any(s < te and e > ts for ts, te in taken):
                continue
            g = m.groups()
            keys: Set[Optional[DateKey]] = set()
            if kind == "ymd":
                keys.add(_mk(int(g[0]), int(g[1]), int(g[2])))
            elif kind == "dmy_num":
                a, b, y = int(g[0]), int(g[1]), int(g[2])
                keys.add(_mk(y, b, a))  # day first (most of the world)
                keys.add(_mk(y, a, b))  # month first (US)
            elif kind == "d_month_y":
                keys.add(_mk(int(g[2]), _MONTHS[g[1].lower()], int(g[0])))
            elif kind == "month_d_y":
                keys.add(_mk(int(g[2]), _MONTHS[g[0].lower()], int(g[1])))
            else:
                keys.add(_mk(int(g[1]), _MONTHS[g[0].lower()], None))
            keys.discard(None)
            if keys:
                found.append((m.group(0), keys, (s, e)))  # type: ignore[arg-type]
                taken.append((s, e))
    found.sort(key=lambda f: f[2][0])
    return found


def _dates_match(claim: Set[DateKey], pool: Set[DateKey]) -> bool:
    for y, m, d in claim:
        for py, pm, pd in pool:
            if (y, m) == (py, pm) and (d is None or pd is None or d == pd):
                return True
    return False


_QUOTE_RE = re.compile(r"\"([^\"\n]{2,400})\"|“([^”\n]{2,400})”|„([^“”\n]{2,400})[“”]|«([^»\n]{2,400})»")


def extract_quotes(text: str) -> List[Tuple[str, Tuple[int, int]]]:
    return [(next(g for g in m.groups() if g is not None), m.span()) for m in _QUOTE_RE.finditer(text or "")]


# ---------------------------------------------------------------------------------------------
# Citations and sentences.

_BRACKET_RE = re.compile(r"\[([^\[\]\n]{1,60})\]")
_ID_RE = re.compile(r"\b[Ee](\d{1,4})\b")
_BARE_ID_RE = re.compile(r"(?<![\w\[])E(\d{1,4})\b")


def cited_ids(text: str) -> List[str]:
    """Ids in square-bracket citations, in order: [E1], [E1, E3], [E1; E2], [E1][E2], [source: E2]."""
    out: List[str] = []
    for m in _BRACKET_RE.finditer(text or ""):
        for i in _ID_RE.findall(m.group(1)):
            out.append(f"E{int(i)}")
    return out


def strip_citations(text: str) -> str:
    return _BRACKET_RE.sub(lambda m: " " if _ID_RE.search(m.group(1)) else m.group(0), text or "")


_SENT_RE = re.compile(r"(?<=[.!?;])\s+|\n+")
_LEAD_CITES_RE = re.compile(r"^\s*(?:\[\s*[Ee]\d[^\[\]\n]{0,58}\]\s*[.,;:]?\s*)+")
_LIST_MARKER_RE = re.compile(r"^\s*(?:[-*•]|\d{1,2}[.)])\s+")
_META_TERMS = {"base", "evidence", "provid", "provide", "answer", "follow", "information", "available", "context",
               "item", "cite", "source", "extractive", "generative", "model", "configur", "configure", "accord",
               "here", "summary", "question", "ask", "follows"}


_ABBREV = {"e.g", "i.e", "dr", "mr", "mrs", "ms", "no", "nr", "vs", "fig", "st", "inc", "ltd", "co", "approx", "ca",
           "etc", "p", "pp", "vol", "corp", "jr", "sr", "rs", "mt"}
_MONTH_START_RE = re.compile(r"(?i)^(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec|januar|februar|märz|mai|juni|juli|"
                             r"oktober|okt|dezember|dez)")


def _inside_quote(prefix: str) -> bool:
    """A boundary inside a quotation is not a sentence end: quoted evidence stays one claim."""
    return prefix.count('"') % 2 == 1 or prefix.count("\u201c") > prefix.count("\u201d")


def _split_raw(text: str) -> List[str]:
    out: List[str] = []
    start = 0
    for m in _SENT_RE.finditer(text):
        if _inside_quote(text[start:m.start()]):
            continue
        before = text[start:m.start()]
        after = text[m.end():]
        if before.endswith("."):
            last = re.split(r"\s", before[:-1])[-1].lower() if before[:-1].strip() else ""
            if last in _ABBREV or (re.fullmatch(r"\d{1,2}", last or "x") and _MONTH_START_RE.match(after)):
                continue  # "e.g. x", "5. März 2024"
        out.append(text[start:m.start()])
        start = m.end()
    out.append(text[start:])
    return out


def split_claim_sentences(answer: str) -> List[str]:
    """Sentences of the answer, with trailing citation-only fragments ("... 1,939.00. [E1]")
    attached to the sentence before them."""
    raw = [s.strip() for s in _split_raw(answer or "") if s and s.strip()]
    out: List[str] = []
    for s in raw:
        lead = _LEAD_CITES_RE.match(s)
        if out and lead:
            out[-1] = out[-1] + " " + lead.group(0).strip()
            s = s[lead.end():].strip()
            if not s:
                continue
        out.append(s)
    return out


def is_dont_know(answer: str) -> bool:
    t = strip_citations(answer or "").translate(_QUOTE_TABLE).casefold()
    t = re.sub(r"[^a-z' ]+", " ", t)
    t = re.sub(r"\s+", " ", t).strip()
    return t in ("i don't know", "i do not know", "i dont know")


def _shingles(words: Sequence[str], n: int) -> Set[Tuple[str, ...]]:
    return {tuple(words[i:i + n]) for i in range(max(0, len(words) - n + 1))}


_PROMPT_SHINGLES: Dict[int, Set[Tuple[str, ...]]] = {}


def reproduces_prompt(answer: str, prompts: Iterable[str] = ALL_SYSTEM_PROMPTS, n: int = 10) -> bool:
    """True if the answer contains n consecutive words of a system prompt (output guard)."""
    words = re.findall(r"[a-z0-9']+", norm_text(answer))
    if len(words) < n:
        return False
    key = hash((tuple(prompts), n))
    if key not in _PROMPT_SHINGLES:
        sh: Set[Tuple[str, ...]] = set()
        for p in prompts:
            sh |= _shingles(re.findall(r"[a-z0-9']+", norm_text(p)), n)
        _PROMPT_SHINGLES[key] = sh
    return bool(_shingles(words, n) & _PROMPT_SHINGLES[key])


# ---------------------------------------------------------------------------------------------
# Evidence index.


class _ItemIndex:
    def __init__(self, item: EvidenceItem):
        raw = item.full_text()
        both = raw + "\n" + neutralize(raw)
        self.text = norm_text(both)
        self.compact = re.sub(r"[\s']", "", self.text)
        self.numbers: Set[str] = set()
        self.digit_runs: Set[str] = set()
        for tok, vals in extract_numbers(both):
            self.numbers |= vals
            self.digit_runs.add(re.sub(r"\D", "", tok))
        self.dates: Set[DateKey] = set()
        for _, keys, _ in extract_dates(both):
            self.dates |= keys

    def has_number(self, token: str, values: Set[str]) -> bool:
        if values & self.numbers:
            return True
        digits = re.sub(r"\D", "", token)
        return len(digits) >= 5 and digits in self.digit_runs

    def has_quote(self, quote: str) -> bool:
        parts = [p for p in re.split(r"\.\.\.|…|\[\.\.\.\]", quote) if p.strip(" .,;:")]
        for p in parts or [quote]:
            q = norm_text(p).strip(" .,;:!?'")
            if not q:
                continue
            if q not in self.text and re.sub(r"[\s']", "", q) not in self.compact:
                return False
        return True


def _blank(text: str, spans: Sequence[Tuple[int, int]]) -> str:
    chars = list(text)
    for s, e in spans:
        for i in range(s, e):
            chars[i] = " "
    return "".join(chars)


def verify_answer(
    answer: str,
    evidence: Sequence[EvidenceItem],
    *,
    require_citation: bool = True,
    min_content_terms: int = 4,
    system_prompts: Iterable[str] = ALL_SYSTEM_PROMPTS,
) -> Verification:
    """Check an answer against the evidence it cites (see module docstring)."""
    text = (answer or "").strip()
    provided = {e.id: e for e in evidence}
    v = Verification(verified=False)
    if not text:
        v.reasons.append("empty answer")
        v.answered = False
        return v
    if reproduces_prompt(text, system_prompts):
        v.prompt_leak = True
        v.reasons.append("answer reproduces the system prompt")
    if is_dont_know(text):
        v.answered = False
        v.verified = not v.prompt_leak
        return v

    index: Dict[str, _ItemIndex] = {}

    def idx(eid: str) -> _ItemIndex:
        if eid not in index:
            index[eid] = _ItemIndex(provided[eid])
        return index[eid]

    for sent in split_claim_sentences(text):
        ids = cited_ids(sent)
        for i in ids:
            if i in provided:
                if i not in v.citations:
                    v.citations.append(i)
            elif i not in v.unknown_ids:
                v.unknown_ids.append(i)
        valid = [i for i in dict.fromkeys(ids) if i in provided]
        body = strip_citations(sent)
        body = _LIST_MARKER_RE.sub(" ", body)
        # bare evidence-id-looking tokens that were not provided (and are not document text)
        for m in _BARE_ID_RE.finditer(body):
            eid = f"E{int(m.group(1))}"
            if eid not in provided and eid not in v.unknown_ids and not any(
                    eid.lower() in idx(c).text for c in valid):
                v.unknown_ids.append(eid)
        quotes = extract_quotes(body)
        rest = _blank(body, [sp for _, sp in quotes])
        dates = extract_dates(rest)
        rest = _blank(rest, [sp for _, _, sp in dates])
        numbers = extract_numbers(rest)
        has_claims = bool(quotes or dates or numbers)
        terms = [t for t in content_terms(rest) if t not in _META_TERMS and not t[0].isdigit()]
        factual = has_claims or len(terms) >= min_content_terms
        if not valid:
            if factual:
                v.uncited.append(sent)
            continue
        pool = [idx(i) for i in valid]
        cite_txt = "".join(f"[{i}]" for i in valid)
        for q, _ in quotes:
            if not any(p.has_quote(q) for p in pool):
                v.unsupported.append(f'quote "{q}" not found in {cite_txt}')
        for span, keys, _ in dates:
            if not any(_dates_match(keys, p.dates) for p in pool):
                v.unsupported.append(f"date '{span}' not found in {cite_txt}")
        for tok, vals in numbers:
            if not vals:
                continue
            if not any(p.has_number(tok, vals) for p in pool):
                where = [e for e in provided if e not in valid and idx(e).has_number(tok, vals)]
                hint = f" (it occurs in {', '.join(where)})" if where else ""
                v.unsupported.append(f"number '{tok}' not found in {cite_txt}{hint}")

    if v.unknown_ids:
        v.reasons.append("cites evidence ids that were not provided: " + ", ".join(v.unknown_ids))
    if require_citation and not v.citations:
        v.reasons.append("the answer cites no evidence")
    if v.uncited:
        v.reasons.append(f"{len(v.uncited)} sentence(s) with factual content have no citation: "
                         + " | ".join(_short(s) for s in v.uncited[:3]))
    v.reasons.extend(v.unsupported)
    v.verified = not v.reasons
    return v


def _short(s: str, n: int = 80) -> str:
    s = re.sub(r"\s+", " ", s).strip()
    return s if len(s) <= n else s[: n - 1] + "…"
