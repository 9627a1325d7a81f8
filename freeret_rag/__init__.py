"""FreeRet RAG: one multimodal LLM embeds, reranks and answers over your own files.

Public API: `FreeRet` (the engine), the value objects (`Item`, `Query`, `Hit`, `Answer`) and the
errors users see. The library (`Library`) is imported lazily so that using the engine alone does
not pull in Chroma.
"""

from .engine import EngineSettings, FreeRet
from .errors import FreeRetError, IndexMismatchError, IngestError, ModelLoadError, UnsupportedModalityError
from .items import Answer, Hit, Item, Query
from .prompts import PROMPT_VERSION

__all__ = ["Answer", "EngineSettings", "FreeRet", "FreeRetError", "Hit", "IndexMismatchError", "IngestError",
           "Item", "Library", "ModelLoadError", "PROMPT_VERSION", "Query", "UnsupportedModalityError"]


def __getattr__(name: str):
    if name == "Library":
        from .library import Library

        return Library
    raise AttributeError(name)
