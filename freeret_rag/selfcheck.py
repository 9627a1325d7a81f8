"""The library's self-check: how good is the loaded model on *this* library, measured without labels.

The loaded model writes a short search query for a sample of the user's own items of every kind
(text chunks, pages, images, video segments), as a user would type it. Each query has a known
answer (the item it was written for), so the library can measure, on its own content and with its
own model:

- the MRR of each first-stage channel (dense, lexical, the model's own words) and of their fusion,
  and from that the fusion weights (per kind where the kind has enough queries: an image has little
  text for BM25);
- whether reranking helps, and how much it may move the first-stage order (`fusion.blend`'s share;
  0 switches reranking off and saves its cost);
- a relevance floor for p(match), from the scores of known matches against random items, used only
  when the reranker separates the two (AUC >= 0.75).

The result is stored with the index (per model and prompt version), re-measured when the library
has grown or shrunk by half, and shown in the app (Settings) and by `python -m freeret_rag check`.
It runs at the end of indexing, never inside a user's question.

Queries that merely copy a run of the item's words are rejected (they would favour BM25), and so
are replies too long to be a query (small models chat instead): the self-check is meant to look
like a user's question, not a verbatim span. Only when the model writes fewer than MIN_QUERIES
usable ones do cloze sentences stand in (and the result says so): the inverse cloze task of ORQA
(Lee et al. 2019), a sentence taken out of a sampled item is the query and the item is ranked
*without* that sentence, by every channel and by the reranker alike. Neither channel sees the
query's words in its target, so the stand-ins do not favour keyword search as verbatim spans did.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping, Sequence

from . import fusion
from .errors import UnsupportedModalityError
from .items import Hit, Item, Query

log = logging.getLogger(__name__)

MAX_QUERIES = 32
MIN_QUERIES = 4  # fewer usable queries than this: nothing is measured, defaults apply
MIN_KIND_QUERIES = 6  # a kind gets its own fusion weights only with at least this many queries
DEPTH = 50  # candidates per channel, as a search draws them
RERANK_K = 10
COPY_RUN = 5  # a query that repeats this many consecutive words of its item is a verbatim span
MAX_QUERY_WORDS = 12  # longer replies are chatter, not a query
CLOZE_WORDS = (6, 24)  # stand-in queries: a sentence of this many words, taken out of its item ...
STAGES = ("dense", "lexical", "words", "plain", "fused", "reranked", "final")
DEFAULT_SHARE = 0.5  # rerank share before anything is measured


def _sort_key(item: Item) -> str:
    return hashlib.sha1(item.item_id.encode()).hexdigest()


def sample_items(items: Sequence[Item], limit: int = MAX_QUERIES) -> list[Item]:
    """A deterministic sample of up to `limit` items, taken kind by kind in turn (each kind's items in
    the order of a hash of their ids), so every kind is measured even in a text-heavy library."""
    by_kind: dict[str, list[Item]] = {}
    for item in sorted(items, key=_sort_key):
        by_kind.setdefault(item.kind, []).append(item)
    out: list[Item] = []
    for round_ in range(max((len(v) for v in by_kind.values()), default=0)):
        for kind in sorted(by_kind):
            if round_ < len(by_kind[kind]) and len(out) < limit:
                out.append(by_kind[kind][round_])
    return out


_WORD = re.compile(r"[a-z0-9]+")


def is_verbatim(query: str, text: str, run: int = COPY_RUN) -> bool:
    """True when the query repeats `run` consecutive words of the text (or all of a shorter query)."""
    words = _WORD.findall(query.lower())
    if not words:
        return True
    source = " " + " ".join(_WORD.findall(text.lower())) + " "
    size = min(run, len(words))
    return any(" " + " ".join(words[i:i + size]) + " " in source for i in range(len(words) - size + 1))


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[^a-z\s])")


def cloze(text: str, words: tuple[int, int] = CLOZE_WORDS) -> tuple[str, str] | None:
    """A stand-in test query by the inverse cloze task: (sentence, the text without it), or None.

    The sentence is the one nearest the middle of the text with `words` (min, max) words whose
    removal leaves at least as many words as it takes (the item must stay mostly itself)."""
    sentences = _SENTENCE_END.split(" ".join(text.split()))
    sizes = [len(sentence.split()) for sentence in sentences]
    total, middle = sum(sizes), sum(sizes) / 2
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    order = sorted(range(len(sentences)), key=lambda i: (abs(starts[i] + sizes[i] / 2 - middle), i))
    for i in order:
        if words[0] <= sizes[i] <= words[1] and total - sizes[i] >= sizes[i]:
            return sentences[i], " ".join(sentences[:i] + sentences[i + 1:])
    return None


def cloze_item(item: Item) -> tuple[str, Item] | None:
    """(query, the item without that sentence) for a cloze stand-in, or None. The rest is a text item
    with the item's id and source: a page's rendering would still show the sentence."""
    found = cloze(item.text)
    if found is None:
        return None
    sentence, rest = found
    return sentence, Item("text", text=rest, item_id=item.item_id, doc_id=item.doc_id, source=item.source)


def clean_query(raw: str) -> str:
    """First line of the model's reply, without labels, quotes or trailing punctuation clutter."""
    line = next((part for part in raw.strip().splitlines() if part.strip()), "")
    line = re.sub(r"^\W*(search\s+)?(query|question|answer)\s*[:\-]\s*", "", line, flags=re.I)
    line = line.strip().strip('"\'`*').strip()
    return line[:200]


