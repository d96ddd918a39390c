"""Polyglot detection: a second format hiding in a file that is read as its first format."""

import io
import zipfile

from PIL import Image

from mmrag_li.readers.polyglot import polyglot_note


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), "white").save(buf, format="PNG")
    return buf.getvalue()


def _zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("payload.txt", "hello")
    return buf.getvalue()


def test_png_with_zip_appended(tmp_path):
    p = tmp_path / "both.png"
    p.write_bytes(_png() + _zip())
    assert zipfile.is_zipfile(p)  # really both formats
    note = polyglot_note(p, "image/png")
    assert note.startswith("read as image/png;") and "trailing bytes after the PNG IEND chunk (application/zip)" in note


def test_jpeg_with_pdf_header_and_plain_files(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), "white").save(buf, format="JPEG", comment=b"%PDF-1.4 hidden")
    p = tmp_path / "both.jpg"
    p.write_bytes(buf.getvalue())
    assert "a PDF header at byte" in polyglot_note(p, "image/jpeg")
    plain = tmp_path / "plain.png"
    plain.write_bytes(_png())
    assert polyglot_note(plain, "image/png") is None


def test_pdf_with_prefix(tmp_path):
    p = tmp_path / "x.pdf"
    p.write_bytes(b"GIF89a" + b"\x00" * 10 + b"%PDF-1.4\n%%EOF\n")
    assert "16 bytes before the PDF header" in polyglot_note(p, "application/pdf")
