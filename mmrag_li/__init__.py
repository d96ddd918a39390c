"""mmrag_li: multimodal RAG for LlamaIndex.

Images, scanned PDFs and text in; cited, verified answers out. The names below are imported
lazily so that ``import mmrag_li`` stays cheap (torch and the models load on first use).
"""

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "MultiModalRAG": "mmrag_li.pipeline",
    "IngestReport": "mmrag_li.pipeline",
    "Settings": "mmrag_li.config",
    "DirectoryReader": "mmrag_li.readers",
    "ImageReader": "mmrag_li.readers",
    "PDFReader": "mmrag_li.readers",
    "TextReader": "mmrag_li.readers",
    "TesseractOCR": "mmrag_li.enrich.ocr",
    "RapidOCREngine": "mmrag_li.enrich.ocr",
    "get_ocr_engine": "mmrag_li.enrich.ocr",
    "TransformersCaptioner": "mmrag_li.enrich.caption",
    "build_captioner": "mmrag_li.enrich.caption",
    "ClipEmbedding": "mmrag_li.embeddings.clip",
    "build_text_embedding": "mmrag_li.embeddings.text",
    "ModalityStores": "mmrag_li.stores",
    "build_multimodal_index": "mmrag_li.stores",
    "FusionRetriever": "mmrag_li.retrieval.fusion",
    "AssetHit": "mmrag_li.retrieval.fusion",
    "VerifiedCitationQueryEngine": "mmrag_li.generation.query_engine",
    "VerifiedCitationChatEngine": "mmrag_li.generation.chat_engine",
    "make_tools": "mmrag_li.generation.tools",
    "verify_answer": "mmrag_li.generation.verify",
    "IngestError": "mmrag_li.errors",
    "MMRAGError": "mmrag_li.errors",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mmrag_li' has no attribute {name!r}")


def __dir__():
    return __all__
