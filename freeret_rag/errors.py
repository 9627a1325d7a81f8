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


class StoreUnreachableError(FreeRetError):
    """The Chroma server went away (or never answered). Whatever was committed is safe on the
    server, and a half-written document is invisible and resumed or purged by the next run."""

    def __init__(self, url: str) -> None:
        self.url = url
        super().__init__(f"the Chroma server at {url} is not reachable; nothing was lost; "
                         "run the same command again when it is back")
