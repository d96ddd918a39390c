"""Shared fixtures. Test inputs are GENERATED here at run time (nothing binary is committed except
the few real files under tests/data/, see its README).

Fonts: DejaVu (Debian/Ubuntu package ``fonts-dejavu-core``; CI installs it). Tesseract with the
eng/deu/osd packs must be installed (``tesseract-ocr tesseract-ocr-eng tesseract-ocr-deu
tesseract-ocr-osd``).
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Dict

import pytest
from PIL import Image, ImageDraw, ImageFont

DATA_DIR = Path(__file__).parent / "data"
FONT_CANDIDATES = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/Library/Fonts/DejaVuSans.ttf",
]

INVOICE_LINES = ["INVOICE 4711", "Customer: Muller GmbH, Berlin", "Total 1,939.00"]
DENSE_TEXT = (
    "The quarterly report summarises revenue, costs and cash flow for every region. "
    "Sales in the northern region grew by twelve percent while costs stayed flat. "
    "Payment terms remain thirty days net from the date of the invoice. "
    "Please quote the invoice number on every transfer to avoid delays in processing. "
)


def font_path() -> str:
    for p in FONT_CANDIDATES:
        if Path(p).exists():
            return p
    pytest.skip("DejaVu fonts missing: apt-get install fonts-dejavu-core")


def font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(font_path(), size)


def render_lines(lines, size=(1000, 400), font_px=44, margin=40, spacing=1.6, bg="white", fg="black",
                 mode="RGB") -> Image.Image:
    img = Image.new(mode, size, bg)
    draw = ImageDraw.Draw(img)
    f = font(font_px)
    y = margin
    for line in lines:
        draw.text((margin, y), line, font=f, fill=fg)
        y += int(font_px * spacing)
    return img


def wrap(text: str, width_chars: int):
    words, lines, cur = text.split(), [], ""
    for w in words:
        if len(cur) + len(w) + 1 > width_chars:
            lines.append(cur)
            cur = w
        else:
            cur = (cur + " " + w).strip()
    if cur:
        lines.append(cur)
    return lines


def dense_page(dpi: int = 200, font_pt: float = 11.0, paragraphs: int = 6) -> Image.Image:
    """A US-letter page at ``dpi`` full of realistic body text (for OCR timing and scanned PDFs)."""
    w, h = int(8.5 * dpi), int(11 * dpi)
    px = int(font_pt / 72 * dpi)
    img = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(img)
    f = font(px)
    margin = int(dpi * 0.9)
    y = margin
    draw.text((margin, y), "INVOICE 4711", font=font(int(px * 1.6)), fill="black")
    y += int(px * 3)
    chars_per_line = int((w - 2 * margin) / (px * 0.52))
    for i in range(paragraphs):
        for line in wrap(DENSE_TEXT * 2, chars_per_line):
            if y > h - margin:
                break
            draw.text((margin, y), line, font=f, fill="black")
            y += int(px * 1.45)
        y += px
    if y < h - margin:
        draw.text((margin, y), "Total 1,939.00", font=f, fill="black")
    return img


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png_bytes(width: int = 60000, height: int = 60000) -> bytes:
    """A ~100-byte PNG whose header claims width x height pixels (a decompression bomb)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    idat = zlib.compress(b"\x00" * 16)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


@pytest.fixture(scope="session")
def fixture_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fixtures")


