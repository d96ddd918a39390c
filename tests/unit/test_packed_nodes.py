"""The keyword index keeps its nodes packed (issue 14, memory): every node comes back equal to what
went in, metadata filters see the same metadata, and 20k chunks cost a fraction of the objects."""

from __future__ import annotations

import gc
import tracemalloc

from llama_index.core.schema import ImageNode, NodeRelationship, RelatedNodeInfo, TextNode
from llama_index.core.vector_stores.types import FilterOperator, MetadataFilter, MetadataFilters

from mmrag_li.retrieval.bm25 import BM25Index, compile_filters
from mmrag_li.retrieval.packed_nodes import PackedNodes
from mmrag_li.stores.nodes import record_from_row, record_of


def _node(i: int) -> TextNode:
    node = TextNode(id_=f"n{i}", text=f"chunk {i} of the report about invoice {4000 + i}",
                    metadata={"asset_id": f"a{i // 3}", "source": f"/docs/report_{i // 3}.pdf", "page": i % 3 + 1,
                              "score": 1.0 if i % 2 else 1, "flag": bool(i % 2), "bbox": [0.1, 0.2, 0.3, 0.4]},
                    excluded_llm_metadata_keys=["bbox"])
    node.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=f"a{i // 3}")
    return node


def test_packed_nodes_come_back_equal_with_their_types():
    nodes = [_node(i) for i in range(6)] + [ImageNode(id_="img", text="a caption", image_path="/p/x.png",
                                                      metadata={"asset_id": "x"})]
    packed = PackedNodes()
    for n in nodes:
        packed.append(record_of(n))
    for i, n in enumerate(nodes):
        back = packed.node(i)
        assert type(back) is type(n) and back.model_dump() == n.model_dump()
        assert packed.metadata(i) == n.metadata
        # 1, 1.0 and True are equal as dict keys; the shared values must keep their own types
        assert [type(v) for v in packed.metadata(i).values()] == [type(v) for v in n.metadata.values()]
    assert [packed.metadata(i)["page"] for i in range(3)] == [1, 2, 3]
    assert not any("nope" in packed.metadata(i) for i in range(7))
    assert "flag" not in packed.metadata(6)  # a key the node never had stays absent (filters: missing)


def test_a_store_row_packs_like_the_node():
    n = _node(1)
    row = record_from_row(n.node_id, n.text, "TextNode", n.to_json())
    assert row == record_of(n)


def test_bm25_filters_and_hits_match_the_unpacked_nodes():
    nodes = [_node(i) for i in range(30)]
    index = BM25Index(nodes)
    flt = MetadataFilters(filters=[MetadataFilter(key="page", value=2, operator=FilterOperator.EQ),
                                   MetadataFilter(key="source", value="report_1", operator=FilterOperator.TEXT_MATCH)])
    match = compile_filters(flt)
    hits = index.search("invoice report", 10, match)
    assert {h.node.node_id for h in hits} == {n.node_id for n in nodes if match(n.metadata)} == {"n4"}
    assert hits[0].node.model_dump() == nodes[4].model_dump()
    assert index.search("invoice 4017", 1)[0].node.node_id == "n17"


def test_packed_index_is_much_smaller_than_the_node_objects():
    nodes = [_node(i) for i in range(20000)]
    gc.collect()
    tracemalloc.start()
    packed = PackedNodes()
    for n in nodes:
        packed.append(record_of(n))
    packed_bytes = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    tracemalloc.start()
    copies = [n.model_copy(deep=True) for n in nodes]
    object_bytes = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(copies) == len(packed)
    assert packed_bytes * 3 < object_bytes, (packed_bytes, object_bytes)
