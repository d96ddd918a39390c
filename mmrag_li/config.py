"""Typed settings for every stage, loaded from YAML with ``MMRAG_*`` environment overrides.

One object (`Settings`) travels through the pipeline so that a run is described by one file.
Presets ship inside the package (``mmrag_li/presets/*.yaml``) and load by name:
``Settings.load("default")`` is the offline laptop setup, ``"openai"``, ``"weaviate"``, ... change
only what differs; a path to your own YAML file works the same way.

Layers, later wins: the YAML file < ``MMRAG_<SECTION>__<KEY>`` environment variables
(``MMRAG_OCR__LANG=deu`` sets ``settings.ocr.lang``; ``MMRAG_STORE`` sets ``store_dir``) <
keyword overrides (``Settings.load("default", **{"retrieval.top_k": 3})``).

Every model rejects unknown keys: a typo is a :class:`~mmrag_li.errors.ConfigError` naming the
dotted key and where it came from (the file, or the environment variable). The OCR engine and the
captioner are chosen by ``kind``; each kind has its own options class, found through
:mod:`mmrag_li.registry` (third-party kinds come from entry points).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Literal, Mapping, Optional, Tuple, Union

import yaml
from pydantic import BaseModel, Field, SerializeAsAny, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from . import registry
from .config_base import StrictModel
from .config_parts import RayConfig, RayStageConfig, StoreConfig
from .config_retrieval import RetrievalConfig
from .config_sources import ENV_PREFIX, config_error, env_overrides, locate_config, merge_layer, preset_names, set_path
from .errors import ConfigError

__all__ = ["StrictModel", "KindConfig", "OCRConfig", "TesseractOCRConfig", "RapidOCRConfig", "NoOCRConfig",
           "CaptionConfig", "TransformersCaptionConfig", "OfflineCaptionConfig", "NoCaptionConfig",
           "EmbeddingConfig", "TilingConfig", "RayStageConfig", "RayConfig", "IngestConfig", "StoreConfig",
           "RetrievalConfig", "LLMConfig", "ServerConfig",
           "Settings", "ENV_PREFIX", "preset_names"]


class KindConfig(StrictModel):
    """Options of a pluggable part chosen by ``kind``; each kind has its own subclass.

    Subclasses name their registry ``group`` and ``default_kind``; :meth:`from_data` picks the
    options class registered for the ``kind`` in the data (see :mod:`mmrag_li.registry`).
    """

    group: ClassVar[str] = ""
    default_kind: ClassVar[str] = ""
    section: ClassVar[str] = ""

    kind: str

    @model_validator(mode="before")
    @classmethod
    def _deprecated_keys(cls, data: Any) -> Any:
        return cls.upgrade_keys(data) if isinstance(data, dict) else data

    @classmethod
    def upgrade_keys(cls, data: Dict[str, Any]) -> Dict[str, Any]:
        """Rewrite deprecated keys of ``data`` (a copy is returned); subclasses extend this.

        Args:
            data: the raw mapping of this section.
        """
        return dict(data)

    @classmethod
    def parse(cls, data: Any, source: str = "arguments") -> "KindConfig":
        """Like :meth:`from_data`, for factories: a bad key or kind is a :class:`ConfigError`
        naming ``<section>.<key>``.

        Args:
            data: a mapping, an instance, or None (the default kind).
            source: where ``data`` came from, for the message.
        """
        if isinstance(data, cls):
            return data
        raw = {cls.section: {} if data is None else data}
        try:
            return getattr(Settings.model_validate(raw), cls.section)
        except ValidationError as exc:
            raise config_error(exc, Settings, raw, {}, source, KIND_SECTIONS) from None

    @classmethod
    def from_data(cls, data: Any) -> "KindConfig":
        """The options object for ``data`` (a mapping with an optional ``kind``, or an instance).

        Args:
            data: a mapping, an instance of this class, or None (the default kind).
        """
        if isinstance(data, cls):
            return data
        if isinstance(data, BaseModel):
            data = data.model_dump()
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ValueError(f"must be a mapping with a 'kind' key, got {type(data).__name__}")
        data = cls.upgrade_keys(dict(data))
        kind = str(data.setdefault("kind", cls.default_kind))
        try:
            options = registry.options_class(cls.group, kind) or cls
        except ConfigError as exc:  # reported at <section>.kind
            raise ValidationError.from_exception_data(cls.__name__, [InitErrorDetails(
                type=PydanticCustomError("unknown_kind", "{reason}", {"reason": str(exc)}), loc=("kind",),
                input=kind)]) from None
        if not (isinstance(options, type) and issubclass(options, cls)):
            raise ValueError(f"{cls.group} kind {kind!r}: its options class must subclass {cls.__name__}")
        return options.model_validate(data)


def _rename_deprecated(section: str, data: Dict[str, Any], old: str, new: str) -> None:
    if old not in data:
        return
    value = data.pop(old)
    if new in data and data[new] != value:
        raise ValueError(f"{section}.{old} is a deprecated alias of {section}.{new}; give only {new}")
    data[new] = value
    warnings.warn(f"config key {section}.{old} is deprecated: use {section}.{new}", DeprecationWarning, stacklevel=3)


# -- OCR ------------------------------------------------------------------------------------------


class OCRConfig(KindConfig):
    """Base of the OCR options: ``kind`` picks the engine (``tesseract``, ``rapidocr``, ``none`` or
    a registered third-party kind). ``engine:`` is accepted as a deprecated alias of ``kind``."""

    group: ClassVar[str] = "ocr_engines"
    default_kind: ClassVar[str] = "tesseract"
    section: ClassVar[str] = "ocr"
    text_gate: bool = Field(True, description="Skip full OCR of images in which a cheap text detector finds no text.")

    @classmethod
    def upgrade_keys(cls, data: Dict[str, Any]) -> Dict[str, Any]:
        data = dict(data)
        _rename_deprecated("ocr", data, "engine", "kind")
        return data


class TesseractOCRConfig(OCRConfig):
    """``ocr.kind: tesseract`` -- options of :class:`mmrag_li.enrich.ocr.TesseractOCR`."""

    kind: Literal["tesseract"] = "tesseract"
    lang: str = Field("eng", description="Tesseract language packs joined by '+', e.g. 'eng+deu'.")
    min_conf: float = Field(40.0, description="Words below this confidence (0-100) are dropped as junk.")
    detect_orientation: bool = Field(True, description="Run OSD and rotate before OCR (rotated scans).")
    psm: int = Field(3, description="Tesseract page segmentation mode.")
    timeout_s: float = 120.0
    upscale_below: int = Field(1000, description="Images whose longer side is below this are upscaled first.")
    max_upscale: float = 2.0
    osd_min_conf: float = Field(2.0, description="Below this OSD confidence both readings are compared.")
    normalize_background: bool = Field(True, description="Divide out uneven illumination before OCR.")
    threads: Optional[int] = Field(1, description="OMP_THREAD_LIMIT for tesseract; null = tesseract's default.")


class RapidOCRConfig(OCRConfig):
    """``ocr.kind: rapidocr`` -- options of :class:`mmrag_li.enrich.ocr.RapidOCREngine`."""

    kind: Literal["rapidocr"] = "rapidocr"
    lang: str = Field("ch+en", description="Label of the shipped PP-OCRv4 models (Chinese + English).")
    min_conf: float = 40.0
    detect_orientation: bool = True
    threads: int = Field(-1, description="onnxruntime intra-op threads; -1 = its default.")
    recover_spaces: bool = Field(True, description="Put back word spaces PP-OCR drops, from the line's pixels.")


class NoOCRConfig(OCRConfig):
    """``ocr.kind: none`` -- no OCR."""

    kind: Literal["none"] = "none"


# -- captions -------------------------------------------------------------------------------------


class CaptionConfig(KindConfig):
    """Base of the captioner options: ``kind`` picks it (``transformers``, ``offline``, ``none``
    or a registered third-party kind). Deprecated: ``backend:`` (alias of ``kind``) and
    ``enabled: false`` (= ``kind: none``)."""

    group: ClassVar[str] = "captioners"
    default_kind: ClassVar[str] = "transformers"
    section: ClassVar[str] = "caption"

    @classmethod
    def upgrade_keys(cls, data: Dict[str, Any]) -> Dict[str, Any]:
        data = dict(data)
        _rename_deprecated("caption", data, "backend", "kind")
        if "enabled" in data:
            enabled = data.pop("enabled")
            warnings.warn("config key caption.enabled is deprecated: use caption.kind (none turns captions off)",
                          DeprecationWarning, stacklevel=3)
            if not enabled:
                return {"kind": "none"}
        return data


class TransformersCaptionConfig(CaptionConfig):
    """``caption.kind: transformers`` -- any Hugging Face image-to-text model; ``model: ""`` means
    the packaged offline default (the ``offline`` kind)."""

    kind: Literal["transformers"] = "transformers"
    model: str = Field("", description="Hub name or local path of an image-to-text model; '' = offline default.")
    max_new_tokens: int = 30
    detailed: bool = False
    batch_size: int = 4
    device: str = "auto"


class OfflineCaptionConfig(CaptionConfig):
    """``caption.kind: offline`` -- the packaged ImageNet tagger's tag line (no download)."""

    kind: Literal["offline"] = "offline"
    device: str = "cpu"


