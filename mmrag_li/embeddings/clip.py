"""CLIP-style image+text embeddings (one space for both) as a LlamaIndex ``MultiModalEmbedding``.

Backends: Hugging Face transformers (CLIP, SigLIP: any model with get_text_features /
get_image_features), OpenCLIP, and an ONNX encoder for models that ship inside a package
(the offline default; see ``embeddings/offline.py``). Loading is by hub name or local path;
batched, ``torch.inference_mode``, device auto (cuda > mps > cpu), fp16 on GPU.
"""

from __future__ import annotations

import asyncio
from io import BytesIO
from typing import Any, List, Optional, Protocol, Sequence

import numpy as np
from llama_index.core.base.embeddings.base import Embedding
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.embeddings.multi_modal_base import MultiModalEmbedding
from llama_index.core.schema import ImageType
from PIL import Image

from mmrag_li.errors import ModelUnavailableError


class ClipEncoder(Protocol):
    """What a backend must do: L2-normalised float vectors for texts and RGB images."""

    model_id: str
    version: str
    dim: int

    def encode_text(self, texts: Sequence[str]) -> np.ndarray: ...

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray: ...


def pick_device(device: str = "auto") -> str:
    if device != "auto":
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def dtype_kwargs(dtype) -> dict:
    """transformers renamed ``torch_dtype`` to ``dtype`` in 4.56; support both."""
    import transformers

    major, minor = (int(p) for p in transformers.__version__.split(".")[:2])
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.clip(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12, None)


def load_image(img: ImageType | Image.Image) -> Image.Image:
    if isinstance(img, Image.Image):
        return img.convert("RGB")
    if isinstance(img, (bytes, bytearray)):
        img = BytesIO(img)
    with Image.open(img) as im:
        return im.convert("RGB")


class HFClipEncoder:
    """transformers CLIP/SigLIP by hub name or local path."""

    # CLIP text-image cosines sit in a narrow band (~0.15 unrelated, 0.25-0.35 related).
    floors = {"image": 0.18, "image2image": 0.6}

    def __init__(self, model: str, device: str = "auto"):
        try:
            import torch
            from transformers import AutoModel, AutoProcessor
        except ImportError as exc:  # pragma: no cover - torch/transformers are core deps
            raise ModelUnavailableError(f"transformers backend needs torch+transformers: {exc}") from exc
        self.device = pick_device(device)
        dtype = torch.float16 if self.device == "cuda" else torch.float32
        try:
            self.processor = AutoProcessor.from_pretrained(model)
            self.model = AutoModel.from_pretrained(model, **dtype_kwargs(dtype)).to(self.device).eval()
        except OSError as exc:
            raise ModelUnavailableError(
                f"cannot load CLIP model '{model}' (not a local path and the hub is unreachable?): {exc}"
            ) from exc
        self.model_id = f"hf:{model}"
        self.version = str(getattr(self.model.config, "_commit_hash", None) or "local")
        self.dim = int(getattr(self.model.config, "projection_dim", 0) or self.encode_text(["x"]).shape[1])
        self._siglip = "siglip" in type(self.model).__name__.lower()

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        kwargs = {"padding": "max_length", "max_length": 64} if getattr(self, "_siglip", False) else {"padding": True}
        inputs = self.processor(text=list(texts), return_tensors="pt", truncation=True, **kwargs).to(self.device)
        with torch.inference_mode():
            feats = self.model.get_text_features(**inputs)
        feats = getattr(feats, "pooler_output", feats)
        return _normalise(feats.float().cpu().numpy())

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        import torch

        inputs = self.processor(images=list(images), return_tensors="pt").to(self.device)
        if self.device == "cuda":
            inputs["pixel_values"] = inputs["pixel_values"].half()
        with torch.inference_mode():
            feats = self.model.get_image_features(**inputs)
        feats = getattr(feats, "pooler_output", feats)
        return _normalise(feats.float().cpu().numpy())


