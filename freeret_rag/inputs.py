"""Turn prompts (text, images, history) into padded model inputs, for any loaded model.

All three stages go through here, so every family is prompted the same way: its own chat
template, media before text in the user turn, left padding, and the generation prompt appended
so the read-out position is where the model would start answering.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Any, Iterator, Sequence, TypeVar

import torch
from PIL import Image

from .errors import UnsupportedModalityError
from .models import FULL_BUDGET, LoadedModel, VisualBudget

T = TypeVar("T")


@dataclass
class Prompt:
    """One conversation to run: optional system line and text history, then a user turn."""

    text: str
    images: list[Image.Image] = field(default_factory=list)
    as_video: bool = False
    system: str | None = None
    history: list[dict[str, str]] = field(default_factory=list)
    #: Interleaved user turn: (text, number of `images` that follow it) in order. None puts all
    #: media first, then `text` (what the embedding and rerank prompts use, as FreeRet prescribes).
    segments: list[tuple[str, int]] | None = None

    @property
    def signature(self) -> tuple[int, bool]:
        """Prompts with the same media layout batch together (processors dislike ragged media)."""
        return len(self.images), self.as_video


def downscale(image: Image.Image, max_side: int) -> Image.Image:
    """Cap the longest side: the model's token count (and memory) grows with the pixel count."""
    if max(image.size) <= max_side:
        return image
    scale = max_side / max(image.size)
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.LANCZOS)


def cap_pixels(image: Image.Image, max_pixels: int | None) -> Image.Image:
    """Scale down (aspect kept) so that width x height <= `max_pixels`; None or a smaller image: as is."""
    if max_pixels is None or image.width * image.height <= max_pixels:
        return image
    scale = (max_pixels / (image.width * image.height)) ** 0.5
    size = (max(1, int(image.width * scale)), max(1, int(image.height * scale)))
    return image.resize(size, Image.LANCZOS)


def sample_frames(frames: Sequence[T], limit: int, even: bool) -> list[T]:
    """Evenly keep at most `limit` frames (images or paths); native video needs an even count."""
    frames = list(frames)
    if len(frames) > limit:
        step = len(frames) / limit
        frames = [frames[int(i * step)] for i in range(limit)]
    if even and len(frames) % 2:
        frames.append(frames[-1])
    return frames


def _fit_media(prompt: Prompt, max_side: int, max_frames: int, native_video: bool,
               max_pixels: int | None = None) -> Prompt:
    """Downscale images and thin video frames *before* the template counts media placeholders."""
    media = [cap_pixels(downscale(image, max_side), max_pixels) for image in prompt.images]
    if prompt.as_video:
        media = sample_frames(media, max_frames, even=native_video)
    return replace(prompt, images=media)


def _messages(lm: LoadedModel, prompt: Prompt) -> list[dict[str, Any]]:
    vision = lm.processor is not None

    def text_content(text: str) -> Any:
        # VLM templates iterate over typed content parts; plain LLM templates expect a string.
        return [{"type": "text", "text": text}] if vision else text

    messages: list[dict[str, Any]] = []
    if prompt.system:
        messages.append({"role": "system", "content": text_content(prompt.system)})
    for turn in prompt.history:
        messages.append({"role": turn["role"], "content": text_content(str(turn["content"]))})
    if vision and prompt.segments is not None:
        user = []
        for text, count in prompt.segments:
            if text:
                user.append({"type": "text", "text": text})
            user.extend({"type": "image"} for _ in range(count))
    elif vision:
        user = lm.adapter.user_content(prompt.text, len(prompt.images), prompt.as_video)
    elif prompt.images:
        raise UnsupportedModalityError(
            f"{lm.model_id} is a text-only model and cannot read images or video frames; "
            "load a vision-language model (e.g. --model Qwen/Qwen2-VL-2B-Instruct) to use them")
    elif prompt.segments is not None:
        user = "".join(text for text, _ in prompt.segments)
    else:
        user = prompt.text
    messages.append({"role": "user", "content": user})
    return messages


def render(lm: LoadedModel, prompt: Prompt) -> str:
    """The prompt as the model will read it (with the generation prompt), for tests and logs."""
    templater = lm.processor if lm.processor is not None else lm.tokenizer
    return templater.apply_chat_template(_messages(lm, prompt), add_generation_prompt=True, tokenize=False)


