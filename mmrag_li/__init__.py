"""mmrag_li: multimodal RAG for LlamaIndex."""
__version__ = "0.1.0"
