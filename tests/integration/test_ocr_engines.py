"""Real tesseract and RapidOCR on rendered and real images: words, boxes, confidence, orientation."""

import pytest
from PIL import Image

from mmrag_li.config import NoOCRConfig, RapidOCRConfig, Settings, TesseractOCRConfig
from mmrag_li.enrich.ocr import OCRError, RapidOCREngine, TesseractOCR, get_ocr_engine
from mmrag_li.enrich.types import OCREngine
from mmrag_li.errors import ModelUnavailableError

from ..conftest import DATA_DIR


def words_of(result):
    return {w.text for w in result.words}


def find(result, text):
    hits = [w for w in result.words if text in w.text]
    assert hits, f"{text!r} not among {[w.text for w in result.words]}"
    return hits[0]


def check_boxes(result, img):
    assert result.width == img.width and result.height == img.height
    for w in result.words:
        x0, y0, x1, y1 = w.bbox
        assert 0 <= x0 < x1 <= img.width and 0 <= y0 < y1 <= img.height, w
        assert 0 <= w.conf <= 100
        assert 0 <= w.line < len(result.lines)


@pytest.fixture(params=["tesseract", "rapidocr"])
def engine(request):
    return request.getfixturevalue(request.param)


def test_protocol_and_factory(tesseract, rapidocr):
    assert isinstance(tesseract, OCREngine) and isinstance(rapidocr, OCREngine)
    assert tesseract.version.startswith(("4.", "5.")) and rapidocr.version
    assert get_ocr_engine(NoOCRConfig()) is None
    # Built once, then shared; `kind` picks the engine (a mapping, a typed config or settings.ocr).
    assert get_ocr_engine(RapidOCRConfig()) is rapidocr
    assert get_ocr_engine({"kind": "rapidocr"}) is rapidocr
    assert get_ocr_engine(TesseractOCRConfig(lang="eng")) is tesseract
    assert get_ocr_engine(Settings(ocr={"kind": "tesseract", "lang": "eng"}).ocr) is tesseract
    assert isinstance(get_ocr_engine(Settings.load("default", **{"ocr.kind": "rapidocr"}).ocr), RapidOCREngine)


def test_invoice_words_with_boxes(engine, files):
    img = Image.open(files["invoice_png"])
    result = engine.recognize(img)
    check_boxes(result, img)
    assert "4711" in result.text and "1,939.00" in result.text
    w = find(result, "4711")
    # "INVOICE 4711" is drawn on the first line, 40 px from the top-left corner, 44 px font.
    assert w.bbox[1] < 110 and w.bbox[3] > 40 and w.bbox[0] >= 30
    total = find(result, "1,939.00")
    assert total.bbox[1] > w.bbox[3]  # the total is below the heading
    assert result.mean_conf > 70
    assert result.engine == engine.name and result.engine_version == engine.version


def test_words_are_words(engine, files):
    """RapidOCR's recogniser drops spaces ("INVOICE4711"); they are restored from pixel gaps."""
    result = engine.recognize(Image.open(files["invoice_png"]))
    assert {"INVOICE", "4711", "Total", "1,939.00"} <= words_of(result)
    assert result.lines[0] == "INVOICE 4711"
    inv, num = find(result, "INVOICE"), find(result, "4711")
    assert inv.line == num.line and inv.bbox[2] <= num.bbox[0]  # same line, left to right


def test_rotated_scan_is_read_upright(engine, files):
    img = Image.open(files["rotated_png"])  # text runs bottom-to-top
    result = engine.recognize(img)
    assert result.orientation in (90, 270)
    assert "2024" in result.text and "ROTATED" in result.text.replace(" ", "")
    check_boxes(result, img)
    # Boxes are in the stored (sideways) image: a word is taller than wide there.
    w = find(result, "ROTATED")
    assert (w.bbox[3] - w.bbox[1]) > (w.bbox[2] - w.bbox[0])


def test_upside_down_page(tesseract):
    from ..conftest import render_lines

    img = render_lines(["UPSIDE DOWN PAGE", "second line of text here", "third line 12345 ok"],
                       size=(900, 300), font_px=36).rotate(180)
    result = tesseract.recognize(img)
    assert result.orientation == 180
    assert result.lines[0] == "UPSIDE DOWN PAGE"