@dataclass
class SelfCheck:
    """What the self-check measured and what it decided, as stored with the index."""

    model_id: str
    prompt_version: str
    size: int  # items in the index when measured
    # {"query", "target", "kind", "label"}, and "stand_in": "cloze" for a stand-in
    queries: list[dict[str, str]] = field(default_factory=list)
    rejected: int = 0  # queries dropped as empty or verbatim
    spans: int = 0  # stand-in queries (cloze sentences) used because the model wrote too few
    mrr: dict[str, float] = field(default_factory=dict)  # stage -> MRR over all queries
    mrr_by_kind: dict[str, dict[str, float]] = field(default_factory=dict)
    weights: dict[str, list[float]] = field(default_factory=dict)  # kind or "*" -> (dense, lexical, words)
    channels: list[str] = field(default_factory=lambda: list(fusion.CHANNELS))
    rerank_share: float = DEFAULT_SHARE
    share_mrr: dict[str, float] = field(default_factory=dict)
    floor: float | None = None
    auc: float | None = None
    seconds: float = 0.0
    measured_at: float = 0.0

    @property
    def measured(self) -> bool:
        return len(self.queries) >= MIN_QUERIES

    def fusion_weights(self) -> dict[str, fusion.Weights]:
        return {kind: tuple(value) for kind, value in self.weights.items()}  # type: ignore[misc]

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "SelfCheck":
        data = json.loads(text)
        return cls(**{key: value for key, value in data.items() if key in cls.__dataclass_fields__})

    def stale(self, size: int) -> bool:
        """Re-measure once the library has grown or shrunk by half (or had too little to measure)."""
        if not self.measured:
            return size != self.size
        return not (self.size / 2 <= size <= self.size * 1.5)

    def describe(self) -> list[str]:
        """What was measured and what it switched on or off, in words, for the app and the CLI."""
        if not self.measured:
            return [f"Not measured yet: the library had {self.size} item(s) and gave {len(self.queries)} usable "
                    f"test queries (at least {MIN_QUERIES} are needed). Plain fusion and a half-weight rerank apply."]
        mrr = self.mrr
        written = len(self.queries) - self.spans
        lines = [f"The model wrote {written} usable test queries for a sample of your {self.size} items "
                 f"({', '.join(f'{n} {k}' for k, n in self._kind_counts().items())}); "
                 f"{self.rejected} were dropped (copies of the item's words, chatter, or items it cannot read). "
                 f"Measured in {self.seconds:.0f} s."]
        if self.spans:
            lines.append(f"That was too few, so {self.spans} sentences taken out of your items stood in as test "
                         "queries, each item searched without its sentence, so that neither the embedding nor "
                         "keyword search sees the query's own words.")
        lines.append("Found at rank 1/MRR: " + ", ".join(
            f"{stage} {mrr[stage]:.2f}" for stage in STAGES if stage in mrr) + ".")
        dense, lexical, words = self.weights.get("*", fusion.PLAIN)
        lines.append(f"Fusion weights: model embedding {dense:g}, keywords {lexical:g}, model's own words {words:g}"
                     + "".join(f"; for {kind}: {', '.join(f'{w:g}' for w in value)}"
                               for kind, value in self.weights.items() if kind != "*") + ".")
        if self.rerank_share == 0:
            lines.append("Reranking did not improve the first stage on your library, so it is off (faster answers).")
        else:
            lines.append(f"Reranking helps: the final order gives the reranker a {self.rerank_share:.0%} share "
                         "against the first-stage order.")
        if self.floor is None:
            reason = "could not tell" if self.auc is None else f"told apart only {self.auc:.0%} of"
            lines.append(f"No relevance floor: the reranker {reason} known matches from random items, so every "
                         "top source is used.")
        else:
            lines.append(f"Relevance floor p(match) >= {self.floor:.3f} (known matches beat random items "
                         f"{self.auc:.0%} of the time): below it the answer says nothing relevant was found.")
        return lines

    def _kind_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for query in self.queries:
            counts[query["kind"]] = counts.get(query["kind"], 0) + 1
        return counts


