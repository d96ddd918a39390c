"""The base of every settings model (kept apart so that settings sections can live in their own modules)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["StrictModel"]


class StrictModel(BaseModel):
    """Base of every config model: an unknown key (a typo) is an error, never silently ignored."""

    model_config = ConfigDict(extra="forbid")
