"""Errors that name the file and the reason, so one bad file is reported, not fatal."""

from __future__ import annotations


class MMRAGError(Exception):
    """Base class for errors raised by mmrag_li."""


class IngestError(MMRAGError):
    """A file could not be ingested; carries the path and a human-readable reason."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class ConfigError(MMRAGError):
    """Settings that cannot work together (e.g. Weaviate without a URL)."""


class ModelUnavailableError(MMRAGError):
    """A model could not be loaded (not installed, not downloadable offline)."""
