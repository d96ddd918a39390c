"""Strict config (typos fail naming the key and its source), presets by name, `kind` + the registry
(run-time registration and entry points), and the one error hierarchy."""

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import List, Literal, Sequence

import pytest

from mmrag_li import registry
from mmrag_li.config import (
    CaptionConfig,
    NoOCRConfig,
    OCRConfig,
    RapidOCRConfig,
    Settings,
    TesseractOCRConfig,
    preset_names,
)
from mmrag_li.enrich.caption import build_captioner
from mmrag_li.enrich.ocr import get_ocr_engine
from mmrag_li.enrich.types import OCRResult
from mmrag_li.errors import (
    ConfigError,
    ConfigFileNotFoundError,
    IngestError,
    MMRAGError,
    ModelUnavailableError,
    OCRError,
    UsageError,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def no_config_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith("MMRAG_"):
            monkeypatch.delenv(name)


# -- strict keys --------------------------------------------------------------------------------------


def test_typo_in_yaml_names_the_key_and_the_file(tmp_path):
    cfg = tmp_path / "mine.yaml"
    cfg.write_text("retrieval:\n  top_kk: 3\n")
    with pytest.raises(ConfigError) as err:
        Settings.load(cfg)
    msg = str(err.value)
    assert "retrieval.top_kk" in msg and str(cfg) in msg and "did you mean 'retrieval.top_k'" in msg
    assert err.value.key == "retrieval.top_kk" and err.value.source == str(cfg)
    assert isinstance(err.value, MMRAGError)


def test_typo_in_a_kind_section_lists_that_kinds_keys(tmp_path):
    cfg = tmp_path / "ocr.yaml"
    cfg.write_text("ocr:\n  kind: rapidocr\n  psm: 6\ncaption:\n  kind: transformers\n  modle: x\n")
    with pytest.raises(ConfigError) as err:
        Settings.load(cfg)
    msg = str(err.value)
    assert "ocr.psm" in msg and "kind 'rapidocr' takes" in msg and "recover_spaces" in msg
    assert "caption.modle" in msg and "did you mean 'caption.model'" in msg and str(cfg) in msg


def test_typo_in_env_var_names_the_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("MMRAG_RETRIEVAL__TOP_KK", "3")
    monkeypatch.setenv("MMRAG_WEAVIATE_URL", "http://x:8080")  # not a setting (no "__"): left alone
    with pytest.raises(ConfigError) as err:
        Settings.load("default")
    assert "retrieval.top_kk" in str(err.value)
    assert "environment variable MMRAG_RETRIEVAL__TOP_KK" in str(err.value)
    assert err.value.source == "environment variable MMRAG_RETRIEVAL__TOP_KK"
    monkeypatch.delenv("MMRAG_RETRIEVAL__TOP_KK")
    monkeypatch.setenv("MMRAG_RETRIEVAL__TOP_K", "9")
    assert Settings.load("default").retrieval.top_k == 9


def test_typo_in_keyword_override_and_in_direct_construction():
    with pytest.raises(ConfigError, match=r"tiling\.tiles.*keyword override"):
        Settings.load(**{"tiling.tiles": 3})
    with pytest.raises(ValueError, match="top_kk"):  # pydantic's ValidationError is a ValueError
        Settings(retrieval={"top_kk": 1})


def test_bad_value_names_key_and_file(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("ingest:\n  workers: many\n")
    with pytest.raises(ConfigError, match=r"ingest\.workers.*bad\.yaml"):
        Settings.load(cfg)


def test_unknown_kind_lists_the_known_ones(tmp_path):
    cfg = tmp_path / "k.yaml"
    cfg.write_text("ocr:\n  kind: tesseract5\n")
    with pytest.raises(ConfigError) as err:
        Settings.load(cfg)
    msg = str(err.value)
    assert "ocr.kind" in msg and "tesseract5" in msg and "rapidocr" in msg and "mmrag_li.ocr_engines" in msg


# -- presets --------------------------------------------------------------------------------------------


def test_every_preset_loads_by_name_from_another_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    names = preset_names()
    assert {"default", "openai", "weaviate", "local-vlm", "hub-models"} <= set(names)
    for name in names:
        assert isinstance(Settings.load(name), Settings)
    assert Settings.load("openai").llm.backend == "openai"
    with pytest.raises(ConfigFileNotFoundError, match="presets: default"):
        Settings.load("no-such-preset")
    with pytest.raises(FileNotFoundError):  # also a FileNotFoundError, for older callers
        Settings.load(tmp_path / "missing.yaml")


def test_a_file_path_wins_over_a_preset_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "openai").write_text("llm:\n  backend: openai_like\n")
    assert Settings.load("openai").llm.backend == "openai_like"


def test_presets_load_in_a_fresh_interpreter_outside_the_repo(tmp_path):
    code = ("import json; from mmrag_li.config import Settings, preset_names; "
            "print(json.dumps({n: Settings.load(n).llm.backend for n in preset_names()}))")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    backends = json.loads(out.stdout)
    assert backends["openai"] == "openai" and backends["default"] == "extractive"


def test_facade_from_config_by_preset_name(tmp_path, monkeypatch):
    from mmrag_li.pipeline import MultiModalRAG

    monkeypatch.chdir(tmp_path)
    rag = MultiModalRAG.from_config("openai", store_dir=tmp_path / "store")
    try:
        assert rag.settings.llm.backend == "openai" and rag.settings.store_dir == str(tmp_path / "store")
    finally:
        rag.close()


# -- kind -----------------------------------------------------------------------------------------------


def test_kind_selects_the_options_class_and_the_engine():
    s = Settings(ocr={"kind": "rapidocr", "threads": 2})
    assert isinstance(s.ocr, RapidOCRConfig) and s.ocr.threads == 2
    assert isinstance(Settings().ocr, TesseractOCRConfig)
    assert get_ocr_engine(Settings(ocr={"kind": "none"}).ocr) is None
    assert build_captioner(Settings(caption={"kind": "none"}).caption) is None
    assert Settings.model_validate(s.model_dump()) == s  # dumps the kind's own fields


def test_deprecated_engine_key_still_loads(tmp_path):
    cfg = tmp_path / "old.yaml"
    cfg.write_text("ocr:\n  engine: none\ncaption:\n  enabled: false\n")
    with pytest.warns(DeprecationWarning, match="ocr.engine"):
        s = Settings.load(cfg)
    assert isinstance(s.ocr, NoOCRConfig) and s.caption.kind == "none"


def test_changing_kind_in_a_later_layer_drops_the_other_kinds_options(monkeypatch):
    monkeypatch.setenv("MMRAG_OCR__KIND", "none")  # the default preset sets tesseract's lang/psm
    assert isinstance(Settings.load("default").ocr, NoOCRConfig)
    assert isinstance(Settings.load("default", **{"ocr.kind": "rapidocr"}).ocr, RapidOCRConfig)


# -- third-party kinds ----------------------------------------------------------------------------------


class ShoutOCRConfig(OCRConfig):
    kind: Literal["shout"] = "shout"
    word: str = "HELLO"


class ShoutOCR:
    """A fake OCR engine: every image says ``word``."""

    name = "shout"
    version = "1"

    def __init__(self, word: str = "HELLO"):
        self.word = word

    def recognize(self, image) -> OCRResult:
        return OCRResult(lines=[self.word], engine=self.name, engine_version=self.version)


def test_kind_registered_at_run_time_is_built_with_its_own_options(tmp_path):
    registry.register("ocr_engines", "shout", ShoutOCR, options=ShoutOCRConfig, description="test double")
    try:
        assert "shout" in registry.kinds("ocr_engines")
        cfg = tmp_path / "plugin.yaml"
        cfg.write_text("ocr:\n  kind: shout\n  word: HI\n")
        s = Settings.load(cfg)
        assert isinstance(s.ocr, ShoutOCRConfig)
        engine = get_ocr_engine(s.ocr)
        assert isinstance(engine, ShoutOCR) and engine.recognize(None).text == "HI"
        cfg.write_text("ocr:\n  kind: shout\n  wrod: HI\n")
        with pytest.raises(ConfigError, match=r"ocr\.wrod.*did you mean 'ocr\.word'"):
            Settings.load(cfg)
        with pytest.raises(ConfigError, match="already registered"):
            registry.register("ocr_engines", "shout", ShoutOCR)
    finally:
        registry.unregister("ocr_engines", "shout")
    assert "shout" not in registry.kinds("ocr_engines")


class HaikuCaptionConfig(CaptionConfig):
    kind: Literal["haiku"] = "haiku"
    syllables: int = 17


class HaikuCaptioner:
    """A fake captioner that a plugin package would expose through an entry point."""

    name = "haiku"
    version = "1"
    config_class = HaikuCaptionConfig

    def __init__(self, syllables: int = 17):
        self.syllables = syllables

    def caption(self, images: Sequence) -> List[str]:
        return [f"{self.syllables} syllables"] * len(images)


def test_kind_from_an_entry_point_is_built(monkeypatch):
    # Fake entry-point lookup: importlib.metadata.entry_points is monkeypatched so that an
    # installed plugin appears to declare [project.entry-points."mmrag_li.captioners"] haiku = ...
    real = importlib.metadata.entry_points
    ep = importlib.metadata.EntryPoint(name="haiku", value=f"{__name__}:HaikuCaptioner", group="mmrag_li.captioners")

    def fake_entry_points(**kw):
        return [ep] if kw.get("group") == "mmrag_li.captioners" else real(**kw)

    monkeypatch.setattr(importlib.metadata, "entry_points", fake_entry_points)
    try:
        assert "haiku" in registry.kinds("captioners")
        s = Settings(caption={"kind": "haiku", "syllables": 5})
        assert isinstance(s.caption, HaikuCaptionConfig)
        cap = build_captioner(s.caption)
        assert isinstance(cap, HaikuCaptioner) and cap.caption([None]) == ["5 syllables"]
    finally:
        registry.unregister("captioners", "haiku")


# -- errors ---------------------------------------------------------------------------------------------


def test_one_error_hierarchy():
    from mmrag_li.enrich import ocr
    from mmrag_li.evaluation.harness import EvalUsageError

    for cls in (ConfigError, ConfigFileNotFoundError, UsageError, IngestError, ModelUnavailableError, OCRError,
                EvalUsageError):
        assert issubclass(cls, MMRAGError), cls
    assert issubclass(EvalUsageError, UsageError) and issubclass(ConfigFileNotFoundError, FileNotFoundError)
    assert ocr.OCRError is OCRError


def test_store_errors_are_mmrag_errors():
    from mmrag_li import stores

    for name in ("StoreError", "StoreCorruptError", "DimensionMismatchError"):
        assert issubclass(getattr(stores, name), MMRAGError), name
