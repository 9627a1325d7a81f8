"""The personal media library: add files (idempotent), list, delete, re-index for a new model, search.

    library = Library(FreeRet.from_pretrained("Qwen/Qwen2-VL-2B-Instruct"))
    report = library.add(["~/Documents"], progress=print)
    hits = library.search("the ladybird on a leaf", k=5)

A document is one file, identified by its content (doc_id = first 16 hex of its sha256), so adding the
same bytes again is a no-op whatever the file is called. Adding a changed file whose path is already
indexed replaces the old version: the new one is indexed and committed first, then the old one is
deleted, so a failure leaves the old version in place.

Every document's items become visible only once all of them are stored (see store.py). Processes
may share a data folder (the app and the CLI): each write (one file, one deletion, one re-indexed
document) holds an inter-process writer lock (locking.py), and pending items record their writer.
Whatever a dead writer left half-written is purged by the next write, never by merely opening the
library, and adding the same files again resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import shutil
import threading
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from . import fusion, selfcheck
from .settings import RERANK_K
from .errors import FreeRetError, IndexMismatchError, IngestError, StoreUnreachableError
from .items import Hit, Item, ItemKind, Query
from .locking import Writer, WriterLock, this_writer
from .replicas import SYNC_EVERY_S
from .media import MediaSettings, kind_for_path, load_items
from .media.common import plain_name, read_ahead
from .selfcheck import SelfCheck
from .store import (DocumentInfo, IndexInfo, Store, Substituted, as_weight_map, collection_name, connect,
                    list_indexes, server_unreachable)

log = logging.getLogger(__name__)

# Kinds a text-only model can still embed from their text (a PDF page's text layer).
TEXT_FALLBACK_KINDS: frozenset[str] = frozenset({"pdf_page"})
CANNOT_SEE = "the loaded model cannot see images"
# Why a document of another embedding space is not searchable now (Library.waiting).
WAITING_FOR_IMAGES = "waiting for a model that can see images"
WAITING_FOR_REINDEX = "waiting for a re-index with the loaded model"
# The model's own words (PromptReps): the most probable next words at the read-out, function words
# dropped (small models put most of their mass on "the", "when", ...).
WORDS_ASKED = 64
ITEM_WORDS = 24  # kept per item for its keyword channel
QUERY_WORDS = 10  # the query's own words searched in that channel
# How long the embedded part of an interrupted or cancelled file is kept (invisible) for a resume:
# adding the same file again within this time embeds only what is missing.
RESUMABLE_FOR_S = 7 * 24 * 3600.0


# English function words and chat fillers, left out of the words channel (beyond bm25s's 33).
FUNCTION_WORDS = frozenset("""
a about above after again against all also am an and any are as at be because been before being below between
both but by can could did do does doing down during each either else ever few for from further had has have having
he her here hers herself him himself his how however i if in into is it its itself just let like may me might more
most much must my myself no nor not now of off on once one only or other ought our ours ourselves out over own
per please quite rather really same shall she should so some such than that the their theirs them themselves then
there these they this those through thus to too under until up upon us very via was we were what whatever when
where whether which while who whom whose why will with within without would yes yet you your yours yourself
yourselves okay sure well thing things something anything nothing word words output based answer query image
page passage text video clip document
""".split())


def self_check_enabled(environ: Mapping[str, str] | None = None) -> bool:
    """False where FREERET_SELF_CHECK turns the automatic self-check off (0, false, no, off)."""
    environ = os.environ if environ is None else environ
    return environ.get("FREERET_SELF_CHECK", "1").lower() not in ("0", "false", "no", "off")


def content_words(words: Sequence[tuple[str, float]], keep: int) -> tuple[str, ...]:
    """The first `keep` words that are neither function words nor the prompts' own nouns, best first."""
    return tuple(word for word, _ in words if word not in FUNCTION_WORDS)[:keep]


def default_data_dir() -> Path:
    """$FREERET_DATA_DIR, else the shared default (settings.py), so the CLI and the UI share one index."""
    from .settings import default_data_dir as app_default

    return Path(os.environ.get("FREERET_DATA_DIR") or app_default(os.environ)).expanduser()


@dataclass(frozen=True)
class Progress:
    """One ingestion event; the UI and the CLI progress bar consume the same stream.

    stage: "file" (a file starts), "item" (`done` of `total` pages/segments/chunks embedded; total
    may grow while a file is read), then one of "added", "unchanged", "skipped", "cancelled"
    (`message` says why, and what part of a file over a cap was indexed), or in a re-index
    "waiting" (the model cannot see the document: it stays in its old index).
    """

    stage: str
    path: str
    file_index: int  # 1-based
    files: int
    done: int = 0
    total: int = 0
    message: str = ""


ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


@dataclass
class AddReport:
    """What `add` (or `reindex`) did: indexed, already there, skipped (and why), partly left out, and
    the older versions of changed files that were deleted once their new version was indexed."""

    added: list[DocumentInfo] = field(default_factory=list)
    unchanged: list[DocumentInfo] = field(default_factory=list)
    replaced: list[DocumentInfo] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    notes: list[Skipped] = field(default_factory=list)  # documents indexed with some items left out
    #: Re-index: documents the loaded model cannot embed, kept in their old index (Library.waiting).
    waiting: list[Skipped] = field(default_factory=list)
    cancelled: list[Skipped] = field(default_factory=list)  # stopped by a cancel, or never started
    #: Re-index: items whose vectors were copied from the old index (same model, and their kind's
    #: embedding unchanged: `FreeRet.kind_version`) instead of embedded again.
    reused: int = 0
    seconds: float = 0.0

    @property
    def items(self) -> int:
        return sum(doc.items for doc in self.added)

    def summary(self) -> str:
        lines = [f"indexed {len(self.added)} file(s) ({self.items} items), {len(self.unchanged)} already indexed, "
                 f"{len(self.skipped)} skipped in {self.seconds:.1f} s"]
        lines += [f"  replaced older version of {doc.source}" for doc in self.replaced]
        lines += [f"  skipped {Path(s.path).name}: {s.reason}" for s in self.skipped]
        lines += [f"  note {Path(s.path).name}: {s.reason}" for s in self.notes]
        if self.reused:
            lines.append(f"  {self.reused} item(s) copied from the old index (their kind's embedding did not change), "
                         f"{self.items - self.reused} embedded")
        if self.waiting:
            lines.append(f"kept {len(self.waiting)} document(s) in the old index, {WAITING_FOR_IMAGES} "
                         "(nothing was deleted; re-index with such a model to search them again):")
            lines += [f"  waiting {Path(s.path).name}" for s in self.waiting]
        lines += [f"  cancelled {Path(s.path).name}: {s.reason}" for s in self.cancelled]
        return "\n".join(lines)


