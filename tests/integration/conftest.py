"""Fixtures shared by the generation-layer integration tests."""

import pytest

from tests.fakes.evidence_corpus import build_corpus


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """Evidence nodes from real tesseract OCR of rendered PNGs plus text files, built once per run."""
    return build_corpus(tmp_path_factory.mktemp("evidence-corpus"))