class NoCaptionConfig(CaptionConfig):
    """``caption.kind: none`` -- no captions."""

    kind: Literal["none"] = "none"


class EmbeddingConfig(StrictModel):
    """Text and image embedding models. A store records the models it was built with (models.json);
    ``auto`` then means "what the store recorded", and a different concrete model is refused."""

    text_model: str = Field("auto", description="'auto' (or '') = packaged all-MiniLM-L6-v2; else a "
                                                "sentence-transformers hub name or path (exactly that model).")
    image_backend: str = Field("auto", description="auto | hf (transformers CLIP/SigLIP) | openclip | packaged "
                                                   "(= onnx, the offline encoder) | a registered image_encoders kind.")
    image_model: str = Field("auto", description="'auto' (or '') = image_hub_model when it can be loaded (local HF "
                                                 "cache, then the hub), else the packaged offline encoder; a hub "
                                                 "name or local path = exactly that model.")
    image_hub_model: str = Field("openai/clip-vit-base-patch32",
                                 description="The hub CLIP/SigLIP model that image_model 'auto' prefers; '' = none.")
    image_pretrained: str = Field("", description="OpenCLIP pretrained tag (openclip backend only).")
    hub_timeout_s: float = Field(3.0, gt=0, description="How long `auto` waits for the hub when the model is not "
                                                         "in the local HF cache (only when a store is created).")
    device: str = "auto"
    batch_size: int = 16
    cache: bool = True

    @field_validator("image_backend")
    @classmethod
    def _known_image_backend(cls, value: str) -> str:
        builtin = ("auto", "hf", "openclip", "onnx", "packaged")
        if value not in builtin and value not in registry.kinds("image_encoders"):
            raise ValueError(f"unknown image encoder kind {value!r}; known: auto, "
                             f"{', '.join(registry.kinds('image_encoders'))} (packages add kinds through the "
                             f"entry-point group mmrag_li.image_encoders)")
        return value


