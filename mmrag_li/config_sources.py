"""Where settings come from -- packaged presets, YAML files, ``MMRAG_*`` environment variables,
keyword overrides -- and error messages that name the bad key and its source.

Used by :meth:`mmrag_li.config.Settings.load`; nothing here knows the individual settings.
"""

from __future__ import annotations

import difflib
import warnings
from importlib import resources
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from pydantic import BaseModel, ValidationError

from . import registry
from .errors import ConfigError, ConfigFileNotFoundError

ENV_PREFIX = "MMRAG_"
PRESET_PACKAGE = "mmrag_li.presets"
Origins = Dict[Tuple[str, ...], str]

__all__ = ["ENV_PREFIX", "PRESET_PACKAGE", "preset_names", "preset_path", "locate_config", "env_overrides",
           "set_path", "merge_layer", "config_error"]


# -- presets and files ----------------------------------------------------------------------------


def preset_names() -> List[str]:
    """Names of the presets shipped in ``mmrag_li/presets`` (``Settings.load(name)``)."""
    root = resources.files(PRESET_PACKAGE)
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def preset_path(name: str):
    """The packaged YAML of preset ``name`` (a ``Traversable``: ``.read_text()`` works even from
    a zip), or None.

    Args:
        name: preset name, with or without ``.yaml``.
    """
    stem = name[:-5] if name.endswith(".yaml") else name[:-4] if name.endswith(".yml") else name
    if not stem or "/" in stem or "\\" in stem or stem.startswith("."):
        return None
    candidate = resources.files(PRESET_PACKAGE) / f"{stem}.yaml"
    return candidate if candidate.is_file() else None


def locate_config(path: str | Path):
    """``(readable file, label)`` for a YAML path or a preset name; an existing file wins.

    Args:
        path: file path or preset name (``"default"``, ``"openai.yaml"``).

    Raises:
        ConfigFileNotFoundError: neither a file nor a preset; the message lists the presets.
    """
    p = Path(path).expanduser()
    if p.is_file():
        return p, str(p)
    name = str(path)
    preset = preset_path(name)
    if preset is None and p.parent.name == "configs":  # the old repo-root configs/NAME.yaml
        preset = preset_path(p.name)
        if preset is not None:
            warnings.warn(f"{path}: the configs/ directory is gone; presets ship in the package: "
                          f"use the name {p.stem!r}", DeprecationWarning, stacklevel=3)
    if preset is not None:
        return preset, f"preset {Path(name).stem!r} ({preset})"
    raise ConfigFileNotFoundError(
        f"config file not found: {path} (not a file, and not a preset name; presets: {', '.join(preset_names())})",
        source=name)


# -- layers -----------------------------------------------------------------------------------------


def set_path(data: Dict[str, Any], keys: List[str], value: Any) -> None:
    """Set ``data[k0][k1]...[kn] = value``, creating the mappings on the way.

    Args:
        data: nested mapping to change in place.
        keys: the dotted key, split.
        value: the value.
    """
    for key in keys[:-1]:
        nxt = data.get(key)
        if not isinstance(nxt, dict):
            nxt = data[key] = {}
        data = nxt
    data[keys[-1]] = value


def env_overrides(env: Mapping[str, str], origins: Optional[Origins] = None) -> Dict[str, Any]:
    """Nested overrides from ``MMRAG_<SECTION>__<KEY>`` variables (values parsed as YAML), and
    ``MMRAG_STORE`` / ``MMRAG_STORE_DIR`` for ``store_dir``. ``MMRAG_*`` variables without ``__``
    (``MMRAG_WEAVIATE_URL``, ...) are not settings and are left alone.

    Args:
        env: the environment (``os.environ``).
        origins: filled with key tuple -> ``"environment variable NAME"``.
    """
    out: Dict[str, Any] = {}
    origins = origins if origins is not None else {}
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        keys = name[len(ENV_PREFIX):].lower().split("__")
        raw = env[name]
        set_path(out, keys, yaml_value(raw))
        origins[tuple(keys)] = f"environment variable {name}"
    for name in ("MMRAG_STORE_DIR", "MMRAG_STORE"):
        if env.get(name):
            out["store_dir"] = env[name]
            origins[("store_dir",)] = f"environment variable {name}"
            break
    return out


