"""The facade calls behind the endpoints: search, answer (whole or streamed), inspect an asset.

Every call goes through the public ``MultiModalRAG`` API and is limited by the caller's
``CollectionGuard`` (the library's tenant guard): searches get ``guard.filters()``, answers use a
retriever built with ``retrieval.allowed_collections`` = what the guard allows, assets are visible
only when one of their nodes is. Results are the CLI's ``--json`` documents (``mmrag_li.present``).
"""

from __future__ import annotations

import logging
import queue
import re
import threading
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

from llama_index.core.schema import QueryBundle

from mmrag_li.assets import AssetIdError, AssetNotFoundError
from mmrag_li.guard import CollectionGuard
from mmrag_li.present import query_json, query_json_from, search_json
from mmrag_li.server.auth import describe
from mmrag_li.server.state import ServerState

log = logging.getLogger("mmrag_li.server")

ASSET_ID = re.compile(r"^[0-9a-f]{16,64}$")
PICTURE_KINDS = ("page", "image")

__all__ = ["ASSET_ID", "search", "stats", "build_engine", "answer", "stream_answer", "asset_view", "picture_path"]


def search(st: ServerState, guard: CollectionGuard, text: str, image: Optional[str], k: int) -> Dict[str, Any]:
    """``{"results": [...]}`` for ``text`` and/or an ``image`` path, ``k`` hits, within ``guard``.

    Args:
        st: the server state (ready).
        guard: the caller's guard.
        text: the query text ("" for an image-only search).
        image: a checked image path, or None.
        k: number of results.
    """
    if guard.denies_all:
        return {"results": []}
    with st.lock:
        hits = st.rag.retrieve(text, image=image, k=k, filters=guard.filters())
    return search_json(hits)


def stats(st: ServerState, guard: CollectionGuard) -> Dict[str, Any]:
    """``mmrag stats --json`` over the collections ``guard`` allows (for a caller narrower than the
    configured guard, ``"collections"`` names what it is limited to).

    Args:
        st: the server state.
        guard: the caller's guard (already narrowed from the configured one).
    """
    rag = st.rag
    with st.lock:
        if guard == CollectionGuard.from_config(rag.settings):  # what the facade's own views count
            data = dict(rag.stats())
        else:  # the facade's own views use the configured guard: count through narrower ones
            from mmrag_li.guard import GuardedManifest, GuardedStores, guarded_stores_of
            from mmrag_li.ingest.catalog import store_stats

            data = store_stats(GuardedManifest(rag.manifest, guard), GuardedStores.wrap(guarded_stores_of(rag), guard),
                               rag.store_dir, rag.settings.store.backend)
            data["collections"] = describe(guard)
    return data


def build_engine(st: ServerState, guard: CollectionGuard, k: Optional[int], streaming: bool = False) -> Any:
    """A ``VerifiedCitationQueryEngine`` over the facade's retriever, scoped to ``guard``.

    Args:
        st: the server state (ready; ``st.llm`` was built at start-up, None = extractive).
        guard: the caller's guard.
        k: evidence items and retrieval depth (None: the configured ones), as ``mmrag query --k``.
        streaming: stream the LLM's tokens.
    """
    from mmrag_li.generation.query_engine import VerifiedCitationQueryEngine

    overrides: Dict[str, Any] = {}
    if not guard.unrestricted:
        overrides["allowed_collections"] = sorted(guard.allowed or ())
    if k:
        overrides["top_k"] = k
    rag = st.rag
    return VerifiedCitationQueryEngine.from_defaults(
        rag.as_retriever(**overrides), settings=rag.settings, llm=st.llm, evidence_k=k, streaming=streaming,
        log_path=str(Path(rag.store_dir) / "logs" / "queries.jsonl"))


def answer(st: ServerState, guard: CollectionGuard, question: str, image: Optional[str],
           k: Optional[int]) -> Dict[str, Any]:
    """The ``mmrag query --json`` document for ``question`` (about an optional checked ``image``).

    Args:
        st: the server state.
        guard: the caller's guard.
        question: the question.
        image: a checked image path, or None.
        k: as for :func:`build_engine`.
    """
    with st.lock:
        resp = build_engine(st, guard, k).query(QueryBundle(query_str=question, image_path=image))
    return query_json(resp)


