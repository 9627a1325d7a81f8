"""Stopping work that nobody wants any more (the chat's Stop button).

A stop flag (`threading.Event`) is made current for the thread doing the work with `stop_scope`;
long model loops call `check()` between their steps (rerank batches) and generation ends at the
next token once the flag is set (answer.stream_generate reads `current()`). `check()` raises
`Stopped`, which the chat pipeline turns into a "stopped" event.
"""

from __future__ import annotations

import contextvars
import threading
from contextlib import contextmanager
from typing import Iterator

from .errors import FreeRetError


class Stopped(FreeRetError):
    """The work was stopped on request."""


_STOP: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar("freeret_stop", default=None)


@contextmanager
def stop_scope(event: threading.Event | None) -> Iterator[None]:
    """Make `event` the stop flag of the work done in this thread (and what it copies its context to)."""
    token = _STOP.set(event)
    try:
        yield
    finally:
        _STOP.reset(token)


def current() -> threading.Event | None:
    """The stop flag of the work running here, if any."""
    return _STOP.get()


def check() -> None:
    """Raise `Stopped` when the current work's stop flag is set."""
    event = _STOP.get()
    if event is not None and event.is_set():
        raise Stopped("stopped")
