"""What a Lance table directory on disk says about itself, without importing lance or lancedb."""

from __future__ import annotations

from pathlib import Path

__all__ = ["never_committed"]


def never_committed(table_dir: Path) -> bool:
    """True for a table directory without a single committed version: its first write was
    interrupted (a killed process) or is in progress in another process. Nothing in it was ever
    visible, and lancedb creates the table over it on the next write, so readers and writers treat
    it as "not written yet", not as damage.

    Args:
        table_dir: ``<store>/lancedb/<collection>.lance``.
    """
    versions = Path(table_dir) / "_versions"
    return not versions.is_dir() or not any(versions.iterdir())
