"""OCR engines behind the :class:`~mmrag_li.enrich.types.OCREngine` protocol.

Two engines, both offline:

* :class:`TesseractOCR` -- the ``tesseract`` binary through ``pytesseract``: word boxes, per-word
  confidence, lines from tesseract's block/paragraph/line numbers, language packs, orientation
  detection (OSD) and a timeout.
* :class:`RapidOCREngine` -- ``rapidocr_onnxruntime`` (PP-OCRv4 ONNX models shipped in the wheel).
  It returns text *lines*; word boxes are made by splitting a line's box proportionally to
  character counts.

Every box an engine returns is in pixels of the image that was passed to ``recognize`` (after the
caller's EXIF transpose), clipped to it -- whatever rotation or upscaling happened internally.
Use :func:`get_ocr_engine` to get a shared, already-loaded engine for an :class:`OCRConfig`.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import re
import threading
from collections.abc import Mapping
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

from PIL import Image

from ..config import OCRConfig
from ..errors import MMRAGError, ModelUnavailableError
from .types import BBox, OCREngine, OCRResult, OCRWord

log = logging.getLogger(__name__)

__all__ = [
    "OCRError",
    "TesseractOCR",
    "RapidOCREngine",
    "get_ocr_engine",
    "prepare_image",
    "unrotate_box",
    "clip_box",
]


class OCRError(MMRAGError):
    """OCR of one image failed (timeout, engine crash); the caller decides whether that is fatal."""


# ----------------------------------------------------------------------------------------------
# geometry helpers
# ----------------------------------------------------------------------------------------------


def prepare_image(image: Image.Image) -> Image.Image:
    """RGB copy with any transparency composited on white (text on transparent PNGs stays black)."""
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        bg.alpha_composite(rgba)
        return bg.convert("RGB")
    if image.mode not in ("RGB", "L"):
        return image.convert("RGB")
    return image


def clip_box(box: Sequence[float], width: int, height: int) -> BBox:
    x0, y0, x1, y1 = box
    x0, x1 = sorted((x0, x1))
    y0, y1 = sorted((y0, y1))
    cx0 = int(max(0, min(width, round(x0))))
    cy0 = int(max(0, min(height, round(y0))))
    cx1 = int(max(0, min(width, round(x1))))
    cy1 = int(max(0, min(height, round(y1))))
    return (cx0, cy0, cx1, cy1)


def unrotate_box(box: Sequence[float], angle_cw: int, width: int, height: int) -> Tuple[float, float, float, float]:
    """Map a box found in the image rotated ``angle_cw`` degrees clockwise back to the unrotated one.

    ``width``/``height`` are the size of the *unrotated* (input) image.
    """
    x0, y0, x1, y1 = box
    a = angle_cw % 360
    if a == 0:
        pts = [(x0, y0), (x1, y1)]
    elif a == 90:  # input (x, y) -> rotated (H - y, x); inverse (u, v) -> (v, H - u)
        pts = [(v, height - u) for u, v in ((x0, y0), (x1, y1))]
    elif a == 180:
        pts = [(width - u, height - v) for u, v in ((x0, y0), (x1, y1))]
    elif a == 270:  # input (x, y) -> rotated (y, W - x); inverse (u, v) -> (W - v, u)
        pts = [(width - v, u) for u, v in ((x0, y0), (x1, y1))]
    else:
        raise ValueError(f"rotation must be a multiple of 90 degrees, got {angle_cw}")
    xs = [p[0] for p in pts]
    ys = [p[1] for p in pts]
    return (min(xs), min(ys), max(xs), max(ys))


def rotate_cw(image: Image.Image, angle_cw: int) -> Image.Image:
    a = angle_cw % 360
    if a == 0:
        return image
    # PIL's transpose constants name counter-clockwise rotations.
    op = {90: Image.Transpose.ROTATE_270, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_90}[a]
    return image.transpose(op)


def flatten_background(gray: Image.Image, factor: int = 4) -> Image.Image:
    """Divide out uneven illumination (shadows, vignetting on phone scans and photocopies).

    The background is estimated as a blurred local maximum of a reduced copy; on a clean white
    page it is ~255 everywhere and the image is unchanged. Costs ~0.1 s for a letter page at 200 dpi.
    """
    import numpy as np
    from PIL import ImageFilter

    small = gray.reduce(factor) if min(gray.size) >= factor * 16 else gray
    bg = small.filter(ImageFilter.MaxFilter(3)).filter(ImageFilter.GaussianBlur(5))
    bg = bg.resize(gray.size, Image.Resampling.BILINEAR)
    a = np.asarray(gray, dtype=np.float32)
    b = np.maximum(np.asarray(bg, dtype=np.float32), 1.0)
    return Image.fromarray(np.clip(a / b * 255.0, 0, 255).astype(np.uint8), mode="L")


def _upscale_factor(width: int, height: int, target: int, max_factor: float) -> float:
    """Small images (screenshots, thumbnails of documents) OCR better a little larger."""
    side = max(width, height)
    if side <= 0 or side >= target:
        return 1.0
    return float(min(max_factor, target / side))


def _map_back(box: Sequence[float], scale: float, angle_cw: int, width: int, height: int) -> BBox:
    """Box in the (rotated, scaled) working image -> clipped box in the input image."""
    scaled = [c / scale for c in box]
    return clip_box(unrotate_box(scaled, angle_cw, width, height), width, height)


# ----------------------------------------------------------------------------------------------
# Tesseract
# ----------------------------------------------------------------------------------------------


class _EnvOverlay(Mapping):
    """``os.environ`` as it is at each call, with a few keys overridden (for tesseract children)."""

    def __init__(self, overrides: Dict[str, str]):
        self.overrides = dict(overrides)

    def _merged(self) -> Dict[str, str]:
        return {**os.environ, **self.overrides}

    def __getitem__(self, key: str) -> str:
        return self._merged()[key]

    def __iter__(self):
        return iter(self._merged())

    def __len__(self) -> int:
        return len(self._merged())


def _limit_tesseract_threads(pytesseract_module, threads: int) -> None:
    """Run tesseract children with ``OMP_THREAD_LIMIT`` (unless the user set it). Tesseract's
    OpenMP threads spin against each other and against other work: on this 2-core machine one
    thread read a dense page ~3x faster under load. Only the tesseract subprocess sees this;
    the Python process's own OpenMP (torch, onnxruntime) is not touched."""
    if "OMP_THREAD_LIMIT" in os.environ:
        return
    inner = pytesseract_module.pytesseract
    if isinstance(getattr(inner, "environ", None), _EnvOverlay) or not hasattr(inner, "environ"):
        return
    inner.environ = _EnvOverlay({"OMP_THREAD_LIMIT": str(int(threads))})


