"""The prompt table: explicit priors per item kind, identical task alignment on both sides."""

from __future__ import annotations

import pytest

from freeret_rag.items import ITEM_KINDS
from freeret_rag.prompts import NOISE_LINE, TASK_LINE, embed_instruction, rerank_question


@pytest.mark.parametrize("kind, modality", [("text", "the text"), ("image", "the image"),
                                            ("pdf_page", "the document page"), ("video_segment", "the video frames"),
                                            ("query", "the query")])
def test_each_kind_gets_its_own_grounding_and_the_shared_priors(kind, modality):
    instruction = embed_instruction(kind)
    lines = instruction.splitlines()
    assert lines[0] == TASK_LINE  # task alignment, same line for queries and candidates
    assert lines[1].startswith(f"Capture the semantics of {modality}. Favor ")
    assert lines[2] == NOISE_LINE
    assert lines[3].startswith("Based on ") and lines[3].endswith("output one word:")


def test_groundings_differ_between_kinds():
    assert len({embed_instruction(kind).splitlines()[1] for kind in [*ITEM_KINDS, "query"]}) == len(ITEM_KINDS) + 1


def test_priors_off_is_the_e5v_summary_prompt():
    assert embed_instruction("image", priors=False) == "Summarize above image in one word:"
    assert TASK_LINE not in embed_instruction("text", priors=False)


def test_rerank_question_is_neutral_lettered_choice():
    text = rerank_question("red beetle", "image", "")
    assert "A. The candidate fully matches the query." in text
    assert "B. The candidate does not match or only partially matches the query." in text
    swapped = rerank_question("red beetle", "image", "", swap=True)
    assert "A. The candidate does not match" in swapped and "B. The candidate fully matches" in swapped


# -- the rendered prompt: chat template + generation prompt, written out by hand per template --
RENDERED_BY_HAND = {
    "llama": ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
              "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"),
    "qwen2_vl": ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                 "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>hello<|im_end|>\n"
                 "<|im_start|>assistant\n"),
    "smolvlm": "<|im_start|>User:<image>hello<end_of_utterance>\nAssistant:",
    "llava": "USER: <image>\nhello ASSISTANT:",
    "gemma3": "<bos><start_of_turn>user\n<start_of_image>hello<end_of_turn>\n<start_of_turn>model\n",
    "olmo2": "<|endoftext|><|user|>\nhello\n<|assistant|>\n",
}


@pytest.mark.parametrize("family", list(RENDERED_BY_HAND))
def test_rendered_prompt_ends_with_the_generation_prompt(family, tiny_engine):
    from PIL import Image

    from freeret_rag.inputs import Prompt, render

    engine = tiny_engine(family)
    images = [Image.new("RGB", (32, 32))] if "image" in engine.capabilities else []
    assert render(engine.lm, Prompt(text="hello", images=images)) == RENDERED_BY_HAND[family]


def test_encoded_prompt_is_the_rendered_text_tokenized(tiny_engine):
    """What reaches the model: the hand-written prompt, tokenized by the tokenizer directly."""
    from freeret_rag.inputs import Prompt, encode

    engine = tiny_engine("llama")
    ids = engine.lm.tokenizer(RENDERED_BY_HAND["llama"], add_special_tokens=False)["input_ids"]
    assert encode(engine.lm, [Prompt(text="hello")])["input_ids"][0].tolist() == ids


# -- guard: prompt wording and PROMPT_VERSION change together --------------------------------
# Update both lines together, after bumping PROMPT_VERSION in freeret_rag/prompts.py.
RECORDED_VERSION = "freeret-p1"
RECORDED_SHA256 = "1cbe3327387845c4a69c971fe4db69671934084b623a9042b8a4be9116fda090"


def prompt_table() -> str:
    import json

    from freeret_rag import prompts

    table = {
        "embed": {kind: {str(priors): embed_instruction(kind, priors) for priors in (True, False)}
                  for kind in [*ITEM_KINDS, "query"]},
        "rerank": {f"{framing}/{swap}": rerank_question("red beetle", "image", "A ladybird on a leaf.", framing, swap)
                   for framing in ("choice", "yesno") for swap in (False, True)},
        "rerank_labels": prompts.RERANK_LABELS,
        "answer_system": prompts.ANSWER_SYSTEM,
        "rewrite": prompts.REWRITE_TEMPLATE,
    }
    return json.dumps(table, sort_keys=True, ensure_ascii=False)


def test_prompt_changes_come_with_a_new_prompt_version():
    import hashlib

    from freeret_rag.prompts import PROMPT_VERSION

    digest = hashlib.sha256(prompt_table().encode()).hexdigest()
    if PROMPT_VERSION == RECORDED_VERSION:
        assert digest == RECORDED_SHA256, (
            f"prompts changed: bump PROMPT_VERSION and update the hash (RECORDED_VERSION, RECORDED_SHA256 = "
            f"the new version, {digest!r})")
    else:
        pytest.fail(f"PROMPT_VERSION is {PROMPT_VERSION!r}: set RECORDED_VERSION to it and RECORDED_SHA256 to {digest!r}")
