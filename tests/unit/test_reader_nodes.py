"""Node conventions the readers promise: exclusions, deterministic ids, shared asset ids, geometry helpers."""

import pytest
from llama_index.core.schema import MetadataMode
from PIL import Image

from mmrag_li.config import Settings
from mmrag_li.enrich.ocr import clip_box, rotate_cw, split_line_into_words, unrotate_box
from mmrag_li.enrich.types import OCRResult, OCRWord
from mmrag_li.readers import TextReader
from mmrag_li.readers import ocr_nodes
from mmrag_li.readers.text import decode_text
from mmrag_li.schema import EMBED_EXCLUDED_KEYS, file_hash


@pytest.fixture()
def md_file(tmp_path):
    p = tmp_path / "doc.md"
    p.write_text("# Manual\n\nIntro.\n\n## Safety\n\nWear gloves when handling the battery.\n", encoding="utf-8")
    return p


def test_embed_and_llm_views_hide_paths_and_ids(md_file, blobs):
    nodes = TextReader.from_defaults(blob_store=blobs).load_data(md_file)
    assert nodes
    for n in nodes:
        assert set(EMBED_EXCLUDED_KEYS) <= set(n.excluded_embed_metadata_keys)
        embed_view = n.get_content(metadata_mode=MetadataMode.EMBED)
        llm_view = n.get_content(metadata_mode=MetadataMode.LLM)
        assert str(md_file) not in embed_view and n.metadata["asset_id"] not in embed_view
        assert n.metadata["blob_path"] not in embed_view and n.metadata["blob_path"] not in llm_view
        assert str(md_file) in llm_view  # the LLM sees the source so that it can cite it


def test_same_asset_id_and_deterministic_ids(md_file, blobs):
    r = TextReader.from_defaults(blob_store=blobs)
    first, second = r.load_data(md_file), r.load_data(md_file)
    assert [n.node_id for n in first] == [n.node_id for n in second]
    assert len({n.node_id for n in first}) == len(first)
    assert {n.metadata["asset_id"] for n in first} == {file_hash(md_file)}
    for n in first:
        assert n.metadata["source"] == str(md_file.resolve())
        assert n.metadata["content_hash"] == file_hash(md_file)
        assert n.metadata["collection"] == "default"
        assert n.metadata["mime_type"] == "text/markdown"
        assert n.metadata["ingested_at"] and n.metadata["producer"]


def test_collection_comes_from_settings(md_file, blobs):
    s = Settings.load(**{"ingest.collection": "manuals"})
    nodes = TextReader.from_defaults(s, blob_store=blobs).load_data(md_file)
    assert {n.metadata["collection"] for n in nodes} == {"manuals"}


def test_extra_info_is_merged(md_file, blobs):
    nodes = TextReader.from_defaults(blob_store=blobs).load_data(md_file, extra_info={"project": "x"})
    assert all(n.metadata["project"] == "x" for n in nodes)


# -- geometry ---------------------------------------------------------------------------------

@pytest.mark.parametrize("angle", [0, 90, 180, 270])
def test_unrotate_box_inverts_rotation(angle):
    """Mark a pixel block, rotate the image, find the block there, map its box back."""
    w, h = 40, 30
    img = Image.new("L", (w, h), 0)
    box = (5, 7, 12, 10)
    img.paste(255, box)
    rot = rotate_cw(img, angle)
    found = rot.getbbox()
    assert unrotate_box(found, angle, w, h) == pytest.approx(box)


def test_rotate_cw_is_clockwise():
    img = Image.new("L", (4, 2), 0)
    img.putpixel((0, 0), 255)  # top-left
    assert rotate_cw(img, 90).getbbox() == (1, 0, 2, 1)  # -> top-right of the 2x4 result


def test_clip_box():
    assert clip_box((-5, 3, 120, 50.6), 100, 40) == (0, 3, 100, 40)
    assert clip_box((10, 20, 5, 2), 100, 40) == (5, 2, 10, 20)


def test_split_line_into_words_proportional():
    words = split_line_into_words("ab  cdef", (0, 10, 80, 30), 90.0, 3)
    assert [w.text for w in words] == ["ab", "cdef"]
    assert words[0].bbox == (0, 10, 20, 30) and words[1].bbox == (40, 10, 80, 30)
    assert all(w.line == 3 and w.conf == 90.0 for w in words)


def test_ocr_nodes_split_long_pages_by_lines():
    lines = [f"line {i} with several words in it" for i in range(40)]
    words = [OCRWord(text=t, conf=80.0, bbox=(10 * j, 20 * i, 10 * j + 8, 20 * i + 15), line=i)
             for i, line in enumerate(lines) for j, t in enumerate(line.split())]
    result = OCRResult(words=words, lines=lines, engine="tesseract", engine_version="5", lang="eng", width=500, height=900)
    nodes = ocr_nodes(result, asset_id="a" * 32, source="/x.png", id_prefix=("p1",), chunk_tokens=100, meta={})
    assert len(nodes) > 1
    assert "\n".join(n.text for n in nodes) == "\n".join(lines)
    assert sum(n.metadata["n_words"] for n in nodes) == len(words)
    for i, n in enumerate(nodes):
        assert n.node_id == f"{'a' * 32}:ocr:p1-{i}"
        assert n.metadata["chunk_index"] == i
        xs = [w["bbox"] for w in n.metadata["words"]]
        assert n.metadata["bbox"] == [min(b[0] for b in xs), min(b[1] for b in xs), max(b[2] for b in xs), max(b[3] for b in xs)]


def test_ocr_nodes_empty_result():
    assert ocr_nodes(OCRResult(), asset_id="a", source="s", id_prefix=(), chunk_tokens=100, meta={}) == []


# -- decoding ---------------------------------------------------------------------------------

def test_decode_utf8_bom_and_legacy():
    assert decode_text("\ufeffhello".encode("utf-8")) == ("hello", "utf-8-sig")
    text, enc = decode_text("Grüße aus Köln. Die Straße ist naß und die Übung macht den Meister.".encode("cp1252"))
    assert "Grüße" in text and "Köln" in text and enc != "utf-8"


@pytest.mark.parametrize("chars,i,ok", [
    ("ab", 0, True),
    ("a b", 0, False),       # already a space
    ("1,939", 1, False),     # inside a number
    ("a,b", 0, False),       # never before a comma
    ("(a", 0, False),        # never after an opening bracket
    ("a,b", 1, True),        # after a comma between words
])
def test_space_recovery_rules(chars, i, ok):
    from mmrag_li.enrich.ocr import space_allowed

    assert space_allowed(list(chars), i) is ok
