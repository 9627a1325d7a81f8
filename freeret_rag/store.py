"""Where vectors live: one Chroma collection per (model, prompt version), a BM25 index beside it, and
reciprocal rank fusion of the two rankings.

Crash safety lives here too. A document's items are written with `complete=False` and flipped to
`complete=True` (with the item count) in one update once all of them are stored; searches and listings
only see complete items, and `purge_incomplete` removes what a crash left behind, asking the caller
which writers (the `writer` metadata of the items) are dead. Chroma is the only source of truth, so
the same rules hold for the embedded client and for a Chroma server; the in-memory view of complete
items is this process's copy, which `committed` refreshes for one document from Chroma.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence
from urllib.parse import urlparse

import bm25s
import numpy as np

from .fusion import CHANNELS, PLAIN, RRF_K, Weights, fuse, rrf  # noqa: F401  (rrf re-exported)
from .items import Hit, Item, ItemKind

logging.getLogger("bm25s").setLevel(logging.WARNING)  # it sets itself to DEBUG on import

COLLECTION_PREFIX = "freeret-"
_MIN_SHARE = 0.1  # below this share of wanted items, let Chroma filter (see Store.dense)
_PAGE = 5000  # Chroma get() page size: servers cap a request's batch size
# Metadata written on every item besides Item.to_metadata(): what the document is and where it came from.
DOC_FIELDS = ("content_hash", "path", "file_type", "model_id", "prompt_version", "added_at")


def connect(data_dir: Path, chroma_url: str | None = None, *, fresh: bool = False):
    """An embedded PersistentClient under `data_dir/chroma`, or an HttpClient for a server URL.

    Chroma shares one embedded client (and its in-memory HNSW index) per folder and process. After
    another process wrote, `fresh` drops that shared one so the new client reads the folder anew:
    a stale index would otherwise be persisted over the other process's vectors. Clients opened
    before keep working (stale) for reads.
    """
    import chromadb
    from chromadb.api.shared_system_client import SharedSystemClient
    from chromadb.config import Settings

    # _env_file=None: Chroma's settings would otherwise read a `.env` in whatever folder we run from.
    settings = Settings(anonymized_telemetry=False, _env_file=None)
    if chroma_url:
        url = urlparse(chroma_url if "://" in chroma_url else f"http://{chroma_url}")
        ssl = url.scheme == "https"
        return chromadb.HttpClient(host=url.hostname or "localhost", port=url.port or (443 if ssl else 8000),
                                   ssl=ssl, settings=settings)
    path = Path(data_dir) / "chroma"
    path.mkdir(parents=True, exist_ok=True)
    if fresh:
        SharedSystemClient._identifier_to_system.pop(str(path), None)
    return chromadb.PersistentClient(path=str(path), settings=settings)


def server_unreachable(error: BaseException | None) -> bool:
    """Whether `error`, or an error that led to it, says that a Chroma server could not be reached
    (refused, reset, timed out): httpx's transport errors, and the ValueError HttpClient raises."""
    import httpx

    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, httpx.TransportError):
            return True
        if isinstance(error, ValueError) and "Could not connect to a Chroma server" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


def collection_name(model_id: str, prompt_version: str) -> str:
    """Readable and unique: a slug of the model name plus a hash of (model, prompt version).

    Chroma wants 3-63 characters of [a-zA-Z0-9._-], starting and ending with a letter or digit.
    """
    digest = hashlib.sha256(f"{model_id}\0{prompt_version}".encode()).hexdigest()[:10]
    base = re.split(r"[\\/]", model_id.rstrip("/\\"))[-1] or "model"
    slug = re.sub(r"[^a-zA-Z0-9]+", "-", base).strip("-")[:40] or "model"
    return f"{COLLECTION_PREFIX}{slug}-{digest}"


@dataclass(frozen=True)
class IndexInfo:
    """One collection of this app: which embedding space it holds and whether it is usable."""

    name: str
    model_id: str
    prompt_version: str
    status: str  # "active": the library's index; "building": a re-index in progress
    count: int


def list_indexes(client) -> list[IndexInfo]:
    out = []
    for collection in client.list_collections():
        name = collection if isinstance(collection, str) else collection.name
        if not name.startswith(COLLECTION_PREFIX):
            continue
        col = client.get_collection(name, embedding_function=None)
        meta = col.metadata or {}
        out.append(IndexInfo(name, meta.get("model_id", "?"), meta.get("prompt_version", "?"),
                             meta.get("status", "active"), col.count()))
    return out


