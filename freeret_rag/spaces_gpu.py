"""Hugging Face ZeroGPU: every model call inside `spaces.GPU`, asking for a duration computed from
the work (items to embed, pairs to rerank, tokens to generate), as the Spaces docs recommend
(`@spaces.GPU(duration=callable)`: ZeroGPU calls it with the call's own arguments; a shorter
duration gets a visitor a GPU sooner, and a call running past it is cut off).

    engine = for_spaces(FreeRet.from_pretrained(...))   # the engine itself without `spaces`

The `spaces` package is optional: without it (anywhere but a Space) `for_spaces` returns the engine.
Durations are `Rates` x the work, plus a fixed overhead, clamped to [MIN_S, MAX_S] whole seconds.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

MIN_S, MAX_S = 15, 300  # ZeroGPU's own default is 60 s; above 300 s few visitors' quotas would do


@dataclass(frozen=True)
class Rates:
    """Seconds per unit of work on the GPU, rounded up from bench/figures/qwen2-vl-2b-h200-*.txt
    (Qwen2-VL-2B shapes, bf16, one H200): 7.2 PDF pages/s at full resolution (0.14 s a page; 16-18
    pages/s with the visual budget), reranking 0.10 s a pair at full resolution (0.03 with budgets),
    up to 10.5 s to the first words of an answer (its prompt, sources and all). The per-token rate
    was not measured there: 0.05 s (20 tokens/s) is a cautious figure for a 2B model."""

    embed_item_s: float = 0.15
    rerank_pair_s: float = 0.10
    token_s: float = 0.05
    prompt_s: float = 10.0  # reading a prompt before the first new token (answers, rewrites)
    source_s: float = 0.5  # per source shown to the answer (its images), on top of the prompt
    overhead_s: float = 5.0  # per GPU call: attaching the GPU, moving what the call needs

    def embed_seconds(self, items: int) -> int:
        return clamp(self.overhead_s + items * self.embed_item_s)

    def rerank_seconds(self, pairs: int, measured_pair_s: float | None = None) -> int:
        """With the engine's own measured time per pair (a moving average), 1.5 times that when larger."""
        per_pair = max(self.rerank_pair_s, 1.5 * measured_pair_s) if measured_pair_s else self.rerank_pair_s
        return clamp(self.overhead_s + pairs * per_pair)

    def generate_seconds(self, max_new_tokens: int, sources: int = 0) -> int:
        return clamp(self.overhead_s + self.prompt_s + sources * self.source_s + max_new_tokens * self.token_s)


def clamp(seconds: float) -> int:
    """Whole seconds, rounded up, within [MIN_S, MAX_S]."""
    return int(min(MAX_S, max(MIN_S, math.ceil(round(seconds, 6)))))  # 5 + 100 * 0.15 is 20, not 21


REWRITE_TOKENS = 48  # engine.standalone_query's generation
ANSWER_TOKENS = 384  # EngineSettings.max_new_tokens' default, for an engine without settings


def spaces_gpu() -> Callable | None:
    """`spaces.GPU` when the `spaces` package is installed, else None."""
    try:
        import spaces  # type: ignore[import-not-found]
    except ImportError:
        return None
    return getattr(spaces, "GPU", None)


# The engine's model calls that SpacesEngine wraps (`embed` is required).
WRAPPED = frozenset({"embed_with_words", "embed_query", "embed_query_with_words", "write_query", "rerank",
                     "standalone_query", "answer_stream", "answer"})


DURATIONS_KEPT = 1000  # a long-running Space makes a model call per question: keep only the latest


