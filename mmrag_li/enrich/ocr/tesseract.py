"""Tesseract through ``pytesseract``: word boxes, per-word confidence, lines from tesseract's
block/paragraph/line numbers, language packs, orientation detection (OSD) and a timeout.
``ocr.kind: tesseract`` (options: :class:`mmrag_li.config.TesseractOCRConfig`)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Dict, List, Optional, Tuple

from PIL import Image

from ...errors import ModelUnavailableError, OCRError
from ..types import OCRResult, OCRWord
from .common import flatten_background, map_back, prepare_image, rotate_cw, upscale_factor

log = logging.getLogger(__name__)

__all__ = ["TesseractOCR"]


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

        scale = upscale_factor(width, height, self.upscale_below, self.max_upscale)
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
                           bbox=map_back(box, scale, angle, width, height), line=line_index[key])
            line_words[key].append(word)
            words.append(word)
        return words, [" ".join(w.text for w in line_words[k]) for k in order]

