"""RapidOCR: PP-OCRv4 ONNX models shipped in ``rapidocr_onnxruntime``. It returns text *lines*;
word boxes come from per-character positions (or the line box split by character counts) and
word spaces PP-OCR drops are put back from the line's pixels.
``ocr.kind: rapidocr`` (options: :class:`mmrag_li.config.RapidOCRConfig`)."""

from __future__ import annotations

import importlib.metadata
import re
import threading
from typing import List, NamedTuple, Optional, Sequence, Tuple

from PIL import Image

from ...errors import ModelUnavailableError, OCRError
from ..types import OCRResult, OCRWord
from .common import map_back, prepare_image, rotate_cw

__all__ = ["RapidOCREngine", "split_line_into_words", "space_allowed"]


def split_line_into_words(text: str, box: Sequence[float], conf: float, line: int) -> List[OCRWord]:
    """Word boxes for a text line: the line's box cut proportionally to character positions."""
    x0, y0, x1, y1 = box
    n = len(text)
    if n == 0:
        return []
    per_char = (x1 - x0) / n
    out = []
    for m in re.finditer(r"\S+", text):
        wx0 = x0 + m.start() * per_char
        wx1 = x0 + m.end() * per_char
        out.append(OCRWord(text=m.group(0), conf=conf, bbox=(int(round(wx0)), int(round(y0)),
                                                              int(round(wx1)), int(round(y1))), line=line))
    return out


class _ClsSpy:
    """Wraps RapidOCR's text classifier and remembers its last labels ('0' / '180')."""

    def __init__(self, inner):
        self.inner = inner
        self.last = None

    def __call__(self, imgs):
        out = self.inner(imgs)
        try:
            self.last = out[1]
        except Exception:  # pragma: no cover - unexpected return shape
            self.last = None
        return out

    def __getattr__(self, name):
        return getattr(self.inner, name)


