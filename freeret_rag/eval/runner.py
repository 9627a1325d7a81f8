"""Stage-by-stage retrieval evaluation of one engine on one BEIR dataset.

The corpus is indexed through the library (embedding with the model's own words, text fallback for
text-only models, Chroma + BM25 store) into a temporary data folder; the library's self-check runs
on it as it would after a user's upload (the model writes its own test queries: no label is used);
then every judged query is run once and these rankings are read off it:

- `lexical`:  BM25 over item text and file names (the store's lexical index)
- `dense`:    the model's embedding (cosine, Chroma), or MiniLM's with `dense="minilm"`
- `words`:    BM25 over the model's own top next words per item (PromptReps)
- `plain`:    dense and lexical fused by plain RRF (weights 1:1), the old default
- `fused`:    all channels fused with the self-check's weights (what the library reranks)
- `reranked`: the top `rerank_k` of `fused` reordered by p(match) alone
- `final`:    what the library returns: the head blended with the rerank by the measured share
- `fused-nowords` / `final-nowords`: the same without the words channel (its own self-check
  decisions, on the same test queries)

Optional baselines (BM25 alone, all-MiniLM-L6-v2) run on the same items' text and the same queries.
Latency per stage is what it costs to get that stage's ranking for one query, in milliseconds.
"""

from __future__ import annotations

import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from .. import fusion, selfcheck
from ..errors import UnsupportedModalityError
from ..settings import RERANK_K
from ..items import Hit, Item
from .baselines import run_baseline
from .datasets import BeirDataset, corpus_items, query_of
from .metrics import DEFAULT_KS, dedupe, evaluate

CORPUS_DOC = "eval-corpus"  # every corpus item goes into one library document (batched embedding)
TOP_SAVED = 10  # ids kept per query and stage in the JSON


@dataclass(frozen=True)
class EvalConfig:
    """What the runner does besides the engine's own settings (embed point, priors, framing).

    - `dense`: "model" (the loaded model's vectors) or "minilm" (eval only: MiniLM's vectors as a
      strong dense stand-in, everything else the model's; see standins.py).
    - `words`: the model's own words as a third channel (on), or only dense + lexical (off).
    - `cache`: a file that keeps the model's embeddings, test queries and rerank scores between runs.
    """

    rerank_k: int = RERANK_K
    depth: int = 100  # candidates drawn from each first-stage ranker
    baselines: tuple[str, ...] = ()
    limit: int | None = None  # only the first N judged queries (quick runs)
    batch_size: int = 8
    dense: str = "model"
    words: bool = True
    cache: str | None = None
    check_queries: int = selfcheck.MAX_QUERIES  # test queries the self-check writes


def latency(values_ms: Sequence[float]) -> dict[str, float]:
    """mean / p50 / p95 in ms (p95 by linear interpolation)."""
    if not values_ms:
        return {"mean": 0.0, "p50": 0.0, "p95": 0.0}
    ordered = sorted(values_ms)
    if len(ordered) == 1:
        return {"mean": ordered[0], "p50": ordered[0], "p95": ordered[0]}
    cuts = statistics.quantiles(ordered, n=20, method="inclusive")
    return {"mean": statistics.fmean(ordered), "p50": statistics.median(ordered), "p95": cuts[18]}


def index_corpus(library: Any, items: Sequence[Item], source: str,
                 on_item: Callable[[int], None] = lambda done: None) -> tuple[int, dict[str, int]]:
    """Embed and store the items as one library document; return (indexed, left out by kind).

    Uses the library's own ingest step (`ingest_items`): the same embedding batches, text fallback and
    store writes as `Library.add`, but for items that come from a dataset rather than from files.
    """
    fields = {"content_hash": "", "path": source, "file_type": "eval", "added_at": time.time()}
    items = [replace(item, doc_id=CORPUS_DOC) for item in items]
    doc, _ = library.ingest_items(source, CORPUS_DOC, items, fields, on_item)
    indexed = {item.item_id for item in library.items(CORPUS_DOC)}
    left_out: dict[str, int] = {}
    for item in items:
        if item.item_id not in indexed:
            left_out[item.kind] = left_out.get(item.kind, 0) + 1
    return doc.items, left_out


