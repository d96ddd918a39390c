"""Pluggable parts by name: ``kind`` -> the class that builds it, and the options class it takes.

Four groups, each also an entry-point group that installed packages can add to:

=================  ==========================  ==================================================
group              entry-point group           chosen by
=================  ==========================  ==================================================
``ocr_engines``    ``mmrag_li.ocr_engines``    ``ocr.kind`` (tesseract, rapidocr, none)
``captioners``     ``mmrag_li.captioners``     ``caption.kind`` (transformers, offline, none)
``image_encoders`` ``mmrag_li.image_encoders`` the image encoder (``embedding`` section)
``stores``         ``mmrag_li.stores``         the vector store backend (``store`` section)
=================  ==========================  ==================================================

Built-in kinds are ``"module:attribute"`` strings, imported only when used, so listing or
validating kinds never loads torch or an OCR engine. A third-party package adds a kind either at
run time::

    from mmrag_li import registry
    registry.register("ocr_engines", "myocr", "my_pkg.ocr:MyOCR", options="my_pkg.ocr:MyOCRConfig")

or, installed, through an entry point (``pyproject.toml``)::

    [project.entry-points."mmrag_li.ocr_engines"]
    myocr = "my_pkg.ocr:MyOCR"

An entry point names either the factory (a class or function; its options class is its
``config_class`` attribute when it has one) or a :class:`Plugin`. The options class of an OCR
engine or captioner subclasses :class:`mmrag_li.config.OCRConfig` / ``CaptionConfig`` and fixes
``kind``; without one the kind accepts no options beyond ``kind``. :func:`build` calls
``factory.from_config(options)`` when the factory has it, else ``factory(**options_without_kind)``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import threading
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Union

from .errors import ConfigError

__all__ = ["GROUPS", "Plugin", "register", "unregister", "get", "kinds", "resolve", "options_class", "build",
           "load_object"]

ENTRY_POINT_PREFIX = "mmrag_li."
GROUPS = ("ocr_engines", "captioners", "image_encoders", "stores")

Target = Union[str, Callable[..., Any], None]


@dataclass(frozen=True)
class Plugin:
    """One registered kind.

    Args:
        factory: ``"module:attribute"`` or the callable itself that builds the part; ``None``
            means the kind turns the part off (``build`` returns ``None``).
        options: ``"module:attribute"`` or the pydantic options class (``None``: only ``kind``).
        description: one line shown by ``kinds(..., describe=True)``.
    """

    factory: Target = None
    options: Target = None
    description: str = ""


_BUILTIN: Dict[str, Dict[str, Plugin]] = {
    "ocr_engines": {
        "tesseract": Plugin("mmrag_li.enrich.ocr.tesseract:TesseractOCR", "mmrag_li.config:TesseractOCRConfig",
                            "Tesseract through pytesseract (apt-get install tesseract-ocr)"),
        "rapidocr": Plugin("mmrag_li.enrich.ocr.rapidocr:RapidOCREngine", "mmrag_li.config:RapidOCRConfig",
                           "PP-OCRv4 ONNX models through rapidocr-onnxruntime"),
        "none": Plugin(None, "mmrag_li.config:NoOCRConfig", "no OCR"),
    },
    "captioners": {
        "transformers": Plugin("mmrag_li.enrich.caption:TransformersCaptioner",
                               "mmrag_li.config:TransformersCaptionConfig",
                               "any Hugging Face image-to-text model; model '' = the offline default"),
        "offline": Plugin("mmrag_li.embeddings.offline:TaggerCaptioner", "mmrag_li.config:OfflineCaptionConfig",
                          "tag line from the packaged ImageNet tagger (no download)"),
        "none": Plugin(None, "mmrag_li.config:NoCaptionConfig", "no captions"),
    },
    "image_encoders": {  # factory(model=, pretrained=, device=, revision=) -> ClipEncoder (embeddings/clip.py)
        "hf": Plugin("mmrag_li.embeddings.clip:hf_encoder", None, "transformers CLIP/SigLIP by hub id or folder"),
        "openclip": Plugin("mmrag_li.embeddings.clip:openclip_encoder", None, "OpenCLIP (pip install open_clip_torch)"),
        "packaged": Plugin("mmrag_li.embeddings.clip:packaged_encoder", None, "packaged offline encoder (no download)"),
        "onnx": Plugin("mmrag_li.embeddings.clip:packaged_encoder", None, "alias of packaged"),
    },
    "stores": {},
}
_runtime: Dict[str, Dict[str, Plugin]] = {g: {} for g in GROUPS}
_lock = threading.Lock()


def _check_group(group: str) -> None:
    if group not in GROUPS:
        raise ConfigError(f"unknown registry group {group!r}; known: {', '.join(GROUPS)}")


def register(group: str, kind: str, factory: Target, options: Target = None, *, description: str = "",
             replace: bool = False) -> None:
    """Add ``kind`` to ``group`` for this process.

    Args:
        group: one of :data:`GROUPS`.
        kind: the name config files use (``ocr.kind: myocr``).
        factory: ``"module:attribute"`` or a callable that builds the part (``None``: part off).
        options: ``"module:attribute"`` or the pydantic options class of the kind.
        description: one line for listings.
        replace: allow replacing a kind registered earlier at run time (built-ins are never
            replaced silently: pass ``replace=True`` to override one too).
    """
    _check_group(group)
    with _lock:
        if not replace and (kind in _runtime[group] or kind in _BUILTIN[group]):
            raise ConfigError(f"{group}: kind {kind!r} is already registered (pass replace=True to override)")
        _runtime[group][kind] = Plugin(factory, options, description)


def unregister(group: str, kind: str) -> None:
    """Remove a kind added with :func:`register` (built-ins and entry points stay).

    Args:
        group: one of :data:`GROUPS`.
        kind: the kind to remove; unknown kinds are ignored.
    """
    _check_group(group)
    with _lock:
        _runtime[group].pop(kind, None)


def _entry_points(group: str) -> list:
    try:
        return list(importlib.metadata.entry_points(group=ENTRY_POINT_PREFIX + group))
    except Exception:  # a broken distribution's metadata must not break config loading
        return []


def kinds(group: str) -> List[str]:
    """Every kind ``group`` knows: built-in, registered at run time, and from entry points
    (listed by name only; nothing is imported).

    Args:
        group: one of :data:`GROUPS`.
    """
    _check_group(group)
    names = dict.fromkeys([*_BUILTIN[group], *_runtime[group], *(ep.name for ep in _entry_points(group))])
    return list(names)


def get(group: str, kind: str) -> Plugin:
    """The :class:`Plugin` for ``kind`` (run-time registrations first, then built-ins, then
    entry points); :class:`ConfigError` naming the known kinds when there is none.

    Args:
        group: one of :data:`GROUPS`.
        kind: the kind to look up.
    """
    _check_group(group)
    with _lock:
        plugin = _runtime[group].get(kind) or _BUILTIN[group].get(kind)
    if plugin is not None:
        return plugin
    for ep in _entry_points(group):
        if ep.name == kind:
            try:
                obj = ep.load()
            except Exception as exc:
                raise ConfigError(f"{group}: kind {kind!r} comes from entry point {ep.value!r} "
                                  f"(group {ENTRY_POINT_PREFIX + group}), which failed to load: {exc}") from exc
            plugin = obj if isinstance(obj, Plugin) else Plugin(obj, getattr(obj, "config_class", None))
            with _lock:
                _runtime[group].setdefault(kind, plugin)
            return plugin
    raise ConfigError(f"unknown {group} kind {kind!r}; known: {', '.join(kinds(group))} "
                      f"(packages add kinds through the entry-point group {ENTRY_POINT_PREFIX + group})")


def load_object(target: Target) -> Any:
    """Import ``"module:attribute"`` (dotted attributes allowed); callables and None pass through.

    Args:
        target: the string or object.
    """
    if not isinstance(target, str):
        return target
    module, sep, attr = target.partition(":")
    if not sep or not module or not attr:
        raise ConfigError(f"registry target {target!r} must look like 'package.module:Attribute'")
    try:
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot import {target!r}: {exc}") from exc
    return obj


def resolve(group: str, kind: str) -> Any:
    """The factory of ``kind`` (imported now), or ``None`` for a kind that turns the part off.

    Args:
        group: one of :data:`GROUPS`.
        kind: the kind.
    """
    return load_object(get(group, kind).factory)


def options_class(group: str, kind: str) -> Optional[type]:
    """The pydantic options class of ``kind`` (``None`` when it declares none).

    Args:
        group: one of :data:`GROUPS`.
        kind: the kind.
    """
    return load_object(get(group, kind).options)


def build(group: str, options: Any, **kwargs: Any) -> Any:
    """Build the part described by ``options`` (a model with a ``kind`` field). The factory gets the
    kind's own options; fields of the group's base options class (e.g. ``ocr.text_gate``) configure
    the pipeline around the part and are not passed.

    Args:
        group: one of :data:`GROUPS`.
        options: the validated options (``settings.ocr``, ``settings.caption``, ...).
        **kwargs: extra keyword arguments for the factory (not part of the config).
    """
    factory = resolve(group, options.kind)
    if factory is None:
        return None
    if hasattr(factory, "from_config"):
        return factory.from_config(options, **kwargs)
    base = next((c for c in type(options).__mro__ if vars(c).get("group")), None)
    shared = {"kind", *getattr(base, "model_fields", {})}
    fields = {k: v for k, v in options.model_dump().items() if k not in shared}
    return factory(**fields, **kwargs)
