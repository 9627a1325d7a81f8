"""Stage 1: training-free embeddings read from inside the model.

The vector is h_attn_L, the residual stream after the last decoder layer's attention block
(the input of that layer's post-attention norm), at the last prompt position. A forward
pre-hook on that norm captures it and aborts the forward, so the last MLP, the final norm and
the LM head never run: an embedding costs L-1 full layers plus one attention block, and no
(batch x seq x vocab) logits tensor is ever allocated.

Memory: activations of one batch (batch x seq x hidden) plus the vision tower's; nothing is kept
across batches except the (batch x hidden) read-outs.
"""

from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
import torch

from .inputs import Prompt, batches, encode
from .models import LoadedModel

EmbedPoint = Literal["attn", "final", "mean"]
EMBED_POINTS: tuple[EmbedPoint, ...] = ("attn", "final", "mean")


class _ReadOutReached(Exception):
    """Raised from the hook to stop the forward pass once h_attn_L is captured."""


def attention_output_at_last_position(lm: LoadedModel, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """h_attn_L[:, -1] for a left-padded batch, computing nothing past the last attention block."""
    captured: list[torch.Tensor] = []

    def capture(_module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        hidden = args[0] if args else kwargs["hidden_states"]
        captured.append(hidden[:, -1, :])
        raise _ReadOutReached

    target = lm.adapter.last_layer_attention_output_module(lm.model)
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


def final_hidden_state(lm: LoadedModel, inputs: dict[str, torch.Tensor], point: EmbedPoint) -> torch.Tensor:
    """Ablation baselines: last position or masked mean of the final (normed) hidden states."""
    hidden = lm.adapter.base_model(lm.model)(**inputs, use_cache=False).last_hidden_state
    if point == "final":
        return hidden[:, -1, :]
    mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)


@torch.inference_mode()
def embed_prompts(lm: LoadedModel, prompts: Sequence[Prompt], point: EmbedPoint = "attn", batch_size: int = 8,
                  max_image_side: int = 1024) -> np.ndarray:
    """L2-normalised float32 vectors, one row per prompt, in input order."""
    if point not in EMBED_POINTS:
        raise ValueError(f"unknown embedding point {point!r}; expected one of {EMBED_POINTS}")
    out = np.zeros((len(prompts), lm.hidden_size), dtype=np.float32)
    for indices, chunk in batches(prompts, batch_size):
        inputs = encode(lm, chunk, max_image_side=max_image_side)
        if point == "attn":
            vectors = attention_output_at_last_position(lm, inputs)
        else:
            vectors = final_hidden_state(lm, inputs, point)
        vectors = torch.nn.functional.normalize(vectors.float(), dim=-1)
        out[indices] = vectors.cpu().numpy()
    return out
