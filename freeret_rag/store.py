"""Where vectors live: one Chroma collection per (model, prompt version), a BM25 index beside it, and
reciprocal rank fusion of the two rankings.

Crash safety lives here too. A document's items are written with `complete=False` and flipped to
`complete=True` (with the item count) in one update once all of them are stored; searches and listings
only see complete items, and `purge_incomplete` removes what a crash left behind, asking the caller
which writers (the `writer` metadata of the items) are dead. Chroma is the only source of truth, so
the same rules hold for the embedded client and for a Chroma server; the in-memory view of complete
items is this process's copy, which `committed` refreshes for one document from Chroma, and `sync`
for the documents other processes on the same server changed (their change log, replicas.py).
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import json
import os
import threading
import time
import uuid
from collections import Counter
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence
from urllib.parse import urlparse

import bm25s
import numpy as np
from scipy import sparse

from .fusion import CHANNELS, PLAIN, RRF_K, Weights, fuse, ordered, rrf  # noqa: F401  (rrf re-exported)
from .items import Hit, Item, ItemKind
from .replicas import ChangeLog

log = logging.getLogger(__name__)
logging.getLogger("bm25s").setLevel(logging.WARNING)  # it sets itself to DEBUG on import

COLLECTION_PREFIX = "freeret-"
_MIN_SHARE = 0.1  # below this share of wanted items, let Chroma filter (see Store.dense)
_PAGE = 5000  # Chroma get() page size: servers cap a request's batch size
# Metadata written on every item besides Item.to_metadata(): what the document is and where it came from.
DOC_FIELDS = ("content_hash", "path", "file_type", "model_id", "prompt_version", "added_at")
# Collection metadata: a fresh token written before every change of the set of complete items, so a
# lexical index saved for one generation is never taken for another (see Store.persist).
GENERATION = "lexical_generation"
_SAVED_FORMAT = 1


def connect(data_dir: Path, chroma_url: str | None = None, *, fresh: bool = False, database: str | None = None):
    """An embedded PersistentClient under `data_dir/chroma`, or an HttpClient for a server URL.

    Chroma shares one embedded client (and its in-memory HNSW index) per folder and process. After
    another process wrote, `fresh` drops that shared one so the new client reads the folder anew:
    a stale index would otherwise be persisted over the other process's vectors. Clients opened
    before keep working (stale) for reads. `database`: a database of the server (one per user).
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
                                   ssl=ssl, settings=settings,
                                   **({"database": database} if database else {}))
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
    no_text: int = 0  # PDF pages without a text layer (scans)
    ocr: int = 0  # of those (or of every page, with OCR "on"), pages whose text was read by OCR

    @property
    def text_note(self) -> str:
        """"12 of 40 pages have no text layer (12 read by OCR)", or "" when every page has one."""
        if not self.no_text:
            return ""
        read = f"{self.ocr} read by OCR" if self.ocr else "not searchable by words; OCR is off"
        return f"{self.no_text} of {self.items} pages have no text layer ({read})"


def lexical_text(source: str, text: str) -> str:
    """What BM25 indexes for an item: its file name (split at _ - .) and its text."""
    return f"{re.sub(r'[_.-]+', ' ', source)}\n{text}"


def _tokenize(texts: list[str]) -> list[list[str]]:
    return bm25s.tokenize(texts, stopwords="en", return_ids=False, show_progress=False)


# BM25 as bm25s scores it by default (Lucene): idf = ln(1 + (N - df + 0.5) / (df + 0.5)) and
# tf / (tf + K1 * (1 - B + B * length / mean length)), a query term counted as often as it is repeated.
K1, B = 1.5, 0.75
_STATE_FIELDS = ("vocab", "indptr", "indices", "data", "lengths", "ids", "kinds", "docs")


