"""ZeroGPU durations (issue 12, part 2): each model call asks `spaces.GPU` for the time its work
needs. Expected durations are worked out by hand from the rates; `spaces` is a fake module put in
sys.modules that behaves like ZeroGPU's decorator (it calls the duration with the call's arguments)."""

from __future__ import annotations

import inspect
import sys
import types
from types import SimpleNamespace

import numpy as np
import pytest

from freeret_rag.chat import for_spaces as chat_for_spaces
from freeret_rag.spaces_gpu import MAX_S, MIN_S, Rates, SpacesEngine, clamp, for_spaces


def test_durations_by_hand_with_the_default_rates():
    rates = Rates()  # 0.15 s an item, 0.10 s a pair, 0.05 s a token, 10 s a prompt, 0.5 s a source, 5 s a call
    assert (MIN_S, MAX_S) == (15, 300)
    assert rates.embed_seconds(1) == 15  # 5.15 s, raised to the minimum
    assert rates.embed_seconds(100) == 20  # 5 + 15
    assert rates.embed_seconds(101) == 21  # 5 + 15.15, rounded up
    assert rates.embed_seconds(5000) == 300  # 755 s, cut to the maximum: the caller splits long jobs
    assert rates.rerank_seconds(200) == 25  # 5 + 20
    assert rates.rerank_seconds(200, measured_pair_s=0.2) == 65  # 5 + 200 * 0.3 (1.5 x the measured 0.2)
    assert rates.rerank_seconds(200, measured_pair_s=0.02) == 25  # measured faster: the figure stays
    assert rates.generate_seconds(384, sources=5) == 37  # 5 + 10 + 2.5 + 19.2 = 36.7
    assert rates.generate_seconds(4000) == 215  # 5 + 10 + 200
    assert rates.generate_seconds(10_000) == 300
    assert [clamp(x) for x in (0, 14.2, 15.0, 15.01, 299.5, 1e9)] == [15, 15, 15, 16, 300, 300]


class Engine:
    """The engine's model calls, model-free."""

    model_id, prompt_version = "fake/model", "p1"
    settings = SimpleNamespace(max_new_tokens=100)
    rerank_pair_seconds = None

    def embed(self, items, batch_size=None):
        return np.ones((len(items), 2), np.float32)

    def embed_with_words(self, items, batch_size=None, top_words=24):
        return self.embed(items), [("word", 1.0)] * len(items)

    def embed_query(self, query):
        return np.ones(2, np.float32)

    def embed_query_with_words(self, query, top_words=24):
        return np.ones(2, np.float32), []

    def write_query(self, item, max_new_tokens=20):
        return "a query"

    def rerank(self, query, hits, batch_size=None):
        return list(hits)

    def standalone_query(self, question, history=()):
        return question

    def answer_stream(self, question, sources, history=(), image=None):
        yield "an"
        yield "an answer"


@pytest.fixture()
def fake_spaces(monkeypatch):
    """A `spaces` module whose GPU decorator does what ZeroGPU's does with a callable duration."""
    asked: list[tuple[str, int]] = []

    def GPU(duration=60):  # noqa: N802 - the package's name
        def decorate(task):
            if inspect.isgeneratorfunction(task):
                def stream(*args, **kwargs):
                    asked.append((task.__name__, duration(*args, **kwargs) if callable(duration) else duration))
                    yield from task(*args, **kwargs)
                return stream

            def call(*args, **kwargs):
                asked.append((task.__name__, duration(*args, **kwargs) if callable(duration) else duration))
                return task(*args, **kwargs)
            return call
        return decorate

    module = types.ModuleType("spaces")
    module.GPU = GPU
    monkeypatch.setitem(sys.modules, "spaces", module)
    return asked


