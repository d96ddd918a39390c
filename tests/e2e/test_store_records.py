"""A store's rows read as NodeRecords (the keyword index's fast path, issue 14) are the stored nodes:
same ids, text, metadata and type, and a packed record rebuilds the node exactly."""

from __future__ import annotations

from llama_index.core.schema import MetadataMode

from mmrag_li.guard.views import GuardedStores
from mmrag_li.retrieval.packed_nodes import PackedNodes
from mmrag_li.schema import COLLECTIONS
from mmrag_li.stores import ModalityStores


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
