"""Stage 3: grounded, streamed answers with numbered citations, and follow-up query rewriting."""

from __future__ import annotations

import queue
import re
import threading
from typing import Iterator, Sequence

import torch

from . import cancel, prompts
from .inputs import Prompt, encode, sample_frames
from .items import Hit, ImageLike, open_image
from .models import FULL_BUDGET, LoadedModel, VisualBudget

CITATION = re.compile(r"\[(\d+(?:\s*[,;]\s*\d+)*)\]")

# Words that make a question lean on earlier turns ("what colour is *it*?").
_REFERRING = frozenset(
    "it its it's they them their theirs this that these those he him his she her hers there one ones "
    "former latter above previous earlier same else also more another other".split())


# A bracketed number is a model-invented reference, not a citation, when it is a Markdown link
# ("[1](https://...)"), a reference definition ("[1]: https://...") or a line of a reference list
# that names a web address ("[1] https://en.wikipedia.org/...", "[2] wikipedia.org - Canberra").
_WEB_ADDRESS = re.compile(r"https?://|www\.|\b[\w-]+\.(?:org|com|net|edu|gov|io|info)\b", re.I)


def citation_spans(text: str, num_sources: int) -> list[tuple[int, int, list[int]]]:
    """(start, end, numbers) of every real citation in `text`: [n], [n, m] or [n; m] whose numbers
    all name one of the `num_sources` sources. A number the model itself made a web reference of
    (a link "[1](https://...)", a reference-list line "[1] https://en.wikipedia.org/...") is that
    invented reference everywhere in the text, so none of its mentions is a citation."""
    found, invented = [], set()
    for match in CITATION.finditer(text):
        numbers = [int(n) for n in re.split(r"\s*[,;]\s*", match.group(1))]
        line_start = text.rfind("\n", 0, match.start()) + 1
        line_end = text.find("\n", match.end())
        line = text[line_start: len(text) if line_end < 0 else line_end]
        if text.startswith("(", match.end()) or (  # a Markdown link, or a reference-list entry
                re.fullmatch(r"[\s*>+-]*", text[line_start:match.start()]) and _WEB_ADDRESS.search(line)):
            invented.update(numbers)
        elif all(1 <= n <= num_sources for n in numbers):
            found.append((match.start(), match.end(), numbers))
    return [span for span in found if not invented & set(span[2])]


def parse_citations(text: str, num_sources: int) -> list[int]:
    """Source numbers cited as [n], [n, m] or [n][m], in first-mention order, within 1..num_sources
    (invented references, see `citation_spans`, are not citations)."""
    cited: list[int] = []
    for _, _, numbers in citation_spans(text, num_sources):
        for value in numbers:
            if value not in cited:
                cited.append(value)
    return cited


def needs_rewrite(question: str, history: Sequence[dict]) -> bool:
    """A follow-up needs a standalone query when it refers back (pronouns) or is very short."""
    if not any(turn.get("role") == "user" for turn in history):
        return False
    words = re.findall(r"[a-z']+", question.lower())
    return len(words) < 4 or any(word in _REFERRING for word in words)


def source_prompt(hits: Sequence[Hit], question: str, history: Sequence[dict], vision: bool,
                  max_source_chars: int, max_images_per_source: int, query_image: ImageLike | None = None) -> Prompt:
    """Numbered sources, each with its own images right after its header, then the question.

    Every image sits under the header of the source it belongs to and the header says how many
    follow ("[2] report.pdf (p. 3), 1 image:"), so the model can tell which picture is which source.
    A question asked with an image shows that image first, labelled.
    """
    images: list = []
    segments: list[tuple[str, int]] = []
    if vision and query_image is not None:
        images.append(open_image(query_image))
        segments.append(("The user asked about this image:\n", 1))
    text = "Sources:\n"
    for number, hit in enumerate(hits, start=1):
        item = hit.item
        own = [open_image(image) for image in sample_frames(item.images, max_images_per_source, even=False)] \
            if vision and item.images else []
        header = prompts.source_header(number, item.label)
        if own:
            header += f", {len(own)} image{'s' if len(own) > 1 else ''}:"
        segments.append((text + ("\n" if number > 1 else "") + header + "\n", len(own)))
        images.extend(own)
        text = item.text[:max_source_chars] + "\n" if item.text else ""
    segments.append((text + prompts.answer_question(question), 0))
    flat = "".join(part for part, _ in segments)
    return Prompt(text=flat, images=images, system=prompts.ANSWER_SYSTEM, history=list(history), segments=segments)


