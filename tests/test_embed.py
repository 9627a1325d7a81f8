"""Stage 1: the vector is h_attn_L at the last prompt position, computed without the model's tail."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from freeret_rag import PROMPT_VERSION, Item, ModelLoadError, Query, UnsupportedModalityError
from freeret_rag.embed import attention_output_at_last_position, embed_prompts, embed_prompts_with_words
from freeret_rag.inputs import encode

VLM_FAMILIES = ["qwen2_vl", "qwen2_5_vl", "idefics3", "smolvlm", "llava", "gemma3"]
ALL_FAMILIES = [*VLM_FAMILIES, "llama", "gemma3_text", "olmo2"]

# How each family's decoder layer adds its attention block to the residual stream, written from
# transformers' <Family>DecoderLayer.forward (not from the engine's adapter table):
#   "pre":  h = x + self_attn(input_layernorm(x))                       (Llama, Qwen2-VL, ...)
#   "post": h = x + post_attention_layernorm(self_attn(norm?(x)))      (Gemma 2/3, OLMo 2)
ATTENTION_BLOCK = {"qwen2_vl": "pre", "qwen2_5_vl": "pre", "idefics3": "pre", "smolvlm": "pre", "llava": "pre",
                   "llama": "pre", "gemma3": "post", "gemma3_text": "post", "olmo2": "post"}


def sample_items(vision: bool) -> list[Item]:
    items = [
        Item("text", text="a red ladybird sits on a green leaf in the garden", item_id="t1"),
        Item("text", text="invoice total due", item_id="t2"),
    ]
    if vision:
        items += [
            Item("image", images=(Image.new("RGB", (64, 48), (200, 30, 30)),), text="LadyBird", item_id="i1"),
            Item("pdf_page", images=(Image.new("RGB", (40, 56), (240, 240, 240)),), text="Chapter 1 Setup", page=1,
                 item_id="p1"),
            Item("video_segment", images=tuple(Image.new("RGB", (48, 48), (i * 50, 90, 40)) for i in range(4)),
                 t_start=0.0, t_end=3.0, item_id="v1"),
        ]
    return items


def last_layer(engine) -> torch.nn.Module:
    return engine.lm.model.get_decoder().layers[-1]


def independent_attention_output(engine, family: str, item: Item) -> tuple[torch.Tensor, torch.Tensor]:
    """(h_attn_L, attention block output) at the last position, recomputed another way: a full
    normal forward; the last layer's input (hidden_states[-2]) plus its attention block's
    contribution, from a hook on self_attn's output and, for post-norm layers, the
    post-attention norm called by hand."""
    lm = engine.lm
    inputs = encode(lm, [engine._item_prompt(item)])
    layer = last_layer(engine)
    attention_out: list[torch.Tensor] = []
    handle = layer.self_attn.register_forward_hook(lambda _m, _a, out: attention_out.append(out[0]))
    try:
        with torch.no_grad():
            outputs = lm.model(**inputs, output_hidden_states=True)
            block = attention_out[0][:, -1]
            if ATTENTION_BLOCK[family] == "post":
                block = layer.post_attention_layernorm(block)
    finally:
        handle.remove()
    return (outputs.hidden_states[-2][:, -1] + block)[0].float(), block[0].float()


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0).item()


def raw_read_out(engine, item: Item) -> torch.Tensor:
    with torch.no_grad():
        return attention_output_at_last_position(engine.lm, encode(engine.lm, [engine._item_prompt(item)]))[0].float()


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_embedding_is_attention_output_of_last_layer_at_last_position(family, tiny_engine):
    engine = tiny_engine(family)
    for item in sample_items("image" in engine.capabilities):
        expected, _ = independent_attention_output(engine, family, item)
        raw = raw_read_out(engine, item)
        assert cosine(raw, expected) > 0.9999, (family, item.kind)
        torch.testing.assert_close(raw, expected, atol=1e-4, rtol=1e-4)
        vector = engine.embed([item])[0]
        np.testing.assert_allclose(vector, torch.nn.functional.normalize(expected, dim=0).numpy(), atol=1e-5,
                                   err_msg=f"{family} {item.kind}")
        assert abs(np.linalg.norm(vector) - 1.0) < 1e-5


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_read_out_is_the_residual_stream_not_a_norm_output_nor_the_bare_attention(family, tiny_engine):
    """Every tiny norm has random weights, so each wrong side of a norm points elsewhere."""
    engine = tiny_engine(family)
    item = sample_items(False)[0]
    expected, block = independent_attention_output(engine, family, item)
    raw = raw_read_out(engine, item)
    layer = last_layer(engine)
    with torch.no_grad():
        wrong = {"attention block alone": block}
        for name in ("post_attention_layernorm", "pre_feedforward_layernorm"):
            if hasattr(layer, name):  # the norm after the residual add, or (post-norm) on the attention output
                wrong[f"{name}(h_attn)"] = getattr(layer, name)(expected)
    for what, vector in wrong.items():
        assert cosine(raw, vector) < 0.999, (family, what)
    assert cosine(raw, expected) > 0.9999


def test_norm_weights_of_tiny_models_are_not_trivial(tiny_engine):
    for family in ("llama", "gemma3", "olmo2"):
        for name, module in tiny_engine(family).lm.model.named_modules():
            if type(module).__name__.endswith("RMSNorm"):
                weight = module.weight.detach()
                assert weight.std() > 0.1, (family, name)  # not the constructors' constant 1 (or 0 for Gemma)


@pytest.mark.parametrize("family", ["qwen2_vl", "llama", "gemma3_text", "olmo2"])
def test_embedding_differs_from_final_hidden_state(family, tiny_engine):
    engine = tiny_engine(family)
    item = sample_items(False)[0]
    attn = engine.embed([item])[0]
    inputs = encode(engine.lm, [engine._item_prompt(item)])
    with torch.no_grad():
        final = engine.lm.model(**inputs, output_hidden_states=True).hidden_states[-1][0, -1]
    final = torch.nn.functional.normalize(final.float(), dim=-1).numpy()
    assert not np.allclose(attn, final, atol=1e-3)


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_tail_of_the_model_is_never_computed(family, tiny_engine):
    engine = tiny_engine(family)
    lm = engine.lm
    calls: list[str] = []
    watched = {
        "lm_head": lm.model.get_output_embeddings(),
        "last_mlp": last_layer(engine).mlp,
        "last_post_feedforward_norm": getattr(last_layer(engine), "post_feedforward_layernorm", torch.nn.Identity()),
        "final_norm": lm.model.get_decoder().norm,
    }
    handles = [module.register_forward_hook(lambda *_a, name=name: calls.append(name)) for name, module in watched.items()]
    try:
        engine.embed(sample_items("image" in engine.capabilities))
        engine.embed_query("red beetle")
    finally:
        for handle in handles:
            handle.remove()
    assert calls == []


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_batched_and_single_embeddings_agree(family, tiny_engine):
    """Left padding and position ids are right: a padded row equals the same item alone."""
    engine = tiny_engine(family)
    items = sample_items("image" in engine.capabilities) + [Item("text", text="short", item_id="t3")]
    batched = engine.embed(items, batch_size=8)
    single = np.stack([engine.embed([item])[0] for item in items])
    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_query_with_image_embeds_on_vision_model(tiny_engine):
    engine = tiny_engine("qwen2_vl")
    with_image = engine.embed_query(Query("red beetle", image=Image.new("RGB", (32, 32), (250, 0, 0))))
    text_only = engine.embed_query("red beetle")
    assert with_image.shape == text_only.shape and not np.allclose(with_image, text_only)


def test_text_only_model_refuses_images_with_clear_error(tiny_engine):
    engine = tiny_engine("llama")
    assert engine.capabilities == frozenset({"text"})
    image_item = sample_items(True)[2]
    assert not engine.supports(image_item)
    with pytest.raises(UnsupportedModalityError, match="text-only"):
        engine.embed([image_item])
    with pytest.raises(UnsupportedModalityError, match="text-only"):
        engine.embed_query(Query("what is this?", image=Image.new("RGB", (8, 8))))
    # The text of a page still embeds once its image is dropped.
    assert engine.embed([sample_items(True)[3].without_images()]).shape == (1, engine.lm.hidden_size)


@pytest.mark.parametrize("point", ["final", "mean"])
def test_ablation_points_give_unit_vectors_that_differ_from_the_method(point, tiny_model_dirs):
    from freeret_rag import FreeRet

    items = sample_items(False)
    method = FreeRet.from_pretrained(tiny_model_dirs["llama"], dtype="float32").embed(items)
    ablated_engine = FreeRet.from_pretrained(tiny_model_dirs["llama"], dtype="float32", embed_point=point)
    ablated = ablated_engine.embed(items)
    assert np.allclose(np.linalg.norm(ablated, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(method, ablated, atol=1e-3)
    assert ablated_engine.prompt_version != PROMPT_VERSION  # vectors of another space never mix


def test_unknown_model_types_are_refused_with_the_supported_layouts(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    from freeret_rag import FreeRet
    from freeret_rag.models import adapter_for
    from tiny_models import build_tokenizer

    with pytest.raises(ModelLoadError, match="'falcon' is not supported") as error:
        adapter_for("falcon")
    assert "pre-norm" in str(error.value) and "post-norm-gemma" in str(error.value)
    # GPT-2 is pre-norm too, but with other module names: refused, not guessed.
    tokenizer = build_tokenizer(["<|endoftext|>"], eos="<|endoftext|>", pad="<|endoftext|>")
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=len(tokenizer))).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="'gpt2' is not supported"):
        FreeRet.from_pretrained(tmp_path, dtype="float32")


def test_a_layer_of_another_shape_is_refused(tiny_engine):
    """A listed layout is checked against the loaded layer: a pre-norm adapter on an OLMo 2 layer fails."""
    from freeret_rag.models import ADAPTERS

    olmo2 = tiny_engine("olmo2").lm.model
    assert ADAPTERS["olmo2"].layer_layout(olmo2).name == "post-norm-olmo2"
    for wrong in ("llama", "gemma3_text"):
        with pytest.raises(ModelLoadError, match="does not have the .* shape"):
            ADAPTERS[wrong].layer_layout(olmo2)


def test_wrapper_families_take_the_layout_of_their_language_model(tiny_engine):
    engine = tiny_engine("llava")
    assert engine.lm.adapter.layout is None
    assert engine.lm.adapter.layer_layout(engine.lm.model).name == "pre-norm"
    text_config = engine.lm.model.config.get_text_config()
    original = text_config.model_type
    try:
        text_config.model_type = "falcon"
        with pytest.raises(ModelLoadError, match="'falcon'.*Supported layouts"):
            engine.lm.adapter.layer_layout(engine.lm.model)
    finally:
        text_config.model_type = original


def words_by_brute_force(tokenizer, logits: torch.Tensor, k: int) -> dict[str, float]:
    """Top-k words from full-vocabulary logits: softmax, decode every token alone, merge by word."""
    probs = torch.softmax(logits.double(), dim=-1)
    special = set(tokenizer.all_special_ids)
    per_word: dict[str, float] = {}
    for token_id in range(min(len(tokenizer), probs.shape[0])):
        word = tokenizer.decode([token_id]).strip().lower()
        if token_id in special or not ((word.isalpha() and len(word) >= 2) or word.isdecimal()):
            continue
        per_word[word] = per_word.get(word, 0.0) + probs[token_id].item()
    return dict(sorted(per_word.items(), key=lambda kv: -kv[1])[:k])


@pytest.mark.parametrize("family", ["llama", "gemma3_text", "olmo2", "qwen2_vl", "gemma3", "llava"])
def test_words_are_the_next_token_distribution_of_a_normal_forward(family, tiny_engine):
    """Oracle: model(**inputs).logits[:, -1] of a full forward (softcap included for Gemma 3 text)."""
    engine = tiny_engine(family)
    items = sample_items("image" in engine.capabilities)[:3]
    prompts = [engine._item_prompt(item) for item in items]
    vectors, words = embed_prompts_with_words(engine.lm, prompts, batch_size=2, top_words=12)
    np.testing.assert_allclose(vectors, embed_prompts(engine.lm, prompts, batch_size=2), atol=1e-6)
    for prompt, row in zip(prompts, words):
        with torch.no_grad():
            logits = engine.lm.model(**encode(engine.lm, [prompt])).logits[0, -1]
        expected = words_by_brute_force(engine.lm.tokenizer, logits, 20)  # 20: room for near-ties at the cut
        assert len(row) == 12
        for word, probability in row:
            assert probability == pytest.approx(expected[word], rel=1e-4), (family, word)
        np.testing.assert_allclose([p for _, p in row], list(expected.values())[:12], rtol=1e-4)
        assert [p for _, p in row] == sorted((p for _, p in row), reverse=True)
        top_token = engine.lm.tokenizer.decode([int(logits.argmax())]).strip().lower()
        if top_token in expected:  # the most probable token, when it is a word, is the first word
            assert row[0][0] == top_token


def test_words_merge_tokens_that_decode_to_the_same_word(tiny_engine):
    engine = tiny_engine("llama")
    tokenizer = engine.lm.tokenizer
    same = [tokenizer.convert_tokens_to_ids(t) for t in ("Ġthe", "The", "ĠThe")]
    assert len(set(same)) == 3 and tokenizer.unk_token_id not in same
    vector, words = engine.embed_query_with_words("red beetle", top_words=1000)
    assert len({w for w, _ in words}) == len(words)  # each word once
    logits = torch.full((1, engine.lm.model.get_output_embeddings().weight.shape[0]), -30.0)
    logits[0, same] = torch.tensor([3.0, 2.0, 1.0])
    from freeret_rag.embed import words_from_logits

    (row,) = words_from_logits(tokenizer, logits, 3)
    probs = torch.softmax(logits[0].double(), -1)
    assert row[0][0] == "the" and row[0][1] == pytest.approx(probs[same].sum().item(), abs=1e-6)
    np.testing.assert_allclose(vector, engine.embed_query("red beetle"), atol=1e-6)


def test_engine_embed_with_words_matches_embed(tiny_engine):
    engine = tiny_engine("qwen2_vl")
    items = sample_items(True)
    vectors, words = engine.embed_with_words(items, top_words=5)
    np.testing.assert_allclose(vectors, engine.embed(items), atol=1e-6)
    assert len(words) == len(items) and all(len(row) == 5 for row in words)
    with pytest.raises(ValueError, match="top_words"):
        engine.embed_with_words(items, top_words=0)


def test_words_of_an_ablation_point_come_from_the_full_model(tiny_model_dirs):
    from freeret_rag import FreeRet

    engine = FreeRet.from_pretrained(tiny_model_dirs["olmo2"], dtype="float32", embed_point="mean")
    item = sample_items(False)[0]
    vectors, (row,) = engine.embed_with_words([item], top_words=8)
    np.testing.assert_allclose(vectors, engine.embed([item]), atol=1e-6)
    with torch.no_grad():
        logits = engine.lm.model(**encode(engine.lm, [engine._item_prompt(item)])).logits[0, -1]
    expected = words_by_brute_force(engine.lm.tokenizer, logits, 20)
    np.testing.assert_allclose([p for _, p in row], list(expected.values())[:8], rtol=1e-4)