@dataclass(frozen=True)
class _Snapshot:
    """An immutable view of a LexicalIndex: term-major counts (CSC: items x terms) and item columns."""

    vocab: dict[str, int]
    counts: sparse.csc_matrix  # items x terms: how often each term occurs in each item
    lengths: np.ndarray  # tokens per item
    ids: np.ndarray
    kinds: np.ndarray
    docs: np.ndarray
    norm: np.ndarray  # K1 * (1 - B + B * length / mean length), per item
    _weights: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, compare=False, repr=False)

    def term(self, column: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows, BM25 weight of the term in each row) for one term, computed on first use."""
        found = self._weights.get(column)
        if found is None:
            start, end = self.counts.indptr[column], self.counts.indptr[column + 1]
            rows, tf = self.counts.indices[start:end], self.counts.data[start:end].astype(np.float64)
            df = end - start
            found = (rows, math.log(1 + (len(self.ids) - df + 0.5) / (df + 0.5)) * tf / (tf + self.norm[rows]))
            self._weights[column] = found
        return found

    @cached_property
    def row_of(self) -> dict[str, int]:
        """item_id -> row, built on first use (a loaded index may never need it)."""
        return {item_id: row for row, item_id in enumerate(self.ids.tolist())}

    @classmethod
    def of(cls, vocab, counts, lengths, ids, kinds, docs) -> "_Snapshot":
        lengths64 = lengths.astype(np.float64)  # whole numbers: their float64 sum is exact in any order
        mean = float(lengths64.sum()) / len(lengths) if len(lengths) else 1.0
        norm = K1 * (1 - B + B * lengths64 / (mean or 1.0))
        return cls(vocab, counts, lengths, ids, kinds, docs, norm)


class LexicalIndex:
    """BM25 over complete items, kept as term counts so that adding and removing documents is an
    update, not a rebuild: scores are computed at query time from the counts of the items present,
    so they equal those of an index built afresh from the same items (and bm25s's). Additions are
    merged lazily (a batch costs one merge); searches read an immutable snapshot, so they are safe
    from any thread. `state` / `from_state` persist it as plain arrays (store.Store saves them)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[str, str, str]] = {}  # item_id -> (text, kind, doc_id), not merged yet
        self._removed: set[str] = set()  # documents to drop at the next merge
        self._snapshot = _Snapshot.of({}, sparse.csc_matrix((0, 0), dtype=np.float32), np.zeros(0, np.float32),
                                      np.array([], str), np.array([], str), np.array([], str))

    def __len__(self) -> int:
        return len(self._current().ids)

    def add(self, entries: Iterable[tuple[str, str, str, str]]) -> None:
        """Add or replace (item_id, text, kind, doc_id) entries."""
        with self._lock:
            for item_id, text, kind, doc_id in entries:
                self._pending[item_id] = (text, kind, doc_id)

    def replaced(self, entries: Iterable[tuple[str, str]]) -> "LexicalIndex":
        """A copy with the texts of some items replaced, (item_id, text) each (unknown ids are added
        as text items of no document). This index is not changed: the copy starts from its current
        snapshot (immutable) and merges the replacements into a snapshot of its own."""
        snapshot = self._current()
        copy = LexicalIndex()
        copy._snapshot = snapshot
        for item_id, text in entries:
            row = snapshot.row_of.get(item_id)
            kind, doc_id = (str(snapshot.kinds[row]), str(snapshot.docs[row])) if row is not None else ("text", "")
            copy._pending[item_id] = (text, kind, doc_id)
        return copy

    def remove_documents(self, doc_ids: Iterable[str]) -> None:
        doc_ids = set(doc_ids)
        with self._lock:
            self._pending = {key: value for key, value in self._pending.items() if value[2] not in doc_ids}
            self._removed |= doc_ids

    def _current(self) -> _Snapshot:
        with self._lock:
            if self._pending or self._removed:
                self._snapshot = self._merge(self._snapshot)
                self._pending, self._removed = {}, set()
            return self._snapshot

    def _merge(self, old: _Snapshot) -> _Snapshot:
        keep = ~np.isin(old.docs, list(self._removed)) if self._removed else np.ones(len(old.ids), bool)
        if self._pending:
            keep &= ~np.isin(old.ids, list(self._pending))
        counts = old.counts[np.flatnonzero(keep)] if not keep.all() else old.counts
        vocab = dict(old.vocab)
        ids = list(self._pending)
        tokens = _tokenize([self._pending[i][0] for i in ids]) if ids else []
        columns = [vocab.setdefault(token, len(vocab)) for row in tokens for token in row]
        lengths = np.fromiter((len(row) for row in tokens), np.float32, len(tokens))
        rows = np.repeat(np.arange(len(ids)), lengths.astype(np.int64))
        added = sparse.coo_matrix((np.ones(len(columns), np.float32), (rows, columns)),
                                  shape=(len(ids), len(vocab))).tocsc()  # sums repeated terms
        added.sum_duplicates()
        if counts.shape[1] < len(vocab):  # new terms: empty columns for the old items
            counts = sparse.csc_matrix((counts.data, counts.indices, np.concatenate(
                [counts.indptr, np.full(len(vocab) - counts.shape[1], counts.indptr[-1])])),
                shape=(counts.shape[0], len(vocab)))
        merged = sparse.vstack([counts, added], format="csc", dtype=np.float32) if ids else counts
        column = lambda values, field: np.concatenate(  # noqa: E731
            [values[keep], np.array([self._pending[i][field] for i in ids], str)]) if ids else values[keep]
        return _Snapshot.of(vocab, merged, np.concatenate([old.lengths[keep], lengths]),
                            np.concatenate([old.ids[keep], np.array(ids, str)]) if ids else old.ids[keep],
                            column(old.kinds, 1), column(old.docs, 2))

    def describe(self, item_id: str) -> tuple[str, str] | None:
        """(kind, doc_id) of an indexed item, or None."""
        snapshot = self._current()
        row = snapshot.row_of.get(item_id)
        return (str(snapshot.kinds[row]), str(snapshot.docs[row])) if row is not None else None

    def rows(self, kinds: Sequence[str] | None = None, doc_ids: Sequence[str] | None = None) -> np.ndarray:
        """A boolean mask of the items of these kinds and documents (None: any)."""
        snapshot = self._current()
        mask = np.ones(len(snapshot.ids), bool)
        if kinds:
            mask &= np.isin(snapshot.kinds, list(kinds))
        if doc_ids:
            mask &= np.isin(snapshot.docs, list(doc_ids))
        return mask

    def ids(self, doc_id: str | None = None) -> list[str]:
        snapshot = self._current()
        return snapshot.ids.tolist() if doc_id is None else snapshot.ids[snapshot.docs == doc_id].tolist()

    def doc_counts(self) -> Counter[str]:
        return Counter(self._current().docs.tolist())

    def search(self, text: str, n: int, kinds: Sequence[str] | None = None,
               doc_ids: Sequence[str] | None = None) -> list[tuple[str, float]]:
        """Top-n (item_id, BM25 score), best first (ties by item id); items sharing no term with the
        query are left out."""
        snapshot = self._current()
        if not len(snapshot.ids) or not text.strip():
            return []
        columns = [snapshot.vocab[t] for t in _tokenize([text])[0] if t in snapshot.vocab]
        scores = np.zeros(len(snapshot.ids), np.float64)
        for column in columns:
            rows, weights = snapshot.term(column)
            scores[rows] += weights
        if kinds or doc_ids:
            scores[~self.rows(kinds, doc_ids)] = 0.0
        found = np.flatnonzero(scores > 0)
        if len(found) > n:  # everything tied with the n-th best, then the exact order
            cut = np.partition(scores[found], len(found) - n)[len(found) - n]
            found = found[scores[found] >= cut]
        order = np.lexsort((snapshot.ids[found], -scores[found]))[:n]
        return [(str(snapshot.ids[row]), float(scores[row])) for row in found[order]]

    def state(self) -> dict[str, np.ndarray]:
        """Plain arrays (no pickles) from which `from_state` restores this index."""
        s = self._current()
        vocab = np.array(sorted(s.vocab, key=s.vocab.get), str) if s.vocab else np.array([], str)
        return {"vocab": vocab, "indptr": s.counts.indptr, "indices": s.counts.indices, "data": s.counts.data,
                "lengths": s.lengths, "ids": s.ids, "kinds": s.kinds, "docs": s.docs}

    @classmethod
    def from_state(cls, state: Mapping[str, np.ndarray]) -> "LexicalIndex":
        index = cls()
        vocab = {term: column for column, term in enumerate(state["vocab"].tolist())}
        counts = sparse.csc_matrix((state["data"], state["indices"], state["indptr"]),
                                   shape=(len(state["ids"]), len(vocab)))
        index._snapshot = _Snapshot.of(vocab, counts, state["lengths"], state["ids"], state["kinds"], state["docs"])
        return index


