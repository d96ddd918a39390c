"""Captioners behind the ``Captioner`` protocol: pixels -> a sentence the text retrievers can match.

``caption.kind`` picks one through :mod:`mmrag_li.registry` (group ``captioners``):

* ``transformers`` -- :class:`TransformersCaptioner` runs any Hugging Face image-to-text model
  (BLIP, GIT, ViT-GPT2, Florence-style) by hub name or local path, batched, with a short or a
  detailed prompt; ``model: ""`` means the offline default below.
* ``offline`` -- the tag line of the packaged ImageNet tagger (shipped inside a package); when it
  is not installed, captioning is off and the index still works (image, OCR and text retrievers).
* ``none`` -- no captions; third-party kinds come from the ``mmrag_li.captioners`` entry points.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Sequence

from PIL import Image

from mmrag_li import registry
from mmrag_li.config import CaptionConfig, OfflineCaptionConfig, TransformersCaptionConfig
from mmrag_li.embeddings.device import dtype_kwargs, pick_device
from mmrag_li.enrich.types import Captioner
from mmrag_li.errors import ModelUnavailableError

log = logging.getLogger("mmrag_li.caption")

DETAILED_PROMPT = "a detailed photograph of"


class TransformersCaptioner:
    """Hugging Face image-to-text captioning (``caption.kind: transformers``).

    Args:
        model: hub name or local path of an image-to-text model.
        max_new_tokens: caption length limit.
        detailed: condition BLIP-style models on a "detailed photograph" prompt.
        batch_size: images per ``generate`` call.
        device: torch device, ``"auto"`` = cuda > mps > cpu.
    """

    def __init__(self, model: str, max_new_tokens: int = 30, detailed: bool = False, batch_size: int = 4,
                 device: str = "auto"):
        import torch
        import transformers
        from transformers import AutoProcessor

        self.device = pick_device(device)
        dtype = torch.float16 if self.device == "cuda" else torch.float32
        try:
            self.processor = AutoProcessor.from_pretrained(model)
            self.model = self._load_model(model, dtype).to(self.device).eval()
        except OSError as exc:
            raise ModelUnavailableError(f"cannot load captioning model '{model}': {exc}") from exc
        self.name = f"hf:{model}"
        self.version = f"transformers=={transformers.__version__}"
        self.max_new_tokens = max_new_tokens
        self.detailed = detailed
        self.batch_size = batch_size

    @staticmethod
    def _load_model(model: str, dtype):
        from transformers import AutoConfig, AutoModelForImageTextToText, VisionEncoderDecoderModel

        arch = (AutoConfig.from_pretrained(model).architectures or [""])[0]
        if arch == "VisionEncoderDecoderModel":
            return VisionEncoderDecoderModel.from_pretrained(model, **dtype_kwargs(dtype))
        return AutoModelForImageTextToText.from_pretrained(model, **dtype_kwargs(dtype))

    @classmethod
    def from_config(cls, cfg: TransformersCaptionConfig) -> "TransformersCaptioner":
        """Build from ``settings.caption`` (``kind: transformers`` with a non-empty ``model``).

        Args:
            cfg: the options.
        """
        return cls(cfg.model, cfg.max_new_tokens, cfg.detailed, cfg.batch_size, device=cfg.device)

    def caption(self, images: Sequence[Image.Image]) -> List[str]:
        """One caption per image.

        Args:
            images: PIL images (any mode).
        """
        import torch

        out: List[str] = []
        for i in range(0, len(images), self.batch_size):
            batch = [im.convert("RGB") for im in images[i:i + self.batch_size]]
            kwargs = {"text": [DETAILED_PROMPT] * len(batch)} if self.detailed else {}
            try:
                inputs = self.processor(images=batch, return_tensors="pt", **kwargs).to(self.device)
            except (TypeError, ValueError):  # processors without a text side (ViT-GPT2)
                inputs = self.processor(images=batch, return_tensors="pt").to(self.device)
            with torch.inference_mode():
                ids = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens)
            decode = getattr(self.processor, "batch_decode", None) or self.processor.tokenizer.batch_decode
            out.extend(t.strip() for t in decode(ids, skip_special_tokens=True))
        return out


def build_captioner(cfg: Optional[CaptionConfig | Dict[str, Any]] = None) -> Optional[Captioner]:
    """The captioner ``cfg`` asks for, or None (``kind: none``, or the offline default is not
    installed: captions are then off, with a warning).

    Args:
        cfg: ``settings.caption``, a mapping such as ``{"kind": "offline"}``, or None (the default:
            transformers with ``model: ""``, i.e. the packaged offline captioner).

    Raises:
        ModelUnavailableError: a configured model cannot be loaded.
        ConfigError: unknown kind.
    """
    options = CaptionConfig.parse(cfg, "build_captioner argument")
    if isinstance(options, TransformersCaptionConfig) and not options.model:
        options = OfflineCaptionConfig()
    try:
        return registry.build("captioners", options)
    except ModelUnavailableError:
        if options.kind != "offline":
            raise
        log.warning("no offline captioning model is installed; captions are off "
                    "(set caption.model to a hub model such as Salesforce/blip-image-captioning-base)")
        return None