class TilingConfig(StrictModel):
    enabled: bool = True
    min_side: int = Field(1600, description="Images whose longer side exceeds this are also tiled.")
    tile: int = 800
    overlap: float = 0.25


class IngestConfig(StrictModel):
    include: List[str] = Field(default_factory=lambda: ["**/*"])
    exclude: List[str] = Field(default_factory=lambda: ["**/.*", "**/.*/**"])
    recursive: bool = True
    follow_symlinks: bool = False
    max_file_mb: float = 200.0
    max_image_pixels: int = Field(89_478_485, description="Decompression-bomb limit in pixels, checked from the "
                                                          "header before decoding, for ingested and query images "
                                                          "alike (Pillow's own warning threshold).")
    model_max_side: int = Field(1600, description="Images are downscaled to this for models; originals are kept.")
    max_pdf_pages: int = 2000
    pdf_render_dpi: int = 110
    pdf_ocr_dpi: int = 200
    pdf_min_image_side: int = Field(64, description="Embedded PDF images smaller than this are ignored.")
    chunk_size: int = Field(384, description="Tokens per text chunk (256-512 recommended).")
    chunk_overlap: int = 48
    thumbnail_px: int = 256
    workers: int = 2
    model_threads: Union[int, Literal["auto"]] = Field(
        0, description="Threads each torch call may use while ingesting: 0 = torch's default (one per core in "
                       "every calling thread); auto = cores // (workers + 1), for many-core machines with many "
                       "workers, where reading threads and the embedding thread would oversubscribe the cores.")
    file_timeout_s: float = Field(300.0, description="A file still being read after this long is abandoned and "
                                                     "reported as timed out (PDFs get page_timeout_s more per page).")
    page_timeout_s: float = Field(20.0, description="Extra reading time allowed per PDF page.")
    max_file_budget_s: float = Field(900.0, description="Cap on one file's reading time, whatever its page count "
                                                        "(file_timeout_s + page_timeout_s per page never exceeds it); "
                                                        "the PDF reader stops at it too.")
    batch_files: int = Field(16, description="Files embedded and committed together (the unit of crash safety).")
    collection: str = Field("default", description="Stamped on every node; retrieval filters by allowed_collections.")
    redact_pii: bool = Field(False, description="Replace e-mails, phone numbers, IBANs, card numbers in stored text.")
    keep_originals: Optional[Literal["always", "redacted", "never"]] = Field(
        None, description="Copies of ingested files in <store>/blobs/originals: always = verbatim; redacted = text "
                          "files with the PII replaced, PDFs with their text layer redacted and metadata scrubbed, "
                          "no verbatim image file (its pixels are kept re-encoded, without metadata); never = no "
                          "copy. null = always, or never when redact_pii is on.")
    pii_phone_regions: List[str] = Field(default_factory=lambda: ["US", "GB", "DE", "FR"],
                                         description="Regions whose national phone formats are recognised.")
    safety_checker: Literal["", "open_nsfw"] = Field("", description="Image safety filter; '' = none.")
    safety_threshold: float = Field(0.8, description="Images scoring at or above this are refused.")
    refuse_polyglots: bool = Field(False, description="Refuse files that are valid in two formats (else read the first).")
    executor: Literal["local", "ray"] = Field("local", description="local: worker threads in this process; ray: "
                                                                   "read/OCR/embed on a Ray cluster (pip install "
                                                                   "mmrag_li[ray]), committed here.")
    ray: RayConfig = Field(default_factory=RayConfig, description="Options of executor: ray.")




