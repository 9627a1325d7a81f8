"""Engine wrappers for eval runs: a strong dense stand-in, and a cache of the model's expensive work.

`DenseStandIn(engine)` replaces the model's embedding vectors with all-MiniLM-L6-v2's (of the item's
text), while everything else (the model's own words, reranking, the self-check's test queries) stays
the loaded model's. It answers one question: do the fusion weights and the rerank gate behave when
the dense channel is *good*? (A 135M text model's vectors are near random; a real VLM's would not be.)
Eval only: the library never uses it.

`CachedEngine(engine, path)` remembers embeddings with words, written queries and rerank scores per
(model, prompt version, input) in one pickle, so a second eval run of the same model on the same
data (e.g. with the stand-in, or with the words channel off) does not redo hours of CPU work.
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..items import Hit, Item, Query
from .baselines import MiniLM


def _item_key(item: Item) -> str:
    return hashlib.sha1(repr((item.kind, item.text, [str(i) for i in item.images])).encode()).hexdigest()


def _query_text(query: Query | str) -> str:
    return query.text if isinstance(query, Query) else query


class _Wrapper:
    """Delegates every attribute it does not define to the wrapped engine."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)


class CachedEngine(_Wrapper):
    """The engine with its embeddings (and words), written queries and rerank scores memoised on disk."""

    def __init__(self, engine: Any, path: str | Path) -> None:
        super().__init__(engine)
        self.path = Path(path)
        self.space = f"{engine.model_id}\0{engine.prompt_version}"
        self.data: dict[str, dict] = {"embed": {}, "query": {}, "write": {}, "rerank": {}}
        if self.path.is_file():
            with open(self.path, "rb") as handle:
                stored = pickle.load(handle)
            if stored.get("space") == self.space:
                self.data = stored["data"]
        self.hits = 0

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "wb") as handle:
            pickle.dump({"space": self.space, "data": self.data}, handle)

    def embed_with_words(self, items: Sequence[Item], batch_size: int | None = None, top_words: int = 24):
        keys = [f"{_item_key(item)}:{top_words}" for item in items]
        todo = [i for i, key in enumerate(keys) if key not in self.data["embed"]]
        if todo:
            vectors, words = self.engine.embed_with_words([items[i] for i in todo], batch_size=batch_size,
                                                          top_words=top_words)
            for row, i in enumerate(todo):
                self.data["embed"][keys[i]] = (vectors[row], words[row])
        self.hits += len(items) - len(todo)
        pairs = [self.data["embed"][key] for key in keys]
        return np.stack([vector for vector, _ in pairs]), [words for _, words in pairs]

    def embed(self, items: Sequence[Item], batch_size: int | None = None) -> np.ndarray:
        return self.embed_with_words(items, batch_size)[0]

    def embed_query_with_words(self, query: Query | str, top_words: int = 24):
        key = f"{_query_text(query)}:{top_words}"
        if key not in self.data["query"]:
            self.data["query"][key] = self.engine.embed_query_with_words(query, top_words=top_words)
        return self.data["query"][key]

    def embed_query(self, query: Query | str) -> np.ndarray:
        return self.embed_query_with_words(query)[0]

    def write_query(self, item: Item) -> str:
        key = _item_key(item)
        if key not in self.data["write"]:
            self.data["write"][key] = self.engine.write_query(item)
        return self.data["write"][key]

    def rerank(self, query: Query | str, candidates: Sequence[Hit | Item], batch_size: int | None = None) -> list[Hit]:
        hits = [c if isinstance(c, Hit) else Hit(c) for c in candidates]
        text = _query_text(query)
        keys = [f"{text}\0{_item_key(hit.item)}" for hit in hits]
        todo = [i for i, key in enumerate(keys) if key not in self.data["rerank"]]
        if todo:
            scored = self.engine.rerank(query, [hits[i] for i in todo], batch_size=batch_size)
            by_item = {_item_key(hit.item): hit.rerank_score for hit in scored}
            for i in todo:
                self.data["rerank"][keys[i]] = by_item[_item_key(hits[i].item)]
        for hit, key in zip(hits, keys):
            hit.rerank_score = self.data["rerank"][key]
        return sorted(hits, key=lambda hit: hit.rerank_score, reverse=True)


class DenseStandIn(_Wrapper):
    """The loaded model with MiniLM's vectors as its dense channel (eval only; see the module doc)."""

    def __init__(self, engine: Any, encoder: MiniLM | None = None) -> None:
        super().__init__(engine)
        self.encoder = encoder or MiniLM()

    @property
    def model_id(self) -> str:
        return f"{self.engine.model_id}+minilm-dense"

    def embed_with_words(self, items: Sequence[Item], batch_size: int | None = None, top_words: int = 24):
        _, words = self.engine.embed_with_words(items, batch_size=batch_size, top_words=top_words)
        return self.encoder.encode([item.text for item in items]), words

    def embed(self, items: Sequence[Item], batch_size: int | None = None) -> np.ndarray:
        return self.encoder.encode([item.text for item in items])

    def embed_query_with_words(self, query: Query | str, top_words: int = 24):
        _, words = self.engine.embed_query_with_words(query, top_words=top_words)
        return self.encoder.encode([_query_text(query)])[0], words

    def embed_query(self, query: Query | str) -> np.ndarray:
        return self.encoder.encode([_query_text(query)])[0]
