"""Issue 12 §3, §5 and unguarded writes, on real files, LanceDB and the real CLI:

* ``--prune`` deletes only files it saw gone: an unreadable subfolder, a missing root or an empty
  mount point prune nothing under them and say so (``prune_skipped``);
* deleted / replaced data is in no file under the store after ``delete`` / ``gc`` (bytes grepped
  across the whole store directory: LanceDB data files, blobs, manifest, logs);
* with ``ingest.redact_pii`` PII from a text file, a PDF (text layer and metadata), a file name and a
  question is in no file under the store;
* a caller limited by ``retrieval.allowed_collections`` cannot ingest into, prune, reconcile or
  delete another collection (a private/public pair).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pymupdf
import pytest

from mmrag_li.config import Settings
from mmrag_li.ingest.errors import CollectionNotAllowedError
from mmrag_li.pipeline import MultiModalRAG
from mmrag_li.schema import file_hash
from tests.ingest_checks import assert_store_matches_manifest, small_corpus, text_png

REPO = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, MMRAG_OCR__KIND="none", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Load the offline models once for the module; each test gets its own store."""
    rag = MultiModalRAG(Settings(store_dir=str(tmp_path_factory.mktemp("models"))))
    return {"text_embed": rag.text_embed, "clip_embed": rag.clip_embed, "captioner": rag.captioner}


def make_rag(store: Path, models, ocr: str = "none", retrieval=None, store_cfg=None, **ingest) -> MultiModalRAG:
    settings = Settings(store_dir=str(store), ocr={"kind": ocr}, ingest=ingest, retrieval=retrieval or {},
                        store=store_cfg or {})
    return MultiModalRAG(settings, **models)


def cli(*args: str, store: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mmrag_li.cli", *args, "--store", str(store)],
                          capture_output=True, text=True, env=ENV, cwd=REPO, timeout=300)


def files_holding(root: Path, needle: str) -> list:
    """Every file under ``root`` whose bytes contain ``needle`` (like ``grep -rla``)."""
    data = needle.encode("utf-8")
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and data in p.read_bytes())


def asset_ids(rag) -> set:
    return {r.asset_id for r in rag.manifest.all()}


# ---- §3: prune deletes only what it could read ------------------------------------------------------
def test_prune_keeps_what_sits_in_an_unreadable_folder(tmp_path, models, monkeypatch):
    docs = small_corpus(tmp_path / "docs", n_md=3, n_png=0)
    locked = small_corpus(docs / "locked", n_md=2, n_png=0, tag="inner")
    rag = make_rag(tmp_path / "store", models)
    assert rag.ingest(docs, progress=False).failed == []
    inner_gone = file_hash(locked / "inner_000.md")
    (docs / "doc_000.md").unlink()  # really gone, in a folder that can be read: pruned
    (locked / "inner_000.md").unlink()  # gone too, but its folder cannot be read below: kept
    locked.chmod(0)
    if os.geteuid() == 0:
        # Test double: root reads any folder whatever its mode, so answer the listing of `locked`
        # as the kernel answers an ordinary user (EACCES); the rest of the walk is the real one.
        real_scandir = os.scandir

        def scandir(path="."):
            if isinstance(path, (str, bytes, os.PathLike)) and os.path.realpath(path) == str(locked.resolve()):
                raise PermissionError(13, "Permission denied", os.fspath(path))
            return real_scandir(path)

        monkeypatch.setattr(os, "scandir", scandir)
    try:
        report = rag.ingest(docs, prune=True, progress=False)
    finally:
        locked.chmod(0o755)
    assert report.pruned == 1
    assert report.prune_skipped == [{"path": str(locked), "reason": "permission denied: the 2 stored file(s) "
                                                                     "under it were not pruned"}]
    assert {"path": str(locked), "reason": "permission denied"} in report.failed
    assert inner_gone in asset_ids(rag) and rag.stores.get_asset_nodes(inner_gone)
    assert rag.manifest.get(str((docs / "doc_000.md").resolve())) is None
    assert_store_matches_manifest(rag)


