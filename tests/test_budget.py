"""Visual token budgets per stage, rerank by text, adaptive K, the query cache and batch prefetch.

Expected token counts are worked out by hand from each tiny processor's geometry (tile size,
patch size, pixel shuffle / 2 x 2 merge), and the image token ids are read from the tokenizer,
never from the engine's helpers.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image

from freeret_rag import FreeRet, Item, Query
from freeret_rag.inputs import Prompt, batches, encode, encoded_batches
from freeret_rag.models import FULL_BUDGET, VisualBudget, adapter_for

PAGE_TEXT = ("Chapter 2 describes how the installer copies the shared database into the system folder "
             "and how each application registers the formats it reads. ") * 4


def _splitting_engine(tiny_engine, family: str) -> FreeRet:
    """The tiny Idefics3 / SmolVLM engine with image splitting on, as the real processors have it:
    32 px tiles, images up to 64 px, so a 64 x 64 image is 2 x 2 tiles plus one global view."""
    base = tiny_engine(family)
    lm = copy.copy(base.lm)
    lm.processor = copy.deepcopy(base.lm.processor)
    lm.processor.image_processor.do_image_splitting = True
    lm.processor.image_processor.size = {"longest_edge": 64}
    return FreeRet(lm, base.settings)


def _image_tokens(engine: FreeRet, prompt: Prompt, budget: VisualBudget, token: str) -> int:
    token_id = engine.lm.tokenizer.convert_tokens_to_ids(token)
    ids = encode(engine.lm, [prompt], engine.settings.max_image_side, budget=budget)["input_ids"]
    return int((ids == token_id).sum())


@pytest.mark.parametrize("family", ["idefics3", "smolvlm"])
def test_search_stages_see_one_view_answers_see_every_tile(tiny_engine, family):
    engine = _splitting_engine(tiny_engine, family)
    prompt = Prompt(text="what is shown?", images=[Image.new("RGB", (64, 64), (200, 30, 30))])
    # one 32 px view: (32 / 8 patch)^2 = 16 patches, pixel shuffle 2 -> 4 tokens; split: 5 views
    assert _image_tokens(engine, prompt, engine.budget("embed"), "<image>") == 4
    assert _image_tokens(engine, prompt, engine.budget("rerank"), "<image>") == 4
    # answers: full resolution where asked (and by default on a GPU); on a CPU the search budget
    full_answers = FreeRet(engine.lm, engine.settings.__class__(answer_budget="full"))
    assert _image_tokens(full_answers, prompt, full_answers.budget("answer"), "<image>") == 5 * 4
    assert engine.lm.device.type == "cpu"
    assert _image_tokens(engine, prompt, engine.budget("answer"), "<image>") == 4
    item = Item("image", images=(Image.new("RGB", (64, 64), (200, 30, 30)),), item_id="i")
    assert engine.visual_tokens(item, "embed") == 4
    assert full_answers.visual_tokens(item, "answer") == 20


def test_answers_are_encoded_with_the_answer_budget(tiny_engine, monkeypatch):
    import freeret_rag.answer as answering

    engine = FreeRet(_splitting_engine(tiny_engine, "smolvlm").lm,
                     tiny_engine("smolvlm").settings.__class__(answer_budget="full", max_new_tokens=2))
    seen = []
    real = answering.encode
    monkeypatch.setattr(answering, "encode", lambda *a, **k: seen.append(k.get("budget")) or real(*a, **k))
    page = Item("pdf_page", images=(Image.new("RGB", (64, 64), (9, 9, 9)),), text="p", page=1, item_id="p")
    engine.answer("what is on the page?", [page])
    assert seen == [FULL_BUDGET]
    seen.clear()
    cpu = FreeRet(engine.lm, engine.settings.__class__(max_new_tokens=2))
    cpu.answer("what is on the page?", [page])
    assert seen == [VisualBudget(split=False)]


def test_qwen_pixel_cap_bounds_tokens(tiny_engine):
    base = tiny_engine("qwen2_vl")
    capped = FreeRet(base.lm, base.settings.__class__(search_budget=VisualBudget(max_pixels=16 * 28 * 28),
                                                      answer_budget="full"))
    image = Image.new("RGB", (224, 224), (20, 200, 30))
    prompt = Prompt(text="x", images=[image])
    # Qwen2-VL: one token per 28 x 28 px; 224^2 px = 64 tokens (the tiny processor's maximum),
    # capped at 16 * 28^2 px the image becomes 112 x 112 = 16 tokens
    assert _image_tokens(capped, prompt, capped.budget("answer"), "<|image_pad|>") == 64
    assert _image_tokens(capped, prompt, capped.budget("embed"), "<|image_pad|>") == 16


def test_pixel_cap_embeds_like_a_smaller_picture(tiny_engine):
    """Another route to the same vector: shrink the picture by hand and embed it at full budget."""
    base = tiny_engine("qwen2_vl")
    settings = base.settings.__class__
    capped = FreeRet(base.lm, settings(search_budget=VisualBudget(max_pixels=16 * 28 * 28)))
    full = FreeRet(base.lm, settings(visual_budget="full"))
    rng = np.random.default_rng(0)
    picture = Image.fromarray(rng.integers(0, 255, (224, 224, 3), dtype=np.uint8))
    small = picture.resize((112, 112), Image.LANCZOS)
    by_budget = capped.embed([Item("image", images=(picture,), item_id="a")])[0]
    by_hand = full.embed([Item("image", images=(small,), item_id="a")])[0]
    unbounded = full.embed([Item("image", images=(picture,), item_id="a")])[0]
    assert np.allclose(by_budget, by_hand, atol=1e-5)
    assert not np.allclose(by_budget, unbounded, atol=1e-3)


def test_no_split_embeds_like_a_processor_that_never_splits(tiny_engine):
    engine = _splitting_engine(tiny_engine, "smolvlm")
    never = copy.copy(engine.lm)
    never.processor = copy.deepcopy(engine.lm.processor)
    never.processor.image_processor.do_image_splitting = False
    rng = np.random.default_rng(1)
    item = Item("image", images=(Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)),), item_id="a")
    budgeted = engine.embed([item])[0]
    reference = FreeRet(never, engine.settings.__class__(visual_budget="full")).embed([item])[0]
    split = FreeRet(engine.lm, engine.settings.__class__(visual_budget="full")).embed([item])[0]
    assert np.allclose(budgeted, reference, atol=1e-5)
    assert not np.allclose(budgeted, split, atol=1e-3)


def test_budget_is_part_of_the_embedding_space(tiny_engine):
    qwen, smol, llama = tiny_engine("qwen2_vl"), tiny_engine("smolvlm"), tiny_engine("llama")
    assert qwen.prompt_version.endswith("+vis-px200704")  # 448 x 448
    assert smol.prompt_version.endswith("+vis-nosplit")
    assert "+vis" not in llama.prompt_version  # a text model's vectors do not depend on pictures
    full = FreeRet(qwen.lm, qwen.settings.__class__(visual_budget="full"))
    assert "+vis" not in full.prompt_version  # what every index before budgets was built with


def test_families_without_splitting_refuse_a_split_budget():
    with pytest.raises(ValueError, match="no image splitting"):
        adapter_for("qwen2_vl").processor_options(VisualBudget(split=False))
    assert adapter_for("smolvlm").processor_options(FULL_BUDGET) == {}
    with pytest.raises(ValueError):
        VisualBudget(max_pixels=10)
    with pytest.raises(ValueError):
        adapter_for("llava").budget("index")


def test_pages_with_a_text_layer_are_reranked_by_their_text(tiny_engine):
    engine = tiny_engine("qwen2_vl")
    picture = (Image.new("RGB", (56, 56), (240, 240, 240)),)
    good = Item("pdf_page", images=picture, text=PAGE_TEXT, page=2, item_id="good")
    scanned = Item("pdf_page", images=picture, text="2", page=3, item_id="scan")
    photo = Item("image", images=picture, text=PAGE_TEXT, item_id="photo")
    assert engine._rerank_prompt(Query("installer"), good, False).images == []
    assert len(engine._rerank_prompt(Query("installer"), scanned, False).images) == 1
    assert len(engine._rerank_prompt(Query("installer"), photo, False).images) == 1
    pictures = FreeRet(engine.lm, engine.settings.__class__(rerank_text_pages=False))
    assert len(pictures._rerank_prompt(Query("installer"), good, False).images) == 1


def test_rerank_k_follows_the_measured_time_per_pair(tiny_engine):
    base = tiny_engine("qwen2_vl")
    engine = FreeRet(base.lm, base.settings.__class__(rerank_seconds=1e-9, min_rerank_k=2))
    assert engine.affordable_rerank_k(10) == 10  # nothing measured yet
    items = [Item("text", text=f"passage {i} about gardens", item_id=str(i)) for i in range(4)]
    engine.rerank("gardens", items)
    assert engine.rerank_pair_seconds > 0
    assert engine.affordable_rerank_k(10) == 2  # a budget of ~0 s still reranks the minimum
    roomy = FreeRet(base.lm, base.settings.__class__(rerank_seconds=1e9))
    roomy.rerank("gardens", items)
    assert roomy.affordable_rerank_k(10) == 10
    assert FreeRet(base.lm, base.settings.__class__(rerank_seconds=None)).affordable_rerank_k(7) == 7


def test_query_vectors_are_cached_across_turns(tiny_engine):
    base = tiny_engine("qwen2_vl")
    engine = FreeRet(base.lm, base.settings.__class__(query_cache=2))
    calls = []
    handle = engine.lm.model.get_decoder().layers[0].register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        first = engine.embed_query("red ladybird")
        again = engine.embed_query("red ladybird")
        assert len(calls) == 1 and np.array_equal(first, again)
        vector, words = engine.embed_query_with_words("red ladybird", top_words=5)
        assert len(calls) == 2  # words are another read-out: computed once, then cached too
        assert engine.embed_query_with_words("red ladybird", top_words=5)[1] == words and len(calls) == 2
        engine.embed_query("blue sky")  # the cache holds 2: "red ladybird" (plain) is pushed out
        engine.embed_query("red ladybird")
        assert len(calls) == 4
        again[0] = 99.0  # callers get copies
        assert engine.embed_query("red ladybird")[0] != 99.0
    finally:
        handle.remove()
    uncached = FreeRet(base.lm, base.settings.__class__(query_cache=0))
    assert np.allclose(uncached.embed_query("red ladybird"), first, atol=1e-6)


def test_prefetched_batches_equal_sequential_encoding(tiny_engine):
    engine = tiny_engine("qwen2_vl")
    prompts = [Prompt(text="word " * (i + 1), images=[Image.new("RGB", (56, 56), (i * 20, 0, 0))] * (i % 2))
               for i in range(7)]
    sequential = [(indices, encode(engine.lm, chunk)) for indices, chunk in batches(prompts, 2)]
    for workers in (1, 3):
        prefetched = list(encoded_batches(engine.lm, prompts, 2, workers=workers))
        assert [indices for indices, _ in prefetched] == [indices for indices, _ in sequential]
        for (_, a), (_, b) in zip(prefetched, sequential):
            assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)
