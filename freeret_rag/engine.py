"""`FreeRet`: one loaded MLLM that embeds, reranks and answers (the public engine API)."""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from . import answer as answering
from . import prompts
from .embed import EmbedPoint, Words, embed_prompts, embed_prompts_with_words
from .errors import UnsupportedModalityError
from .inputs import Prompt
from .items import Answer, Hit, ImageLike, Item, ItemKind, Query, open_image
from .models import FULL_BUDGET, LoadedModel, Stage, VisualBudget, load_model
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
    - `visual_budget`: "auto" bounds the visual tokens of every image and frame the embedding and
      rerank stages see by the family's `search_budget` (SmolVLM: one 512 px view instead of up to
      17 tiles; Qwen2-VL: 448 x 448 px); "full" gives them the processor's own resolution, as
      the answer stage gets on a GPU. `search_budget` overrides the family's with an explicit one.
    - `answer_budget`: "auto" (full resolution on a GPU, the search budget on a CPU), "full" or
      "search".
    - `rerank_text_pages`: rerank a PDF page by its text alone when its text layer has at least
      `min_page_text_chars` characters (a page without a good text layer is reranked by its image).
    - `rerank_seconds`: the time one question's rerank may take; the library reranks only as
      many candidates as the measured time per pair affords (at least `min_rerank_k`). None: K.
    - `query_cache`: query embeddings kept for repeated queries (the turns of a chat).
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
    visual_budget: str = "auto"
    search_budget: VisualBudget | None = None
    answer_budget: str = "auto"
    rerank_text_pages: bool = True
    min_page_text_chars: int = 400
    rerank_seconds: float | None = 6.0
    min_rerank_k: int = 3
    query_cache: int = 256
    max_batch_size: int = 64

    def __post_init__(self) -> None:
        if self.visual_budget not in ("auto", "full"):
            raise ValueError(f"visual_budget is 'auto' or 'full', got {self.visual_budget!r}")
        if self.answer_budget not in ("auto", "full", "search"):
            raise ValueError(f"answer_budget is 'auto', 'full' or 'search', got {self.answer_budget!r}")


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
        self._queries: OrderedDict[tuple, tuple[np.ndarray, Any]] = OrderedDict()
        self._queries_lock = threading.Lock()  # not the model's: a cached query never waits for a batch
        self._pair_seconds: float | None = None  # measured rerank cost per pair (moving average)
        self._bytes_per_item: float | None = None  # measured GPU memory per embedded item

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
        """Identifies the embedding space: prompts plus the knobs that change vectors (the ablation
        knobs and, for a model that sees images, the embedding stage's visual budget)."""
        s = self.settings
        suffix = "" if (s.embed_point, s.priors) == ("attn", True) else f"+{s.embed_point}{'' if s.priors else '-nopriors'}"
        budget = self.budget("embed")
        if self.lm.processor is not None and budget != FULL_BUDGET:
            suffix += f"+vis-{budget.tag}"
        return prompts.PROMPT_VERSION + suffix

    def kind_version(self, kind: ItemKind) -> str:
        """A short hash of what decides the vectors of `kind`'s items besides the model (stored per
        item, so that a re-index copies the vectors of kinds whose embedding did not change):
        the words around the item, the query's own prompt (an item vector is only worth keeping
        if the queries that search it are embedded as before), the read-out point and priors, the
        text kept per item and, for kinds with pictures on a model that sees them, the image side
        and the embedding stage's visual budget. `prompt_version`, by contrast, names the whole
        space, so a change for one kind (or of the budget) re-indexes everything else too."""
        s = self.settings
        mark = "\x00"  # stands for the item's text / the query's text in the prompts hashed
        item = self._item_prompt(Item(kind, text=mark))
        query = self._query_prompt(Query(mark))
        parts = [prompts.READOUT_REVISION, kind, item.text, str(item.system), str(item.as_video), query.text,
                 str(query.system), s.embed_point, str(s.priors), str(s.max_text_chars)]
        if _MODALITY_OF_KIND[kind] is not None and self.lm.processor is not None:
            parts += [str(s.max_image_side), self.budget("embed").tag]
        return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:12]

    def budget(self, stage: Stage) -> VisualBudget:
        """The visual token budget of `stage` for this model (see `EngineSettings.visual_budget`).

        The answer stage reads its few sources at full resolution on a GPU; on a CPU, with
        `answer_budget` "auto", it gets the search stages' budget: SmolVLM-256M at full
        resolution turns 3 pages into 51 vision-tower passes, 34 s from the sources to the first
        word on a 2-core CPU against 2.9 s at the search budget (bench/figures/smolvlm-256m-cpu.txt).
        """
        s = self.settings
        if s.visual_budget == "full":
            return FULL_BUDGET
        if stage == "answer":
            if s.answer_budget == "full" or (s.answer_budget == "auto" and self.lm.device.type != "cpu"):
                return FULL_BUDGET
        if s.search_budget is not None:
            return s.search_budget
        return self.lm.adapter.budget("embed" if stage == "answer" else stage)

    def visual_tokens(self, item: Item, stage: Stage = "embed") -> int:
        """How many visual tokens `item`'s media cost at `stage` (0 for text, or a text-only model)."""
        if self.lm.processor is None or not item.images:
            return 0
        from .inputs import encode

        prompt = self._rerank_prompt(Query("x"), item, False) if stage == "rerank" else self._item_prompt(item)
        ids = encode(self.lm, [prompt], self.settings.max_image_side, budget=self.budget(stage))["input_ids"]
        media = {getattr(self.lm.model.config, name, None)
                 for name in ("image_token_id", "video_token_id", "image_token_index")} - {None}
        return int(sum((ids == token).sum().item() for token in media))

    @property
    def preferred_batch_size(self) -> int:
        """Items per embedding batch: the setting, or on a GPU as many as half its free memory holds
        (measured per item on the previous batches; capped by `max_batch_size`)."""
        size = self.settings.batch_size
        if self.lm.device.type != "cuda" or not self._bytes_per_item:
            return size
        import torch

        free, _total = torch.cuda.mem_get_info(self.lm.device)
        return int(max(size, min(self.settings.max_batch_size, 0.5 * free // self._bytes_per_item)))

    @contextmanager
    def _measure_memory(self, items: int) -> Iterator[None]:
        """On a GPU, record the peak memory per item of what runs inside (see `preferred_batch_size`)."""
        if self.lm.device.type != "cuda" or not items:
            yield
            return
        import torch

        torch.cuda.reset_peak_memory_stats(self.lm.device)
        before = torch.cuda.memory_allocated(self.lm.device)
        yield
        per_item = (torch.cuda.max_memory_allocated(self.lm.device) - before) / items
        self._bytes_per_item = max(self._bytes_per_item or 0.0, per_item)

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
        size = batch_size or self.preferred_batch_size
        with self._lock.background(), self._measure_memory(min(size, len(prompts_))):
            return embed_prompts(self.lm, prompts_, self.settings.embed_point, size, self.settings.max_image_side,
                                 self.budget("embed"))

    def _query_key(self, query: Query | str, words: int) -> tuple:
        query = Query(query) if isinstance(query, str) else query
        image = None
        if query.image is not None:
            image = hashlib.sha1(open_image(query.image).tobytes()).hexdigest()
        return query.text, image, words

    def _cached_query(self, query: Query | str, words: int, compute) -> tuple[np.ndarray, Any]:
        """A query's (vector, words) from the cache, or computed and kept (least recently used out)."""
        key = self._query_key(query, words)
        with self._queries_lock:
            if key in self._queries:
                self._queries.move_to_end(key)
                vector, found = self._queries[key]
                return vector.copy(), list(found)
        result = compute()
        if self.settings.query_cache > 0:
            with self._queries_lock:
                self._queries[key] = (result[0].copy(), list(result[1]))
                while len(self._queries) > self.settings.query_cache:
                    self._queries.popitem(last=False)
        return result

    def embed_query(self, query: Query | str) -> np.ndarray:
        def compute() -> tuple[np.ndarray, list]:
            with self._lock:
                return embed_prompts(self.lm, [self._query_prompt(query)], self.settings.embed_point, 1,
                                     self.settings.max_image_side, self.budget("embed"))[0], []

        return self._cached_query(query, 0, compute)[0]

    def embed_with_words(self, items: Sequence[Item], batch_size: int | None = None,
                         top_words: int = 24) -> tuple[np.ndarray, list[Words]]:
        """The vectors of `embed` and, per item, the model's own next words at the read-out point.

        Words are (word, probability) pairs, most probable first (see
        `embed.embed_prompts_with_words`); the vectors equal `embed(items)`.
        """
        prompts_ = [self._item_prompt(item) for item in items]
        size = batch_size or self.preferred_batch_size
        with self._lock.background(), self._measure_memory(min(size, len(prompts_))):
            return embed_prompts_with_words(self.lm, prompts_, self.settings.embed_point, size,
                                            self.settings.max_image_side, top_words, self.budget("embed"))

    def embed_query_with_words(self, query: Query | str, top_words: int = 24) -> tuple[np.ndarray, Words]:
        """`embed_query(query)` and the query's own top words, from one forward pass (cached)."""
        def compute() -> tuple[np.ndarray, Words]:
            with self._lock:
                vectors, words = embed_prompts_with_words(self.lm, [self._query_prompt(query)],
                                                          self.settings.embed_point, 1, self.settings.max_image_side,
                                                          top_words, self.budget("embed"))
            return vectors[0], words[0]

        return self._cached_query(query, top_words, compute)

    # -- Stage 2 -------------------------------------------------------------------------------
    def reads_by_text(self, item: Item) -> bool:
        """Whether the rerank reads `item` by its text alone: a PDF page with a good text layer
        (see `EngineSettings.rerank_text_pages`), or any item for a model that cannot see."""
        if "image" not in self.capabilities:
            return True
        s = self.settings
        return (s.rerank_text_pages and item.kind == "pdf_page"
                and len(item.text.strip()) >= s.min_page_text_chars)

    def _rerank_prompt(self, query: Query, item: Item, swap: bool) -> Prompt:
        images = [] if self.reads_by_text(item) else item.open_images()
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
        budget = self.budget("rerank")
        with self._lock:
            started = time.perf_counter()
            scores = match_probabilities(self.lm, [self._rerank_prompt(query, hit.item, False) for hit in hits],
                                         labels, size, self.settings.max_image_side, budget)
            if self.settings.rerank_swap and self.settings.rerank_framing == "choice":
                swapped = match_probabilities(self.lm, [self._rerank_prompt(query, hit.item, True) for hit in hits],
                                              labels[::-1], size, self.settings.max_image_side, budget)
                scores = (scores + swapped) / 2
            per_pair = (time.perf_counter() - started) / len(hits)
            self._pair_seconds = per_pair if self._pair_seconds is None else 0.5 * (self._pair_seconds + per_pair)
        scored = [replace(hit, rerank_score=float(score)) for hit, score in zip(hits, scores)]
        return sorted(scored, key=lambda hit: hit.rerank_score, reverse=True)

    def affordable_rerank_k(self, k: int) -> int:
        """How many of `k` candidates to rerank so that a question's rerank takes about
        `rerank_seconds`, from the time per pair measured on earlier reranks (k until measured)."""
        s = self.settings
        if k <= 0 or s.rerank_seconds is None or self._pair_seconds is None:
            return k
        return max(min(k, s.min_rerank_k), min(k, int(s.rerank_seconds / max(self._pair_seconds, 1e-9))))

    @property
    def rerank_pair_seconds(self) -> float | None:
        """The measured seconds per reranked pair (a moving average), or None before any rerank."""
        return self._pair_seconds

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
        # the self-check reads many items: at the search stages' budget, not the answer's full resolution
        return answering.generate_text(self.lm, prompt, max_new_tokens, self._lock, self.settings.max_image_side,
                                       self.budget("rerank"))

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
        for piece in answering.stream_generate(self.lm, prompt, s.max_new_tokens, s.max_image_side, self._lock,
                                               budget=self.budget("answer")):
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
