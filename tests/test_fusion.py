"""Label-free fusion weights: a ranker that cannot find items from their own words fades out."""

from __future__ import annotations

import pytest

from freeret_rag.fusion import calibrate, mean_reciprocal_rank, pseudo_queries, weights_from_quality
from freeret_rag.items import Item
from freeret_rag.store import rrf

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau".split()


def passages(n: int) -> list[Item]:
    return [Item("text", item_id=f"doc{i}", text=" ".join(WORDS[(i + j) % len(WORDS)] + str(i) for j in range(30)))
            for i in range(n)]


def test_pseudo_queries_are_middle_spans_of_long_enough_items_and_deterministic():
    items = passages(6) + [Item("text", item_id="short", text="too short to be a query")]
    queries = pseudo_queries(items, sample=10, words=12)
    assert len(queries) == 6 and "short" not in {target for _, target in queries}
    by_id = {item.item_id: item.text for item in items}
    for text, target in queries:
        assert len(text.split()) == 12 and text in by_id[target]
    assert pseudo_queries(list(reversed(items)), sample=10, words=12) == queries


def test_mean_reciprocal_rank_by_hand():
    assert mean_reciprocal_rank([["a", "b"], ["x", "y", "b"], ["z"]], ["a", "b", "q"]) == pytest.approx((1 + 1 / 3 + 0) / 3)


def test_weights_relative_to_the_better_ranker():
    assert weights_from_quality(0.1, 0.8) == pytest.approx(((0.1 / 0.8) ** 3, 1.0))
    assert weights_from_quality(0.9, 0.9) == (1.0, 1.0)
    assert weights_from_quality(0.0, 0.0) == (1.0, 1.0)


def test_a_random_dense_ranker_is_weighted_out_and_fusion_keeps_the_lexical_order():
    items = passages(12)
    ids = [item.item_id for item in items]
    exact = lambda text: sorted(ids, key=lambda i: -sum(w in next(x.text for x in items if x.item_id == i).split()
                                                        for w in text.split()))
    useless = lambda text: list(reversed(ids))  # the same ranking whatever the query
    dense_weight, lexical_weight = calibrate(items, dense_search=useless, lexical_search=exact, sample=12)
    assert lexical_weight == 1.0 and dense_weight < 0.05
    query = items[3].text.split()[10:22]
    fused = rrf([useless(" ".join(query)), exact(" ".join(query))], weights=[dense_weight, lexical_weight])
    assert max(fused, key=fused.get) == "doc3"  # with plain RRF the useless ranker would have a say


def test_too_little_text_means_plain_rrf():
    assert calibrate([Item("image", item_id="i")], lambda t: [], lambda t: []) is None


def test_library_measures_weights_once_and_again_only_after_the_index_changes_a_lot(tiny_engine, tmp_path):
    from freeret_rag.library import Library

    engine = tiny_engine("llama")
    calls = []
    library = Library(engine, data_dir=tmp_path / "index")
    original = engine.embed_query
    library.engine = type("Counting", (), {"__getattr__": lambda self, name: getattr(engine, name),
                                           "embed_query": lambda self, q: calls.append(q) or original(q)})()
    notes = tmp_path / "notes"
    notes.mkdir()
    for i in range(6):
        (notes / f"note{i}.txt").write_text(" ".join(f"word{i}x{j} topic{j % 7}" for j in range(40)))
    library.add([notes])
    first = library.fusion_weights
    measured = len(calls)
    assert measured >= 4 and all(0.0 <= w <= 1.0 for w in first) and max(first) == 1.0
    assert library.fusion_weights == first and len(calls) == measured  # cached
    (notes / "extra.txt").write_text(" ".join(f"extra{j}" for j in range(40)))
    library.add([notes / "extra.txt"])
    library.fusion_weights
    assert len(calls) == measured  # one more file out of six: not worth a re-measure
    assert Library(engine, data_dir=tmp_path / "index", fusion_weights=(0.5, 1.0)).fusion_weights == (0.5, 1.0)
