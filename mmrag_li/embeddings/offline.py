"""Models that ship inside registry packages, so the default setup runs with no hub access."""

from __future__ import annotations

from typing import Optional

from mmrag_li.config import CaptionConfig
from mmrag_li.errors import ModelUnavailableError


def packaged_clip_encoder(device: str = "auto"):
    raise ModelUnavailableError(
        "no offline CLIP model is installed; set embedding.image_model to a hub model "
        "(e.g. openai/clip-vit-base-patch32)")


def packaged_captioner(cfg: CaptionConfig):
    return None