def render_reply(lm: LoadedModel, prompt: Prompt, reply: str) -> str:
    """The prompt followed by `reply` as a finished assistant turn, as the template writes it."""
    templater = lm.processor if lm.processor is not None else lm.tokenizer
    content: Any = [{"type": "text", "text": reply}] if lm.processor is not None else reply
    messages = [*_messages(lm, prompt), {"role": "assistant", "content": content}]
    return templater.apply_chat_template(messages, add_generation_prompt=False, tokenize=False)


def encode(lm: LoadedModel, prompts: Sequence[Prompt], max_image_side: int = 1024,
           with_positions: bool = True, budget: VisualBudget = FULL_BUDGET) -> dict[str, torch.Tensor]:
    """Encode prompts of one media signature into one left-padded batch on the model's device.

    `with_positions` adds explicit position ids for decoders that need them under left padding
    (the adapter says which); generation computes its own and must not get them. `budget` bounds
    the visual tokens of every image and frame (see `models.adapters.VisualBudget`).
    """
    if lm.processor is None:
        texts = [render(lm, prompt) for prompt in prompts]
        batch = lm.tokenizer(texts, padding=True, return_tensors="pt", add_special_tokens=False)
    else:
        native = lm.adapter.video_mode == "native"
        prompts = [_fit_media(prompt, max_image_side, lm.adapter.max_video_frames, native, budget.max_pixels)
                   for prompt in prompts]
        texts = [render(lm, prompt) for prompt in prompts]
        images = [[] if prompt.as_video and native else prompt.images for prompt in prompts]
        videos = [prompt.images if prompt.as_video and native else [] for prompt in prompts]
        options = lm.adapter.processor_options(budget) if any(images) or any(videos) else {}
        batch = lm.processor(text=texts, **lm.adapter.processor_media(images, videos), **options, padding=True,
                             return_tensors="pt")
    inputs = {key: value.to(lm.device) for key, value in batch.items() if isinstance(value, torch.Tensor)}
    for key, value in inputs.items():
        if value.is_floating_point():
            inputs[key] = value.to(lm.dtype)
    if with_positions:
        positions = lm.adapter.position_ids(inputs["attention_mask"])
        if positions is not None:
            inputs["position_ids"] = positions
    return inputs


def encode_workers(lm: LoadedModel) -> int:
    """Threads that prepare batches ahead of the model: one on a CPU (the model wants the cores),
    up to 4 beside a GPU (where the processor, not the model, is the bottleneck)."""
    import os

    if lm.device.type == "cpu":
        return 1
    return max(1, min(4, (os.cpu_count() or 2) // 4))


def encoded_batches(lm: LoadedModel, prompts: Sequence[Prompt], batch_size: int, max_image_side: int = 1024,
                    budget: VisualBudget = FULL_BUDGET,
                    workers: int | None = None) -> Iterator[tuple[list[int], dict[str, torch.Tensor]]]:
    """`batches` encoded, the next batches prepared while the caller runs the model on this one.

    Resizing, the processor's tiling and normalisation, and tokenizing run in `workers` threads
    (default `encode_workers`; PIL, numpy and torch release the GIL for most of it), each
    encoding a whole batch, up to `workers` batches ahead, so the model does not wait for the CPU
    between batches. Batches come back in order.
    """
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    chunks = list(batches(prompts, batch_size))
    if not chunks:
        return
    workers = workers or encode_workers(lm)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="freeret-encode") as pool:
        pending: deque = deque()
        upcoming = iter(chunks)
        for indices, chunk in upcoming:
            pending.append((indices, pool.submit(encode, lm, chunk, max_image_side, True, budget)))
            if len(pending) > workers:
                break
        while pending:
            indices, future = pending.popleft()
            inputs = future.result()
            following = next(upcoming, None)
            if following is not None:
                pending.append((following[0], pool.submit(encode, lm, following[1], max_image_side, True, budget)))
            yield indices, inputs


def batches(prompts: Sequence[Prompt], batch_size: int) -> Iterator[tuple[list[int], list[Prompt]]]:
    """Group prompts by media signature, sort by length, then chunk; yields original indices too.

    Sorting keeps prompts of similar length together so that little compute goes to padding
    (a batch costs batch x longest-prompt tokens); callers scatter results back by index.
    """
    groups: dict[tuple[int, bool], list[int]] = defaultdict(list)
    for index, prompt in enumerate(prompts):
        groups[prompt.signature].append(index)
    for indices in groups.values():
        indices.sort(key=lambda i: len(prompts[i].text))
        for start in range(0, len(indices), batch_size):
            chunk = indices[start:start + batch_size]
            yield chunk, [prompts[i] for i in chunk]
