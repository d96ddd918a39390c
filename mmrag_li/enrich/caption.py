"""Captioners behind the ``Captioner`` protocol: pixels -> a sentence the text retrievers can match.

``TransformersCaptioner`` runs any Hugging Face image-to-text model (BLIP, GIT, ViT-GPT2,
Florence-style) by hub name or local path, batched, with a short or a detailed prompt.
The offline default is whatever ``embeddings/offline.py`` finds shipped inside a package; when
none is installed, captioning is off and the index still works (image, OCR and text retrievers).
"""

from __future__ import annotations

import logging
from typing import List, Optional, Sequence

from PIL import Image

from mmrag_li.config import CaptionConfig
from mmrag_li.enrich.types import Captioner
from mmrag_li.errors import ModelUnavailableError

log = logging.getLogger("mmrag_li.caption")

DETAILED_PROMPT = "a detailed photograph of"


class TransformersCaptioner:
    """Hugging Face image-to-text captioning; ``detailed`` conditions BLIP-style models on a prompt."""

    def __init__(self, model: str, max_new_tokens: int = 30, detailed: bool = False, batch_size: int = 4,
                 device: str = "auto"):
        import torch
        import transformers
        from transformers import AutoProcessor

        from mmrag_li.embeddings.clip import pick_device

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

        from mmrag_li.embeddings.clip import dtype_kwargs

        arch = (AutoConfig.from_pretrained(model).architectures or [""])[0]
        if arch == "VisionEncoderDecoderModel":
            return VisionEncoderDecoderModel.from_pretrained(model, **dtype_kwargs(dtype))
        return AutoModelForImageTextToText.from_pretrained(model, **dtype_kwargs(dtype))

    def caption(self, images: Sequence[Image.Image]) -> List[str]:
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


def build_captioner(cfg: CaptionConfig) -> Optional[Captioner]:
    """The configured captioner, the packaged offline one, or None (captioning off)."""
    if not cfg.enabled or cfg.backend == "none":
        return None
    if cfg.model:
        return TransformersCaptioner(cfg.model, cfg.max_new_tokens, cfg.detailed, cfg.batch_size)
    from mmrag_li.embeddings.offline import packaged_captioner

    cap = packaged_captioner(cfg)
    if cap is None:
        log.warning("no offline captioning model is installed; captions are off "
                    "(set caption.model to a hub model such as Salesforce/blip-image-captioning-base)")
    return cap
