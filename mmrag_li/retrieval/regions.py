"""Where a match is: query -> lines, words, tiles and pictures as normalised boxes, plus a snippet.

One region shape everywhere (search, query, API, web page; see DESIGN.md "Regions")::

    {"page": int | None, "bbox": [x0, y0, x1, y1], "text": str,
     "kind": "ocr_line" | "ocr_word" | "text_span" | "tile" | "image", "score": float}

``bbox`` is normalised to 0-1 of the page or image width/height, origin top-left. Sources:

* OCR nodes (``words`` metadata: text, pixel ``bbox`` of the OCR'd image, ``line`` index) ->
  ``ocr_line`` regions for lines that hold query terms and ``ocr_word`` regions for the words;
* PDF text-layer chunks (``lines`` metadata: text + box in PDF points, ``page_width_pt`` /
  ``page_height_pt``) -> ``text_span`` regions;
* a tiling crop that matched an image retriever -> a ``tile`` region (its pixel ``bbox``);
* otherwise the picture itself (an embedded PDF image's box, or the whole image/page) -> ``image``.

Matching is lexical: query terms (casefolded words, a plural ``s`` dropped, stop words ignored
when other words remain) are looked up in each line; a line's score is ``0.75 * weighted share of
the terms it holds``, ``+ 0.25`` when it also holds the query as one contiguous phrase. A term's
weight is ``log(1 + lines / lines holding it)`` over the lines searched (a word on every line of a
table page says little), doubled for numbers. The ``snippet`` is the best line(s) with the query terms marked «like this».
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from mmrag_li.schema import CAPTION, CROP, IMAGE, OCR, PAGE, TEXT

Box = Sequence[float]
REGION_KINDS = ("ocr_line", "ocr_word", "text_span", "tile", "image")
MARK_OPEN, MARK_CLOSE = "«", "»"
MAX_LINES = 3
MAX_WORDS = 8
SNIPPET_CHARS = 240
_STOP = frozenset("""a an and are as at be by can do does for from has have how i in is it its of on or
that the their there this to was were what when where which who why with you your""".split())
_WORD = re.compile(r"\w+", re.UNICODE)


# ---- converters -------------------------------------------------------------------------------------
def _clamp(v: float) -> float:
    return 0.0 if v < 0 else 1.0 if v > 1 else v


def _ordered(b: Box) -> Tuple[float, float, float, float]:
    x0, y0, x1, y1 = (float(c) for c in b)
    return min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)


def pixel_box_to_norm(bbox: Box, width: float, height: float) -> List[float]:
    """A pixel box ``[x0, y0, x1, y1]`` (origin top-left) -> 0-1 of the image, clamped.

    Args:
        bbox: the box in pixels of an image ``width`` x ``height``.
        width: the image width in pixels (> 0).
        height: the image height in pixels (> 0).
    """
    if not width or not height:
        raise ValueError("pixel_box_to_norm needs the image width and height")
    x0, y0, x1, y1 = _ordered(bbox)
    return [_clamp(x0 / width), _clamp(y0 / height), _clamp(x1 / width), _clamp(y1 / height)]


def norm_to_pixel_box(bbox: Box, width: int, height: int) -> List[int]:
    """A normalised box -> whole pixels of an image ``width`` x ``height`` (inverse of
    :func:`pixel_box_to_norm` up to rounding).

    Args:
        bbox: the box, 0-1, origin top-left.
        width: the image width in pixels.
        height: the image height in pixels.
    """
    x0, y0, x1, y1 = _ordered(bbox)
    return [int(round(x0 * width)), int(round(y0 * height)), int(round(x1 * width)), int(round(y1 * height))]


def pdf_box_to_norm(bbox: Box, page_width: float, page_height: float, origin: str = "top-left") -> List[float]:
    """A box in PDF points -> 0-1 of the page, origin top-left.

    PyMuPDF already measures from the top-left corner (``origin="top-left"``); PDF user space and
    many other tools (Docling, pdfminer) measure from the bottom-left (``origin="bottom-left"``).

    Args:
        bbox: ``[x0, y0, x1, y1]`` in points.
        page_width: page width in points (> 0).
        page_height: page height in points (> 0).
        origin: "top-left" or "bottom-left" (where y = 0 is in ``bbox``).
    """
    if not page_width or not page_height:
        raise ValueError("pdf_box_to_norm needs the page width and height in points")
    x0, y0, x1, y1 = _ordered(bbox)
    if origin == "bottom-left":
        y0, y1 = page_height - y1, page_height - y0
    elif origin != "top-left":
        raise ValueError(f"origin={origin!r}: 'top-left' or 'bottom-left'")
    return [_clamp(x0 / page_width), _clamp(y0 / page_height), _clamp(x1 / page_width), _clamp(y1 / page_height)]


def norm_to_pdf_box(bbox: Box, page_width: float, page_height: float, origin: str = "top-left") -> List[float]:
    """A normalised box -> PDF points (inverse of :func:`pdf_box_to_norm`).

    Args:
        bbox: the box, 0-1, origin top-left.
        page_width: page width in points.
        page_height: page height in points.
        origin: the origin of the returned box, "top-left" or "bottom-left".
    """
    x0, y0, x1, y1 = _ordered(bbox)
    out = [x0 * page_width, y0 * page_height, x1 * page_width, y1 * page_height]
    if origin == "bottom-left":
        out[1], out[3] = page_height - out[3], page_height - out[1]
    elif origin != "top-left":
        raise ValueError(f"origin={origin!r}: 'top-left' or 'bottom-left'")
    return out


def union(boxes: Iterable[Box]) -> Optional[List[float]]:
    """The smallest box holding all ``boxes`` (None for none).

    Args:
        boxes: boxes in one coordinate system.
    """
    bs = [_ordered(b) for b in boxes]
    if not bs:
        return None
    return [min(b[0] for b in bs), min(b[1] for b in bs), max(b[2] for b in bs), max(b[3] for b in bs)]


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes in the same coordinates (0 when disjoint).

    Args:
        a: first box.
        b: second box.
    """
    ax0, ay0, ax1, ay1 = _ordered(a)
    bx0, by0, bx1, by1 = _ordered(b)
    inter = max(0.0, min(ax1, bx1) - max(ax0, bx0)) * max(0.0, min(ay1, by1) - max(ay0, by0))
    total = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
    return inter / total if total > 0 else 0.0


