"""The JSON documents of ``mmrag search --json`` and ``mmrag query --json`` (DESIGN.md,
"Command-line contract"), built in one place so the CLI and the HTTP server answer alike.

Pure functions over duck-typed inputs (hits with ``to_dict()``, a LlamaIndex ``Response`` or its
text + metadata); this module imports nothing else from the package.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping, Optional

__all__ = ["search_rows", "search_json", "answer_sources", "query_json", "query_json_from"]


def search_rows(hits: Iterable[Any]) -> List[Dict[str, Any]]:
    """Fused hits -> the ``search --json`` result objects (node ids dropped).

    Args:
        hits: ``AssetHit``s (anything with ``to_dict()``) or already-built mappings, best first.
    """
    rows = []
    for h in hits:
        row = dict(h.to_dict() if hasattr(h, "to_dict") else h)
        row.pop("nodes", None)
        rows.append(row)
    return rows


def search_json(hits: Iterable[Any]) -> Dict[str, Any]:
    """``{"results": [...]}``, the document ``mmrag search --json`` prints and ``/api/search`` returns.

    Args:
        hits: as for :func:`search_rows`.
    """
    return {"results": search_rows(hits)}


_SOURCE_EXTRA = ("snippet", "regions", "modality")


def answer_sources(meta: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """Every evidence item handed to the answerer, with its own page, marked cited or not.

    Args:
        meta: ``Response.metadata`` of the query engine (reads "evidence" and "citation_ids").
    """
    cited = set(meta.get("citation_ids") or [])
    out = []
    for e in meta.get("evidence") or []:
        row = {"id": e.get("id"), "evidence_id": e.get("id"), "asset_id": e.get("asset_id"),
               "source": e.get("source"), "page": e.get("page"), "score": e.get("score"),
               "scores": e.get("scores", {}), "cited": e.get("id") in cited}
        row.update({k: e[k] for k in _SOURCE_EXTRA if k in e})
        out.append(row)
    return out


def query_json_from(answer: str, meta: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """The ``query --json`` document from an answer text and the engine's response metadata.

    Args:
        answer: the answer text (with its ``[E#]`` citations).
        meta: ``Response.metadata`` (None = empty).
    """
    meta = meta or {}
    ver = meta.get("verification")
    ver = dict(ver) if isinstance(ver, Mapping) else {"reasons": list(ver or [])}
    ver.setdefault("supported", ver.get("verified", meta.get("verified")))
    ver.setdefault("citations_valid", ver["supported"])  # Verification's own default
    ver.setdefault("checks", [])
    citations = [dict(c) for c in meta.get("citations") or [] if isinstance(c, Mapping)]
    return {"answer": str(answer), "citation_ids": list(meta.get("citation_ids") or []),
            "citations": citations, "verification": ver, "verified": bool(ver["supported"]),
            "sources": answer_sources(meta), "extractive": meta.get("extractive"),
            "timings": meta.get("timings", {})}


def query_json(response: Any) -> Dict[str, Any]:
    """The document ``mmrag query --json`` prints and ``/api/query`` returns.

    Args:
        response: a LlamaIndex ``Response`` of ``VerifiedCitationQueryEngine`` (a consumed
            ``StreamingResponse`` works too: its ``response_txt`` is used).
    """
    text = getattr(response, "response_txt", None)
    if text is None:
        text = getattr(response, "response", None)
    return query_json_from("" if text is None else str(text), getattr(response, "metadata", None))
