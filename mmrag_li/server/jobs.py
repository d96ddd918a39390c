"""Ingest jobs: ``POST /api/ingest`` starts one in a background thread, ``GET /api/jobs/{id}`` reports it.

A job calls the facade's ``ingest`` (the same manifest, transforms and crash-safe runner as
``mmrag ingest``); one runs at a time, searches keep being answered meanwhile. Its final
``report`` is the ``mmrag ingest --json`` document.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from mmrag_li.guard import CollectionGuard
from mmrag_li.server.state import ServerState

log = logging.getLogger("mmrag_li.server")

__all__ = ["IngestJob", "start_job"]


@dataclass
class IngestJob:
    """One ingest run requested over HTTP.

    Args:
        paths: files and folders to ingest (server paths or saved uploads).
        collection: the collection stamped on the nodes.
        guard: the guard of the caller that started it (only such callers may read the job).
        prune: also delete nodes of files under ``paths`` that no longer exist.
        names: what to show for the inputs (upload names, or the paths).
    """

    paths: List[str]
    collection: str
    guard: CollectionGuard
    prune: bool = False
    names: List[str] = field(default_factory=list)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    state: str = "queued"
    created: float = field(default_factory=time.time)
    started: Optional[float] = None
    finished: Optional[float] = None
    report: Optional[Dict[str, Any]] = None
    error: Optional[str] = None
    progress: Dict[str, Any] = field(default_factory=dict)

    def visible_to(self, guard: CollectionGuard) -> bool:
        """Whether a caller with ``guard`` may read this job (it may see the job's collection)."""
        return guard.allows_collection(self.collection)

    def to_dict(self) -> Dict[str, Any]:
        """``{"id", "state": queued|running|done|failed, "collection", "inputs", "elapsed_s",
        "progress", "report" (ingest --json, when done), "error" (when failed)}``."""
        end = self.finished or time.time()
        out: Dict[str, Any] = {"id": self.id, "state": self.state, "collection": self.collection,
                               "inputs": self.names or self.paths, "created": self.created,
                               "elapsed_s": round(end - (self.started or end), 3), "progress": dict(self.progress),
                               "report": self.report}
        if self.error:
            out["error"] = self.error
        return out


def _ingest_kwargs(rag: Any, job: IngestJob) -> Dict[str, Any]:
    kwargs: Dict[str, Any] = {"prune": job.prune, "progress": False, "collection": job.collection}
    try:
        params = inspect.signature(rag.ingest).parameters
    except (TypeError, ValueError):
        return kwargs
    if "on_progress" in params:  # a facade that reports progress (files done / total)
        def on_progress(done: int, total: Optional[int] = None, **_: Any) -> None:
            job.progress.update({"files_done": done, "files_total": total})

        kwargs["on_progress"] = on_progress
    return kwargs


def run_job(st: ServerState, job: IngestJob) -> None:
    """Run ``job`` now (in the calling thread): one ingest at a time, caches dropped afterwards.

    Args:
        st: the server state (ready).
        job: the job.
    """
    with st.ingest_lock:
        job.state, job.started = "running", time.time()
        try:
            report = st.rag.ingest(job.paths, **_ingest_kwargs(st.rag, job))
            job.report = report.to_dict() if hasattr(report, "to_dict") else dict(report)
            job.progress.setdefault("files_done", job.report.get("files"))
            job.state = "done"
        except Exception as exc:
            log.exception("ingest job %s failed", job.id)
            job.error, job.state = f"{type(exc).__name__}: {exc}", "failed"
        finally:
            job.finished = time.time()
            st.after_ingest()


def start_job(st: ServerState, job: IngestJob) -> IngestJob:
    """Register ``job`` and run it in a background thread; returns it at once.

    Args:
        st: the server state (ready).
        job: the job.
    """
    st.add_job(job)
    threading.Thread(target=run_job, args=(st, job), name=f"mmrag-ingest-{job.id[:8]}", daemon=True).start()
    return job


def allowed_path(path: str, roots: List[str]) -> Optional[Path]:
    """``path`` resolved, when it exists inside one of ``roots`` (``server.ingest_roots``); else None.

    Args:
        path: a server path from the request.
        roots: the folders server paths may come from.
    """
    try:
        p = Path(path).expanduser().resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    for root in roots:
        try:
            r = Path(root).expanduser().resolve(strict=True)
        except (OSError, RuntimeError):
            continue
        if p == r or p.is_relative_to(r):
            return p
    return None
