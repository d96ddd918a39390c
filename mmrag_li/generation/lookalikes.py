"""Fold look-alike characters so evidence cannot fake a delimiter with them.

`evidence.neutralize` must recognise ``</evidence>`` also when it is written with a zero-width
space or a soft hyphen inside (``</evi\u200bdence>``), with Cyrillic or Greek letters
(``</еvidence>``), or with full-width / angle-bracket look-alikes (``＜/evidence＞``,
``〈/evidence〉``): a model reads all of these as the same tag. `fold` maps text to a *skeleton* for
matching: per character NFKD (compatibility forms: full-width, ligatures), then format characters
(Unicode category Cf: zero-width, soft hyphen, bidi controls, tag characters) and combining marks
are dropped, and the Cyrillic/Greek/other confusables of Latin letters and of ``< > / | [ ]``
are mapped to ASCII. `sub_folded` runs a regular expression on the skeleton and replaces the
matching *original* spans, so text outside a match (Russian, Greek, accented words) is unchanged.
"""

from __future__ import annotations

import unicodedata
from typing import Callable, List, Match, Pattern, Tuple

# Confusables of the ASCII letters and punctuation our delimiters use (after NFKD), from
# Unicode's confusables.txt: Cyrillic, Greek, Armenian, small capitals, bracket look-alikes.
_MAP = {
    # lower case
    "а": "a", "ɑ": "a", "α": "a", "с": "c", "ϲ": "c", "ᴄ": "c", "ԁ": "d", "е": "e", "ҽ": "e",
    "г": "r", "һ": "h", "і": "i", "ι": "i", "ı": "i", "ɩ": "i", "ј": "j", "κ": "k", "к": "k",
    "ӏ": "l", "ǀ": "l", "ո": "n", "о": "o", "ο": "o", "օ": "o", "ᴏ": "o", "р": "p", "ρ": "p",
    "ⲣ": "p", "ԛ": "q", "զ": "q", "ѕ": "s", "ꜱ": "s", "υ": "u", "ս": "u", "ᴜ": "u", "ν": "v",
    "ѵ": "v", "ᴠ": "v", "ԝ": "w", "ѡ": "w", "ᴡ": "w", "х": "x", "χ": "x", "у": "y", "γ": "y",
    "ү": "y", "ᴢ": "z",
    # upper case
    "А": "A", "Α": "A", "В": "B", "Β": "B", "С": "C", "Ϲ": "C", "Е": "E", "Ε": "E", "Н": "H",
    "Η": "H", "І": "I", "Ι": "I", "Ӏ": "I", "Ј": "J", "К": "K", "Κ": "K", "М": "M", "Μ": "M",
    "Ν": "N", "О": "O", "Ο": "O", "Р": "P", "Ρ": "P", "Ԛ": "Q", "Ѕ": "S", "Т": "T", "Τ": "T",
    "Ԝ": "W", "Х": "X", "Χ": "X", "У": "Y", "Υ": "Y", "Ү": "Y", "Ζ": "Z",
    # brackets, slash, bar (the full-width forms are already ASCII after NFKD)
    "\u2329": "<", "\u3008": "<", "\u27e8": "<", "\u276e": "<", "\u276c": "<", "\u02c2": "<", "\u1438": "<",
    "\u29fc": "<", "\u232a": ">", "\u3009": ">", "\u27e9": ">", "\u276f": ">", "\u276d": ">", "\u02c3": ">",
    "\u1433": ">", "\u29fd": ">",
    "⁄": "/", "∕": "/", "⧸": "/", "╱": "/", "∣": "|", "│": "|", "⁅": "[", "⁆": "]",
}
# Invisible although not Cf: Hangul fillers, combining grapheme joiner.
_DROP = {"\u115f", "\u1160", "\u3164", "\uffa0", "\u034f"}
_DROP_CATEGORIES = {"Cf", "Mn", "Me", "Cc"}
_KEEP_CONTROLS = {"\n", "\r", "\t"}


def fold(text: str) -> Tuple[str, List[int]]:
    """(skeleton, index) where ``index[k]`` is the position in ``text`` of skeleton character k.

    Args:
        text: any text.
    """
    out: List[str] = []
    index: List[int] = []
    for i, ch in enumerate(text):
        if ch < "\x80":
            if ch >= " " or ch in _KEEP_CONTROLS:
                out.append(ch)
                index.append(i)
            continue
        if ch in _DROP:
            continue
        for c in unicodedata.normalize("NFKD", ch):
            if c in _DROP or unicodedata.category(c) in _DROP_CATEGORIES and c not in _KEEP_CONTROLS:
                continue
            out.append(_MAP.get(c, c))
            index.append(i)
    return "".join(out), index


def sub_folded(pattern: Pattern[str], repl: Callable[[Match[str]], str], text: str) -> str:
    """``pattern.sub(repl, text)`` where matching sees `fold` (text), and each match replaces the
    original span it came from; ``repl`` gets the match on the skeleton.

    Args:
        pattern: a compiled regular expression (written for plain ASCII delimiters).
        repl: match -> replacement text.
        text: the text to rewrite.
    """
    if text.isascii() and not any(c < " " and c not in _KEEP_CONTROLS for c in text):
        return pattern.sub(repl, text)
    skeleton, index = fold(text)
    out: List[str] = []
    pos = 0
    for m in pattern.finditer(skeleton):
        if m.end() == m.start():
            continue
        start, end = index[m.start()], index[m.end() - 1] + 1
        if start < pos:
            continue
        out.append(text[pos:start])
        out.append(repl(m))
        pos = end
    out.append(text[pos:])
    return "".join(out)


__all__ = ["fold", "sub_folded"]