def repeating_tail(tokens: Sequence[int], max_period: int = 24, min_repeats: int = 3, min_span: int = 12) -> int:
    """Length of the looping tail: the last tokens consist of `min_repeats`+ copies of one period of
    at most `max_period` tokens, spanning at least `min_span` tokens; 0 when the tail does not loop.

    "the Falcon launch date and the Falcon launch date and ..." loops with period 5; a list whose
    items merely start alike does not, since its periods differ.
    """
    n = len(tokens)
    for period in range(1, min(max_period, n // 2) + 1):
        repeats = 1
        while n >= (repeats + 1) * period and \
                list(tokens[n - (repeats + 1) * period: n - repeats * period]) == list(tokens[n - period:]):
            repeats += 1
        before = list(tokens[: n - repeats * period])
        unit = list(tokens[n - period:])
        partial = 0  # the first copy may lack the separator the later ones start with
        while partial < min(period, len(before)) and before[-1 - partial] == unit[-1 - partial]:
            partial += 1
        copies = repeats + (partial * 2 >= period)
        if copies >= min_repeats and repeats * period + partial >= min_span:
            return (repeats - (copies == repeats)) * period  # keep one copy
    return 0


def trim_loop(text: str, max_period: int = 200, min_repeats: int = 3) -> str:
    """The text without a looping tail: when it ends in `min_repeats`+ copies of one stretch of at
    most `max_period` characters (at least 12 in all; the first copy may lack the separator that
    starts the others, as in "X.\n\nX.\n\nX."), all but the first copy are dropped."""
    n = len(text)
    for period in range(1, min(max_period, n // 2) + 1):
        unit = text[n - period:]
        repeats = 1
        while n >= (repeats + 1) * period and text[n - (repeats + 1) * period: n - repeats * period] == unit:
            repeats += 1
        head = text[: n - repeats * period]
        partial = head.endswith(unit.strip()) and len(unit.strip()) * 2 >= period  # a first copy without its separator
        copies = repeats + partial
        if copies >= min_repeats and repeats * period >= 12:
            return text[: n - (repeats - (not partial)) * period].rstrip()
    return text


class _StopOnLoop:
    """A stopping criterion: end generation once the newest tokens loop (see `repeating_tail`)."""

    def __init__(self, prompt_length: int) -> None:
        self.prompt_length = prompt_length
        self.looped = False

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **_kwargs) -> torch.Tensor:
        done = [bool(repeating_tail(row[self.prompt_length:].tolist())) for row in input_ids]
        self.looped |= any(done)
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class TokenStreamer:
    """Receives tokens from `generate()` and hands out decoded text one token at a time.

    transformers' TextIteratorStreamer waits for whitespace before it flushes (word-by-word);
    here every token becomes visible at once, except a trailing partial UTF-8 character.
    """

    _DONE = object()

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.tokens: list[int] = []
        self.shown = 0
        self.queue: queue.Queue = queue.Queue()
        self.skipped_prompt = False

    def put(self, value: torch.Tensor) -> None:
        if not self.skipped_prompt:  # the first call carries the prompt
            self.skipped_prompt = True
            return
        self.tokens.extend(value.reshape(-1).tolist())
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return
        if len(text) > self.shown:
            self.queue.put(text[self.shown:])
            self.shown = len(text)

    def end(self) -> None:
        self.queue.put(self._DONE)

    def __iter__(self) -> Iterator[str]:
        while (piece := self.queue.get(timeout=600)) is not self._DONE:
            yield piece


class _StopWhenSet:
    """A stopping criterion that ends generation once the reader has gone away."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **_kwargs) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


def stream_generate(lm: LoadedModel, prompt: Prompt, max_new_tokens: int, max_image_side: int,
                    lock: threading.Lock, repetition_penalty: float = 1.05, stop_loops: bool = True,
                    budget: VisualBudget = FULL_BUDGET) -> Iterator[str]:
    """Yield decoded text pieces as the model writes them.

    Repetition control for small models, which loop ("the Falcon launch date and the Falcon launch
    date ..."): a mild repetition penalty, and generation ends as soon as the newest tokens repeat
    one period of up to 24 tokens three times (`repeating_tail`); callers keep one copy
    (`trim_loop`). Not transformers' `no_repeat_ngram_size`: it counts the prompt too, so it forbids
    quoting a source (SmolLM2 then wrote "completed in 1870" for a source that says 1889).

    Generation runs in a worker thread that holds `lock` (the model's) for exactly as long as
    it runs, so the reader may resume this generator from any thread (Gradio does). Closing the
    generator early, or setting the calling thread's stop flag (`cancel.stop_scope`), stops
    generation at the next token instead of running to max_new_tokens.
    """
    from transformers import StoppingCriteriaList

    inputs = encode(lm, [prompt], max_image_side=max_image_side, with_positions=False, budget=budget)
    criteria = [_StopWhenSet(reader_gone := threading.Event())]
    if (stop := cancel.current()) is not None:  # the user's Stop ends generation at the next token
        criteria.append(_StopWhenSet(stop))
    if stop_loops:
        criteria.append(_StopOnLoop(inputs["input_ids"].shape[1]))
    streamer = TokenStreamer(lm.tokenizer)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            with lock, torch.inference_mode():
                lm.model.generate(**inputs, streamer=streamer, max_new_tokens=max_new_tokens, do_sample=False,
                                  repetition_penalty=repetition_penalty, pad_token_id=lm.tokenizer.pad_token_id,
                                  stopping_criteria=StoppingCriteriaList(criteria))
        except BaseException as error:  # surfaced in the reader's thread below
            failure.append(error)
            streamer.end()

    worker = threading.Thread(target=run, name="freeret-generate", daemon=True)
    worker.start()
    try:
        yield from streamer
    finally:
        reader_gone.set()
        worker.join()
    if failure:
        raise failure[0]


def generate_text(lm: LoadedModel, prompt: Prompt, max_new_tokens: int, lock: threading.Lock,
                  max_image_side: int = 1024, budget: VisualBudget = FULL_BUDGET) -> str:
    return "".join(stream_generate(lm, prompt, max_new_tokens, max_image_side, lock, budget=budget)).strip()


def clean_rewrite(raw: str) -> str:
    """First line of the model's reply, without a 'Query:' label or quotes."""
    line = raw.strip().splitlines()[0] if raw.strip() else ""
    line = re.sub(r"^(rewritten|(standalone\s+)?(search\s+)?(query|question))\s*:\s*", "", line, flags=re.I)
    return line.strip().strip('"\'`').strip()


def rewrite_prompt(question: str, history: Sequence[dict], max_turns: int = 6) -> Prompt:
    transcript = "\n".join(f"{turn['role']}: {str(turn['content'])[:500]}" for turn in history[-max_turns:])
    return Prompt(text=prompts.REWRITE_TEMPLATE.format(transcript=transcript, question=question))


def is_valid_rewrite(rewrite: str, question: str) -> bool:
    """Reject rewrites that answer instead (citations, no question mark) or drop the question's words."""
    if not rewrite or CITATION.search(rewrite) or (question.rstrip().endswith("?") and not rewrite.endswith("?")):
        return False
    content = {w for w in re.findall(r"[a-z0-9']+", question.lower()) if len(w) > 2 and w not in _REFERRING}
    return content <= set(re.findall(r"[a-z0-9']+", rewrite.lower()))


def fallback_query(question: str, history: Sequence[dict]) -> str:
    """When the model gives no usable rewrite: last user question plus this one (keeps lexical cues)."""
    previous = next((str(turn["content"]) for turn in reversed(history) if turn.get("role") == "user"), "")
    return f"{previous} {question}".strip()
