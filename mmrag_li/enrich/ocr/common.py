"""Geometry and image preparation shared by the OCR engines (no engine imports).

Every box an engine returns is in pixels of the image passed to ``recognize`` (after the caller's
EXIF transpose), clipped to it, whatever rotation or upscaling happened internally: the helpers
here map boxes found in a rotated/scaled working image back.
"""

from __future__ import annotations

from typing import Sequence, Tuple

from PIL import Image

from ..types import BBox

__all__ = ["prepare_image", "clip_box", "unrotate_box", "rotate_cw", "flatten_background", "upscale_factor",
           "map_back"]


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
    """``box`` (x0, y0, x1, y1 in any order) rounded to ints and clipped to ``width`` x ``height``."""
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
    """``image`` turned ``angle_cw`` (0, 90, 180, 270) degrees clockwise."""
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


def upscale_factor(width: int, height: int, target: int, max_factor: float) -> float:
    """Small images (screenshots, thumbnails of documents) OCR better a little larger."""
    side = max(width, height)
    if side <= 0 or side >= target:
        return 1.0
    return float(min(max_factor, target / side))


def map_back(box: Sequence[float], scale: float, angle_cw: int, width: int, height: int) -> BBox:
    """Box in the (rotated, scaled) working image -> clipped box in the input image."""
    scaled = [c / scale for c in box]
    return clip_box(unrotate_box(scaled, angle_cw, width, height), width, height)

