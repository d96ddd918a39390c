"""DirectoryReader over real folders mixing good and hostile files."""

import os
import shutil
from pathlib import Path

import pytest

from mmrag_li.config import Settings
from mmrag_li.errors import IngestError
from mmrag_li.readers import DirectoryReader
from mmrag_li.readers.fileio import SYMLINK_REASON
from mmrag_li.schema import file_hash

GOOD = ["invoice_png", "rgba_png", "text_pdf", "scanned_pdf", "pdf_as_jpg", "markdown", "latin1_txt", "gif"]
BAD = {
    "empty": "empty file (0 bytes)",
    "truncated_png": "truncated or corrupt image",
    "text_as_png": "not a PNG image: content is text/plain",
    "garbage_png": "not a PNG image: content is application/octet-stream",
    "bomb_png": "decompression bomb: 3600000000 pixels exceeds limit",
    "encrypted_pdf": "encrypted PDF (password required)",
    "truncated_pdf": "truncated PDF",
    "zip": "unsupported file type: application/zip",
}


@pytest.fixture(scope="module")
def mixed_dir(files, tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed")
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / ".hidden_dir").mkdir()
    for i, key in enumerate(GOOD):
        dst = root / ("sub" if i % 2 else "") / ("deeper" if i % 3 == 0 and i % 2 else "") / files[key].name
        shutil.copy(files[key], dst)
    for key in BAD:
        shutil.copy(files[key], root / "sub" / files[key].name)
    shutil.copy(files["plain_txt"], root / ".hidden_dir" / "secret.txt")
    shutil.copy(files["plain_txt"], root / ".dotfile.txt")
    os.symlink(root, root / "sub" / "loop")  # a symlink loop
    os.symlink(files["invoice_png"], root / "link_to_invoice.png")
    return root


def test_mixed_folder_good_nodes_and_every_failure(mixed_dir, files):
    reader = DirectoryReader.from_defaults(Settings(), ocr=None)
    nodes = reader.load_data(mixed_dir)
    got_assets = {n.metadata["asset_id"] for n in nodes}
    for key in GOOD:
        assert file_hash(files[key]) in got_assets, key
    failures = {Path(e.path).name: e.reason for e in reader.failures}
    # the two symbolic links (a folder loop and a file) are reported, not skipped silently
    assert len(reader.failures) == len(BAD) + 2
    assert failures["loop"] == failures["link_to_invoice.png"] == SYMLINK_REASON
    for key, reason in BAD.items():
        assert reason in failures[files[key].name], (key, failures[files[key].name])
    for e in reader.failures:
        assert isinstance(e, IngestError) and Path(e.path).is_absolute() and e.path in str(e)
    sources = {Path(n.metadata["source"]).name for n in nodes}
    assert "secret.txt" not in sources and ".dotfile.txt" not in sources  # hidden excluded by default
    assert "link_to_invoice.png" not in sources  # symlinks not followed by default


def test_content_decides_the_reader(mixed_dir, files):
    reader = DirectoryReader.from_defaults(Settings(), ocr=None)
    nodes = reader.read_file(next(mixed_dir.rglob("actually_a_pdf.jpg")))
    assert {n.metadata["modality"] for n in nodes} == {"page", "text", "image"}
    assert nodes[0].metadata["mime_type"] == "application/pdf"
    assert nodes[0].metadata["extension_mismatch"] == ".jpg file contains application/pdf"


def test_read_file_raises_with_path_and_reason(files):
    reader = DirectoryReader.from_defaults()
    for key, reason in BAD.items():
        with pytest.raises(IngestError) as err:
            reader.read_file(files[key])
        assert err.value.path == str(files[key]) and reason in err.value.reason


def test_iter_files_order_dedup_and_loops(mixed_dir):
    reader = DirectoryReader.from_defaults(Settings.load(**{"ingest.follow_symlinks": True}))
    found = list(reader.iter_files([mixed_dir, mixed_dir / "sub"]))
    assert len(found) == len({os.path.realpath(f) for f in found})  # loop + overlap yield each file once
    names = [f.name for f in found]
    assert "invoice.png" in names and "encrypted.pdf" in names
    assert "secret.txt" not in names
    again = list(reader.iter_files([mixed_dir, mixed_dir / "sub"]))
    assert found == again


def test_include_exclude_and_non_recursive(mixed_dir):
    s = Settings.load(**{"ingest.include": ["**/*.pdf"], "ingest.exclude": ["**/encrypted.*", "**/.*"]})
    names = {f.name for f in DirectoryReader.from_defaults(s).iter_files(mixed_dir)}
    assert names == {"report.pdf", "scanned.pdf", "truncated.pdf", "empty.pdf"}
    top = {f.name for f in DirectoryReader.from_defaults(Settings.load(**{"ingest.recursive": False})).iter_files(mixed_dir)}
    assert top == {"invoice.png", "report.pdf", "actually_a_pdf.jpg", "notes_latin1.txt"}


def test_named_missing_file_is_reported(tmp_path):
    reader = DirectoryReader.from_defaults(input_paths=[tmp_path / "nope.png"])
    assert reader.load_data() == []
    assert [e.reason for e in reader.failures] == ["file not found"]


def test_max_file_mb(files):
    reader = DirectoryReader.from_defaults(Settings.load(**{"ingest.max_file_mb": 0.001}))
    with pytest.raises(IngestError, match="file exceeds max_file_mb"):
        reader.read_file(files["text_pdf"])


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read files without read permission")
def test_permission_denied(tmp_path, files):
    p = tmp_path / "locked.png"
    shutil.copy(files["invoice_png"], p)
    p.chmod(0)
    try:
        with pytest.raises(IngestError, match="permission denied"):
            DirectoryReader.from_defaults().read_file(p)
    finally:
        p.chmod(0o644)


def test_pipeline_usage_with_ocr(files, tesseract, tmp_path):
    """What the pipeline does: from_defaults(settings, blob_store, ocr, captioner), iter_files, read_file."""
    from mmrag_li.blobs import BlobStore

    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(files["invoice_png"], folder)
    shutil.copy(files["text_as_png"], folder)
    reader = DirectoryReader.from_defaults(Settings(), blob_store=BlobStore(tmp_path / "blobs"), ocr=tesseract,
                                           captioner=None)
    ok, failed = {}, {}
    for path in reader.iter_files(folder):
        try:
            ok[path.name] = reader.read_file(path)
        except IngestError as err:
            failed[path.name] = err.reason
    assert set(ok) == {"invoice.png"} and set(failed) == {"fake.png"}
    assert {n.metadata["modality"] for n in ok["invoice.png"]} == {"image", "ocr"}
    assert all(str(tmp_path / "blobs") in n.metadata["blob_path"] for n in ok["invoice.png"])