@dataclass(frozen=True)
class WaitingDocument(DocumentInfo):
    """A document kept in another embedding space, listed but not searchable with the loaded model."""

    waiting: str = WAITING_FOR_REINDEX  # why, in words


@dataclass
class ReindexPlan:
    """What `reindex` would do, said before it starts: the documents it can move, and those the
    loaded model cannot embed at all (they stay in their old index, waiting)."""

    movable: list[DocumentInfo] = field(default_factory=list)
    unseeable: list[DocumentInfo] = field(default_factory=list)

    def warning(self, model_id: str) -> str:
        """One sentence for the user about the unseeable documents ("" when there are none)."""
        if not self.unseeable:
            return ""
        return (f"{len(self.unseeable)} document(s) cannot be read by {model_id} (it cannot see images): they stay "
                f"in the library, {WAITING_FOR_IMAGES}, with their files; nothing is deleted.")


class _Unseeable(IngestError):
    """Nothing in the file can be embedded by the loaded model (images for a text-only model)."""


class Cancelled(IngestError):
    """A cancel stopped indexing a document between two batches; what was embedded is kept pending."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _same_item(item: Item, fields: Mapping[str, Any], stored: tuple[dict[str, Any], str] | None) -> bool:
    """Whether a pending item that an earlier run stored is this very item, so its vector is kept."""
    if stored is None:
        return False
    meta, text = stored
    wanted = {**item.to_metadata(), "path": fields.get("path"), "content_hash": fields.get("content_hash")}
    return text == item.text and all(meta.get(key) == value for key, value in wanted.items() if key != "words")


def iter_files(paths: Iterable[str | Path], exclude: Iterable[str | Path] = ()) -> Iterator[Path | Skipped]:
    """Files under the given paths, recursively, each real file once. Folder symlinks are followed
    but a folder is entered only once (so symlink loops end); hidden files and folders, and the
    `exclude` folders (the library's own data), are left out."""
    seen_dirs = {_dir_key(path) for path in exclude if os.path.isdir(path)}
    seen_files: set[str] = set()
    for raw in paths:
        root = Path(raw).expanduser()
        if root.is_dir():
            candidates: Iterable[Path] = _walk(root, seen_dirs)
        elif root.exists() or root.is_symlink():
            candidates = [root]
        else:
            yield Skipped(str(root), "no such file or folder")
            continue
        for path in candidates:
            real = os.path.realpath(path)
            if real not in seen_files:
                seen_files.add(real)
                yield path


def _dir_key(path: str | Path) -> tuple[int, int]:
    stat = os.stat(path)
    return stat.st_dev, stat.st_ino


def _walk(root: Path, seen_dirs: set[tuple[int, int]]) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        if _dir_key(dirpath) in seen_dirs:
            dirnames[:] = []
            continue
        seen_dirs.add(_dir_key(dirpath))
        dirnames[:] = sorted(name for name in dirnames if not name.startswith("."))
        yield from (Path(dirpath) / name for name in sorted(filenames) if not name.startswith("."))


def _server_errors(method: Callable) -> Callable:
    """A Chroma server that went away becomes one StoreUnreachableError (one clear line for the
    user) instead of whatever the HTTP client raised half way through."""
    @functools.wraps(method)
    def guarded(self: "Library", *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except StoreUnreachableError:
            raise
        except Exception as error:
            if getattr(self, "chroma_url", None) and server_unreachable(error):
                raise StoreUnreachableError(self.chroma_url) from error
            raise
    return guarded


class Library:
    """One index (a data folder, optionally a Chroma server) searched with one engine.

    `engine` may be None to list or delete without loading a model (the active index is opened).
    Opening an index built with another model or prompt version raises IndexMismatchError unless
    `allow_mismatch` (then only `reindex`, `documents`, `delete` and `search` of what is already
    re-indexed make sense). Thread-safe: writes are serialised; searches run concurrently.

    Process-safe: every write holds the data folder's writer lock, per file or document, so the app
    and the CLI interleave. Opening the library, listing and searching write nothing and delete
    nothing. See `_recover` for what a write purges, and when.
    """

    @_server_errors
    def __init__(self, engine: Any | None, data_dir: str | Path | None = None, chroma_url: str | None = None, *,
                 allow_mismatch: bool = False, batch_size: int | None = None,
                 fusion_weights: tuple[float, ...] | dict[str, tuple[float, float, float]] | None = None,
                 media_settings: MediaSettings = MediaSettings(), self_check: bool | str | None = None,
                 rerank_share: float | None = None, words: bool = True, database: str | None = None) -> None:
        self.engine = engine
        self.data_dir = Path(data_dir).expanduser() if data_dir else default_data_dir()
        self.assets = self.data_dir / "assets"
        #: Kept copies of uploaded originals (`files/<doc_id>/<name>`, the app's upload_dir): a
        #: document's kept copy goes with it when it is deleted; originals elsewhere are never touched.
        self.kept = self.data_dir / "files"
        self.chroma_url = chroma_url
        self._batch_size = batch_size
        self._fixed_fusion_weights = as_weight_map(fusion_weights) if fusion_weights is not None else None
        self._fixed_share = rerank_share
        #: Run the self-check at the end of indexing when the library changed by half (selfcheck.py).
        self.auto_self_check: bool | str = self_check if self_check is not None else self_check_enabled()
        self._check_thread: threading.Thread | None = None
        #: Index the model's own words per item and search them as a third channel.
        self.use_words = words
        self._checked: tuple[str, SelfCheck | None] | None = None  # (index name, cached result)
        self._substituted: tuple[tuple, Substituted] | None = None  # the self-check's stand-ins (channel_rankings)
        self.media_settings = media_settings
        self._lock = threading.RLock()
        self._writer = WriterLock(self.data_dir)
        self._writer.observe()  # before reading: a write after this makes what we read stale
        self._recovered = False
        self._waiting: list[WaitingDocument] | None = None  # cache of `waiting()`, reset when the index changes
        self._synced_at = float("-inf")  # last look at a Chroma server's change log (refresh)
        self.database = database  # on a Chroma server: this library's own database (one per user)
        self.client = connect(self.data_dir, chroma_url, database=database)
        indexes = list_indexes(self.client)
        if engine is not None:
            model_id, prompt_version = engine.model_id, engine.prompt_version
        else:
            active = sorted((i for i in indexes if i.status == "active"), key=lambda i: -i.count)
            if not active:
                raise FreeRetError(f"no index in {self.location} yet: add files with a model loaded first")
            model_id, prompt_version = active[0].model_id, active[0].prompt_version
        name = collection_name(model_id, prompt_version)
        mine = next((i for i in indexes if i.name == name), None)
        mine_active = mine is not None and mine.status == "active"
        #: Other embedding spaces that still hold documents: a re-index is pending while any is active.
        self.others = [i for i in indexes if i.name != name and i.count]
        blocking = [i for i in self.others if i.status == "active"]
        #: Why this index cannot take new documents before `reindex` (None when it can).
        self.mismatch = self._mismatch_message(blocking[0], model_id, prompt_version) \
            if blocking and not mine_active else None
        if self.mismatch and not allow_mismatch:
            raise IndexMismatchError(self.mismatch)
        status = "building" if self.mismatch else "active"
        self.store = self._open_store(model_id, prompt_version, status)
        if self.store.status != status:  # collection metadata only: no lock, nothing is deleted
            self.store.set_status(status)

    # -- state -----------------------------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        """Items embedded per batch: the size given, else the engine's (more on a GPU with free memory)."""
        return self._batch_size or getattr(self.engine, "preferred_batch_size", 8)

    @property
    def location(self) -> str:
        return self.chroma_url or str(self.data_dir)

    @property
    def needs_reindex(self) -> bool:
        return self.store.status != "active"

    def _mismatch_message(self, other: IndexInfo, model_id: str, prompt_version: str) -> str:
        return (f"the index in {self.location} was built with {other.model_id} (prompt version "
                f"{other.prompt_version}, {other.count} items) but the loaded model is {model_id} (prompt version "
                f"{prompt_version}); vectors of different models cannot be mixed. Re-index everything with the "
                f"loaded model (`python -m freeret_rag --model {model_id} reindex`, or Library(..., "
                f"allow_mismatch=True).reindex()), or load {other.model_id} again.")

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Hold this thread's and every process's write turn (reentrant). At the outermost turn,
        re-read the index if another process wrote since, and recover what dead writers left."""
        with self._lock, self._writer as stale:
            if stale:
                self._reopen()
            elif self.chroma_url and time.monotonic() - self._synced_at >= SYNC_EVERY_S:  # a replica may have written
                self._sync()
            if stale or not self._recovered:
                self._recover()
                self._recovered = True
            yield
            self._persist(stamp=True)

    def _reopen(self) -> None:
        """Another process wrote: a fresh client and a fresh view of the index (see store.connect)."""
        log.info("%s changed in another process: reloading the index", self.location)
        if self.chroma_url is None:
            self.client = connect(self.data_dir, fresh=True)
        self.store = self._open_store(self.store.model_id, self.store.prompt_version, self.store.status)
        self.others = [i for i in list_indexes(self.client) if i.name != self.store.name and i.count]
        self._checked = None  # the self-check may have been re-measured there too
        self._waiting = None

    def _open_store(self, model_id: str, prompt_version: str, status: str) -> Store:
        """The store, with its lexical index loaded from `lexical/` when saved for the index's current
        generation, else rebuilt from Chroma and saved there (a cache file: the index is unchanged)."""
        store = Store(self.client, model_id, prompt_version, status=status, cache_dir=self.data_dir / "lexical",
                      changelog=self.chroma_url is not None)  # replicas on one server (replicas.py)
        self._persist(store)
        return store

    def _persist(self, store: Store | None = None, stamp: bool = False) -> None:
        """Save the store's lexical index for its generation (see Store.persist); `stamp` (under the
        writer lock) gives an index from an older version its first generation. A failure only
        costs the next opening a rebuild."""
        try:
            (store if store is not None else self.store).persist(stamp=stamp)
        except Exception:  # noqa: BLE001 - a cache: never fail a write or an opening for it
            log.warning("could not save the lexical index of %s", self.location, exc_info=True)

    def _writer_dead(self, writer: str | None) -> bool:
        """Whether the writer of pending items is certainly dead (called while holding the lock).

        Embedded index: every writer of it takes this data folder's lock, and we hold it, so nobody
        is writing: whatever is pending is dead, whoever wrote it. Chroma server: writers elsewhere
        (other hosts, other data folders) do not share this lock, so only a writer that ran on this
        host and whose process is gone is dead; items of any other writer, or without a recorded
        writer, are kept (they stay invisible to search and listings).
        """
        if self.chroma_url is None:
            return True
        recorded = Writer.from_json(writer)
        return recorded is not None and recorded.certainly_dead()

    def _recover(self) -> None:
        """Purge what dead writers left (see `_writer_dead`): half-written documents, then asset
        folders of documents that have no item left, pending or complete. Runs only while holding
        the writer lock (asset folders are written under it, before their items); not while a
        re-index is pending, since assets may belong to a document that still waits for it."""
        purged = self.store.purge_incomplete(self._writer_dead, RESUMABLE_FOR_S)
        if purged:
            log.warning("removed %d half-indexed document(s) left by an interrupted run", len(purged))
        if self.others or not self.assets.is_dir():
            return
        known = {doc.doc_id for doc in self.store.documents()} | set(self.store.pending_documents())
        for folder in self.assets.iterdir():
            if folder.name not in known:
                shutil.rmtree(folder, ignore_errors=True)

    @_server_errors
    def refresh(self) -> bool:
        """Re-read the index if another process wrote since this one last read it (e.g. the CLI
        added files while the app runs); True if it did. Cheap when nothing changed: it reads one
        small file. Writes do this by themselves. With a Chroma server, also one heartbeat: a server
        that went away is said at once (StoreUnreachableError), not shown as a stale listing. At most
        every SYNC_EVERY_S, that request is instead a look at the server's change log: what other
        processes on the same server (replicas, other data folders) changed is re-read (replicas.py)."""
        synced = False
        if self.chroma_url:
            if time.monotonic() - self._synced_at < SYNC_EVERY_S:
                self.client.heartbeat()
            else:
                synced = self._sync()
        if not self._writer.changed():  # first without the lock: a write of this process holds it
            return synced  # for a whole file, and its own writes leave nothing to re-read
        with self._lock:
            if not self._writer.changed():
                return False
            self._writer.observe()
            self._reopen()
            return True

    def _sync(self) -> bool:
        """Re-read what other processes on the Chroma server changed (its change log, one request
        when nothing did; replicas.py). True if anything was re-read."""
        self._synced_at = time.monotonic()
        changed = self.store.sync()
        if changed is None:  # this view is older than the log keeps: read everything again
            with self._lock:
                self._reopen()
            return True
        if changed:
            self._checked, self._waiting = None, None  # the self-check may have been re-measured there
            log.info("%d document(s) changed by another process on %s: re-read", len(changed), self.location)
        return bool(changed)

    def _engine(self) -> Any:
        if self.engine is None:
            raise FreeRetError("this needs a model: open the library with an engine")
        return self.engine

    @_server_errors
    def documents(self) -> list[DocumentInfo]:
        self.refresh()  # another process may have added or deleted files
        return self.store.documents()

    def document(self, doc_id: str) -> DocumentInfo | None:
        return self.store.document(doc_id)

    @_server_errors
    def waiting(self) -> list[WaitingDocument]:
        """Documents that other embedding spaces here hold and the loaded one does not: listed, not
        searchable. Those a re-index left out because the model cannot see them say so; the others
        wait for a re-index (a mismatch, or a re-index that stopped half way). Oldest first."""
        self.refresh()
        with self._lock:
            if self._waiting is None:  # the other spaces' documents, read once per change of the index
                found: dict[str, WaitingDocument] = {}
                for other in sorted(self.others, key=lambda info: info.status != "waiting"):
                    reason = WAITING_FOR_IMAGES if other.status == "waiting" else WAITING_FOR_REINDEX
                    for doc in Store(self.client, other.model_id, other.prompt_version).documents():
                        found.setdefault(doc.doc_id, WaitingDocument(**doc.__dict__, waiting=reason))
                self._waiting = sorted(found.values(), key=lambda doc: (doc.added_at, doc.source))
            mine = {doc.doc_id for doc in self.store.documents()}
            return [doc for doc in self._waiting if doc.doc_id not in mine]

    def items(self, doc_id: str) -> list[Item]:
        return self.store.items(doc_id)

    def __len__(self) -> int:
        """Number of searchable items."""
        return len(self.store)

    # -- adding ----------------------------------------------------------------------------------
    @_server_errors
    def add(self, paths: Iterable[str | Path] | str | Path, progress: ProgressCallback | None = None,
            cancel: threading.Event | None = None) -> AddReport:
        """Index files and folders (recursively). One bad file is skipped with its reason; the rest go on.

        `cancel`, once set, stops the work at the next batch (the model finishes the one it is on):
        the file being indexed stays invisible, its embedded batches kept for a resume (adding it
        again continues it, see `ingest_items`), and later files are not started (`report.cancelled`)."""
        self._engine()
        if self.needs_reindex:
            raise IndexMismatchError(self.mismatch or "a re-index is pending: run `reindex` first")
        started = time.perf_counter()
        report = AddReport()
        files: list[Path] = []
        own = [self.assets, self.data_dir / "chroma", self.data_dir / "lexical"]  # never index the index itself
        for entry in iter_files([paths] if isinstance(paths, (str, Path)) else paths, own):
            (report.skipped if isinstance(entry, Skipped) else files).append(entry)
        emit = progress or (lambda event: None)
        for index, path in enumerate(files, 1):
            if cancel is not None and cancel.is_set():
                report.cancelled.append(Skipped(str(path), "not started: indexing was cancelled"))
                continue
            self._add_file(path, index, len(files), emit, report, cancel)
        if report.added:
            self._after_change(emit)
        report.seconds = time.perf_counter() - started
        return report

    def _add_file(self, path: Path, index: int, files: int, emit: ProgressCallback, report: AddReport,
                  cancel: threading.Event | None = None) -> None:
        """Index one file under the writer lock. Then, in a second turn, older versions of the same
        path (documents whose `path` is this resolved path, with other content) are deleted: only
        once this one is committed, and also when it was already indexed (a replace that a crash
        interrupted)."""
        def event(stage: str, done: int = 0, total: int = 0, message: str = "") -> None:
            emit(Progress(stage, str(path), index, files, done, total, message))

        event("file")
        doc_id = ""
        replaced: list[DocumentInfo] = []
        try:
            file_type = kind_for_path(path)
            if file_type is None:
                raise IngestError(path, f"unsupported file type {path.suffix or '(no extension)'}")
            content_hash = file_sha256(path)
            doc_id = content_hash[:16]
            resolved = str(path.resolve())
            with self._writing():
                existing = self.store.committed(doc_id)
                if existing is None:
                    fields = {"content_hash": content_hash, "path": resolved, "file_type": file_type,
                              "added_at": time.time()}
                    loaded = {"total": 0}
                    caps: list[str] = []
                    items = read_ahead(load_items(path, doc_id, self.assets, settings=self.media_settings,
                                                  progress=lambda done, total: loaded.update(total=total),
                                                  on_cap=caps.append))
                    doc, note = self.ingest_items(path, doc_id, items, fields,
                                                  lambda done: event("item", done, max(done, loaded["total"])),
                                                  cancel=cancel)
                    note = "; ".join(caps + [note] if note else caps)
        except Cancelled as stopped:  # keep what was embedded: adding the file again resumes it
            report.cancelled.append(Skipped(str(path), stopped.reason))
            event("cancelled", message=stopped.reason)
            return
        except Exception as error:  # noqa: BLE001 - one bad file must never stop the batch
            if self.chroma_url and server_unreachable(error):
                raise  # not the file's fault: stop the batch (nothing is lost; the next run resumes)
            reason = error.reason if isinstance(error, IngestError) else f"{type(error).__name__}: {error}"
            if not isinstance(error, IngestError):
                log.exception("unexpected error while indexing %s", path)
            if doc_id:
                self._discard(doc_id)
            report.skipped.append(Skipped(str(path), reason))
            event("skipped", message=reason)
            return
        try:
            with self._writing():
                for old in self.store.committed_at_path(resolved):
                    if old.doc_id != doc_id:
                        self._delete_document(old.doc_id)
                        replaced.append(old)
        except Exception as error:  # noqa: BLE001 - the new version is in; say what is left over
            if self.chroma_url and server_unreachable(error):
                raise  # the server went away: one clear line (the next run finishes the replace)
            log.exception("could not remove an older version of %s", path)
            reason = f"an older version is still indexed: {type(error).__name__}: {error}"
            report.notes.append(Skipped(str(path), reason))
        report.replaced += replaced
        said = "; ".join(f"replaced older version of {old.source}" for old in replaced)
        if existing is not None:
            report.unchanged.append(existing)
            event("unchanged", existing.items, existing.items,
                  "; ".join(part for part in (f"already indexed as {existing.source}", said) if part))
            return
        report.added.append(doc)
        if note:
            report.notes.append(Skipped(str(path), note))
        event("added", doc.items, doc.items, "; ".join(part for part in (note, said) if part))

    def _discard(self, doc_id: str) -> None:
        """Remove a failed document's pending items and assets (never a complete document's)."""
        with self._writing():
            if self.store.committed(doc_id) is None:
                self.store.delete([doc_id])
                if not self.others:
                    shutil.rmtree(self.assets / doc_id, ignore_errors=True)

    def _view(self, item: Item) -> Item | None:
        """What the model embeds for an item: itself, its text when it cannot see the images, or nothing."""
        if self.engine.supports(item):
            return item
        if item.kind in TEXT_FALLBACK_KINDS and item.text.strip():
            return item.without_images()
        return None

    def _embed_items(self, pairs: Sequence[tuple[Item, Item]]) -> tuple[Any, list[Item]]:
        """Embed (item, view) pairs: the vectors of the views, and the items with the model's own words."""
        views = [view for _, view in pairs]
        if self.use_words and hasattr(self.engine, "embed_with_words"):
            vectors, words = self.engine.embed_with_words(views, batch_size=self.batch_size, top_words=WORDS_ASKED)
            return vectors, [replace(item, words=content_words(found, ITEM_WORDS)) for (item, _), found in zip(pairs, words)]
        return self.engine.embed(views, batch_size=self.batch_size), [item for item, _ in pairs]

    def ingest_items(self, path: str | Path, doc_id: str, items: Iterable[Item], fields: dict[str, Any],
                     on_item: Callable[[int], None], cancel: threading.Event | None = None) -> tuple[DocumentInfo, str]:
        """Embed and store one document's items as pending, in batches, then commit them at once.

        `add` uses it for files; callers with ready-made Items (the eval datasets) use it directly.

        Items keep their images in the index even when embedded from text only, so that a later
        re-index with a vision model (and the answer stage) can still use the page images.

        Resumable: pending items that an interrupted or cancelled run stored for this document are
        kept, not embedded again, when the item is the same (same id, text, page or time, images,
        file name and path); pending items this run does not produce are dropped before the commit.
        `cancel`, once set, raises `Cancelled` before the next batch is embedded.
        """
        fields = self._stored_fields(fields)
        batch: list[tuple[Item, Item]] = []
        left_out: Counter[str] = Counter()
        stored = 0
        seen: set[str] = set()

        def flush() -> None:
            nonlocal stored
            if cancel is not None and cancel.is_set():
                raise Cancelled(path, f"cancelled after {stored + sum(left_out.values())} item(s); they are kept, "
                                      f"invisible, and adding the same file again continues from there")
            vectors, keep = self._embed_items(batch)
            self._put(keep, vectors, fields)
            for _ in batch:
                stored += 1
                on_item(stored + sum(left_out.values()))
            batch.clear()

        with self._writing():
            finished = self.store.pending_items(doc_id)  # what an interrupted run of this document stored
            if finished:
                fields["added_at"] = min(float(meta.get("added_at", fields.get("added_at", 0.0)))
                                         for meta, _ in finished.values())
            for number, item in enumerate(items):
                item = item if item.item_id else replace(item, item_id=f"{doc_id}:{number}")
                seen.add(item.item_id)
                view = self._view(item)
                if view is None:
                    left_out[item.kind] += 1
                    continue
                if _same_item(item, fields, finished.get(item.item_id)):
                    stored += 1
                    on_item(stored + sum(left_out.values()))
                    continue
                batch.append((item, view))
                if len(batch) >= self.batch_size:
                    flush()
            if batch:
                flush()
            if not stored:
                if left_out:
                    raise _Unseeable(path, f"{CANNOT_SEE} (and there is no text to index instead)")
                raise IngestError(path, "nothing to index in this file")
            self.store.delete_items(set(finished) - seen)  # e.g. beyond a cap lowered since
            self.store.commit(doc_id)
            doc = self.store.document(doc_id)
        assert doc is not None
        note = ", ".join(f"{n} {kind.replace('_', ' ')}(s)" for kind, n in left_out.items())
        return doc, f"{note} left out: {CANNOT_SEE}" if note else ""

    def _stored_fields(self, fields: dict[str, Any]) -> dict[str, Any]:
        """A document's fields as every one of its items stores them (with the space and the writer)."""
        return {**fields, "model_id": self.store.model_id, "prompt_version": self.store.prompt_version,
                "writer": this_writer().to_json()}

    def _put(self, items: Sequence[Item], vectors: Any, fields: dict[str, Any]) -> None:
        """Store items pending, each with its kind's embedding identity (`kind_version`), if the engine has one."""
        version = getattr(self.engine, "kind_version", None)
        if version is None:
            self.store.put(items, vectors, fields)
            return
        for kind in dict.fromkeys(item.kind for item in items):
            rows = [number for number, item in enumerate(items) if item.kind == kind]
            self.store.put([items[number] for number in rows], np.asarray(vectors)[rows],
                           {**fields, "kind_version": version(kind)})

    def _reusable(self, source: Store, doc_id: str, items: Sequence[Item]) -> dict[str, np.ndarray]:
        """Re-index: the vectors `source` holds for items of `doc_id` that need no new embedding:
        the same model, and the loaded engine's `kind_version` of their kind. Items stored without a
        kind_version, or without words where the words channel wants them, are left out."""
        version = getattr(self.engine, "kind_version", None)
        if version is None or source.model_id != self.store.model_id:
            return {}
        stored = source.vectors(doc_id)
        wanted = {kind: version(kind) for kind in {item.kind for item in items}}
        words = self.use_words and hasattr(self.engine, "embed_with_words")
        return {item.item_id: stored[item.item_id][1] for item in items
                if item.item_id in stored and stored[item.item_id][0] == wanted[item.kind]
                and (item.words or not words)}

    # -- removing and re-indexing ----------------------------------------------------------------
    @_server_errors
    def delete(self, doc_id: str) -> DocumentInfo | None:
        """Remove one document: all its items (in every embedding space here), its assets and its
        kept copy under `kept` (unless another document still uses that file). Returns it as the
        active index had it, else as a waiting document (None if neither had it, or if `doc_id` is
        not a plain name: nothing is touched then)."""
        if not plain_name(doc_id):
            return None
        with self._writing():
            doc = self.store.committed(doc_id) or next((w for w in self.waiting() if w.doc_id == doc_id), None)
            self._delete_document(doc_id)
            return doc

    def move(self, doc_id: str, path: str | Path) -> DocumentInfo | None:
        """Record that a document's file now lives at `path` (renamed or moved, same bytes): no
        re-embedding. Returns the document as moved (None if it is not indexed)."""
        resolved = Path(path).resolve()
        with self._writing():
            if self.store.committed(doc_id) is None:
                return None
            return self.store.relocate(doc_id, str(resolved), Path(path).name)

    def _delete_document(self, doc_id: str) -> None:
        with self._writing():
            paths = self._paths_of(doc_id)
            self.store.delete([doc_id])
            for other in self.others:
                collection = self.client.get_collection(other.name, embedding_function=None)
                collection.delete(where={"doc_id": doc_id})
                if other.status == "waiting" and not collection.count():  # its last waiting document
                    self.client.delete_collection(other.name)
            self.others = [i for i in list_indexes(self.client) if i.name != self.store.name and i.count]
            self._waiting = None
            shutil.rmtree(self.assets / doc_id, ignore_errors=True)
            self._drop_kept(doc_id, paths)

    def _collections(self) -> list[Any]:
        """The Chroma collections of every embedding space here (the loaded one first)."""
        return [self.store.collection] + [self.client.get_collection(other.name, embedding_function=None)
                                          for other in self.others]

    def _paths_of(self, doc_id: str) -> set[str]:
        """The `path` a document's items record, in every embedding space (as Chroma has them now)."""
        return {meta["path"] for collection in self._collections()
                for meta in collection.get(where={"doc_id": doc_id}, include=["metadatas"], limit=1)["metadatas"]
                if meta.get("path")}

    def _path_used(self, path: str) -> bool:
        """Whether any item (complete or pending, any embedding space) still records this `path`."""
        return any(collection.get(where={"path": path}, include=[], limit=1)["ids"]
                   for collection in self._collections())

    def _drop_kept(self, doc_id: str, paths: set[str]) -> None:
        """Delete the kept copies of a deleted document: the files under `kept` that its items
        recorded and those in `kept/<doc_id>/` (other names of the same bytes), except a file that
        another document still uses; then that folder if it is empty. Nothing outside `kept`."""
        kept = self.kept.resolve()
        folder = kept / doc_id
        candidates = {Path(path).resolve() for path in paths}
        if folder.is_dir():
            candidates.update(entry.resolve() for entry in folder.iterdir())
        for path in sorted(candidates):
            if path.is_relative_to(kept) and path.is_file() and not self._path_used(str(path)):
                path.unlink(missing_ok=True)
        for parent in {folder, *(path.parent for path in candidates if path.is_relative_to(kept))}:
            if parent != kept and parent.is_relative_to(kept):
                with contextlib.suppress(OSError):  # not empty (a file still in use), or gone
                    parent.rmdir()

    def serves(self, path: str | Path) -> bool:
        """Whether `path` is a file of a listed document (searchable or waiting): its original (the
        path its items record) or one of its assets. The app serves nothing else from its data folder."""
        path = Path(os.path.realpath(path))
        docs = self.documents() + self.waiting()
        assets = Path(os.path.realpath(self.assets))
        if path.is_relative_to(assets) and len(path.relative_to(assets).parts) >= 2:
            return path.relative_to(assets).parts[0] in {doc.doc_id for doc in docs} and path.is_file()
        return any(doc.path == str(path) for doc in docs) and path.is_file()

    def _reindex_sources(self) -> tuple[list[Store], dict[str, tuple[DocumentInfo, Store]]]:
        """The other embedding spaces (those still waiting for a re-index first) and the documents
        to move, each once, that the loaded index does not hold yet."""
        with self._writing():  # a fresh client if another process wrote
            others = sorted((i for i in list_indexes(self.client) if i.name != self.store.name),
                            key=lambda info: info.status == "waiting")
            sources = [Store(self.client, i.model_id, i.prompt_version) for i in others]
        todo: dict[str, tuple[DocumentInfo, Store]] = {}
        for source in sources:
            for doc in source.documents():
                todo.setdefault(doc.doc_id, (doc, source))
        return sources, todo

    @_server_errors
    def reindex_plan(self) -> ReindexPlan:
        """Which documents `reindex` can move and which the loaded model cannot embed at all (they
        would stay in their old index, waiting): to tell the user before anything starts."""
        self._engine()
        plan = ReindexPlan()
        for doc, source in self._reindex_sources()[1].values():
            if self.store.document(doc.doc_id) is not None:
                continue
            seen = any(self._view(item) is not None for item in source.items(doc.doc_id))
            (plan.movable if seen else plan.unseeable).append(doc)
        return plan

    @_server_errors
    def reindex(self, progress: ProgressCallback | None = None) -> AddReport:
        """Re-embed every document of the other embedding spaces with the loaded model.

        Items are re-embedded from what the index stored (text and page/frame images under assets/),
        so the original files need not exist any more. Resumable: documents already re-indexed are
        kept. Nothing the loaded model cannot read is ever dropped: a document it cannot embed at
        all (an image for a text-only model) stays in its old index, marked "waiting" (listed by
        `waiting()`, its assets kept), and comes back with a re-index by a model that can see it.
        Moved documents leave their old index only if every document moved or waits; after any
        other failure the old indexes stay whole and `reindex` can be run again.
        """
        self._engine()
        started = time.perf_counter()
        report = AddReport()
        emit = progress or (lambda event: None)
        with self._lock:
            sources, todo = self._reindex_sources()
            failed = False
            for index, (doc, source) in enumerate(todo.values(), 1):
                def event(stage: str, done: int = 0, total: int = 0, message: str = "") -> None:
                    emit(Progress(stage, doc.path or doc.source, index, len(todo), done, total, message))

                event("file")
                with self._writing():  # one document per turn, so other processes interleave
                    if (existing := self.store.committed(doc.doc_id)) is not None:
                        report.unchanged.append(existing)
                        event("unchanged", existing.items, existing.items)
                        continue
                    items = source.items(doc.doc_id)
                    fields = {"content_hash": doc.content_hash, "path": doc.path, "file_type": doc.file_type,
                              "added_at": doc.added_at}
                    try:
                        reused = self._reusable(source, doc.doc_id, items)
                        rest = [item for item in items if item.item_id not in reused]

                        def store_copies() -> None:  # vector, words and metadata, pending like the rest
                            copies = [item for item in items if item.item_id in reused]
                            if copies:
                                self._put(copies, np.stack([reused[item.item_id] for item in copies]),
                                          self._stored_fields(fields))
                            event("item", len(copies), len(items))

                        def copies_then_rest() -> Iterator[Item]:
                            # The copies are stored once the ingest has begun, so that it commits them
                            # with what it embeds, as items of this run.
                            store_copies()
                            yield from rest

                        if rest:
                            new, note = self.ingest_items(doc.source, doc.doc_id, copies_then_rest(), fields,
                                                          lambda done: event("item", len(reused) + done, len(items)))
                        else:  # every vector copied: nothing to embed
                            store_copies()
                            self.store.commit(doc.doc_id)
                            new, note = self.store.document(doc.doc_id), ""
                    except Exception as error:  # noqa: BLE001 - keep going, keep the old index
                        if self.chroma_url and server_unreachable(error):
                            raise  # stop: the old index is whole and the next run resumes
                        if isinstance(error, _Unseeable):
                            self.store.delete([doc.doc_id])
                            report.waiting.append(Skipped(doc.path or doc.source, WAITING_FOR_IMAGES))
                            event("waiting", message=f"kept in the old index, {WAITING_FOR_IMAGES}")
                            continue
                        failed = True
                        reason = error.reason if isinstance(error, IngestError) else f"{type(error).__name__}: {error}"
                        self.store.delete([doc.doc_id])
                        report.skipped.append(Skipped(doc.path or doc.source, reason))
                        event("skipped", message=reason)
                        continue
                    report.added.append(new)
                    report.reused += len(reused)
                    if note:
                        report.notes.append(Skipped(doc.path or doc.source, note))
                    copied = f"{len(reused)} of {new.items} copied unchanged" if reused else ""
                    event("added", new.items, new.items, "; ".join(part for part in (note, copied) if part))
            with self._writing():
                self.store.set_status("active")
                self.mismatch = None
                if not failed:
                    self._retire(sources, {doc.doc_id for doc in report.added + report.unchanged})
                    self._recover()
                else:
                    self.others = [i for i in list_indexes(self.client) if i.name != self.store.name and i.count]
                self._waiting = None
        if report.added:
            self._after_change(emit)
        report.seconds = time.perf_counter() - started
        return report

    def _retire(self, sources: Sequence[Store], moved: set[str]) -> None:
        """After a re-index: drop the moved documents from the old indexes. An old index that still
        holds documents (those the loaded model cannot see) is kept, marked "waiting"; an emptied
        one is deleted."""
        for source in sources:
            left = {doc.doc_id for doc in source.documents()} - moved
            if left:
                source.delete(moved)
                source.set_status("waiting")
            else:
                self.client.delete_collection(source.name)
        self.others = [i for i in list_indexes(self.client) if i.name != self.store.name and i.count]

    # -- the self-check and what it decides -------------------------------------------------------
    @property
    @_server_errors
    def self_check_result(self) -> SelfCheck | None:
        """The last self-check stored with this index (for its model and prompt version), or None."""
        if self._checked is None or self._checked[0] != self.store.name:
            raw = self.store.get_note("self_check")
            result = None
            if raw:
                try:
                    result = SelfCheck.from_json(raw)
                except (ValueError, TypeError):
                    log.warning("ignoring an unreadable self-check stored with %s", self.store.name)
            self._checked = (self.store.name, result)
        return self._checked[1]

    @property
    def self_check_stale(self) -> bool:
        result = self.self_check_result
        return result is None or result.stale(len(self.store))

    @_server_errors
    def self_check(self, progress: Callable[[str], None] | None = None, limit: int = selfcheck.MAX_QUERIES) -> SelfCheck:
        """Measure the loaded model on this library now (selfcheck.py) and store the result with the index.

        `limit` test queries at most (each costs one short generation and about a dozen rerank pairs)."""
        engine = self._engine()
        items = self.store.all_items()
        channels = fusion.CHANNELS if self.use_words and len(self.store.words) else ("dense", "lexical")
        search = lambda query, replaced=(): self.channel_rankings(query, selfcheck.DEPTH, replaced)  # noqa: E731
        result = selfcheck.measure(engine, items, search, self.store.kind_of, len(self.store), channels,
                                   progress or (lambda line: None), limit=limit)
        self._substituted = None  # its stand-ins' copies of the index are not needed any more
        with self._writing():
            self.store.set_note("self_check", result.to_json())
            self._checked = (self.store.name, result)
        log.info("self-check of %s: %s", self.store.name, " ".join(result.describe()))
        return result

    def _after_change(self, emit: ProgressCallback) -> None:
        """At the end of indexing: re-measure when the library changed by half (never in a question).

        With `self_check="background"` (the web app) it runs in a thread of its own, so the upload
        finishes at once; its model calls queue behind the engine's lock like any other."""
        if not self.auto_self_check or self.engine is None or not self.self_check_stale:
            return
        if self.auto_self_check == "background":
            with self._lock:
                if self._check_thread is not None and self._check_thread.is_alive():
                    return  # one at a time; the next upload re-checks staleness
                self._check_thread = threading.Thread(target=self._check_now, args=(lambda event: None,),
                                                      name="freeret-self-check", daemon=True)
                self._check_thread.start()
            return
        self._check_now(emit)

    def _check_now(self, emit: ProgressCallback) -> None:
        emit(Progress("check", "", 0, 0, message="checking how well the model finds your items ..."))
        try:
            result = self.self_check(lambda line: emit(Progress("check", "", 0, 0, message=line)))
        except Exception:  # noqa: BLE001 - a failed measurement must not fail the indexing it follows
            log.exception("the self-check failed; the previous settings stay")
            return
        emit(Progress("check", "", 0, 0, message=" ".join(result.describe())))

    @property
    def fusion_weights(self) -> dict[str, tuple[float, float, float]]:
        """kind -> (dense, lexical, words) RRF weights ("*": every other kind): fixed if given, else
        the self-check's, else plain RRF. The words channel is off when `use_words` is."""
        if self._fixed_fusion_weights is not None:
            weights = self._fixed_fusion_weights
        else:
            result = self.self_check_result
            weights = result.fusion_weights() if result is not None and result.measured else {"*": fusion.PLAIN}
        if not self.use_words:
            weights = {kind: (d, l, 0.0) for kind, (d, l, _) in weights.items()}
        return weights

    @property
    def rerank_share(self) -> float:
        """How much the rerank may move the first-stage order (fusion.blend): fixed, measured or default."""
        if self._fixed_share is not None:
            return self._fixed_share
        result = self.self_check_result
        return result.rerank_share if result is not None and result.measured else selfcheck.DEFAULT_SHARE

    @property
    def relevance_floor(self) -> float | None:
        """The self-check's p(match) floor, or None when it is unmeasured or the reranker cannot tell."""
        result = self.self_check_result
        return result.floor if result is not None and result.measured else None

    # -- searching -------------------------------------------------------------------------------
    def embed_query(self, query: Query) -> tuple[Any, list[str]]:
        """The query vector and (with the words channel on) the model's own top words for it."""
        engine = self._engine()
        if self.use_words and len(self.store.words) and hasattr(engine, "embed_query_with_words"):
            vector, words = engine.embed_query_with_words(query, top_words=WORDS_ASKED)
            return vector, list(content_words(words, QUERY_WORDS))
        return engine.embed_query(query), []

    def channel_rankings(self, query: Query, depth: int, replaced: Sequence[Item] = ()) -> dict[str, list[str]]:
        """The first-stage rankings of a query, one per channel (what the self-check measures). With
        `replaced` (items with the ids of indexed ones), as if those items had that content instead:
        the self-check's cloze stand-ins are ranked without the sentence they were asked with."""
        vector, words = self.embed_query(query)
        pairs = [(item, view) for item in replaced for view in [self._view(item)] if view is not None]
        if not pairs:
            return self.store.channels(vector, query.text, depth, query_words=words)[0]
        key = tuple((item.item_id, item.text) for item, _ in pairs)
        if self._substituted is None or self._substituted[0] != key:
            vectors, items = self._embed_items(pairs)
            self._substituted = (key, Substituted(self.store, items, vectors))
        return self._substituted[1].channels(vector, query.text, depth, words)

    @_server_errors
    def search(self, query: Query | str, k: int = 10, kinds: Sequence[ItemKind] | None = None,
               doc_ids: Sequence[str] | None = None, rerank: bool = True, rerank_k: int = RERANK_K,
               depth: int | None = None, score_head: bool = False) -> list[Hit]:
        """Ranked hits: dense, lexical and model-word candidates fused by weighted RRF, then the top
        `rerank_k` reranked by the model and blended with the first-stage order by the measured share.

        `depth` candidates are drawn from each first-stage channel. With `rerank`, the head is
        reranked when the blend gives the reranker a share, when a relevance floor was measured or
        when `score_head` asks for p(match) (a caller's fixed threshold); otherwise it is skipped.
        """
        engine = self._engine()
        query = Query(query) if isinstance(query, str) else query
        self.refresh()  # never answer from a document another process deleted
        if not len(self.store):
            return []
        vector, words = self.embed_query(query)
        depth = depth or max(2 * k, rerank_k, 50)
        hits = self.store.search(vector, query.text, depth, kinds, doc_ids, self.fusion_weights, words)
        share = self.rerank_share
        if rerank and rerank_k > 0 and hits and (share > 0 or score_head or self.relevance_floor is not None):
            affordable = getattr(engine, "affordable_rerank_k", None)  # K the measured time per pair allows
            rerank_k = affordable(rerank_k) if affordable is not None else rerank_k
            head = {hit.item.item_id: hit for hit in engine.rerank(query, hits[:rerank_k])}
            scores = {item_id: hit.rerank_score for item_id, hit in head.items()}
            order = fusion.blend([hit.item.item_id for hit in hits], scores, share)
            by_id = {hit.item.item_id: hit for hit in hits} | head
            size = len(head)
            for position, item_id in enumerate(order[:size]):
                by_id[item_id].final_score = 1.0 - position / size
            hits = [by_id[item_id] for item_id in order]
        return hits[:k]
