"""What one server process holds: the facade (models loaded once), readiness, locks, jobs, caches.

The facade is opened in a background thread when the app starts, so ``/healthz`` and the page
answer at once and say "loading" until the models are in memory; every data endpoint answers
503 until then.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from mmrag_li.assets import store_exists
from mmrag_li.guard import CollectionGuard
from mmrag_li.server.auth import KeyMap

log = logging.getLogger("mmrag_li.server")

__all__ = ["ServerState", "LRU"]


class LRU:
    """A small thread-safe least-recently-used cache.

    Args:
        size: how many entries to keep.
    """

    def __init__(self, size: int = 256):
        self.size = size
        self._d: "OrderedDict[Any, Any]" = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        """The cached value of ``key`` or None (marks it recently used)."""
        with self._lock:
            if key not in self._d:
                return None
            self._d.move_to_end(key)
            return self._d[key]

    def put(self, key: Any, value: Any) -> Any:
        """Cache ``value`` under ``key`` (evicting the oldest entry when full); returns ``value``."""
        with self._lock:
            self._d[key] = value
            self._d.move_to_end(key)
            while len(self._d) > self.size:
                self._d.popitem(last=False)
        return value

    def clear(self) -> None:
        """Forget everything (after an ingest changed the store)."""
        with self._lock:
            self._d.clear()


class ServerState:
    """The server's one facade and everything shared between requests.

    Args:
        rag: a ready ``MultiModalRAG`` (tests), or None to open one with ``factory`` at start-up.
        factory: builds the facade (called once, in a background thread).
        settings: the settings (default: the facade's).
    """

    def __init__(self, rag: Any = None, factory: Optional[Callable[[], Any]] = None, settings: Any = None):
        self.rag = rag
        self.factory = factory
        self.settings = settings if settings is not None else getattr(rag, "settings", None)
        self.ready = threading.Event()
        self.error: Optional[str] = None
        self.started = time.time()
        self.load_seconds: Optional[float] = None
        self.lock = threading.RLock()  # facade calls (retrieve / query / inspect) one at a time
        self.ingest_lock = threading.Lock()  # one ingest job at a time, alongside searches
        self.jobs_lock = threading.Lock()
        self.llm: Any = None
        self.assets = LRU(512)
        self.rendered = LRU(32)
        self.jobs: "OrderedDict[str, Any]" = OrderedDict()
        self.keys = KeyMap.from_config(self.server_config.api_keys if self.server_config else None)
        self._thread: Optional[threading.Thread] = None

    # ---- configuration --------------------------------------------------------------------------
    @property
    def server_config(self) -> Any:
        """``settings.server`` (None before settings are known)."""
        return getattr(self.settings, "server", None)

    @property
    def store_dir(self) -> Path:
        """The store directory."""
        rag_dir = getattr(self.rag, "store_dir", None)
        return Path(rag_dir if rag_dir is not None else self.settings.store_dir)

    def base_guard(self) -> CollectionGuard:
        """The configured guard (``retrieval.allowed_collections``)."""
        return CollectionGuard.from_config(self.settings)

    # ---- start-up ---------------------------------------------------------------------------------
    def start(self) -> None:
        """Open the facade and load the models in a background thread (idempotent)."""
        if self.ready.is_set() or (self._thread is not None and self._thread.is_alive()):
            return
        self._thread = threading.Thread(target=self._load, name="mmrag-load", daemon=True)
        self._thread.start()

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block until loaded (or failed); True when ready."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.ready.is_set()

    def _load(self) -> None:
        t = time.perf_counter()
        try:
            if self.rag is None:
                self.rag = self.factory()
            if self.settings is None:
                self.settings = self.rag.settings
                self.keys = KeyMap.from_config(self.settings.server.api_keys)
            self.warm_up()
            self.load_seconds = round(time.perf_counter() - t, 3)
            log.info("mmrag serve: models loaded in %.1f s", self.load_seconds)
            self.ready.set()
        except Exception as exc:  # reported by /healthz; the process keeps serving the error
            log.exception("mmrag serve: start-up failed")
            self.error = f"{type(exc).__name__}: {exc}"

    def warm_up(self) -> None:
        """Load the models, the LLM client and (for an existing store) the retrievers and BM25
        index with one throw-away search, so the first real request is warm."""
        from mmrag_li.generation.llms import build_llm

        rag = self.rag
        self.llm = build_llm(rag.settings.llm)
        if not store_exists(self.store_dir):
            log.warning("mmrag serve: no store at %s yet; searches return 404 until something is ingested",
                        self.store_dir)
            return
        with self.lock:
            rag.retrieve("warm up", k=1)

    # ---- jobs ----------------------------------------------------------------------------------------
    def add_job(self, job: Any, keep: int = 100) -> None:
        """Remember an ingest job (the oldest finished ones are forgotten beyond ``keep``)."""
        with self.jobs_lock:
            self.jobs[job.id] = job
            while len(self.jobs) > keep:
                oldest = next(iter(self.jobs))
                if self.jobs[oldest].state in ("queued", "running"):
                    break
                self.jobs.pop(oldest)

    def after_ingest(self) -> None:
        """Forget cached asset views (an ingest added or replaced assets)."""
        self.assets.clear()
        self.rendered.clear()

    def health(self) -> Dict[str, Any]:
        """``/healthz``: ``{"ready", "status": "loading"|"ready"|"failed", "error"?, "load_seconds"}``."""
        status = "ready" if self.ready.is_set() else ("failed" if self.error else "loading")
        out: Dict[str, Any] = {"ready": self.ready.is_set(), "status": status, "load_seconds": self.load_seconds}
        if self.error:
            out["error"] = self.error
        return out