class LLMConfig(StrictModel):
    backend: Literal["extractive", "openai", "openai_like"] = "extractive"
    model: str = "gpt-4o-mini"
    api_base: str = ""
    api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable holding the API key. It is sent "
                                                          "only to the backend's own host (api.openai.com for "
                                                          "openai) or to api_key_base_url, never to another "
                                                          "api_base / --llm-base-url.")
    api_key_base_url: str = Field("", description="A custom server (scheme://host[:port]) that may receive the key "
                                                  "in api_key_env; '' = none: a custom base URL gets no key.")
    temperature: float = 0.0
    max_tokens: int = 512
    evidence_k: int = 5
    max_images_per_call: int = 6
    thumbnail_px: int = 512
    timeout_s: float = 120.0


class ServerConfig(StrictModel):
    """``mmrag serve``: where it listens, who may see which collections, what uploads it takes."""

    host: str = Field("127.0.0.1", description="Interface to bind; 0.0.0.0 exposes the server to the network.")
    port: int = Field(8765, ge=0, le=65535)
    api_keys: Dict[str, List[str]] = Field(
        default_factory=dict,
        description="API key -> collections it may see ('*' = all). A key is named by an environment variable "
                    "holding it (e.g. MMRAG_KEY_TEAM_A) or by 'sha256:<hex digest of the key>'; never written "
                    "here in clear. Empty = no keys needed (every endpoint sees retrieval.allowed_collections).")
    cors_origins: List[str] = Field(default_factory=list, description="Origins allowed by CORS; [] = no CORS.")
    allowed_hosts: List[str] = Field(default_factory=list, description="Host headers accepted; [] = loopback names "
                                     "when bound to loopback, any otherwise (DNS-rebinding guard).")
    max_upload_mb: float = Field(50.0, gt=0, description="Largest request body (uploads) in MB.")
    max_upload_files: int = Field(20, ge=1, description="Files per ingest upload.")
    ingest_roots: List[str] = Field(default_factory=list, description="Folders POST /api/ingest may read server "
                                    "paths from; [] = only uploaded files are accepted.")


