"""Stage 1: the vector is h_attn_L at the last prompt position, computed without the model's tail."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from freeret_rag import PROMPT_VERSION, Item, Query, UnsupportedModalityError
from freeret_rag.inputs import encode

VLM_FAMILIES = ["qwen2_vl", "qwen2_5_vl", "idefics3", "smolvlm", "llava"]
ALL_FAMILIES = [*VLM_FAMILIES, "llama"]


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


def independent_attention_output(engine, item: Item) -> torch.Tensor:
    """h_attn_L recomputed another way: full forward, input of the last layer + its attention output."""
    lm = engine.lm
    inputs = encode(lm, [engine._item_prompt(item)])
    layer = lm.adapter.decoder_layers(lm.model)[-1]
    attention_out: list[torch.Tensor] = []
    handle = layer.self_attn.register_forward_hook(lambda _m, _a, out: attention_out.append(out[0]))
    try:
        with torch.no_grad():
            outputs = lm.model(**inputs, output_hidden_states=True)
    finally:
        handle.remove()
    expected = outputs.hidden_states[-2][:, -1] + attention_out[0][:, -1]
    return torch.nn.functional.normalize(expected.float(), dim=-1)[0]


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_embedding_is_attention_output_of_last_layer_at_last_position(family, tiny_engine):
    engine = tiny_engine(family)
    for item in sample_items("image" in engine.capabilities):
        vector = engine.embed([item])[0]
        expected = independent_attention_output(engine, item).numpy()
        np.testing.assert_allclose(vector, expected, atol=1e-5, err_msg=f"{family} {item.kind}")
        assert abs(np.linalg.norm(vector) - 1.0) < 1e-5


@pytest.mark.parametrize("family", ["qwen2_vl", "llama"])
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
        "last_mlp": lm.adapter.last_layer_mlp(lm.model),
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
