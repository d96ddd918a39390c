"""Claims in answer text: numbers, dates, quotes, citations and sentences (used by `verify`).

Numbers compare by value (``1,939.00`` == ``1939`` == ``1939.0`` == ``Rs 1939`` == ``₹1,939`` ==
``1.939,00``), dates by calendar day (``2024-03-05`` == ``05/03/2024`` == ``5 March 2024`` ==
``March 5, 2024``; day/month order is ambiguous in numeric dates, so both readings count).

Dates are parsed with regular expressions rather than ``dateutil.parser`` (installed here):
dateutil fills missing fields from today's date and its fuzzy mode reads numbers that are not
dates as dates, which would make the check accept claims it should reject.

Every text is first put through `normalize_unicode` (NFKC, Unicode format characters removed), so
full-width digits, ``［E1］`` or a zero-width space inside a number cannot dodge a check.
"""

from __future__ import annotations

import datetime as _dt
import re
import unicodedata
from collections.abc import Iterable, Sequence
from decimal import Decimal, InvalidOperation

from mmrag_li.generation.evidence import EvidenceItem, neutralize
from mmrag_li.generation.prompts import ALL_SYSTEM_PROMPTS

# ---------------------------------------------------------------------------------------------
# Normalisation.

_QUOTE_CHARS = "\"'“”‘’„‚«»‹›`´"
_QUOTE_TABLE = str.maketrans({c: "'" for c in _QUOTE_CHARS} | {"–": "-", "—": "-", "−": "-", "\u00a0": " ",
                                                               "\u202f": " ", "⟦": "[", "⟧": "]"})
_INVISIBLE = {"\u115f", "\u1160", "\u3164", "\uffa0", "\u034f"}


def normalize_unicode(text: str) -> str:
    """NFKC-normalised text without Unicode format characters (zero-width, soft hyphen, bidi).

    Args:
        text: any text (answer or evidence).
    """
    t = unicodedata.normalize("NFKC", text or "")
    if t.isascii():
        return t
    return "".join(c for c in t if unicodedata.category(c) != "Cf" and c not in _INVISIBLE)


def norm_text(text: str) -> str:
    """Case-folded, quote/dash-unified, whitespace-collapsed text for substring checks.

    Args:
        text: any text.
    """
    t = normalize_unicode(text).translate(_QUOTE_TABLE).casefold()
    return re.sub(r"\s+", " ", t).strip()


# ---------------------------------------------------------------------------------------------
# Numbers.

_CURRENCY_WORD_RE = re.compile(r"(?i)\b(rs\.?|inr|usd|eur|gbp|chf|jpy|cny|aud|cad|us\$|a\$|c\$)(?=\d)")

# A number: 1,939.00 / 1.939,00 / 1'939 / 1939 / 0.5 / ,5 is not a number. Not part of an
# identifier such as E1, A4 or MP3 (no letter or digit directly before it).
NUMBER_RE = re.compile(
    r"(?<![A-Za-z0-9])(?:\d{1,3}(?:(?:,\d{3})+|(?:\.\d{3})+|(?:'\d{3})+|(?:[\u00a0\u202f]\d{3})+)(?:[.,]\d+)?"
    r"|\d+(?:[.,]\d+)?)(?!\d)"
)


def number_values(token: str) -> set[str]:
    """All plausible values of a number token, as canonical decimal strings.

    Unambiguous forms give one value; ``1,939`` (English thousands or European decimal) and
    ``1.939`` give both readings.

    Args:
        token: a number as written.
    """
    t = token.strip().replace("'", "").replace("\u00a0", "").replace("\u202f", "")
    vals: list[str] = []
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
    out: set[str] = set()
    for v in vals:
        try:
            d = Decimal(v).normalize()
        except InvalidOperation:
            continue
        s = format(d, "f")
        out.add(s if s != "-0" else "0")
    return out


def extract_numbers(text: str) -> list[tuple[str, set[str]]]:
    """(token as written, its values) for each number in the text.

    Args:
        text: any text.
    """
    text = _CURRENCY_WORD_RE.sub(lambda m: m.group(1) + " ", normalize_unicode(text))
    return [(m.group(0), number_values(m.group(0))) for m in NUMBER_RE.finditer(text)]


# ---------------------------------------------------------------------------------------------
# Dates.

