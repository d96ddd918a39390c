"""How many threads each model call may use during an ingest (``ingest.model_threads``).

An ingest runs ``workers`` reading threads (OCR, captioning, the text gate) next to the thread that
embeds and stores; every one of them calls torch, whose intra-op pool defaults to one thread per
core *per calling thread*. On a 2-core machine that is 4-6 busy threads spinning for 2 cores.
``auto`` gives each call ``cores // (workers + 1)`` threads (at least 1) for the length of the ingest
and puts torch's setting back afterwards, so a notebook that ingests keeps its own setting.
The default is 0 (no cap): on a 2-core machine the cap measured no faster (``benchmarks/README.md``,
section 8, Target 3); it is for many cores and many workers.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Iterator, Optional, Union

ThreadSetting = Union[int, str]


def threads_per_call(setting: ThreadSetting, workers: int, cores: Optional[int] = None) -> Optional[int]:
    """Threads per model call for ``setting`` (None = leave the libraries' defaults).

    Args:
        setting: ``"auto"``, a positive number, or 0 (no cap).
        workers: reading threads of the ingest.
        cores: CPU cores available (default: this process's affinity).
    """
    if setting in (0, "0", None, ""):
        return None
    if str(setting) != "auto":
        return max(1, int(setting))
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // (max(1, workers) + 1))


@contextmanager
def capped_model_threads(setting: ThreadSetting, workers: int) -> Iterator[Optional[int]]:
    """Cap torch's intra-op threads for the duration of the block (see the module docstring).

    Torch is capped only when it is already imported or installed: the ingest imports it anyway
    to embed documents. onnxruntime sessions (the text gate, RapidOCR) and Tesseract have their own
    settings (``ocr.threads``), already one thread by default.

    Args:
        setting: ``ingest.model_threads``.
        workers: reading threads of the ingest.
    """
    n = threads_per_call(setting, workers)
    torch = sys.modules.get("torch")
    if n is not None and torch is None:
        try:
            import torch  # noqa: F811 - the ingest embeds documents with it
        except ImportError:
            torch = None
    if n is None or torch is None:
        yield n
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)


__all__ = ["capped_model_threads", "threads_per_call"]
