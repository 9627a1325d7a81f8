"""Stage-by-stage retrieval evaluation of one engine on one BEIR dataset.

The corpus is indexed through the library (embedding, text fallback for text-only models, Chroma +
BM25 store) into a temporary data folder; then every judged query is run once and four rankings are
read off it:

- `lexical`:  BM25 over item text and file names (the store's lexical index)
- `dense`:    the model's embedding (cosine, Chroma)
- `fused`:    both fused by reciprocal rank fusion (what the library reranks)
- `reranked`: the top `rerank_k` of `fused` (or of `dense`, fusion off) reordered by the model

Optional baselines (BM25 alone, all-MiniLM-L6-v2) run on the same items' text and the same queries.
Latency per stage is what it costs to get that stage's ranking for one query, in milliseconds.
"""

from __future__ import annotations

import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

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
    """What the runner does besides the engine's own settings (embed point, priors, framing)."""

    rerank_k: int = RERANK_K
    fusion: bool = True
    depth: int = 100  # candidates drawn from each first-stage ranker
    baselines: tuple[str, ...] = ()
    limit: int | None = None  # only the first N judged queries (quick runs)
    batch_size: int = 8


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


def run_queries(engine: Any, library: Any, dataset: BeirDataset, qids: Sequence[str], config: EvalConfig,
                log: Callable[[str], None] = lambda line: None,
                ) -> tuple[dict[str, dict[str, list[str]]], dict[str, list[float]], list[str]]:
    """Every query through every stage: (stage -> qid -> ranked ids, stage -> ms per query, skipped)."""
    store = library.store
    weights = library.fusion_weights if config.fusion else (1.0, 1.0)  # cached by the library
    stages = ["lexical", "dense"] + (["fused"] if config.fusion else []) + (["reranked"] if config.rerank_k else [])
    runs: dict[str, dict[str, list[str]]] = {stage: {} for stage in stages}
    ms: dict[str, list[float]] = {stage: [] for stage in stages}
    skipped: list[str] = []
    for number, qid in enumerate(qids, start=1):
        if number % 10 == 0:
            log(f"  query {number}/{len(qids)}")
        query = query_of(dataset, qid)
        try:
            vector, embed_ms = timed(lambda: engine.embed_query(query))
        except UnsupportedModalityError:
            skipped.append(qid)  # an image query for a text-only model
            continue
        lexical, lexical_ms = timed(lambda: store.lexical.search(query.text, config.depth))
        dense, dense_ms = timed(lambda: store.dense(vector, config.depth))
        runs["lexical"][qid] = [item_id for item_id, _ in lexical]
        runs["dense"][qid] = ids(dense)
        ms["lexical"].append(lexical_ms)
        ms["dense"].append(embed_ms + dense_ms)
        first, first_ms = dense, embed_ms + dense_ms
        if config.fusion:
            first, fused_ms = timed(lambda: store.search(vector, query.text, config.depth, weights=weights))
            first_ms = embed_ms + fused_ms
            runs["fused"][qid] = ids(first)
            ms["fused"].append(first_ms)
        if config.rerank_k:
            top = first[: config.rerank_k]
            reranked, rerank_ms = timed(lambda: engine.rerank(query, top, batch_size=config.batch_size))
            runs["reranked"][qid] = ids(reranked + first[config.rerank_k:])
            ms["reranked"].append(first_ms + rerank_ms)
    return runs, ms, skipped


def engine_settings(engine: Any) -> dict[str, Any]:
    settings = getattr(engine, "settings", None)
    return asdict(settings) if settings is not None else {}


def evaluate_engine(engine: Any, dataset: BeirDataset, config: EvalConfig = EvalConfig(),
                    work_dir: str | Path | None = None, log: Callable[[str], None] = lambda line: None,
                    ) -> dict[str, Any]:
    """Index `dataset` with `engine` in a temporary library and score every stage; a JSON-able report."""
    from ..library import Library

    qids = dataset.judged_queries()[: config.limit]
    with tempfile.TemporaryDirectory(prefix="freeret-eval-", dir=work_dir) as tmp:
        library = Library(engine, Path(tmp) / "data", batch_size=config.batch_size)
        log(f"loading {len(dataset.corpus)} corpus records ...")
        items = list(corpus_items(dataset, Path(tmp) / "media", library.media_settings))
        log(f"indexing {len(items)} items with {engine.model_id} ...")
        every = max(len(items) // 10, 1)
        (indexed, left_out), index_ms = timed(lambda: index_corpus(
            library, items, str(dataset.root), lambda done: done % every or log(f"  {done}/{len(items)} items")))
        log(f"indexed {indexed} items in {index_ms / 1000:.1f} s; running {len(qids)} queries ...")
        # the library may measure its fusion weights on the index (once, cached): not a per-query cost
        weights, weights_ms = timed(lambda: library.fusion_weights) if config.fusion else ((1.0, 1.0), 0.0)
        runs, ms, skipped = run_queries(engine, library, dataset, qids, config, log)
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
        "fusion": {"dense_weight": weights[0], "lexical_weight": weights[1], "seconds": weights_ms / 1000},
        "stages": stages,
        "per_query": {qid: {stage: run.get(qid, [])[:TOP_SAVED] for stage, run in runs.items()} for qid in asked},
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
    }


def format_report(report: dict[str, Any]) -> str:
    """A plain-text table: one row per stage with the metrics and the mean / p95 latency."""
    names = list(next(iter(report["stages"].values()))["metrics"])
    data, model = report["dataset"], report["model"]
    lines = [f"{data['name']}: {data['indexed_items']} items, {data['evaluated_queries']} queries; "
             f"model {model['id']} ({model['prompt_version']}); index {report['index']['seconds']:.1f} s; "
             f"RRF weights dense {report['fusion']['dense_weight']:.3f}, lexical {report['fusion']['lexical_weight']:.3f}",
             f"{'stage':<18}" + "".join(f"{name:>11}" for name in names) + f"{'ms/query':>11}{'p95 ms':>10}"]
    for stage, result in report["stages"].items():
        timing = result["ms_per_query"]
        p95 = f"{timing['p95']:>10.1f}" if "p95" in timing else f"{'':>10}"
        lines.append(f"{stage:<18}" + "".join(f"{result['metrics'][name]:>11.3f}" for name in names)
                     + f"{timing['mean']:>11.1f}" + p95)
    if data["skipped_queries"]:
        lines.append(f"skipped {len(data['skipped_queries'])} image queries (text-only model)")
    if data["left_out_items"]:
        lines.append("left out (model cannot see them): "
                     + ", ".join(f"{n} {kind}" for kind, n in data["left_out_items"].items()))
    return "\n".join(lines)
