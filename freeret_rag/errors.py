"""Errors users see. Each carries a message that says what went wrong and what to do next."""

from __future__ import annotations

from pathlib import Path


class FreeRetError(Exception):
    """Base class: anything the app should show to the user instead of a traceback."""


class ModelLoadError(FreeRetError):
    """The model could not be loaded (not on disk while offline, unknown format, ...)."""


class UnsupportedModalityError(FreeRetError, ValueError):
    """The loaded model cannot take this input (e.g. an image given to a text-only LLM)."""


class IngestError(FreeRetError):
    """One file could not be turned into items. The batch it belongs to goes on."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path.name}: {reason}")


class IndexMismatchError(FreeRetError):
    """The index on disk was built with another model or prompt version; vectors must not mix."""
