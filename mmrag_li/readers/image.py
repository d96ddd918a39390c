"""Images (PNG, JPEG, WebP, TIFF, BMP, GIF) -> ImageNode + OCR / caption TextNodes + crops.

All coordinates (OCR word boxes, crop boxes, ``width``/``height``) refer to the *upright*
full-resolution image: the stored pixels after EXIF orientation is applied. ``image_path`` points
at a PNG in the blob store that an embedding model can read directly (upright, alpha composited
on white, downscaled to ``model_max_side``); ``blob_path`` is the untouched original's copy.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
from llama_index.core.schema import BaseNode
from PIL import Image, ImageOps, UnidentifiedImageError

from ..enrich.ocr import OCRError, prepare_image
from ..enrich.ocr.gate import shared_text_gate
from ..enrich.tiling import tile_boxes
from ..errors import IngestError, UsageError
from ..schema import CAPTION, CROP, IMAGE, make_image_node, make_text_node, node_id
from ._common import FORMAT_MIME, MMReader, mark_redacted, ocr_nodes
from .fileio import SourceFile, open_source
from .sniff import sniff_bytes

SUPPORTED_FORMATS = set(FORMAT_MIME)
# Images above this many pixels are OCRed on a downscaled copy (boxes are scaled back).
OCR_MAX_SIDE = 5000


def _pillow_version() -> str:
    import PIL

    return PIL.__version__


def to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB with transparency composited on white; 16-bit/float images are rescaled."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        img = Image.fromarray(arr.astype(np.uint8), mode="L")
    if img.mode == "P":
        img = img.convert("RGBA")
    out = prepare_image(img)
    return out if out.mode == "RGB" else out.convert("RGB")


def open_image(path: Any, max_pixels: int) -> Tuple[Image.Image, str, Dict[str, Any]]:
    """Open, check and fully decode ``path`` (a path or a `SourceFile`); returns (upright RGB image,
    PIL format, info).

    The pixel limit is enforced here from the header (before decoding), so it does not depend on
    warning filters; Pillow's own global ``MAX_IMAGE_PIXELS`` is set to the same limit (thread-safe
    enough: every reader of one run sets the same value).
    """
    if max_pixels:
        Image.MAX_IMAGE_PIXELS = int(max_pixels)
    src = path.stream() if isinstance(path, SourceFile) else path
    path = path.path if isinstance(path, SourceFile) else path
    try:
        with warnings.catch_warnings():  # the explicit limit below reports it, with the file name
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(src)
    except Image.DecompressionBombError as exc:
        m = re.search(r"\((\d+) pixels\)", str(exc))
        n = m.group(1) if m else "?"
        raise IngestError(str(path), f"decompression bomb: {n} pixels exceeds limit of {max_pixels}") from None
    except UnidentifiedImageError:
        raise IngestError(str(path), "not a supported image: cannot identify image format") from None
    except PermissionError:
        raise IngestError(str(path), "permission denied") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise IngestError(str(path), f"truncated or corrupt image: {exc}") from None
    w, h = img.size
    if max_pixels and w * h > max_pixels:
        img.close()
        raise IngestError(str(path), f"decompression bomb: {w * h} pixels exceeds limit of {max_pixels}")
    fmt = img.format or ""
    if fmt not in SUPPORTED_FORMATS:
        img.close()
        raise IngestError(str(path), f"unsupported image format: {fmt or 'unknown'}")
    info: Dict[str, Any] = {"n_frames": getattr(img, "n_frames", 1), "dpi": img.info.get("dpi")}
    try:
        if info["n_frames"] > 1:
            img.seek(0)  # animated GIF / multi-page TIFF: first frame only
        img.load()
    except Image.DecompressionBombError as exc:
        raise IngestError(str(path), f"decompression bomb: {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise IngestError(str(path), f"truncated or corrupt image: {exc}") from None
    info["exif_orientation"] = _orientation(img)
    info["exif_transposed"] = info["exif_orientation"] not in (0, 1)
    upright = img
    if info["exif_transposed"]:
        try:
            upright = ImageOps.exif_transpose(img)
        except Exception:  # broken EXIF must not lose the image
            upright = img
            info["exif_transposed"] = False
    rgb = to_rgb(upright)
    if rgb.width < 1 or rgb.height < 1:
        raise IngestError(str(path), "image has no pixels")
    return rgb, fmt, info


def _orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(0x0112, 1) or 1)
    except Exception:
        return 1


def _dpi(info: Dict[str, Any]) -> Optional[int]:
    dpi = info.get("dpi")
    try:
        if dpi and float(dpi[0]) > 1:
            return int(round(float(dpi[0])))
    except (TypeError, ValueError, IndexError):
        pass
    return None


class ImageReader(MMReader):
    """One image file -> ``image`` ImageNode (+ ``ocr``, ``caption`` TextNodes, ``crop`` ImageNodes)."""

    def lazy_load_data(self, file: Any, extra_info: Optional[Dict[str, Any]] = None) -> Iterator[BaseNode]:  # type: ignore[override]
        yield from self._read(self.source_file(file), extra_info)

    def _read(self, src: SourceFile, extra_info: Optional[Dict[str, Any]]) -> List[BaseNode]:
        cfg = self.settings.ingest
        path = src.path
        img, fmt, info = open_image(src, cfg.max_image_pixels)
        asset_id = src.content_hash
        source = self.source_name(path)
        width, height = img.size
        mime = FORMAT_MIME.get(fmt, "image/" + fmt.lower())
        common = self.common_meta(src, asset_id, mime, extra_info)
        dpi = _dpi(info)

        # The verbatim file (with its EXIF/XMP metadata) only with ingest.keep_originals "always".
        blob_path = (self.blobs.put_bytes(src.data, asset_id, src.suffix, kind="originals")
                     if self.keep_originals == "always" else None)
        thumb = self.blobs.thumbnail(img, asset_id, cfg.thumbnail_px)
        model_img = img
        if max(width, height) > cfg.model_max_side:
            model_img = img.copy()
            model_img.thumbnail((cfg.model_max_side, cfg.model_max_side), Image.Resampling.LANCZOS)
        # The original can be used as is when a model reads it the same way we see it.
        original_ok = (fmt in ("PNG", "JPEG") and model_img is img and info.get("n_frames", 1) == 1
                       and not info.get("exif_transposed") and _original_mode_ok(src))
        image_path = blob_path if original_ok and blob_path else self.blobs.put_image(model_img, f"{asset_id}-model")

        image_meta = dict(common)
        image_meta.update(
            width=width, height=height, dpi=dpi, bbox=[0, 0, width, height], blob_path=blob_path,
            thumbnail_path=thumb, model_width=model_img.width, model_height=model_img.height,
            producer="pillow", producer_version=_pillow_version(),
        )
        if info.get("n_frames", 1) > 1:
            image_meta["n_frames"] = info["n_frames"]
        nodes: List[BaseNode] = []
        image_node = make_image_node(asset_id=asset_id, source=source, modality=IMAGE, image_path=image_path,
                                     **image_meta)
        nodes.append(image_node)

        # OCR on the upright full-resolution image (downscaled only when huge; boxes scaled back),
        # unless the cheap text detector finds no text line in it (ocr.text_gate; most photos).
        gated = self.ocr is not None and getattr(self.settings.ocr, "text_gate", False)
        if gated and not shared_text_gate().has_text(img):
            image_node.metadata["ocr_skipped"] = "no text detected (ocr.text_gate)"
        elif self.ocr is not None:
            try:
                result = _recognize(self.ocr, img)
                redacted = self.redact_ocr(result)
                meta = dict(common)
                meta.update(dpi=dpi, thumbnail_path=thumb, blob_path=blob_path, parent_image_id=image_node.node_id)
                found = ocr_nodes(result, asset_id=asset_id, source=source, id_prefix=(),
                                  chunk_tokens=cfg.chunk_size, meta=meta)
                for n in found if redacted else ():
                    mark_redacted(n)
                nodes.extend(found)
                image_node.metadata["orientation"] = result.orientation
                if found:  # the picture carries what OCR read, for engines that see only content
                    image_node.set_content("\n".join(n.text for n in found))
            except OCRError as exc:
                self._warn(path, f"OCR failed: {exc}")
                image_node.metadata["ocr_error"] = str(exc)

        if self.captioner is not None:
            try:
                caption = (self.captioner.caption([model_img]) or [""])[0].strip()
            except Exception as exc:  # a captioner crash must not lose the image
                self._warn(path, f"captioning failed: {exc}")
                image_node.metadata["caption_error"] = str(exc)
                caption = ""
            if caption:
                meta = dict(common)
                meta.update(
                    width=width, height=height, bbox=[0, 0, width, height], thumbnail_path=thumb,
                    blob_path=blob_path, parent_image_id=image_node.node_id,
                    producer=getattr(self.captioner, "name", type(self.captioner).__name__),
                    producer_version=getattr(self.captioner, "version", ""),
                    caption_model=getattr(self.captioner, "name", type(self.captioner).__name__),
                )
                nodes.append(make_text_node(caption, asset_id=asset_id, source=source, modality=CAPTION, **meta))

        tiling = self.settings.tiling
        if tiling.enabled and max(width, height) > tiling.min_side:
            for i, box in enumerate(tile_boxes(width, height, tiling.tile, tiling.overlap)):
                crop = img.crop(box)
                if max(crop.size) > cfg.model_max_side:
                    crop.thumbnail((cfg.model_max_side, cfg.model_max_side), Image.Resampling.LANCZOS)
                crop_path = self.blobs.put_image(crop, f"{asset_id}-tile{i}")
                meta = dict(common)
                meta.update(
                    width=width, height=height, bbox=list(box), tile_index=i, blob_path=blob_path,
                    thumbnail_path=thumb, parent_image_id=image_node.node_id,
                    producer="pillow", producer_version=_pillow_version(),
                )
                nodes.append(make_image_node(asset_id=asset_id, source=source, modality=CROP,
                                             image_path=crop_path, id_parts=(i,), **meta))
        if blob_path is None:
            for n in nodes:
                n.metadata.pop("blob_path", None)
        return nodes


def _original_mode_ok(src: SourceFile) -> bool:
    """Plain RGB/L originals decode identically everywhere; alpha, palette, CMYK, 16-bit do not."""
    try:
        with Image.open(src.stream()) as im:
            return im.mode in ("RGB", "L") and "transparency" not in im.info
    except Exception:
        return False


def _recognize(engine: Any, img: Image.Image):
    w, h = img.size
    if max(w, h) <= OCR_MAX_SIDE:
        return engine.recognize(img)
    small = img.copy()
    small.thumbnail((OCR_MAX_SIDE, OCR_MAX_SIDE), Image.Resampling.LANCZOS)
    sx, sy = w / small.width, h / small.height
    result = engine.recognize(small)
    for word in result.words:
        x0, y0, x1, y1 = word.bbox
        word.bbox = (min(w, int(x0 * sx)), min(h, int(y0 * sy)), min(w, int(round(x1 * sx))), min(h, int(round(y1 * sy))))
    result.width, result.height = w, h
    return result


class QueryImageError(UsageError):
    """A query image (``search --image`` / ``query --image``) that cannot be used: missing, not an
    image (a PDF, a folder), or over the decompression-bomb limit. A usage error (exit 2)."""


def open_query_image(path: Any, ingest: Any = None) -> Image.Image:
    """A query image, checked like an ingested one, as an upright RGB image sized for the models.

    The type is sniffed from the bytes (only images are accepted), ``ingest.max_image_pixels`` is
    checked from the header BEFORE any pixel is decoded, and the result is downscaled to
    ``ingest.model_max_side`` (JPEGs are decoded at reduced scale directly).

    Args:
        path: the image file.
        ingest: an `IngestConfig` (``settings.ingest``); None = the defaults.

    Raises:
        QueryImageError: missing file, folder, PDF or other non-image, bomb, corrupt image.
    """
    if ingest is None:
        from ..config import IngestConfig

        ingest = IngestConfig()
    p = Path(str(path)).expanduser()
    if p.is_dir():
        raise QueryImageError(f"query image {p} is a directory, not an image")
    try:
        src = open_source(p, follow_symlinks=True, max_mb=ingest.max_file_mb)
    except IngestError as exc:
        raise QueryImageError(f"query image {p}: {exc.reason}") from None
    kind = sniff_bytes(src.data[:8192], src.suffix)
    if kind != "image":
        what = "a PDF" if kind == "pdf" else f"{kind.mime}"
        raise QueryImageError(f"query image {p} is {what}, not an image (PNG, JPEG, WebP, TIFF, BMP, GIF)")
    limit = int(ingest.max_image_pixels or 0)
    if limit:
        Image.MAX_IMAGE_PIXELS = limit
    side = max(1, int(ingest.model_max_side))
    try:
        with warnings.catch_warnings():  # the limit below is the check; no second, vaguer warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(src.stream())
        w, h = im.size
        if limit and w * h > limit:
            raise QueryImageError(f"query image {p}: decompression bomb: {w}x{h} = {w * h} pixels exceeds "
                                  f"ingest.max_image_pixels ({limit})")
        if im.format == "JPEG" and max(w, h) > side:
            im.draft("RGB", (side, side))  # decode at 1/2, 1/4 or 1/8 scale
        im.load()
        im = to_rgb(ImageOps.exif_transpose(im) or im)
    except QueryImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise QueryImageError(f"query image {p}: decompression bomb: {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError, UnidentifiedImageError) as exc:
        raise QueryImageError(f"query image {p}: truncated or corrupt image: {exc}") from None
    if max(im.size) > side:
        im.thumbnail((side, side), Image.Resampling.LANCZOS)
    return im


__all__ = ["ImageReader", "QueryImageError", "open_image", "open_query_image", "to_rgb", "node_id"]
