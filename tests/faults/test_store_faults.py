"""Store-level faults: read-only store, disk full mid-run, corrupt manifest / cache / LanceDB files."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from mmrag_li.pipeline import IngestAborted, MultiModalRAG
from mmrag_li.stores import ModalityStores
from tests.faults.conftest import CLI_ENV, REPO, cli, settings_for
from tests.ingest_checks import assert_store_matches_manifest, small_corpus, stored_ids


def _snapshot(root: Path):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _readonly_cmd(store: Path, cmd):
    """Run ``cmd`` with ``store`` read-only: a private read-only bind mount when we are root (root
    ignores file modes), else plain file modes."""
    if os.geteuid() == 0:
        if not shutil.which("unshare"):
            pytest.skip("running as root without unshare: cannot make a directory read-only")
        script = 'mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" "$1" && shift && exec "$@"'
        return ["unshare", "-m", "sh", "-c", script, "sh", str(store), *cmd]
    for p in [store, *store.rglob("*")]:
        p.chmod(p.stat().st_mode & ~0o222)
    return list(cmd)


def test_read_only_store_is_a_clear_error_and_loses_nothing(tmp_path, models):
    docs = small_corpus(tmp_path / "docs", n_md=4, n_png=1)
    store = tmp_path / "store"
    rag = MultiModalRAG(settings_for(store), **models)
    rag.ingest(docs, progress=False)
    rag.close()
    (docs / "new.md").write_text("# New\n\nArrives while the store is read-only.\n")
    before = _snapshot(store)
    cmd = _readonly_cmd(store, cli("ingest", str(docs), "--store", str(store), "-q"))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=CLI_ENV, cwd=REPO, timeout=120)
    if os.geteuid() == 0 and "mount" in proc.stderr and "permission" in proc.stderr.lower():
        pytest.skip(f"no mount namespace here: {proc.stderr.strip()}")
    assert proc.returncode == 1, proc.stderr
    assert "is not writable" in proc.stderr and "nothing was changed" in proc.stderr
    assert "Traceback" not in proc.stderr
    # Reading a read-only store still works (the manifest opens read-only).
    stats = subprocess.run(_readonly_cmd(store, cli("stats", "--store", str(store), "--json")), capture_output=True,
                           text=True, env=CLI_ENV, cwd=REPO, timeout=120)
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["assets"] == 5
    for p in [store, *store.rglob("*")]:  # undo the chmod variant
        p.chmod(p.stat().st_mode | 0o200)
    assert _snapshot(store) == before  # not one byte changed
    rag = MultiModalRAG(settings_for(store), **models)
    report = rag.ingest(docs, progress=False)
    assert report.failed == [] and report.skipped_unchanged == 5 and report.nodes["text"] == 1
    assert_store_matches_manifest(rag)


class DiskFullStores:
    """Wraps the real stores at the write boundary: the n-th upsert fails with ENOSPC."""

    def __init__(self, inner: ModalityStores, fail_on: int):
        self.inner = inner
        self.fail_on = fail_on
        self.calls = 0

    def upsert(self, collection, nodes):
        self.calls += 1
        if self.calls >= self.fail_on:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self.inner.upsert(collection, nodes)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_disk_full_keeps_the_batch_pending_and_the_next_run_completes(tmp_path, models):
    docs = small_corpus(tmp_path / "docs", n_md=10, n_png=2)
    store = tmp_path / "store"
    full = DiskFullStores(ModalityStores.lancedb(store), fail_on=4)
    rag = MultiModalRAG(settings_for(store, batch_files=2), stores=full, **models)
    with pytest.raises(IngestAborted) as err:
        rag.ingest(docs, workers=1, progress=False)
    msg = str(err.value)
    assert "No space left on device" in msg and "stay pending" in msg and "Free some disk space" in msg
    counts = rag.manifest.counts()
    assert counts.get("pending") == 2 and counts.get("done", 0) >= 2, counts
    rag.close()

    rag = MultiModalRAG(settings_for(store, batch_files=2), **models)
    report = rag.ingest(docs, progress=False)
    assert report.failed == []
    assert rag.manifest.counts() == {"done": 12}
    assert_store_matches_manifest(rag)


def test_corrupt_manifest_is_rebuilt_from_the_stores(tmp_path, models):
    docs = small_corpus(tmp_path / "docs", n_md=5, n_png=2)
    store = tmp_path / "store"
    rag = MultiModalRAG(settings_for(store), **models)
    rag.ingest(docs, progress=False)
    want = stored_ids(rag.stores)
    rag.close()
    manifest = store / "manifest.sqlite"
    data = bytearray(manifest.read_bytes())
    data[:100] = os.urandom(100)  # the header: "file is not a database"
    manifest.write_bytes(bytes(data))

    rag = MultiModalRAG(settings_for(store), **models)
    report = rag.ingest(docs, progress=False)
    assert report.failed == [] and report.encoded == {"text": 0, "image": 0}
    assert any(f"manifest {manifest} was corrupt" in r and "rebuilt 7 file record(s)" in r for r in report.recovered)
    assert list(store.glob("manifest.sqlite.corrupt-*"))
    assert rag.manifest.counts() == {"done": 7}
    assert assert_store_matches_manifest(rag) == want


def test_damaged_page_inside_the_manifest_is_detected(tmp_path, models):
    from mmrag_li.manifest import Manifest, ManifestCorruptError

    m = Manifest(tmp_path / "m.sqlite")
    m.mark_pending([(f"/f{i}", f"A{i}", 1, 1.0, [f"A{i}:text:{j}" for j in range(3)]) for i in range(300)])
    m.close()
    data = bytearray((tmp_path / "m.sqlite").read_bytes())
    data[8192 + 100:8192 + 1000] = os.urandom(900)
    (tmp_path / "m.sqlite").write_bytes(bytes(data))
    with pytest.raises(ManifestCorruptError) as err:
        Manifest(tmp_path / "m.sqlite")
    assert str(tmp_path / "m.sqlite") in str(err.value) and "integrity check failed" in str(err.value)


def test_corrupt_embedding_cache_is_started_afresh(tmp_path, models):
    docs = small_corpus(tmp_path / "docs", n_md=2, n_png=0)
    store = tmp_path / "store"
    store.mkdir()
    (store / "embedding_cache.sqlite").write_bytes(os.urandom(5000))
    rag = MultiModalRAG(settings_for(store), **models)
    report = rag.ingest(docs, progress=False)
    assert report.failed == [] and any("embedding cache" in r and "was corrupt" in r for r in report.recovered)
    assert_store_matches_manifest(rag)


def test_damaged_lance_file_is_named_with_a_recovery_that_works(tmp_path, models):
    docs = small_corpus(tmp_path / "docs", n_md=6, n_png=2)
    store = tmp_path / "store"
    rag = MultiModalRAG(settings_for(store), **models)
    rag.ingest(docs, progress=False)
    want = stored_ids(rag.stores)
    rag.close()
    table = store / "lancedb" / "text.lance"
    data_file = next((table / "data").glob("*.lance"))
    raw = bytearray(data_file.read_bytes())
    raw[-64:] = os.urandom(64)  # the footer (magic + metadata offsets)
    data_file.write_bytes(bytes(raw))
    (docs / "later.md").write_text("# Later\n\nA file added after the damage.\n")

    # The CLI: exit 1, the damaged file named, a recovery hint, no traceback.
    proc = subprocess.run(cli("ingest", str(docs), "--store", str(store), "-q"), capture_output=True, text=True,
                          env=CLI_ENV, cwd=REPO, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert str(data_file) in proc.stderr and f"mv {table} {table}.damaged" in proc.stderr
    assert "Traceback" not in proc.stderr

    # Following the hint: the files whose text nodes were lost are read again; nothing is re-encoded.
    shutil.move(str(table), str(table) + ".damaged")
    rag = MultiModalRAG(settings_for(store), **models)
    report = rag.ingest(docs, progress=False)
    assert report.failed == [] and any("marked for re-reading" in r for r in report.recovered)
    assert report.encoded["text"] == 1 and report.encoded["image"] == 0  # only the new file
    have = assert_store_matches_manifest(rag)
    added = {a for a in have if a not in want}
    assert len(added) == 1 and {a: have[a] for a in want} == want
