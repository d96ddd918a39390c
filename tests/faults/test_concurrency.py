"""Concurrent ingest and query on one MultiModalRAG; a hung reader does not keep the CLI alive."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time

from mmrag_li.pipeline import MultiModalRAG
from tests.faults.conftest import CLI_ENV, REPO, settings_for
from tests.ingest_checks import assert_store_matches_manifest, small_corpus


def test_ingest_and_query_at_the_same_time(tmp_path, models):
    docs = small_corpus(tmp_path / "docs", n_md=4, n_png=1)
    (docs / "anchor.md").write_text("# Anchor\n\nThe anchor token is KESTREL42 and it stays findable.\n")
    inner = MultiModalRAG(settings_for(tmp_path / "store", batch_files=2), **models).reader()

    class Paced:  # reading takes a little time, so the queries really overlap the ingest
        delay = 0.0

        def __getattr__(self, name):
            return getattr(inner, name)

        def read_file(self, path):
            time.sleep(self.delay)
            return inner.read_file(path)

    paced = Paced()
    rag = MultiModalRAG(settings_for(tmp_path / "store", batch_files=2), reader=paced, **models)
    rag.ingest(docs, progress=False)
    # More work arrives, and the anchor file changes (old nodes replaced mid-run).
    small_corpus(docs, n_md=30, n_png=6, tag="more")
    (docs / "anchor.md").write_text("# Anchor\n\nThe anchor token is KESTREL42, second edition.\n")

    errors, rounds, stop = [], [0], threading.Event()

    def query_loop():
        while not stop.is_set():
            try:
                for q in ("KESTREL42 anchor", "picture code", "topic 3 note"):
                    hits = rag.retrieve(q, k=5)
                    ids = [h.asset_id for h in hits]
                    assert len(ids) == len(set(ids)), ids  # one entry per asset
                    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
                    for h in hits:
                        assert all(n.node.metadata["asset_id"] == h.asset_id for n in h.nodes)
                    if q.startswith("KESTREL42"):
                        # write-then-delete: the anchor is never missing, old or new version
                        assert any(h.source.endswith("anchor.md") for h in hits), ids
                rounds[0] += 1
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(repr(exc))
                return

    paced.delay = 0.15
    t = threading.Thread(target=query_loop)
    t.start()
    try:
        report = rag.ingest(docs, workers=2, progress=False)
    finally:
        stop.set()
        t.join(60)
    assert errors == []
    assert rounds[0] >= 3 and report.failed == []
    assert_store_matches_manifest(rag)
    hits = rag.as_retriever().run_one("bm25", "second edition KESTREL42")
    assert len({h.node.metadata["asset_id"] for h in hits}) == 1  # only the new version remains


def test_cli_process_exits_while_a_reader_thread_is_still_hung(tmp_path):
    docs = small_corpus(tmp_path / "docs", n_md=3, n_png=0)
    (docs / "hang.md").write_text("# Hang\n\nThis one never finishes.\n")
    script = textwrap.dedent(f"""
        import json, threading, time
        from mmrag_li.config import Settings
        from mmrag_li.pipeline import MultiModalRAG

        settings = Settings(store_dir={str(tmp_path / 'store')!r}, ocr={{"kind": "none"}},
                            ingest={{"file_timeout_s": 1}})
        inner = MultiModalRAG(settings).reader()

        class Hanging:
            def __getattr__(self, name):
                return getattr(inner, name)

            def read_file(self, path):
                if "hang" in str(path):
                    threading.Event().wait()  # forever
                return inner.read_file(path)

        rag = MultiModalRAG(settings, reader=Hanging())
        report = rag.ingest({str(docs)!r}, progress=False)
        print(json.dumps(report.to_dict()))
    """)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=CLI_ENV, cwd=REPO,
                          timeout=120)
    took = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [f["reason"] for f in report["failed"]] == ["timed out after 1 s"] and report["nodes"]["text"] == 3
    assert took < 90, took  # the process did not wait for the hung thread
