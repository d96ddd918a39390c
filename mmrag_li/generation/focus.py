"""What a question asks for, and where evidence states it (shared by `extractive` and `verify`).

`analyze_question` reads a question into a `QuestionFocus`:

* ``kind``: the asked-for type, one of ``amount`` ("total amount due", "how much"), ``identifier``
  ("invoice number"), ``date`` ("when", "date"), ``name`` ("who", "which company"), ``count``
  ("how many") or None;
* ``field``: the document field with labels (``invoice_number``, ``total``, ``date``,
  ``due_date``, ``issuer``), whose label patterns find it in invoices in English, German and French;
* ``entities``: what the question names: the issuer after "from"/"by", quoted strings, ids such as
  ``invoice 4711``, and capitalised words ("Peru");
* ``terms``: its other content words.

`field_rows` finds the label -> value rows of a field in an evidence text. Invoices come as OCR
lines and as layout-preserving PDF text where one line holds several cells
(``Rechnungsnr.   30064443     Kundennr.   47774``) and a value may sit under its label
(``Booking ID`` / ``IBZY2087``). A row's values are, in order of preference: the values after the
label in its own cell, the following unlabelled cells of the line, or the column-aligned cell of
the next two lines. A cell that is itself a label ends the search, so ``47774`` belongs to
``Kundennr.``, not to ``Rechnungsnr.``.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field as dc_field
from re import Pattern

from mmrag_li.generation._text import STOPWORDS, content_terms
from mmrag_li.generation.claims import NUMBER_RE, extract_dates, normalize_unicode

# ---------------------------------------------------------------------------------------------
# Fields: how a question asks for them, and how documents label them.


def _rx(*parts: str) -> list[Pattern[str]]:
    return [re.compile(p, re.IGNORECASE) for p in parts]


@dataclass(frozen=True)
class FieldSpec:
    """A document field: its value kind, the questions that ask for it, and its labels.

    Args:
        name: field name.
        kind: value kind ("amount", "identifier", "date", "name").
        asks: patterns on the question that select this field.
        strong: labels that name exactly this field; weak: labels that may name it.
        avoid: labels of neighbouring fields (sub-totals, order numbers...).
    """

    name: str
    kind: str
    asks: list[Pattern[str]]
    strong: list[Pattern[str]]
    weak: list[Pattern[str]]
    avoid: list[Pattern[str]] = dc_field(default_factory=list)


_ID_AVOID = _rx(r"\border\b", r"\baccount\b", r"\bcustomer\b", r"\bclient\b", r"\bkunden", r"\bvat\b", r"\btin\b",
                r"\btax\b", r"\bsiren\b", r"\bsiret\b", r"\biban\b", r"\bbic\b", r"\bswift\b", r"\bphone\b", r"\btel\b",
                r"\bfax\b", r"\bgst", r"\bcin\b", r"\bpan\b", r"\bcontract\b", r"\bpo\b", r"\bdossier\b", r"\bust",
                r"\bsteuer", r"\bblz\b", r"\bkto\b", r"\bligne\b", r"\bid\.?\s*client", r"\bfsn\b", r"\bwid\b",
                r"\bifsc\b", r"\bpage\b", r"\bseite\b", r"\bservice tax\b", r"\bhrb\b")
_AMOUNT_AVOID = _rx(r"\bsub\s*-?\s*total", r"\btax\b", r"\bvat\b", r"\btva\b", r"\bmwst\b", r"\bust\b", r"\bht\b",
                    r"\bnet(?:to)?\b", r"\buntaxed\b", r"\bcredits?\b", r"\bdiscount\b", r"\brabatt", r"\bshipping\b",
                    r"\bdeposit\b", r"\bpaid\b", r"\bunit\b", r"\brate\b", r"\bprice\b", r"\bp\.?u\.?\b",
                    r"\bhors taxe")

FIELDS: dict[str, FieldSpec] = {
    "invoice_number": FieldSpec(
        "invoice_number", "identifier",
        # "#" asks for the number only when no id follows it ("issued invoice #BLR_1" names one).
        asks=_rx(r"\b(?:invoice|bill|receipt|rechnungs?|facture)\s*(?:number|no\b|nr\b|#(?!\s*\w*\d)|id\b|nummer|num[ée]ro)",
                 r"\bnumber of (?:the|this|that)\s+(?:invoice|bill|receipt)", r"\b(?:invoice|bill)'s number"),
        # "INVOICE 4711" as a title line: the id follows the word directly.
        strong=_rx(r"^\s*(?:invoice|rechnung|facture|bill)\b\s*(?=#?\s*[A-Za-z]{0,4}[\-/]?\d)",
                   r"\binvoice\s*(?:number|no\b|nr\b|n[°º]|#|id\b)", r"\binv\.?\s*(?:no\b|#)", r"\brechnungs?\s*-?\s*(?:nr|nummer)",
                   r"\bfacture\s*n[°ºo]", r"\bn[°º]\s*(?:de\s+)?facture", r"\bnum[ée]ro de facture", r"\bfactura\s*n",
                   r"\bbill\s*(?:no\b|number)", r"\breceipt\s*(?:no\b|number|#)"),
        weak=_rx(r"(?:^|\s)#\s*(?=\w*\d)", r"\bnumber\b", r"\bno\.?\s*:", r"\bnr\.?\s*:", r"\bbooking id\b", r"\breference\b",
                 r"\bref\.?\s*:"),
        avoid=_ID_AVOID),
    "due_date": FieldSpec(
        "due_date", "date",
        asks=_rx(r"\bdue date\b", r"\bdue by\b", r"\bwhen\b.*\b(?:due|payable|pay)\b", r"\bpayment deadline\b",
                 r"\bby when\b"),
        strong=_rx(r"\bdue date\b", r"\bpayment due\b", r"\bzahlungsziel\b", r"\bf[äa]llig", r"\bdate limite\b",
                   r"\b[ée]ch[ée]ance\b", r"\bpay by\b"),
        weak=_rx(r"\bdue\b"), avoid=_rx(r"\binvoice date\b", r"\border date\b")),
    "total": FieldSpec(
        "total", "amount",
        asks=_rx(r"\btotal\b", r"\bamount\b", r"\bhow much\b.{0,30}\b(?:due|owed?|pay|invoice|bill)\b", r"\bbalance\b",
                 r"\bto pay\b", r"\bsum\b", r"\bowe[ds]?\b", r"\bpayable\b"),
        strong=_rx(r"\btotal amount\b", r"\bamount due\b", r"\bbalance due\b", r"\bgrand total\b", r"\btotal due\b",
                   r"\btotal ttc\b", r"\btotal to pay\b", r"\bamount payable\b", r"\btotal payable\b", r"\bmontant ttc\b",
                   r"\bnet [àa] payer\b", r"\bsomme [àa] payer\b", r"\bmontant total\b", r"\bzahlbetrag\b",
                   r"\bgesamtbetrag\b", r"\brechnungsbetrag\b", r"\bendbetrag\b", r"\btotal for this invoice\b",
                   r"\binvoice total\b", r"\btotal eur\b", r"\btotal usd\b", r"\btotal inr\b"),
        weak=_rx(r"\btotal\b", r"\bgesamt", r"\bsumme\b", r"\bamount\b", r"\bbalance\b", r"\bmontant\b", r"\bbetrag\b"),
        avoid=_AMOUNT_AVOID),
    "date": FieldSpec(
        "date", "date",
        asks=_rx(r"\bwhen\b", r"\bdate\b", r"\bdated\b", r"\bissued\b", r"\bwhat day\b"),
        strong=_rx(r"\binvoice date\b", r"\bdate of issue\b", r"\bissue date\b", r"\brechnungsdatum\b", r"\bdate de facture\b"),
        weak=_rx(r"\bdate\b", r"\bdatum\b", r"\bdated\b", r"\bissued\b", r"\bfacture n"),
        avoid=_rx(r"\bdue\b", r"\border date\b", r"\bcheck\s*-?\s*(?:in|out)\b", r"\bdate limite\b", r"\bzahlungsziel\b")),
    "issuer": FieldSpec(
        "issuer", "name",
        asks=_rx(r"\bwho\b", r"\bwhich (?:company|vendor|supplier|seller|shop|firm)\b", r"\bissuer\b", r"\bsupplier\b",
                 r"\bvendor\b", r"\bseller\b"),
        strong=_rx(r"\bsold by\b", r"\bservice provider\b", r"\bissuer\b", r"\bsupplier\b", r"\bvendor\b", r"\bseller\b"),
        weak=_rx(r"\bfrom\b", r"\bbilled by\b")),
}
_FIELD_ORDER = ("invoice_number", "due_date", "total", "issuer", "date")
_COUNT_RE = re.compile(r"\bhow many\b|\bnumber of\b(?!\s+(?:the|this|that)\s+(?:invoice|bill|receipt))|\bquantity\b|\bqty\b",
                       re.IGNORECASE)
_ENTITY_AFTER_RE = re.compile(r"\b(?:from|issued by|sent by|billed by|by)\s+(?:the\s+)?([^?!,;\n]+?)\s*(?:[?!,;\n]|\.(?:\s|$)|$)",
                              re.IGNORECASE)
_ID_ENTITY_RE = re.compile(r"\b(?:invoice|order|bill|receipt|rechnung|facture|booking)\s*(?:no\.?|number|nr\.?|#)?\s*#?\s*"
                           r"([A-Za-z0-9][\w\-/]*\d[\w\-/]*)", re.IGNORECASE)
_QUOTED_RE = re.compile(r"\"([^\"]{2,80})\"|“([^”]{2,80})”|'([^']{2,80})'")
_CAPS_RE = re.compile(r"(?<![\w.])([A-Z][\w&.\-]*(?:\s+[A-Z][\w&.\-]*)*)")
# Words that are never the named entity (question words, field words).
_GENERIC = set(STOPWORDS) | {
    "invoice", "invoices", "number", "total", "amount", "due", "date", "bill", "receipt", "company", "vendor", "issuer",
    "supplier", "price", "cost", "balance", "sum", "paid", "pay", "tax", "vat", "question", "answer", "document",
    "inc", "ltd", "llc", "gmbh", "ag", "sa", "sarl", "co", "corp", "pvt", "limited", "plc", "kg", "bv", "nv", "the",
    "extractive", "model", "configured", "generative", "no", "evidence", "corporation", "group", "holding",
    "holdings", "incorporated", "international", "gesellschaft", "enterprises", "sas", "srl", "spa", "oy", "ab", "as"}


@dataclass
class QuestionFocus:
    """What a question asks for (see module docstring).

    Args:
        question: the question text.
        kind: asked-for value type or None.
        field: a `FieldSpec` or None.
        entities: names/ids the question is about.
        terms: other stemmed content terms.
    """

    question: str
    kind: str | None = None
    field: FieldSpec | None = None
    entities: list[str] = dc_field(default_factory=list)
    terms: list[str] = dc_field(default_factory=list)

    @property
    def entity_tokens(self) -> list[str]:
        """Lower-cased words of the named entities, and each identifier entity whole
        (``invoice_number_1``, not its word "1", which is a count or a line number elsewhere)."""
        return [t for e in self.entities
                for t in ([identifier_key(e)] if is_identifier(e) else entity_words(e))]


_ID_SHAPE_RE = re.compile(r"#?\s?[^\W_][\w\-/.]*")


def is_identifier(entity: str) -> bool:
    """Is this entity an identifier (one token with a digit: ``4711``, ``#BLR_1``,
    ``INV-2024-1627``, ``invoice_number_1``) rather than a name?

    Args:
        entity: an entity of a `QuestionFocus`.
    """
    e = normalize_unicode(entity).strip()
    return bool(_ID_SHAPE_RE.fullmatch(e)) and any(c.isdigit() for c in e)


def identifier_key(entity: str) -> str:
    """The identifier as a value token: lower-cased, without a leading ``#`` and spaces.

    Args:
        entity: an identifier entity (see `is_identifier`).
    """
    return normalize_unicode(entity).strip().lstrip("#").strip().casefold()


def identifier_pattern(entity: str) -> Pattern[str]:
    """A regex that finds the identifier whole, never a fragment of it or it inside a longer one.

    Its letter and digit runs must follow each other with at most one joiner (``-_/.``) where
    the identifier has a joiner or a letter/digit change (``INV-2024-1627`` = ``INV2024/1627``),
    and a space only where it has a joiner or a space (``INV 2024 1627``). No letter or digit may touch it, nor a digit and a joiner
    before it (``1627`` is not in ``2024-1627``, ``11`` is not in ``4.11``), nor a joiner and a
    letter or digit after it (``4711`` is not in ``4711-2``); ``INV-4711`` does hold ``4711``.

    Args:
        entity: an identifier entity (see `is_identifier`).
    """
    e = identifier_key(entity)
    runs = list(re.finditer(r"[^\W\d_]+|\d+", e))
    parts = [re.escape(runs[0].group(0))] if runs else []
    for prev, cur in itertools.pairwise(runs):
        gap = e[prev.end():cur.start()]
        # OCR drops or spaces out joiners ("INV 2024 1627"); a run split only by a letter/digit
        # change may gain a joiner but no space.
        parts.append(r"\s*[\-_/.]?\s*" if re.search(r"\s", gap) else r"\s?[\-_/.]?\s?" if gap else r"[\-_/.]?")
        parts.append(re.escape(cur.group(0)))
    return re.compile(r"(?<![^\W_])(?<!\d[.,\-/])" + "".join(parts) + r"(?![^\W_]|[\-_/.][^\W_]|,\d)",
                      re.IGNORECASE)


def entity_words(entity: str) -> list[str]:
    """The distinctive words of an entity name (no stop words, legal forms or one-letter words).

    Args:
        entity: e.g. "QualityHosting AG".
    """
    words = re.findall(r"[^\W_]+", normalize_unicode(entity).casefold())
    return [w for w in words if w not in _GENERIC and (len(w) > 1 or w.isdigit())]


def analyze_question(question: str) -> QuestionFocus:
    """Read the asked-for type, field, entities and terms out of a question.

    Args:
        question: the user's question (or an answer sentence, for a focus without a question).
    """
    q = normalize_unicode(question or "").strip()
    f = QuestionFocus(question=q)
    # A trailing "(...)" is context the chat engine appended ("when was it issued? (invoice total)"):
    # the asked field comes from the question itself, the context only if the question names none.
    main = re.sub(r"\s*\([^()]*\)\s*$", "", q)
    for text in dict.fromkeys((main, q)):
        for name in _FIELD_ORDER:
            spec = FIELDS[name]
            if any(p.search(text) for p in spec.asks):
                if name == "total" and _COUNT_RE.search(text):
                    continue
                f.field, f.kind = spec, spec.kind
                break
        if f.field is not None:
            break
    if f.kind is None and _COUNT_RE.search(q):
        f.kind = "count"
    ents: list[str] = []
    for m in _ENTITY_AFTER_RE.finditer(q):
        ent = re.sub(r"^(?:the|a|an)\s+", "", m.group(1).strip(), flags=re.IGNORECASE)
        if entity_words(ent):
            ents.append(ent)
    for m in _QUOTED_RE.finditer(q):
        ents.append(next(g for g in m.groups() if g))
    for m in _ID_ENTITY_RE.finditer(q):
        if not any(m.group(1).lower() in e.lower() for e in ents):
            ents.append(m.group(1))
    if not ents:
        for m in _CAPS_RE.finditer(q):
            if m.start() == 0 or q[:m.start()].rstrip().endswith((".", "?", "!", ":")):
                continue
            if entity_words(m.group(1)):
                ents.append(m.group(1).strip(" .-"))
    f.entities = list(dict.fromkeys(ents))
    ent_terms = set(content_terms(" ".join(f.entities)))
    f.terms = [t for t in dict.fromkeys(content_terms(q)) if t not in ent_terms]
    return f


def mentions_entity(text: str, entity: str) -> bool:
    """Does the text name the entity? An identifier only whole (`identifier_pattern`); a name
    written without spaces, or its first distinctive word and at least half of the others as
    whole words (case-insensitive): "Umbrella Corp" is not "Globex Corp", "ACME Office Supplies"
    is not "Office Depot".

    Args:
        text: evidence text.
        entity: an entity of a `QuestionFocus`.
    """
    t = normalize_unicode(text).casefold()
    if is_identifier(entity):  # ids match whole: "invoice_number_1" is not the word "1"
        return bool(identifier_pattern(entity).search(t))
    words = entity_words(entity)
    if not words:
        return True
    compact = "".join(words)
    if len(compact) >= 4 and compact in re.sub(r"[^\w]", "", t):
        return True
    found = [bool(re.search(r"(?<![^\W_])" + re.escape(w) + r"(?![^\W_])", t)) for w in words]
    return found[0] and sum(found) >= max(1, (len(words) + 1) // 2)


# ---------------------------------------------------------------------------------------------
# Typed values.

_CURRENCY_RE = re.compile(r"[$€£¥₹]|\b(?:rs\.?|inr|usd|eur|gbp|chf|pln|jpy|ttc)\b", re.IGNORECASE)
_IDENT_RE = re.compile(r"(?<![\w#])(?<!\d[.,])#?\s?([A-Za-z0-9][\w\-/]*\d[\w\-/]*|[A-Za-z][\w\-/]*_\d+)")


def typed_values(text: str, kind: str | None, exclude: Sequence[str] = ()) -> list[str]:
    """Values of the asked kind in a piece of text, in order.

    amount: numbers with cents or a currency next to them (``$4.11``, ``34,73``, ``Rs 1939``);
    identifier: tokens with a digit (``42183017``, ``BLR_WFLD2015...``, ``invoice_number_1``) that
    are not dates or amounts; date: date spans; count/None: plain numbers. Dates, percentages
    and the ``exclude`` tokens (the question's own ids) are never values.

    Args:
        text: a cell or line.
        kind: the asked-for kind.
        exclude: lower-cased tokens to skip.
    """
    text = re.sub(r"(?i)\b(rs\.?|inr|usd|eur|gbp|chf)(?=\d)", r"\1 ", normalize_unicode(text))
    dates = extract_dates(text)
    if kind == "date":
        return [d[0] for d in dates]
    if kind == "name":
        # A name starts with a capital and is a few words: "(Not to be used ...)" under a
        # "Service Provider:" label or "the charges shown ..." after "from" are not issuers.
        t = text.strip().lstrip(":：-–—#. ").strip()  # what follows "Sold By:" is the name
        # A value that is itself a "Label: ..." cell ("Parts: 2 x shop supplies") is no name either.
        ok = (re.search(r"[A-Za-z]{2}", t) and not re.search(r"\d{3}|[:：]", t) and t[:1].isupper()
              and len(t.split()) <= 8)
        return [t] if ok else []
    spans = [sp for _, _, sp in dates]
    out: list[str] = []
    if kind == "identifier":
        for m in _IDENT_RE.finditer(text):
            tok = m.group(1)
            if any(s <= m.start(1) < e for s, e in spans) or tok.lower() in exclude:
                continue
            if re.match(r"[.,]\d", text[m.end(1):m.end(1) + 2]) or re.fullmatch(r"\d{1,2}", tok) or re.fullmatch(r"\d+[.,]\d{2}", tok) or re.fullmatch(r"(?:19|20)\d\d", tok):
                continue
            out.append(tok)
        return out
    for m in NUMBER_RE.finditer(text):
        tok, (i, end) = m.group(0), m.span()
        if any(s <= i < e for s, e in spans) or tok.lower() in exclude or text[end:end + 2].strip()[:1] == "%":
            continue
        if kind == "amount":
            near = text[max(0, i - 4):i] + text[end:end + 5]
            if not (re.search(r"[.,]\d{1,2}$", tok) or _CURRENCY_RE.search(near)):
                continue
        out.append(tok)
    return out


def loose_numbers(text: str, exclude: Sequence[str] = ()) -> list[str]:
    """Every number that is not part of a date, a percentage or an excluded id, nor a bare year
    (``1939`` counts when a currency or cents come with it).

    Args:
        text: a cell, line or sentence.
        exclude: lower-cased tokens to skip.
    """
    amounts = set(typed_values(text, "amount", exclude))
    return [t for t in typed_values(text, "count", exclude)
            if t in amounts or not re.fullmatch(r"(?:19|20)\d\d", t)]