# ---- lexical matching -------------------------------------------------------------------------------
def _norm(token: str) -> str:
    t = token.casefold()
    if len(t) > 3 and t.endswith("s") and not t.endswith("ss") and not t[-2].isdigit():
        t = t[:-1]
    return t


def query_terms(text: str) -> List[str]:
    """The distinct normalised terms of ``text`` (stop words dropped unless nothing else is left).

    Args:
        text: a query, a claim, any text.
    """
    toks = [_norm(t) for t in _WORD.findall(text or "")]
    kept = [t for t in toks if t not in _STOP] or toks
    return list(dict.fromkeys(kept))


def _weight(term: str) -> float:
    return 2.0 if any(c.isdigit() for c in term) else 1.0


def line_score(text: str, terms: Sequence[str], phrase: Sequence[str] = (),
               weights: Optional[Dict[str, float]] = None) -> float:
    """How well one line matches: 0.75 * weighted share of ``terms`` it holds, + 0.25 when it
    holds ``phrase`` (normalised tokens) contiguously. 0..1.

    Args:
        text: the line.
        terms: from :func:`query_terms`.
        phrase: the query's normalised tokens in order (empty: no phrase bonus).
        weights: term -> weight (default: numbers 2, words 1).
    """
    if not terms:
        return 0.0
    weight = (lambda t: weights.get(t, _weight(t))) if weights else _weight
    toks = [_norm(t) for t in _WORD.findall(text or "")]
    have = set(toks)
    total = sum(weight(t) for t in terms)
    share = sum(weight(t) for t in terms if t in have) / total
    if share == 0:
        return 0.0
    bonus = 0.0
    n = len(phrase)
    if n >= 2 and any(toks[i:i + n] == list(phrase) for i in range(len(toks) - n + 1)):
        bonus = 0.25
    return round(min(1.0, 0.75 * share + bonus), 4)


