"""Fault suite: kills, read-only and full disks, corrupt store files, concurrency, hung files.

Inputs are small (rendered text PNGs with OCR off, markdown) so the suite runs in a few minutes
on two cores. Subprocesses run the real CLI (`python -m mmrag_li.cli`) with the offline models.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from mmrag_li.config import Settings
from mmrag_li.pipeline import MultiModalRAG

REPO = Path(__file__).resolve().parents[2]
# Environment of every CLI subprocess: no OCR (not the point here), small batches, no hub access.
CLI_ENV = dict(os.environ, MMRAG_OCR__KIND="none", MMRAG_INGEST__BATCH_FILES="3", HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")


def cli(*args: str):
    return [sys.executable, "-m", "mmrag_li.cli", *args]


def settings_for(store: Path, **ingest) -> Settings:
    return Settings(store_dir=str(store), ocr={"kind": "none"}, ingest=ingest)


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    """The offline models, loaded once for the in-process fault tests."""
    rag = MultiModalRAG(settings_for(tmp_path_factory.mktemp("models")))
    return {"text_embed": rag.text_embed, "clip_embed": rag.clip_embed, "captioner": rag.captioner}
