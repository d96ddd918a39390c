import zlib

import pytest

from mmrag_li.readers import FileType, sniff_type
from mmrag_li.readers.directory import glob_match
from mmrag_li.readers.sniff import expected_kind, sniff_bytes

PNG_HEAD = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + b"\x00" * 17
JPEG_HEAD = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 20


@pytest.mark.parametrize("head,suffix,kind,mime", [
    (PNG_HEAD, ".png", "image", "image/png"),
    (PNG_HEAD, ".txt", "image", "image/png"),  # content wins over the extension
    (JPEG_HEAD, ".jpg", "image", "image/jpeg"),
    (b"GIF89a" + b"\x00" * 20, ".gif", "image", "image/gif"),
    (b"RIFF\x00\x00\x00\x00WEBPVP8 " + b"\x00" * 20, ".webp", "image", "image/webp"),
    (b"II*\x00" + b"\x00" * 20, ".tif", "image", "image/tiff"),
    (b"BM" + b"\x00" * 40, ".bmp", "image", "image/bmp"),
    (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", ".jpg", "pdf", "application/pdf"),
    (b"junk before header\n%PDF-1.4\n", ".pdf", "pdf", "application/pdf"),
    ("# Title\n\nSome *markdown* text, naïve café.\n".encode(), ".md", "text", "text/markdown"),
    (b"plain words\n", "", "text", "text/plain"),
    ("Grüße aus Köln, Straße".encode("cp1252") * 5, ".txt", "text", "text/plain"),
    (b"PK\x03\x04" + b"\x00" * 30, ".txt", "unknown", "application/zip"),
    (bytes(range(256)) * 4, ".png", "unknown", "application/octet-stream"),
    (b"", ".txt", "unknown", "application/octet-stream"),
])
def test_sniff_bytes(head, suffix, kind, mime):
    ft = sniff_bytes(head, suffix)
    assert ft == kind and ft.kind == kind
    assert ft.mime == mime


def test_sniff_type_reads_file(tmp_path):
    p = tmp_path / "x.bin"
    p.write_bytes(b"%PDF-1.5\n" + zlib.compress(b"x" * 100))
    ft = sniff_type(p)
    assert isinstance(ft, FileType) and isinstance(ft, str)
    assert (ft, ft.mime) == ("pdf", "application/pdf")


def test_utf8_cut_mid_character_is_still_text():
    data = ("é" * 5000).encode("utf-8")[:8191]  # the sniffed head ends inside a 2-byte character
    assert sniff_bytes(data, ".txt") == "text"


@pytest.mark.parametrize("path,kind", [("a.PNG", "image"), ("b.jpeg", "image"), ("c.pdf", "pdf"), ("d.md", "text"),
                                       ("e.docx", None), ("noext", None)])
def test_expected_kind(path, kind):
    assert expected_kind(path) == kind


@pytest.mark.parametrize("rel,pattern,ok", [
    ("a.png", "**/*", True),
    ("sub/dir/a.png", "**/*", True),
    ("a.png", "**/*.png", True),
    ("sub/a.png", "**/*.png", True),
    ("sub/a.pdf", "**/*.png", False),
    ("sub/a.png", "*.png", True),        # no slash: matches the file name at any depth
    ("sub/a.png", "sub/*.png", True),
    ("sub/deeper/a.png", "sub/*.png", False),
    (".hidden", "**/.*", True),
    ("x/.hidden", "**/.*", True),
    ("x/.git/config", "**/.*/**", True),
    ("x/visible/config", "**/.*/**", False),
    ("img_01.png", "img_0[0-9].png", True),
    ("img_0a.png", "img_0[!a].png", False),
    ("a?b", "a?b", True),
])
def test_glob_match(rel, pattern, ok):
    assert glob_match(rel, pattern) is ok
