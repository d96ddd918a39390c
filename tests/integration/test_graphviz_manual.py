"""Real questions on a real manual (issue 11): Debian graphviz-doc's dotguide.pdf, 40 pages, whose
appendix tables list node (page 31), edge (page 32) and graph (page 33) attributes with their
defaults. "fontsize 14" is a row of all three tables; only the page heading ("A Principal Node
Attributes") says which. The offline default pipeline must answer from the right page and quote the
row with the right value. Skipped where graphviz-doc is not installed.
"""

from __future__ import annotations

import gzip
import re
import shutil
from pathlib import Path

import pytest

from mmrag_li.pipeline import MultiModalRAG
from mmrag_li.present import query_json

CANDIDATES = [Path("/usr/share/doc/graphviz/pdf/dotguide.pdf.gz"), Path("/usr/share/doc/graphviz/dotguide.pdf")]
MANUAL = next((p for p in CANDIDATES if p.exists()), None)
pytestmark = pytest.mark.skipif(MANUAL is None, reason="graphviz-doc (dotguide.pdf) is not installed")


@pytest.fixture(scope="module")
def rag(tmp_path_factory):
    root = tmp_path_factory.mktemp("graphviz")
    pdf = root / "dotguide.pdf"
    if MANUAL.suffix == ".gz":
        with gzip.open(MANUAL, "rb") as src, open(pdf, "wb") as dst:
            shutil.copyfileobj(src, dst)
    else:
        shutil.copy(MANUAL, pdf)
    rag = MultiModalRAG.from_config("default", store_dir=root / "store")
    report = rag.ingest([pdf], progress=False)
    assert report.failed == [], report.failed
    yield rag
    rag.close()


@pytest.mark.parametrize("question,page,heading,row", [
    ("What is the default fontsize for nodes?", 31, "A Principal Node Attributes", "fontsize 14 point size of label"),
    ("What is the default arrowsize of an edge?", 32, "B Principal Edge Attributes",
     "arrowsize 1.0 scaling factor for arrowheads"),
])
def test_table_value_is_answered_from_the_right_page(rag, question, page, heading, row):
    assert rag.retrieve(question, k=1)[0].page == page
    nodes = [n.node for n in rag.as_retriever().retrieve(question) if n.node.metadata.get("page") == page]
    assert heading in {n.metadata.get("section") for n in nodes}  # the chunks know their table's heading
    data = query_json(rag.query(question))
    first_quote = re.match(r'.*?"([^"]+)" \[(E\d+)\]', data["answer"])
    assert first_quote and first_quote.group(1) == row, data["answer"]
    cite = next(c for c in data["citations"] if c["id"] == first_quote.group(2))
    assert cite["page"] == page and cite["regions"][0]["text"] == row and cite["regions"][0]["kind"] == "text_span"
    assert data["verification"]["supported"] is True