def test_prune_with_a_missing_or_empty_root_prunes_nothing_cli(tmp_path, models):
    docs = small_corpus(tmp_path / "docs", n_md=3, n_png=1)
    store = tmp_path / "store"
    rag = make_rag(store, models)
    rag.ingest(docs, progress=False)
    before = asset_ids(rag)
    rag.close()

    docs.rename(tmp_path / "docs-moved")  # the folder is gone (unmounted disk, typo, moved)
    proc = cli("ingest", "-q", str(docs), "--prune", "--json", store=store)
    assert proc.returncode == 3, proc.stderr  # the root itself is reported as failed
    out = json.loads(proc.stdout)
    assert out["pruned"] == 0 and out["failed"] == [{"path": str(docs), "reason": "no such file or directory"}]
    assert [s["path"] for s in out["prune_skipped"]] == [str(docs)]
    assert "none of the 4 stored file(s) under it were pruned" in out["prune_skipped"][0]["reason"]
    human = cli("ingest", "-q", str(docs), "--prune", store=store)
    assert human.returncode == 3, human.stderr
    line = next(ln for ln in human.stdout.splitlines() if ln.startswith("NOT PRUNED under "))
    shown, reason = line[len("NOT PRUNED under "):].split(": ", 1)  # the path as the CLI shows it (maybe relative)
    assert os.path.normpath(os.path.join(REPO, shown)) == str(docs) and reason.startswith("no such file or directory")

    docs.mkdir()  # an empty mount point looks exactly like this
    proc = cli("ingest", "-q", str(docs), "--prune", "--json", store=store)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["pruned"] == 0 and "lists no file" in out["prune_skipped"][0]["reason"]

    rag = make_rag(store, models)
    assert asset_ids(rag) == before and rag.prune([docs]) == 0 and asset_ids(rag) == before
    assert_store_matches_manifest(rag)


# ---- §5: deleted and replaced data stays gone --------------------------------------------------------
def test_delete_prune_and_gc_leave_no_copy_in_the_store(tmp_path, models):
    docs = small_corpus(tmp_path / "docs", n_md=4, n_png=1)
    (docs / "secret.md").write_text("# Secret\n\nThe passphrase is xylophonequartz.\n", encoding="utf-8")
    (docs / "leaving.md").write_text("# Leaving\n\nThe code word is marmaladetiger.\n", encoding="utf-8")
    (docs / "changing.md").write_text("# Draft\n\nFirst draft says plumbagoviolet.\n", encoding="utf-8")
    text_png(docs / "picture.png", ["QUOKKAZEBRA"])
    store = tmp_path / "store"
    rag = make_rag(store, models, ocr="tesseract", store_cfg={"keep_versions": True})
    assert rag.ingest(docs, progress=False).failed == []
    for word in ("xylophonequartz", "QUOKKAZEBRA", "marmaladetiger", "plumbagoviolet"):
        assert files_holding(store, word), word  # the test can see a copy when there is one

    # keep_versions: true -- delete removes the rows and blobs, old table versions still hold them
    secret = rag.resolve_asset(str(docs / "secret.md"))
    assert rag.delete(secret) > 0
    assert not any(f.startswith("blobs/") for f in files_holding(store, "xylophonequartz"))
    assert any(f.endswith(".lance") for f in files_holding(store, "xylophonequartz"))
    gc = rag.gc(grace_s=0)
    assert gc["versions_removed"] > 0 and gc["version_bytes_freed"] > 0 and gc["bytes_freed"] >= gc["version_bytes_freed"]
    assert files_holding(store, "xylophonequartz") == []

    # default (keep_versions: false) -- delete, prune and a changed file leave nothing behind by themselves
    rag.settings.store.keep_versions = False
    picture = rag.resolve_asset(str(docs / "picture.png"))
    picture_blobs = sorted(p.name for p in (store / "blobs").rglob(f"{picture}*"))
    assert any(".png" in n for n in picture_blobs) and any(n.endswith(".jpg") for n in picture_blobs)
    assert rag.delete(picture) > 0
    assert files_holding(store, "QUOKKAZEBRA") == [] and not list((store / "blobs").rglob(f"{picture}*"))

    (docs / "leaving.md").unlink()
    (docs / "changing.md").write_text("# Draft\n\nSecond draft says nothing.\n", encoding="utf-8")
    report = rag.ingest(docs, prune=True, progress=False)
    assert report.pruned == 1 and report.changed == 1 and report.prune_skipped == []
    assert files_holding(store, "marmaladetiger") == []
    assert [f for f in files_holding(store, "plumbagoviolet") if not f.startswith("blobs/")] == []

    # gc: the replaced original, a stray blob of an interrupted write; a fresh one is left alone
    stale = store / "blobs" / "originals" / "ab" / "ab00stray.md"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_text("abandoned plumbagoviolet", encoding="utf-8")
    for blob in (store / "blobs").rglob("*"):  # an hour passes
        os.utime(blob, (time.time() - 3600, time.time() - 3600))
    fresh = store / "blobs" / "renders" / "cd" / "cd00fresh.png"
    fresh.parent.mkdir(parents=True, exist_ok=True)
    fresh.write_bytes(b"an ingest elsewhere is about to reference this")
    gc = rag.gc()  # default grace (store.gc_grace_s)
    assert gc["blobs_kept_recent"] == 1 and fresh.exists() and not stale.exists()
    assert gc["blobs_removed"] >= 2 and gc["blob_bytes_freed"] > 0  # the stray + the first draft's original
    assert files_holding(store, "plumbagoviolet") == []
    assert rag.gc(grace_s=0)["blobs_removed"] == 1 and not fresh.exists()

    # what is still stored is intact: every blob a node references exists
    for c in ("image", "caption", "ocr", "text"):
        for node in rag.stores.all_nodes(c):
            for key in ("blob_path", "thumbnail_path"):
                if node.metadata.get(key):
                    assert Path(node.metadata[key]).exists(), (node.node_id, key)
    assert_store_matches_manifest(rag)


