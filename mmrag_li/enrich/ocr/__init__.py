"""OCR engines behind the :class:`~mmrag_li.enrich.types.OCREngine` protocol, one module each.

* :mod:`.tesseract` -- :class:`TesseractOCR` (``ocr.kind: tesseract``)
* :mod:`.rapidocr` -- :class:`RapidOCREngine` (``ocr.kind: rapidocr``)
* :mod:`.common` -- geometry and image preparation shared by both
* :mod:`.factory` -- :func:`get_ocr_engine`, built through :mod:`mmrag_li.registry`

Both engines run offline. Use :func:`get_ocr_engine` (``settings.ocr``) for a shared, loaded engine.
"""

from ...errors import OCRError
from .common import clip_box, flatten_background, map_back, prepare_image, rotate_cw, unrotate_box, upscale_factor
from .factory import clear_ocr_engines, get_ocr_engine
from .rapidocr import RapidOCREngine, space_allowed, split_line_into_words
from .tesseract import TesseractOCR

__all__ = [
    "OCRError",
    "TesseractOCR",
    "RapidOCREngine",
    "get_ocr_engine",
    "clear_ocr_engines",
    "prepare_image",
    "unrotate_box",
    "clip_box",
    "rotate_cw",
    "flatten_background",
    "upscale_factor",
    "map_back",
    "split_line_into_words",
    "space_allowed",
]
