"""Where a Hugging Face model is: the local HF cache first, then (only when asked) the hub.

Model resolution (``resolve.py``) uses these to decide what ``embedding.image_model: auto``
means on this machine, and the loaders use :func:`find_cached_snapshot` to load a recorded model
from the cache by folder, so opening an existing store never needs the network.
The cache folder is read from the environment at call time (``HF_HUB_CACHE``, ``HF_HOME``),
not from ``huggingface_hub``'s import-time constant, so a process can point it elsewhere.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json", "open_clip_model.safetensors", "open_clip_pytorch_model.bin")
_TRUE = {"1", "ON", "YES", "TRUE"}


@dataclass(frozen=True)
class CachedSnapshot:
    """A model found in the local HF cache: its snapshot folder and the commit it is."""

    repo_id: str
    path: str
    revision: str


def hf_cache_dir() -> str:
    """The HF hub cache folder as the environment says now (``HF_HUB_CACHE`` > ``HF_HOME``/hub > default)."""
    env = os.environ
    if env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE"):
        return env.get("HF_HUB_CACHE") or env["HUGGINGFACE_HUB_CACHE"]
    if env.get("HF_HOME"):
        return os.path.join(env["HF_HOME"], "hub")
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set: no hub call may be made."""
    env_set = any(os.environ.get(k, "").upper() in _TRUE for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    if env_set:
        return True
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - a core dependency
        return False
    return bool(constants.HF_HUB_OFFLINE)


def looks_like_hub_id(name: str) -> bool:
    """True for ``org/name`` or ``name`` style hub ids that are not an existing local folder.

    Args:
        name: a model name from config.
    """
    return bool(name) and not os.path.exists(name) and name.count("/") <= 1 and not name.startswith((".", "/", "~"))


def find_cached_snapshot(repo_id: str, revision: Optional[str] = None,
                         cache_dir: Optional[str] = None) -> Optional[CachedSnapshot]:
    """The model's snapshot in the local HF cache, if it holds its config and weights; never touches the network.

    Args:
        repo_id: hub id, e.g. ``openai/clip-vit-base-patch32``.
        revision: a branch (default ``main``, read from ``refs/``) or a commit hash.
        cache_dir: cache folder; default :func:`hf_cache_dir`.
    """
    if not looks_like_hub_id(repo_id):
        return None
    from huggingface_hub import try_to_load_from_cache

    cache = cache_dir or hf_cache_dir()
    for marker in ("config.json", "open_clip_config.json"):
        try:
            found = try_to_load_from_cache(repo_id, marker, cache_dir=cache, revision=revision)
        except (ValueError, OSError):  # an invalid repo id or an unreadable cache is "not cached"
            return None
        if isinstance(found, str):
            snap = Path(found).parent
            if any((snap / w).exists() for w in WEIGHT_FILES):
                return CachedSnapshot(repo_id=repo_id, path=str(snap), revision=snap.name)
    return None


def probe_hub(repo_id: str, timeout_s: float = 3.0) -> str:
    """Ask the hub whether ``repo_id`` exists (one metadata request, short timeout); its commit hash.

    Args:
        repo_id: hub id.
        timeout_s: seconds to wait for the hub before giving up.

    Raises:
        OSError: offline mode is on, or the hub did not answer or does not know the model
            (the message says which).
    """
    if hub_offline():
        raise OSError("HF_HUB_OFFLINE is set")
    from huggingface_hub import HfApi

    try:
        info = HfApi().model_info(repo_id, timeout=timeout_s)
    except Exception as exc:  # connection errors, timeouts, 401/404: all mean "cannot use it now"
        raise OSError(f"the hub did not answer within {timeout_s:g}s or does not have it "
                      f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from exc
    return str(info.sha or "main")