class SpacesEngine:
    """The engine with every model call inside `spaces.GPU`, each asking for the time its work needs
    (`durations` records every duration asked, in order, for tests and logs).

    ZeroGPU lends a GPU per call for a limited time, so long indexing jobs are split: `embed`
    runs `chunk` items per GPU call. Calls take and return plain data (items, hits, arrays,
    strings), which ZeroGPU can move between processes.
    """

    def __init__(self, engine: Any, gpu: Callable, chunk: int = 16, rates: Rates = Rates()) -> None:
        self._engine = engine
        self.chunk = chunk
        self.rates = rates
        self.gpu_calls = 0
        self.durations: deque[tuple[str, int]] = deque(maxlen=DURATIONS_KEPT)  # the latest, for logs and tests
        self._lacks: set[str] = set()  # model calls the engine does not have: absent here too
        r = rates

        def wrap(name: str, method: str, seconds: Callable[..., int]) -> Callable:
            """The engine's `method` inside a GPU call; a method the engine lacks stays missing (calling
            it raises AttributeError, as on the engine itself)."""
            function = getattr(engine, method, None)
            if function is None:
                self._lacks.add(method)
                return function
            return gpu(duration=self._asked(name, seconds))(self._count(function))

        self._embed = wrap("embed", "embed", lambda items, *a, **k: r.embed_seconds(len(items)))
        self._embed_words = wrap("embed", "embed_with_words", lambda items, *a, **k: r.embed_seconds(len(items)))
        self._embed_query = wrap("query", "embed_query", lambda *a, **k: r.embed_seconds(1))
        self._query_words = wrap("query", "embed_query_with_words", lambda *a, **k: r.embed_seconds(1))
        self._write_query = wrap("write_query", "write_query",
                                 lambda item, max_new_tokens=20, *a, **k: r.generate_seconds(max_new_tokens))
        self._rerank = wrap("rerank", "rerank", lambda query, hits, *a, **k: r.rerank_seconds(
            len(hits), getattr(engine, "rerank_pair_seconds", None)))
        self._standalone = wrap("rewrite", "standalone_query",
                                lambda *a, **k: r.generate_seconds(REWRITE_TOKENS))
        if hasattr(engine, "answer_stream"):
            self._answer_stream = gpu(duration=self._asked("answer", lambda question, sources, *a, **k: r.generate_seconds(
                self.answer_tokens, len(sources))))(self._count_stream(engine.answer_stream))
        else:
            self._lacks.update({"answer_stream", "answer"})

    @property
    def answer_tokens(self) -> int:
        settings = getattr(self._engine, "settings", None)
        return int(getattr(settings, "max_new_tokens", ANSWER_TOKENS))

    def _asked(self, name: str, seconds: Callable[..., int]) -> Callable[..., int]:
        """The duration callable ZeroGPU calls with the call's arguments; it records what it asked."""
        def duration(*args, **kwargs) -> int:
            asked = seconds(*args, **kwargs)
            self.durations.append((name, asked))
            return asked
        return duration

    def _count(self, function: Callable) -> Callable:
        def call(*args, **kwargs):
            self.gpu_calls += 1
            return function(*args, **kwargs)
        return call

    def _count_stream(self, function: Callable) -> Callable:
        def stream(*args, **kwargs):
            self.gpu_calls += 1
            yield from function(*args, **kwargs)
        return stream

    def __getattr__(self, name: str) -> Any:  # model_id, capabilities, prompt_version, supports ...
        return getattr(self._engine, name)

    def __getattribute__(self, name: str) -> Any:
        # A model call the engine lacks is absent here too, so that `hasattr` answers as for the
        # engine (the library embeds with words only when the engine can).
        if name in WRAPPED and name in object.__getattribute__(self, "_lacks"):
            raise AttributeError(f"{type(object.__getattribute__(self, '_engine')).__name__!r} object has no "
                                 f"attribute {name!r}")
        return object.__getattribute__(self, name)

    def embed(self, items, batch_size=None):
        import numpy as np

        items = list(items)
        if len(items) <= self.chunk:
            return self._embed(items, batch_size)
        parts = [self._embed(items[start:start + self.chunk], batch_size) for start in range(0, len(items), self.chunk)]
        return np.concatenate(parts, axis=0)

    def embed_with_words(self, items, batch_size=None, top_words=24):
        import numpy as np

        items = list(items)
        parts = [self._embed_words(items[start:start + self.chunk], batch_size, top_words)
                 for start in range(0, len(items), self.chunk)] or [self._embed_words(items, batch_size, top_words)]
        return np.concatenate([vectors for vectors, _ in parts], axis=0), [w for _, words in parts for w in words]

    def embed_query(self, query):
        return self._embed_query(query)

    def embed_query_with_words(self, query, top_words=24):
        return self._query_words(query, top_words)

    def write_query(self, item, max_new_tokens=20):
        return self._write_query(item, max_new_tokens)

    def rerank(self, query, hits, batch_size=None):
        return self._rerank(query, list(hits), batch_size)

    def standalone_query(self, question, history=()):
        return self._standalone(question, list(history))

    def answer_stream(self, question, sources, history=(), image=None):
        return self._answer_stream(question, list(sources), list(history), image)

    def answer(self, question, sources, history=(), image=None):
        from .engine import FreeRet

        return FreeRet.answer(self, question, sources, history, image)  # streams through the GPU wrapper


def for_spaces(engine: Any, gpu: Callable | None = None, **options) -> Any:
    """Wrap `engine` for ZeroGPU when `spaces` is installed (or `gpu` is given); else return it. An
    engine already wrapped is returned as it is (each model call is one GPU call, never two nested)."""
    if isinstance(engine, SpacesEngine):
        return engine
    gpu = gpu or spaces_gpu()
    return engine if gpu is None else SpacesEngine(engine, gpu, **options)