def mark_terms(text: str, terms: Sequence[str], left: str = MARK_OPEN, right: str = MARK_CLOSE) -> str:
    """``text`` with every word that is one of ``terms`` wrapped in «…» (a number whose parts are all
    marked, such as 1,939.00, is marked whole).

    Args:
        text: the text to mark.
        terms: normalised terms (:func:`query_terms`).
        left: opening mark.
        right: closing mark.
    """
    wanted = set(terms)
    out = _WORD.sub(lambda m: f"{left}{m.group(0)}{right}" if _norm(m.group(0)) in wanted else m.group(0), text or "")
    glue = re.compile(r"(?<=\d)" + re.escape(right) + r"([.,:/'-])" + re.escape(left) + r"(?=\d)")
    return glue.sub(r"\1", out)


# ---- lines with boxes -------------------------------------------------------------------------------
@dataclass
class Line:
    """One line of a page or image with its normalised box.

    Args:
        text: the line's text.
        bbox: normalised box (None when the source has no box).
        kind: "ocr_line" or "text_span" (or "text" for box-less lines).
        page: the page, if paged.
        words: ``(text, normalised box)`` of its words (OCR lines only).
        score: match score (set by :func:`match_lines`).
    """

    text: str
    bbox: Optional[List[float]]
    kind: str
    page: Optional[int] = None
    words: List[Tuple[str, List[float]]] = field(default_factory=list)
    score: float = 0.0


def _ocr_lines(node: Any) -> List[Line]:
    meta = node.metadata or {}
    words = meta.get("words") or []
    w, h = meta.get("width"), meta.get("height")
    if not words or not w or not h:
        return []
    groups: Dict[Any, List[Dict[str, Any]]] = {}
    prev: Optional[Dict[str, Any]] = None
    index = 0
    for wd in words:
        if "line" in wd:
            key = wd["line"]
        else:  # older stores: a new line starts when a word does not sit beside the previous one
            if prev is not None:
                py0, py1 = prev["bbox"][1], prev["bbox"][3]
                cy = (wd["bbox"][1] + wd["bbox"][3]) / 2
                if not (py0 <= cy <= py1) or wd["bbox"][0] < prev["bbox"][0]:
                    index += 1
            key = index
        groups.setdefault(key, []).append(wd)
        prev = wd
    out = []
    for ws in groups.values():
        try:
            boxes = [pixel_box_to_norm(x["bbox"], w, h) for x in ws]
        except (KeyError, TypeError, ValueError):
            continue
        out.append(Line(" ".join(str(x.get("text", "")) for x in ws), union(boxes), "ocr_line", meta.get("page"),
                        [(str(x.get("text", "")), b) for x, b in zip(ws, boxes)]))
    return out


def _text_layer_lines(node: Any) -> List[Line]:
    meta = node.metadata or {}
    pw, ph = meta.get("page_width_pt"), meta.get("page_height_pt")
    out = []
    for ln in meta.get("lines") or []:
        try:
            box = pdf_box_to_norm(ln["bbox"], pw, ph) if pw and ph else None
        except (KeyError, TypeError, ValueError):
            box = None
        if box is not None and ln.get("text"):
            out.append(Line(str(ln["text"]), box, "text_span", meta.get("page")))
    return out


def node_lines(node: Any) -> List[Line]:
    """The lines of one node with normalised boxes: OCR lines from its ``words``, text-layer lines
    from its ``lines`` metadata; [] for nodes without boxes.

    Args:
        node: a LlamaIndex node (or ``NodeWithScore``).
    """
    node = getattr(node, "node", node)
    mod = (node.metadata or {}).get("modality")
    if mod == OCR:
        return _ocr_lines(node)
    if (node.metadata or {}).get("lines"):
        return _text_layer_lines(node)
    return []


def _plain_lines(node: Any) -> List[Line]:
    """Box-less lines (captions, text files): the node's lines, long ones cut into sentences."""
    text = (getattr(node, "text", "") or "").strip()
    out = []
    for raw in text.splitlines():
        raw = raw.strip()
        parts = re.split(r"(?<=[.!?])\s+", raw) if len(raw) > SNIPPET_CHARS else [raw]
        out += [Line(p, None, "text", (node.metadata or {}).get("page")) for p in parts if p]
    return out


