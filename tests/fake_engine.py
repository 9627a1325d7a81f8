"""A model-free engine for storage tests: deterministic vectors (from a hash of what an item holds),
optionally pausing inside `embed` on a file barrier so another process can act mid-ingestion.

    engine = FakeEngine(barrier=Path("bar"), block_at=2)   # 2nd embed call writes bar/waiting, waits for bar/go
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import numpy as np

DIM = 16


def vector(text: str) -> np.ndarray:
    raw = np.frombuffer(hashlib.sha256(text.encode()).digest()[:DIM], np.uint8).astype(np.float32) + 1.0
    return raw / np.linalg.norm(raw)


class FakeEngine:
    model_id = "fake/model"
    prompt_version = "fake-1"

    def __init__(self, barrier: Path | None = None, block_at: int = 0, fail: bool = False) -> None:
        self.barrier, self.block_at, self.fail = barrier, block_at, fail
        self.calls = 0
        self.embedded = 0  # items embedded, over all calls

    def supports(self, item) -> bool:
        return True

    def embed(self, items, batch_size=None) -> np.ndarray:
        self.calls += 1
        if self.fail:
            raise RuntimeError("embedding failed on purpose")
        if self.barrier is not None and self.calls == self.block_at:
            (self.barrier / "waiting").write_text(str(os.getpid()))
            while not (self.barrier / "go").exists():
                time.sleep(0.05)
        self.embedded += len(items)
        return np.stack([vector(f"{item.source}\n{item.page}\n{item.text}") for item in items])

    def embed_query(self, query) -> np.ndarray:
        return vector(getattr(query, "text", query))
