"""TextReader: Markdown sections, chunking, encodings."""

import pytest

from mmrag_li.config import Settings
from mmrag_li.errors import IngestError
from mmrag_li.readers import TextReader


def test_markdown_sections_kept(files, blobs):
    nodes = TextReader.from_defaults(blob_store=blobs).load_data(files["markdown"])
    sections = [n.metadata["section"] for n in nodes]
    assert sections == ["Field Guide", "Field Guide > Installation", "Field Guide > Installation > Offline mode",
                        "Field Guide > Troubleshooting"]
    for n in nodes:
        assert n.text.startswith(n.metadata["section"] + "\n\n")  # title searchable in the chunk text
        assert n.metadata["modality"] == "text" and n.metadata["page"] is None
        assert n.metadata["title"] == "Field Guide" and n.metadata["mime_type"] == "text/markdown"
    offline = nodes[2]
    assert "HF_HUB_OFFLINE=1" in offline.text and "# not a header inside code" in offline.text
    assert [n.metadata["chunk_index"] for n in nodes] == [0, 1, 2, 3]


def test_long_section_is_chunked_with_overlap(tmp_path, blobs):
    body = " ".join(f"Sentence number {i} talks about topic {i % 7}." for i in range(400))
    p = tmp_path / "long.md"
    p.write_text(f"# Big\n\n## Details\n\n{body}\n", encoding="utf-8")
    s = Settings.load(**{"ingest.chunk_size": 256, "ingest.chunk_overlap": 32})
    nodes = TextReader.from_defaults(s, blob_store=blobs).load_data(p)
    assert len(nodes) > 5
    assert all(n.metadata["section"] == "Big > Details" and n.text.startswith("Big > Details") for n in nodes)
    # consecutive chunks overlap
    a, b = nodes[0].text.split("\n\n", 1)[1], nodes[1].text.split("\n\n", 1)[1]
    assert a.split()[-1] in b


def test_plain_text(files, blobs):
    nodes = TextReader.from_defaults(blob_store=blobs).load_data(files["plain_txt"])
    assert len(nodes) == 1 and nodes[0].text.startswith("Plain UTF-8 text")
    assert nodes[0].metadata["section"] is None and nodes[0].metadata["encoding"] == "utf-8"


def test_non_utf8_is_decoded_and_reported(files, blobs):
    reader = TextReader.from_defaults(blob_store=blobs)
    nodes = reader.load_data(files["latin1_txt"])
    assert "Grüße aus Köln" in nodes[0].text and "1.939,00 €" in nodes[0].text
    assert nodes[0].metadata["encoding"] not in ("utf-8", "utf-8-sig")
    assert any("not UTF-8" in w for w in reader.warnings)


def test_whitespace_only(tmp_path, blobs):
    p = tmp_path / "blank.txt"
    p.write_text("   \n\n\t\n")
    with pytest.raises(IngestError, match="no text content"):
        TextReader.from_defaults(blob_store=blobs).load_data(p)
