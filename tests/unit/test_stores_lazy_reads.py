"""LanceDB collections read through ``lance`` and written through ``lancedb`` (issue 14): the same
answers as the lancedb path, writes visible to reads at once, no ``import lancedb`` for a
read-only open, and the BTREE scalar index on ``metadata.asset_id``. Real on-disk tables, no models."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
from llama_index.core.vector_stores.types import FilterOperator, MetadataFilter, MetadataFilters

from mmrag_li.config import Settings
from mmrag_li.schema import make_text_node
from mmrag_li.stores import LanceModalityVectorStore, ModalityStores

ROOT = Path(__file__).resolve().parents[2]
DIM = 8


def node(asset: str, i: int, text: str, modality: str = "text"):
    n = make_text_node(text, asset_id=asset, source=f"/data/{asset}.md", modality=modality, id_parts=[i])
    v = np.random.default_rng(i).standard_normal(DIM).astype(np.float32)
    n.embedding = (v / np.linalg.norm(v)).tolist()
    return n


def fill(store_dir: Path, n_assets: int = 12) -> ModalityStores:
    s = ModalityStores.from_config(Settings(store_dir=str(store_dir)))
    s.upsert("text", [node(f"a{i % n_assets}", i, f"note {i} about item {i % n_assets}") for i in range(40)])
    s.upsert("ocr", [node(f"a{i}", 100 + i, f"scan {i}", modality="ocr") for i in range(5)])
    return s


def test_reads_equal_the_lancedb_path_and_see_writes_at_once(tmp_path):
    s = fill(tmp_path / "store")
    writer = s.vector_store("text")
    assert isinstance(writer, LanceModalityVectorStore)
    q = node("q", 7, "query").embedding
    flt = MetadataFilters(filters=[MetadataFilter(key="asset_id", value=["a1", "a2", "a7"],
                                                  operator=FilterOperator.IN)])
    for filters in (None, flt):
        lazy = s.query("text", q, 5, filters)
        direct = writer.search(q, 5, filters)
        assert [(h.node.node_id, round(h.score, 6)) for h in lazy] == \
            [(h.node.node_id, round(h.score, 6)) for h in direct]
    assert s.count() == {"image": 0, "caption": 0, "ocr": 5, "text": 40}
    assert s.asset_ids() == {f"a{i}" for i in range(12)}
    before = s.signature()
    s.upsert("text", [node("new", 999, "a fresh note")])  # through lancedb
    assert s.count("text") == {"text": 41} and s.signature() != before  # seen by the lance reader
    assert "new" in s.get_assets_nodes(["new"]) and len(s.get_assets_nodes(["new"])["new"]) == 1
    assert s.delete_asset("new") == 1 and s.count("text") == {"text": 40}
    s.close()


def test_a_read_only_open_never_imports_lancedb(tmp_path):
    fill(tmp_path / "store").close()
    code = textwrap.dedent(f"""
        import json, sys
        from mmrag_li.config import Settings
        from mmrag_li.stores import ModalityStores
        s = ModalityStores.from_config(Settings(store_dir={str(tmp_path / "store")!r}))
        out = {{"count": s.count(), "hits": len(s.query("text", [1.0] + [0.0] * 7, 3)),
               "evidence": len(s.get_assets_nodes(["a1", "a2"])["a1"]), "sig": s.signature() is not None,
               "lancedb": "lancedb" in sys.modules}}
        print(json.dumps(out))
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=str(ROOT), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {"count": {"image": 0, "caption": 0, "ocr": 5, "text": 40}, "hits": 3, "evidence": 5, "sig": True,
                   "lancedb": False}


def test_asset_id_scalar_index_is_created_and_used(tmp_path):
    s = fill(tmp_path / "store")
    tbl = s.vector_store("text").lance_table()

    def indexed():
        return [list(i.columns) for i in tbl.list_indices()]

    assert ["metadata.asset_id"] in indexed()  # created with the table
    tbl.drop_index(tbl.list_indices()[0].name)
    assert indexed() == []
    s.optimize()  # a store made before the index existed gets it on the next compaction
    assert ["metadata.asset_id"] in indexed()
    import lance

    plan = lance.dataset(str(tmp_path / "store" / "lancedb" / "text.lance")).scanner(
        columns=["id"], filter="metadata.asset_id IN ('a1', 'a2')").explain_plan()
    assert "ScalarIndexQuery" in plan
    assert sorted(n.node_id for n in s.get_assets_nodes(["a1"])["a1"]) == sorted(
        n.node_id for n in s.get_asset_nodes("a1"))
    s.close()


def test_a_first_write_killed_before_its_commit_is_not_damage(tmp_path):
    # A process killed while creating a table leaves <collection>.lance with data files but no
    # committed version (seen when the Ray driver was killed mid-run): nothing in it was ever visible,
    # so the store opens, reads it as empty, and the next write creates the table over it.
    fill(tmp_path / "store").close()
    half = tmp_path / "store" / "lancedb" / "caption.lance"
    (half / "data").mkdir(parents=True)
    (half / "data" / "0-interrupted.lance").write_bytes(b"\x00" * 64)
    s = ModalityStores.from_config(Settings(store_dir=str(tmp_path / "store")))
    assert s.count() == {"image": 0, "caption": 0, "ocr": 5, "text": 40}
    s.upsert("caption", [node("c1", 500, "a caption", modality="caption")])
    assert s.count("caption") == {"caption": 1} and set(s.get_assets_nodes(["c1"])) == {"c1"}
    s.close()