def stream_answer(st: ServerState, guard: CollectionGuard, question: str, k: Optional[int]) -> "queue.Queue":
    """Start answering in a worker thread; returns a queue of ``(event, data)`` tuples:
    ``("token", {"text"})`` per streamed piece (one for a backend that does not stream), then
    ``("done", query JSON)`` or ``("error", {"error"})``, then ``None``.

    Args:
        st: the server state.
        guard: the caller's guard.
        question: the question.
        k: as for :func:`build_engine`.
    """
    out: "queue.Queue" = queue.Queue()

    def produce() -> None:
        try:
            with st.lock:
                resp = build_engine(st, guard, k, streaming=True).query(QueryBundle(query_str=question))
                gen = getattr(resp, "response_gen", None)
                if gen is None:
                    data = query_json(resp)
                    out.put(("token", {"text": data["answer"]}))
                else:
                    pieces: List[str] = []
                    for piece in gen:
                        pieces.append(piece)
                        out.put(("token", {"text": piece}))
                    data = query_json_from("".join(pieces), resp.metadata)
            out.put(("done", data))
        except Exception as exc:
            log.exception("streamed query failed")
            out.put(("error", {"error": f"{type(exc).__name__}: {exc}"}))
        finally:
            out.put(None)

    threading.Thread(target=produce, name="mmrag-stream", daemon=True).start()
    return out


def drain(events: "queue.Queue", wait_s: float = 10.0) -> Iterator[Optional[Tuple[str, Any]]]:
    """Items of a :func:`stream_answer` queue, with ``("ping", None)`` when nothing came for ``wait_s``."""
    while True:
        try:
            item = events.get(timeout=wait_s)
        except queue.Empty:
            yield ("ping", None)
            continue
        if item is None:
            return
        yield item


def asset_view(st: ServerState, guard: CollectionGuard, asset_id: str) -> Dict[str, Any]:
    """What ``mmrag inspect --json`` shows for a full asset id, limited to the caller's nodes.

    Args:
        st: the server state.
        guard: the caller's guard.
        asset_id: a full asset id (lower-case hex); anything else, a prefix, a path, an unknown
            or hidden id raises ``AssetNotFoundError`` (a 404 that reveals nothing).
    """
    if not ASSET_ID.match(asset_id or ""):
        raise AssetNotFoundError(str(asset_id)[:80])
    data = st.assets.get(asset_id)
    if data is None:
        try:
            with st.lock:
                data = st.rag.inspect(asset_id)
        except AssetIdError:
            data = None
        if not data or data.get("asset_id") != asset_id:
            raise AssetNotFoundError(asset_id)
        st.assets.put(asset_id, data)
    nodes = [n for n in data.get("nodes") or [] if guard.allows(n.get("metadata") or {})]
    if not nodes:
        raise AssetNotFoundError(asset_id)
    return {**data, "nodes": nodes}


def _inside(path: Any, root: Path) -> Optional[Path]:
    """``path`` resolved, when it is a file inside ``root`` (the blob store); else None."""
    if not path:
        return None
    try:
        p = Path(str(path)).resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    return p if p.is_file() and p.is_relative_to(root) else None


def picture_path(st: ServerState, view: Dict[str, Any], page: Optional[int], key: str) -> Path:
    """The blob-store file of an asset's page render (``key="image_path"``) or thumbnail
    (``key="thumbnail_path"``) for ``page`` (None or 1 for a single image).

    Args:
        st: the server state.
        view: the :func:`asset_view` of the asset.
        page: the page number (1-based), or None.
        key: the metadata key holding the path.

    Raises:
        AssetNotFoundError: no such page or picture, or a path outside the blob store.
    """
    root = Path(st.rag.blob_store.root).resolve()
    nodes = view["nodes"]

    def meta(n: Dict[str, Any]) -> Dict[str, Any]:
        return n.get("metadata") or {}

    candidates: List[Dict[str, Any]] = []
    for kind in PICTURE_KINDS:
        for n in nodes:
            m = meta(n)
            if n.get("modality") != kind:
                continue
            if m.get("page") == page or (kind == "image" and m.get("page") is None and page in (None, 1)):
                candidates.append(m)
    if key == "thumbnail_path":  # any node of the page with a thumbnail (e.g. OCR of an image)
        candidates += [meta(n) for n in nodes if meta(n).get("page") == page or (page in (None, 1)
                                                                                 and meta(n).get("page") is None)]
    for m in candidates:
        found = _inside(m.get(key), root)
        if found is not None:
            return found
    raise AssetNotFoundError(f"{view.get('asset_id')} page {page}")
