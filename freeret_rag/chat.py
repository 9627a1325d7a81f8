"""The chat pipeline, independent of any UI: question -> standalone query -> search -> streamed answer.

`respond(library, engine, question, image, history, settings)` yields `ChatEvent`s:

- `status`   what it is doing now ("Searching your library ...")
- `sources`  the sources the answer will cite, as soon as they are known (`event.sources`)
- `token`    the answer text so far (`event.text` grows with every event)
- `answer`   last event of a grounded answer: `event.answer` is the finished `Answer`
- `stopped`  last event when the caller's stop flag was set: `event.text` is the answer so far
             (maybe empty), `event.sources` what it was written from
- `nothing`  last event when the library holds nothing relevant: the app says so, never invents
- `error`    last event when something went wrong that the user can act on (`event.text`)

The whole pipeline runs in one dedicated worker thread (`relay.run_in_thread`): the engine
serialises model calls with a lock held for the life of a streamed answer, and a UI (Gradio) may
resume a generator from a different thread at every step. Running the work in one thread keeps
lock ownership sane; closing the generator (a browser went away) stops the work at the next event.
A stop flag (`respond(..., stop=event)`, the Stop button) ends the rerank at its next batch and
generation at its next token (`cancel`), and the turn ends with a `stopped` event.

`for_spaces(engine)` (spaces_gpu.py) wraps the engine's model calls in `spaces.GPU` when the `spaces` package is
installed (Hugging Face ZeroGPU), splitting long indexing jobs into several short GPU calls.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Iterator, Literal, Sequence

from . import cancel, settings
from .errors import FreeRetError
from .items import Answer, Hit, ImageLike, Query
from .relay import run_in_thread

log = logging.getLogger(__name__)

EventKind = Literal["status", "sources", "token", "answer", "stopped", "nothing", "error"]

NOTHING_IN_LIBRARY = ("Your library is empty, so there is nothing to answer from yet. "
                      "Add PDFs, images or videos in the Library panel, then ask again.")
NOTHING_RELEVANT = ("I could not find anything in your library that answers this, so I won't guess. "
                    "Try rephrasing the question, adding the relevant files, or lowering the "
                    "relevance threshold in Settings.")
EMPTY_QUESTION = "Type a question (you can also attach an image)."


def nothing_searchable(waiting: Sequence[Any], model_id: str) -> str:
    """What to say when no document is searchable with the loaded model but some wait (Library.waiting)."""
    from .library import WAITING_FOR_IMAGES

    for_images = sum(getattr(doc, "waiting", "") == WAITING_FOR_IMAGES for doc in waiting)
    parts = []
    if len(waiting) - for_images:
        parts.append(f"{len(waiting) - for_images} wait for a re-index with it (open the Library panel and press "
                     "\"Re-index with this model\"; the files need not be uploaded again)")
    if for_images:
        parts.append(f"{for_images} wait for a model that can see images")
    return (f"Your library holds {len(waiting)} document(s), but none can be searched with the loaded model "
            f"({model_id}) yet: {'; '.join(parts)}.")


@dataclass(frozen=True)
class ChatSettings:
    """Per-session answer settings (the Settings panel).

    - `top_k`: candidates fetched by the embedding + lexical search.
    - `rerank` / `rerank_k`: rerank that many of them with the model (p(A) of the match question).
    - `n_sources`: sources given to the model and shown under the answer.
    - `min_relevance`: with reranking on, a source must reach this p(match) to be used; when none
      does, the answer is "nothing relevant". None ("auto") uses the floor the library's self-check
      measured, and no floor where it found that the reranker cannot tell matches from random
      items. Without reranking only an empty search counts.
    """

    top_k: int = settings.TOP_K
    rerank: bool = settings.RERANK
    rerank_k: int = settings.RERANK_K
    n_sources: int = settings.N_SOURCES
    min_relevance: float | None = settings.MIN_RELEVANCE

    def __post_init__(self) -> None:  # raises settings.ConfigError, a ValueError
        settings.check_answer_settings(top_k=self.top_k, rerank_k=self.rerank_k, n_sources=self.n_sources,
                                       min_relevance=self.min_relevance)


@dataclass
class ChatEvent:
    kind: EventKind
    text: str = ""
    sources: list[Hit] = field(default_factory=list)
    answer: Answer | None = None
    query: str = ""


def relevance_floor(settings: ChatSettings, library: Any = None) -> float | None:
    """The p(match) a source must reach: the session's fixed threshold, else the library's measured
    floor; None (every candidate passes) without reranking or where nothing was measured."""
    if not settings.rerank:
        return None
    if settings.min_relevance is not None:
        return float(settings.min_relevance) or None  # 0: no threshold
    return getattr(library, "relevance_floor", None)


def is_relevant(hit: Hit, floor: float | None) -> bool:
    """A floor applies to the rerank probability, the only calibrated score: a candidate that was
    never reranked was not measured against it and never passes it."""
    if floor is None:
        return True
    return hit.rerank_score is not None and hit.rerank_score >= floor


def select_sources(hits: Sequence[Hit], settings: ChatSettings, floor: float | None = None) -> list[Hit]:
    return [hit for hit in hits if is_relevant(hit, floor)][: settings.n_sources]


def plain_history(history: Sequence[dict] | None) -> list[dict]:
    """Keep only role + text content (what the engine reads), dropping media and UI extras."""
    cleaned = []
    for turn in history or ():
        role = turn.get("role")
        content = turn.get("content")
        if role not in ("user", "assistant"):
            continue
        if isinstance(content, list):  # Gradio / API style: [{"type": "text", "text": ...}, ...]
            content = " ".join(part.get("text", "") for part in content if isinstance(part, dict))
        if isinstance(content, str) and content.strip():
            cleaned.append({"role": role, "content": content.strip()})
    return cleaned


def _library_is_empty(library: Any) -> bool:
    try:
        return len(library.documents()) == 0
    except FreeRetError:  # said to the user (e.g. the Chroma server is not reachable)
        raise
    except Exception:  # a listing problem must not stop a search from being tried
        log.exception("could not list documents")
        return False


def _pipeline(library: Any, engine: Any, question: str, image: ImageLike | None, history: list[dict],
              settings: ChatSettings, stop: threading.Event | None = None) -> Iterator[ChatEvent]:
    with cancel.stop_scope(stop):
        try:
            yield from _steps(library, engine, question, image, history, settings, stop or threading.Event())
        except cancel.Stopped:
            yield ChatEvent("stopped")


def _steps(library: Any, engine: Any, question: str, image: ImageLike | None, history: list[dict],
           settings: ChatSettings, stop: threading.Event) -> Iterator[ChatEvent]:
    question = (question or "").strip()
    if not question and image is None:
        yield ChatEvent("error", EMPTY_QUESTION)
        return
    if not question:
        question = "What is shown in this image? Find related items in my library."
    if image is not None and "image" not in engine.capabilities:
        yield ChatEvent("error", f"The model in use ({engine.model_id}) reads text only, so it cannot take "
                                 "an image in the question. Ask in words, or start the app with a "
                                 "vision-language model.")
        return
    if _library_is_empty(library):
        waiting = library.waiting() if hasattr(library, "waiting") else []
        yield ChatEvent("nothing", nothing_searchable(waiting, engine.model_id) if waiting else NOTHING_IN_LIBRARY)
        return

    query_text = question
    if history:
        yield ChatEvent("status", "Reading the conversation ...")
        query_text = engine.standalone_query(question, history) or question
    cancel.check()
    yield ChatEvent("status", "Searching your library ...", query=query_text)
    floor = relevance_floor(settings, library)
    hits = library.search(Query(query_text, image), k=settings.top_k, rerank=settings.rerank,
                          rerank_k=settings.rerank_k, score_head=floor is not None)
    cancel.check()
    sources = select_sources(hits, settings, floor)
    if not sources:
        yield ChatEvent("nothing", NOTHING_RELEVANT, query=query_text)
        return
    yield ChatEvent("sources", sources=sources, query=query_text)
    yield ChatEvent("status", "Writing the answer ...", sources=sources, query=query_text)

    text = ""
    stream = engine.answer_stream(question, sources, history, image)
    for piece in stream:
        if stop.is_set():  # what was shown is the answer; words still queued are dropped
            stream.close()
            break
        text = piece
        yield ChatEvent("token", text, sources=sources, query=query_text)
    from .answer import parse_citations, trim_loop

    text = trim_loop(text.strip())  # generation stops on a loop; the final answer keeps one copy
    answer = Answer(text=text, sources=list(sources), cited=parse_citations(text, len(sources)),
                    retrieval_query=query_text)
    yield ChatEvent("stopped" if stop.is_set() else "answer", text, sources=list(sources), answer=answer,
                    query=query_text)


def respond(library: Any, engine: Any, question: str, image: ImageLike | None = None,
            history: Sequence[dict] | None = None, settings: ChatSettings = ChatSettings(),
            stop: threading.Event | None = None) -> Iterator[ChatEvent]:
    """Answer `question` (optionally with an image) from `library`, streaming `ChatEvent`s.

    Errors the user can act on (FreeRetError: unsupported input, index mismatch, ...) become a
    final `error` event; anything else propagates. Setting `stop` ends the turn with a `stopped`
    event within a rerank batch or a generated token.
    """
    history = plain_history(history)
    if stop is not None and stop.is_set():  # stopped while it waited for the model
        yield ChatEvent("stopped")
        return
    events = run_in_thread(lambda: _pipeline(library, engine, question, image, history, settings, stop))
    try:
        yield from events
    except FreeRetError as error:
        yield ChatEvent("error", str(error))
    finally:
        events.close()


EMPTY_ANSWER = "(The model returned an empty answer.)"


def turn(question: str, answer: str) -> list[dict]:
    """The two history entries of one finished exchange."""
    return [{"role": "user", "content": question or "(an image)"},
            {"role": "assistant", "content": answer.strip() or EMPTY_ANSWER}]


# -- Hugging Face Spaces (ZeroGPU): in spaces_gpu.py, re-exported here ------------------------------
from .spaces_gpu import SpacesEngine, for_spaces, spaces_gpu  # noqa: E402,F401