def _distinct(lines: Sequence[Line]) -> List[Line]:
    """Lines without repeats (a line can sit in two overlapping text chunks of one page)."""
    seen = set()
    out = []
    for ln in lines:
        key = (ln.text, ln.page, tuple(ln.bbox) if ln.bbox else None)
        if key not in seen:
            seen.add(key)
            out.append(ln)
    return out


def match_lines(lines: Sequence[Line], query: str) -> List[Line]:
    """``lines`` that hold query terms, scored (:func:`line_score`), best first (ties: reading order).

    Args:
        lines: candidate lines.
        query: the query (or claim) text.
    """
    terms = query_terms(query)
    phrase = [_norm(t) for t in _WORD.findall(query or "")]
    tokens = [{_norm(t) for t in _WORD.findall(ln.text or "")} for ln in lines]
    n = len(lines)
    weights = {t: _weight(t) * math.log(1 + n / max(1, sum(t in tk for tk in tokens))) for t in terms}
    scored = []
    for i, ln in enumerate(lines):
        s = line_score(ln.text, terms, phrase, weights)
        if s > 0:
            ln.score = s
            scored.append((i, ln))
    scored.sort(key=lambda t: (-t[1].score, t[0]))
    return [ln for _i, ln in scored]


# ---- regions ----------------------------------------------------------------------------------------
def region(page: Optional[int], bbox: Box, text: str, kind: str, score: float) -> Dict[str, Any]:
    """One region in the DESIGN shape (bbox rounded to 4 decimals).

    Args:
        page: the page (None for images).
        bbox: normalised box.
        text: what is there.
        kind: one of :data:`REGION_KINDS`.
        score: how well it matches.
    """
    return {"page": page, "bbox": [round(float(c), 4) for c in bbox], "text": text, "kind": kind,
            "score": round(float(score), 4)}


def _unique(nodes: Iterable[Any]) -> List[Tuple[Any, Optional[float]]]:
    seen: Dict[str, Tuple[Any, Optional[float]]] = {}
    for n in nodes:
        node, score = getattr(n, "node", n), getattr(n, "score", None)
        prev = seen.get(node.node_id)
        if prev is None or (score or 0.0) > (prev[1] or 0.0):
            seen[node.node_id] = (node, score)
    return list(seen.values())


def _picture_region(node: Any, score: Optional[float]) -> Optional[Dict[str, Any]]:
    meta = node.metadata or {}
    mod, page = meta.get("modality"), meta.get("page")
    box = meta.get("bbox")
    try:
        if mod == CROP and box and meta.get("width") and meta.get("height"):
            return region(page, pixel_box_to_norm(box, meta["width"], meta["height"]),
                          f"tile {meta.get('tile_index', '')}".strip(), "tile", score or 0.0)
        if mod == IMAGE and box and meta.get("bbox_units") == "pt" and meta.get("page_width_pt"):
            return region(page, pdf_box_to_norm(box, meta["page_width_pt"], meta["page_height_pt"]),
                          "embedded image", "image", score or 0.0)
    except (TypeError, ValueError):
        pass
    if mod in (IMAGE, PAGE, CROP):
        return region(page, [0, 0, 1, 1], "page" if mod == PAGE else "image", "image", score or 0.0)
    return None