@dataclass(frozen=True)
class DocumentInfo:
    """One indexed file, as `list` shows it."""

    doc_id: str
    source: str
    path: str
    file_type: str
    items: int
    content_hash: str
    added_at: float
    model_id: str
    prompt_version: str


def lexical_text(source: str, text: str) -> str:
    """What BM25 indexes for an item: its file name (split at _ - .) and its text."""
    return f"{re.sub(r'[_.-]+', ' ', source)}\n{text}"


def _tokenize(texts: list[str]) -> list[list[str]]:
    return bm25s.tokenize(texts, stopwords="en", return_ids=False, show_progress=False)


class LexicalIndex:
    """BM25 (bm25s) over complete items. Rebuilt lazily after changes (10k items: under 1 s) so that
    a batch of additions costs one rebuild; searches read an immutable snapshot, so they are safe
    from any thread."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[str, str, str]] = {}  # item_id -> (text, kind, doc_id)
        self._lock = threading.Lock()
        self._snapshot: tuple[bm25s.BM25, np.ndarray, np.ndarray, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, entries: Iterable[tuple[str, str, str, str]]) -> None:
        """Add or replace (item_id, text, kind, doc_id) entries."""
        with self._lock:
            for item_id, text, kind, doc_id in entries:
                self._entries[item_id] = (text, kind, doc_id)
            self._snapshot = None

    def remove_documents(self, doc_ids: Iterable[str]) -> None:
        doc_ids = set(doc_ids)
        with self._lock:
            self._entries = {key: value for key, value in self._entries.items() if value[2] not in doc_ids}
            self._snapshot = None

    def _current(self):
        with self._lock:
            if self._snapshot is None and self._entries:
                ids = list(self._entries)
                texts, kinds, docs = zip(*(self._entries[i] for i in ids))
                bm25 = bm25s.BM25()
                bm25.index(_tokenize(list(texts)), show_progress=False)
                self._snapshot = (bm25, np.array(ids), np.array(kinds), np.array(docs))
            return self._snapshot

    def search(self, text: str, n: int, kinds: Sequence[str] | None = None,
               doc_ids: Sequence[str] | None = None) -> list[tuple[str, float]]:
        """Top-n (item_id, BM25 score), best first; items sharing no term with the query are left out."""
        snapshot = self._current()
        if snapshot is None or not text.strip():
            return []
        bm25, ids, item_kinds, item_docs = snapshot
        tokens = [t for t in _tokenize([text])[0] if t in bm25.vocab_dict]
        if not tokens:
            return []
        mask = np.ones(len(ids), dtype=np.float32)
        if kinds:
            mask *= np.isin(item_kinds, list(kinds))
        if doc_ids:
            mask *= np.isin(item_docs, list(doc_ids))
        found, scores = bm25.retrieve([tokens], k=min(n, len(ids)), weight_mask=mask, show_progress=False,
                                      n_threads=0)
        return [(str(ids[i]), float(s)) for i, s in zip(found[0], scores[0]) if s > 0]


def _where(*conditions: dict[str, Any] | None) -> dict[str, Any]:
    present = [c for c in conditions if c]
    return present[0] if len(present) == 1 else {"$and": present}


def _item_order(item: Item) -> tuple:
    return (item.page or 0, item.t_start or 0.0, item.chunk or 0, item.item_id)


class Store:
    """One embedding space: a Chroma collection plus its lexical index and an in-memory view of its
    complete items (for listings and for building hits). `status` is set when the collection is
    created; an existing collection keeps its own."""

    def __init__(self, client, model_id: str, prompt_version: str, status: str = "active") -> None:
        self.client = client
        self.model_id = model_id
        self.prompt_version = prompt_version
        self.name = collection_name(model_id, prompt_version)
        self.collection = client.get_or_create_collection(
            self.name, embedding_function=None, configuration={"hnsw": {"space": "cosine"}},
            metadata=self._meta(status))
        self.lexical = LexicalIndex()
        self.words = LexicalIndex()  # the model's own words per item (PromptReps), a keyword channel of its own
        self._items: dict[str, tuple[dict[str, Any], str]] = {}  # complete items: id -> (metadata, text)
        self._lock = threading.Lock()
        self._load()

    def _meta(self, status: str) -> dict[str, str]:
        return {"model_id": self.model_id, "prompt_version": self.prompt_version, "status": status}

    @property
    def status(self) -> str:
        return (self.collection.metadata or {}).get("status", "active")

    def set_status(self, status: str) -> None:
        self.collection.modify(metadata={**self._stored_meta(), **self._meta(status)})

    def _stored_meta(self) -> dict[str, Any]:
        """The collection's metadata as stored now (another process may have changed it)."""
        return dict(self.client.get_collection(self.name, embedding_function=None).metadata or {})

    def get_note(self, key: str) -> str | None:
        """A string kept with the index (e.g. the self-check's result), or None."""
        value = self._stored_meta().get(f"note:{key}")
        return value if isinstance(value, str) else None

    def set_note(self, key: str, value: str) -> None:
        meta = {**self._stored_meta(), f"note:{key}": value}
        self.collection.modify(metadata=meta)

    # -- reading ---------------------------------------------------------------------------------
    def _get(self, where: dict[str, Any], include: list[str]) -> Iterable[tuple[str, dict, str]]:
        offset = 0
        while True:
            page = self.collection.get(where=where, include=include, limit=_PAGE, offset=offset)
            metas = page.get("metadatas") or [{}] * len(page["ids"])
            docs = page.get("documents") or [""] * len(page["ids"])
            yield from zip(page["ids"], metas, docs)
            if len(page["ids"]) < _PAGE:
                return
            offset += _PAGE

    def _load(self) -> None:
        self._remember((i, m, d or "") for i, m, d in self._get({"complete": True}, ["metadatas", "documents"]))

    def _remember(self, rows: Iterable[tuple[str, dict, str]]) -> None:
        rows = list(rows)
        with self._lock:
            for item_id, meta, text in rows:
                self._items[item_id] = (meta, text)
        self.lexical.add((i, lexical_text(m.get("source", ""), t), m["kind"], m["doc_id"]) for i, m, t in rows)
        self.words.add((i, m["words"], m["kind"], m["doc_id"]) for i, m, t in rows if m.get("words"))

    def _forget(self, doc_ids: set[str]) -> None:
        with self._lock:
            self._items = {k: v for k, v in self._items.items() if v[0]["doc_id"] not in doc_ids}
        self.lexical.remove_documents(doc_ids)
        self.words.remove_documents(doc_ids)

    def __len__(self) -> int:
        return len(self._items)

    def documents(self, doc_id: str | None = None) -> list[DocumentInfo]:
        """Complete documents (or the one with `doc_id`), oldest first."""
        with self._lock:
            metas = [meta for meta, _ in self._items.values() if doc_id is None or meta["doc_id"] == doc_id]
        counts = Counter(meta["doc_id"] for meta in metas)
        first: dict[str, dict] = {}
        for meta in metas:
            first.setdefault(meta["doc_id"], meta)
        docs = [DocumentInfo(doc_id=d, source=m.get("source", ""), items=counts[d],
                             **{f: m.get(f, 0.0 if f == "added_at" else "") for f in DOC_FIELDS})
                for d, m in first.items()]
        return sorted(docs, key=lambda doc: (doc.added_at, doc.source))

    def document(self, doc_id: str) -> DocumentInfo | None:
        return next(iter(self.documents(doc_id)), None)

    def all_items(self) -> list[Item]:
        """Every complete item (text and metadata, no vectors), e.g. to calibrate fusion."""
        with self._lock:
            return [Item.from_metadata(item_id, meta, text) for item_id, (meta, text) in self._items.items()]

    def items(self, doc_id: str) -> list[Item]:
        """A complete document's items in reading order (pages, time, chunks)."""
        with self._lock:
            rows = [(k, m, t) for k, (m, t) in self._items.items() if m["doc_id"] == doc_id]
        return sorted((Item.from_metadata(k, m, t) for k, m, t in rows), key=_item_order)

    def vectors(self, doc_id: str) -> dict[str, tuple[str | None, np.ndarray]]:
        """A complete document's stored vectors: item_id -> (its `kind_version` metadata, or None
        for an item stored before kinds had one; the vector)."""
        found: dict[str, tuple[str | None, np.ndarray]] = {}
        while True:
            page = self.collection.get(where=_where({"doc_id": doc_id}, {"complete": True}), limit=_PAGE,
                                       offset=len(found), include=["metadatas", "embeddings"])
            vectors = page["embeddings"] if page["embeddings"] is not None else []
            for item_id, meta, vector in zip(page["ids"], page["metadatas"] or [{}] * len(page["ids"]), vectors):
                found[item_id] = (meta.get("kind_version"), np.asarray(vector, np.float32))
            if len(page["ids"]) < _PAGE:
                return found

    # -- writing ---------------------------------------------------------------------------------
    def _batches(self, n: int) -> Iterable[slice]:
        step = self.client.get_max_batch_size()  # 5461 for the embedded client
        return (slice(start, start + step) for start in range(0, n, step))

    def put(self, items: Sequence[Item], vectors: np.ndarray, doc_fields: dict[str, Any]) -> None:
        """Upsert items with their vectors, pending (invisible to search) until `commit`."""
        vectors = np.asarray(vectors, np.float32)
        for part in self._batches(len(items)):
            self.collection.upsert(
                ids=[item.item_id for item in items[part]], embeddings=vectors[part],
                metadatas=[{**item.to_metadata(), **doc_fields, "complete": False} for item in items[part]],
                documents=[item.text for item in items[part]])

    def commit(self, doc_id: str) -> int:
        """Make a document's pending items visible. Returns how many it has.

        One update per Chroma batch; should a crash tear a large document's flip, its remaining
        pending items make `purge_incomplete` remove the whole document.
        """
        rows = list(self._get({"doc_id": doc_id}, ["metadatas", "documents"]))
        flip = {"complete": True, "n_items": len(rows)}
        for part in self._batches(len(rows)):
            self.collection.update(ids=[row[0] for row in rows[part]], metadatas=[flip] * len(rows[part]))
        self._remember((item_id, {**meta, **flip}, text or "") for item_id, meta, text in rows)
        return len(rows)

    def delete(self, doc_ids: Iterable[str]) -> None:
        """Remove every item (pending or complete) of these documents."""
        doc_ids = set(doc_ids)
        if not doc_ids:
            return
        self.collection.delete(where={"doc_id": {"$in": sorted(doc_ids)}})
        self._forget(doc_ids)

    def committed(self, doc_id: str) -> DocumentInfo | None:
        """The document as Chroma has it now (another process may have added or deleted it since
        this view was loaded); the view is brought up to date for this document."""
        rows = [(i, m, d or "") for i, m, d in self._get({"doc_id": doc_id}, ["metadatas", "documents"])
                if m.get("complete")]
        with self._lock:
            known = {key for key, (meta, _) in self._items.items() if meta["doc_id"] == doc_id}
        if known != {row[0] for row in rows}:  # else leave the lexical index alone (no rebuild)
            self._forget({doc_id})
            self._remember(rows)
        return self.document(doc_id)

    def committed_at_path(self, path: str) -> list[DocumentInfo]:
        """Complete documents whose `path` metadata is `path`, as Chroma has them now."""
        doc_ids = {m["doc_id"] for _, m, _ in self._get(_where({"path": path}, {"complete": True}), ["metadatas"])}
        return [doc for doc in map(self.committed, sorted(doc_ids)) if doc is not None]

    def pending_documents(self) -> dict[str, set[str | None]]:
        """Documents with pending items: doc_id -> the writers (`writer` metadata) of those items."""
        pending: dict[str, set[str | None]] = {}
        for _, meta, _ in self._get({"complete": False}, ["metadatas"]):
            pending.setdefault(meta["doc_id"], set()).add(meta.get("writer"))
        return pending

    def purge_incomplete(self, writer_dead: Callable[[str | None], bool] = lambda writer: True) -> set[str]:
        """Delete documents a crash left half-written (pending items, or fewer items than committed)
        whose writers are all dead by `writer_dead(writer metadata or None)`. Returns their ids."""
        broken = self.pending_documents()
        with self._lock:
            metas = [meta for meta, _ in self._items.values()]
        counts = Counter(meta["doc_id"] for meta in metas)
        for meta in metas:
            if meta.get("n_items", counts[meta["doc_id"]]) != counts[meta["doc_id"]]:
                broken.setdefault(meta["doc_id"], set()).add(meta.get("writer"))
        dead = {doc_id for doc_id, writers in broken.items() if all(map(writer_dead, writers))}
        self.delete(dead)
        return dead

    # -- searching -------------------------------------------------------------------------------
    def dense(self, vector: np.ndarray, n: int, kinds: Sequence[ItemKind] | None = None,
              doc_ids: Sequence[str] | None = None) -> list[Hit]:
        """Top-n complete items by cosine similarity (Chroma), optionally only of some kinds / documents.

        Chroma's `where` filters make a query about 10x slower at 10k items, so when the wanted items
        are a fair share of the index, it asks for proportionally more neighbours unfiltered and drops
        pending and unwanted items itself; only when that leaves too few (or the share is small) does
        it filter in Chroma. Items come from the in-memory view: Chroma returns ids and distances only.
        """
        kinds, doc_ids = set(kinds or ()), set(doc_ids or ())

        def wanted(item_kind: str, doc_id: str) -> bool:
            return (not kinds or item_kind in kinds) and (not doc_ids or doc_id in doc_ids)

        with self._lock:
            total = len(self._items)
            matching = sum(wanted(m["kind"], m["doc_id"]) for m, _ in self._items.values()) if kinds or doc_ids \
                else total
        if not matching:
            return []
        share = matching / total
        if share >= _MIN_SHARE:
            hits = [hit for hit in self._query(vector, math.ceil((n + 10) * 1.5 / share), None)
                    if wanted(hit.item.kind, hit.item.doc_id)]
            if len(hits) >= min(n, matching):
                return hits[:n]
        where = _where({"complete": True}, kinds and {"kind": {"$in": sorted(kinds)}},
                       doc_ids and {"doc_id": {"$in": sorted(doc_ids)}})
        return self._query(vector, n, where)

    def _query(self, vector: np.ndarray, n: int, where: dict[str, Any] | None) -> list[Hit]:
        result = self.collection.query(query_embeddings=[np.asarray(vector, np.float32)], n_results=n, where=where,
                                       include=["distances"])
        with self._lock:
            return [Hit(Item.from_metadata(item_id, *self._items[item_id]), dense_score=1.0 - float(distance))
                    for item_id, distance in zip(result["ids"][0], result["distances"][0]) if item_id in self._items]

    def kind_of(self, item_id: str) -> str:
        """The kind of a complete item ("" if unknown)."""
        entry = self._items.get(item_id)
        return entry[0]["kind"] if entry else ""

    def channels(self, vector: np.ndarray | None, text: str, n: int, kinds: Sequence[ItemKind] | None = None,
                 doc_ids: Sequence[str] | None = None, query_words: Sequence[str] = (),
                 ) -> tuple[dict[str, list[str]], dict[str, Hit]]:
        """The first-stage rankings, each best first and up to n deep: "dense" (cosine), "lexical"
        (BM25 over text and file name) and "words" (BM25 over the items' own model words, queried
        with the query's text and its model words); and the hits they found, with their scores."""
        hits: dict[str, Hit] = {}
        if vector is not None:
            hits = {hit.item.item_id: hit for hit in self.dense(vector, n, kinds, doc_ids)}
        rankings = {"dense": list(hits)}
        lexical = self.lexical.search(text, n, kinds, doc_ids)
        rankings["lexical"] = [item_id for item_id, _ in lexical]
        words = self.words.search(" ".join([text, *query_words]), n, kinds, doc_ids) if len(self.words) else []
        rankings["words"] = [item_id for item_id, _ in words]
        with self._lock:
            for item_id, score in lexical + words:
                if item_id not in hits and item_id in self._items:
                    meta, item_text = self._items[item_id]
                    hits[item_id] = Hit(Item.from_metadata(item_id, meta, item_text))
            for item_id, score in lexical:
                if item_id in hits:
                    hits[item_id].lexical_score = score
        return rankings, hits

    def search(self, vector: np.ndarray | None, text: str, n: int, kinds: Sequence[ItemKind] | None = None,
               doc_ids: Sequence[str] | None = None, weights: Weights | tuple[float, float] | dict[str, Weights] = PLAIN,
               query_words: Sequence[str] = ()) -> list[Hit]:
        """Hybrid first stage: the channels' top-n fused by weighted RRF, best first.

        `weights` is one (dense, lexical[, words]) triple or a mapping kind -> triple ("*": default).
        """
        rankings, hits = self.channels(vector, text, n, kinds, doc_ids, query_words)
        fused = fuse(rankings, as_weight_map(weights), self.kind_of)
        for item_id, hit in hits.items():
            hit.fused_score = fused.get(item_id, 0.0)
        return sorted(hits.values(), key=lambda hit: hit.fused_score, reverse=True)


def as_weight_map(weights: Weights | tuple[float, float] | dict[str, Weights]) -> dict[str, Weights]:
    """One triple (or a (dense, lexical) pair, words then weighted 1) or a kind map, as a kind map."""
    if isinstance(weights, dict):
        return weights
    values = tuple(float(w) for w in weights)
    if len(values) == 2:
        values = (*values, 1.0)
    if len(values) != len(CHANNELS):
        raise ValueError(f"fusion weights need {len(CHANNELS)} values (dense, lexical, words), got {weights!r}")
    return {"*": values}  # type: ignore[dict-item]
