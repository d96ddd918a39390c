"""Which embedding models a store uses: resolved once when the store is created, then remembered.

``embedding.image_model: auto`` (the default; ``""`` is a synonym) means the hub CLIP/SigLIP model
named by ``embedding.image_hub_model`` when it can be loaded (local HF cache first; then the hub,
with a short timeout, unless ``HF_HUB_OFFLINE`` is set), otherwise the packaged offline encoder.
One log line (logger ``mmrag_li``) says which was chosen and why. A concrete name means exactly
that model. ``embedding.text_model: auto`` (or ``""``) is the packaged all-MiniLM-L6-v2.

The outcome is written to ``<store>/models.json`` by :func:`record` when the store is first
ingested into. :func:`resolve_models` on a store that has the file only reads it (no cache or hub
lookup, so a search cannot hang on a machine without network) and refuses a configuration that
names other models (:class:`ModelMismatchError`). ``auto`` always accepts what a store recorded.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mmrag_li.config import EmbeddingConfig
from mmrag_li.embeddings import hub
from mmrag_li.embeddings.packaged import (
    PACKAGED_DIM,
    PACKAGED_IMAGE_MODEL_ID,
    PACKAGED_TEXT_MODEL_ID,
    packaged_image_version,
    packaged_minilm_version,
)
from mmrag_li.errors import ConfigError, MMRAGError

log = logging.getLogger("mmrag_li")

MODELS_FILE = "models.json"
OPENCLIP_DEFAULT = ("ViT-B-32", "laion2b_s34b_b79k")
_COMMIT = re.compile(r"[0-9a-f]{40}")

__all__ = ["MODELS_FILE", "ModelMismatchError", "StoreModels", "check_models", "config_identity", "is_auto",
           "is_commit", "load_recorded", "record", "resolve_models"]


class ModelMismatchError(MMRAGError):
    """The configured embedding model differs from the one the store was built with (models.json);
    the message names both and says how to re-index."""


def is_auto(name: Optional[str]) -> bool:
    """True for the model names that mean "choose for me": ``"auto"`` and ``""``.

    Args:
        name: ``embedding.text_model`` or ``embedding.image_model``.
    """
    return (name or "").strip().lower() in ("", "auto")


def is_commit(revision: Optional[str]) -> bool:
    """True when ``revision`` is a full git commit hash (a pinned hub snapshot).

    Args:
        revision: a recorded model version.
    """
    return bool(revision) and bool(_COMMIT.fullmatch(revision))


class StoreModels(BaseModel):
    """The embedding models a store was (or will be) built with; the content of ``models.json``.

    ``text_model`` / ``image_model`` are what to load ("" = the packaged model; else a hub id or
    a local path); the ``*_id`` and ``*_version`` fields name them for caches and node metadata;
    a dim of 0 or an empty version means "not known until the model is loaded" (see :func:`record`).
    """

    model_config = ConfigDict(extra="ignore")

    format: int = 1
    text_model: str = ""
    text_model_id: str
    text_model_version: str = ""
    text_dim: int = 0
    image_backend: str = Field(description="hf | openclip | packaged | a registered image_encoders kind")
    image_model: str = ""
    image_pretrained: str = ""
    image_model_id: str
    image_model_version: str = ""
    image_dim: int = 0
    reason: str = Field("", description="Why this image model was chosen (for `auto`).")
    resolved_at: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    def describe_image(self) -> str:
        """One phrase naming the image model, for messages."""
        if self.image_backend == "packaged":
            return f"the packaged offline encoder ({self.image_model_id})"
        return self.image_model_id


def config_identity(cfg: EmbeddingConfig) -> Dict[str, str]:
    """The embedding settings that shape vectors, for an ingest-recipe fingerprint.

    ``auto`` is written as ``""`` (its old spelling), so the new default leaves the fingerprints of
    existing stores unchanged; which model ``auto`` means is fixed per store by models.json.

    Args:
        cfg: the embedding settings.
    """
    return {"text_model": "" if is_auto(cfg.text_model) else cfg.text_model, "image_backend": cfg.image_backend,
            "image_model": "" if is_auto(cfg.image_model) else cfg.image_model,
            "image_pretrained": cfg.image_pretrained}


# ---------------------------------------------------------------- resolution (new stores only)

def _resolve_text(cfg: EmbeddingConfig) -> Dict[str, Any]:
    name = (cfg.text_model or "").strip()
    if is_auto(name):
        return dict(text_model="", text_model_id=PACKAGED_TEXT_MODEL_ID,
                    text_model_version=packaged_minilm_version(), text_dim=PACKAGED_DIM)
    if os.path.exists(name):
        return dict(text_model=name, text_model_id=name, text_model_version="local")
    snap = hub.find_cached_snapshot(name)
    return dict(text_model=name, text_model_id=name, text_model_version=snap.revision if snap else "hub")


def _packaged_image(reason: str) -> Dict[str, Any]:
    return dict(image_backend="packaged", image_model="", image_model_id=PACKAGED_IMAGE_MODEL_ID,
                image_model_version=packaged_image_version(), image_dim=PACKAGED_DIM, reason=reason)


def _hf_image(name: str, revision: str, reason: str) -> Dict[str, Any]:
    return dict(image_backend="hf", image_model=name, image_model_id=f"hf:{name}", image_model_version=revision,
                reason=reason)


def _resolve_image(cfg: EmbeddingConfig, allow_network: bool) -> Tuple[Dict[str, Any], bool]:
    """(fields, fell_back) for the configured image model."""
    backend, name = cfg.image_backend, (cfg.image_model or "").strip()
    if backend in ("onnx", "packaged"):
        return _packaged_image(f"embedding.image_backend is {backend}"), False
    if backend == "openclip":
        model = name if not is_auto(name) else OPENCLIP_DEFAULT[0]
        pretrained = cfg.image_pretrained or OPENCLIP_DEFAULT[1]
        return dict(image_backend="openclip", image_model=model, image_pretrained=pretrained,
                    image_model_id=f"openclip:{model}:{pretrained}", reason="configured (openclip)"), False
    if backend not in ("auto", "hf"):  # a third-party kind: exactly what is configured; id and dim known once loaded
        model = "" if is_auto(name) else name
        return dict(image_backend=backend, image_model=model, image_pretrained=cfg.image_pretrained,
                    image_model_id=f"{backend}:{model}" if model else backend,
                    reason=f"configured (image encoder kind {backend})"), False
    if not is_auto(name):
        if os.path.exists(name):
            return _hf_image(name, "local", "configured (local folder)"), False
        snap = hub.find_cached_snapshot(name)
        return _hf_image(name, snap.revision if snap else "",
                         "configured" + (" (in the local Hugging Face cache)" if snap else "")), False
    wanted = (cfg.image_hub_model or "").strip()
    if not wanted:
        return _packaged_image("auto: embedding.image_hub_model is empty"), False
    if os.path.exists(wanted):
        return _hf_image(wanted, "local", "auto: embedding.image_hub_model is a local folder"), False
    snap = hub.find_cached_snapshot(wanted)
    if snap:
        return _hf_image(wanted, snap.revision, f"auto: found in the local Hugging Face cache "
                                                f"({hub.hf_cache_dir()}, revision {snap.revision[:12]})"), False
    if backend == "hf":  # hf + auto: the hub model and nothing else; loading will say if it cannot
        return _hf_image(wanted, "", "embedding.image_backend is hf (no offline fallback)"), False
    why_not = "network lookups are off for this call"
    if allow_network:
        try:
            revision = hub.probe_hub(wanted, cfg.hub_timeout_s)
            return _hf_image(wanted, revision if is_commit(revision) else "",
                             "auto: not in the local Hugging Face cache; the hub has it (downloaded on first use)"), False
        except OSError as exc:
            why_not = str(exc)
    return _packaged_image(f"auto: {wanted} is not in the local Hugging Face cache ({hub.hf_cache_dir()}) and "
                           f"{why_not}"), True


def _resolve(cfg: EmbeddingConfig, allow_network: bool) -> StoreModels:
    image, fell_back = _resolve_image(cfg, allow_network)
    models = StoreModels(**_resolve_text(cfg), **image)
    line = (f"embedding models: image = {models.describe_image()}"
            f"{' @ ' + models.image_model_version[:12] if models.image_backend == 'hf' and models.image_model_version else ''}"
            f" [{models.reason}]; text = {models.text_model_id}")
    if fell_back:
        log.warning("%s. For open-vocabulary image search put %s into the Hugging Face cache or set "
                    "embedding.image_model to a CLIP/SigLIP folder.", line, cfg.image_hub_model)
    else:
        log.info("%s", line)
    return models


# ---------------------------------------------------------------- the record in the store

def load_recorded(store_dir: str | Path) -> Optional[StoreModels]:
    """The models recorded in ``store_dir/models.json``, or None when the store has no record.

    Args:
        store_dir: the store folder.

    Raises:
        ConfigError: the file exists but cannot be read (names the file and how to recover).
    """
    path = Path(store_dir) / MODELS_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc})") from exc
    try:
        return StoreModels.model_validate_json(text)
    except ValidationError as exc:
        raise ConfigError(f"{path}: damaged ({exc.error_count()} problems, first: {exc.errors()[0]['msg']}); it names "
                          "the embedding models this store was built with: restore it from a backup, or re-index "
                          "into a new store with `mmrag ingest --store NEW ...`") from exc


def _same_path_or_name(a: str, b: str) -> bool:
    if a == b:
        return True
    return os.path.exists(a) and os.path.exists(b) and os.path.realpath(a) == os.path.realpath(b)


def _image_conflict(cfg: EmbeddingConfig, rec: StoreModels) -> Optional[Tuple[str, str]]:
    """(config key, configured value) that contradicts the record, or None."""
    backend, name = cfg.image_backend, (cfg.image_model or "").strip()
    if backend in ("onnx", "packaged"):
        return None if rec.image_backend == "packaged" else ("embedding.image_backend", backend)
    if backend == "openclip":
        model = name if not is_auto(name) else OPENCLIP_DEFAULT[0]
        pretrained = cfg.image_pretrained or OPENCLIP_DEFAULT[1]
        ok = rec.image_backend == "openclip" and (rec.image_model, rec.image_pretrained) == (model, pretrained)
        return None if ok else ("embedding.image_model", f"openclip:{model}:{pretrained}")
    if backend not in ("auto", "hf"):
        model = "" if is_auto(name) else name
        ok = rec.image_backend == backend and (rec.image_model, rec.image_pretrained) == (model, cfg.image_pretrained)
        return None if ok else ("embedding.image_backend", f"{backend}:{model}" if model else backend)
    if is_auto(name):
        if backend != "hf":
            return None  # auto accepts what the store was built with
        wanted = (cfg.image_hub_model or "").strip()
        ok = rec.image_backend == "hf" and _same_path_or_name(rec.image_model, wanted)
        return None if ok else ("embedding.image_hub_model (image_backend: hf)", wanted)
    ok = rec.image_backend == "hf" and _same_path_or_name(rec.image_model, name)
    return None if ok else ("embedding.image_model", name)


def check_models(cfg: EmbeddingConfig, recorded: StoreModels, store_dir: str | Path | None = None) -> None:
    """Refuse a configuration whose embedding models differ from the ones a store recorded.

    Args:
        cfg: the embedding settings in force.
        recorded: what the store's models.json says.
        store_dir: the store folder (named in the message).

    Raises:
        ModelMismatchError: names the configured and the recorded model and how to re-index.
    """
    where = f"the store at {store_dir}" if store_dir else "this store"
    hint = ("Re-index into a new store with `mmrag ingest --store NEW_DIR ...` using this config, or set "
            "{key} to auto (or to the recorded model) to keep using this store.")
    conflict = _image_conflict(cfg, recorded)
    if conflict:
        key, value = conflict
        raise ModelMismatchError(
            f"{key} is '{value}' but {where} was built with the image model {recorded.describe_image()} "
            f"(models.json, {recorded.resolved_at}); its vectors only match that model. "
            + hint.format(key="embedding.image_model"))
    text = (cfg.text_model or "").strip()
    if not is_auto(text) and not (_same_path_or_name(text, recorded.text_model) or text == recorded.text_model_id):
        raise ModelMismatchError(
            f"embedding.text_model is '{text}' but {where} was built with the text model "
            f"'{recorded.text_model_id}' (models.json, {recorded.resolved_at}); its vectors only match that model. "
            + hint.format(key="embedding.text_model"))


def resolve_models(cfg: EmbeddingConfig, store_dir: str | Path | None = None, *,
                   allow_network: bool = True) -> StoreModels:
    """The models to use with the store at ``store_dir``.

    With ``store_dir/models.json`` present: the recorded models, after checking the configuration
    against them (no HF cache or hub lookup). Otherwise: resolve the configuration now (one log
    line) without writing anything; call :func:`record` when the store is first written.

    Args:
        cfg: the embedding settings (``settings.embedding``).
        store_dir: the store folder, or None to resolve without a store.
        allow_network: may ``auto`` ask the hub (short timeout) when the model is not cached?
            Pass False on read-only paths of stores that predate models.json.

    Raises:
        ModelMismatchError: the configuration names other models than the store recorded.
        ConfigError: models.json is damaged.
    """
    if store_dir is not None:
        recorded = load_recorded(store_dir)
        if recorded is not None:
            check_models(cfg, recorded, store_dir)
            log.debug("embedding models from %s: image=%s text=%s", Path(store_dir) / MODELS_FILE,
                      recorded.image_model_id, recorded.text_model_id)
            return recorded
    return _resolve(cfg, allow_network)


def _text_dim(emb: Any) -> int:
    return len(emb.get_text_embedding("dimension probe"))


def record(store_dir: str | Path, models: StoreModels, text_embed: Any = None,
           image_embed: Any = None) -> StoreModels:
    """Write ``models`` to ``store_dir/models.json`` unless the store already has a record.

    Dims and versions still unknown are filled from the given embeddings first (this loads them,
    so a model that cannot load is never recorded). The first record wins: when the file exists
    it is returned unchanged.

    Args:
        store_dir: the store folder (created if missing).
        models: from :func:`resolve_models`.
        text_embed: the built text embedding (``build_text_embedding``), optional.
        image_embed: the built :class:`~mmrag_li.embeddings.clip.ClipEmbedding`, optional.

    Returns:
        What the store records now.
    """
    existing = load_recorded(store_dir)
    if existing is not None:
        return existing
    updates: Dict[str, Any] = {}
    if image_embed is not None and (not models.image_dim or not models.image_model_version):
        updates.update(image_dim=int(image_embed.dim), image_model_id=str(image_embed.model_id),
                       image_model_version=models.image_model_version or str(image_embed.version))
    if text_embed is not None and not models.text_dim:
        updates["text_dim"] = _text_dim(text_embed)
    models = models.model_copy(update=updates)
    folder = Path(store_dir)
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".models-", suffix=".json", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(models.model_dump_json(indent=2) + "\n")
        try:
            os.link(tmp, folder / MODELS_FILE)  # never replaces a record another process just wrote
        except FileExistsError:
            return load_recorded(folder) or models
        except OSError:  # filesystems without hard links
            os.replace(tmp, folder / MODELS_FILE)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return models
