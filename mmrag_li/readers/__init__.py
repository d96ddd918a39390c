"""LlamaIndex readers: files in, nodes out (image, PDF, text; a directory walker dispatching by content)."""

from .directory import DirectoryReader
from .image import ImageReader
from .pdf import PDFReader
from .sniff import FileType, sniff_type
from .text import TextReader

__all__ = ["DirectoryReader", "ImageReader", "PDFReader", "TextReader", "FileType", "sniff_type"]
