"""The hybrid ranking's arithmetic, checked by hand: weighted RRF, the rerank blend, the floor; and that
the store and the library really apply the weights they are given (not ignored, not swapped)."""

from __future__ import annotations

import numpy as np
import pytest

from freeret_rag import fusion
from freeret_rag.items import Item
from freeret_rag.store import Store, connect

# -- pure functions ------------------------------------------------------------------------------


def test_weighted_fusion_by_hand_with_per_kind_weights():
    rankings = {"dense": ["a", "b"], "lexical": ["b", "c"], "words": ["c"]}
    kinds = {"a": "image", "b": "text", "c": "text"}
    fused = fusion.fuse(rankings, {"*": (1.0, 0.5, 0.0), "image": (0.25, 1.0, 1.0)}, kinds.get, k=60)
    assert fused["a"] == pytest.approx(0.25 / 61)
    assert fused["b"] == pytest.approx(1 / 62 + 0.5 / 61)
    assert fused["c"] == pytest.approx(0.5 / 62)  # words weight 0 for text
    assert fusion.ordered(fused) == ["b", "c", "a"]


def test_mean_reciprocal_rank_by_hand():
    assert fusion.mean_reciprocal_rank([["a", "b"], ["x", "y", "b"], ["z"]], ["a", "b", "q"]) \
        == pytest.approx((1 + 1 / 3 + 0) / 3)


def test_weight_grid_is_every_normalised_triple_nearest_plain_first():
    grid = fusion.weight_grid()
    assert len(grid) == 4 ** 3 - 3 ** 3  # triples of {0, .25, .5, 1} with a 1 in them
    assert grid[0] == (1.0, 1.0, 1.0) and len(set(grid)) == len(grid)
    two = fusion.weight_grid(("dense", "lexical"))
    assert set(two) == {(1.0, x, 0.0) for x in fusion.WEIGHT_STEPS} | {(x, 1.0, 0.0) for x in fusion.WEIGHT_STEPS}


def test_best_weights_follow_the_channel_that_finds_the_targets():
    # lexical puts the target first every time; dense always puts it last of four
    queries = [{"dense": [f"n{q}a", f"n{q}b", f"n{q}c", f"t{q}"], "lexical": [f"t{q}", f"n{q}a"]} for q in range(5)]
    targets = [f"t{q}" for q in range(5)]
    weights, mrr = fusion.best_weights(queries, targets, lambda i: "text", ("dense", "lexical"))
    assert mrr == 1.0 and weights[1] == 1.0 and weights[0] < 1.0
    # plain RRF would put n?a (dense 1st, lexical 2nd) above the target: 1/61 + 1/62 > 1/61 + 1/64
    plain = [fusion.ordered(fusion.fuse(r, {"*": fusion.PLAIN})) for r in queries]
    assert fusion.mean_reciprocal_rank(plain, targets) == pytest.approx(0.5)


def test_blend_by_hand():
    first = ["a", "b", "c", "d", "e"]
    p = {"a": 0.1, "b": 0.9, "c": 0.5, "d": 0.0}  # e was not reranked
    assert fusion.blend(first, p, 0.0) == first
    assert fusion.blend(first, p, 1.0) == ["b", "c", "a", "d", "e"]
    # share .5: positions (first, p) -> sums a 0+2, b 1+0, c 2+1, d 3+3 -> b, a, c, d; e stays last
    assert fusion.blend(first, p, 0.5) == ["b", "a", "c", "d", "e"]
    # share .25: a .75*1 + .25*.5 = .875, b .75*.75 + .25*1 = .8125 -> a stays first
    assert fusion.blend(first, p, 0.25)[:2] == ["a", "b"]


def test_best_share_prefers_the_smaller_share_on_ties_and_finds_a_helpful_reranker():
    first = [["x", "t"], ["y", "u"]]
    helpful = [{"x": 0.1, "t": 0.9}, {"y": 0.2, "u": 0.8}]
    share, measured = fusion.best_share(first, helpful, ["t", "u"])
    assert measured[0.0] == pytest.approx(0.5) and measured[1.0] == 1.0 and share == 0.75  # .75 already flips
    useless = [{"x": 0.5, "t": 0.5}, {"y": 0.5, "u": 0.5}]
    assert fusion.best_share(first, useless, ["t", "u"])[0] == 0.0