def yaml_value(raw: str) -> Any:
    """An environment value parsed as YAML (``"7"`` -> 7, ``"[a, b]"`` -> list); text that is not
    valid YAML stays a string.

    Args:
        raw: the variable's value.
    """
    import yaml

    if not raw:
        return raw
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def merge_layer(base: Dict[str, Any], layer: Dict[str, Any], kind_sections: Mapping[str, type]) -> Dict[str, Any]:
    """``layer`` over ``base`` (a new dict). A layer that changes the ``kind`` of a kind section
    (``ocr``, ``caption``) replaces that section: the old kind's options belong to the other engine.

    Args:
        base: the lower layer.
        layer: the higher layer.
        kind_sections: section name -> its :class:`~mmrag_li.config.KindConfig` base class.
    """
    out = dict(base)
    for key, value in layer.items():
        section_cls = kind_sections.get(key)
        old = out.get(key)
        if section_cls is not None and isinstance(value, dict) and isinstance(old, dict):
            try:
                value, old = section_cls.upgrade_keys(value), section_cls.upgrade_keys(old)
            except ValueError:
                pass
            if "kind" in value and value["kind"] != old.get("kind", section_cls.default_kind):
                out[key] = value
                continue
        if isinstance(value, dict) and isinstance(old, dict):
            out[key] = merge_layer(old, value, {})
        else:
            out[key] = value
    return out


# -- error messages ---------------------------------------------------------------------------------


def _flatten(errors: List[Dict[str, Any]], prefix: Tuple = ()) -> List[Dict[str, Any]]:
    flat = []
    for err in errors:
        inner = (err.get("ctx") or {}).get("error")
        if isinstance(inner, ValidationError):  # older pydantic wraps errors raised in validators
            flat.extend(_flatten(inner.errors(), prefix + tuple(err["loc"])))
        else:
            flat.append({**err, "loc": prefix + tuple(err["loc"])})
    return flat


def _model_at(root: type, loc: Tuple[str, ...], data: Any, kind_sections: Mapping[str, type]) -> Optional[type]:
    """The config model that holds the last key of ``loc`` (for "did you mean")."""
    model: Any = root
    for depth, part in enumerate(loc[:-1]):
        field = model.model_fields.get(part)
        data = data.get(part) if isinstance(data, dict) else None
        section_cls = kind_sections.get(part) if depth == 0 else None
        if field is None:
            return None
        if section_cls is not None:
            raw = data if isinstance(data, dict) else {}
            try:
                kind = section_cls.upgrade_keys(raw).get("kind", section_cls.default_kind)
                model = registry.options_class(section_cls.group, str(kind)) or section_cls
            except (ConfigError, ValueError):
                return None
        else:
            model = field.annotation
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
    return model


def _origin(loc: Tuple[str, ...], origins: Origins, default: str) -> str:
    best: Tuple[str, ...] = ()
    for key in origins:
        n = min(len(key), len(loc))
        if key[:n] == loc[:n] and len(key) > len(best):
            best = key
    return origins[best] if best else default


def config_error(exc: ValidationError, root: type, data: Dict[str, Any], origins: Origins, source: str,
                 kind_sections: Mapping[str, type]) -> ConfigError:
    """A :class:`ConfigError` whose message names every bad dotted key and where it was set.

    Args:
        exc: pydantic's error.
        root: the model that failed (``Settings``).
        data: the merged raw settings that failed.
        origins: key tuple -> ``"environment variable ..."`` / ``"keyword override ..."``.
        source: where every other key came from (the file, or ``"defaults"``).
        kind_sections: section name -> its kind base class (to find a kind's valid keys).
    """
    lines: List[str] = []
    first: Optional[Tuple[str, str]] = None
    for err in _flatten(exc.errors()):
        loc = tuple(str(p) for p in err["loc"])
        key = ".".join(loc) or "(top level)"
        where = _origin(loc, origins, source)
        if err.get("type") == "extra_forbidden":
            model = _model_at(root, loc, data, kind_sections)
            known = list(model.model_fields) if model is not None else []
            hint = difflib.get_close_matches(loc[-1], known, n=1)
            msg = f"unknown key {key!r} in {where}"
            msg += f" (did you mean {'.'.join(loc[:-1] + (hint[0],))!r}?)" if hint else ""
            kind = model.model_fields["kind"].default if known and getattr(model, "group", "") else None
            scope = f"kind {kind!r} takes" if isinstance(kind, str) else "valid keys here"
            msg += f"; {scope}: {', '.join(known)}" if known else ""
        else:
            inner = (err.get("ctx") or {}).get("error")
            text = str(inner) if isinstance(inner, Exception) else err.get("msg", "invalid value")
            msg = f"{key}: {text} (in {where})"
        lines.append(msg)
        first = first or (key, where)
    head = lines[0] if len(lines) == 1 else f"{len(lines)} configuration errors:\n  " + "\n  ".join(lines)
    return ConfigError(head, key=first[0] if first else None, source=first[1] if first else source)
