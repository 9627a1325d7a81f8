"""The one worker-thread relay (freeret_rag.relay) behind chat answers, uploads and re-indexing."""

from __future__ import annotations

import contextvars
import threading

import pytest

from freeret_rag.relay import relay, run_in_thread

REQUEST = contextvars.ContextVar("request", default="none")


def test_relay_yields_emitted_items_in_order_and_returns_the_result():
    def work(emit):
        for n in range(5):
            emit(n)
        return "report"

    events = relay(work)
    seen = []
    with pytest.raises(StopIteration) as finished:
        while True:
            seen.append(next(events))
    assert seen == [0, 1, 2, 3, 4] and finished.value.value == "report"


def test_items_that_look_like_markers_pass_through():
    items = [None, (True, None, None), (False, 1, None), StopIteration]

    def work(emit):
        for item in items:
            emit(item)

    assert list(relay(work)) == items


def test_errors_re_raise_in_the_consumer_after_the_items_before_them():
    def failing():
        yield 1
        raise ValueError("boom")

    events = run_in_thread(failing)
    assert next(events) == 1
    with pytest.raises(ValueError, match="boom"):
        next(events)

    def broken(emit):
        emit("started")
        raise KeyError("missing")

    events = relay(broken)
    assert next(events) == "started"
    with pytest.raises(KeyError, match="missing"):
        next(events)


def test_work_runs_in_one_other_thread_with_the_callers_context():
    consumer = threading.get_ident()

    def events():
        for _ in range(4):
            yield threading.get_ident(), REQUEST.get()

    token = REQUEST.set("gradio-request-7")
    try:
        seen = list(run_in_thread(events))
    finally:
        REQUEST.reset(token)
    threads = {ident for ident, _ in seen}
    assert len(seen) == 4 and len(threads) == 1 and consumer not in threads
    assert {value for _, value in seen} == {"gradio-request-7"}


def test_closing_a_lockstep_stream_stops_the_producer_and_closes_it_in_its_thread():
    produced: list[int] = []
    closed = threading.Event()
    closed_in: list[int] = []

    def endless():
        try:
            n = 0
            while True:
                produced.append(n)
                yield n
                n += 1
        finally:
            closed_in.append(threading.get_ident())
            closed.set()

    events = run_in_thread(endless)
    assert next(events) == 0
    events.close()
    assert closed.wait(5), "the producer was not closed after the consumer went away"
    # at most one item waits in the channel and one more is produced before the put fails
    assert len(produced) <= 3
    assert closed_in != [threading.get_ident()]


def test_callback_work_never_waits_for_the_consumer_and_finishes_after_close():
    finished = threading.Event()
    answers: list[bool] = []

    def work(emit):
        for n in range(1000):
            emit(n)
        finished.set()
        return 1000

    events = relay(work)
    assert next(events) == 0
    assert finished.wait(5), "the worker waited for the consumer"
    assert list(events) == list(range(1, 1000))

    release = threading.Event()
    done = threading.Event()

    def slow(emit):
        answers.append(emit("first"))
        release.wait(5)
        answers.append(emit("after close"))  # the consumer is gone: dropped, and the work goes on
        done.set()

    events = relay(slow)
    assert next(events) == "first"
    events.close()
    release.set()
    assert done.wait(5) and answers == [True, False]
