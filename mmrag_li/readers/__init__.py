"""LlamaIndex readers: files in, nodes out (image, PDF, text; a directory walker dispatching by content)."""

from ._common import ocr_nodes
from .directory import DirectoryReader
from .fileio import SYMLINK_REASON, SourceFile, open_source
from .image import ImageReader, QueryImageError, open_query_image
from .pdf import PDFReader
from .sniff import FileType, sniff_type
from .text import TextReader

__all__ = ["DirectoryReader", "ImageReader", "PDFReader", "TextReader", "FileType", "sniff_type",
           "SourceFile", "open_source", "SYMLINK_REASON", "QueryImageError", "open_query_image", "ocr_nodes"]