def test_transparent_background_composited_on_white(engine, files):
    img = Image.open(files["rgba_png"])
    assert img.mode == "RGBA"
    result = engine.recognize(img)
    assert "TRANSPARENT" in result.text and "channel" in result.text
    # Composited on black, black text would vanish: the engine must see it on white.


def test_real_scan_with_uneven_light(engine):
    img = Image.open(DATA_DIR / "skimage_page.png")
    result = engine.recognize(img)
    text = result.text.lower()
    for word in ("segmentation", "markers", "background"):
        assert word in text
    check_boxes(result, img)


def test_small_image_upscaled_boxes_in_original_coordinates(tesseract, files):
    img = Image.open(files["invoice_png"]).resize((500, 180), Image.Resampling.LANCZOS)
    result = tesseract.recognize(img)
    check_boxes(result, img)
    w = find(result, "4711")
    assert w.bbox[3] < 60  # the first line of a 180 px high image, not of the 2x working copy


def test_min_conf_drops_words(files):
    img = Image.open(files["invoice_png"])
    strict = TesseractOCR(min_conf=99.9).recognize(img)
    loose = TesseractOCR(min_conf=0).recognize(img)
    assert len(strict.words) < len(loose.words)
    assert all(w.conf >= 99.9 for w in strict.words)


def test_blank_image_gives_empty_result(engine):
    result = engine.recognize(Image.new("RGB", (400, 300), "white"))
    assert result.words == [] and result.text == "" and result.orientation == 0


def test_two_languages(files):
    ocr = TesseractOCR(lang="eng+deu")
    assert ocr.lang == "eng+deu"
    from ..conftest import render_lines

    result = ocr.recognize(render_lines(["Grüße aus Köln", "Straße 12"], size=(800, 220)))
    assert "Grüße" in result.text and "Straße" in result.text
    assert result.lang == "eng+deu"


def test_missing_language_pack_names_apt_package():
    with pytest.raises(ModelUnavailableError, match=r"tesseract-ocr-xyz"):
        TesseractOCR(lang="eng+xyz")


def test_missing_binary(monkeypatch):
    import pytesseract

    monkeypatch.setattr(pytesseract.pytesseract, "tesseract_cmd", "/nonexistent/tesseract")
    with pytest.raises(ModelUnavailableError, match="tesseract binary not found"):
        TesseractOCR()


def test_timeout_raises_ocr_error(files):
    from ..conftest import dense_page

    slow = TesseractOCR(timeout_s=0.01, detect_orientation=False)
    with pytest.raises(OCRError, match="timed out"):
        slow.recognize(dense_page(dpi=100, paragraphs=1))


def test_rapidocr_splits_lines_into_word_boxes(rapidocr, files):
    img = Image.open(files["invoice_png"])
    result = rapidocr.recognize(img)
    assert isinstance(rapidocr, RapidOCREngine)
    assert "Customer: Muller GmbH, Berlin" in result.lines
    multi = [i for i, line in enumerate(result.lines) if len(line.split()) > 1]
    assert multi, result.lines  # "Customer: Muller GmbH, Berlin" is one detected line of several words
    for i in multi:
        ws = [w for w in result.words if w.line == i]
        assert " ".join(w.text for w in ws) == " ".join(result.lines[i].split())
        for a, b in zip(ws, ws[1:]):
            assert a.bbox[2] <= b.bbox[0] + 2  # left to right, not overlapping
            assert a.bbox[1] == b.bbox[1] and a.bbox[3] == b.bbox[3]  # same line band


def test_tesseract_children_run_single_threaded(tesseract, monkeypatch):
    import os

    import pytesseract

    env = pytesseract.pytesseract.environ
    if "OMP_THREAD_LIMIT" in os.environ:
        pytest.skip("user set OMP_THREAD_LIMIT; left alone")
    assert env["OMP_THREAD_LIMIT"] == "1"
    monkeypatch.setenv("MMRAG_PROBE", "live")  # the overlay follows later changes to os.environ
    assert env["MMRAG_PROBE"] == "live" and "OMP_THREAD_LIMIT" not in os.environ
