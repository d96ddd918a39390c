"""A tiny labelled corpus + one real store, shared by the calibration, tune and ``mmrag tune`` tests.

The store is built once per pytest session under the session's base temp folder; a second test
module finds it there (the marker file) and reuses it, so the slow part (OCR, captions, model load)
runs once. Queries mix identifiers, photos and paraphrases.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import NamedTuple

from tests.conftest import DATA_DIR, render_lines

REPO = Path(__file__).resolve().parents[1]
INVOICES = {
    "invoice_4711.png": ["INVOICE 4711", "Bakery Sonnenschein", "Bread rolls for catering", "Total 1,939.00"],
    "invoice_58213.png": ["INVOICE 58213", "Nordlicht IT Services", "Notebook repair mainboard", "Total 518.90"],
    "invoice_90342.png": ["INVOICE 90342", "Office Furniture Gruenwald", "Ergonomic office chairs", "Total 2,594.00"],
    "invoice_31877.png": ["INVOICE 31877", "Alpine Print and Copy", "Business cards and flyers", "Total 307.50"],
}
NOTE = ("# Travel expense policy\n\nHotel costs are reimbursed up to 120 EUR per night in Germany. Submit original "
        "receipts within 30 days of your return through the expenses portal.\n")
QUERIES = [
    {"id": "id-4711", "type": "identifier", "query": "invoice number 4711", "relevant": ["invoice_4711.png"]},
    {"id": "id-58213", "type": "identifier", "query": "invoice number 58213", "relevant": ["invoice_58213.png"]},
    {"id": "id-90342", "type": "identifier", "query": "invoice number 90342", "relevant": ["invoice_90342.png"]},
    {"id": "id-31877", "type": "identifier", "query": "invoice number 31877", "relevant": ["invoice_31877.png"]},
    {"id": "photo-cat", "type": "photo", "query": "a cat", "relevant": ["cat_chelsea.jpg"]},
    {"id": "photo-coffee", "type": "photo", "query": "a cup of coffee", "relevant": ["coffee_cup.jpg"]},
    {"id": "photo-rocket", "type": "photo", "query": "a rocket on the launch pad", "relevant": ["rocket.jpg"]},
    {"id": "para-hotel", "type": "paraphrase", "query": "how much the company pays for a hotel room",
     "relevant": ["travel_policy.md"]},
    {"id": "para-laptop", "type": "paraphrase", "query": "fixing a broken laptop", "relevant": ["invoice_58213.png"]},
    {"id": "para-chairs", "type": "paraphrase", "query": "chairs for the office", "relevant": ["invoice_90342.png"]},
]
RELATED = "invoice number 4711 bread rolls"
UNRELATED = "recipe for a vegan chocolate cake with fresh raspberries"


class TuneCorpus(NamedTuple):
    """The shared corpus: its folder, the queries file and the store folder."""

    corpus: Path
    queries: Path
    store: Path


def build_corpus(root: Path) -> TuneCorpus:
    """Write the corpus and queries under ``root`` (idempotent); the store is ``root/store``.

    Args:
        root: a folder of its own.
    """
    corpus = root / "corpus"
    if not (root / "queries.jsonl").exists():
        corpus.mkdir(parents=True, exist_ok=True)
        for name, lines in INVOICES.items():
            render_lines(lines, size=(1000, 420)).save(corpus / name)
        shutil.copyfile(REPO / "examples" / "data" / "cat_chelsea.jpg", corpus / "cat_chelsea.jpg")
        shutil.copyfile(REPO / "examples" / "data" / "coffee_cup.jpg", corpus / "coffee_cup.jpg")
        shutil.copyfile(DATA_DIR / "skimage_rocket.jpg", corpus / "rocket.jpg")
        (corpus / "travel_policy.md").write_text(NOTE, encoding="utf-8")
        (root / "queries.jsonl").write_text("\n".join(json.dumps(q) for q in QUERIES) + "\n", encoding="utf-8")
    return TuneCorpus(corpus, root / "queries.jsonl", root / "store")


def shared_store(tmp_path_factory) -> TuneCorpus:
    """The session's corpus with an ingested store (built on first call, reused afterwards).

    Args:
        tmp_path_factory: pytest's session temp factory.
    """
    root = tmp_path_factory.getbasetemp() / "tune-shared"
    root.mkdir(exist_ok=True)
    tc = build_corpus(root)
    marker = root / "ingested.ok"
    if not marker.exists():
        from mmrag_li.pipeline import MultiModalRAG

        with MultiModalRAG.from_config(None, store_dir=str(tc.store)) as rag:
            rep = rag.ingest([str(tc.corpus)], progress=False)
        assert not rep.failed, rep.failed
        marker.write_text("ok")
    return tc
