"""Shared checks and inputs for the ingestion tests (integration and fault suites)."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Dict, Set

from PIL import Image, ImageDraw, ImageFont

from mmrag_li.schema import COLLECTIONS

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"


def text_png(path: Path, lines, size=(480, 160), font_px=28) -> Path:
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.truetype(FONT, font_px) if os.path.exists(FONT) else None
    for i, line in enumerate(lines):
        draw.text((16, 16 + i * int(font_px * 1.5)), line, font=font, fill="black")
    img.save(path)
    return path


def small_corpus(root: Path, n_md: int = 10, n_png: int = 4, tag: str = "doc") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n_md):
        (root / f"{tag}_{i:03d}.md").write_text(
            f"# {tag.title()} {i}\n\nThis note {i} is about topic {i % 7} and item {tag}-{i:05d}.\n", encoding="utf-8")
    for i in range(n_png):
        text_png(root / f"{tag}_img_{i:03d}.png", [f"{tag.upper()} PICTURE {i}", f"code {tag}-{i:05d}"])
    return root


def stored_ids(stores) -> Dict[str, Set[str]]:
    """asset_id -> node ids in the stores; asserts that no id occurs twice in a collection."""
    out: Dict[str, Set[str]] = {}
    for c in COLLECTIONS:
        ids = []
        for node in stores.all_nodes(c):
            ids.append(node.node_id)
            out.setdefault(node.metadata["asset_id"], set()).add(node.node_id)
        dupes = [i for i, k in Counter(ids).items() if k > 1]
        assert not dupes, f"duplicate node ids in {c}: {dupes[:5]}"
        assert stores.count(c)[c] == len(ids)
    return out


def assert_store_matches_manifest(rag) -> Dict[str, Set[str]]:
    """Exact agreement: no pending rows; the stores hold exactly the node ids the manifest tracks."""
    counts = rag.manifest.counts()
    assert counts.get("pending", 0) == 0, counts
    expected = {a: set(ids) for a, ids in rag.manifest.expected_nodes().items()}
    have = stored_ids(rag.stores)
    missing = {a: ids - have.get(a, set()) for a, ids in expected.items() if ids - have.get(a, set())}
    extra = {a: ids - expected.get(a, set()) for a, ids in have.items() if ids - expected.get(a, set())}
    assert not missing, f"nodes the manifest lists but the store lacks: {list(missing.items())[:3]}"
    assert not extra, f"nodes in the store that no manifest row tracks: {list(extra.items())[:3]}"
    return have
