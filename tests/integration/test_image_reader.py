"""ImageReader with real Pillow + tesseract: nodes, metadata, blobs, orientation, alpha, tiling, limits."""

from pathlib import Path

import pytest
from llama_index.core.schema import ImageNode, TextNode
from PIL import Image

from mmrag_li.config import Settings
from mmrag_li.errors import IngestError
from mmrag_li.readers import ImageReader
from mmrag_li.schema import EMBED_EXCLUDED_KEYS, file_hash

from ..conftest import DATA_DIR

COMMON_KEYS = {"asset_id", "source", "modality", "page", "bbox", "width", "height", "ingested_at", "producer",
               "producer_version", "mime_type", "content_hash", "thumbnail_path", "collection", "blob_path"}


class TinyCaptioner:
    """A real (if simple) Captioner: describes the dominant colour."""

    name = "tiny-colour-captioner"
    version = "0.1"

    def caption(self, images):
        out = []
        for im in images:
            r, g, b = im.convert("RGB").resize((1, 1)).getpixel((0, 0))
            out.append(f"an image that is mostly {'light' if r + g + b > 382 else 'dark'}")
        return out


def by_modality(nodes):
    out = {}
    for n in nodes:
        out.setdefault(n.metadata["modality"], []).append(n)
    return out


@pytest.fixture()
def reader(settings, blobs, tesseract):
    return ImageReader.from_defaults(settings, blob_store=blobs, ocr=tesseract, captioner=TinyCaptioner())


def test_invoice_image_ocr_and_caption_nodes(reader, files):
    path = files["invoice_png"]
    nodes = reader.load_data(path)
    mods = by_modality(nodes)
    assert set(mods) == {"image", "ocr", "caption"}
    img_node, ocr_node, cap_node = mods["image"][0], mods["ocr"][0], mods["caption"][0]
    assert isinstance(img_node, ImageNode) and img_node.text == ocr_node.text  # content = what OCR read
    assert isinstance(ocr_node, TextNode) and isinstance(cap_node, TextNode)
    assert {n.metadata["asset_id"] for n in nodes} == {file_hash(path)}
    assert len({n.node_id for n in nodes}) == len(nodes)
    for n in nodes:
        assert COMMON_KEYS <= set(n.metadata), COMMON_KEYS - set(n.metadata)
        assert n.metadata["source"] == str(Path(path).resolve())
        assert n.metadata["mime_type"] == "image/png"
        assert set(EMBED_EXCLUDED_KEYS) <= set(n.excluded_embed_metadata_keys)
        assert n.metadata["width"] == 1000 and n.metadata["height"] == 360
    # OCR node: text, words with boxes inside the image, engine info.
    assert "INVOICE 4711" in ocr_node.text and "1,939.00" in ocr_node.text
    m = ocr_node.metadata
    assert m["ocr_engine"] == "tesseract" and m["ocr_lang"] == "eng" and 50 < m["ocr_conf"] <= 100
    assert m["producer"] == "tesseract" and m["producer_version"] == reader.ocr.version
    assert m["parent_image_id"] == img_node.node_id
    for w in m["words"]:
        x0, y0, x1, y1 = w["bbox"]
        assert 0 <= x0 < x1 <= 1000 and 0 <= y0 < y1 <= 360 and 0 <= w["conf"] <= 100
    assert {"INVOICE", "4711"} <= {w["text"] for w in m["words"]}
    # Caption node.
    assert cap_node.text == "an image that is mostly light"
    assert cap_node.metadata["producer"] == "tiny-colour-captioner" and cap_node.metadata["producer_version"] == "0.1"


def test_blobs_original_thumbnail_and_model_image(reader, files, blobs):
    nodes = reader.load_data(files["invoice_png"])
    img_node = by_modality(nodes)["image"][0]
    m = img_node.metadata
    assert Path(m["blob_path"]).read_bytes() == files["invoice_png"].read_bytes()
    assert str(blobs.root) in m["blob_path"] and str(blobs.root) in img_node.image_path
    thumb = Image.open(m["thumbnail_path"])
    assert max(thumb.size) <= 256
    model = Image.open(img_node.image_path)
    model.load()
    assert model.size == (1000, 360)


def test_reingest_gives_same_ids(reader, files):
    a = [n.node_id for n in reader.load_data(files["invoice_png"])]
    b = [n.node_id for n in reader.load_data(files["invoice_png"])]
    assert a == b


def test_rgba_is_composited_on_white(settings, blobs, tesseract, files):
    nodes = ImageReader.from_defaults(settings, blob_store=blobs, ocr=tesseract).load_data(files["rgba_png"])
    img_node = by_modality(nodes)["image"][0]
    model = Image.open(img_node.image_path)
    assert model.mode == "RGB" and model.getpixel((2, 2)) == (255, 255, 255)
    assert img_node.image_path != img_node.metadata["blob_path"]  # a render, not the RGBA original
    assert "TRANSPARENT" in by_modality(nodes)["ocr"][0].text


def test_exif_orientation_applied(settings, blobs, tesseract, files):
    stored = Image.open(files["exif_jpg"])
    assert stored.size == (240, 700)
    nodes = ImageReader.from_defaults(settings, blob_store=blobs, ocr=tesseract).load_data(files["exif_jpg"])
    img_node = by_modality(nodes)["image"][0]
    assert (img_node.metadata["width"], img_node.metadata["height"]) == (700, 240)  # upright
    assert Image.open(img_node.image_path).size == (700, 240)
    ocr = by_modality(nodes)["ocr"][0]
    assert "EXIF" in ocr.text and ocr.metadata["orientation"] == 0  # upright after EXIF, no OSD rotation
    for w in ocr.metadata["words"]:
        assert w["bbox"][2] <= 700 and w["bbox"][3] <= 240


