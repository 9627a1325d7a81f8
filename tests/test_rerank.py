"""Stage 2: p(A) from the two label logits only, batched."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from freeret_rag import FreeRet, Hit, Item, Query
from freeret_rag.inputs import encode
from freeret_rag.prompts import RERANK_LABELS
from freeret_rag.rerank import label_token_id

CANDIDATES = [
    Item("text", text="The ladybird is a small red beetle with black spots.", item_id="a"),
    Item("text", text="Invoices are due thirty days after issue.", item_id="b"),
    Item("image", images=(Image.new("RGB", (48, 48), (220, 20, 20)),), text="LadyBird", item_id="c"),
]


def by_hand(engine: FreeRet, query: Query, item: Item) -> float:
    """Full forward, full-vocabulary logits at the last position, softmax over the two labels."""
    inputs = encode(engine.lm, [engine._rerank_prompt(query, item, swap=False)])
    with torch.no_grad():
        logits = engine.lm.model(**inputs).logits[0, -1]
    labels = RERANK_LABELS[engine.settings.rerank_framing]
    pair = logits[[label_token_id(engine.lm.tokenizer, label) for label in labels]]
    return torch.softmax(pair.float(), dim=-1)[0].item()


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl", "idefics3", "llava", "llama"])
def test_rerank_score_is_softmax_over_the_two_label_logits(family, tiny_engine):
    engine = tiny_engine(family)
    candidates = [c for c in CANDIDATES if engine.supports(c)]
    query = Query("red beetle with spots")
    reranked = engine.rerank(query, [Hit(c, dense_score=0.5) for c in candidates])
    by_id = {hit.item.item_id: hit for hit in reranked}
    for item in candidates:
        assert by_id[item.item_id].rerank_score == pytest.approx(by_hand(engine, query, item), abs=1e-5)
        assert by_id[item.item_id].dense_score == 0.5  # first-stage score is kept beside the rerank score
    scores = [hit.rerank_score for hit in reranked]
    assert scores == sorted(scores, reverse=True)


def test_full_vocabulary_is_never_projected(tiny_engine):
    engine = tiny_engine("qwen2_vl")
    calls = []
    handle = engine.lm.model.get_output_embeddings().register_forward_hook(lambda *_: calls.append(1))
    try:
        engine.rerank("red beetle", [Hit(c) for c in CANDIDATES])
    finally:
        handle.remove()
    assert calls == []


def test_ten_candidates_are_scored_in_one_batched_forward(tiny_engine):
    engine = tiny_engine("llama")
    forwards = []
    first_layer = engine.lm.adapter.decoder_layers(engine.lm.model)[0]
    handle = first_layer.register_forward_hook(lambda _m, args, _o: forwards.append(args[0].shape[0] if args else None))
    try:
        hits = [Hit(Item("text", text=f"candidate number {i} " * (i + 1), item_id=str(i))) for i in range(10)]
        reranked = engine.rerank("candidate number 3", hits)  # default batch covers K=10
    finally:
        handle.remove()
    assert len(forwards) == 1 and len(reranked) == 10
    single = engine.rerank("candidate number 3", hits[:1])[0].rerank_score
    assert {h.item.item_id: h.rerank_score for h in reranked}["0"] == pytest.approx(single, abs=1e-5)


def test_yes_no_framing_and_swapped_options_change_the_prompt_and_score(tiny_model_dirs):
    query, hits = "red beetle", [Hit(CANDIDATES[0])]
    choice = FreeRet.from_pretrained(tiny_model_dirs["llama"], dtype="float32")
    yesno = FreeRet.from_pretrained(tiny_model_dirs["llama"], dtype="float32", rerank_framing="yesno")
    swapped = FreeRet.from_pretrained(tiny_model_dirs["llama"], dtype="float32", rerank_swap=True)
    scores = [engine.rerank(query, hits)[0].rerank_score for engine in (choice, yesno, swapped)]
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert len({round(s, 6) for s in scores}) == 3
    assert "Yes or No" in yesno._rerank_prompt(Query(query), CANDIDATES[0], False).text


def test_rerank_of_nothing_is_nothing_and_bare_items_are_accepted(tiny_engine):
    engine = tiny_engine("llama")
    assert engine.rerank("anything", []) == []
    reranked = engine.rerank("red beetle", CANDIDATES[:2])
    assert [type(hit) for hit in reranked] == [Hit, Hit] and reranked[0].dense_score is None
