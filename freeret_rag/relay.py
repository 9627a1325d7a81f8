"""Run blocking work in one worker thread and consume what it produces, in order, from another.

The engine serialises model calls with a lock held for the life of a streamed answer, and a UI
(Gradio) may resume a generator from a different thread at every step. Doing the work in one
dedicated thread keeps lock ownership sane whichever thread reads the results. Two shapes of work
use the same relay:

- `relay(work)`: `work(emit)` is a blocking call that reports through a callback (indexing with a
  progress callback); every `emit(x)` comes out of the returned generator, and the generator's
  return value (`result = yield from relay(...)`) is what `work` returned.
- `run_in_thread(make_events)`: the items of a generator (the chat pipeline).

Errors raised by the work re-raise in the consumer. The context (contextvars, e.g. the Gradio
request that `spaces.GPU` reads) is carried into the worker.
"""

from __future__ import annotations

import contextvars
import queue
import threading
from typing import Any, Callable, Generator, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")

Emit = Callable[[Any], bool]


def relay(work: Callable[[Emit], R], name: str = "freeret-worker", *,
          lockstep: bool = False) -> Generator[Any, None, R]:
    """Run `work(emit)` in a new thread; yield every emitted item here; return what `work` returned.

    `emit(item)` returns True once the item is queued, False when the consumer has gone (the
    generator was closed): work that can stop early should then stop; work that must finish (an
    index write) may ignore it, and its later items are dropped. With `lockstep` the worker waits
    at each `emit` until the consumer has taken the previous item (at most one item in flight, so
    a closed consumer stops a producer at its next item); otherwise the worker never waits.
    """
    channel: queue.Queue = queue.Queue(maxsize=1 if lockstep else 0)
    stop = threading.Event()
    context = contextvars.copy_context()

    def put(message: tuple[bool, Any, BaseException | None]) -> bool:
        while not stop.is_set():
            try:
                channel.put(message, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def emit(item: Any) -> bool:
        return put((False, item, None))

    def run() -> None:
        try:
            result = work(emit)
        except BaseException as error:  # relayed to the consumer
            put((True, None, error))
        else:
            put((True, result, None))

    threading.Thread(target=lambda: context.run(run), name=name, daemon=True).start()
    try:
        while True:
            done, value, error = channel.get()
            if error is not None:
                raise error
            if done:
                return value
            yield value
    finally:
        stop.set()


def run_in_thread(make_events: Callable[[], Iterator[T]], name: str = "freeret-chat") -> Iterator[T]:
    """Iterate `make_events()` in one worker thread, relaying its items; errors re-raise here.

    Closing the returned generator asks the worker to stop after its current item (and closes
    the inner generator there, in its own thread).
    """

    def pump(emit: Emit) -> None:
        events = make_events()
        try:
            for event in events:
                if not emit(event):
                    break
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                close()

    return relay(pump, name, lockstep=True)
