"""read_ahead: the same items in the same order, errors where they happened, early stops that stop."""

from __future__ import annotations

import threading
import time

import pytest

from freeret_rag.media.common import read_ahead


def test_same_items_in_order_and_the_producer_runs_ahead():
    produced = []

    def items():
        for number in range(20):
            produced.append(number)
            yield number

    reader = read_ahead(items(), ahead=3)
    assert next(reader) == 0
    deadline = time.time() + 5
    while len(produced) < 5 and time.time() < deadline:  # 1 taken + 3 buffered + 1 waiting to be put
        time.sleep(0.01)
    assert len(produced) >= 4  # it read ahead while nobody asked
    assert [0, *reader] == list(range(20))


def test_an_error_arrives_after_the_items_before_it():
    def items():
        yield "page 1"
        yield "page 2"
        raise ValueError("page 3 is broken")

    seen = []
    with pytest.raises(ValueError, match="page 3 is broken"):
        for item in read_ahead(items()):
            seen.append(item)
    assert seen == ["page 1", "page 2"]


def test_stopping_early_stops_and_closes_the_loader():
    closed, produced = threading.Event(), []

    def items():
        try:
            for number in range(10_000):
                produced.append(number)
                yield number
        finally:
            closed.set()

    reader = read_ahead(items(), ahead=2)
    assert [next(reader) for _ in range(3)] == [0, 1, 2]
    reader.close()
    assert closed.wait(5)
    count = len(produced)
    time.sleep(0.2)
    assert len(produced) == count < 100
    assert not any(t.name == "freeret-read-ahead" and t.is_alive() for t in threading.enumerate())
