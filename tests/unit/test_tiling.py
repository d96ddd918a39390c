import pytest

from mmrag_li.enrich.tiling import tile_boxes, tile_starts


def covered(boxes, w, h):
    grid = [[False] * w for _ in range(h)]
    for x0, y0, x1, y1 in boxes:
        for y in range(y0, y1):
            for x in range(x0, x1):
                grid[y][x] = True
    return all(all(r) for r in grid)


@pytest.mark.parametrize("w,h,tile,overlap", [(250, 130, 80, 0.25), (81, 80, 80, 0.5), (300, 40, 64, 0.0), (97, 203, 50, 0.1)])
def test_tiles_cover_whole_image_and_stay_inside(w, h, tile, overlap):
    boxes = tile_boxes(w, h, tile, overlap)
    assert covered(boxes, w, h)
    for x0, y0, x1, y1 in boxes:
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        assert x1 - x0 == min(tile, w) and y1 - y0 == min(tile, h)


def test_last_row_and_column_flush_with_edges():
    boxes = tile_boxes(2000, 1000, 800, 0.25)
    assert max(b[2] for b in boxes) == 2000 and max(b[3] for b in boxes) == 1000
    assert boxes[0] == (0, 0, 800, 800)
    assert (1200, 200, 2000, 1000) in boxes  # bottom-right tile ends exactly at the corner


def test_overlap_between_neighbours():
    starts = tile_starts(2000, 800, 0.25)
    assert starts[:2] == [0, 600]  # step = 800 * 0.75
    for a, b in zip(starts, starts[1:]):
        assert a + 800 - b >= 200  # at least the requested overlap


def test_small_image_is_one_tile():
    assert tile_boxes(500, 300, 800, 0.25) == [(0, 0, 500, 300)]


def test_row_major_order():
    boxes = tile_boxes(1000, 1000, 600, 0.5)
    assert boxes == sorted(boxes, key=lambda b: (b[1], b[0]))


@pytest.mark.parametrize("tile,overlap", [(0, 0.2), (100, 1.0), (100, -0.1)])
def test_bad_arguments(tile, overlap):
    with pytest.raises(ValueError):
        tile_boxes(500, 500, tile, overlap)


def test_empty_image():
    assert tile_boxes(0, 100, 50, 0.2) == []