def _where(*conditions: dict[str, Any] | None) -> dict[str, Any]:
    present = [c for c in conditions if c]
    return present[0] if len(present) == 1 else {"$and": present}


def _item_order(item: Item) -> tuple:
    return (item.page or 0, item.t_start or 0.0, item.chunk or 0, item.item_id)


class Store:
    """One embedding space: a Chroma collection plus its lexical indexes and a catalog of its
    complete documents (for listings). Items themselves (text, images, metadata) stay in Chroma and
    are read when a search returns them. `status` is set when the collection is created; an
    existing collection keeps its own.

    With `cache_dir`, the lexical indexes and the catalog are saved there (`persist`) for the
    collection's current generation, and the next opening loads them instead of reading every item
    back; a saved state of any other generation is never used. Every change of the set of complete
    items (`commit`, `delete`) first writes a new generation into the collection's metadata, so a
    state saved before it, or by a process that crashed in the middle of it, no longer matches.
    """

    def __init__(self, client, model_id: str, prompt_version: str, status: str = "active",
                 cache_dir: str | Path | None = None, changelog: bool = False) -> None:
        self.client = client
        self.model_id = model_id
        self.prompt_version = prompt_version
        self.name = collection_name(model_id, prompt_version)
        self.collection = client.get_or_create_collection(
            self.name, embedding_function=None, configuration={"hnsw": {"space": "cosine"}},
            metadata=self._meta(status))
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._lock = threading.Lock()
        #: With `changelog` (a Chroma server shared by replicas): changes are recorded for the other
        #: processes, and `sync` re-reads what they changed (replicas.py). Opened before the items are read.
        self.changes = ChangeLog(client, self.name) if changelog else None
        self._syncing = threading.Lock()
        #: The generation this view is known to equal (read before the items), and whether it still does.
        self.generation: str | None = (self.collection.metadata or {}).get(GENERATION)
        self._in_sync = True
        self._docs: dict[str, dict[str, Any]] = {}  # complete documents: doc_id -> the document's metadata
        #: Whether the state in memory is not saved for its generation yet; False after loading it.
        self.unsaved = not self._load_saved()
        if self.unsaved:
            self.lexical = LexicalIndex()
            self.words = LexicalIndex()  # the model's own words per item (PromptReps), a keyword channel of its own
            self._remember((i, m, d or "") for i, m, d in self._get({"complete": True}, ["metadatas", "documents"]))

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

    # -- the saved lexical state -------------------------------------------------------------------
    @property
    def saved_path(self) -> Path | None:
        return self.cache_dir / f"{self.name}.npz" if self.cache_dir is not None else None

    def _load_saved(self) -> bool:
        """Load the saved state if it is of this generation (read before anything else). True if loaded."""
        path = self.saved_path
        if path is None or self.generation is None or not path.is_file():
            return False
        try:
            with np.load(path, allow_pickle=False) as saved:
                header = json.loads(str(saved["header"]))
                if header.get("format") != _SAVED_FORMAT or header.get("generation") != self.generation \
                        or header.get("collection") != self.name:
                    return False
                lexical, words = ({field: saved[f"{prefix}.{field}"] for field in _STATE_FIELDS}
                                  for prefix in ("lexical", "words"))
                docs = json.loads(str(saved["docs"]))
        except Exception as error:  # noqa: BLE001 - a cache: anything unreadable means rebuild
            log.warning("ignoring an unreadable saved lexical index %s: %s", path, error)
            return False
        self.lexical, self.words = LexicalIndex.from_state(lexical), LexicalIndex.from_state(words)
        self._docs = docs
        return True

    def persist(self, stamp: bool = False) -> bool:
        """Save the lexical indexes and the catalog for the current generation, if this view is known
        to equal it and they are not saved yet. An index that has no generation yet (built by an
        older version) gets one only with `stamp` (callers that hold the writer lock). True if saved."""
        path = self.saved_path
        if path is None or not self.unsaved or not self._in_sync:
            return False
        stored = self._stored_meta()
        if stored.get(GENERATION) != self.generation:  # changed since: this view is not of it
            self._in_sync = False
            return False
        if self.generation is None:
            if not stamp:
                return False
            self.generation = uuid.uuid4().hex
            self.collection.modify(metadata={**stored, GENERATION: self.generation})
        with self._lock:
            docs = json.dumps(self._docs)
        arrays = {f"{prefix}.{field}": value for prefix, index in (("lexical", self.lexical), ("words", self.words))
                  for field, value in index.state().items()}
        header = json.dumps({"format": _SAVED_FORMAT, "generation": self.generation, "collection": self.name})
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f"{path.stem}.{os.getpid()}.{threading.get_ident()}.tmp.npz")
        try:
            np.savez(temporary, header=np.array(header), docs=np.array(docs), **arrays)
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)
        self.unsaved = False
        return True

    @contextmanager
    def _changing(self, doc_ids: Iterable[str] = ()) -> Iterator[None]:
        """Around a change of the set of complete items: a new generation first, so that no saved
        state (ours or another process's) is taken for what Chroma holds during and after it. This
        view stays in sync only if it was of the generation replaced and the change completes."""
        stored = self._stored_meta()
        was_in_sync = self._in_sync and stored.get(GENERATION) == self.generation
        self._in_sync = False
        self.generation = uuid.uuid4().hex
        self.collection.modify(metadata={**stored, GENERATION: self.generation})
        self.unsaved = True
        try:
            yield
        except BaseException:  # part of it may be in Chroma: the other replicas re-read these all the same
            if self.changes is not None:
                with suppress(Exception):
                    self.changes.record(doc_ids)
            raise
        self._in_sync = was_in_sync
        if self.changes is not None:  # once the change is in Chroma: the other replicas re-read these
            self.changes.record(doc_ids)

    def sync(self) -> set[str] | None:
        """Re-read the documents that other processes changed since the last look, as the change log
        says (one small request when nothing changed). Returns their ids ({} when none, or when another
        thread of this process is looking already), or None when this view is too old for the log:
        the caller must open the store afresh. Without a change log: {}."""
        if self.changes is None or not self._syncing.acquire(blocking=False):
            return set()
        try:
            changed = self.changes.changes()
            for doc_id in sorted(changed or ()):
                self._reread(doc_id)
            return changed
        finally:
            self._syncing.release()

    def _reread(self, doc_id: str) -> None:
        """A document's complete items as Chroma has them now replace this view's (none: forgotten)."""
        rows = [(i, m, d or "") for i, m, d in self._get({"doc_id": doc_id}, ["metadatas", "documents"])
                if m.get("complete")]
        self._in_sync = False  # patched: no longer the view of one generation
        self._forget({doc_id})
        self._remember(rows)

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

    def _fetch(self, item_ids: Sequence[str]) -> dict[str, Item]:
        """The complete items among these ids, read from Chroma (what a search returns)."""
        found: dict[str, Item] = {}
        for start in range(0, len(item_ids), _PAGE):
            page = self.collection.get(ids=list(item_ids[start:start + _PAGE]), include=["metadatas", "documents"])
            for item_id, meta, text in zip(page["ids"], page["metadatas"], page["documents"]):
                if meta and meta.get("complete"):
                    found[item_id] = Item.from_metadata(item_id, meta, text or "")
        return found

    def _remember(self, rows: Iterable[tuple[str, dict, str]]) -> None:
        rows = list(rows)
        with self._lock:
            for _, meta, _ in rows:
                doc = self._docs.get(meta["doc_id"])
                if doc is None:
                    doc = self._docs[meta["doc_id"]] = {key: meta[key] for key in ("source", "n_items", "writer",
                                                                                   *DOC_FIELDS) if key in meta}
                # scanned pages and those read by OCR, counted per document (DocumentInfo.text_note)
                doc["no_text"] = doc.get("no_text", 0) + int(bool(meta.get("no_text_layer")))
                doc["ocr"] = doc.get("ocr", 0) + int(bool(meta.get("ocr")))
        self.lexical.add((i, lexical_text(m.get("source", ""), t), m["kind"], m["doc_id"]) for i, m, t in rows)
        self.words.add((i, m["words"], m["kind"], m["doc_id"]) for i, m, t in rows if m.get("words"))

    def _forget(self, doc_ids: set[str]) -> None:
        with self._lock:
            for doc_id in doc_ids:
                self._docs.pop(doc_id, None)
        self.lexical.remove_documents(doc_ids)
        self.words.remove_documents(doc_ids)

    def __len__(self) -> int:
        return len(self.lexical)

    def documents(self, doc_id: str | None = None) -> list[DocumentInfo]:
        """Complete documents (or the one with `doc_id`), oldest first."""
        counts = self.lexical.doc_counts()
        with self._lock:
            metas = {d: m for d, m in self._docs.items() if doc_id is None or d == doc_id}
        docs = [DocumentInfo(doc_id=d, source=m.get("source", ""), items=counts[d], no_text=m.get("no_text", 0),
                             ocr=m.get("ocr", 0),
                             **{f: m.get(f, 0.0 if f == "added_at" else "") for f in DOC_FIELDS})
                for d, m in metas.items()]
        return sorted(docs, key=lambda doc: (doc.added_at, doc.source))

    def document(self, doc_id: str) -> DocumentInfo | None:
        return next(iter(self.documents(doc_id)), None)

    def all_items(self) -> list[Item]:
        """Every complete item (text and metadata, no vectors), e.g. to calibrate fusion."""
        return [Item.from_metadata(item_id, meta, text or "")
                for item_id, meta, text in self._get({"complete": True}, ["metadatas", "documents"])]

    def items(self, doc_id: str) -> list[Item]:
        """A complete document's items in reading order (pages, time, chunks)."""
        rows = self._get(_where({"doc_id": doc_id}, {"complete": True}), ["metadatas", "documents"])
        return sorted((Item.from_metadata(k, m, t or "") for k, m, t in rows), key=_item_order)

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
        """Upsert items with their vectors, pending (invisible to search) until `commit`; `put_at`
        records when, so that recovery can tell a resumable document from an abandoned one."""
        vectors = np.asarray(vectors, np.float32)
        now = time.time()
        for part in self._batches(len(items)):
            self.collection.upsert(
                ids=[item.item_id for item in items[part]], embeddings=vectors[part],
                metadatas=[{**item.to_metadata(), **doc_fields, "complete": False, "put_at": now}
                           for item in items[part]],
                documents=[item.text for item in items[part]])

    def pending_items(self, doc_id: str) -> dict[str, tuple[dict[str, Any], str]]:
        """A document's pending items as stored: item id -> (metadata, text). What an interrupted
        or cancelled run finished, for a resumed run to keep instead of embedding it again."""
        return {i: (m, d or "") for i, m, d in self._get(_where({"doc_id": doc_id}, {"complete": False}),
                                                          ["metadatas", "documents"])}

    def delete_items(self, item_ids: Iterable[str]) -> None:
        """Remove single pending items (a resumed run's leftovers that its items no longer include)."""
        item_ids = sorted(set(item_ids))
        for start in range(0, len(item_ids), _PAGE):
            self.collection.delete(ids=item_ids[start:start + _PAGE])

    def commit(self, doc_id: str) -> int:
        """Make a document's pending items visible. Returns how many it has.

        One update per Chroma batch; should a crash tear a large document's flip, its remaining
        pending items make `purge_incomplete` remove the whole document.
        """
        rows = list(self._get({"doc_id": doc_id}, ["metadatas", "documents"]))
        flip = {"complete": True, "n_items": len(rows)}
        with self._changing({doc_id}):
            for part in self._batches(len(rows)):
                self.collection.update(ids=[row[0] for row in rows[part]], metadatas=[flip] * len(rows[part]))
            self._forget({doc_id})
            self._remember((item_id, {**meta, **flip}, text or "") for item_id, meta, text in rows)
        return len(rows)

    def delete(self, doc_ids: Iterable[str]) -> None:
        """Remove every item (pending or complete) of these documents."""
        doc_ids = set(doc_ids)
        if not doc_ids:
            return
        with self._changing(doc_ids):
            self.collection.delete(where={"doc_id": {"$in": sorted(doc_ids)}})
            self._forget(doc_ids)

    def committed(self, doc_id: str) -> DocumentInfo | None:
        """The document as Chroma has it now (another process may have added or deleted it since
        this view was loaded); the view is brought up to date for this document."""
        rows = [(i, m, d or "") for i, m, d in self._get({"doc_id": doc_id}, ["metadatas", "documents"])
                if m.get("complete")]
        if set(self.lexical.ids(doc_id)) != {row[0] for row in rows}:  # else leave the indexes alone
            self._in_sync = False  # patched: no longer the view of one generation
            self._forget({doc_id})
            self._remember(rows)
        return self.document(doc_id)

    def relocate(self, doc_id: str, path: str, source: str) -> DocumentInfo | None:
        """Point a complete document at another file (renamed or moved, same content): its `path`
        and `source` change, its items and vectors stay. Returns it as updated (None if absent)."""
        ids = [item_id for item_id, _, _ in self._get({"doc_id": doc_id}, ["metadatas"])]
        moved = {"path": path, "source": source}
        with self._changing({doc_id}):  # the lexical index changes (it holds the file name): a new generation
            for part in self._batches(len(ids)):
                self.collection.update(ids=ids[part], metadatas=[moved] * len(ids[part]))
            self._forget({doc_id})  # re-read the document under its new name
            return self.committed(doc_id)

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

    def purge_incomplete(self, writer_dead: Callable[[str | None], bool] = lambda writer: True,
                         keep_pending_s: float = 0.0) -> set[str]:
        """Delete documents a crash left half-written (pending items, or fewer items than committed)
        whose writers are all dead by `writer_dead(writer metadata or None)`. Returns their ids.

        A document with only pending items, the last of them stored less than `keep_pending_s`
        ago, is kept: it is resumable (adding the same file again continues it). A torn commit
        (some items complete, some not) is never resumable."""
        broken = self.pending_documents()
        counts = self.lexical.doc_counts()
        with self._lock:
            docs = dict(self._docs)
        torn = set(counts) & set(broken)
        for doc_id, meta in docs.items():
            if meta.get("n_items", counts[doc_id]) != counts[doc_id]:
                broken.setdefault(doc_id, set()).add(meta.get("writer"))
                torn.add(doc_id)
        if keep_pending_s > 0:
            recent = time.time() - keep_pending_s
            last_put: dict[str, float] = {}
            for _, meta, _ in self._get({"complete": False}, ["metadatas"]):
                last_put[meta["doc_id"]] = max(last_put.get(meta["doc_id"], 0.0), float(meta.get("put_at", 0.0)))
            broken = {doc_id: writers for doc_id, writers in broken.items()
                      if doc_id in torn or last_put.get(doc_id, 0.0) < recent}
        dead = {doc_id for doc_id, writers in broken.items() if all(map(writer_dead, writers))}
        self.delete(dead)
        return dead

    # -- searching -------------------------------------------------------------------------------
    def dense(self, vector: np.ndarray, n: int, kinds: Sequence[ItemKind] | None = None,
              doc_ids: Sequence[str] | None = None) -> list[Hit]:
        """Top-n complete items by cosine similarity (Chroma), optionally only of some kinds / documents."""
        found = self._dense(vector, n, kinds, doc_ids)
        items = self._fetch([item_id for item_id, _ in found])
        return [Hit(items[item_id], dense_score=score) for item_id, score in found if item_id in items]

    def _dense(self, vector: np.ndarray, n: int, kinds: Sequence[ItemKind] | None = None,
               doc_ids: Sequence[str] | None = None) -> list[tuple[str, float]]:
        """(item_id, cosine) of the top-n complete items, best first.

        Chroma's `where` filters make a query about 10x slower at 10k items, so when the wanted items
        are a fair share of the index, it asks for proportionally more neighbours unfiltered and drops
        pending and unwanted items itself (by the lexical index's catalog of complete items); only when
        that leaves too few (or the share is small) does it filter in Chroma.
        """
        kinds, doc_ids = set(kinds or ()), set(doc_ids or ())

        def wanted(item_id: str) -> bool:
            described = self.lexical.describe(item_id)
            return described is not None and (not kinds or described[0] in kinds) \
                and (not doc_ids or described[1] in doc_ids)

        total = len(self.lexical)
        matching = int(self.lexical.rows(kinds, doc_ids).sum()) if kinds or doc_ids else total
        if not matching:
            return []
        share = matching / total
        if share >= _MIN_SHARE:
            found = [pair for pair in self._query(vector, math.ceil((n + 10) * 1.5 / share), None) if wanted(pair[0])]
            if len(found) >= min(n, matching):
                return found[:n]
        where = _where({"complete": True}, kinds and {"kind": {"$in": sorted(kinds)}},
                       doc_ids and {"doc_id": {"$in": sorted(doc_ids)}})
        return [pair for pair in self._query(vector, n, where) if self.lexical.describe(pair[0]) is not None]

    def _query(self, vector: np.ndarray, n: int, where: dict[str, Any] | None) -> list[tuple[str, float]]:
        result = self.collection.query(query_embeddings=[np.asarray(vector, np.float32)], n_results=n, where=where,
                                       include=["distances"])
        return [(item_id, 1.0 - float(distance)) for item_id, distance in zip(result["ids"][0], result["distances"][0])]

    def kind_of(self, item_id: str) -> str:
        """The kind of a complete item ("" if unknown)."""
        described = self.lexical.describe(item_id)
        return described[0] if described else ""

    def _scored(self, vector: np.ndarray | None, text: str, n: int, kinds: Sequence[ItemKind] | None,
                doc_ids: Sequence[str] | None, query_words: Sequence[str]) -> dict[str, list[tuple[str, float]]]:
        """Each channel's top-n (item_id, score), best first, from the indexes alone (no item read)."""
        return {"dense": self._dense(vector, n, kinds, doc_ids) if vector is not None else [],
                "lexical": self.lexical.search(text, n, kinds, doc_ids),
                "words": self.words.search(" ".join([text, *query_words]), n, kinds, doc_ids) if len(self.words)
                else []}

    def _hits(self, item_ids: Sequence[str], scored: dict[str, list[tuple[str, float]]]) -> dict[str, Hit]:
        """Hits for these ids (those still complete in Chroma), with their dense and lexical scores."""
        items = self._fetch(item_ids)
        dense, lexical = dict(scored["dense"]), dict(scored["lexical"])
        return {item_id: Hit(items[item_id], dense_score=dense.get(item_id), lexical_score=lexical.get(item_id))
                for item_id in item_ids if item_id in items}

    def channels(self, vector: np.ndarray | None, text: str, n: int, kinds: Sequence[ItemKind] | None = None,
                 doc_ids: Sequence[str] | None = None, query_words: Sequence[str] = (),
                 ) -> tuple[dict[str, list[str]], dict[str, Hit]]:
        """The first-stage rankings, each best first and up to n deep: "dense" (cosine), "lexical"
        (BM25 over text and file name) and "words" (BM25 over the items' own model words, queried
        with the query's text and its model words); and the hits they found, with their scores."""
        scored = self._scored(vector, text, n, kinds, doc_ids, query_words)
        hits = self._hits(list(dict.fromkeys(item_id for pairs in scored.values() for item_id, _ in pairs)), scored)
        return {channel: [item_id for item_id, _ in pairs if item_id in hits] for channel, pairs in scored.items()}, hits

    def search(self, vector: np.ndarray | None, text: str, n: int, kinds: Sequence[ItemKind] | None = None,
               doc_ids: Sequence[str] | None = None, weights: Weights | tuple[float, float] | dict[str, Weights] = PLAIN,
               query_words: Sequence[str] = ()) -> list[Hit]:
        """Hybrid first stage: the channels' top-n fused by weighted RRF, best first, n at most (only
        those are read from Chroma).

        `weights` is one (dense, lexical[, words]) triple or a mapping kind -> triple ("*": default).
        """
        scored = self._scored(vector, text, n, kinds, doc_ids, query_words)
        fused = fuse({channel: [item_id for item_id, _ in pairs] for channel, pairs in scored.items()},
                     as_weight_map(weights), self.kind_of)
        top = ordered(fused)[:n]
        hits = self._hits(top, scored)
        for hit in hits.values():
            hit.fused_score = fused[hit.item.item_id]
        return [hits[item_id] for item_id in top if item_id in hits]


