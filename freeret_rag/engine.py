"""`FreeRet`: one loaded MLLM that embeds, reranks and answers (the public engine API)."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from . import answer as answering
from . import prompts
from .embed import EmbedPoint, Words, embed_prompts, embed_prompts_with_words
from .errors import UnsupportedModalityError
from .inputs import Prompt
from .items import Answer, Hit, ImageLike, Item, Query, open_image
from .models import LoadedModel, load_model
from .rerank import match_probabilities

def as_hits(candidates: Sequence[Hit | Item]) -> list[Hit]:
    """Accept bare Items wherever Hits are expected (an Item has no first-stage scores yet)."""
    return [candidate if isinstance(candidate, Hit) else Hit(candidate) for candidate in candidates]


class ModelLock:
    """The one model lock, with turns: a question's model calls go before indexing batches.

    `with lock:` (queries, reranking, answers: what a user waits for) takes it as a plain lock.
    `with lock.background():` (embedding a batch of items) takes it when no call waits for it and
    none finished in the last `grace_s` seconds, so the steps of one question (rewrite, query
    embedding, rerank, answer) run back to back while an indexing job waits between its batches.
    So that questions in a row cannot starve indexing, a batch that has waited `patience_s` goes
    next whatever waits: a question waits for at most about one batch, and an indexing job gets
    at least one batch in every `patience_s` plus the calls that held the model meanwhile.
    """

    def __init__(self, grace_s: float = 0.5, patience_s: float = 2.0) -> None:
        self.grace_s, self.patience_s = grace_s, patience_s
        self._turns = threading.Condition(threading.Lock())
        self._held = False
        self._foreground = False  # whether the holder is a foreground call
        self._waiting = 0  # foreground callers waiting for the lock
        self._background: dict[object, float] = {}  # background waiters -> since when they wait
        self._foreground_done = float("-inf")  # when a foreground holder last released it

    def _background_due(self) -> bool:
        return bool(self._background) and time.monotonic() - min(self._background.values()) >= self.patience_s

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        with self._turns:
            self._waiting += 1
            try:
                free = lambda: not self._held and not self._background_due()  # noqa: E731
                if not (self._turns.wait_for(free, None if timeout < 0 else timeout) if blocking else free()):
                    return False
                self._held, self._foreground = True, True
                return True
            finally:
                self._waiting -= 1

    def release(self) -> None:
        with self._turns:
            if not self._held:
                raise RuntimeError("release of an unheld ModelLock")
            self._held = False
            if self._foreground:
                self._foreground_done = time.monotonic()
            self._turns.notify_all()

    def locked(self) -> bool:
        return self._held

    __enter__ = acquire

    def __exit__(self, *exc: object) -> None:
        self.release()

    @contextmanager
    def background(self) -> Iterator[None]:
        """Hold the lock for background work: after waiting and recent foreground calls, or once due."""
        token = object()
        with self._turns:
            since = self._background[token] = time.monotonic()
            try:
                while True:
                    waited = time.monotonic() - since
                    if not self._held:
                        if waited >= self.patience_s:
                            break
                        left = self._foreground_done + self.grace_s - time.monotonic()
                        if not self._waiting and left <= 0:
                            break
                        self._turns.wait(min(self.patience_s - waited, left if left > 0 else self.patience_s))
                    else:
                        self._turns.wait()
            finally:
                del self._background[token]
            self._held, self._foreground = True, False
        try:
            yield
        finally:
            self.release()


_MODALITY_OF_KIND = {"text": None, "image": "image", "pdf_page": "image", "video_segment": "video"}


@dataclass(frozen=True)
class EngineSettings:
    """Knobs of the method. Defaults follow METHOD.md; the others exist for ablations.

    - `embed_point`: "attn" (h_attn_L, the method), "final" or "mean" (baselines).
    - `priors`: explicit priors in the embedding prompt, or E5-V's one-word summary.
    - `rerank_framing`: "choice" (neutral A/B, the method) or "yesno" (baseline).
    - `rerank_swap`: also score with the options swapped and average (2x cost, less position bias).
    - `rerank_batch_size`: pairs per rerank forward; at least the default K (10), so the K
      pairs of one search are scored in a single batched forward.
    - `max_image_side`: longest image side given to the model (tokens grow with pixels).
    - `max_text_chars`: item text kept in embedding and rerank prompts.
    """

    embed_point: EmbedPoint = "attn"
    priors: bool = True
    rerank_framing: prompts.RerankFraming = "choice"
    rerank_swap: bool = False
    batch_size: int = 8
    rerank_batch_size: int = 16
    max_image_side: int = 1024
    max_text_chars: int = 1500
    max_new_tokens: int = 384
    max_source_chars: int = 1200
    max_images_per_source: int = 2


class FreeRet:
    """Retriever, reranker and answerer from one off-the-shelf model; no weight is changed.

    Thread-safe: model calls are serialised by one lock, so a UI may call it from several threads.
    A streamed answer holds the lock only inside its generation thread, never across a `yield`.
    Embedding items (indexing) is background work (`ModelLock.background`): questions asked
    meanwhile are served between its batches.
    """

    def __init__(self, lm: LoadedModel, settings: EngineSettings = EngineSettings()) -> None:
        self.lm = lm
        self.settings = settings
        self._lock = ModelLock()

    @classmethod
    def from_pretrained(cls, model: str | Path, device: str | None = None, dtype: str | None = None,
                        **settings) -> "FreeRet":
        """Load a hub id, a local folder or a .gguf file. Extra keywords set `EngineSettings`."""
        return cls(load_model(model, device=device, dtype=dtype), EngineSettings(**settings))

    # -- what the model is ---------------------------------------------------------------------
    @property
    def model_id(self) -> str:
        return self.lm.model_id

    @property
    def capabilities(self) -> frozenset[str]:
        return self.lm.capabilities

    @property
    def prompt_version(self) -> str:
        """Identifies the embedding space: prompts plus the ablation knobs that change vectors."""
        s = self.settings
        suffix = "" if (s.embed_point, s.priors) == ("attn", True) else f"+{s.embed_point}{'' if s.priors else '-nopriors'}"
        return prompts.PROMPT_VERSION + suffix

    def supports(self, item: Item) -> bool:
        """False when the item has media the model cannot see (text-only model, image item)."""
        modality = _MODALITY_OF_KIND[item.kind]
        return not item.images or modality is None or modality in self.capabilities

    def _check(self, item: Item) -> None:
        if not self.supports(item):
            raise UnsupportedModalityError(
                f"{self.model_id} is a text-only model and cannot read {item.kind.replace('_', ' ')} "
                f"'{item.label}'; load a vision-language model to index images, pages as images and video")

    # -- prompts -------------------------------------------------------------------------------
    def _item_prompt(self, item: Item) -> Prompt:
        self._check(item)
        text = prompts.item_text_block(item.kind, item.text[: self.settings.max_text_chars])
        return Prompt(text=text + prompts.embed_instruction(item.kind, self.settings.priors),
                      images=item.open_images(), as_video=item.kind == "video_segment")

    def _query_prompt(self, query: Query | str) -> Prompt:
        query = Query(query) if isinstance(query, str) else query
        images = [open_image(query.image)] if query.image is not None else []
        if images and "image" not in self.capabilities:
            raise UnsupportedModalityError(f"{self.model_id} is a text-only model and cannot read the query image")
        text = f"Query: {query.text}\n" if query.text else ""
        return Prompt(text=text + prompts.embed_instruction("query", self.settings.priors), images=images)

    # -- Stage 1 -------------------------------------------------------------------------------
    def embed(self, items: Sequence[Item], batch_size: int | None = None) -> np.ndarray:
        """(n, hidden) float32 unit vectors. Raises UnsupportedModalityError before any work."""
        prompts_ = [self._item_prompt(item) for item in items]
        with self._lock.background():
            return embed_prompts(self.lm, prompts_, self.settings.embed_point,
                                 batch_size or self.settings.batch_size, self.settings.max_image_side)

    def embed_query(self, query: Query | str) -> np.ndarray:
        with self._lock:
            return embed_prompts(self.lm, [self._query_prompt(query)], self.settings.embed_point, 1,
                                 self.settings.max_image_side)[0]

    def embed_with_words(self, items: Sequence[Item], batch_size: int | None = None,
                         top_words: int = 24) -> tuple[np.ndarray, list[Words]]:
        """The vectors of `embed` and, per item, the model's own next words at the read-out point.

        Words are (word, probability) pairs, most probable first (see
        `embed.embed_prompts_with_words`); the vectors equal `embed(items)`.
        """
        prompts_ = [self._item_prompt(item) for item in items]
        with self._lock.background():
            return embed_prompts_with_words(self.lm, prompts_, self.settings.embed_point,
                                            batch_size or self.settings.batch_size, self.settings.max_image_side,
                                            top_words)

    def embed_query_with_words(self, query: Query | str, top_words: int = 24) -> tuple[np.ndarray, Words]:
        """`embed_query(query)` and the query's own top words, from one forward pass."""
        with self._lock:
            vectors, words = embed_prompts_with_words(self.lm, [self._query_prompt(query)], self.settings.embed_point,
                                                      1, self.settings.max_image_side, top_words)
        return vectors[0], words[0]

    # -- Stage 2 -------------------------------------------------------------------------------
    def _rerank_prompt(self, query: Query, item: Item, swap: bool) -> Prompt:
        images = item.open_images() if "image" in self.capabilities else []
        question = prompts.rerank_question(query.text, item.kind, item.text[: self.settings.max_text_chars],
                                           self.settings.rerank_framing, swap)
        if query.image is not None:
            images = [open_image(query.image), *images]
            question = "The first image belongs to the query.\n" + question
        return Prompt(text=question, images=images, as_video=item.kind == "video_segment" and query.image is None)

    def rerank(self, query: Query | str, candidates: Sequence[Hit | Item], batch_size: int | None = None) -> list[Hit]:
        """Score every candidate by p(match) and return Hits best first (K pairs, batched)."""
        hits = as_hits(candidates)
        if not hits:
            return []
        query = Query(query) if isinstance(query, str) else query
        labels = prompts.RERANK_LABELS[self.settings.rerank_framing]
        size = batch_size or self.settings.rerank_batch_size
        with self._lock:
            scores = match_probabilities(self.lm, [self._rerank_prompt(query, hit.item, False) for hit in hits],
                                         labels, size, self.settings.max_image_side)
            if self.settings.rerank_swap and self.settings.rerank_framing == "choice":
                swapped = match_probabilities(self.lm, [self._rerank_prompt(query, hit.item, True) for hit in hits],
                                              labels[::-1], size, self.settings.max_image_side)
                scores = (scores + swapped) / 2
        scored = [replace(hit, rerank_score=float(score)) for hit, score in zip(hits, scores)]
        return sorted(scored, key=lambda hit: hit.rerank_score, reverse=True)

    # -- the self-check's test queries ----------------------------------------------------------
    def write_query(self, item: Item, max_new_tokens: int = 20) -> str:
        """The model's own search query for an item (what a user might type to find it), raw.

        A text-only model writes it from the item's text (a page's text layer); an item it can
        neither see nor read raises UnsupportedModalityError.
        """
        if not self.supports(item):
            if not item.text.strip():
                self._check(item)
            item = item.without_images()
        system, cue = prompts.self_query_prompt(item.kind)
        text = prompts.item_text_block(item.kind, item.text[: self.settings.max_text_chars // 2])
        prompt = Prompt(text=text + cue, images=item.open_images(), as_video=item.kind == "video_segment",
                        system=system)
        return answering.generate_text(self.lm, prompt, max_new_tokens, self._lock, self.settings.max_image_side)

    # -- Stage 3 -------------------------------------------------------------------------------
    def standalone_query(self, question: str, history: Sequence[dict] = ()) -> str:
        """A follow-up rewritten to stand alone for retrieval; the question itself if it already does."""
        if not answering.needs_rewrite(question, history):
            return question
        rewritten = answering.clean_rewrite(
            answering.generate_text(self.lm, answering.rewrite_prompt(question, history), 48, self._lock))
        if answering.is_valid_rewrite(rewritten, question):
            return rewritten
        return answering.fallback_query(question, history)

    def answer_stream(self, question: str, sources: Sequence[Hit | Item], history: Sequence[dict] = (),
                      image: ImageLike | None = None) -> Iterator[str]:
        """Yield the answer text as it grows; `[n]` cites `sources[n - 1]`.

        `image` is the picture the question was asked with, shown to the model before the sources.
        """
        s = self.settings
        if image is not None and "image" not in self.capabilities:
            raise UnsupportedModalityError(f"{self.model_id} is a text-only model and cannot read the question's image")
        prompt = answering.source_prompt(as_hits(sources), question, history, "image" in self.capabilities,
                                         s.max_source_chars, s.max_images_per_source, image)
        text = ""
        for piece in answering.stream_generate(self.lm, prompt, s.max_new_tokens, s.max_image_side, self._lock):
            text += piece
            yield text

    def answer(self, question: str, sources: Sequence[Hit | Item], history: Sequence[dict] = (),
               image: ImageLike | None = None) -> Answer:
        sources = as_hits(sources)
        text = ""
        for text in self.answer_stream(question, sources, history, image):
            pass
        text = answering.trim_loop(text.strip())  # a looping tail (generation stopped on it) keeps one copy
        return Answer(text=text, sources=list(sources), cited=answering.parse_citations(text, len(sources)),
                      retrieval_query=question)