MONTHS = {
    "january": 1, "jan": 1, "february": 2, "feb": 2, "march": 3, "mar": 3, "april": 4, "apr": 4,
    "may": 5, "june": 6, "jun": 6, "july": 7, "jul": 7, "august": 8, "aug": 8, "september": 9,
    "sep": 9, "sept": 9, "october": 10, "oct": 10, "november": 11, "nov": 11, "december": 12, "dec": 12,
    # German and French, for European documents
    "januar": 1, "jänner": 1, "februar": 2, "märz": 3, "maerz": 3, "mai": 5, "juni": 6, "juli": 7,
    "oktober": 10, "okt": 10, "dezember": 12, "dez": 12,
    "janvier": 1, "février": 2, "fevrier": 2, "mars": 3, "avril": 4, "juin": 6, "juillet": 7, "août": 8,
    "aout": 8, "septembre": 9, "octobre": 10, "novembre": 11, "décembre": 12, "decembre": 12,
}
_MONTH_ALT = "|".join(sorted((re.escape(m) for m in MONTHS), key=len, reverse=True))
_ORD = r"(?:st|nd|rd|th|er|\.)?"
_DATE_PATTERNS = [
    ("ymd", re.compile(r"(?<!\d)(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})(?!\d)")),
    ("dmy_num", re.compile(r"(?<!\d)(\d{1,2})[/.\-](\d{1,2})[/.\-](\d{4}|\d{2})(?!\d)")),
    ("d_month_y", re.compile(r"(?i)(?<![\w])(\d{1,2})" + _ORD + r"\s+(?:of\s+)?(" + _MONTH_ALT
                             + r")\.?,?\s+(\d{4})(?!\d)")),
    ("month_d_y", re.compile(r"(?i)(?<![\w])(" + _MONTH_ALT + r")\.?\s+(\d{1,2})" + _ORD + r"\s*,?\s+(\d{4})(?!\d)")),
    ("month_y", re.compile(r"(?i)(?<![\w])(" + _MONTH_ALT + r")\.?,?\s+(\d{4})(?!\d)")),
]

DateKey = tuple[int, int, int | None]  # (year, month, day or None for month precision)


def _mk(y: int, m: int, d: int | None) -> DateKey | None:
    if y < 100:
        y += 2000 if y < 70 else 1900
    try:
        _dt.date(y, m, d or 1)
    except ValueError:
        return None
    return (y, m, d)


def extract_dates(text: str) -> list[tuple[str, set[DateKey], tuple[int, int]]]:
    """(span text, possible calendar dates, span) for each date in the text; overlapping
    matches of later (looser) patterns are skipped.

    Args:
        text: any text (spans refer to it as given).
    """
    found: list[tuple[str, set[DateKey], tuple[int, int]]] = []
    taken: list[tuple[int, int]] = []
    for kind, rx in _DATE_PATTERNS:
        for m in rx.finditer(text or ""):
            s, e = m.span()
            if any(s < te and e > ts for ts, te in taken):
                continue
            g = m.groups()
            keys: set[DateKey | None] = set()
            if kind == "ymd":
                keys.add(_mk(int(g[0]), int(g[1]), int(g[2])))
            elif kind == "dmy_num":
                a, b, y = int(g[0]), int(g[1]), int(g[2])
                keys.add(_mk(y, b, a))  # day first (most of the world)
                keys.add(_mk(y, a, b))  # month first (US)
            elif kind == "d_month_y":
                keys.add(_mk(int(g[2]), MONTHS[g[1].lower()], int(g[0])))
            elif kind == "month_d_y":
                keys.add(_mk(int(g[2]), MONTHS[g[0].lower()], int(g[1])))
            else:
                keys.add(_mk(int(g[1]), MONTHS[g[0].lower()], None))
            keys.discard(None)
            if keys:
                found.append((m.group(0), keys, (s, e)))  # type: ignore[arg-type]
                taken.append((s, e))
    found.sort(key=lambda f: f[2][0])
    return found


def dates_match(claim: set[DateKey], pool: set[DateKey]) -> bool:
    """True when some reading of the claimed date equals some date of the pool (a month-precision
    date matches any day of that month).

    Args:
        claim: readings of one claimed date.
        pool: dates found in evidence.
    """
    for y, m, d in claim:
        for py, pm, pd in pool:
            if (y, m) == (py, pm) and (d is None or pd is None or d == pd):
                return True
    return False


# ---------------------------------------------------------------------------------------------
# Quotes, citations, sentences.

_QUOTE_RE = re.compile(r"\"([^\"\n]{2,400})\"|“([^”\n]{2,400})”|„([^“”\n]{2,400})[“”]|«([^»\n]{2,400})»")


def extract_quotes(text: str) -> list[tuple[str, tuple[int, int]]]:
    """(quoted text, span of the quotation) for each quotation in the text.

    Args:
        text: any text.
    """
    return [(next(g for g in m.groups() if g is not None), m.span()) for m in _QUOTE_RE.finditer(text or "")]


_BRACKET_RE = re.compile(r"\[([^\[\]\n]{1,60})\]")
_ID_RE = re.compile(r"\b[Ee](\d{1,4})\b")
BARE_ID_RE = re.compile(r"(?<![\w\[])E(\d{1,4})\b")


def cited_ids(text: str) -> list[str]:
    """Ids in square-bracket citations, in order: [E1], [E1, E3], [E1; E2], [E1][E2], [source: E2].

    Args:
        text: answer text.
    """
    out: list[str] = []
    for m in _BRACKET_RE.finditer(normalize_unicode(text)):
        for i in _ID_RE.findall(m.group(1)):
            out.append(f"E{int(i)}")
    return out


def strip_citations(text: str) -> str:
    """The text with its ``[E#]`` citations replaced by spaces.

    Args:
        text: answer text.
    """
    return _BRACKET_RE.sub(lambda m: " " if _ID_RE.search(m.group(1)) else m.group(0), text or "")