def test_each_call_asks_for_the_time_its_work_needs(fake_spaces):
    rates = Rates(embed_item_s=2.0, rerank_pair_s=1.0, prompt_s=20.0, overhead_s=1.0)
    engine = for_spaces(Engine(), chunk=16, rates=rates)
    assert isinstance(engine, SpacesEngine) and engine.model_id == "fake/model"
    assert chat_for_spaces is for_spaces  # chat.py re-exports it (ui.py imports it from there)

    assert engine.embed(list(range(40))).shape == (40, 2)  # 16 + 16 + 8 items: three GPU calls
    assert fake_spaces == [("call", 33), ("call", 33), ("call", 17)]  # 1 + 16 x 2, 1 + 8 x 2
    fake_spaces.clear()
    engine.rerank("q", list(range(30)))
    engine.embed_query("q")
    engine.write_query("item", 40)
    engine.standalone_query("and then?", [{"role": "user", "content": "hi"}])
    # rerank 1 + 30 x 1; a query 1 + 2 -> 15 (the minimum); write_query 1 + 20 + 40 x 0.05; rewrite 1 + 20 + 48 x 0.05
    assert fake_spaces == [("call", 31), ("call", 15), ("call", 23), ("call", 24)]
    fake_spaces.clear()
    assert list(engine.answer_stream("q", ["s1", "s2", "s3"])) == ["an", "an answer"]
    assert fake_spaces == [("stream", 28)]  # 1 + 20 + 3 x 0.5 + 100 x 0.05 = 27.5
    assert [name for name, _ in engine.durations][-1] == "answer" and engine.gpu_calls == 8

    Engine.rerank_pair_seconds = 3.0  # the engine measured slower pairs: 1.5 x 3 s a pair
    try:
        fake_spaces.clear()
        engine.rerank("q", list(range(30)))
        assert fake_spaces == [("call", 136)]  # 1 + 30 x 4.5 = 136
    finally:
        Engine.rerank_pair_seconds = None


def test_without_the_spaces_package_the_engine_is_used_as_it_is(monkeypatch):
    monkeypatch.setitem(sys.modules, "spaces", None)  # import spaces -> ImportError
    engine = Engine()
    assert for_spaces(engine) is engine


def test_an_engine_already_wrapped_is_not_wrapped_again(fake_spaces):
    """The app wraps the engine it is given; one wrapped before (the Space's app.py) stays one layer,
    so that one embedding batch is one GPU call, not two nested ones."""
    engine = for_spaces(Engine(), chunk=16)
    assert for_spaces(engine) is engine
    engine.embed(list(range(3)))
    assert len(fake_spaces) == 1


def test_a_model_call_the_engine_lacks_is_absent_from_the_wrapper_too(fake_spaces):
    """Callers ask `hasattr(engine, "embed_with_words")` to choose a path: the wrapper answers as the
    engine does, and what the engine has still runs inside a GPU call."""
    class Plain:
        model_id = "plain/model"

        def embed(self, items, batch_size=None):
            return np.ones((len(items), 2))

        def answer_stream(self, question, sources, history=(), image=None):
            yield "x"

    engine = for_spaces(Plain())
    assert isinstance(engine, SpacesEngine)
    for name in ("embed_with_words", "embed_query_with_words", "rerank", "write_query", "standalone_query"):
        assert not hasattr(engine, name), name
    assert hasattr(for_spaces(Engine()), "embed_with_words")  # the full engine's are there
    assert engine.embed([1, 2, 3]).shape == (3, 2) and engine.model_id == "plain/model"
    assert [name for name, _ in fake_spaces] == ["call"]


def test_the_durations_asked_are_kept_for_the_latest_calls_only(fake_spaces):
    """A Space runs for weeks: the record of durations asked must not grow with every call."""
    from freeret_rag.spaces_gpu import DURATIONS_KEPT

    engine = for_spaces(Engine(), chunk=16)
    for _ in range(DURATIONS_KEPT + 5):
        engine.embed_query("q")
    assert len(engine.durations) == DURATIONS_KEPT and len(fake_spaces) == DURATIONS_KEPT + 5
    assert DURATIONS_KEPT == 1000  # the figure the change promised, written out (not 0: nothing kept)
    engine.write_query("item", 4000)  # 5 + 10 + 4000 x 0.05 = 215: the newest is kept, the oldest goes
    assert len(engine.durations) == 1000 and list(engine.durations)[-1] == ("write_query", 215)
    assert list(engine.durations)[:-1] == [("query", 15)] * 999
