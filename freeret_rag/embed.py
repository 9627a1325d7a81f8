"""Stage 1: training-free embeddings read from inside the model.

The vector is h_attn_L, the residual stream after the last decoder layer's attention block,
before its MLP, at the last prompt position. Where that is depends on the layer's layout (the
input of the post-attention norm in pre-norm decoders, of the pre-feedforward norm in Gemma, of
the MLP in OLMo 2; see `models.adapters.LayerLayout`). A forward pre-hook on that module
captures it and aborts the forward, so the last MLP, the final norm and the LM head never run:
an embedding costs L-1 full layers plus one attention block, and no (batch x seq x vocab) logits
tensor is ever allocated.

`embed_prompts_with_words` also reads "the model's own words" at the same point (PromptReps,
arXiv 2404.18424): it finishes the last layer for the last position only, applies the final norm
and the LM head to that one position per row, and returns the most probable whole words.

Memory: activations of one batch (batch x seq x hidden) plus the vision tower's; nothing is kept
across batches except the (batch x hidden) read-outs (and, for words, one (batch x vocab) row).
"""

from __future__ import annotations

import weakref
from typing import Literal, Sequence

import numpy as np
import torch

from .inputs import Prompt, encoded_batches
from .models import FULL_BUDGET, LoadedModel, VisualBudget

EmbedPoint = Literal["attn", "final", "mean"]
EMBED_POINTS: tuple[EmbedPoint, ...] = ("attn", "final", "mean")

Words = list[tuple[str, float]]


class _ReadOutReached(Exception):
    """Raised from the hook to stop the forward pass once h_attn_L is captured."""