def test_gc_cli(tmp_path, models):
    docs = small_corpus(tmp_path / "docs", n_md=2, n_png=0)
    store = tmp_path / "store"
    rag = make_rag(store, models)
    rag.ingest(docs, progress=False)
    rag.close()
    stray = store / "blobs" / "originals" / "ee" / "ee00stray.md"
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_text("left behind", encoding="utf-8")
    os.utime(stray, (time.time() - 7200, time.time() - 7200))
    proc = cli("gc", "--json", store=store)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["blobs_removed"] == 1 and out["blob_bytes_freed"] == len("left behind") and not stray.exists()
    assert {"versions_removed", "version_bytes_freed", "bytes_freed", "blobs_kept_recent"} <= set(out)
    human = cli("gc", "--grace", "0", store=store)
    assert human.returncode == 0 and human.stdout.startswith("removed 0 unreferenced blob(s)"), human.stderr


# ---- §5: with redaction on, PII is in no file under the store --------------------------------------------
PII = ("DE89 3704 0044 0532 0130 00", "zed.quux@example.com", "jane.roe@example.com", "kim.lee@example.org",
       "sam.ok@example.net", "+44 20 7946 0958")


def pii_corpus(docs: Path) -> Path:
    docs.mkdir(parents=True)
    (docs / "note.md").write_text("# Note\n\nPay to DE89 3704 0044 0532 0130 00 soon. Mail zed.quux@example.com "
                                  "about the garden invoice.\n", encoding="utf-8")
    (docs / "jane.roe@example.com_cv.md").write_text("# CV\n\nA curriculum vitae about gardening.\n",
                                                     encoding="utf-8")
    pdf = pymupdf.open()
    page = pdf.new_page()
    page.insert_text((72, 72), "Garden invoice for kim.lee@example.org, call +44 20 7946 0958.")
    pdf.set_metadata({"author": "kim.lee@example.org", "title": "Invoice kim.lee@example.org"})
    pdf.save(docs / "invoice.pdf")
    return docs


@pytest.mark.parametrize("keep", [None, "redacted"])
def test_redaction_leaves_no_pii_in_any_file_of_the_store(tmp_path, models, keep):
    docs = pii_corpus(tmp_path / "docs")
    store = tmp_path / "store"
    rag = make_rag(store, models, redact_pii=True, keep_originals=keep)
    report = rag.ingest(docs, progress=False)
    assert report.failed == [] and report.files == 3
    resp = rag.query("Which IBAN DE89 3704 0044 0532 0130 00 belongs to sam.ok@example.net?")
    assert resp is not None and (store / "logs" / "queries.jsonl").exists()
    cv = docs / "jane.roe@example.com_cv.md"
    shown = rag.inspect(str(cv))  # found by its path, shown redacted
    assert shown["source"].endswith("[EMAIL]_cv.md") and shown["nodes"]
    rag.close()
    for secret in PII:
        assert files_holding(store, secret) == [], secret
    log = (store / "logs" / "queries.jsonl").read_text(encoding="utf-8")
    assert "[IBAN]" in log and "[EMAIL]" in log
    originals = sorted(p.name for p in (store / "blobs" / "originals").rglob("*")) if (
        store / "blobs" / "originals").exists() else []
    if keep == "redacted":  # a redacted copy of each text/PDF file, no verbatim one
        assert len([n for n in originals if n.endswith("-redacted.pdf")]) == 1
        assert len([n for n in originals if n.endswith("-redacted.md")]) == 1  # note.md; the CV held none
        note = next(p for p in (store / "blobs" / "originals").rglob("*-redacted.md"))
        assert "[IBAN]" in note.read_text(encoding="utf-8")
        red_pdf = pymupdf.open(next((store / "blobs" / "originals").rglob("*-redacted.pdf")))
        assert "kim.lee" not in red_pdf[0].get_text() and not (red_pdf.metadata or {}).get("author")
    else:  # default with redaction: no copies of originals at all
        assert originals == []

    # the pseudonymous manifest key is stable: nothing is re-read; a gone PII-named file is pruned
    rag = make_rag(store, models, redact_pii=True, keep_originals=keep)
    again = rag.ingest(docs, progress=False)
    assert again.skipped_unchanged == 3 and again.new == again.changed == 0
    cv.unlink()
    assert rag.ingest(docs, prune=True, progress=False).pruned == 1
    assert_store_matches_manifest(rag)


