"""Section headings of PDF text layers (PDFReader chunk metadata "section"), and what they are used
for: BM25's plural folding + section bonus, and the extractive answerer reading a table row with
its heading. Real PDFs written with PyMuPDF; no models."""

import pymupdf
from llama_index.core.schema import NodeWithScore, TextNode

from mmrag_li.blobs import BlobStore
from mmrag_li.config import Settings
from mmrag_li.generation.evidence import build_evidence
from mmrag_li.generation.extractive import ExtractiveAnswerer
from mmrag_li.readers import PDFReader
from mmrag_li.readers.pdf_sections import SectionTracker, page_headings
from mmrag_li.retrieval.bm25 import BM25Index, fold_plural

ROWS = ["color black shape color", "fontsize 14 point size of label", "penwidth 1.0 width of pen", "style solid"]


def write_manual(path):
    """Page 1: running header, bold heading, table; page 2: another table; page 3: prose (no heading)."""
    doc = pymupdf.open()
    for title in ("A Principal Node Attributes", "B Principal Graph Attributes", None):
        page = doc.new_page(width=595, height=842)
        page.insert_text((72, 40), "User's Manual, page header", fontsize=11)
        y = 80
        if title:
            page.insert_text((72, y), title, fontname="hebo", fontsize=15)
            y += 30
        page.insert_text((72, y), "Name Default Values", fontsize=11)
        for i, row in enumerate(ROWS if title else ["Figures use the same fonts as the text around them."] * 3):
            page.insert_text((72, y + 18 * (i + 1)), row, fontsize=11)
        page.insert_text((300, 600), "left label", fontsize=13)  # a figure label: larger, not bold
    doc.save(path)


def test_headings_and_sections_of_chunks(tmp_path):
    write_manual(tmp_path / "manual.pdf")
    doc = pymupdf.open(tmp_path / "manual.pdf")
    assert [t for _y, t in page_headings(doc[0])] == ["A Principal Node Attributes"]
    tracker = SectionTracker()
    tracker.start_page(doc[0])
    assert tracker.at(30) == "" and tracker.at(200) == "A Principal Node Attributes"
    assert tracker.of_lines([28, 70, 100, 118, 136]) == "A Principal Node Attributes"  # the header line does not decide
    tracker.start_page(doc[1])
    assert tracker.at(30) == "A Principal Node Attributes" and tracker.at(None) == "B Principal Graph Attributes"
    reader = PDFReader.from_defaults(Settings(), blob_store=BlobStore(tmp_path / "blobs"), ocr=None)
    chunks = [n for n in reader.load_data(tmp_path / "manual.pdf") if n.metadata["modality"] == "text"]
    sections = {n.metadata["page"]: n.metadata.get("section") for n in chunks}
    assert sections == {1: "A Principal Node Attributes", 2: "B Principal Graph Attributes",
                        3: "B Principal Graph Attributes"}  # page 3 carries the last heading
    assert all("section" in n.excluded_embed_metadata_keys for n in chunks)


def table_node(node_id, section):
    return TextNode(id_=node_id, text="Name Default Values\n" + "\n".join(ROWS),
                    metadata={"modality": "text", "asset_id": node_id, "source": f"/d/{node_id}.pdf", "page": 1,
                              "section": section})


def test_bm25_folds_plurals_and_prefers_the_section_the_query_names():
    assert [fold_plural(w) for w in ("Nodes", "entries", "class", "bus", "4s")] == ["node", "entry", "class", "bus", "4s"]
    graph, node = table_node("graph", "C Principal Graph Attributes"), table_node("node", "A Principal Node Attributes")
    prose = TextNode(id_="prose", text="Nodes are drawn as ellipses.", metadata={"modality": "text"})
    hits = BM25Index([graph, node]).search("What is the default fontsize for nodes?", k=2)
    assert [h.node.node_id for h in hits] == ["node", "graph"] and hits[0].score > hits[1].score
    assert BM25Index([prose]).search("node", k=1)[0].node.node_id == "prose"  # "Nodes" found by "node"
    plain = BM25Index([table_node("a", ""), table_node("b", "")]).search("default fontsize for nodes", k=2)
    assert plain[0].score == plain[1].score


def test_extractive_answer_reads_a_row_with_its_section_heading():
    graph, node = table_node("graph", "C Principal Graph Attributes"), table_node("node", "A Principal Node Attributes")
    question = "What is the default fontsize for nodes?"
    evidence = build_evidence([NodeWithScore(node=graph, score=0.9), NodeWithScore(node=node, score=0.8)], question,
                              thumbnails=False)
    assert [e.source for e in evidence] == ["/d/graph.pdf", "/d/node.pdf"]
    assert evidence[1].section_of(evidence[1].texts[0]) == "A Principal Node Attributes"
    answer = ExtractiveAnswerer(use_embeddings=False).answer(question, evidence)
    assert '"fontsize 14 point size of label" [E2]' in answer and "[E1]" not in answer, answer
    assert "Principal" not in answer  # the heading is context, never quoted
