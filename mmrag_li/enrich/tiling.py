"""Overlapping crops that cover a large image, with their coordinates in the original.

A 6000 px photo shrunk to an embedding model's 224 px loses small objects and text; crops of
``tile`` px (overlapping by ``overlap``) are embedded as extra ``crop`` ImageNodes whose ``bbox``
points back into the original, so a hit on a crop cites the region.
"""

from __future__ import annotations

from typing import List

from .types import BBox

__all__ = ["tile_boxes", "tile_starts"]


def tile_starts(length: int, tile: int, overlap: float) -> List[int]:
    """Start offsets along one axis: step ``tile * (1 - overlap)``, last tile flush with the end."""
    if length <= 0:
        return []
    if tile <= 0:
        raise ValueError("tile must be positive")
    if not 0.0 <= overlap < 1.0:
        raise ValueError("overlap must be in [0, 1)")
    if length <= tile:
        return [0]
    step = max(1, int(round(tile * (1.0 - overlap))))
    starts = list(range(0, length - tile + 1, step))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


def tile_boxes(width: int, height: int, tile: int, overlap: float = 0.25) -> List[BBox]:
    """Boxes ``(x0, y0, x1, y1)`` of overlapping ``tile`` x ``tile`` crops covering the whole image.

    Row-major order. Tiles never extend past the image: the last row/column is flush with the
    edge (and overlaps its neighbour more); a side shorter than ``tile`` gets one full-side tile.
    """
    xs = tile_starts(width, tile, overlap)
    ys = tile_starts(height, tile, overlap)
    return [(x, y, min(width, x + tile), min(height, y + tile)) for y in ys for x in xs]