def attention_output_at_last_position(lm: LoadedModel, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Raw (unnormalised) h_attn_L[:, -1] for a left-padded batch, computing nothing past it."""
    captured: list[torch.Tensor] = []

    def capture(_module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        hidden = args[0] if args else next(iter(kwargs.values()))
        captured.append(hidden[:, -1, :])
        raise _ReadOutReached

    target = lm.adapter.read_out_module(lm.model)
    handle = target.register_forward_pre_hook(capture, with_kwargs=True)
    try:
        lm.adapter.base_model(lm.model)(**inputs, use_cache=False)
    except _ReadOutReached:
        pass
    finally:
        handle.remove()
    if not captured:
        raise RuntimeError("the embedding read-out point was never reached; check the family adapter")
    return captured[0]


def pool_final_hidden_states(hidden: torch.Tensor, attention_mask: torch.Tensor, point: EmbedPoint) -> torch.Tensor:
    """Ablation baselines: last position or masked mean of the final (normed) hidden states."""
    if point == "final":
        return hidden[:, -1, :]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)


def next_token_logits(lm: LoadedModel, h_attn: torch.Tensor) -> torch.Tensor:
    """Full-vocabulary next-token logits (rows, vocab) from h_attn_L at one position per row.

    Finishes the last decoder layer (its MLP block), applies the final norm, the LM head and,
    where the model's own forward does, the final logit softcap.
    """
    model, adapter = lm.model, lm.adapter
    hidden = adapter.final_norm(model)(adapter.finish_last_layer(model, h_attn.unsqueeze(1)))[:, 0]
    return adapter.cap_logits(model, model.get_output_embeddings()(hidden)).float()


# tokenizer -> (token id -> word index or -1, words); built once per tokenizer (one decode per id).
_WORD_TABLES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _is_word(text: str) -> bool:
    return (text.isalpha() and len(text) >= 2) or text.isdecimal()


def word_table(tokenizer, vocab_size: int) -> tuple[torch.Tensor, list[str]]:
    """Map every token id below `vocab_size` to the word it decodes to, or -1.

    A token's word is its decoded text, stripped and lowercased; kept when it is alphabetic with
    at least 2 characters, or digits. Special tokens have no word. Tokens that decode to the
    same word ("Paris", " paris") share one index, so their probabilities add up.
    """
    cached = _WORD_TABLES.get(tokenizer)
    if cached is not None and cached[0].numel() == vocab_size:
        return cached
    special = set(tokenizer.all_special_ids)
    known = min(vocab_size, len(tokenizer))
    texts = tokenizer.batch_decode([[i] for i in range(known)], skip_special_tokens=False)
    index_of: dict[str, int] = {}
    table = torch.full((vocab_size,), -1, dtype=torch.long)
    for token_id, text in enumerate(texts):
        word = text.strip().lower()
        if token_id not in special and _is_word(word):
            table[token_id] = index_of.setdefault(word, len(index_of))
    result = (table, list(index_of))
    _WORD_TABLES[tokenizer] = result
    return result


def words_from_logits(tokenizer, logits: torch.Tensor, k: int) -> list[Words]:
    """Per row of (rows, vocab) logits: the k most probable words with their summed softmax
    probabilities (over the whole vocabulary), most probable first."""
    table, words = word_table(tokenizer, logits.shape[-1])
    probs = torch.softmax(logits.float(), dim=-1).cpu()
    valid = table >= 0
    per_word = torch.zeros(probs.shape[0], len(words)).index_add_(1, table[valid], probs[:, valid])
    values, indices = per_word.topk(min(k, len(words)), dim=-1)
    return [[(words[i], float(v)) for v, i in zip(row_values.tolist(), row_indices.tolist())]
            for row_values, row_indices in zip(values, indices)]


def _check_point(point: str) -> None:
    if point not in EMBED_POINTS:
        raise ValueError(f"unknown embedding point {point!r}; expected one of {EMBED_POINTS}")


def _run(lm: LoadedModel, prompts: Sequence[Prompt], point: EmbedPoint, batch_size: int, max_image_side: int,
         words_k: int | None, budget: VisualBudget) -> tuple[np.ndarray, list[Words]]:
    _check_point(point)
    out = np.zeros((len(prompts), lm.hidden_size), dtype=np.float32)
    words: list[Words] = [[] for _ in prompts]
    for indices, inputs in encoded_batches(lm, prompts, batch_size, max_image_side, budget):
        if point == "attn":
            vectors = attention_output_at_last_position(lm, inputs)
            logits = next_token_logits(lm, vectors) if words_k is not None else None
        else:  # the baselines run the whole decoder; words come from the LM head at its last position
            hidden = lm.adapter.base_model(lm.model)(**inputs, use_cache=False).last_hidden_state
            vectors = pool_final_hidden_states(hidden, inputs["attention_mask"], point)
            logits = (lm.adapter.cap_logits(lm.model, lm.model.get_output_embeddings()(hidden[:, -1])).float()
                      if words_k is not None else None)
        if logits is not None:
            for index, row in zip(indices, words_from_logits(lm.tokenizer, logits, words_k)):
                words[index] = row
        out[indices] = torch.nn.functional.normalize(vectors.float(), dim=-1).cpu().numpy()
    return out, words


@torch.inference_mode()
def embed_prompts(lm: LoadedModel, prompts: Sequence[Prompt], point: EmbedPoint = "attn", batch_size: int = 8,
                  max_image_side: int = 1024, budget: VisualBudget = FULL_BUDGET) -> np.ndarray:
    """L2-normalised float32 vectors, one row per prompt, in input order.

    `budget` bounds each image's visual tokens (the engine passes the family's embedding budget).
    """
    return _run(lm, prompts, point, batch_size, max_image_side, None, budget)[0]


@torch.inference_mode()
def embed_prompts_with_words(lm: LoadedModel, prompts: Sequence[Prompt], point: EmbedPoint = "attn",
                             batch_size: int = 8, max_image_side: int = 1024,
                             top_words: int = 24, budget: VisualBudget = FULL_BUDGET) -> tuple[np.ndarray, list[Words]]:
    """The vectors of `embed_prompts` and, per prompt, the model's own next words at the read-out.

    Words: up to `top_words` (word, probability) pairs, most probable first; a word's probability
    is the softmax probability of the next token summed over the tokens that decode to it
    (stripped, lowercased; alphabetic of at least 2 characters, or digits). Costs one MLP
    block, one norm and one (rows x vocab) LM-head product per batch on top of the embedding.
    """
    if top_words < 1:
        raise ValueError(f"top_words must be at least 1, got {top_words}")
    return _run(lm, prompts, point, batch_size, max_image_side, top_words, budget)
