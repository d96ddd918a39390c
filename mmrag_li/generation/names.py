"""Name answers ("Which company issued invoice 4711?"): which names an answer sentence gives, and
whether a cited evidence item states that name as the issuer (used by `verify`).

A name claim is a capitalised run of the sentence (``Amazon Web Services``, ``WS Retail
Services Pvt. Ltd.``) with a distinctive word (`focus.entity_words`) that is not one of the
question's own entities or words ("Invoice"), nor an issuer label ("Sold By", "Service
Provider"). The claim holds when a cited item has a line that IS that name (a letterhead,
``Amazon Web Services, Inc.``, ``Sold By : WS Retail Services Pvt. Ltd.``; not a capitalised word
inside a sentence such as ``Notes: Removed debris ...``), and at least one such line is not in the
recipient's block (a ``Bill To:`` / ``Ship To:`` / ``Customer`` label on the line or the line
above): the customer is no issuer.
"""

from __future__ import annotations

import re

from mmrag_li.generation.claims import normalize_unicode
from mmrag_li.generation.focus import FIELDS, QuestionFocus, entity_words
from mmrag_li.generation.prompts import EXTRACTIVE_PREFIX

# A capitalised word, or one with a capital inside ("iViveLabs"), then more such words.
_CAPS_RUN_RE = re.compile(r"(?<![\w.])((?:[A-Z]|[a-z]+[A-Z])[\w&.\-']*(?:[ \t]+(?:&[ \t]+)?(?:[A-Z]|[a-z]+[A-Z])[\w&.\-']*)*)")
_RECIPIENT_RE = re.compile(r"\b(?:bill(?:ed)?\s*to|ship(?:ped)?\s*to|sold\s*to|deliver(?:ed)?\s*to|billing address|"
                           r"shipping address|customer|client|guest(?:\s*name)?|attn|buyer|recipient|"
                           r"rechnungsempf[äa]nger|kunde|destinataire)\b", re.IGNORECASE)


def claimed_names(body: str, focus: QuestionFocus) -> list[str]:
    """The names a sentence gives as the answer to a name question (see module docstring).

    Args:
        body: the sentence without citations.
        focus: the analysed question (its entities and terms are not claims).
    """
    text = normalize_unicode(body).replace(EXTRACTIVE_PREFIX, " ")
    spec = FIELDS["issuer"]
    text = _after_label(text)  # "All AWS Services are sold by <name>": the name follows the label
    asked = {w for e in focus.entities for w in entity_words(e)} | set(entity_words(focus.question))
    out: list[str] = []
    for m in _CAPS_RUN_RE.finditer(text):
        run = m.group(1).strip(" .-'")
        for p in (*spec.strong, *spec.weak):  # "Sold By" / "Service Provider" label the name
            run = p.sub(" ", run).strip(" .-'")
        words = entity_words(run)
        if words and not set(words) <= asked:
            out.append(run)
    return list(dict.fromkeys(out))


def _after_label(text: str) -> str:
    """The text after its first issuer label ("sold by", "Service Provider:"), else all of it."""
    ends = [m.end() for p in FIELDS["issuer"].strong for m in p.finditer(text)]
    return text[min(ends):] if ends else text


def _has_words(line: str, words: list[str]) -> bool:
    low = normalize_unicode(line).casefold()
    compact = "".join(words)
    if len(compact) >= 4 and compact in re.sub(r"[^\w]", "", low):
        return True
    return all(re.search(r"(?<![^\W_])" + re.escape(w) + r"(?![^\W_])", low) for w in words)


def _name_line(line: str, words: list[str]) -> bool:
    """Is the line this name (a letterhead, an address-block line, "Sold By: <name>")? Its
    distinctive words, after a leading label and the issuer labels, are the name's words; a
    capitalised word inside a sentence ("Notes: Removed debris ...") is no name line."""
    rest = re.sub(r"^[^:]{0,30}:", " ", _after_label(line))  # "Sold By :", "ATTN:"
    for p in (*FIELDS["issuer"].strong, *FIELDS["issuer"].weak):
        rest = p.sub(" ", rest)
    have = entity_words(rest)
    return bool(have) and set(have) <= set(words) | {"www", "com"}


def name_stated(name: str, text: str) -> str | None:
    """None when the text states the name on a line of its own (`_name_line`) outside the
    recipient's block, else why not (in words).

    Args:
        name: a claimed name (`claimed_names`).
        text: a cited evidence item's text.
    """
    words = entity_words(name)
    lines = [ln for ln in normalize_unicode(text).splitlines() if ln.strip()]
    if not any(_has_words(ln, words) for ln in lines) and not _has_words(" ".join(lines), words):
        return f"does not name {name!r}"
    hits = [i for i, ln in enumerate(lines) if _has_words(ln, words) and _name_line(ln, words)]
    if not hits:
        return f"names {name!r} only inside other text, not as a name line or an issuer row"
    for i in hits:
        # The recipient's block: a "Bill To:" label before the name on its line, or on the line above.
        before = lines[i][:max(0, lines[i].casefold().find(words[0]))]
        if not (_RECIPIENT_RE.search(before) or (i > 0 and _RECIPIENT_RE.search(lines[i - 1]))):
            return None
    return f"names {name!r} only as the recipient (bill to / customer), not as the issuer"