class OpenClipEncoder:
    """OpenCLIP models, e.g. ``ViT-B-32`` with pretrained ``laion2b_s34b_b79k`` (extra: [gpu])."""

    floors = {"image": 0.18, "image2image": 0.6}

    def __init__(self, model: str, pretrained: str = "", device: str = "auto"):
        try:
            import open_clip
            import torch
        except ImportError as exc:
            raise ModelUnavailableError("OpenCLIP backend needs `pip install open_clip_torch`") from exc
        self.device = pick_device(device)
        try:
            self.model, _, self.preprocess = open_clip.create_model_and_transforms(
                model, pretrained=pretrained or None, device=self.device,
                precision="fp16" if self.device == "cuda" else "fp32")
        except Exception as exc:  # hub download failures surface as many error types
            raise ModelUnavailableError(f"cannot load OpenCLIP '{model}' ({pretrained}): {exc}") from exc
        self.model.eval()
        self.tokenizer = open_clip.get_tokenizer(model)
        self.model_id = f"openclip:{model}:{pretrained}"
        self.version = open_clip.__version__
        with torch.inference_mode():
            self.dim = int(self.encode_text(["x"]).shape[1])

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            feats = self.model.encode_text(self.tokenizer(list(texts)).to(self.device))
        return _normalise(feats.float().cpu().numpy())

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        import torch

        batch = torch.stack([self.preprocess(im) for im in images]).to(self.device)
        if self.device == "cuda":
            batch = batch.half()
        with torch.inference_mode():
            feats = self.model.encode_image(batch)
        return _normalise(feats.float().cpu().numpy())


class ClipEmbedding(MultiModalEmbedding):
    """LlamaIndex multimodal embedding over any :class:`ClipEncoder` backend."""

    model_name: str = Field(default="", description="Hub name or local path ('' = offline default).")
    backend: str = Field(default="auto", description="auto | hf | openclip | onnx")
    pretrained: str = Field(default="", description="OpenCLIP pretrained tag.")
    device: str = Field(default="auto")
    embed_batch_size: int = Field(default=16, gt=0)

    _encoder: Any = PrivateAttr(default=None)

    def __init__(self, encoder: Optional[ClipEncoder] = None, **kwargs: Any):
        super().__init__(**kwargs)
        self._encoder = encoder

    @classmethod
    def class_name(cls) -> str:
        return "MmragClipEmbedding"

    @classmethod
    def from_defaults(cls, model_name: str = "", backend: str = "auto", pretrained: str = "",
                      device: str = "auto", batch_size: int = 16) -> "ClipEmbedding":
        return cls(model_name=model_name, backend=backend, pretrained=pretrained, device=device,
                   embed_batch_size=batch_size)

    @property
    def encoder(self) -> ClipEncoder:
        if self._encoder is None:
            self._encoder = _build_encoder(self.model_name, self.backend, self.pretrained, self.device)
            self.model_name = self.model_name or self._encoder.model_id
        return self._encoder

    @property
    def model_id(self) -> str:
        return self.encoder.model_id

    @property
    def version(self) -> str:
        return self.encoder.version

    @property
    def dim(self) -> int:
        return self.encoder.dim

    # text side
    def _get_text_embeddings(self, texts: List[str]) -> List[Embedding]:
        out: List[Embedding] = []
        for i in range(0, len(texts), self.embed_batch_size):
            out.extend(self.encoder.encode_text(texts[i:i + self.embed_batch_size]).tolist())
        return out

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._get_text_embeddings([text])[0]

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._get_text_embedding(query)

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return await asyncio.to_thread(self._get_query_embedding, query)

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return await asyncio.to_thread(self._get_text_embedding, text)

    # image side
    def embed_pil(self, images: Sequence[Image.Image]) -> List[Embedding]:
        out: List[Embedding] = []
        for i in range(0, len(images), self.embed_batch_size):
            out.extend(self.encoder.encode_images(images[i:i + self.embed_batch_size]).tolist())
        return out

    def _get_image_embeddings(self, img_file_paths: List[ImageType]) -> List[Embedding]:
        return self.embed_pil([load_image(p) for p in img_file_paths])

    def _get_image_embedding(self, img_file_path: ImageType) -> Embedding:
        return self._get_image_embeddings([img_file_path])[0]

    async def _aget_image_embedding(self, img_file_path: ImageType) -> Embedding:
        return await asyncio.to_thread(self._get_image_embedding, img_file_path)

    async def _aget_image_embeddings(self, img_file_paths: List[ImageType]) -> List[Embedding]:
        return await asyncio.to_thread(self._get_image_embeddings, img_file_paths)


def _build_encoder(model: str, backend: str, pretrained: str, device: str) -> ClipEncoder:
    if backend == "openclip":
        return OpenClipEncoder(model or "ViT-B-32", pretrained or "laion2b_s34b_b79k", device)
    if backend == "hf" or (backend == "auto" and model):
        return HFClipEncoder(model or "openai/clip-vit-base-patch32", device)
    from mmrag_li.embeddings.offline import packaged_clip_encoder

    return packaged_clip_encoder(device)
