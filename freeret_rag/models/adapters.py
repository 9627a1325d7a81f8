"""The one place that knows how model families differ.

Everything else in the engine is generic: it builds chat messages, runs the processor and reads
hidden states through a `FamilyAdapter`. Adding a family means adding one entry to `ADAPTERS`
(or nothing at all, when the defaults fit: a Llama-style decoder reached through
`model.get_decoder().layers`, a post-attention norm named `post_attention_layernorm`, video given
as a list of frames).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from PIL import Image
from torch import nn

VideoMode = Literal["native", "frames"]


@dataclass(frozen=True)
class FamilyAdapter:
    """How one model family lays out its layers, takes media and positions padded batches.

    - `video_mode`: "native" passes frames to the processor as a video (Qwen2-VL's temporal
      patches); "frames" passes them as separate images, which any multi-image model accepts.
    - `positions_from_mask`: give explicit position ids counted from the attention mask, as
      `generate()` does, so a left-padded row sees the positions it would see alone. RoPE
      attention is shift-invariant, so for RoPE decoders this only keeps parity with generation;
      decoders with learned absolute positions need it for batch and single results to agree.
      Qwen's M-RoPE derives positions from the attention mask itself.
    - `nested_images`: processors that want one list of images per sample (Idefics3).
    - `max_video_frames`: frames per video segment this family can afford in one prompt.
    """

    name: str
    video_mode: VideoMode = "frames"
    positions_from_mask: bool = True
    nested_images: bool = False
    max_video_frames: int = 4
    post_attention_norm: str = "post_attention_layernorm"

    def decoder_layers(self, model: nn.Module) -> nn.ModuleList:
        """The text decoder's layer list (vision towers have layers too; we want the LLM's)."""
        decoder = model.get_decoder()
        layers = getattr(decoder, "layers", None)
        if not isinstance(layers, nn.ModuleList):
            raise TypeError(f"{type(model).__name__}: cannot find the text decoder's layers")
        return layers

    def last_layer_attention_output_module(self, model: nn.Module) -> nn.Module:
        """The module whose *input* is h_attn_L: the last layer's post-attention norm."""
        return getattr(self.decoder_layers(model)[-1], self.post_attention_norm)

    def last_layer_mlp(self, model: nn.Module) -> nn.Module:
        return self.decoder_layers(model)[-1].mlp

    def base_model(self, model: nn.Module) -> nn.Module:
        """The model without its LM head: returns final-normed hidden states, no logits."""
        return model.base_model

    def user_content(self, text: str, num_images: int, as_video: bool) -> list[dict[str, Any]]:
        """Chat content for one user turn: media first (as FreeRet prescribes), then text."""
        if as_video and self.video_mode == "native":
            media = [{"type": "video"}]
        else:
            media = [{"type": "image"}] * num_images
        return [*media, {"type": "text", "text": text}]

    def processor_media(self, images: list[list[Image.Image]], videos: list[list[Image.Image]]) -> dict[str, Any]:
        """Processor keyword arguments for a batch: per-sample image lists and native videos."""
        kwargs: dict[str, Any] = {}
        if any(images):
            kwargs["images"] = images if self.nested_images else [im for sample in images for im in sample]
        if any(videos):
            kwargs["videos"] = [video for video in videos if video]
        return kwargs

    def position_ids(self, attention_mask: torch.Tensor) -> torch.Tensor | None:
        if not self.positions_from_mask:
            return None
        return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


GENERIC = FamilyAdapter(name="generic")

# config.model_type -> adapter. Families not listed use GENERIC.
ADAPTERS: dict[str, FamilyAdapter] = {
    "qwen2_vl": FamilyAdapter(name="qwen2_vl", video_mode="native", positions_from_mask=False, max_video_frames=8),
    "qwen2_5_vl": FamilyAdapter(name="qwen2_5_vl", video_mode="native", positions_from_mask=False, max_video_frames=8),
    "idefics3": FamilyAdapter(name="idefics3", nested_images=True, max_video_frames=4),
    "smolvlm": FamilyAdapter(name="smolvlm", nested_images=True, max_video_frames=4),
    "llava": FamilyAdapter(name="llava", max_video_frames=2),
    "llama": FamilyAdapter(name="llama"),
}


def adapter_for(model_type: str) -> FamilyAdapter:
    return ADAPTERS.get(model_type, GENERIC)
