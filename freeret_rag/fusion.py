"""The arithmetic of the hybrid ranking: weighted reciprocal rank fusion, the rerank blend, the floor.

Pure functions over rankings (lists of item ids, best first) and scores, with no model or store in
them, so every rule here is checked by hand in tests. `selfcheck.py` measures the inputs (rankings
of the loaded model's own queries on the user's library) and picks the parameters with these.

Channels of the first stage:

- `dense`:   the model's embedding (cosine);
- `lexical`: BM25 over the item's text and file name;
- `words`:   BM25 over the model's own top next-token words at the embedding read-out
             (PromptReps): a keyword channel for images, scanned pages and video too.
"""

from __future__ import annotations

import itertools
import math
from typing import Callable, Mapping, Sequence

RRF_K = 60
CHANNELS: tuple[str, ...] = ("dense", "lexical", "words")
Weights = tuple[float, float, float]  # (dense, lexical, words)
PLAIN: Weights = (1.0, 1.0, 1.0)
WEIGHT_STEPS: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0)
RERANK_SHARES: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
FLOOR_MIN_AUC = 0.75  # below this the reranker cannot tell a match from a random item: no floor
FLOOR_RECALL = 0.9  # the floor keeps this share of the known matches


def rrf(rankings: Sequence[Sequence[str]], k: int = RRF_K, weights: Sequence[float] | None = None) -> dict[str, float]:
    """Reciprocal rank fusion: sum over rankings of weight / (k + rank), ranks 1-based.

    Rank-based, so cosine similarities and BM25 scores need no calibration against each other.
    """
    weights = weights or [1.0] * len(rankings)
    fused: dict[str, float] = {}
    for ranking, weight in zip(rankings, weights):
        for rank, key in enumerate(ranking, start=1):
            fused[key] = fused.get(key, 0.0) + weight / (k + rank)
    return fused


def fuse(rankings: Mapping[str, Sequence[str]], weights: Mapping[str, Weights],
         kind_of: Callable[[str], str] = lambda item_id: "*", k: int = RRF_K) -> dict[str, float]:
    """Weighted RRF where each candidate's channel weights depend on its kind.

    `weights` maps a kind (or "*" for the default) to (dense, lexical, words) weights; a channel
    missing from `rankings` contributes nothing. Returns item id -> fused score (unsorted).
    """
    default = weights.get("*", PLAIN)
    fused: dict[str, float] = {}
    for channel_index, channel in enumerate(CHANNELS):
        for rank, key in enumerate(rankings.get(channel, ()), start=1):
            weight = weights.get(kind_of(key), default)[channel_index]
            if weight:
                fused[key] = fused.get(key, 0.0) + weight / (k + rank)
            else:
                fused.setdefault(key, 0.0)
    return fused


def ordered(scores: Mapping[str, float]) -> list[str]:
    """Ids by descending score; ties keep insertion order (Python's sort is stable)."""
    return sorted(scores, key=lambda key: -scores[key])


def mean_reciprocal_rank(rankings: Sequence[Sequence[str]], targets: Sequence[str]) -> float:
    """Mean of 1/rank of each target in its ranking (0 where it is missing)."""
    if not targets:
        return 0.0
    total = 0.0
    for ranking, target in zip(rankings, targets):
        ranking = list(ranking)
        total += 1.0 / (ranking.index(target) + 1) if target in ranking else 0.0
    return total / len(targets)


def weight_grid(channels: Sequence[str] = CHANNELS) -> list[Weights]:
    """Every (dense, lexical, words) weight triple from WEIGHT_STEPS whose largest weight is 1.

    Channels not in `channels` stay at 0. Sorted nearest-to-plain first, so that ties in a search
    over the grid resolve towards plain RRF (the choice that needs no evidence).
    """
    steps = [WEIGHT_STEPS if channel in channels else (0.0,) for channel in CHANNELS]
    grid = {combo for combo in itertools.product(*steps) if max(combo) == 1.0}
    plain = tuple(1.0 if channel in channels else 0.0 for channel in CHANNELS)
    return sorted(grid, key=lambda combo: (sum((a - b) ** 2 for a, b in zip(combo, plain)), combo))