def test_turning_redaction_on_removes_the_earlier_copies(tmp_path, models):
    docs = pii_corpus(tmp_path / "docs")
    store = tmp_path / "store"
    rag = make_rag(store, models)
    rag.ingest(docs, progress=False)
    assert files_holding(store, "jane.roe@example.com") and files_holding(store, "zed.quux@example.com")
    rag.close()
    rag = make_rag(store, models, redact_pii=True)
    report = rag.ingest(docs, progress=False)
    assert report.changed == 3 and report.failed == []
    assert rag.gc(grace_s=0)["blobs_removed"] >= 3  # the verbatim originals of the first run
    rag.close()
    for secret in PII[:4]:
        assert files_holding(store, secret) == [], secret


# ---- unguarded writes: a tenant cannot write into another collection -------------------------------------
def test_tenant_guard_limits_ingest_prune_reconcile_and_delete(tmp_path, models):
    priv = small_corpus(tmp_path / "private", n_md=3, n_png=0, tag="priv")
    pub = small_corpus(tmp_path / "public", n_md=2, n_png=0, tag="pub")
    store = tmp_path / "store"
    admin = make_rag(store, models)
    admin.ingest(priv, collection="private", progress=False)
    admin.ingest(pub, collection="public", progress=False)
    private_assets = {r.asset_id for r in admin.manifest.all() if r.collection == "private"}
    counts = admin.stores.count()
    admin.close()

    cfg = tmp_path / "public.yaml"
    cfg.write_text("retrieval:\n  allowed_collections: [public]\n", encoding="utf-8")
    proc = cli("ingest", "-q", str(priv), "--collection", "private", "--config", str(cfg), "--json", store=store)
    assert proc.returncode == 1 and "allowed_collections" in proc.stderr and proc.stdout == ""

    tenant = make_rag(store, models, retrieval={"allowed_collections": ["public"]})
    with pytest.raises(CollectionNotAllowedError):
        tenant.ingest(priv, collection="private", progress=False)
    (priv / "priv_000.md").unlink()
    report = tenant.ingest(priv, collection="public", prune=True, progress=False)  # rows of `private` untouched
    assert report.pruned == 0 and sum(report.nodes.values()) == 0
    assert sorted(Path(f["path"]).name for f in report.failed) == ["priv_001.md", "priv_002.md"]
    assert all("outside retrieval.allowed_collections" in f["reason"] for f in report.failed)
    assert tenant.prune([priv]) == 0
    for asset in private_assets:
        assert tenant.delete(asset) == 0
    gone_row = tenant.manifest.get(str((priv / "priv_002.md").resolve()))
    tenant.manifest.remove(gone_row.source)  # its nodes are now untracked: an orphan for reconcile
    assert tenant.reconcile() == []
    assert tenant.stores.count() == counts and {a for a in tenant.stores.asset_ids()} >= private_assets
    tenant.close()

    denied = make_rag(store, models, retrieval={"allowed_collections": []})
    with pytest.raises(CollectionNotAllowedError, match=r"allows only \[none\]"):
        denied.ingest(pub, collection="public", progress=False)
    denied.close()

    admin = make_rag(store, models)  # unrestricted: the same operations do act
    assert any("deleted the nodes of 1 asset" in n for n in admin.reconcile())
    assert admin.prune([priv]) == 1
    assert {Path(r.source).name for r in admin.manifest.all() if r.collection == "private"} == {"priv_001.md"}
    assert admin.stores.get_asset_nodes(gone_row.asset_id) == []
    assert_store_matches_manifest(admin)
