"""FreeRet RAG: one multimodal LLM embeds, reranks and answers over your own files.

Public API: `FreeRet` (the engine), the value objects (`Item`, `Query`, `Hit`, `Answer`) and the
errors users see. The engine and the library are imported on first use, so that `list` or
`--help` does not pay for torch and Chroma.
"""

from .errors import FreeRetError, IndexMismatchError, IngestError, ModelLoadError, UnsupportedModalityError
from .items import Answer, Hit, Item, Query
from .prompts import PROMPT_VERSION

__all__ = ["Answer", "EngineSettings", "FreeRet", "FreeRetError", "Hit", "IndexMismatchError", "IngestError",
           "Item", "Library", "ModelLoadError", "PROMPT_VERSION", "Query", "UnsupportedModalityError"]


_LAZY = {"FreeRet": "engine", "EngineSettings": "engine", "Library": "library"}


def __getattr__(name: str):
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
