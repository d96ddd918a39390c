"""Manifest state machine, embedding cache and settings loading on real SQLite/YAML files."""

import numpy as np
import pytest

from mmrag_li.config import Settings, preset_names
from mmrag_li.embeddings.cache import EmbeddingCache, cache_key
from mmrag_li.manifest import Manifest


def test_manifest_pending_done_failed_roundtrip(tmp_path):
    m = Manifest(tmp_path / "m.sqlite")
    m.mark_pending([("/a.png", "A", 10, 1.0, ["A:image", "A:ocr"]), ("/b.png", "B", 5, 2.0, ["B:image"])])
    assert m.counts() == {"pending": 2}
    m.mark_done(["/a.png"])
    m.mark_failed("/c.pdf", "encrypted PDF (password required)")
    m.close()
    m2 = Manifest(tmp_path / "m.sqlite")  # survives reopen
    assert m2.get("/a.png").status == "done" and m2.get("/a.png").node_ids == ["A:image", "A:ocr"]
    assert m2.get("/b.png").status == "pending"
    assert m2.get("/c.pdf").reason == "encrypted PDF (password required)"
    assert m2.done_assets() == {"A": ["A:image", "A:ocr"]}
    m2.remove("/a.png")
    assert m2.get("/a.png") is None


def test_embedding_cache_computes_each_key_once(tmp_path):
    cache = EmbeddingCache(tmp_path / "c.sqlite")
    calls = []

    def compute(idx):
        calls.append(list(idx))
        return [[float(i), 1.0] for i in idx]

    keys = [cache_key("m", "1", "text", t) for t in ("a", "b", "c")]
    first = cache.get_or_compute(keys, compute)
    again = cache.get_or_compute(keys, compute)
    assert calls == [[0, 1, 2]] and first == again
    assert np.allclose(again[2], [2.0, 1.0])
    assert cache_key("m", "1", "text", "a") != cache_key("m", "2", "text", "a")  # version is part of the key


def test_settings_yaml_env_and_overrides(tmp_path, monkeypatch):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("ocr:\n  lang: deu\nretrieval:\n  rrf_k: 10\n")
    monkeypatch.setenv("MMRAG_RETRIEVAL__TOP_K", "7")
    monkeypatch.setenv("MMRAG_STORE", str(tmp_path / "store"))
    s = Settings.load(cfg, **{"llm.backend": "openai"})
    assert s.ocr.lang == "deu" and s.retrieval.rrf_k == 10 and s.retrieval.top_k == 7
    assert s.store_dir == str(tmp_path / "store") and s.llm.backend == "openai"
    with pytest.raises(FileNotFoundError):
        Settings.load(tmp_path / "missing.yaml")


def test_shipped_presets_validate_under_strict_models():
    names = preset_names()
    assert {"default", "openai", "local-vlm", "weaviate", "hub-models"} <= set(names)
    for name in names:
        s = Settings.load(name)  # by name; unknown keys would raise ConfigError
        assert s.store.backend in ("lancedb", "weaviate")
        assert Settings.load(f"{name}.yaml") == s
    assert Settings.load("weaviate").store.backend == "weaviate"
    assert Settings.load("openai").llm.backend == "openai"
