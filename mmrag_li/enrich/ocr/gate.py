"""A cheap text detector in front of OCR: images without text skip full recognition.

Most photos hold no text, yet full OCR (tesseract with orientation detection, or PP-OCR
recognition) costs seconds per image. The PP-OCRv4 *detection* model that ships in
``rapidocr-onnxruntime`` finds text lines in ~0.1-0.3 s at 640 px on one CPU thread (measured on
the dev set: document pages have 15-25 line regions, photos 0-1, none of them line-shaped except
one). :class:`TextGate` runs it; :class:`TextGatedOCR` wraps any OCR engine and runs it only when
the gate finds at least ``min_regions`` line-shaped text regions, else returns an empty result
(``engine`` names the gate, so a skipped image is recognisable). Configured by ``ocr.text_gate``
(default on): the image reader asks :func:`shared_text_gate` before it runs the OCR engine (PDF
pages without a text layer are documents and always get full OCR).

The gate errs towards OCR: one line-shaped region anywhere (a sign, a caption, a watermark) is
enough, and any failure of the detector runs full OCR.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any, List, Tuple

import numpy as np
from PIL import Image

from ..types import OCRResult
from .common import prepare_image

__all__ = ["TextGate", "TextGatedOCR", "detector_model_path", "shared_text_gate"]

log = logging.getLogger(__name__)
GATE_ENGINE = "text-gate"


def detector_model_path() -> str:
    """Path of the PP-OCRv4 detection model inside the installed ``rapidocr_onnxruntime`` package.

    Raises:
        ImportError: the package is not installed.
    """
    import rapidocr_onnxruntime

    return os.path.join(os.path.dirname(rapidocr_onnxruntime.__file__), "models", "ch_PP-OCRv4_det_infer.onnx")


class TextGate:
    """Does an image hold text? PP-OCRv4 detection (DBNet) + connected components of its map.

    Args:
        side: the longer side the image is scaled to (up to 2x for small images), rounded to 32.
        threads: onnxruntime intra-op threads (1: the gate never competes with OCR/models for cores).
        min_regions: line-shaped regions needed to say "text".
        min_score: mean detection probability of a region (DBNet's box score).
        min_elongation: longer/shorter side of a region's box for it to count as a text line.
    """

    def __init__(self, side: int = 640, threads: int = 1, min_regions: int = 1, min_score: float = 0.6,
                 min_elongation: float = 2.0):
        self.side, self.threads = side, threads
        self.min_regions, self.min_score, self.min_elongation = min_regions, min_score, min_elongation
        self._session: Any = None
        self._lock = threading.Lock()

    def session(self) -> Any:
        """The onnxruntime session (loaded on first use, ~0.2 s)."""
        with self._lock:
            if self._session is None:
                import onnxruntime as ort

                opts = ort.SessionOptions()
                opts.intra_op_num_threads = self.threads
                opts.inter_op_num_threads = 1
                self._session = ort.InferenceSession(detector_model_path(), opts, providers=["CPUExecutionProvider"])
            return self._session

    def probability_map(self, image: Image.Image) -> np.ndarray:
        """DBNet's text probability per pixel of the scaled image (H x W, 0-1).

        Args:
            image: the picture (any mode).
        """
        im = prepare_image(image).convert("RGB")
        w, h = im.size
        scale = min(2.0, self.side / max(w, h, 1))
        nw, nh = (max(32, int(round(d * scale / 32)) * 32) for d in (w, h))
        x = (np.asarray(im.resize((nw, nh), Image.Resampling.BILINEAR), dtype=np.float32) / 127.5 - 1.0)
        sess = self.session()
        with self._lock:  # one shared session: keep calls serial
            out = sess.run(None, {sess.get_inputs()[0].name: x.transpose(2, 0, 1)[None]})[0]
        return out[0, 0]

    def regions(self, image: Image.Image) -> List[Tuple[int, int, int, int, float]]:
        """Line-shaped text regions ``(x, y, w, h, score)`` in scaled-image pixels, largest first.

        Args:
            image: the picture.
        """
        import cv2  # opencv ships with rapidocr-onnxruntime

        prob = self.probability_map(image)
        n, labels, stats, _ = cv2.connectedComponentsWithStats((prob > 0.3).astype(np.uint8), connectivity=8)
        out = []
        for i in range(1, n):
            x, y, bw, bh, area = (int(v) for v in stats[i])
            if area < 12 or max(bw, bh) < self.min_elongation * max(min(bw, bh), 1):
                continue
            score = float(prob[labels == i].mean())
            if score >= self.min_score:
                out.append((x, y, bw, bh, round(score, 3)))
        return sorted(out, key=lambda r: -r[2] * r[3])

    def has_text(self, image: Image.Image) -> bool:
        """True when the image holds at least ``min_regions`` text lines (or the detector failed).

        Args:
            image: the picture.
        """
        try:
            return len(self.regions(image)) >= self.min_regions
        except Exception as exc:  # never lose OCR to a gate problem
            log.debug("text gate failed, running OCR: %s", exc)
            return True


class TextGatedOCR:
    """An OCR engine that first asks a :class:`TextGate`; a textless image gets an empty result
    without full recognition. Everything else (``name``, ``version``, options) is the engine's.

    Args:
        engine: the OCR engine (``recognize(image) -> OCRResult``).
        gate: the detector (default :class:`TextGate` with its defaults).
    """

    def __init__(self, engine: Any, gate: TextGate | None = None):
        self.engine = engine
        self.gate = gate or TextGate()
        self.skipped = 0
        self.recognized = 0

    def __getattr__(self, name: str) -> Any:
        if name in ("engine", "gate"):
            raise AttributeError(name)
        return getattr(self.engine, name)

    def recognize(self, image: Image.Image) -> OCRResult:
        """Full OCR of ``image`` when the gate finds text, else an empty result.

        Args:
            image: the picture.
        """
        if not self.gate.has_text(image):
            self.skipped += 1
            return OCRResult(engine=GATE_ENGINE, engine_version=str(getattr(self.engine, "version", "")),
                             lang=str(getattr(self.engine, "lang", "")), width=image.width, height=image.height)
        self.recognized += 1
        return self.engine.recognize(image)


_shared: List[TextGate] = []
_shared_lock = threading.Lock()


def shared_text_gate() -> TextGate:
    """The process-wide :class:`TextGate` (its model loads once, on first use)."""
    with _shared_lock:
        if not _shared:
            _shared.append(TextGate())
        return _shared[0]
