"""Ranking metrics as BEIR / trec_eval define them: Recall@k, MRR@k and nDCG@k with graded relevance.

A *run* maps each query id to its ranked document ids (best first); *qrels* map each query id to
{document id: grade}, where a grade > 0 means relevant. nDCG uses linear gain (`grade / log2(rank+1)`,
as trec_eval and BEIR do). Aggregates are means over the queries that have at least one relevant
document; a query missing from the run scores 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

Qrels = Mapping[str, Mapping[str, int]]
Run = Mapping[str, Sequence[str]]

DEFAULT_KS: tuple[int, ...] = (1, 5, 10)


def dedupe(ranked: Iterable[str]) -> list[str]:
    """Keep the first occurrence of each id (several chunks of one document count once, at its best rank)."""
    return list(dict.fromkeys(ranked))


def recall_at_k(ranked: Sequence[str], grades: Mapping[str, int], k: int) -> float:
    """Share of the relevant documents found in the top k."""
    relevant = {doc for doc, grade in grades.items() if grade > 0}
    if not relevant:
        return 0.0
    return len(relevant.intersection(dedupe(ranked)[:k])) / len(relevant)


def mrr_at_k(ranked: Sequence[str], grades: Mapping[str, int], k: int) -> float:
    """1 / rank of the first relevant document in the top k, else 0."""
    for rank, doc in enumerate(dedupe(ranked)[:k], start=1):
        if grades.get(doc, 0) > 0:
            return 1.0 / rank
    return 0.0


def dcg(gains: Sequence[float]) -> float:
    return sum(gain / math.log2(rank + 1) for rank, gain in enumerate(gains, start=1))


def ndcg_at_k(ranked: Sequence[str], grades: Mapping[str, int], k: int) -> float:
    """DCG of the top k divided by the DCG of the ideal ordering of all judged grades."""
    ideal = dcg(sorted((g for g in grades.values() if g > 0), reverse=True)[:k])
    if ideal == 0:
        return 0.0
    return dcg([max(grades.get(doc, 0), 0) for doc in dedupe(ranked)[:k]]) / ideal


def per_query(ranked: Sequence[str], grades: Mapping[str, int], ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """Every metric for one query: recall@k for each k, MRR and nDCG at the largest k."""
    top = max(ks)
    scores = {f"recall@{k}": recall_at_k(ranked, grades, k) for k in ks}
    scores[f"mrr@{top}"] = mrr_at_k(ranked, grades, top)
    scores[f"ndcg@{top}"] = ndcg_at_k(ranked, grades, top)
    return scores


def evaluate(run: Run, qrels: Qrels, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """Mean of `per_query` over the judged queries (those with a relevant document)."""
    judged = [qid for qid, grades in qrels.items() if any(g > 0 for g in grades.values())]
    if not judged:
        raise ValueError("qrels hold no relevant document: nothing to evaluate")
    rows = [per_query(run.get(qid, ()), qrels[qid], ks) for qid in judged]
    return {name: sum(row[name] for row in rows) / len(rows) for name in rows[0]}