class Substituted:
    """The store's first-stage channels as if some complete items had other content (same ids): their
    vectors, text and model words replaced, the index untouched. The self-check's cloze stand-ins
    search it: an item is ranked without the sentence that became its test query."""

    def __init__(self, store: Store, items: Sequence[Item], vectors: np.ndarray) -> None:
        self.store = store
        vectors = np.asarray(vectors, np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        self.vectors = {item.item_id: row for item, row in zip(items, vectors / np.where(norms > 0, norms, 1.0))}
        self.lexical = store.lexical.replaced((item.item_id, lexical_text(item.source, item.text)) for item in items)
        self.words = store.words.replaced((item.item_id, " ".join(item.words)) for item in items if item.words)

    def channels(self, vector: np.ndarray | None, text: str, n: int, query_words: Sequence[str] = ()
                 ) -> dict[str, list[str]]:
        """Like `Store.channels`' rankings: the substitutes' cosine (the same as Chroma's cosine space)
        is merged into the other items' dense ranking; BM25 runs on the copies with their texts."""
        rankings: dict[str, list[str]] = {"dense": []}
        if vector is not None:
            others = [(hit.item.item_id, float(hit.dense_score)) for hit in self.store.dense(vector, n + len(self.vectors))
                      if hit.item.item_id not in self.vectors]
            query = np.asarray(vector, np.float32)
            query = query / max(float(np.linalg.norm(query)), 1e-12)
            own = [(item_id, float(row @ query)) for item_id, row in self.vectors.items()]
            rankings["dense"] = [item_id for item_id, _ in sorted(others + own, key=lambda pair: -pair[1])][:n]
        rankings["lexical"] = [item_id for item_id, _ in self.lexical.search(text, n)]
        rankings["words"] = [item_id for item_id, _ in self.words.search(" ".join([text, *query_words]), n)] \
            if len(self.words) else []
        return rankings


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
