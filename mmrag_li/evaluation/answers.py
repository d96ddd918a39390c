"""End-to-end answer checks: does the answer contain the expected numbers and key entities, and
does a cited item contain the expected answer?

Normalisation reuses ``mmrag_li.generation.verify``: numbers compare by value (``1,939.00`` ==
``1939`` == ``1.939,00``), text by ``norm_text`` (case-folded, quotes/dashes unified, whitespace
collapsed). "Key entities" are the expected answer's words that are not numbers and not stop
words; each must occur (as a word) in the normalised answer.
"""

from __future__ import annotations

import re
from typing import Callable, Dict, Iterable, List, Sequence, Set

from mmrag_li.generation.verify import extract_numbers, norm_text

STOP = {"a", "an", "the", "of", "and", "or", "in", "on", "at", "to", "for", "is", "are", "was", "by", "with",
        "eur", "usd", "rs", "inr", "gbp", "chf"}
_WORD_RE = re.compile(r"[^\W\d_][\w\-&.]*", re.UNICODE)


def number_sets(text: str) -> List[Set[str]]:
    return [vals for _tok, vals in extract_numbers(text) if vals]


def entities(text: str) -> List[str]:
    words = [w.strip(".-") for w in _WORD_RE.findall(norm_text(text))]
    return list(dict.fromkeys(w for w in words if w and w not in STOP and len(w) > 1))


def contains_answer(candidate: str, expected: str) -> Dict[str, bool]:
    """Numbers of ``expected`` (by value) and its entities (as words) found in ``candidate``."""
    cand_vals: Set[str] = set().union(*number_sets(candidate)) if number_sets(candidate) else set()
    nums = number_sets(expected)
    numbers_ok = all(vals & cand_vals for vals in nums)
    cand_norm = " " + re.sub(r"[^\w&\-.]+", " ", norm_text(candidate)) + " "
    ents = entities(expected)
    entities_ok = all(re.search(r"(?<![\w])" + re.escape(e) + r"(?![\w])", cand_norm) for e in ents)
    return {"numbers_match": numbers_ok, "entities_match": entities_ok,
            "has_numbers": bool(nums), "has_entities": bool(ents)}


def check_answer(answer: str, expected: str, cited_assets: Sequence[str], asset_text: Callable[[str], str],
                 relevant_assets: Iterable[str]) -> Dict[str, object]:
    """One row of the answer report (see module docstring)."""
    m = contains_answer(answer, expected)
    cited_ok = False
    for aid in cited_assets:
        c = contains_answer(asset_text(aid), expected)
        if c["numbers_match"] and c["entities_match"]:
            cited_ok = True
            break
    rel = set(relevant_assets)
    return {"answer": answer, "numbers_match": m["numbers_match"], "entities_match": m["entities_match"],
            "exact": bool(m["numbers_match"] and m["entities_match"]),
            "citations": list(cited_assets), "citation_contains_answer": cited_ok,
            "citation_relevant": any(a in rel for a in cited_assets)}
