"""Agent tools over the multimodal index, usable by LlamaIndex agents (``FunctionAgent``).

Built by `make_tools` from a `VerifiedCitationQueryEngine` (any ``BaseQueryEngine`` works) and a
retriever:

* ``multimodal_evidence_qa`` (a ``QueryEngineTool``): a cited, verified answer. Its text output
  adds which file/page each cited id refers to and whether the answer was verified, so an agent
  can pass citations on; ``raw_output`` is the engine's ``Response``.
* ``search_evidence`` (a ``FunctionTool``): ranked assets (asset_id, source, page, score, snippet)
  without generating an answer.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle
from llama_index.core.tools import FunctionTool, QueryEngineTool, ToolOutput

from mmrag_li.generation._text import normalize_ws
from mmrag_li.generation.evidence import group_nodes

QA_TOOL_NAME = "multimodal_evidence_qa"
SEARCH_TOOL_NAME = "search_evidence"
QA_TOOL_DESCRIPTION = (
    "Answers a natural-language question from the ingested images, scanned PDFs and text documents. "
    "Answers are cited with evidence ids like [E1] (the output lists which file and page each id is) and "
    "verified: every number, date and quote is checked against the cited evidence; unverifiable answers "
    "are refused and 'I don't know' means the documents do not contain the answer. Input: the full question."
)
SEARCH_TOOL_DESCRIPTION = (
    "Searches the ingested images, scanned PDFs and text documents and returns the best-matching assets "
    "(asset_id, source file, page, score, short text snippet), best first, without answering. "
    "Use it to find which files are relevant."
)


def format_answer(response: Any) -> str:
    """Answer text plus the cited sources and the verification status, for an agent to read.

    Args:
        response: a ``Response`` whose metadata has "citations" (objects with their own id, source
            and page; older engines: "citation_ids" + "evidence") and "verified".
    """
    text = str(getattr(response, "response", response) or "")
    meta = getattr(response, "metadata", None) or {}
    lines = [text]
    srcs = [c for c in meta.get("citations") or [] if isinstance(c, dict) and c.get("id")]
    if not srcs:
        cited = set(meta.get("citation_ids") or [])
        srcs = [e for e in meta.get("evidence") or [] if e.get("id") in cited]
    if srcs:
        lines.append("Sources: " + "; ".join(
            f"{e['id']} = {e.get('source')}" + (f" page {e['page']}" if e.get("page") is not None else "")
            for e in srcs))
    if "verified" in meta:
        lines.append(f"Verified: {meta.get('verified')}")
    return "\n".join(lines)


class CitedQueryEngineTool(QueryEngineTool):
    """A ``QueryEngineTool`` whose text output also names the cited sources and the verification.

    Build it with ``CitedQueryEngineTool.from_defaults(query_engine, name=..., description=...)``.
    """

    # call and acall are sync/async twins (query vs aquery).
    def call(self, *args: Any, **kwargs: Any) -> ToolOutput:
        """Query the engine with the tool input; the output text is `format_answer` of the response."""
        query_str = self._get_query_str(*args, **kwargs)
        response = self._query_engine.query(query_str)
        return ToolOutput(content=format_answer(response), tool_name=self.metadata.get_name(),
                          raw_input={"input": query_str}, raw_output=response)

    async def acall(self, *args: Any, **kwargs: Any) -> ToolOutput:
        """Async twin of `call`."""
        query_str = self._get_query_str(*args, **kwargs)
        response = await self._query_engine.aquery(query_str)
        return ToolOutput(content=format_answer(response), tool_name=self.metadata.get_name(),
                          raw_input={"input": query_str}, raw_output=response)


def _snippet(group: List[NodeWithScore], chars: int) -> str:
    order = {"caption": 0, "ocr": 1, "text": 2}
    texts = sorted(
        ((order.get((n.node.metadata or {}).get("modality"), 3), normalize_ws(n.node.get_content() or ""))
         for n in group), key=lambda t: t[0])
    joined = " | ".join(t for _, t in texts if t)
    return joined if len(joined) <= chars else joined[: chars - 1] + "…"


def rank_assets(nodes: List[NodeWithScore], k: int = 5, snippet_chars: int = 200) -> List[Dict[str, Any]]:
    """One entry per (asset, page), in retrieval order.

    Args:
        nodes: retrieved nodes, best first.
        k: entries to return.
        snippet_chars: length cap of each snippet.
    """
    out = []
    for (asset_id, page), group in group_nodes(nodes)[: max(0, k)]:
        meta = group[0].node.metadata or {}
        scores = [n.score for n in group if n.score is not None]
        out.append({
            "asset_id": asset_id,
            "source": meta.get("source"),
            "page": page,
            "score": round(max(scores), 6) if scores else None,
            "snippet": _snippet(group, snippet_chars),
        })
    return out


def make_tools(query_engine: Any, retriever: Optional[BaseRetriever] = None, *, search_k: int = 5,
               qa_name: str = QA_TOOL_NAME, search_name: str = SEARCH_TOOL_NAME) -> List[Any]:
    """[QueryEngineTool "multimodal_evidence_qa", FunctionTool "search_evidence"] for an agent.

    Args:
        query_engine: answers the QA tool (a `VerifiedCitationQueryEngine`).
        retriever: searched by the search tool (default: ``query_engine.retriever``; none: QA tool only).
        search_k: default number of search results.
        qa_name: name of the QA tool.
        search_name: name of the search tool.
    """
    retriever = retriever or getattr(query_engine, "retriever", None)
    tools: List[Any] = [CitedQueryEngineTool.from_defaults(query_engine, name=qa_name,
                                                           description=QA_TOOL_DESCRIPTION)]
    if retriever is None:
        return tools

    def search_evidence(query: str, k: int = search_k) -> List[Dict[str, Any]]:
        """Ranked assets for the query: list of {asset_id, source, page, score, snippet}, best first."""
        return rank_assets(retriever.retrieve(QueryBundle(query)), int(k))

    async def asearch_evidence(query: str, k: int = search_k) -> List[Dict[str, Any]]:
        """Ranked assets for the query: list of {asset_id, source, page, score, snippet}, best first."""
        return rank_assets(await retriever.aretrieve(QueryBundle(query)), int(k))

    tools.append(FunctionTool.from_defaults(fn=search_evidence, async_fn=asearch_evidence, name=search_name,
                                            description=SEARCH_TOOL_DESCRIPTION))
    return tools
