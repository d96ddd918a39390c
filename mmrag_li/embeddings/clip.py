"""CLIP-style image+text embeddings (one space for both) as a LlamaIndex ``MultiModalEmbedding``.

Backends: Hugging Face transformers (CLIP, SigLIP: any model with get_text_features /
get_image_features), OpenCLIP, and the packaged offline encoder (``embeddings/offline.py``).
Loading is by hub name or local path (a hub model pinned to a revision loads from the local HF
cache folder when it is there, without the network); batched, ``torch.inference_mode``, device
auto (cuda > mps > cpu), fp16 on GPU. Which model a store uses is decided in ``resolve.py``.
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

from mmrag_li import registry
from mmrag_li.embeddings.device import dtype_kwargs, pick_device
from mmrag_li.embeddings.hub import find_cached_snapshot
from mmrag_li.embeddings.offline import packaged_clip_encoder
from mmrag_li.errors import ModelUnavailableError

__all__ = ["ClipEmbedding", "ClipEncoder", "HFClipEncoder", "OpenClipEncoder", "dtype_kwargs", "hf_encoder",
           "load_image", "openclip_encoder", "packaged_encoder", "pick_device"]  # pick_device/dtype_kwargs live in embeddings.device, re-exported for older imports


class ClipEncoder(Protocol):
    """What a backend must do: L2-normalised float vectors for texts and RGB images."""

    model_id: str
    version: str
    dim: int

    def encode_text(self, texts: Sequence[str]) -> np.ndarray: ...

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray: ...


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.clip(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12, None)


def load_image(img: ImageType | Image.Image) -> Image.Image:
    """An RGB PIL image from a PIL image, bytes, a path or a file object.

    Args:
        img: the image or where to read it.
    """
    if isinstance(img, Image.Image):
        return img.convert("RGB")
    if isinstance(img, (bytes, bytearray)):
        img = BytesIO(img)
    with Image.open(img) as im:
        return im.convert("RGB")


class HFClipEncoder:
    """transformers CLIP/SigLIP by hub name or local path.

    Args:
        model: hub id or local folder; names the encoder (``model_id = "hf:<model>"``).
        device: ``"auto"`` or a torch device.
        path: load the weights from this folder instead (e.g. the model's HF cache snapshot).
        revision: the hub commit the weights are (the encoder's ``version``), when known.
    """

    # CLIP text-image cosines sit in a narrow band (~0.15 unrelated, 0.25-0.35 related).
    floors = {"image": 0.18, "image2image": 0.6}

    def __init__(self, model: str, device: str = "auto", path: str = "", revision: str = ""):
        try:
            import torch
            from transformers import AutoModel, AutoProcessor
        except ImportError as exc:  # pragma: no cover - torch/transformers are core deps
            raise ModelUnavailableError(f"transformers backend needs torch+transformers: {exc}") from exc
        self.device = pick_device(device)
        dtype = torch.float16 if self.device == "cuda" else torch.float32
        source = path or model
        pin = {"revision": revision} if revision and not path and revision not in ("local", "hub") else {}
        try:
            self.processor = AutoProcessor.from_pretrained(source, **pin)
            self.model = AutoModel.from_pretrained(source, **pin, **dtype_kwargs(dtype)).to(self.device).eval()
        except OSError as exc:
            raise ModelUnavailableError(
                f"cannot load CLIP model '{model}' (not a local path and the hub is unreachable?): {exc}"
            ) from exc
        self.model_id = f"hf:{model}"
        self.version = revision or str(getattr(self.model.config, "_commit_hash", None) or "local")
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
    """OpenCLIP models, e.g. ``ViT-B-32`` with pretrained ``laion2b_s34b_b79k`` (extra: [gpu]).

    Args:
        model: OpenCLIP architecture name.
        pretrained: OpenCLIP pretrained tag.
        device: ``"auto"`` or a torch device.
    """

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
    """LlamaIndex multimodal embedding over any :class:`ClipEncoder` backend (loaded on first use).

    Args:
        encoder: a ready :class:`ClipEncoder` (else one is built from the fields below).
        model_name: hub id or local folder; ``""``/``"auto"`` = the packaged offline encoder.
        backend: ``auto | hf | openclip | onnx | packaged`` (onnx = packaged).
        pretrained: OpenCLIP pretrained tag.
        revision: hub commit of ``model_name`` (loads from the HF cache folder when it is there).
        device: ``"auto"`` or a torch device.
        embed_batch_size: images/texts per forward pass.
    """

    model_name: str = Field(default="", description="Hub name or local path ('' or 'auto' = offline default).")
    backend: str = Field(default="auto", description="auto | hf | openclip | onnx | packaged")
    pretrained: str = Field(default="", description="OpenCLIP pretrained tag.")
    revision: str = Field(default="", description="Hub commit of model_name, when pinned.")
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
                      device: str = "auto", batch_size: int = 16, revision: str = "") -> "ClipEmbedding":
        """An embedding for exactly this model (no resolution; see ``embeddings.image.build_image_embedding``).

        Args:
            model_name: hub id or local folder; ``""``/``"auto"`` = the packaged offline encoder.
            backend: ``auto | hf | openclip | onnx | packaged``.
            pretrained: OpenCLIP pretrained tag.
            device: ``"auto"`` or a torch device.
            batch_size: images/texts per forward pass.
            revision: hub commit of ``model_name``, when pinned.
        """
        return cls(model_name=model_name, backend=backend, pretrained=pretrained, device=device,
                   embed_batch_size=batch_size, revision=revision)

    @property
    def encoder(self) -> ClipEncoder:
        if self._encoder is None:
            self._encoder = _build_encoder(self.model_name, self.backend, self.pretrained, self.device,
                                           self.revision)
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

    @property
    def query_space(self) -> Any:
        """The encoder's ``query_space`` (embeddings naming the same one share query vectors), or None."""
        return getattr(self.encoder, "query_space", None)

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


def hf_encoder(model: str = "", pretrained: str = "", device: str = "auto",
               revision: str = "") -> HFClipEncoder:
    """Image-encoder kind ``hf``: a transformers CLIP/SigLIP, from the local HF cache folder when it is there.

    Args:
        model: hub id or local folder (default ``openai/clip-vit-base-patch32``).
        pretrained: unused (OpenCLIP only).
        device: ``"auto"`` or a torch device.
        revision: the hub commit to load (``""``, ``"local"``, ``"hub"``: whatever is there).
    """
    model = model or "openai/clip-vit-base-patch32"
    pinned = revision if revision not in ("", "local", "hub") else ""
    snap = find_cached_snapshot(model, pinned or None)  # no network: a folder lookup
    return HFClipEncoder(model, device, path=snap.path if snap else "",
                         revision=pinned or (snap.revision if snap else ""))


def openclip_encoder(model: str = "", pretrained: str = "", device: str = "auto",
                     revision: str = "") -> OpenClipEncoder:
    """Image-encoder kind ``openclip``.

    Args:
        model: OpenCLIP architecture (default ``ViT-B-32``).
        pretrained: pretrained tag (default ``laion2b_s34b_b79k``).
        device: ``"auto"`` or a torch device.
        revision: unused.
    """
    return OpenClipEncoder(model or "ViT-B-32", pretrained or "laion2b_s34b_b79k", device)


def packaged_encoder(model: str = "", pretrained: str = "", device: str = "auto",
                     revision: str = "") -> ClipEncoder:
    """Image-encoder kinds ``packaged`` / ``onnx``: the packaged offline encoder (no options).

    Args:
        model: unused.
        pretrained: unused.
        device: ``"auto"`` or a torch device.
        revision: unused.
    """
    return packaged_clip_encoder(device)


def _build_encoder(model: str, backend: str, pretrained: str, device: str, revision: str = "") -> ClipEncoder:
    """Third-party kinds (registry group ``image_encoders``) are called the same way as the built-ins:
    ``factory(model=..., pretrained=..., device=..., revision=...)`` returning a :class:`ClipEncoder`."""
    model = "" if model.strip().lower() == "auto" else model
    if backend in ("", "auto"):
        backend = "hf" if model else "packaged"
    factory = registry.resolve("image_encoders", backend)
    return factory(model=model, pretrained=pretrained, device=device, revision=revision)