class Settings(StrictModel):
    """Every setting of a run; :meth:`load` reads a preset or file plus environment overrides."""

    store_dir: str = ".mmrag"
    ocr: SerializeAsAny[OCRConfig] = Field(default_factory=TesseractOCRConfig)
    caption: SerializeAsAny[CaptionConfig] = Field(default_factory=TransformersCaptionConfig)
    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig)
    tiling: TilingConfig = Field(default_factory=TilingConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig)
    llm: LLMConfig = Field(default_factory=LLMConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)

    @field_validator("ocr", mode="before")
    @classmethod
    def _ocr_kind(cls, value: Any) -> Any:
        return OCRConfig.from_data(value)

    @field_validator("caption", mode="before")
    @classmethod
    def _caption_kind(cls, value: Any) -> Any:
        return CaptionConfig.from_data(value)

    @classmethod
    def load(cls, path: Optional[str | Path] = None, **overrides: Any) -> "Settings":
        """Settings from a preset name or YAML path (or none), then ``MMRAG_*`` environment
        variables, then keyword overrides.

        Args:
            path: a preset name (``"default"``, ``"openai"``, see :func:`preset_names`) or the
                path of a YAML file; None = built-in defaults.
            **overrides: dotted keys, e.g. ``**{"retrieval.top_k": 3}``.

        Raises:
            ConfigFileNotFoundError: no such file or preset.
            ConfigError: a bad or unknown key; the message names the key and its source.
        """
        data: Dict[str, Any] = {}
        source = "defaults"
        if path:
            located, source = locate_config(path)
            try:
                data = yaml.safe_load(located.read_text(encoding="utf-8")) or {}
            except yaml.YAMLError as exc:
                raise ConfigError(f"{source}: not valid YAML: {exc}", source=source) from exc
            if not isinstance(data, dict):
                raise ConfigError(f"{source}: the top level must be a mapping of sections", source=source)
        origins: Dict[Tuple[str, ...], str] = {}
        env_layer = env_overrides(os.environ, origins)
        kw_layer: Dict[str, Any] = {}
        for key, value in overrides.items():
            keys = key.split(".")
            set_path(kw_layer, keys, value)
            origins[tuple(keys)] = f"keyword override {key!r}"
        for layer in (env_layer, kw_layer):
            data = merge_layer(data, layer, KIND_SECTIONS)
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise config_error(exc, cls, data, origins, source, KIND_SECTIONS) from None


KIND_SECTIONS: Dict[str, type] = {"ocr": OCRConfig, "caption": CaptionConfig}
