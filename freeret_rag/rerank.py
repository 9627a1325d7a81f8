"""Stage 2: point-wise reranking by neutral lettered choice.

Each (query, candidate) prompt ends where the model would write its answer letter. The score is
p(match) = softmax([logit_A, logit_B])[0], where the two logits are the final hidden state dotted
with just the two label rows of the LM head: the full-vocabulary projection is never computed.
Pairs are batched, so K candidates cost ceil(K / batch_size) forward passes.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch

from .inputs import Prompt, batches, encode
from .models import LoadedModel

log = logging.getLogger(__name__)


def label_token_id(tokenizer, label: str) -> int:
    """The token the model emits to start `label` right after the generation prompt."""
    ids = tokenizer.encode(label, add_special_tokens=False)
    if not ids:
        raise ValueError(f"the tokenizer cannot encode the label {label!r}")
    if len(ids) > 1:
        log.warning("label %r is %d tokens for this tokenizer; scoring its first token", label, len(ids))
    return ids[0]


def label_logits(lm: LoadedModel, hidden: torch.Tensor, token_ids: Sequence[int]) -> torch.Tensor:
    """Logits of only `token_ids`: (batch, hidden) x (hidden, len(token_ids))."""
    head = lm.model.get_output_embeddings()
    rows = head.weight[list(token_ids)]
    logits = hidden @ rows.T
    if getattr(head, "bias", None) is not None:
        logits = logits + head.bias[list(token_ids)]
    return logits


@torch.inference_mode()
def match_probabilities(lm: LoadedModel, prompts: Sequence[Prompt], labels: tuple[str, str], batch_size: int = 8,
                        max_image_side: int = 1024) -> np.ndarray:
    """p(labels[0]) against labels[1] for each prompt, in input order."""
    token_ids = [label_token_id(lm.tokenizer, label) for label in labels]
    out = np.zeros(len(prompts), dtype=np.float64)
    for indices, chunk in batches(prompts, batch_size):
        inputs = encode(lm, chunk, max_image_side=max_image_side)
        hidden = lm.adapter.base_model(lm.model)(**inputs, use_cache=False).last_hidden_state[:, -1, :]
        logits = label_logits(lm, hidden, token_ids).float()
        out[indices] = torch.softmax(logits, dim=-1)[:, 0].cpu().numpy()
    return out
