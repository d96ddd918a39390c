"""Fixtures and helpers shared by the generation-layer integration tests."""

import functools

import pytest

from mmrag_li.generation.verify import verify_answer

from tests.fakes.evidence_corpus import build_corpus


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """Evidence nodes from real tesseract OCR of rendered PNGs plus text files, built once per run."""
    return build_corpus(tmp_path_factory.mktemp("evidence-corpus"))


def ask(rag, question: str):
    """Ask ``rag``'s query engine with a verifier that knows the question (as
    benchmarks/invoice_questions.py does); returns the response and the first attempt's raw answer."""
    engine = rag.as_query_engine(verifier=functools.partial(verify_answer, question=question))
    resp = engine.query(question)
    attempts = resp.metadata.get("attempts") or []
    return resp, (attempts[0]["answer"] if attempts else resp.response)
