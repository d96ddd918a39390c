"""Nodes kept compactly in memory: the keyword index holds every text node of a store, and as
LlamaIndex objects 100k short chunks cost ~800 MB (a pydantic model, its metadata dict and
relationships per node); packed they cost a tenth of that.

Each node is kept as its zlib-compressed JSON (``BaseNode.to_json``, the form vector stores keep
in ``_node_content``) and is rebuilt only when it is a hit. Its metadata stays searchable for
filters without rebuilding it: one column (a list) per metadata key, equal values shared.
"""

from __future__ import annotations

import zlib
from typing import Any, Dict, List

from llama_index.core.schema import BaseNode

from mmrag_li.stores.nodes import NodeRecord, node_from_fields

_MISSING = object()  # a node without this metadata key (filters treat it as absent, not as None)


class PackedNodes:
    """A list of nodes kept as compressed JSON plus metadata columns (module docstring)."""

    def __init__(self) -> None:
        self._blobs: List[bytes] = []
        self._types: List[str] = []  # each node's class_name() (one shared string per type)
        self._columns: Dict[str, List[Any]] = {}
        self._shared: Dict[Any, Any] = {}  # one object per distinct metadata value (source paths repeat)

    def __len__(self) -> int:
        return len(self._blobs)

    def append(self, record: NodeRecord) -> None:
        """Keep one node.

        Args:
            record: the node's :class:`NodeRecord`.
        """
        i = len(self._blobs)
        self._blobs.append(zlib.compress(record.node_json.encode("utf-8"), 1))
        self._types.append(self._share(record.node_type))
        for key, value in record.metadata.items():
            column = self._columns.get(key)
            if column is None:
                column = self._columns[key] = [_MISSING] * i
            column.append(self._share(value))
        for column in self._columns.values():
            if len(column) <= i:
                column.append(_MISSING)

    def _share(self, value: Any) -> Any:
        try:  # keyed with the type: 1, 1.0 and True are equal but must stay what they were
            return self._shared.setdefault((type(value), value), value)
        except TypeError:  # unhashable (a bbox list): kept as it is
            return value

    def node(self, i: int) -> BaseNode:
        """The ``i``-th node, rebuilt.

        Args:
            i: its position.
        """
        return node_from_fields({"_node_content": zlib.decompress(self._blobs[i]).decode("utf-8"),
                                 "_node_type": self._types[i]})

    def metadata(self, i: int) -> Dict[str, Any]:
        """The ``i``-th node's metadata (from the columns; the node is not rebuilt).

        Args:
            i: its position.
        """
        return {k: col[i] for k, col in self._columns.items() if col[i] is not _MISSING}


__all__ = ["PackedNodes"]
