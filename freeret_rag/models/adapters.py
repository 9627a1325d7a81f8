"""The one place that knows how model families differ.

Everything else in the engine is generic: it builds chat messages, runs the processor and reads
hidden states through a `FamilyAdapter`. Two things differ between families:

- how media go in (video as native clips or as frames, nested image lists, positions), and
- the decoder layer's layout, which decides where h_attn_L -- the residual stream after the
  last layer's attention block, before its MLP -- can be read (see `LayerLayout`).

Only listed families are loaded. A family that wraps a separately configured language model
(LLaVA, Idefics3, SmolVLM) takes the layout of that model's type (`config.text_config`). An
unlisted type is refused with the layouts that are supported, never guessed: reading the wrong
side of a norm gives a vector that looks fine and retrieves badly. Adding a family means adding
one entry to `ADAPTERS`, after reading its decoder layer's `forward`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal

import torch
from PIL import Image
from torch import nn

from ..errors import ModelLoadError

VideoMode = Literal["native", "frames"]
Stage = Literal["embed", "rerank", "answer"]
STAGES: tuple[Stage, ...] = ("embed", "rerank", "answer")


@dataclass(frozen=True)
class VisualBudget:
    """What one image (or video frame) may cost a stage in visual tokens.

    - `max_pixels`: width x height is scaled down to at most this before the processor sees the
      image (aspect kept). Where the processor turns pixels into tokens (Qwen2-VL: one token per
      28 x 28 px after its 2 x 2 merge), this caps the tokens: 200,704 px = 256 tokens.
    - `split`: Idefics3 / SmolVLM image splitting. On, a page becomes up to 16 tiles plus a
      global view (each 64 tokens on SmolVLM-256M, each a full vision-tower pass); off, one
      view at the processor's `max_image_size`. None keeps the processor's own setting.

    The default (no cap, None) is what the processor would do by itself: the answer stage keeps
    it, so the few cited sources are read at full resolution.
    """

    max_pixels: int | None = None
    split: bool | None = None

    def __post_init__(self) -> None:
        if self.max_pixels is not None and self.max_pixels < 28 * 28:
            raise ValueError(f"max_pixels must be at least {28 * 28}, got {self.max_pixels}")

    @property
    def tag(self) -> str:
        """A short text that identifies the budget (recorded with an index: it changes vectors)."""
        parts = [f"px{self.max_pixels}" if self.max_pixels else "", {True: "split", False: "nosplit"}.get(self.split, "")]
        return "-".join(part for part in parts if part) or "full"


FULL_BUDGET = VisualBudget()
# Qwen2-VL: 448 x 448 px = 256 merged tokens per image (a 990 x 1280 page would otherwise be ~1,600).
QWEN_SEARCH_BUDGET = VisualBudget(max_pixels=448 * 448)
# Idefics3 / SmolVLM: one 512 px view (64 tokens on SmolVLM-256M) instead of up to 17 tiles.
IDEFICS_SEARCH_BUDGET = VisualBudget(split=False)


@dataclass(frozen=True)
class LayerLayout:
    """Where h_attn_L lives in one decoder layer, and how the rest of that layer goes on from it.

    - `read_at`: the submodule whose *input* is h_attn_L (captured by a forward pre-hook).
    - `required` / `absent`: submodules the layer must have / must not have, checked on the
      loaded model so that a layer of another shape is refused instead of misread.
    - `tail`: the rest of the layer from h_attn_L (the MLP block with its residual add).
    """

    name: str
    read_at: str
    required: tuple[str, ...]
    absent: tuple[str, ...]
    tail: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    description: str


def _pre_norm_tail(layer: nn.Module, h: torch.Tensor) -> torch.Tensor:
    return h + layer.mlp(layer.post_attention_layernorm(h))


def _gemma_tail(layer: nn.Module, h: torch.Tensor) -> torch.Tensor:
    return h + layer.post_feedforward_layernorm(layer.mlp(layer.pre_feedforward_layernorm(h)))


def _olmo2_tail(layer: nn.Module, h: torch.Tensor) -> torch.Tensor:
    return h + layer.post_feedforward_layernorm(layer.mlp(h))


# Read from transformers 5.24's decoder layers (`inspect.getsource(<Family>DecoderLayer.forward)`).
PRE_NORM = LayerLayout(
    name="pre-norm", read_at="post_attention_layernorm",
    required=("input_layernorm", "self_attn", "post_attention_layernorm", "mlp"),
    absent=("pre_feedforward_layernorm", "post_feedforward_layernorm"), tail=_pre_norm_tail,
    description="h = x + attn(input_norm(x)); out = h + mlp(post_attention_norm(h)) "
                "(Llama, Mistral, Qwen2/3, Qwen2-VL): h_attn_L is the input of post_attention_layernorm")
GEMMA_POST_NORM = LayerLayout(
    name="post-norm-gemma", read_at="pre_feedforward_layernorm",
    required=("input_layernorm", "self_attn", "post_attention_layernorm", "pre_feedforward_layernorm", "mlp",
              "post_feedforward_layernorm"),
    absent=(), tail=_gemma_tail,
    description="h = x + post_attention_norm(attn(input_norm(x))); "
                "out = h + post_feedforward_norm(mlp(pre_feedforward_norm(h))) (Gemma 2, Gemma 3): "
                "h_attn_L is the input of pre_feedforward_layernorm")
OLMO2_POST_NORM = LayerLayout(
    name="post-norm-olmo2", read_at="mlp",
    required=("self_attn", "post_attention_layernorm", "mlp", "post_feedforward_layernorm"),
    absent=("input_layernorm", "pre_feedforward_layernorm"), tail=_olmo2_tail,
    description="h = x + post_attention_norm(attn(x)); out = h + post_feedforward_norm(mlp(h)) (OLMo 2): "
                "h_attn_L is the input of mlp")
LAYOUTS: tuple[LayerLayout, ...] = (PRE_NORM, GEMMA_POST_NORM, OLMO2_POST_NORM)


def supported_layouts() -> str:
    return "; ".join(f"{layout.name}: {layout.description}" for layout in LAYOUTS)


@dataclass(frozen=True)
class FamilyAdapter:
    """How one model family lays out its layers, takes media and positions padded batches.

    - `layout`: the decoder layer's `LayerLayout`; None for wrappers whose language model is
      configured separately (LLaVA, Idefics3): theirs is that model type's layout.
    - `video_mode`: "native" passes frames to the processor as a video (Qwen2-VL's temporal
      patches); "frames" passes them as separate images, which any multi-image model accepts.
    - `positions_from_mask`: give explicit position ids counted from the attention mask, as
      `generate()` does, so a left-padded row sees the positions it would see alone. RoPE
      attention is shift-invariant, so for RoPE decoders this only keeps parity with generation;
      decoders with learned absolute positions need it for batch and single results to agree.
      Qwen's M-RoPE derives positions from the attention mask itself.
    - `nested_images`: processors that want one list of images per sample (Idefics3, Gemma 3).
    - `max_video_frames`: frames per video segment this family can afford in one prompt.
    - `splits_images`: the processor tiles large images (Idefics3 / SmolVLM's `do_image_splitting`).
    - `search_budget`: the `VisualBudget` of the embedding and rerank stages, which see every
      candidate (the answer stage sees a few sources and keeps the processor's full resolution).
      LLaVA and Gemma 3 take a fixed number of tokens per image: nothing to bound.
    """

    name: str
    layout: LayerLayout | None = None
    video_mode: VideoMode = "frames"
    positions_from_mask: bool = True
    nested_images: bool = False
    max_video_frames: int = 4
    splits_images: bool = False
    search_budget: VisualBudget = FULL_BUDGET

    def budget(self, stage: Stage) -> VisualBudget:
        """The family's visual budget at `stage` (see `search_budget`)."""
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}")
        return FULL_BUDGET if stage == "answer" else self.search_budget

    # -- layers --------------------------------------------------------------------------------
    def decoder_layers(self, model: nn.Module) -> nn.ModuleList:
        """The text decoder's layer list (vision towers have layers too; we want the LLM's)."""
        decoder = model.get_decoder()
        layers = getattr(decoder, "layers", None)
        if not isinstance(layers, nn.ModuleList):
            raise TypeError(f"{type(model).__name__}: cannot find the text decoder's layers")
        return layers

    def layer_layout(self, model: nn.Module) -> LayerLayout:
        """This model's decoder-layer layout, checked against its last layer's submodules.

        Raises ModelLoadError when the layout is unknown or the layer does not have its shape.
        """
        layout = self.layout
        text_type = model.config.get_text_config().model_type
        if layout is None:
            backbone = ADAPTERS.get(text_type)
            layout = backbone.layout if backbone is not None else None
            if layout is None:
                raise ModelLoadError(
                    f"{self.name} model whose language model is of type {text_type!r}: its decoder layout is not "
                    f"known, so the embedding read-out point cannot be placed. Supported layouts: "
                    f"{supported_layouts()}. Supported language model types: {', '.join(_text_types())}")
        layer = self.decoder_layers(model)[-1]
        missing = [name for name in layout.required if not isinstance(getattr(layer, name, None), nn.Module)]
        unexpected = [name for name in layout.absent if getattr(layer, name, None) is not None]
        if missing or unexpected:
            raise ModelLoadError(
                f"{self.name} ({text_type}): the decoder layer {type(layer).__name__} does not have the "
                f"{layout.name} shape (missing {missing or 'nothing'}, unexpected {unexpected or 'nothing'}); "
                f"refusing to guess where h_attn_L is. Supported layouts: {supported_layouts()}")
        return layout

    def read_out_module(self, model: nn.Module) -> nn.Module:
        """The last layer's submodule whose *input* is h_attn_L."""
        return getattr(self.decoder_layers(model)[-1], self.layer_layout(model).read_at)

    def finish_last_layer(self, model: nn.Module, h_attn: torch.Tensor) -> torch.Tensor:
        """The last decoder layer's output from h_attn_L (any leading shape): its MLP block."""
        return self.layer_layout(model).tail(self.decoder_layers(model)[-1], h_attn)

    def final_norm(self, model: nn.Module) -> nn.Module:
        norm = getattr(model.get_decoder(), "norm", None)
        if not isinstance(norm, nn.Module):
            raise TypeError(f"{type(model).__name__}: cannot find the text decoder's final norm")
        return norm

    def cap_logits(self, model: nn.Module, logits: torch.Tensor) -> torch.Tensor:
        """Apply the final logit softcap where the model's own forward does (Gemma 2, Gemma 3 text)."""
        cap = getattr(model.config, "final_logit_softcapping", None)
        return logits if cap is None else torch.tanh(logits / cap) * cap

    def base_model(self, model: nn.Module) -> nn.Module:
        """The model without its LM head: returns final-normed hidden states, no logits."""
        return model.base_model

    # -- media ---------------------------------------------------------------------------------
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

    def processor_options(self, budget: VisualBudget) -> dict[str, Any]:
        """Processor keyword arguments that apply `budget` (the pixel cap is applied before)."""
        if budget.split is None:
            return {}
        if not self.splits_images:
            raise ValueError(f"{self.name} has no image splitting to switch (budget {budget.tag})")
        return {"do_image_splitting": budget.split}

    def position_ids(self, attention_mask: torch.Tensor) -> torch.Tensor | None:
        if not self.positions_from_mask:
            return None
        return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


# config.model_type -> adapter. Types not listed are refused (see `adapter_for`).
ADAPTERS: dict[str, FamilyAdapter] = {
    # vision-language models
    "qwen2_vl": FamilyAdapter(name="qwen2_vl", layout=PRE_NORM, video_mode="native", positions_from_mask=False,
                              max_video_frames=8, search_budget=QWEN_SEARCH_BUDGET),
    "qwen2_5_vl": FamilyAdapter(name="qwen2_5_vl", layout=PRE_NORM, video_mode="native", positions_from_mask=False,
                                max_video_frames=8, search_budget=QWEN_SEARCH_BUDGET),
    "idefics3": FamilyAdapter(name="idefics3", nested_images=True, max_video_frames=4,
                              splits_images=True, search_budget=IDEFICS_SEARCH_BUDGET),
    "smolvlm": FamilyAdapter(name="smolvlm", nested_images=True, max_video_frames=4,
                             splits_images=True, search_budget=IDEFICS_SEARCH_BUDGET),
    "llava": FamilyAdapter(name="llava", max_video_frames=2),
    "gemma3": FamilyAdapter(name="gemma3", layout=GEMMA_POST_NORM, nested_images=True, max_video_frames=4),
    # text-only language models (also the language models inside LLaVA / Idefics3 / SmolVLM)
    "llama": FamilyAdapter(name="llama", layout=PRE_NORM),
    "mistral": FamilyAdapter(name="mistral", layout=PRE_NORM),
    "qwen2": FamilyAdapter(name="qwen2", layout=PRE_NORM),
    "qwen3": FamilyAdapter(name="qwen3", layout=PRE_NORM),
    "gemma2": FamilyAdapter(name="gemma2", layout=GEMMA_POST_NORM),
    "gemma3_text": FamilyAdapter(name="gemma3_text", layout=GEMMA_POST_NORM),
    "olmo2": FamilyAdapter(name="olmo2", layout=OLMO2_POST_NORM),
}


def _text_types() -> list[str]:
    return [name for name, adapter in ADAPTERS.items() if adapter.layout is not None]


def adapter_for(model_type: str) -> FamilyAdapter:
    """The adapter of `config.model_type`; ModelLoadError naming the type for unlisted families."""
    try:
        return ADAPTERS[model_type]
    except KeyError:
        raise ModelLoadError(
            f"model type {model_type!r} is not supported: FreeRet reads embeddings from inside the decoder and "
            f"only knows where they are for {', '.join(ADAPTERS)}. Supported layouts: {supported_layouts()}"
        ) from None