class RapidOCREngine:
    """PP-OCRv4 (Chinese + English models) through ``rapidocr_onnxruntime``; loads once."""

    name = "rapidocr"

    def __init__(self, min_conf: float = 40.0, detect_orientation: bool = True, lang: str = "ch+en",
                 threads: int = -1, recover_spaces: bool = True, **rapid_kwargs):
        try:
            from rapidocr_onnxruntime import RapidOCR
        except ImportError as exc:  # pragma: no cover - dependency of the package
            raise ModelUnavailableError("rapidocr_onnxruntime is not installed (pip install rapidocr-onnxruntime)") from exc
        self.min_conf = float(min_conf)
        self.detect_orientation = detect_orientation
        self.lang = lang
        self.recover_spaces = recover_spaces
        self.word_boxes = True  # per-character positions: word boxes + space recovery
        try:
            pkg_version = importlib.metadata.version("rapidocr-onnxruntime")
        except importlib.metadata.PackageNotFoundError:  # pragma: no cover
            pkg_version = "unknown"
        self.version = f"{pkg_version} (PP-OCRv4)"
        kwargs = dict(rapid_kwargs)
        if threads and threads > 0:
            kwargs.setdefault("intra_op_num_threads", threads)
        self._lock = threading.Lock()  # onnxruntime sessions are shared; keep calls serial
        self._engine = RapidOCR(**kwargs)
        # Spy on the 0/180 line classifier so that upside-down pages can be detected.
        self._cls_spy: Optional[_ClsSpy] = None
        if hasattr(self._engine, "text_cls"):
            self._cls_spy = _ClsSpy(self._engine.text_cls)
            self._engine.text_cls = self._cls_spy

    def __repr__(self) -> str:
        return f"RapidOCREngine(version={self.version!r})"

    def _run(self, image: Image.Image) -> Tuple[List[_Line], bool]:
        """One RapidOCR pass -> (lines, upside_down): most lines flipped by the 0/180 classifier."""
        with self._lock:
            if self._cls_spy is not None:
                self._cls_spy.last = None
            try:
                raw, _ = self._engine(image, return_word_box=self.word_boxes)
            except TypeError:  # a RapidOCR without return_word_box
                raw, _ = self._engine(image)
            cls = self._cls_spy.last if self._cls_spy is not None else None
        lines = []
        for item in raw or []:
            poly, text, score = item[0], item[1], item[2]
            char_polys = item[3] if len(item) > 4 else None
            chars = item[4] if len(item) > 4 else None
            lines.append(_Line(self._axis_box(poly), text or "", float(score), char_polys, chars))
        flipped = 0
        if cls:
            flipped = sum(1 for label, score in cls if str(label) == "180" and float(score) >= 0.9)
        return lines, bool(cls) and flipped * 2 > len(cls)

    @staticmethod
    def _axis_box(poly) -> Tuple[float, float, float, float]:
        xs = [float(p[0]) for p in poly]
        ys = [float(p[1]) for p in poly]
        return (min(xs), min(ys), max(xs), max(ys))

    @staticmethod
    def _looks_sideways(lines: List[_Line]) -> bool:
        tall = wide = 0
        for ln in lines:
            x0, y0, x1, y1 = ln.box
            if len(ln.text) < 3:
                continue
            if (y1 - y0) > 1.5 * (x1 - x0):
                tall += 1
            else:
                wide += 1
        return tall > wide

    def recognize(self, image: Image.Image) -> OCRResult:
        src = prepare_image(image).convert("RGB")
        width, height = src.size
        angle = 0
        try:
            result, upside_down = self._run(src)
            if self.detect_orientation and result:
                if self._looks_sideways(result):
                    # Text runs vertically: turn a quarter; the line classifier tells 90 from 270.
                    # (RapidOCR reads tall crops sideways too, with similar scores but wrong line
                    # order and word boxes: prefer the turned page unless it reads clearly worse.)
                    rotated, r_upside_down = self._run(rotate_cw(src, 90))
                    if sum(ln.score for ln in rotated) >= 0.9 * sum(ln.score for ln in result):
                        result, upside_down, angle = rotated, r_upside_down, 90
                if upside_down:
                    # Lines were read after flipping each crop, but reading order and word
                    # positions are still upside down: recognise the turned page instead.
                    angle = (angle + 180) % 360
                    result, _ = self._run(rotate_cw(src, angle))
        except OCRError:
            raise
        except Exception as exc:  # onnxruntime errors on odd inputs
            raise OCRError(f"rapidocr failed: {exc}") from exc

        gray = None
        if self.recover_spaces:
            import numpy as np

            gray = np.asarray(rotate_cw(src, angle).convert("L"))
        words: List[OCRWord] = []
        lines: List[str] = []
        for ln in result:
            conf = round(ln.score * 100.0, 2)
            if not ln.text.strip() or conf < self.min_conf:
                continue
            idx = len(lines)
            text, line_words = _words_of_line(ln, conf, idx, gray)
            for w in line_words:  # boxes were found in the working (upright) frame
                w.bbox = map_back(w.bbox, 1.0, angle, width, height)
                words.append(w)
            lines.append(text)
        return OCRResult(words=words, lines=lines, engine=self.name, engine_version=self.version,
                         lang=self.lang, orientation=angle, width=width, height=height)


class _Line(NamedTuple):
    box: Tuple[float, float, float, float]  # axis-aligned, working frame
    text: str
    score: float  # 0-1
    char_polys: Optional[list]  # per-character quadrilaterals (RapidOCR return_word_box)
    chars: Optional[list]


