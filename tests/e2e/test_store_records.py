"""A store's rows read as NodeRecords (the keyword index's fast path, issue 14) are the stored nodes:
same ids, text, metadata and type, and a packed record rebuilds the node exactly."""

from __future__ import annotations

from llama_index.core.schema import MetadataMode

from mmrag_li.guard.views import GuardedStores
from mmrag_li.retrieval.packed_nodes import PackedNodes
from mmrag_li.schema import COLLECTIONS
from mmrag_li.stores import ModalityStores
from tests.e2e.conftest import mmrag


def test_records_are_the_stored_nodes(store):
    stores = ModalityStores.lancedb(str(store))
    try:
        total = 0
        for c in COLLECTIONS:
            records, nodes = list(stores.all_records(c)), list(stores.all_nodes(c))
            assert [r.node_id for r in records] == [n.node_id for n in nodes]
            packed = PackedNodes()
            for i, (r, n) in enumerate(zip(records, nodes)):
                assert (r.text, r.metadata, r.node_type) == (n.get_content(MetadataMode.NONE), n.metadata, n.class_name())
                packed.append(r)
                assert packed.node(i).model_dump() == n.model_dump()
            total += len(records)
        assert total > 10
        # a tenant view sees the records of its own collections only
        hidden = GuardedStores.wrap(stores, ["no-such-collection"])
        assert list(GuardedStores.wrap(stores, ["default"]).all_records("text")) == list(stores.all_records("text"))
        assert all(list(hidden.all_records(c)) == [] for c in COLLECTIONS)
    finally:
        stores.close()


def test_search_prints_no_store_library_warnings(store):
    """A person reads stderr: the store reads must not make lance print warnings on every search
    (a projection without ``_distance`` did, once per vector retriever)."""
    proc = mmrag("search", "invoice 4711", "--store", str(store))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "WARN" not in proc.stderr and "Deprecation" not in proc.stderr, proc.stderr[-2000:]
    assert "invoice_4711.png" in proc.stdout
