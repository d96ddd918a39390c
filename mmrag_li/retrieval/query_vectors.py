"""Query vectors computed once per query and embedding space, shared by the retrievers of one query.

Fusion runs several vector retrievers on the same text: caption, OCR and text all embed it with
the text model, and with the packaged image encoder the text->image retriever embeds it with
MiniLM as well. :class:`QueryVectorMemo` hands each of them the same vector, computed once
(thread-safe: retrievers running concurrently wait for the one computing it).

Two embeddings share a vector only when they say they compute the same function: an embedding
(or its ``encoder``) may expose ``query_space`` -- a hashable naming it, e.g.
``("minilm", "/path/to/model")`` -- and equal spaces share. Without one, only the very same
embedding object shares (another model, another dimension: never; see the QueryFusionRetriever
trap in DESIGN.md). :func:`run_concurrently` runs one query's retrievers on a shared thread pool.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Dict, Hashable, List, Tuple

__all__ = ["QueryVectorMemo", "query_space", "run_concurrently"]


def query_space(embed_model: Any) -> Hashable:
    """What identifies ``embed_model``'s text->vector function: its (or its encoder's) ``query_space``
    when it declares one, else the object itself.

    Args:
        embed_model: a LlamaIndex embedding (``get_query_embedding``).
    """
    space = getattr(embed_model, "query_space", None)
    return ("space", space) if space is not None else ("object", id(embed_model))


class QueryVectorMemo:
    """Vectors of one query, one per embedding space (see the module doc). Keeps the models it was
    given alive while it lives, so an object id is never reused within it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: Dict[Tuple[Hashable, str, str], List[Any]] = {}
        self.computed = 0  # how many vectors were really computed (tests, benchmarks)

    def get(self, embed_model: Any, text: str, compute: Callable[[str], Any] | None = None) -> Any:
        """The query vector of ``text`` in ``embed_model``'s space (computed now if needed).

        Args:
            embed_model: the embedding.
            text: the query text.
            compute: text -> vector (default ``embed_model.get_query_embedding``).
        """
        key = (query_space(embed_model), "query", text)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = [threading.Lock(), None, embed_model]
        with entry[0]:
            if entry[1] is None:
                entry[1] = (compute or embed_model.get_query_embedding)(text)
                with self._lock:
                    self.computed += 1
            return entry[1]


_pool_lock = threading.Lock()
_pool: Any = None
_in_pool = threading.local()


def _run_in_pool(ctx: Any, fn: Callable[[], Any]) -> Any:
    _in_pool.active = True
    try:
        return ctx.run(fn)
    finally:
        _in_pool.active = False


def run_concurrently(calls: List[Callable[[], Any]], max_workers: int = 8) -> List[Any]:
    """Results of the zero-argument ``calls``, in order, run on a shared thread pool (the store
    searches and the query encoder release the GIL, so one query's retrievers overlap). Each call
    runs in a copy of the caller's context (LlamaIndex instrumentation spans nest as usual); a
    call's exception is raised here. Called from inside the pool (nested), the calls run one
    after the other instead, so the pool can never wait on itself.

    Args:
        calls: the work, one callable per retriever.
        max_workers: size of the shared pool (fixed when it is first created).
    """
    import contextvars
    from concurrent.futures import ThreadPoolExecutor

    global _pool
    if len(calls) <= 1 or getattr(_in_pool, "active", False):
        return [c() for c in calls]
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="mmrag-retrieve")
    futures = [_pool.submit(_run_in_pool, contextvars.copy_context(), c) for c in calls]
    return [f.result() for f in futures]