def regions_for_nodes(nodes: Iterable[Any], query: str, page: Optional[int] = None,
                      image_match: bool = True) -> List[Dict[str, Any]]:
    """Regions of ``nodes`` (nodes or ``NodeWithScore`` s of one hit) for ``query``, best first.

    Lines (OCR / text layer) holding query terms give ``ocr_line`` / ``text_span`` regions (at most
    :data:`MAX_LINES`, those scoring at least half the best), plus ``ocr_word`` regions for their
    matching words; the best-scoring picture node (a tile, an embedded image, the page or image) gives
    a ``tile`` / ``image`` region when ``image_match`` or when nothing matched in words.

    Args:
        nodes: the hit's nodes (any order; duplicates are fine).
        query: the query text.
        page: keep only nodes of this page (None: all).
        image_match: whether an image retriever found the hit (then its best picture is a region).
    """
    items = [(n, s) for n, s in _unique(nodes) if page is None or (n.metadata or {}).get("page") in (page, None)]
    lines = _distinct([ln for n, _s in items for ln in node_lines(n)])
    found = match_lines(lines, query)
    out: List[Dict[str, Any]] = []
    if found:
        keep = [ln for ln in found if ln.score >= 0.5 * found[0].score][:MAX_LINES]
        terms = set(query_terms(query))
        words = []
        for ln in keep:
            out.append(region(ln.page, ln.bbox, ln.text, ln.kind, ln.score))
            words += [region(ln.page, b, t, "ocr_word", ln.score) for t, b in ln.words if _norm(t) in terms]
        out += words[:MAX_WORDS]
    pictures = [(n, s) for n, s in items if (n.metadata or {}).get("modality") in (IMAGE, PAGE, CROP)]
    if pictures and (image_match or not out):
        node, score = max(pictures, key=lambda t: (t[1] or 0.0, (t[0].metadata or {}).get("modality") == CROP))
        pic = _picture_region(node, score)
        if pic is not None:
            out.append(pic)
    return out


def snippet_for_nodes(nodes: Iterable[Any], query: str, page: Optional[int] = None, max_lines: int = 2) -> str:
    """The best-matching line(s) of ``nodes`` with query terms marked «…»; without a match the start
    of the most relevant text (caption, OCR, text) unmarked; "" for nodes without text.

    Args:
        nodes: the hit's nodes.
        query: the query text.
        page: keep only nodes of this page (None: all).
        max_lines: how many lines at most (joined with " … ").
    """
    items = [n for n, _s in _unique(nodes) if page is None or (n.metadata or {}).get("page") in (page, None)]
    texts = [n for n in items if (n.metadata or {}).get("modality") in (OCR, TEXT, CAPTION, None)]
    lines: List[Line] = []
    for n in texts:
        lines += node_lines(n) or _plain_lines(n)
    if not lines:  # a page/image node carrying its text (OCR or text layer) as content
        for n in items:
            lines += _plain_lines(n)
    found = match_lines(_distinct(lines), query)
    terms = query_terms(query)
    if found:
        chosen = [ln for ln in found if ln.score >= 0.5 * found[0].score][:max_lines]
        text = " … ".join(dict.fromkeys(" ".join(ln.text.split()) for ln in chosen))
        return _cut(mark_terms(text, terms))
    first = next((ln.text for ln in lines if ln.text.strip()), "")
    return _cut(" ".join(first.split()))


def _cut(text: str) -> str:
    return text if len(text) <= SNIPPET_CHARS else text[: SNIPPET_CHARS - 1].rstrip() + "…"


def regions_for(hit: Any, query: str, nodes: Optional[Iterable[Any]] = None) -> List[Dict[str, Any]]:
    """Regions of one fused hit (an :class:`~mmrag_li.retrieval.hits.AssetHit`) for ``query``.

    Args:
        hit: the hit (``nodes``, ``page``, ``scores``: an image retriever in ``scores`` means the
            picture matched, so its tile/picture is a region).
        query: the query text.
        nodes: the nodes to look in (default ``hit.nodes``; fusion passes every hit of the page plus
            its stored OCR/text).
    """
    image_match = any(k in (hit.scores or {}) for k in ("image", "image2image"))
    return regions_for_nodes(list(nodes if nodes is not None else hit.nodes), query, hit.page, image_match)


def snippet_for(hit: Any, query: str, nodes: Optional[Iterable[Any]] = None) -> str:
    """The snippet of one fused hit (see :func:`snippet_for_nodes`).

    Args:
        hit: the hit.
        query: the query text.
        nodes: the nodes to look in (default ``hit.nodes``).
    """
    return snippet_for_nodes(list(nodes if nodes is not None else hit.nodes), query, hit.page)


__all__ = ["Line", "MARK_CLOSE", "MARK_OPEN", "REGION_KINDS", "iou", "line_score", "mark_terms", "match_lines",
           "node_lines", "norm_to_pdf_box", "norm_to_pixel_box", "pdf_box_to_norm", "pixel_box_to_norm",
           "query_terms", "region", "regions_for", "regions_for_nodes", "snippet_for", "snippet_for_nodes", "union"]
