"""Device and dtype helpers shared by every model loader (no model code here, no imports of ours)."""

from __future__ import annotations

from typing import Any, Dict


def pick_device(device: str = "auto") -> str:
    """The torch device to run on.

    Args:
        device: ``"auto"`` (cuda > mps > cpu) or an explicit torch device string, returned as is.
    """
    if device != "auto":
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def dtype_kwargs(dtype: Any) -> Dict[str, Any]:
    """``from_pretrained`` keyword for a torch dtype (transformers renamed ``torch_dtype`` to ``dtype`` in 4.56).

    Args:
        dtype: a torch dtype, e.g. ``torch.float16``.
    """
    import transformers

    major, minor = (int(p) for p in transformers.__version__.split(".")[:2])
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}
