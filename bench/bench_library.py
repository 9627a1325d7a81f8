"""Library benchmark: ingestion throughput and memory on the sample files, query latency at 10k items.

    python bench/bench_library.py                 # tiny offline qwen2_vl model, samples from tests/data/samples
    python bench/bench_library.py --model DIR --samples DIR --items 10000 --dim 1536

Part 1 ingests the samples (each file type separately) through `Library.add` and prints pages/s,
video seconds per second, images/s and the process's peak RSS. Part 2 fills a Store with N random
unit vectors (and random-word texts for BM25) and prints p50/p95 of dense, lexical and hybrid
(fused) first-stage queries, with and without filters, plus the time to reopen the index.
The model's own query embedding and reranking are not part of part 2 (they depend on the model).
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from freeret_rag.items import Item  # noqa: E402
from freeret_rag.store import Store, connect  # noqa: E402


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def percentiles(samples_ms: list[float]) -> str:
    cuts = statistics.quantiles(samples_ms, n=20, method="inclusive")
    return f"p50 {statistics.median(samples_ms):7.2f} ms   p95 {cuts[18]:7.2f} ms"


def bench_ingestion(model: str, samples: Path, work: Path) -> None:
    import pymupdf

    from freeret_rag.engine import FreeRet
    from freeret_rag.library import Library
    from freeret_rag.media import kind_for_path

    started = time.perf_counter()
    engine = FreeRet.from_pretrained(model)
    print(f"model {engine.model_id}: loaded in {time.perf_counter() - started:.1f} s, "
          f"peak RSS {peak_rss_mib():.0f} MiB")
    groups: dict[str, list[Path]] = {}
    for path in sorted(samples.iterdir()):
        if path.is_file() and (kind := kind_for_path(path)):
            groups.setdefault(kind, []).append(path)
    library = Library(engine, work / "data")
    for kind in ("pdf", "image", "video", "text"):
        files = groups.get(kind, [])
        if not files:
            continue
        copies = []
        for path in files:
            shutil.copyfile(path, work / path.name)
            copies.append(work / path.name)
        started = time.perf_counter()
        report = library.add(copies)
        seconds = time.perf_counter() - started
        items = report.items
        if kind == "pdf":
            pages = sum(pymupdf.open(path).page_count for path in copies)
            rate = f"{pages / seconds:6.2f} pages/s ({pages} pages)"
        elif kind == "video":
            import decord

            duration = sum(len(r := decord.VideoReader(str(p))) / r.get_avg_fps() for p in copies)
            rate = f"{duration / seconds:6.2f} video s/s ({duration:.1f} s of video)"
        else:
            rate = f"{len(copies) / seconds:6.2f} files/s"
        print(f"ingest {kind:<5}: {len(copies)} file(s), {items:3d} items in {seconds:6.2f} s = {rate}; "
              f"skipped {len(report.skipped)}; peak RSS {peak_rss_mib():.0f} MiB")
    started = time.perf_counter()
    weights = library.fusion_weights  # measured once per index state (fusion.py), then cached
    print(f"fusion weights (dense, lexical) = ({weights[0]:.3f}, {weights[1]:.3f}), "
          f"measured in {time.perf_counter() - started:.1f} s")
    started = time.perf_counter()
    hits = library.search("mime type glob pattern", k=10, rerank=False)
    first = (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    library.search("mime type glob pattern", k=10, rerank_k=10)
    print(f"search on {len(library)} items with this model: first stage {first:.0f} ms ({len(hits)} hits), "
          f"with rerank of 10: {(time.perf_counter() - started) * 1000:.0f} ms")


def bench_queries(n: int, dim: int, queries: int, work: Path) -> None:
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(20000)]
    pick = random.Random(0)
    kinds = ("pdf_page", "image", "video_segment", "text")
    items = [Item(kind=kinds[i % 4], text=" ".join(pick.choices(words, k=60)), item_id=f"d{i // 100}:{i}",
                  doc_id=f"d{i // 100}", source=f"file{i // 100}.pdf", page=i % 100 + 1) for i in range(n)]
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    client = connect(work / "vectors")
    store = Store(client, "bench/random", "p1")
    started = time.perf_counter()
    for doc in range(0, n, 100):
        store.put(items[doc:doc + 100], vectors[doc:doc + 100], {"added_at": 1.0})
        store.commit(f"d{doc // 100}")
    print(f"\n{n} items x {dim} dims: written and committed in {time.perf_counter() - started:.1f} s")
    started = time.perf_counter()
    store = Store(client, "bench/random", "p1")
    store.lexical.search("w1", 1)  # the BM25 index is built on first use
    print(f"reopen (load metadata + build BM25): {time.perf_counter() - started:.2f} s")

    qvecs = rng.standard_normal((queries, dim)).astype(np.float32)
    qvecs /= np.linalg.norm(qvecs, axis=1, keepdims=True)
    qtexts = [" ".join(pick.choices(words, k=5)) for _ in range(queries)]
    cases = {
        "dense (Chroma, top 50)": lambda v, t: store.dense(v, 50),
        "lexical (BM25, top 50)": lambda v, t: store.lexical.search(t, 50),
        "hybrid fused (50 + 50)": lambda v, t: store.search(v, t, 50),
        "hybrid, kind filter (1/4)": lambda v, t: store.search(v, t, 50, kinds=["pdf_page"]),
        "hybrid, 3-document filter": lambda v, t: store.search(v, t, 50, doc_ids=["d1", "d2", "d3"]),
    }
    for name, call in cases.items():
        call(qvecs[0], qtexts[0])  # warm up
        times = []
        for vector, text in zip(qvecs, qtexts):
            started = time.perf_counter()
            call(vector, text)
            times.append((time.perf_counter() - started) * 1000)
        print(f"{name:<28} {percentiles(times)}")
    print(f"peak RSS {peak_rss_mib():.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model folder or hub id (default: a tiny offline qwen2_vl built on the fly)")
    parser.add_argument("--samples", type=Path, default=REPO / "tests" / "data" / "samples")
    parser.add_argument("--items", type=int, default=10000)
    parser.add_argument("--dim", type=int, default=1536, help="vector size (Qwen2-VL-2B: 1536)")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--skip-ingest", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    with tempfile.TemporaryDirectory(prefix="bench-library-") as tmp:
        work = Path(tmp)
        print(f"machine: {os.cpu_count()} CPUs; python {sys.version.split()[0]}")
        if not args.skip_ingest:
            model = args.model
            if model is None:
                from freeret_rag.devtools.tiny_models import build_tiny_model

                model = str(build_tiny_model("qwen2_vl", work / "tiny-qwen2_vl"))
            bench_ingestion(model, args.samples, work)
        bench_queries(args.items, args.dim, args.queries, work)


if __name__ == "__main__":
    main()
