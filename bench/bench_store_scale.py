"""Startup at scale: open time, peak RSS and first-stage query latency of a library of 1k, 10k, 100k items.

    python bench/bench_store_scale.py                                  # 1k, 10k, 100k items x 576 and 1536 dims
    python bench/bench_store_scale.py --sizes 1000 10000 --dims 576     # a quick run
    python bench/bench_store_scale.py --work /tmp/freeret-scale         # where the libraries are kept (reused)

Each library holds synthetic documents of 100 items (PDF pages, images, video segments, text chunks in
turn) with random unit vectors of a real hidden size (576: SmolVLM-256M, 1536: Qwen2-VL-2B), a text of
80 words drawn from a Zipf-distributed vocabulary of 50,000 made-up words, and 24 model words per item
(the "words" channel). Building the 100k x 1536 library takes many minutes: it is built once into
`--work` and reused by later runs (delete the folder to rebuild).

For every library, each variant runs in a child process of its own (so its peak RSS is its own):

- before: main's store (`git show REF:freeret_rag/store.py`, REF = --baseline-ref), which loads every
  item's metadata and text into memory and rebuilds BM25 (text + file name, and the words channel) at open;
- after, cold: this checkout's store with no persisted lexical index (it rebuilds it and saves it);
- after: this checkout's store opening with the persisted lexical index, as the app does once any
  process has written.

and prints open time, peak RSS and p50/p95 of dense (Chroma top 50), lexical (BM25 top 50) and fused
(dense + lexical + words, RRF, top 50) queries. The model's own query embedding and reranking are not
part of this (they depend on the model).
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
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from freeret_rag.items import Item  # noqa: E402
from freeret_rag.store import collection_name, connect  # noqa: E402

DOC_ITEMS = 100
WORDS_PER_ITEM = 80
VOCABULARY = 50_000
MODEL_WORDS = 24
KINDS = ("pdf_page", "image", "video_segment", "text")
MODEL_ID = "bench/random"
PROMPT_VERSION = "p1"
BASELINE_REF = "3a36974"  # main when this benchmark was written: every item in memory, BM25 rebuilt at open


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def vocabulary(rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = ["".join(rng.choice(letters, size=int(rng.integers(3, 10)))) + str(i % 7) for i in range(VOCABULARY)]
    weights = 1.0 / np.arange(1, VOCABULARY + 1) ** 1.07
    return words, weights / weights.sum()


def build(folder: Path, n: int, dim: int) -> None:
    """Write n complete items straight into Chroma, as Store.put + Store.commit leave them."""
    rng = np.random.default_rng(n + dim)
    words, p = vocabulary(np.random.default_rng(0))
    client = connect(folder)
    collection = client.get_or_create_collection(
        collection_name(MODEL_ID, PROMPT_VERSION), embedding_function=None,
        configuration={"hnsw": {"space": "cosine"}},
        metadata={"model_id": MODEL_ID, "prompt_version": PROMPT_VERSION, "status": "active"})
    step = 2000
    started = time.perf_counter()
    for start in range(0, n, step):
        count = min(step, n - start)
        vectors = rng.standard_normal((count, dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        picks = rng.choice(VOCABULARY, size=(count, WORDS_PER_ITEM), p=p)
        own = rng.choice(VOCABULARY, size=(count, MODEL_WORDS), p=p)
        ids, metas, texts = [], [], []
        for row in range(count):
            i = start + row
            doc = f"doc{i // DOC_ITEMS:06d}"
            item = Item(kind=KINDS[(i // DOC_ITEMS) % 4], text=" ".join(words[w] for w in picks[row]),
                        item_id=f"{doc}:{i % DOC_ITEMS}", doc_id=doc, source=f"file {i // DOC_ITEMS}.pdf",
                        page=i % DOC_ITEMS + 1, words=tuple(words[w] for w in own[row]))
            ids.append(item.item_id)
            texts.append(item.text)
            metas.append({**item.to_metadata(), "content_hash": doc * 4, "path": f"/bench/{item.source}",
                          "file_type": "pdf", "model_id": MODEL_ID, "prompt_version": PROMPT_VERSION,
                          "added_at": 1.0 + i // DOC_ITEMS, "complete": True,
                          "n_items": min(DOC_ITEMS, n - (i // DOC_ITEMS) * DOC_ITEMS)})
        collection.upsert(ids=ids, embeddings=vectors, metadatas=metas, documents=texts)
        print(f"  built {start + count}/{n} items ({time.perf_counter() - started:.0f} s)", flush=True)
    (folder / "built.json").write_text(json.dumps({"items": n, "dim": dim}))


def baseline_store_class(ref: str):
    """main's Store, loaded from git (relative imports resolve against this checkout's package)."""
    source = subprocess.run(["git", "-C", str(REPO), "show", f"{ref}:freeret_rag/store.py"],
                            check=True, capture_output=True, text=True).stdout
    spec = importlib.util.spec_from_loader("freeret_rag._store_baseline", loader=None)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "freeret_rag"
    sys.modules[spec.name] = module  # dataclasses look their module up there
    exec(compile(source, f"{ref}:freeret_rag/store.py", "exec"), module.__dict__)  # noqa: S102
    return module.Store


def percentiles(samples_ms: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(samples_ms, n=20, method="inclusive")
    return statistics.median(samples_ms), cuts[18]


def measure(folder: Path, dim: int, variant: str, queries: int, ref: str) -> dict:
    """One variant in this process: open, then time queries. Returns the figures."""
    client = connect(folder)
    cache = folder / "lexical"
    if variant == "before":
        store_class = baseline_store_class(ref)
        started = time.perf_counter()
        store = store_class(client, MODEL_ID, PROMPT_VERSION)
        store.lexical.search("warm", 1)  # main builds BM25 on first use: part of opening
        store.words.search("warm", 1)
    else:
        from freeret_rag.store import Store

        if variant == "cold":
            for path in cache.glob("*"):
                path.unlink()
        started = time.perf_counter()
        store = Store(client, MODEL_ID, PROMPT_VERSION, cache_dir=cache)
        store.lexical.search("warm", 1)
        store.words.search("warm", 1)
    opened = time.perf_counter() - started
    if variant == "cold":
        started = time.perf_counter()
        store.persist(stamp=True)  # a library built outside the app has no generation yet
        opened_save = time.perf_counter() - started
    rng = np.random.default_rng(7)
    words, p = vocabulary(np.random.default_rng(0))
    vectors = rng.standard_normal((queries, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    texts = [" ".join(words[w] for w in rng.choice(VOCABULARY, size=4, p=p)) for _ in range(queries)]
    own = [[words[w] for w in rng.choice(VOCABULARY, size=10, p=p)] for _ in range(queries)]
    cases = {
        "dense": lambda i: store.dense(vectors[i], 50),
        "lexical": lambda i: store.lexical.search(texts[i], 50),
        "fused": lambda i: store.search(vectors[i], texts[i], 50, query_words=own[i]),
    }
    figures = {"variant": variant, "open_s": opened, "items": len(store)}
    if variant == "cold":
        figures["save_s"] = opened_save
    for name, call in cases.items():
        call(0)  # warm up
        times = []
        for i in range(queries):
            started = time.perf_counter()
            call(i)
            times.append((time.perf_counter() - started) * 1000)
        figures[name] = percentiles(times)
    figures["peak_rss_mib"] = peak_rss_mib()
    return figures


def run_child(folder: Path, dim: int, variant: str, queries: int, ref: str) -> dict:
    command = [sys.executable, __file__, "--measure", variant, "--folder", str(folder), "--dims", str(dim),
               "--queries", str(queries), "--baseline-ref", ref]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/freeret-bench-store-scale"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--dims", type=int, nargs="+", default=[576, 1536])
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--baseline-ref", default=BASELINE_REF, help="git ref of the 'before' store.py")
    parser.add_argument("--variants", nargs="+", default=["before", "cold", "after"])
    parser.add_argument("--build-only", action="store_true")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    if args.measure:
        print(json.dumps(measure(args.folder, args.dims[0], args.measure, args.queries, args.baseline_ref)))
        return
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; python {sys.version.split()[0]}")
    for n in args.sizes:
        for dim in args.dims:
            folder = args.work / f"n{n}-d{dim}"
            if not (folder / "built.json").exists():
                print(f"building {n} items x {dim} dims in {folder} ...", flush=True)
                build(folder, n, dim)
            if args.build_only:
                continue
            for variant in args.variants:
                load = os.getloadavg()[0]
                f = run_child(folder, dim, variant, args.queries, args.baseline_ref)
                extra = f", save {f['save_s']:.2f} s" if "save_s" in f else ""
                print(f"{n:>7} items x {dim:>4}  {variant:<6} open {f['open_s']:7.2f} s{extra}  "
                      f"peak RSS {f['peak_rss_mib']:6.0f} MiB  "
                      + "  ".join(f"{name} p50 {f[name][0]:6.1f} / p95 {f[name][1]:6.1f} ms"
                                  for name in ("dense", "lexical", "fused"))
                      + f"  (load {load:.1f})", flush=True)


if __name__ == "__main__":
    main()
