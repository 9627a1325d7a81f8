"""Stage 2: point-wise reranking by neutral lettered choice.

Each (query, candidate) prompt ends where the model would write its answer letter. The score is
p(match) = softmax([logit_A, logit_B])[0], where the two logits are the final hidden state dotted
with just the two label rows of the LM head: the full-vocabulary projection is never computed.
Pairs are batched, so K candidates cost ceil(K / batch_size) forward passes.

The label tokens are the ones the model would emit first after *this* chat template's
generation prompt: "A" after Qwen's "<|im_start|>assistant\\n", but " A" (with its space) after
SmolVLM's "Assistant:" or LLaVA's "ASSISTANT:", because those templates write a reply as
"Assistant: A". Scoring the bare "A" there compares two near-zero probabilities: noise.
"""

from __future__ import annotations

import logging
import weakref
from typing import Sequence

import numpy as np
import torch

from .cancel import check as check_stop
from .inputs import Prompt, encoded_batches, render, render_reply
from .models import FULL_BUDGET, LoadedModel, VisualBudget

log = logging.getLogger(__name__)

_PROBE = Prompt(text="Answer with the option's letter.")

# tokenizer -> {(chat template, labels): token ids}
_LABEL_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _reply_lead(lm: LoadedModel, generation_prompt: str, label: str) -> str:
    """The whitespace the template writes between its generation prompt and a reply ("" or " ")."""
    finished = render_reply(lm, _PROBE, label)
    if not finished.startswith(generation_prompt):
        return ""
    continuation = finished[len(generation_prompt):]
    lead = continuation[: continuation.find(label)] if label in continuation else ""
    return lead if lead.isspace() else ""


def _first_reply_token(tokenizer, prompt: str, reply: str) -> int:
    """The first token after `prompt` when `prompt + reply` is tokenized as one text.

    When the prompt's last token merges with the reply (a trailing newline that joins the next
    word in some tokenizers), the model still reads the prompt's own tokens, so the reply's text
    past the prompt is tokenized on its own.
    """
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    full_ids = tokenizer(prompt + reply, add_special_tokens=False)["input_ids"]
    common = 0
    while common < min(len(prompt_ids), len(full_ids)) and prompt_ids[common] == full_ids[common]:
        common += 1
    if common == len(prompt_ids) and len(full_ids) > common:
        return full_ids[common]
    merged_prompt_tail = tokenizer.decode(prompt_ids[common:])
    rest = tokenizer.decode(full_ids[common:])
    rest = rest[len(merged_prompt_tail):] if rest.startswith(merged_prompt_tail) else reply
    ids = tokenizer(rest or reply, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ValueError(f"the tokenizer cannot encode the reply {reply!r}")
    return ids[0]


def label_token_ids(lm: LoadedModel, labels: Sequence[str]) -> list[int]:
    """For each option label, the token the model would emit first right after the generation prompt.

    Cached per (tokenizer, chat template, labels). Raises ValueError when two labels start with
    the same token (their probabilities could not be told apart).
    """
    templater = lm.processor if lm.processor is not None else lm.tokenizer
    key = (getattr(templater, "chat_template", None), tuple(labels))
    per_tokenizer = _LABEL_CACHE.setdefault(lm.tokenizer, {})
    if key in per_tokenizer:
        return per_tokenizer[key]
    generation_prompt = render(lm, _PROBE)
    ids = []
    for label in labels:
        token = _first_reply_token(lm.tokenizer, generation_prompt, _reply_lead(lm, generation_prompt, label) + label)
        if lm.tokenizer.decode([token]).strip() != label:
            log.warning("label %r does not start with one whole token for %s; scoring its first token %r",
                        label, lm.model_id, lm.tokenizer.decode([token]))
        ids.append(token)
    if len(set(ids)) < len(ids):
        raise ValueError(
            f"the rerank labels {tuple(labels)} start with the same token for {lm.model_id} "
            f"({[lm.tokenizer.convert_ids_to_tokens(i) for i in ids]}); choose labels whose first tokens differ")
    per_tokenizer[key] = ids
    return ids


def label_logits(lm: LoadedModel, hidden: torch.Tensor, token_ids: Sequence[int]) -> torch.Tensor:
    """Logits of only `token_ids`: (batch, hidden) x (hidden, len(token_ids)), softcapped like the model's."""
    head = lm.model.get_output_embeddings()
    rows = head.weight[list(token_ids)]
    logits = hidden @ rows.T
    if getattr(head, "bias", None) is not None:
        logits = logits + head.bias[list(token_ids)]
    return lm.adapter.cap_logits(lm.model, logits)


@torch.inference_mode()
def match_probabilities(lm: LoadedModel, prompts: Sequence[Prompt], labels: tuple[str, str], batch_size: int = 8,
                        max_image_side: int = 1024, budget: VisualBudget = FULL_BUDGET) -> np.ndarray:
    """p(labels[0]) against labels[1] for each prompt, in input order.

    `budget` bounds each image's visual tokens (the engine passes the family's rerank budget).
    """
    token_ids = label_token_ids(lm, labels)
    out = np.zeros(len(prompts), dtype=np.float64)
    for indices, inputs in encoded_batches(lm, prompts, batch_size, max_image_side, budget):
        check_stop()  # a stopped chat ends its rerank at the next batch
        hidden = lm.adapter.base_model(lm.model)(**inputs, use_cache=False).last_hidden_state[:, -1, :]
        logits = label_logits(lm, hidden, token_ids).float()
        out[indices] = torch.softmax(logits, dim=-1)[:, 0].cpu().numpy()
    return out
