"""Section headings of a PDF's text layer, so every text chunk knows the section it sits in.

A table page such as "A  Principal Node Attributes" / "Name Default Values" / "fontsize 14 ..."
says *node* only in its heading; a chunk that continues the table, or a question that names the
section's subject ("the default fontsize for nodes"), needs that heading. `PDFReader` stores it as
the chunk's ``section`` metadata (not embedded; shown to the LLM; BM25 gives a bonus for query
terms found in it, see `mmrag_li.retrieval.bm25`).

A heading is a short text-layer line (at most :data:`MAX_WORDS` words, with a word of three or
more letters) set larger than the page's body text: at least :data:`BOLD_RATIO` x the body size
and bold, or at least :data:`LARGE_RATIO` x without bold (a title). Body size = the font size that
carries most characters on the pages read so far (so a figure page set in small type does not
make its labels headings). Labels inside figures (regular weight, moderately larger) and
running headers (body size) are not headings. A line's section is the last heading above it on its
page, else the last heading of an earlier page; a chunk's is the one most of its lines are under
(:class:`SectionTracker`).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, List, Optional, Sequence, Tuple

__all__ = ["BOLD_RATIO", "LARGE_RATIO", "MAX_WORDS", "page_headings", "SectionTracker"]

BOLD_RATIO = 1.15
LARGE_RATIO = 1.4
MAX_WORDS = 12
MAX_CHARS = 120
_BOLD_FONT = re.compile(r"bold|black|heavy|semibold|demi|medi", re.IGNORECASE)
_WORDY = re.compile(r"[^\W\d_]{3,}")


def _bold(span: dict) -> bool:
    return bool(int(span.get("flags", 0)) & 16) or bool(_BOLD_FONT.search(str(span.get("font", ""))))


def _page_lines(page: Any) -> Tuple[List[Tuple[float, float, float, str, float, bool]], Counter]:
    """Text lines ``(y0, y1, x0, text, size, bold)`` of a page and the characters set in each size."""
    import pymupdf  # lazy, as in the reader

    rot = page.rotation_matrix if getattr(page, "rotation", 0) else None
    lines = []
    sizes: Counter = Counter()
    for block in page.get_text("dict", sort=True).get("blocks", []):
        for line in block.get("lines", []) if block.get("type", 0) == 0 else []:
            spans = [s for s in line.get("spans", []) if str(s.get("text", "")).strip()]
            if not spans:
                continue
            for sp in spans:
                sizes[round(float(sp.get("size", 0)), 1)] += len(str(sp["text"]).strip())
            r = pymupdf.Rect(line["bbox"])
            r = r * rot if rot is not None else r
            text = " ".join("".join(str(sp.get("text", "")) for sp in line["spans"]).split())
            lines.append((r.y0, r.y1, r.x0, text, max(float(sp.get("size", 0)) for sp in spans),
                          all(_bold(sp) for sp in spans)))
    return lines, sizes


def _headings(lines: List[Tuple[float, float, float, str, float, bool]], body: float) -> List[Tuple[float, str]]:
    cands = [ln for ln in lines if ln[4] >= BOLD_RATIO * body and (ln[5] or ln[4] >= LARGE_RATIO * body)]
    rows: List[List[Any]] = []  # [y0, y1, size, [(x0, text)]]
    for y0, y1, x0, text, size, _b in sorted(cands, key=lambda t: ((t[0] + t[1]) / 2, t[2])):
        cy = (y0 + y1) / 2
        if rows and rows[-1][0] <= cy <= rows[-1][1]:
            rows[-1][3].append((x0, text))
            rows[-1][1] = max(rows[-1][1], y1)
        elif rows and abs(rows[-1][2] - size) < 0.2 and 0 <= y0 - rows[-1][1] < 0.6 * size:
            rows[-1][3].append((float("inf"), text))  # the heading's next row: keep it after the first
            rows[-1][1] = y1
        else:
            rows.append([y0, y1, size, [(x0, text)]])
    out = []
    for y0, _y1, _size, parts in rows:
        text = " ".join(t for _x, t in sorted(parts, key=lambda p: p[0]))
        if len(text.split()) <= MAX_WORDS and len(text) <= MAX_CHARS and _WORDY.search(text):
            out.append((round(float(y0), 1), text))
    return out


def page_headings(page: Any, body_size: Optional[float] = None) -> List[Tuple[float, str]]:
    """The headings of one PyMuPDF page as ``(y0, text)`` in reading order (y in PDF points, origin
    top-left, rotation applied); pieces on one row are joined, and a heading set on two consecutive
    rows of one size becomes one.

    Args:
        page: a ``pymupdf.Page``.
        body_size: the document's body font size (default: the page's most used size).
    """
    lines, sizes = _page_lines(page)
    if not sizes:
        return []
    body = body_size or sizes.most_common(1)[0][0]
    return _headings(lines, body) if body > 0 else []


class SectionTracker:
    """The section headings of one document as its pages are read in order.

    Call :meth:`start_page` for each page (after any redaction of its text), then :meth:`at` for
    the section at a height of that page.
    """

    def __init__(self) -> None:
        self.current = ""  # the last heading seen so far (on earlier pages or this one)
        self.body_size: Optional[float] = None  # the most used size of the pages read so far
        self._carried = ""
        self._heads: List[Tuple[float, str]] = []
        self._sizes: Counter = Counter()

    def start_page(self, page: Optional[Any]) -> None:
        """Read the headings of the next page (None or a page without text: no headings).

        Args:
            page: a ``pymupdf.Page`` or None.
        """
        self._carried = self.current
        self._heads = []
        try:
            lines, sizes = _page_lines(page) if page is not None else ([], Counter())
        except Exception:  # a heading is a hint; a page whose fonts cannot be read just has none
            lines, sizes = [], Counter()
        self._sizes.update(sizes)
        if self._sizes:
            size = self._sizes.most_common(1)[0][0]  # over the pages read so far
            self.body_size = size if size > 0 else self.body_size
        if lines and self.body_size:
            self._heads = _headings(lines, self.body_size)
        if self._heads:
            self.current = self._heads[-1][1]

    def at(self, y: Optional[float]) -> str:
        """The section at height ``y`` (PDF points from the top) of the current page; None = the
        page's last heading, or the carried one; "" before the first heading of the document.

        Args:
            y: a height on the page (e.g. the top of a chunk's first line), or None.
        """
        if y is None:
            return self.current
        above = [t for y0, t in self._heads if y0 <= y + 0.5]
        return above[-1] if above else self._carried

    def of_lines(self, ys: Sequence[float]) -> str:
        """The section of a chunk of the current page whose lines start at heights ``ys``: the one in
        effect for most of them (a running header above the page's heading does not decide; ties go
        to the later section); :meth:`at` (None) without lines.

        Args:
            ys: the top of each of the chunk's lines, in PDF points from the top of the page.
        """
        if not ys:
            return self.at(None)
        votes = Counter(self.at(y) for y in ys)
        order = {t: i for i, t in enumerate([self._carried] + [t for _y, t in self._heads])}
        return max(votes, key=lambda t: (votes[t], order.get(t, -1)))
