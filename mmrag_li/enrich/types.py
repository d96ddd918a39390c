"""Plain result types shared by OCR engines and captioners (no heavy imports)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Protocol, Sequence, Tuple, runtime_checkable

from PIL import Image

BBox = Tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels of the image given to the engine


@dataclass
class OCRWord:
    text: str
    conf: float  # 0-100
    bbox: BBox
    line: int = 0  # index of the line this word belongs to


@dataclass
class OCRResult:
    words: List[OCRWord] = field(default_factory=list)
    lines: List[str] = field(default_factory=list)
    engine: str = ""
    engine_version: str = ""
    lang: str = ""
    orientation: int = 0  # degrees the image was rotated clockwise before recognition
    width: int = 0
    height: int = 0

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def mean_conf(self) -> Optional[float]:
        return round(sum(w.conf for w in self.words) / len(self.words), 2) if self.words else None


@runtime_checkable
class OCREngine(Protocol):
    name: str
    version: str

    def recognize(self, image: Image.Image) -> OCRResult: ...


@runtime_checkable
class Captioner(Protocol):
    name: str
    version: str

    def caption(self, images: Sequence[Image.Image]) -> List[str]: ...
