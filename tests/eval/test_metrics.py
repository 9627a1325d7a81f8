"""Metrics against values computed by hand on a toy ranking."""

import pytest

from freeret_rag.eval.metrics import evaluate, mrr_at_k, ndcg_at_k, per_query, recall_at_k

QRELS = {
    "q1": {"d1": 2, "d3": 1},  # graded: d1 highly relevant, d3 partly
    "q2": {"d7": 1},
    "q3": {"d9": 1},  # never retrieved
    "q4": {"d1": 0},  # judged non-relevant only: not counted
    "q5": {"d1": 1},  # missing from the run: counts as 0
}
RUN = {
    "q1": ["d2", "d1", "d4", "d3", "d5"],
    "q2": ["d7", "d1"],
    "q3": [f"d{i}" for i in range(1, 9)] + ["d10", "d11"],
    "q4": ["d1"],
}


def test_single_query_by_hand():
    ranked, grades = RUN["q1"], QRELS["q1"]
    assert recall_at_k(ranked, grades, 1) == 0.0
    assert recall_at_k(ranked, grades, 2) == 0.5
    assert recall_at_k(ranked, grades, 5) == 1.0
    assert mrr_at_k(ranked, grades, 10) == 0.5
    assert mrr_at_k(ranked, grades, 1) == 0.0
    # DCG = 2/log2(3) + 1/log2(5) = 1.26186 + 0.43068 = 1.69254
    # IDCG = 2/log2(2) + 1/log2(3) = 2 + 0.63093 = 2.63093  ->  0.64332
    assert ndcg_at_k(ranked, grades, 10) == pytest.approx(0.64332, abs=1e-5)
    # top 2 only: DCG = 1.26186, IDCG = 2.63093 -> 0.47962
    assert ndcg_at_k(ranked, grades, 2) == pytest.approx(0.47962, abs=1e-5)


def test_duplicates_count_once_at_best_rank():
    # two chunks of d2 must not push d1 out of the top 2
    assert recall_at_k(["d2", "d2", "d1"], QRELS["q1"], 2) == 0.5
    assert mrr_at_k(["d2", "d2", "d1"], QRELS["q1"], 10) == 0.5


def test_aggregate_by_hand():
    scores = evaluate(RUN, QRELS)
    # judged queries: q1, q2, q3, q5 (q4 has no relevant document)
    assert scores["recall@1"] == pytest.approx((0 + 1 + 0 + 0) / 4)
    assert scores["recall@5"] == pytest.approx((1 + 1 + 0 + 0) / 4)
    assert scores["recall@10"] == pytest.approx(0.5)
    assert scores["mrr@10"] == pytest.approx((0.5 + 1) / 4)
    assert scores["ndcg@10"] == pytest.approx((0.64332 + 1) / 4, abs=1e-5)
    assert set(scores) == {"recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10"}


def test_perfect_and_empty():
    assert per_query(["a", "b"], {"a": 1, "b": 3}, ks=(1, 2)) == {
        "recall@1": 0.5, "recall@2": 1.0, "mrr@2": 1.0,
        # DCG = 1 + 3/log2(3) = 2.89279, IDCG = 3 + 1/log2(3) = 3.63093
        "ndcg@2": pytest.approx(0.79671, abs=1e-5),
    }
    with pytest.raises(ValueError):
        evaluate({"q": ["a"]}, {"q": {"a": 0}})