Rankings = dict[str, list[str]]


def measure(engine: Any, items: Sequence[Item], search_channels: Callable[..., Rankings],
            kind_of: Callable[[str], str], size: int, channels: Sequence[str] = fusion.CHANNELS,
            progress: Callable[[str], None] = lambda line: None,
            queries: Sequence[tuple[str, Item] | tuple[str, Item, Item | None]] | None = None,
            limit: int = MAX_QUERIES) -> SelfCheck:
    """Run the self-check: write queries, rank them by every channel, pick weights, share and floor.

    `search_channels(query, replaced=())` returns the first-stage rankings {"dense": ids, "lexical":
    ids, "words": ids} (best first, DEPTH deep), with `replaced` items (same ids as indexed ones) in
    place of the indexed ones (the cloze stand-ins); `kind_of(item_id)` the kind of an indexed item.
    `queries` may be given (query text, target item[, its cloze stand-in]) to skip writing them
    (tests, eval reuse).
    """
    started = time.perf_counter()
    check = SelfCheck(engine.model_id, engine.prompt_version, size, channels=list(channels))
    if queries is None:
        written: list[tuple[str, Item, Item | None]] = []
        sample = sample_items(items, limit)
        for number, item in enumerate(sample, 1):
            progress(f"self-check: writing test query {number}/{len(sample)}")
            try:
                text = clean_query(engine.write_query(item))
            except UnsupportedModalityError:  # an image for a text-only model: it cannot write about it
                check.rejected += 1
                continue
            if not text or len(text.split()) > MAX_QUERY_WORDS or is_verbatim(text, item.text):
                check.rejected += 1
                continue
            written.append((text, item, None))
        if len(written) < MIN_QUERIES:  # the model could not write enough: cloze sentences stand in
            have = {item.item_id for _, item, _ in written}
            stand_ins = [(sentence, item, rest) for item in sample if item.item_id not in have
                         for found in [cloze_item(item)] if found is not None for sentence, rest in [found]]
            check.spans = len(stand_ins)
            written += stand_ins
        queries = written
    queries = [(query[0], query[1], query[2] if len(query) > 2 else None) for query in queries]
    check.queries = [{"query": text, "target": item.item_id, "kind": item.kind, "label": item.label,
                      **({"stand_in": "cloze"} if stand_in is not None else {})} for text, item, stand_in in queries]
    if not check.measured:
        check.weights = {"*": list(fusion.PLAIN)}
        check.seconds = time.perf_counter() - started
        check.measured_at = time.time()
        return check

    targets = [item.item_id for _, item, _ in queries]
    # the cloze stand-ins are ranked, all at once, without their sentences
    replaced = [stand_in for _, _, stand_in in queries if stand_in is not None]
    rankings = []
    for number, (text, _, stand_in) in enumerate(queries, 1):
        progress(f"self-check: searching {number}/{len(queries)}")
        found = search_channels(Query(text), replaced) if stand_in is not None else search_channels(Query(text))
        rankings.append({channel: ids for channel, ids in found.items() if channel in channels})

    mrr = {channel: fusion.mean_reciprocal_rank([r.get(channel, []) for r in rankings], targets)
           for channel in channels}
    plain = [fusion.ordered(fusion.fuse(r, {"*": fusion.PLAIN}, kind_of)) for r in rankings]
    mrr["plain"] = fusion.mean_reciprocal_rank(plain, targets)
    noise = 0.5 / len(queries)  # a mix must win by more than half a query moving up one place
    best, mrr["fused"] = fusion.best_weights(rankings, targets, kind_of, channels, noise)
    weights: dict[str, fusion.Weights] = {"*": best}
    kinds = sorted({item.kind for _, item, _ in queries})
    if len(kinds) > 1:
        for kind in kinds:
            idx = [i for i, (_, item, _) in enumerate(queries) if item.kind == kind]
            if len(idx) >= MIN_KIND_QUERIES:
                own, own_mrr = fusion.best_weights([rankings[i] for i in idx], [targets[i] for i in idx], kind_of,
                                                   channels, 0.5 / len(idx))
                general = fusion.mean_reciprocal_rank(
                    [fusion.ordered(fusion.fuse(rankings[i], {"*": best}, kind_of)) for i in idx], [targets[i] for i in idx])
                if own != best and own_mrr > general + 0.5 / len(idx):  # the same noise margin, per kind
                    weights[kind] = own
        if len(weights) > 1:  # kind weights change the mixed ranking: keep them only if they help overall
            mixed = [fusion.ordered(fusion.fuse(r, weights, kind_of)) for r in rankings]
            mixed_mrr = fusion.mean_reciprocal_rank(mixed, targets)
            if mixed_mrr > mrr["fused"]:
                mrr["fused"] = mixed_mrr
            else:
                weights = {"*": best}
    fused = [fusion.ordered(fusion.fuse(r, weights, kind_of)) for r in rankings]

    # rerank: the top RERANK_K of the fused ranking, plus one random item per query for the floor
    pools = [ranking[:RERANK_K] for ranking in fused]
    all_ids = sorted({item_id for r in rankings for ids in r.values() for item_id in ids} | set(targets))
    randoms = []
    for number, target in enumerate(targets):
        pool = [item_id for item_id in all_ids if item_id != target]
        randoms.append(pool[int(hashlib.sha1(f"{number}:{target}".encode()).hexdigest(), 16) % len(pool)]
                       if pool else None)
    by_id = {item.item_id: item for item in items}
    by_id_cloze = by_id | {item.item_id: item for item in replaced}  # the reranker reads them without it too
    scores: list[dict[str, float]] = []
    match_p: list[float] = []
    random_p: list[float] = []
    for number, ((text, _, stand_in), pool, random_id, target) in enumerate(zip(queries, pools, randoms, targets), 1):
        progress(f"self-check: reranking {number}/{len(queries)}")
        known = by_id if stand_in is None else by_id_cloze
        candidates = [known[item_id] for item_id in dict.fromkeys([*pool, target, random_id]) if item_id in known]
        hits = engine.rerank(Query(text), [Hit(item) for item in candidates])
        p = {hit.item.item_id: float(hit.rerank_score) for hit in hits}
        scores.append({item_id: p[item_id] for item_id in pool if item_id in p})
        if target in p:
            match_p.append(p[target])
        if random_id in p:
            random_p.append(p[random_id])
    reranked = [fusion.blend(first, s, 1.0) for first, s in zip(fused, scores)]
    mrr["reranked"] = fusion.mean_reciprocal_rank(reranked, targets)
    share, by_share = fusion.best_share(fused, scores, targets)
    mrr["final"] = by_share[share]
    floor, separation = fusion.relevance_floor(match_p, random_p)

    for kind in kinds:
        idx = [i for i, (_, item, _) in enumerate(queries) if item.kind == kind]
        sub = [targets[i] for i in idx]
        check.mrr_by_kind[kind] = {
            **{channel: fusion.mean_reciprocal_rank([rankings[i].get(channel, []) for i in idx], sub) for channel in channels},
            "fused": fusion.mean_reciprocal_rank([fused[i] for i in idx], sub),
            "final": fusion.mean_reciprocal_rank([fusion.blend(fused[i], scores[i], share) for i in idx], sub)}
    check.mrr = {stage: round(value, 4) for stage, value in mrr.items()}
    check.weights = {kind: list(value) for kind, value in weights.items()}
    check.rerank_share = share
    check.share_mrr = {f"{s:g}": round(v, 4) for s, v in by_share.items()}
    check.floor = floor
    check.auc = separation
    check.seconds = time.perf_counter() - started
    check.measured_at = time.time()
    return check