def best_weights(queries: Sequence[Mapping[str, Sequence[str]]], targets: Sequence[str],
                 kind_of: Callable[[str], str], channels: Sequence[str] = CHANNELS,
                 min_gain: float = 0.0) -> tuple[Weights, float]:
    """The grid triple with the highest MRR of the fused ranking over these queries (ties: nearest plain).

    A mix must beat the best single channel by more than `min_gain` MRR, else that channel alone is
    returned: on a handful of test queries a small gain is noise, and one channel is the simpler bet.
    """
    def mrr(combo: Weights) -> float:
        return mean_reciprocal_rank([ordered(fuse(rankings, {"*": combo}, kind_of)) for rankings in queries], targets)

    best: tuple[Weights, float] | None = None
    for combo in weight_grid(channels):
        score = mrr(combo)
        if best is None or score > best[1] + 1e-12:
            best = (combo, score)
    assert best is not None
    singles = [tuple(1.0 if c == channel else 0.0 for c in CHANNELS) for channel in CHANNELS if channel in channels]
    single = max(((combo, mrr(combo)) for combo in singles), key=lambda pair: pair[1])  # first on ties
    return single if best[1] <= single[1] + min_gain else best  # type: ignore[return-value]


def blend(first_stage: Sequence[str], rerank_scores: Mapping[str, float], share: float) -> list[str]:
    """The final order of the reranked head: ranks of the first stage and of p(match) averaged.

    For the R reranked candidates (those in `rerank_scores`, taken in first-stage order), each
    gets (1 - share) * (1 - (r - 1) / R) + share * (1 - (q - 1) / R), with r its first-stage rank
    and q its rank by p(match) among them. Ranks, not raw p(match), so that a model whose p(match)
    is squeezed near 0 is weighed like one that spreads it. share 0 keeps the first-stage order;
    1 is the reranker's order. Ties go to the first-stage order. Candidates not reranked follow
    in their first-stage order.
    """
    head = [key for key in first_stage if key in rerank_scores]
    tail = [key for key in first_stage if key not in rerank_scores]
    size = len(head)
    if not size:
        return list(first_stage)
    by_score = sorted(head, key=lambda key: -rerank_scores[key])
    rerank_rank = {key: position for position, key in enumerate(by_score)}
    value = {key: (1 - share) * (1 - position / size) + share * (1 - rerank_rank[key] / size)
             for position, key in enumerate(head)}
    return sorted(head, key=lambda key: -value[key]) + tail


def best_share(first_stages: Sequence[Sequence[str]], rerank_scores: Sequence[Mapping[str, float]],
               targets: Sequence[str], shares: Sequence[float] = RERANK_SHARES) -> tuple[float, dict[float, float]]:
    """The rerank share with the best MRR (ties: the smaller share, cheaper and closer to the first
    stage), and the MRR of every share tried."""
    measured = {share: mean_reciprocal_rank([blend(first, scores, share) for first, scores in
                                             zip(first_stages, rerank_scores)], targets) for share in shares}
    best = min(measured, key=lambda share: (-round(measured[share], 12), share))
    return best, measured


def auc(positives: Sequence[float], negatives: Sequence[float]) -> float | None:
    """P(a positive scores above a negative), ties counted half (Mann-Whitney); None if either is empty."""
    if not positives or not negatives:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


def relevance_floor(matches: Sequence[float], randoms: Sequence[float], min_auc: float = FLOOR_MIN_AUC,
                    recall: float = FLOOR_RECALL) -> tuple[float | None, float | None]:
    """(floor, AUC): the p(match) that keeps `recall` of the known matches, if the reranker separates
    known matches from random items at least `min_auc` of the time; else no floor (None).

    The floor is the match score at the (1 - recall) quantile (lower), so at most ~10% of known
    matches fall under it.
    """
    separation = auc(matches, randoms)
    if separation is None or separation < min_auc or len(matches) < 4:
        return None, separation
    ordered_matches = sorted(matches)
    index = max(0, math.floor(round((1 - recall) * len(ordered_matches), 9)))
    return ordered_matches[min(index, len(ordered_matches) - 1)], separation