def _apt_pack(lang: str) -> str:
    return "tesseract-ocr-" + lang.lower().replace("_", "-")


class TesseractOCR:
    """Tesseract via ``pytesseract.image_to_data``.

    ``lang`` joins packs with '+' (``"eng+deu"``); a missing binary or pack raises
    :class:`ModelUnavailableError` at construction, naming the apt package to install.
    """

    name = "tesseract"

    def __init__(
        self,
        lang: str = "eng",
        min_conf: float = 40.0,
        detect_orientation: bool = True,
        psm: int = 3,
        timeout_s: float = 120.0,
        upscale_below: int = 1000,
        max_upscale: float = 2.0,
        osd_min_conf: float = 2.0,
        normalize_background: bool = True,
        threads: Optional[int] = 1,
    ):
        import pytesseract

        self._pt = pytesseract
        self.lang = lang
        self.min_conf = float(min_conf)
        self.detect_orientation = detect_orientation
        self.psm = int(psm)
        self.timeout_s = float(timeout_s)
        self.upscale_below = int(upscale_below)
        self.max_upscale = float(max_upscale)
        self.osd_min_conf = float(osd_min_conf)
        self.normalize_background = normalize_background
        if threads:
            _limit_tesseract_threads(pytesseract, threads)
        try:
            self.version = str(pytesseract.get_tesseract_version())
        except pytesseract.TesseractNotFoundError as exc:
            raise ModelUnavailableError(
                "tesseract binary not found on PATH: install it (apt-get install tesseract-ocr) "
                "or set pytesseract.pytesseract.tesseract_cmd"
            ) from exc
        try:
            installed = set(pytesseract.get_languages(config=""))
        except Exception:  # very old tesseract without --list-langs: let recognition fail loudly
            installed = set()
        wanted = [p for p in lang.split("+") if p]
        if not wanted:
            raise ModelUnavailableError("tesseract: empty language string")
        if installed:
            missing = [p for p in wanted if p not in installed]
            if missing:
                hints = ", ".join(f"'{p}' (apt-get install {_apt_pack(p)})" for p in missing)
                raise ModelUnavailableError(
                    f"tesseract language pack not installed: {hints}; installed: {', '.join(sorted(installed))}"
                )
            self._has_osd = "osd" in installed
        else:
            self._has_osd = True
        if detect_orientation and not self._has_osd:
            log.warning("tesseract 'osd' pack missing (apt-get install tesseract-ocr-osd); orientation detection off")
            self.detect_orientation = False

    def __repr__(self) -> str:
        return f"TesseractOCR(lang={self.lang!r}, psm={self.psm}, version={self.version!r})"

    # -- orientation --------------------------------------------------------------------------
    def detect_rotation(self, image: Image.Image) -> Tuple[int, float]:
        """(degrees to rotate clockwise to make the text upright, OSD confidence); (0, 0) when
        OSD cannot tell (too little text, blank image, timeout)."""
        pt = self._pt
        try:
            osd = pt.image_to_osd(image, output_type=pt.Output.DICT, config="--psm 0",
                                  timeout=self.timeout_s)
        except pt.TesseractError as exc:  # "Too few characters", blank images, ...
            log.debug("OSD failed, assuming upright: %s", exc)
            return 0, 0.0
        except RuntimeError as exc:  # pytesseract's timeout
            log.warning("OSD timed out, assuming upright: %s", exc)
            return 0, 0.0
        return int(osd.get("rotate", 0) or 0) % 360, float(osd.get("orientation_conf", 0.0) or 0.0)

    # -- recognition --------------------------------------------------------------------------
    def recognize(self, image: Image.Image) -> OCRResult:
        src = prepare_image(image)
        width, height = src.size
        gray = src.convert("L")

        scale = _upscale_factor(width, height, self.upscale_below, self.max_upscale)
        work = gray
        if scale > 1.0:
            work = gray.resize((max(1, round(width * scale)), max(1, round(height * scale))),
                               Image.Resampling.LANCZOS)
        if self.normalize_background:
            work = flatten_background(work)

        angle, osd_conf = self.detect_rotation(work) if self.detect_orientation else (0, 0.0)
        words, lines = self._read(rotate_cw(work, angle), scale, angle, width, height)
        if angle and osd_conf < self.osd_min_conf:
            # OSD is unsure (short text): read both ways and keep the more confident reading.
            words0, lines0 = self._read(work, scale, 0, width, height)
            if sum(w.conf for w in words0) >= sum(w.conf for w in words):
                words, lines, angle = words0, lines0, 0
        return OCRResult(words=words, lines=lines, engine=self.name, engine_version=self.version,
                         lang=self.lang, orientation=angle, width=width, height=height)

    def _read(self, work: Image.Image, scale: float, angle: int, width: int, height: int
              ) -> Tuple[List[OCRWord], List[str]]:
        """image_to_data on the upright working image; boxes mapped back to the input image."""
        pt = self._pt
        try:
            data = pt.image_to_data(work, lang=self.lang, config=f"--psm {self.psm}",
                                    output_type=pt.Output.DICT, timeout=self.timeout_s)
        except RuntimeError as exc:  # pytesseract raises RuntimeError('Tesseract process timeout')
            raise OCRError(f"tesseract timed out after {self.timeout_s:g}s") from exc
        except pt.TesseractError as exc:
            raise OCRError(f"tesseract failed: {exc}") from exc

        words: List[OCRWord] = []
        line_words: Dict[Tuple[int, int, int, int], List[OCRWord]] = {}
        line_index: Dict[Tuple[int, int, int, int], int] = {}
        order: List[Tuple[int, int, int, int]] = []
        for i in range(len(data.get("text", []))):
            text = (data["text"][i] or "").strip()
            if not text:
                continue
            try:
                conf = float(data["conf"][i])
            except (TypeError, ValueError):
                continue
            if conf < 0 or conf < self.min_conf:
                continue
            key = (data["page_num"][i], data["block_num"][i], data["par_num"][i], data["line_num"][i])
            if key not in line_words:
                line_words[key] = []
                line_index[key] = len(order)
                order.append(key)
            box = (data["left"][i], data["top"][i], data["left"][i] + data["width"][i],
                   data["top"][i] + data["height"][i])
            word = OCRWord(text=text, conf=round(min(100.0, conf), 2),
                           bbox=_map_back(box, scale, angle, width, height), line=line_index[key])
            line_words[key].append(word)
            words.append(word)
        return words, [" ".join(w.text for w in line_words[k]) for k in order]


