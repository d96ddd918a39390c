"""One error hierarchy: every error mmrag_li raises on purpose is an :class:`MMRAGError`.

Messages name the file, key or asset concerned and say how to recover. Store errors
(``StoreError``, ``StoreCorruptError``, ...) live in :mod:`mmrag_li.stores` and ingest errors
(``IngestAborted``, ...) in :mod:`mmrag_li.ingest`; both subclass :class:`MMRAGError`.
"""

from __future__ import annotations

from typing import Optional

__all__ = ["MMRAGError", "ConfigError", "ConfigFileNotFoundError", "UsageError", "IngestError",
           "ModelUnavailableError", "OCRError"]


class MMRAGError(Exception):
    """Base class for errors raised by mmrag_li (``except MMRAGError`` catches them all)."""


class ConfigError(MMRAGError):
    """Settings that are invalid or cannot work together: an unknown key (a typo), a bad value,
    an unknown ``kind``, Weaviate without a URL, ...

    Args:
        message: what is wrong and how to fix it.
        key: the dotted key concerned (``"retrieval.top_kk"``), when there is one.
        source: where it was set (a file path, ``"environment variable MMRAG_..."``).
    """

    def __init__(self, message: str, *, key: Optional[str] = None, source: Optional[str] = None):
        super().__init__(message)
        self.key = key
        self.source = source


class ConfigFileNotFoundError(ConfigError, FileNotFoundError):
    """The config file or preset name does not exist (also a ``FileNotFoundError``)."""


class UsageError(MMRAGError):
    """The library or the command line was called in a way that cannot work (bad argument
    combination, missing input); the CLI exits with status 2."""


class IngestError(MMRAGError):
    """A file could not be ingested; carries the path and a human-readable reason.

    Args:
        path: the file.
        reason: why it failed.
    """

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class ModelUnavailableError(MMRAGError):
    """A model could not be loaded (not installed, not downloadable offline)."""


class OCRError(MMRAGError):
    """OCR of one image failed (timeout, engine crash); the caller decides whether that is fatal."""