@pytest.fixture(scope="session")
def files(fixture_dir) -> Dict[str, Path]:
    """Every generated input, by name. Good ones under good/, hostile ones under bad/."""
    import pymupdf

    good = fixture_dir / "good"
    bad = fixture_dir / "bad"
    good.mkdir()
    bad.mkdir()
    out: Dict[str, Path] = {}

    # -- images ------------------------------------------------------------------------------
    invoice = render_lines(INVOICE_LINES, size=(1000, 360))
    out["invoice_png"] = good / "invoice.png"
    invoice.save(out["invoice_png"])

    # A scan lying on its side: text rotated 90 degrees counter-clockwise.
    scan_lines = ["ROTATED SCAN 2024"] + wrap(DENSE_TEXT, 42)[:7]
    scan = render_lines(scan_lines, size=(1200, 900), font_px=36)
    out["rotated_png"] = good / "rotated_scan.png"
    scan.rotate(90, expand=True).save(out["rotated_png"])

    # Black text on a fully transparent background: black on black unless composited on white.
    rgba = render_lines(["TRANSPARENT 8080", "Alpha channel test"], size=(900, 260), bg=(0, 0, 0, 0),
                        fg=(0, 0, 0, 255), mode="RGBA")
    out["rgba_png"] = good / "transparent.png"
    rgba.save(out["rgba_png"])

    # JPEG stored landscape with EXIF orientation 6 (display rotated 90 degrees clockwise).
    stored = render_lines(["EXIF ORIENTED"], size=(700, 240)).rotate(90, expand=True)  # 240 x 700
    exif = Image.Exif()
    exif[0x0112] = 6
    out["exif_jpg"] = good / "exif_rotated.jpg"
    stored.save(out["exif_jpg"], quality=90, exif=exif)

    # Large image: tiled into crops.
    big = Image.new("RGB", (2400, 1300), (200, 220, 240))
    d = ImageDraw.Draw(big)
    for i in range(0, 2400, 150):
        d.rectangle([i, 100, i + 80, 1200], fill=(i % 255, 80, 160))
    out["large_png"] = good / "large.png"
    big.save(out["large_png"], optimize=True)

    out["gif"] = good / "animated.gif"
    frames = [render_lines([f"FRAME {i}"], size=(300, 120), font_px=40) for i in range(3)]
    frames[0].save(out["gif"], save_all=True, append_images=frames[1:], duration=100)

    out["webp"] = good / "invoice.webp"
    invoice.save(out["webp"], quality=90)
    out["tiff"] = good / "invoice.tif"
    invoice.save(out["tiff"])
    out["bmp"] = good / "small.bmp"
    invoice.resize((250, 90)).save(out["bmp"])

    # -- PDFs --------------------------------------------------------------------------------
    photo = DATA_DIR / "skimage_rocket.jpg"
    doc = pymupdf.open()
    p1 = doc.new_page(width=612, height=792)
    y = 72
    for line in ["Quarterly Report 2024", "INVOICE 4711 was paid in full.", "Total 1,939.00 EUR"] + wrap(DENSE_TEXT, 80):
        p1.insert_text((72, y), line, fontsize=11)
        y += 16
    p2 = doc.new_page(width=612, height=792)
    p2.insert_text((72, 72), "Launch photo on page two. The rocket lifts off.", fontsize=11)
    p2.insert_image(pymupdf.Rect(72, 100, 372, 300), filename=str(photo))
    doc.set_metadata({"title": "Quarterly Report"})
    out["text_pdf"] = good / "report.pdf"
    doc.save(out["text_pdf"])
    pdf_bytes = out["text_pdf"].read_bytes()
    doc.close()

    # Scanned page: the only content is an image of text (no text layer).
    page_img = dense_page(dpi=150, paragraphs=2)
    scanned = pymupdf.open()
    sp = scanned.new_page(width=612, height=792)
    import io

    buf = io.BytesIO()
    page_img.convert("L").save(buf, format="PNG")
    sp.insert_image(sp.rect, stream=buf.getvalue())
    out["scanned_pdf"] = good / "scanned.pdf"
    scanned.save(out["scanned_pdf"], deflate=True)
    scanned.close()

    # A .jpg that is really a PDF: read by content, not extension.
    out["pdf_as_jpg"] = good / "actually_a_pdf.jpg"
    out["pdf_as_jpg"].write_bytes(pdf_bytes)

    # -- text --------------------------------------------------------------------------------
    out["markdown"] = good / "guide.md"
    out["markdown"].write_text(
        "# Field Guide\n\nIntro paragraph about the guide.\n\n"
        "## Installation\n\nRun the installer and accept the license. " + DENSE_TEXT + "\n\n"
        "### Offline mode\n\nSet HF_HUB_OFFLINE=1 before starting.\n\n"
        "```\n# not a header inside code\n```\n\n"
        "## Troubleshooting\n\nIf tesseract is missing install tesseract-ocr.\n",
        encoding="utf-8",
    )
    out["latin1_txt"] = good / "notes_latin1.txt"
    out["latin1_txt"].write_bytes("Grüße aus Köln. Die Rechnung über 1.939,00 € ist bezahlt. Straße, Maß, Übung.\n".encode("cp1252"))
    out["plain_txt"] = good / "plain.txt"
    out["plain_txt"].write_text("Plain UTF-8 text about invoices and rockets.\n", encoding="utf-8")

    # -- hostile files -------------------------------------------------------------------------
    out["empty"] = bad / "empty.pdf"
    out["empty"].write_bytes(b"")
    png_bytes = out["invoice_png"].read_bytes()
    out["truncated_png"] = bad / "truncated.png"
    out["truncated_png"].write_bytes(png_bytes[: len(png_bytes) // 2])
    out["text_as_png"] = bad / "fake.png"
    out["text_as_png"].write_text("this is not an image, just some text pretending\n")
    out["garbage_png"] = bad / "garbage.png"
    out["garbage_png"].write_bytes(bytes(range(256)) * 8)
    out["bomb_png"] = bad / "bomb.png"
    out["bomb_png"].write_bytes(bomb_png_bytes())
    enc = pymupdf.open(out["text_pdf"])
    out["encrypted_pdf"] = bad / "encrypted.pdf"
    enc.save(out["encrypted_pdf"], encryption=pymupdf.PDF_ENCRYPT_AES_256, user_pw="x", owner_pw="y")
    enc.close()
    out["truncated_pdf"] = bad / "truncated.pdf"
    out["truncated_pdf"].write_bytes(pdf_bytes[: len(pdf_bytes) // 3])
    out["zip"] = bad / "archive.zip"
    import zipfile

    with zipfile.ZipFile(out["zip"], "w") as zf:
        zf.writestr("a.txt", "hello")
    return out


@pytest.fixture(scope="session")
def tesseract():
    from mmrag_li.config import TesseractOCRConfig
    from mmrag_li.enrich.ocr import get_ocr_engine

    return get_ocr_engine(TesseractOCRConfig(lang="eng"))


@pytest.fixture(scope="session")
def rapidocr():
    """Loaded once per session (model load + first-call warm-up are the slow part)."""
    from mmrag_li.config import RapidOCRConfig
    from mmrag_li.enrich.ocr import get_ocr_engine

    return get_ocr_engine(RapidOCRConfig())


@pytest.fixture()
def blobs(tmp_path):
    from mmrag_li.blobs import BlobStore

    return BlobStore(tmp_path / "blobs")


@pytest.fixture()
def settings():
    from mmrag_li.config import Settings

    return Settings()