def test_rotated_scan_boxes_in_stored_coordinates(settings, blobs, tesseract, files):
    nodes = ImageReader.from_defaults(settings, blob_store=blobs, ocr=tesseract).load_data(files["rotated_png"])
    ocr = by_modality(nodes)["ocr"][0]
    assert "ROTATED SCAN 2024" in ocr.text
    assert ocr.metadata["orientation"] in (90, 270)
    w, h = ocr.metadata["width"], ocr.metadata["height"]
    assert (w, h) == Image.open(files["rotated_png"]).size == (900, 1200)
    for word in ocr.metadata["words"]:
        x0, y0, x1, y1 = word["bbox"]
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h


def test_large_image_is_tiled_and_downscaled_for_models(blobs, files):
    s = Settings.load(**{"tiling.min_side": 1600, "tiling.tile": 800, "tiling.overlap": 0.25, "ingest.model_max_side": 1024})
    nodes = ImageReader.from_defaults(s, blob_store=blobs).load_data(files["large_png"])
    mods = by_modality(nodes)
    img_node = mods["image"][0]
    assert max(Image.open(img_node.image_path).size) == 1024
    assert img_node.metadata["width"] == 2400  # metadata describes the full-resolution image
    crops = mods["crop"]
    assert len(crops) == 4 * 2  # x starts 0,600,1200,1600; y starts 0,500
    boxes = [c.metadata["bbox"] for c in crops]
    assert max(b[2] for b in boxes) == 2400 and max(b[3] for b in boxes) == 1300
    for c in crops:
        x0, y0, x1, y1 = c.metadata["bbox"]
        crop_img = Image.open(c.image_path)
        assert crop_img.size == (x1 - x0, y1 - y0) == (800, 800)
        assert c.metadata["parent_image_id"] == img_node.node_id
        assert c.node_id.startswith(f"{img_node.metadata['asset_id']}:crop:")
    # The crop shows exactly its region of the original.
    orig = Image.open(files["large_png"]).convert("RGB")
    c = crops[3]
    assert list(Image.open(c.image_path).convert("RGB").getdata())[:50] == list(orig.crop(c.metadata["bbox"]).getdata())[:50]


def test_tiling_disabled(blobs, files):
    s = Settings.load(**{"tiling.enabled": False})
    nodes = ImageReader.from_defaults(s, blob_store=blobs).load_data(files["large_png"])
    assert [n.metadata["modality"] for n in nodes] == ["image"]


@pytest.mark.parametrize("key,mime", [("gif", "image/gif"), ("webp", "image/webp"), ("tiff", "image/tiff"), ("bmp", "image/bmp")])
def test_other_formats(key, mime, settings, blobs, files):
    nodes = ImageReader.from_defaults(settings, blob_store=blobs).load_data(files[key])
    img_node = nodes[0]
    assert img_node.metadata["mime_type"] == mime
    model = Image.open(img_node.image_path)
    assert model.format == "PNG" and model.mode == "RGB"
    if key == "gif":
        assert img_node.metadata["n_frames"] == 3


def test_gif_first_frame_ocr(settings, blobs, tesseract, files):
    nodes = ImageReader.from_defaults(settings, blob_store=blobs, ocr=tesseract).load_data(files["gif"])
    assert "FRAME 0" in by_modality(nodes)["ocr"][0].text


def test_real_photo_has_no_ocr_noise(settings, blobs, tesseract):
    path = DATA_DIR / "skimage_rocket.jpg"
    nodes = ImageReader.from_defaults(settings, blob_store=blobs, ocr=tesseract).load_data(path)
    img_node = nodes[0]
    assert img_node.metadata["mime_type"] == "image/jpeg" and img_node.metadata["width"] == 640
    assert img_node.image_path == img_node.metadata["blob_path"]  # plain upright RGB JPEG: used as is
    for n in nodes[1:]:
        assert n.metadata["modality"] == "ocr" and n.metadata["ocr_conf"] >= 40


def test_decompression_bomb_header(settings, blobs, files):
    with pytest.raises(IngestError) as err:
        ImageReader.from_defaults(settings, blob_store=blobs).load_data(files["bomb_png"])
    assert err.value.path == str(files["bomb_png"])
    assert "decompression bomb: 3600000000 pixels exceeds limit" in err.value.reason


def test_decompression_limit_from_config(blobs, files):
    s = Settings.load(**{"ingest.max_image_pixels": 100_000})  # invoice.png has 360,000 pixels
    with pytest.raises(IngestError, match="decompression bomb: 360000 pixels exceeds limit of 100000"):
        ImageReader.from_defaults(s, blob_store=blobs).load_data(files["invoice_png"])
    # ... and the global limit does not leak into a reader with the default settings.
    assert ImageReader.from_defaults(Settings(), blob_store=blobs).load_data(files["invoice_png"])


def test_truncated_image(settings, blobs, files):
    with pytest.raises(IngestError, match="truncated or corrupt image"):
        ImageReader.from_defaults(settings, blob_store=blobs).load_data(files["truncated_png"])


def test_not_an_image(settings, blobs, files):
    with pytest.raises(IngestError, match="not a supported image"):
        ImageReader.from_defaults(settings, blob_store=blobs).load_data(files["text_as_png"])
