"""The eval-only engine wrappers: the cache answers repeats without the model; the stand-in swaps
only the dense vectors."""

from __future__ import annotations

import numpy as np

from freeret_rag.eval.baselines import MiniLM
from freeret_rag.eval.standins import CachedEngine, DenseStandIn
from freeret_rag.items import Hit, Item, Query


class CountingEngine:
    model_id, prompt_version, capabilities = "counting", "p", frozenset({"text"})

    def __init__(self) -> None:
        self.calls = {"embed": 0, "query": 0, "write": 0, "rerank": 0}

    def embed_with_words(self, items, batch_size=None, top_words=24):
        self.calls["embed"] += len(items)
        return np.ones((len(items), 4), np.float32) * len(items), [[(f"w{item.text}", 0.5)] for item in items]

    def embed_query_with_words(self, query, top_words=24):
        self.calls["query"] += 1
        return np.zeros(4, np.float32), [("q", 1.0)]

    def write_query(self, item):
        self.calls["write"] += 1
        return f"about {item.text}"

    def rerank(self, query, hits, batch_size=None):
        self.calls["rerank"] += len(hits)
        for hit in hits:
            hit.rerank_score = 1.0 / len(hit.item.text)
        return sorted(hits, key=lambda hit: -hit.rerank_score)


def test_cache_serves_repeats_from_disk_without_the_model(tmp_path):
    items = [Item("text", text=t, item_id=t) for t in ("aa", "b", "ccc")]
    first = CachedEngine(CountingEngine(), tmp_path / "c.pkl")
    vectors, words = first.embed_with_words(items[:2])
    first.embed_with_words(items)  # "aa" and "b" are known: only "ccc" is embedded
    assert first.engine.calls["embed"] == 3 and words == [[("waa", 0.5)], [("wb", 0.5)]]
    first.rerank(Query("q"), [Hit(items[0]), Hit(items[1])])
    first.write_query(items[0])
    first.save()
    again = CachedEngine(CountingEngine(), tmp_path / "c.pkl")
    np.testing.assert_array_equal(again.embed_with_words(items[:2])[0], vectors)
    ranked = again.rerank(Query("q"), [Hit(items[0]), Hit(items[1])])
    assert [hit.item.text for hit in ranked] == ["b", "aa"] and ranked[0].rerank_score == 1.0
    assert again.write_query(items[0]) == "about aa"
    assert again.engine.calls == {"embed": 0, "query": 0, "write": 0, "rerank": 0}


def test_stand_in_uses_minilm_vectors_and_the_models_words(tmp_path):
    items = [Item("text", text="the ladybird eats aphids", item_id="a"), Item("text", text="trains leave at noon",
                                                                               item_id="b")]
    encoder = MiniLM()
    stand_in = DenseStandIn(CountingEngine(), encoder)
    vectors, words = stand_in.embed_with_words(items)
    np.testing.assert_allclose(vectors, encoder.encode([item.text for item in items]), atol=1e-6)
    assert words == [[("wthe ladybird eats aphids", 0.5)], [("wtrains leave at noon", 0.5)]]
    query, query_words = stand_in.embed_query_with_words(Query("what do ladybirds eat"))
    assert query_words == [("q", 1.0)] and int(np.argmax(vectors @ query)) == 0
    assert stand_in.model_id == "counting+minilm-dense" and stand_in.prompt_version == "p"