# ----------------------------------------------------------------------------------------------
# RapidOCR
# ----------------------------------------------------------------------------------------------


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
                w.bbox = _map_back(w.bbox, 1.0, angle, width, height)
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


def _space_allowed(chars: Sequence[str], i: int) -> bool:
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
                    if _space_allowed(chars, i):
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


# ----------------------------------------------------------------------------------------------
# factory
# ----------------------------------------------------------------------------------------------

_ENGINES: Dict[Tuple, OCREngine] = {}
_ENGINES_LOCK = threading.Lock()


def get_ocr_engine(cfg: Optional[OCRConfig] = None) -> Optional[OCREngine]:
    """The shared engine for ``cfg`` (built on first use, then reused); ``None`` for engine 'none'."""
    cfg = cfg or OCRConfig()
    if cfg.engine == "none":
        return None
    if cfg.engine == "tesseract":
        key: Tuple = ("tesseract", cfg.lang, cfg.min_conf, cfg.detect_orientation, cfg.psm, cfg.timeout_s)
    elif cfg.engine == "rapidocr":
        key = ("rapidocr", cfg.min_conf, cfg.detect_orientation)
    else:  # pragma: no cover - pydantic Literal guards this
        raise ValueError(f"unknown OCR engine {cfg.engine!r}")
    with _ENGINES_LOCK:
        engine = _ENGINES.get(key)
        if engine is None:
            if cfg.engine == "tesseract":
                engine = TesseractOCR(lang=cfg.lang, min_conf=cfg.min_conf,
                                      detect_orientation=cfg.detect_orientation, psm=cfg.psm,
                                      timeout_s=cfg.timeout_s)
            else:
                engine = RapidOCREngine(min_conf=cfg.min_conf, detect_orientation=cfg.detect_orientation)
            _ENGINES[key] = engine
        return engine