def test_auc_and_floor_by_hand():
    assert fusion.auc([0.9, 0.8], [0.1, 0.85]) == pytest.approx(3 / 4)
    assert fusion.auc([0.5], [0.5]) == 0.5 and fusion.auc([], [0.1]) is None
    matches = [0.9, 0.8, 0.7, 0.95, 0.6, 0.85, 0.75, 0.65, 0.92, 0.88]
    floor, separation = fusion.relevance_floor(matches, [0.1, 0.2, 0.05, 0.3])
    assert separation == 1.0 and floor == 0.65  # 10 matches: the second lowest keeps 9 of them
    assert fusion.relevance_floor([0.5, 0.4, 0.3, 0.6], [0.5, 0.45, 0.35, 0.55]) [0] is None  # AUC .56


# -- the weights are applied where the search runs ---------------------------------------------
DIM = 8


def _store(tmp_path) -> Store:
    """Three items whose dense order is a, b, c and whose lexical order is c, b, a (by construction)."""
    store = Store(connect(tmp_path), "m", "p")
    items = [Item("text", text=text, item_id=f"d:{name}", doc_id="d", source="notes.txt", chunk=n)
             for n, (name, text) in enumerate([("a", "zebra"), ("b", "zebra quokka"), ("c", "zebra quokka quokka")])]
    axis = np.eye(DIM, dtype=np.float32)
    vectors = np.stack([axis[0], 0.8 * axis[0] + 0.6 * axis[1], 0.6 * axis[0] + 0.8 * axis[1]])
    store.put(items, vectors, {"content_hash": "h", "path": "/x/notes.txt", "file_type": "text", "model_id": "m",
                               "prompt_version": "p", "added_at": 1.0})
    store.commit("d")
    return store


QUERY = np.eye(DIM, dtype=np.float32)[0]


def test_store_search_applies_the_weights(tmp_path):
    store = _store(tmp_path)
    dense_only = [hit.item.item_id for hit in store.search(QUERY, "quokka", 3, weights=(1.0, 0.0, 0.0))]
    lexical_only = [hit.item.item_id for hit in store.search(QUERY, "quokka", 3, weights=(0.0, 1.0, 0.0))]
    assert dense_only[0] == "d:a" and lexical_only[0] == "d:c"
    per_kind = store.search(QUERY, "quokka", 3, weights={"*": (1.0, 0.0, 0.0), "text": (0.0, 1.0, 0.0)})
    assert per_kind[0].item.item_id == "d:c"  # the kind's own weights win over the default


class _FixedQueryEngine:
    """Just enough engine for Library.search without reranking: a fixed query vector."""

    model_id, prompt_version, capabilities = "m", "p", frozenset({"text"})

    def embed_query(self, query):
        return QUERY


def test_library_search_passes_its_weights_in_order(tmp_path):
    from freeret_rag.library import Library

    _store(tmp_path / "data")
    dense = Library(_FixedQueryEngine(), tmp_path / "data", fusion_weights=(1.0, 0.0, 0.0))
    lexical = Library(_FixedQueryEngine(), tmp_path / "data", fusion_weights=(0.0, 1.0, 0.0))
    assert dense.search("quokka", k=1, rerank=False)[0].item.item_id == "d:a"
    assert lexical.search("quokka", k=1, rerank=False)[0].item.item_id == "d:c"


def test_a_mix_must_beat_the_best_single_channel_by_more_than_the_noise():
    # q0: lexical finds the target 2nd, dense 1st -> a mix puts it 1st; q1, q2: lexical 1st, dense 2nd
    queries = [{"dense": ["t0", "z"], "lexical": ["x", "t0"]},
               {"dense": ["a", "t1"], "lexical": ["t1", "a"]},
               {"dense": ["b", "t2"], "lexical": ["t2", "b"]}]
    targets = ["t0", "t1", "t2"]
    kind = lambda i: "text"
    mixed, mixed_mrr = fusion.best_weights(queries, targets, kind, ("dense", "lexical"))
    lexical_alone = fusion.mean_reciprocal_rank([q["lexical"] for q in queries], targets)
    assert lexical_alone == pytest.approx((0.5 + 1 + 1) / 3) and mixed_mrr > lexical_alone
    gain = mixed_mrr - lexical_alone
    assert fusion.best_weights(queries, targets, kind, ("dense", "lexical"), min_gain=gain + 1e-9) \
        == ((0.0, 1.0, 0.0), lexical_alone)
    assert fusion.best_weights(queries, targets, kind, ("dense", "lexical"), min_gain=gain / 2)[0] == mixed