_SENT_RE = re.compile(r"(?<=[.!?;])\s+|\n+")
_LEAD_CITES_RE = re.compile(r"^\s*(?:\[\s*[Ee]\d[^\[\]\n]{0,58}\]\s*[.,;:]?\s*)+")
_ABBREV = {"e.g", "i.e", "dr", "mr", "mrs", "ms", "no", "nr", "vs", "fig", "st", "inc", "ltd", "co", "approx", "ca",
           "etc", "p", "pp", "vol", "corp", "jr", "sr", "rs", "mt"}
_MONTH_START_RE = re.compile(r"(?i)^(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec|januar|februar|märz|mai|juni|juli|"
                             r"oktober|okt|dezember|dez)")


def _inside_quote(prefix: str) -> bool:
    """A boundary inside a quotation is not a sentence end: quoted evidence stays one claim."""
    return prefix.count('"') % 2 == 1 or prefix.count("\u201c") > prefix.count("\u201d")


def _split_raw(text: str) -> list[str]:
    out: list[str] = []
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


def split_claim_sentences(answer: str) -> list[str]:
    """Sentences of the answer, with trailing citation-only fragments ("... 1,939.00. [E1]")
    attached to the sentence before them.

    Args:
        answer: answer text.
    """
    raw = [s.strip() for s in _split_raw(answer or "") if s and s.strip()]
    out: list[str] = []
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
    """True for "I don't know" (any quote style, case, trailing punctuation or citation).

    Args:
        answer: answer text.
    """
    t = strip_citations(normalize_unicode(answer)).translate(_QUOTE_TABLE).casefold()
    t = re.sub(r"[^a-z' ]+", " ", t)
    t = re.sub(r"\s+", " ", t).strip()
    return t in ("i don't know", "i do not know", "i dont know")


def _shingles(words: Sequence[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i:i + n]) for i in range(max(0, len(words) - n + 1))}


_PROMPT_SHINGLES: dict[int, set[tuple[str, ...]]] = {}


def reproduces_prompt(answer: str, prompts: Iterable[str] = ALL_SYSTEM_PROMPTS, n: int = 10) -> bool:
    """True if the answer contains n consecutive words of a system prompt (output guard).

    Args:
        answer: answer text.
        prompts: the system prompt texts.
        n: words in a row that count as a reproduction.
    """
    words = re.findall(r"[a-z0-9']+", norm_text(answer))
    if len(words) < n:
        return False
    key = hash((tuple(prompts), n))
    if key not in _PROMPT_SHINGLES:
        sh: set[tuple[str, ...]] = set()
        for p in prompts:
            sh |= _shingles(re.findall(r"[a-z0-9']+", norm_text(p)), n)
        _PROMPT_SHINGLES[key] = sh
    return bool(_shingles(words, n) & _PROMPT_SHINGLES[key])


# ---------------------------------------------------------------------------------------------
# Evidence index.


class ItemText:
    """What one evidence item says, indexed for claim checks: normalised text, numbers, dates.

    Args:
        item: the evidence item (its ``full_text()``: caption, OCR, text, source name and page).
    """

    def __init__(self, item: EvidenceItem):
        self.item = item
        raw = normalize_unicode(item.full_text())
        self.raw = raw
        both = raw + "\n" + neutralize(raw)
        self.text = norm_text(both)
        self.compact = re.sub(r"[\s']", "", self.text)
        self.numbers: set[str] = set()
        self.digit_runs: set[str] = set()
        for tok, vals in extract_numbers(both):
            self.numbers |= vals
            self.digit_runs.add(re.sub(r"\D", "", tok))
        self.dates: set[DateKey] = set()
        for _, keys, _ in extract_dates(both):
            self.dates |= keys

    def has_number(self, token: str, values: set[str]) -> bool:
        """Does the item hold this number (by value, or as the same run of 5+ digits)?

        Args:
            token: the number as written in the claim.
            values: its readings (`number_values`).
        """
        if values & self.numbers:
            return True
        digits = re.sub(r"\D", "", token)
        return len(digits) >= 5 and digits in self.digit_runs

    def has_quote(self, quote: str) -> bool:
        """Does the item contain the quotation (each part of a quote with ``…`` on its own)?

        Args:
            quote: the quoted text, without its quotation marks.
        """
        parts = [p for p in re.split(r"\.\.\.|…|\[\.\.\.\]", quote) if p.strip(" .,;:")]
        for p in parts or [quote]:
            q = norm_text(p).strip(" .,;:!?'")
            if not q:
                continue
            if q not in self.text and re.sub(r"[\s']", "", q) not in self.compact:
                return False
        return True

    def has_text(self, text: str) -> bool:
        """Does the item contain this text (normalised, case-insensitive)?

        Args:
            text: e.g. a URL.
        """
        q = norm_text(text)
        return bool(q) and q in self.text


def blank(text: str, spans: Sequence[tuple[int, int]]) -> str:
    """The text with the given spans replaced by spaces (same length).

    Args:
        text: any text.
        spans: (start, end) pairs.
    """
    chars = list(text)
    for s, e in spans:
        for i in range(s, e):
            chars[i] = " "
    return "".join(chars)
