"""Fusion weights for the hybrid first stage, measured on the user's own index without labels.

Plain reciprocal rank fusion assumes both rankers are about as good. They are not: a 135M
model's embeddings can be near random while BM25 is solid (and a strong VLM's embeddings can
beat BM25 on pages whose text layer is thin). Fusing a near-random ranking at full weight drags
the result below the better ranker alone.

So the library measures both rankers on the index itself: for a sample of items with enough
text, a verbatim span of that text is a pseudo-query whose answer is known (the item it came
from). Each ranker's mean reciprocal rank on those pseudo-queries sets its RRF weight, relative
to the better one, raised to `SHARPNESS` so that a clearly weaker ranker fades out instead of
reordering the stronger one's list (RRF differences between neighbouring ranks are tiny, so even
a 0.2 weight would let a random ranker reshuffle the top). Verbatim spans favour BM25; the
weighting therefore errs towards lexical retrieval, which is the safe side.

Cost: one query embedding per sampled item (`DEFAULT_SAMPLE` of them), once per change of the
index.
"""

from __future__ import annotations

import hashlib
from typing import Callable, Sequence

from .items import Item

DEFAULT_SAMPLE = 24
SPAN_WORDS = 12
SHARPNESS = 3.0


def pseudo_queries(items: Sequence[Item], sample: int = DEFAULT_SAMPLE, words: int = SPAN_WORDS) -> list[tuple[str, str]]:
    """(query text, item id) pairs: a span from the middle of items with at least 2x `words` words.

    The sample is deterministic (ordered by a hash of the item id), so the same index gives the
    same weights.
    """
    candidates = [item for item in items if len(item.text.split()) >= 2 * words]
    candidates.sort(key=lambda item: hashlib.sha1(item.item_id.encode()).hexdigest())
    queries = []
    for item in candidates[:sample]:
        tokens = item.text.split()
        start = (len(tokens) - words) // 2
        queries.append((" ".join(tokens[start:start + words]), item.item_id))
    return queries


def mean_reciprocal_rank(rankings: Sequence[Sequence[str]], targets: Sequence[str]) -> float:
    """Mean of 1/rank of each target in its ranking (0 where it is missing)."""
    if not targets:
        return 0.0
    total = 0.0
    for ranking, target in zip(rankings, targets):
        ranking = list(ranking)
        total += 1.0 / (ranking.index(target) + 1) if target in ranking else 0.0
    return total / len(targets)


def weights_from_quality(dense: float, lexical: float, sharpness: float = SHARPNESS) -> tuple[float, float]:
    """(dense weight, lexical weight): the better ranker gets 1, the other (ratio)^sharpness."""
    best = max(dense, lexical)
    if best <= 0.0:
        return 1.0, 1.0  # nothing measurable: plain RRF
    return (dense / best) ** sharpness, (lexical / best) ** sharpness


def calibrate(items: Sequence[Item], dense_search: Callable[[str], list[str]], lexical_search: Callable[[str], list[str]],
              sample: int = DEFAULT_SAMPLE) -> tuple[float, float] | None:
    """Weights for `rrf`, or None when the index has too little text to measure (use plain RRF)."""
    queries = pseudo_queries(items, sample)
    if len(queries) < 4:
        return None
    targets = [item_id for _, item_id in queries]
    dense = mean_reciprocal_rank([dense_search(text) for text, _ in queries], targets)
    lexical = mean_reciprocal_rank([lexical_search(text) for text, _ in queries], targets)
    return weights_from_quality(dense, lexical)

