"""``get_ocr_engine(settings.ocr)``: the shared, loaded engine for an OCR config, built through
the registry (``ocr.kind`` -> engine class; third-party kinds from the ``mmrag_li.ocr_engines``
entry points)."""

from __future__ import annotations

import threading
from typing import Any, Dict, Optional, Tuple

from ... import registry
from ...config import OCRConfig
from ..types import OCREngine

__all__ = ["get_ocr_engine", "clear_ocr_engines"]

_ENGINES: Dict[Tuple[str, str], Optional[OCREngine]] = {}
_ENGINES_LOCK = threading.Lock()


def get_ocr_engine(cfg: Optional[OCRConfig | Dict[str, Any]] = None) -> Optional[OCREngine]:
    """The shared engine for ``cfg`` (built on first use, then reused); ``None`` for ``kind: none``.

    Args:
        cfg: ``settings.ocr``, a mapping such as ``{"kind": "rapidocr"}``, or None (tesseract
            with default options).

    Raises:
        ModelUnavailableError: the engine (binary, language pack, package) is not installed.
        ConfigError: unknown kind.
    """
    options = OCRConfig.parse(cfg, "get_ocr_engine argument")
    key = (options.kind, options.model_dump_json())
    with _ENGINES_LOCK:
        if key not in _ENGINES:
            _ENGINES[key] = registry.build("ocr_engines", options)
        return _ENGINES[key]


def clear_ocr_engines() -> None:
    """Forget the shared engines (the next :func:`get_ocr_engine` builds them again)."""
    with _ENGINES_LOCK:
        _ENGINES.clear()