def _ink_gaps(gray, box: Sequence[float]) -> List[Tuple[float, float]]:
    """Blank column runs wide enough to be word spaces inside a text line (x in the working frame)."""
    import numpy as np

    h_img, w_img = gray.shape[:2]
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    x0, x1 = max(0, x0), min(w_img, x1)
    # The detector's box is padded; keep the middle band so neighbouring lines do not leak in.
    pad = int((y1 - y0) * 0.05)
    y0, y1 = max(0, y0 + pad), min(h_img, y1 - pad)
    if x1 - x0 < 4 or y1 - y0 < 4:
        return []
    crop = gray[y0:y1, x0:x1].astype(np.int16)
    lo, hi = int(crop.min()), int(crop.max())
    if hi - lo < 40:
        return []
    bg = int(np.median(crop))
    ink = np.abs(crop - bg) > (hi - lo) * 0.35
    rows = np.nonzero(ink.any(axis=1))[0]
    cols = ink.any(axis=0)
    nz = np.nonzero(cols)[0]
    if len(nz) == 0 or len(rows) == 0:
        return []
    ink_h = rows[-1] - rows[0] + 1
    runs: List[Tuple[int, int]] = []
    start = None
    for cx in range(nz[0], nz[-1] + 1):
        if not cols[cx]:
            start = cx if start is None else start
        elif start is not None:
            runs.append((start, cx))
            start = None
    if not runs:
        return []
    # Letter gaps and word gaps form two clusters; split at the largest jump between sorted
    # widths when it is a clear one (measured: letters <= ~0.3, words >= ~0.3-0.4 of ink height,
    # depending on font and on whether the line has descenders).
    widths = sorted(e - s0 for s0, e in runs)
    if len(widths) == 1:
        thr = 0.36 * ink_h
    else:
        k = max(range(len(widths) - 1), key=lambda i: widths[i + 1] - widths[i])
        lo_w, hi_w = widths[k], widths[k + 1]
        if hi_w >= 0.25 * ink_h and hi_w >= 1.4 * max(lo_w, 1):
            thr = (lo_w + hi_w) / 2.0
        elif widths[0] >= 0.36 * ink_h:  # every gap is a word gap
            thr = widths[0]
        else:
            return []
    gaps = [(x0 + s0, x0 + e) for s0, e in runs if e - s0 >= max(2, thr)]
    return gaps


def space_allowed(chars: Sequence[str], i: int) -> bool:
    """May a space go between chars[i] and chars[i + 1]? Not next to an existing space, not before
    closing punctuation, not after an opening bracket, not inside a number like 1,939.00."""
    a, b = chars[i], chars[i + 1]
    if a.isspace() or b.isspace() or b in ".,;:!?)]}%" or a in "([{":
        return False
    if a in ".," and b.isdigit() and i > 0 and chars[i - 1].isdigit():
        return False
    return True


def _words_of_line(ln: _Line, conf: float, idx: int, gray) -> Tuple[str, List[OCRWord]]:
    """Line text (spaces restored where the pixels show word gaps) and its word boxes.

    PP-OCR's recogniser often drops the spaces of English text ("Total1,939.00EUR"). With the
    per-character positions RapidOCR can return and the blank columns of the line image, a space
    is put back wherever a wide gap falls between two characters. Word boxes come from the
    character boxes; without them, the line box is split in proportion to character counts.
    """
    text = ln.text
    chars, polys = ln.chars, ln.char_polys
    usable = bool(chars) and bool(polys) and len(chars) == len(polys) and "".join(chars) == text
    if not usable:
        t = text.strip()
        return t, split_line_into_words(t, ln.box, conf, idx)
    cboxes = [RapidOCREngine._axis_box(p) for p in polys]
    chars = list(chars)
    if gray is not None:
        centers = [(b[0] + b[2]) / 2 for b in cboxes]
        inserts = []
        for gx0, gx1 in _ink_gaps(gray, ln.box):
            gc = (gx0 + gx1) / 2
            for i in range(len(chars) - 1):
                if centers[i] < gc < centers[i + 1]:
                    if space_allowed(chars, i):
                        inserts.append(i + 1)
                    break
        for pos in sorted(inserts, reverse=True):
            left, right = cboxes[pos - 1], cboxes[pos]
            chars.insert(pos, " ")
            cboxes.insert(pos, (left[2], left[1], max(left[2], right[0]), left[3]))
    words: List[OCRWord] = []
    cur: List[int] = []
    y0, y1 = ln.box[1], ln.box[3]

    def flush():
        if cur:
            wx0 = min(cboxes[i][0] for i in cur)
            wx1 = max(cboxes[i][2] for i in cur)
            words.append(OCRWord(text="".join(chars[i] for i in cur), conf=conf,
                                 bbox=(int(round(wx0)), int(round(y0)), int(round(wx1)), int(round(y1))), line=idx))
            cur.clear()

    for i, ch in enumerate(chars):
        if ch.isspace():
            flush()
        else:
            cur.append(i)
    flush()
    return " ".join(w.text for w in words), words

