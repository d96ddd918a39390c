""""Which company issued invoice N?" on dev-set invoices, through the real pipeline (issue 11).

The invoices and the receipt are drawn by the dev set's own renderer (``benchmarks/build_devset.py``:
letterhead, address line, ``INVOICE N`` title, ``Bill to:``, items, ``Total EUR``), read back by
real tesseract OCR, ingested into one store and asked through the offline query engine. The
issuer has no label on these documents: the answer quotes the letterhead of THE named invoice,
cites it and is ``supported``; a document whose title comes first (a name under it could be the
customer) gets "I don't know", not a guess.

Before the fix the field-row answerer found no labelled issuer row and said "I don't know" to both
dev-set questions (answer checks: cited item holds the answer 0.75 -> 0.625).
"""

from __future__ import annotations


import pytest

from mmrag_li.generation.prompts import I_DONT_KNOW
from tests.conftest import font_path, render_lines
from tests.integration.conftest import ask

pytestmark = pytest.mark.slow

# (number, vendor, customer, date, items, paraphrase): the dev set's own records
ALPINE = (31877, "Alpine Print & Copy", "Bergblick Hotel, Innsbruck", "2023-11-30",
          [("Business cards (500 pcs)", 3, 39.50), ("Flyers A5 (2000 pcs)", 1, 189.00), ("Poster A1", 5, 24.00)], "")
KELLER = (14598, "Keller Electrical", "Bakery Brandt, Leipzig", "2024-07-21",
          [("Replace fuse box", 1, 620.00), ("Install LED ceiling light", 6, 48.00), ("Call-out fee", 1, 35.00)], "")
HARDWARE = (20931, "CORNER HARDWARE STORE", "2024-03-16",
            [("WOOD SCREWS 4x40 200PC", 2, 6.49), ("WALL PAINT WHITE 5L", 1, 34.90), ("PAINT ROLLER", 1, 7.95)], "")


@pytest.fixture(scope="module")
def rag(tmp_path_factory):
    from benchmarks.build_devset import render_invoice, render_receipt
    from mmrag_li.pipeline import MultiModalRAG

    font_path()  # skips without DejaVu fonts
    root = tmp_path_factory.mktemp("issuers")
    render_invoice(ALPINE, root / "invoice_31877.png")
    render_invoice(KELLER, root / "invoice_14598.png")
    render_receipt(HARDWARE, root / "receipt_20931.png")
    render_lines(["INVOICE 55501", "Kranich Consulting", "Date: 2024-02-01", "Total EUR 120.00"],
                 size=(1100, 400)).save(root / "invoice_55501.png")
    rag = MultiModalRAG.from_config("default", store_dir=tmp_path_factory.mktemp("store"), caption={"kind": "none"})
    report = rag.ingest(sorted(root.iterdir()), progress=False)
    assert not report.failed, report.failed
    yield rag
    rag.close()


@pytest.mark.parametrize("question, issuer, source", [
    ("Which company issued invoice 31877?", "Alpine Print & Copy", "invoice_31877.png"),
    ("Which company issued invoice 14598?", "Keller Electrical", "invoice_14598.png"),
    ("Who issued receipt 20931?", "CORNER HARDWARE STORE", "receipt_20931.png"),
])
def test_the_named_documents_letterhead_answers_who_issued_it(rag, question, issuer, source):
    resp, raw = ask(rag, question)
    assert f'"{issuer}"' in raw, raw
    assert not any(o in raw for o in ("Alpine", "Keller", "CORNER") if o not in issuer), raw
    ver = resp.metadata["verification"]
    assert ver["supported"] is True and ver["citations_valid"] is True, ver["reasons"]
    cited = [c for c in resp.metadata["evidence"] if c["id"] in resp.metadata["citation_ids"]]
    assert cited and all(c["source"].endswith(source) for c in cited)


def test_a_name_under_the_title_is_not_guessed_as_the_issuer(rag):
    _, raw = ask(rag, "Which company issued invoice 55501?")
    assert raw == I_DONT_KNOW, raw


def test_field_questions_on_the_same_invoices_still_quote_their_row(rag):
    _, raw = ask(rag, "What is the total amount of invoice 31877?")
    assert '"Total EUR 427.50"' in raw, raw