def ids(hits: Sequence[Hit]) -> list[str]:
    return dedupe(hit.item.item_id for hit in hits)


def timed(call: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = call()
    return result, (time.perf_counter() - started) * 1000


def _every_tenth(line: str) -> bool:
    """Progress lines "... n/total": keep every tenth and the last."""
    done, _, total = line.rpartition(" ")[2].partition("/")
    return done.isdigit() and total.isdigit() and (int(done) % 10 == 0 or done == total)


def self_checks(engine: Any, library: Any, words: bool, limit: int, log: Callable[[str], None]) -> dict[str, Any]:
    """The library's self-check (all channels), and its decisions without the words channel on the
    same test queries: {"all": SelfCheck, "nowords": SelfCheck | None}."""
    main = library.self_check(lambda line: log("  " + line) if _every_tenth(line) else None, limit=limit)
    out: dict[str, Any] = {"all": main, "nowords": None}
    if words and main.measured and "words" in main.channels:
        by_id = {item.item_id: item for item in library.store.all_items()}
        queries = [(q["query"], by_id[q["target"]],
                    selfcheck.cloze_item(by_id[q["target"]])[1] if q.get("stand_in") == "cloze" else None)
                   for q in main.queries if q["target"] in by_id]
        out["nowords"] = selfcheck.measure(
            engine, list(by_id.values()),
            lambda query, replaced=(): library.channel_rankings(query, selfcheck.DEPTH, replaced),
            library.store.kind_of, len(library.store), ("dense", "lexical"), queries=queries)
    return out


def run_queries(engine: Any, library: Any, dataset: BeirDataset, qids: Sequence[str], config: EvalConfig,
                checks: dict[str, Any], log: Callable[[str], None] = lambda line: None,
                ) -> tuple[dict[str, dict[str, list[str]]], dict[str, list[float]], list[str]]:
    """Every query through every stage: (stage -> qid -> ranked ids, stage -> ms per query, skipped)."""
    store = library.store
    main, nowords = checks["all"], checks["nowords"]
    heads: dict[str, tuple[dict, float]] = {"": (main.fusion_weights() if main.measured else {"*": fusion.PLAIN},
                                                 main.rerank_share if main.measured else selfcheck.DEFAULT_SHARE)}
    if nowords is not None:
        heads["-nowords"] = (nowords.fusion_weights(), nowords.rerank_share)
    with_words = config.words and len(store.words) > 0
    stages = ["lexical", "dense"] + (["words"] if with_words else []) + ["plain"]
    for suffix in heads:
        stages += [f"fused{suffix}"] + ([f"final{suffix}"] if config.rerank_k else [])
    if config.rerank_k:
        stages.append("reranked")
    runs: dict[str, dict[str, list[str]]] = {stage: {} for stage in stages}
    ms: dict[str, list[float]] = {stage: [] for stage in stages}
    skipped: list[str] = []
    for number, qid in enumerate(qids, start=1):
        if number % 10 == 0:
            log(f"  query {number}/{len(qids)}")
        query = query_of(dataset, qid)
        try:
            (vector, words), embed_ms = timed(lambda: library.embed_query(query))
        except UnsupportedModalityError:
            skipped.append(qid)  # an image query for a text-only model
            continue
        (rankings, hits), first_ms = timed(lambda: store.channels(vector, query.text, config.depth,
                                                                  query_words=words))
        for channel in ("lexical", "dense", "words"):
            if channel in runs:
                runs[channel][qid] = rankings[channel]
                ms[channel].append(embed_ms + first_ms)
        runs["plain"][qid] = fusion.ordered(fusion.fuse({"dense": rankings["dense"], "lexical": rankings["lexical"]},
                                                        {"*": fusion.PLAIN}, store.kind_of))
        ms["plain"].append(embed_ms + first_ms)
        fused = {suffix: fusion.ordered(fusion.fuse(rankings, weights, store.kind_of))
                 for suffix, (weights, _) in heads.items()}
        for suffix, order in fused.items():
            runs[f"fused{suffix}"][qid] = order
            ms[f"fused{suffix}"].append(embed_ms + first_ms)
        if not config.rerank_k:
            continue
        head = dedupe(item_id for order in fused.values() for item_id in order[: config.rerank_k])
        reranked, rerank_ms = timed(lambda: engine.rerank(query, [hits[i] for i in head if i in hits],
                                                          batch_size=config.batch_size))
        scores = {hit.item.item_id: hit.rerank_score for hit in reranked}
        for suffix, (_, share) in heads.items():
            order = fused[suffix]
            own = {item_id: scores[item_id] for item_id in order[: config.rerank_k] if item_id in scores}
            runs[f"final{suffix}"][qid] = fusion.blend(order, own, share) if share > 0 else order
            ms[f"final{suffix}"].append(embed_ms + first_ms + (rerank_ms if share > 0 else 0.0))
        own = {item_id: scores[item_id] for item_id in fused[""][: config.rerank_k] if item_id in scores}
        runs["reranked"][qid] = fusion.blend(fused[""], own, 1.0)
        ms["reranked"].append(embed_ms + first_ms + rerank_ms)
    return runs, ms, skipped


def engine_settings(engine: Any) -> dict[str, Any]:
    settings = getattr(engine, "settings", None)
    return asdict(settings) if settings is not None else {}


def evaluate_engine(engine: Any, dataset: BeirDataset, config: EvalConfig = EvalConfig(),
                    work_dir: str | Path | None = None, log: Callable[[str], None] = lambda line: None,
                    ) -> dict[str, Any]:
    """Index `dataset` with `engine` in a temporary library, run its self-check and score every stage;
    a JSON-able report."""
    from ..library import Library
    from .standins import CachedEngine, DenseStandIn

    cached = CachedEngine(engine, config.cache) if config.cache else None
    engine = cached or engine
    if config.dense == "minilm":
        engine = DenseStandIn(engine)
    elif config.dense != "model":
        raise ValueError(f"unknown dense stage {config.dense!r}; use 'model' or 'minilm'")
    qids = dataset.judged_queries()[: config.limit]
    try:
        with tempfile.TemporaryDirectory(prefix="freeret-eval-", dir=work_dir) as tmp:
            library = Library(engine, Path(tmp) / "data", batch_size=config.batch_size, self_check=False,
                              words=config.words)
            log(f"loading {len(dataset.corpus)} corpus records ...")
            items = list(corpus_items(dataset, Path(tmp) / "media", library.media_settings))
            log(f"indexing {len(items)} items with {engine.model_id} ...")
            every = max(len(items) // 10, 1)
            (indexed, left_out), index_ms = timed(lambda: index_corpus(
                library, items, str(dataset.root), lambda done: done % every or log(f"  {done}/{len(items)} items")))
            log(f"indexed {indexed} items in {index_ms / 1000:.1f} s; self-check ...")
            checks, check_ms = timed(lambda: self_checks(engine, library, config.words, config.check_queries, log))
            log(f"self-check done in {check_ms / 1000:.1f} s; running {len(qids)} queries ...")
            runs, ms, skipped = run_queries(engine, library, dataset, qids, config, checks, log)
    finally:
        if cached is not None:
            cached.save()
    asked = [qid for qid in qids if qid not in skipped]
    qrels = {qid: dataset.qrels[qid] for qid in asked}
    stages: dict[str, dict[str, Any]] = {
        stage: {"metrics": evaluate(run, qrels, DEFAULT_KS), "ms_per_query": latency(ms[stage])}
        for stage, run in runs.items()}
    texts = {item.item_id: item.text for item in items}
    for name in config.baselines:
        log(f"baseline {name} ...")
        result = run_baseline(name, texts, {qid: dataset.queries[qid].get("text", "") for qid in asked},
                              max(config.depth, max(DEFAULT_KS)))
        runs[f"baseline:{name}"] = result.run
        stages[f"baseline:{name}"] = {"metrics": evaluate(result.run, qrels, DEFAULT_KS),
                                      "ms_per_query": {"mean": result.query_s * 1000 / max(len(asked), 1)},
                                      "index_s": result.index_s}
    return {
        "dataset": {"name": dataset.name, "path": str(dataset.root), "corpus": len(dataset.corpus),
                    "queries": len(dataset.queries), "evaluated_queries": len(asked), "skipped_queries": skipped,
                    "indexed_items": indexed, "left_out_items": left_out},
        "model": {"id": engine.model_id, "capabilities": sorted(engine.capabilities),
                  "prompt_version": engine.prompt_version, "settings": engine_settings(engine)},
        "config": asdict(config),
        "index": {"seconds": index_ms / 1000, "items_per_s": indexed / max(index_ms / 1000, 1e-9)},
        "self_check": {name: (json.loads(check.to_json()) if check is not None else None)
                       for name, check in checks.items()} | {"seconds": check_ms / 1000},
        "stages": stages,
        "targets": targets(stages),
        "per_query": {qid: {stage: run.get(qid, [])[:TOP_SAVED] for stage, run in runs.items()} for qid in asked},
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
    }


TOLERANCE = 0.01


def targets(stages: dict[str, dict[str, Any]], metric: str = "ndcg@10") -> dict[str, dict[str, Any]]:
    """The quality targets of the self-check, each with its figures and whether it holds:
    fused >= max(lexical, dense) - 0.01; final >= fused - 0.01; with words >= without (- 0.01)."""
    value = {stage: result["metrics"][metric] for stage, result in stages.items()}
    out: dict[str, dict[str, Any]] = {}

    def add(name: str, left: str, right: float, right_label: str) -> None:
        if left in value:
            out[name] = {"left": value[left], "right": right, "holds": value[left] >= right - TOLERANCE,
                         "rule": f"{left} >= {right_label} - {TOLERANCE}"}

    if "lexical" in value and "dense" in value:
        add("fusion is safe", "fused", max(value["lexical"], value["dense"]), "max(lexical, dense)")
        add("fusion is safe (no words)", "fused-nowords", max(value["lexical"], value["dense"]), "max(lexical, dense)")
    if "fused" in value:
        add("the rerank gate is safe", "final", value["fused"], "fused")
    if "fused-nowords" in value:
        add("the rerank gate is safe (no words)", "final-nowords", value["fused-nowords"], "fused-nowords")
        if "final" in value:
            add("the words channel helps", "final", value["final-nowords"], "final-nowords")
    return out


def format_report(report: dict[str, Any]) -> str:
    """A plain-text table: one row per stage with the metrics and the mean / p95 latency, the
    self-check's decisions and the targets."""
    names = list(next(iter(report["stages"].values()))["metrics"])
    data, model = report["dataset"], report["model"]
    check = report.get("self_check", {}).get("all") or {}
    lines = [f"{data['name']}: {data['indexed_items']} items, {data['evaluated_queries']} queries; "
             f"model {model['id']} ({model['prompt_version']}); index {report['index']['seconds']:.1f} s",
             f"self-check: {len(check.get('queries', []))} test queries ({check.get('rejected', 0)} rejected), "
             f"weights {check.get('weights')}, rerank share {check.get('rerank_share')}, floor {check.get('floor')}, "
             f"AUC {check.get('auc')}, {report.get('self_check', {}).get('seconds', 0):.0f} s",
             f"{'stage':<18}" + "".join(f"{name:>11}" for name in names) + f"{'ms/query':>11}{'p95 ms':>10}"]
    for stage, result in report["stages"].items():
        timing = result["ms_per_query"]
        p95 = f"{timing['p95']:>10.1f}" if "p95" in timing else f"{'':>10}"
        lines.append(f"{stage:<18}" + "".join(f"{result['metrics'][name]:>11.3f}" for name in names)
                     + f"{timing['mean']:>11.1f}" + p95)
    for name, target in report.get("targets", {}).items():
        lines.append(f"target {name}: {target['rule']}: {target['left']:.3f} vs {target['right']:.3f} "
                     f"{'holds' if target['holds'] else 'FAILS'}")
    if data["skipped_queries"]:
        lines.append(f"skipped {len(data['skipped_queries'])} image queries (text-only model)")
    if data["left_out_items"]:
        lines.append("left out (model cannot see them): "
                     + ", ".join(f"{n} {kind}" for kind, n in data["left_out_items"].items()))
    return "\n".join(lines)
