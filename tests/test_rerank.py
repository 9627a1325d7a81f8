"""Stage 2: p(A) from the two label logits only, batched."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from freeret_rag import FreeRet, Hit, Item, Query
from freeret_rag.inputs import encode
from freeret_rag.rerank import label_token_ids

# The token each family's model writes first after its generation prompt, read off its chat
# template by hand: Qwen / ChatML / Gemma / OLMo 2 end the prompt with a newline and the reply
# starts with the bare letter; SmolVLM's "Assistant:" and LLaVA's "ASSISTANT:" are followed by
# a space, so the reply's first token is " A" (byte-level BPE spells it "ĠA").
LABEL_TOKENS = {"qwen2_vl": ("A", "B"), "qwen2_5_vl": ("A", "B"), "idefics3": ("ĠA", "ĠB"),
                "smolvlm": ("ĠA", "ĠB"), "llava": ("ĠA", "ĠB"), "gemma3": ("A", "B"), "llama": ("A", "B"),
                "gemma3_text": ("A", "B"), "olmo2": ("A", "B")}

CANDIDATES = [
    Item("text", text="The ladybird is a small red beetle with black spots.", item_id="a"),
    Item("text", text="Invoices are due thirty days after issue.", item_id="b"),
    Item("image", images=(Image.new("RGB", (48, 48), (220, 20, 20)),), text="LadyBird", item_id="c"),
]


def hand_ids(tokenizer, tokens: tuple[str, str]) -> list[int]:
    ids = [tokenizer.convert_tokens_to_ids(token) for token in tokens]
    assert tokenizer.unk_token_id not in ids and None not in ids, tokens
    return ids


def by_hand(engine: FreeRet, family: str, query: Query, item: Item, swap: bool = False) -> float:
    """Full forward, full-vocabulary logits at the last position, softmax over the two hand-picked
    label tokens: p(A) against B, or with `swap` (match written second) p(B) against A."""
    inputs = encode(engine.lm, [engine._rerank_prompt(query, item, swap=swap)])
    with torch.no_grad():
        logits = engine.lm.model(**inputs).logits[0, -1]
    a, b = hand_ids(engine.lm.tokenizer, LABEL_TOKENS[family])
    pair = logits[[b, a] if swap else [a, b]]
    return torch.softmax(pair.float(), dim=-1)[0].item()


@pytest.mark.parametrize("family", list(LABEL_TOKENS))
def test_label_tokens_are_the_first_reply_token_of_the_template(family, tiny_engine):
    engine = tiny_engine(family)
    assert label_token_ids(engine.lm, ("A", "B")) == hand_ids(engine.lm.tokenizer, LABEL_TOKENS[family])


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl", "idefics3", "llava", "gemma3", "llama", "gemma3_text",
                                    "olmo2"])
def test_rerank_score_is_softmax_over_the_two_label_logits(family, tiny_engine):
    engine = tiny_engine(family)
    candidates = [c for c in CANDIDATES if engine.supports(c)]
    query = Query("red beetle with spots")
    reranked = engine.rerank(query, [Hit(c, dense_score=0.5) for c in candidates])
    by_id = {hit.item.item_id: hit for hit in reranked}
    for item in candidates:
        assert by_id[item.item_id].rerank_score == pytest.approx(by_hand(engine, family, query, item), abs=1e-5)
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


@pytest.mark.parametrize("family", ["llama", "idefics3"])
def test_swapped_options_score_the_second_letter(family, tiny_model_dirs):
    """rerank_swap: the mean of p(A vs B) on the A/B prompt and p(B vs A) on the swapped prompt."""
    engine = FreeRet.from_pretrained(tiny_model_dirs[family], dtype="float32", rerank_swap=True)
    query = Query("red beetle with spots")
    for item in CANDIDATES[:2]:
        expected = (by_hand(engine, family, query, item) + by_hand(engine, family, query, item, swap=True)) / 2
        assert engine.rerank(query, [Hit(item)])[0].rerank_score == pytest.approx(expected, abs=1e-5)


def test_labels_with_the_same_first_token_are_refused(tiny_engine):
    engine = tiny_engine("llama")
    assert engine.lm.tokenizer.tokenize("\nA1") == ["Ċ", "A", "1"]  # both labels start with the token "A"
    with pytest.raises(ValueError, match="start with the same token"):
        label_token_ids(engine.lm, ("A1", "A2"))


@pytest.mark.slow
def test_smollm2_labels_in_its_own_template_and_in_smolvlm_s(smollm2_engine):
    """Real SmolLM2 tokenizer: bare "A" after ChatML's "assistant\n", " A" after SmolVLM's "Assistant:"."""
    import copy
    from dataclasses import replace

    from tiny_models import SMOLVLM_TEMPLATE

    lm = smollm2_engine.lm
    tokenizer = lm.tokenizer
    assert label_token_ids(lm, ("A", "B")) == hand_ids(tokenizer, ("A", "B"))
    smolvlm_tokenizer = copy.deepcopy(tokenizer)
    smolvlm_tokenizer.chat_template = SMOLVLM_TEMPLATE
    smolvlm = replace(lm, tokenizer=smolvlm_tokenizer)
    spaced = hand_ids(tokenizer, ("ĠA", "ĠB"))
    assert label_token_ids(smolvlm, ("A", "B")) == spaced
    # What the model does after "Assistant:" on a rerank prompt: the spaced letters carry far more
    # probability than the bare ones, which are noise there.
    engine = FreeRet(smolvlm)
    inputs = encode(smolvlm, [engine._rerank_prompt(Query("When was the Eiffel Tower built?"),
                                                    Item("text", text="The Eiffel Tower was completed in 1889."),
                                                    False)])
    assert smolvlm_tokenizer.decode(inputs["input_ids"][0]).endswith("Assistant:")
    with torch.no_grad():
        probs = torch.softmax(smolvlm.model(**inputs).logits[0, -1].float(), -1)
    bare = probs[hand_ids(tokenizer, ("A", "B"))].sum().item()
    assert probs[spaced].sum().item() > 10 * bare, (probs[spaced], bare)


class MergingTokenizer:
    """Greedy longest-match tokenizer in which a newline merges with the letter after it."""

    vocab = {"x": 0, "\n": 1, "A": 2, "\nA": 3, "B": 4, "\nB": 5}

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
        ids = []
        while text:
            piece = max((p for p in self.vocab if text.startswith(p)), key=len)
            ids.append(self.vocab[piece])
            text = text[len(piece):]
        return {"input_ids": ids}

    def decode(self, ids: list[int]) -> str:
        names = {i: p for p, i in self.vocab.items()}
        return "".join(names[i] for i in ids)


def test_a_prompt_whose_last_token_would_merge_with_the_label_still_gets_the_bare_letter():
    """The model reads the prompt's own tokens ("x", "\\n") and then writes "A", not "\\nA"."""
    from freeret_rag.rerank import _first_reply_token

    tokenizer = MergingTokenizer()
    assert tokenizer("x\nA")["input_ids"] == [0, 3]  # the merge this test is about
    assert _first_reply_token(tokenizer, "x\n", "A") == 2
    assert _first_reply_token(tokenizer, "x\n", "B") == 4
    assert _first_reply_token(tokenizer, "x", "A") == 2
