"""Many libraries in one app: one per login, one per demo session, and read-only extras (core, no UI).

- `owner_folder(owner)`: the folder name of a login's library, `<slug>-<10 hex of sha256>`: the
  slug keeps it readable (safe characters only), the hash keeps names that slug alike apart
  ("a.b" and "a_b" both slug to "a-b").
- `LibraryRegistry`: owner -> open Library, at most `max_open` open (least recently used closed
  first), never one that a request still holds (`checkout` holds it until the holder is gone).
- `DemoSessions`: the temporary libraries of a public demo, one per browser session, removed when
  the session ends (`end`) or after `ttl_s` without a request (`sweep`).
- `WithShared`: a user's library searched together with read-only ones (a shared library, the
  demo's samples); hits keep each library's own order and are merged by score.
- `upload_caps`: the files of an upload beyond a session's file count or size cap, with the reason.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from .items import plural

log = logging.getLogger(__name__)

MAX_OPEN = 64


def owner_folder(owner: str) -> str:
    """`<slug>-<first 10 hex of the SHA-256 of the name>`: lowercase letters, digits and '-' only."""
    slug = re.sub(r"[^a-z0-9]+", "-", owner.lower()).strip("-")[:40] or "user"
    return f"{slug}-{hashlib.sha256(owner.encode('utf-8')).hexdigest()[:10]}"


def session_folder(session: str) -> str:
    """A demo session's folder name: a hash of its session id (the id itself appears nowhere)."""
    return hashlib.sha256(("demo:" + session).encode("utf-8")).hexdigest()[:24]


def database_name(folder: str) -> str:
    """The Chroma database of a library folder on a server (`--chroma-url`)."""
    return "freeret_" + folder.replace("-", "_")


def ensure_database(chroma_url: str, database: str) -> None:
    """Create `database` (tenant default) on the Chroma server if it is not there yet."""
    import chromadb
    from chromadb.config import Settings
    from urllib.parse import urlparse

    url = urlparse(chroma_url if "://" in chroma_url else f"http://{chroma_url}")
    ssl = url.scheme == "https"
    admin = chromadb.AdminClient(Settings(chroma_api_impl="chromadb.api.fastapi.FastAPI",
                                          chroma_server_host=url.hostname or "localhost",
                                          chroma_server_http_port=url.port or (443 if ssl else 8000),
                                          chroma_server_ssl_enabled=ssl, anonymized_telemetry=False,
                                          _env_file=None))
    try:
        admin.get_database(database)
    except Exception:  # noqa: BLE001 - not found (the server says so in several ways)
        admin.create_database(database)


def forget_embedded_client(data_dir: Path) -> None:
    """Drop Chroma's process-wide cache of the embedded client of a library folder (closed library)."""
    try:
        from chromadb.api.shared_system_client import SharedSystemClient

        SharedSystemClient._identifier_to_system.pop(str(Path(data_dir) / "chroma"), None)
    except Exception:  # noqa: BLE001 - a cache entry more is not an error
        log.debug("could not drop the Chroma client of %s", data_dir, exc_info=True)


class LibraryRegistry:
    """owner -> Library, opened on first use by `opener(owner)`; at most `max_open` kept open.

    `checkout(owner, holder)` returns the library and holds it until `holder` (e.g. the request's
    view object) is garbage-collected: a held library is never closed to make room. `closer(owner,
    library)` is called for every library closed (evicted or dropped)."""

    def __init__(self, opener: Callable[[str], Any], max_open: int = MAX_OPEN,
                 closer: Callable[[str, Any], None] | None = None) -> None:
        self.opener, self.max_open, self.closer = opener, max(1, int(max_open)), closer
        self._open: OrderedDict[str, Any] = OrderedDict()
        self._holds: dict[str, int] = {}
        self._used: dict[str, float] = {}  # owner -> when it was last asked for (time.monotonic)
        self._lock = threading.RLock()
        self._opening: dict[str, threading.Lock] = {}

    def __contains__(self, owner: str) -> bool:
        return owner in self._open

    def __len__(self) -> int:
        return len(self._open)

    def owners(self) -> list[str]:
        with self._lock:
            return list(self._open)

    def held(self, owner: str) -> int:
        return self._holds.get(owner, 0)

    def get(self, owner: str, hold: bool = False) -> Any:
        """The owner's library (opened if needed), marked as the most recently used. `hold`: also
        counted as held, in the same step (so that no eviction comes in between; `checkout`).

        The registry's lock is never held while a library opens (that takes a while: Chroma, the
        keyword index), so other owners are served meanwhile; one owner opens once."""
        with self._lock:
            if owner in self._open:
                return self._found(owner, hold)
            opening = self._opening.setdefault(owner, threading.Lock())
        with opening:  # one opening per owner; other owners open meanwhile
            with self._lock:
                if owner in self._open:
                    return self._found(owner, hold)
            library = self.opener(owner)
            with self._lock:
                self._open[owner] = library
                self._opening.pop(owner, None)
                found = self._found(owner, hold)
                self._evict(keep=owner)
                return found

    def _found(self, owner: str, hold: bool) -> Any:
        """(Under the lock.) The open library of `owner`, now the most recently used; held if asked."""
        self._used[owner] = time.monotonic()
        self._open.move_to_end(owner)
        if hold:
            self._holds[owner] = self._holds.get(owner, 0) + 1
        return self._open[owner]

    def checkout(self, owner: str, holder: Any) -> Any:
        """`get`, held until `holder` is gone."""
        library = self.get(owner, hold=True)
        weakref.finalize(holder, self._release, owner)
        return library

    def _release(self, owner: str) -> None:
        with self._lock:
            left = self._holds.get(owner, 0) - 1
            if left > 0:
                self._holds[owner] = left
            else:
                self._holds.pop(owner, None)
            self._evict()

    def _evict(self, keep: str | None = None) -> None:
        while len(self._open) > self.max_open:
            victim = next((owner for owner in self._open if not self._holds.get(owner) and owner != keep), None)
            if victim is None:  # every one is in use: close some later
                return
            self._close(victim)

    def close_idle(self, idle_s: float, now: float | None = None) -> list[str]:
        """Close the libraries nobody holds that were not asked for in the last `idle_s` seconds."""
        now = time.monotonic() if now is None else now
        with self._lock:
            idle = [owner for owner in self._open
                    if not self._holds.get(owner) and now - self._used.get(owner, now) > idle_s]
            for owner in idle:
                self._close(owner)
            return idle

    def drop(self, owner: str) -> Any:
        """Close the owner's library now (held or not); returns it, or None if it was not open."""
        with self._lock:
            return self._close(owner) if owner in self._open else None

    def _close(self, owner: str) -> Any:
        library = self._open.pop(owner)
        self._used.pop(owner, None)
        if self.closer is not None:
            try:
                self.closer(owner, library)
            except Exception:  # noqa: BLE001 - closing must not fail the request that evicts
                log.exception("closing the library of %s", owner)
        return library


class DemoSessions:
    """The public demo's session libraries under `root/<session_folder>/`: last use per session,
    removal on `end(session)` and, for sessions unused for `ttl_s`, on `sweep()`. `on_remove(session)`
    closes the session's library before its folder goes."""

    def __init__(self, root: Path, ttl_s: float, on_remove: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic, busy: Callable[[str], bool] | None = None,
                 grace_s: float = 0.0) -> None:
        self.root, self.ttl_s, self.on_remove, self.clock = Path(root), float(ttl_s), on_remove, clock
        self.busy = busy  # a session still in a request (e.g. a long upload) is never removed
        # `end` (Gradio's unload) also comes when a tab's connection drops for a moment and comes
        # back: the session goes only after `grace_s` without a request.
        self.grace_s = max(0.0, float(grace_s))
        self._ending: dict[str, float] = {}  # session -> when its tab was said to be closed
        self._seen: dict[str, float] = {}
        self._cookies: dict[str, str] = {}  # session -> the browser cookie it first came with
        self._lock = threading.Lock()
        # Folders of an earlier run have no session any more.
        if self.root.is_dir():
            for entry in self.root.iterdir():
                shutil.rmtree(entry, ignore_errors=True)
        self.root.mkdir(parents=True, exist_ok=True)

    def folder(self, session: str) -> Path:
        return self.root / session_folder(session)

    def touch(self, session: str, cookie: str | None = None) -> Path:
        """Note a request of the session (now), and the browser cookie it first came with; its folder."""
        with self._lock:
            self._seen[session] = self.clock()
            self._ending.pop(session, None)  # it came back (a dropped connection, not a closed tab)
            if cookie and session not in self._cookies:
                self._cookies[session] = cookie
        folder = self.folder(session)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def live(self, session: str) -> bool:
        return session in self._seen

    def cookie_of(self, session: str) -> str | None:
        return self._cookies.get(session)

    def session_of(self, folder: str) -> str | None:
        """The live session whose folder is `folder` (None: no live session has it)."""
        with self._lock:
            return next((session for session in self._seen if session_folder(session) == folder), None)

    def end(self, session: str) -> bool:
        """The session's tab closed: its library goes once `grace_s` has passed without a request
        and no request of it runs (now, with no grace and nothing running; else on a `sweep`).
        Whether there was such a session."""
        with self._lock:
            if session not in self._seen:
                return False
            self._ending.setdefault(session, self.clock())
        self.sweep()
        return True

    def _busy(self, session: str) -> bool:
        return self.busy is not None and self.busy(session)

    def sweep(self) -> list[str]:
        """Remove the sessions unused for longer than the TTL, and those ended `grace_s` ago, unless
        a request of theirs still runs. The sessions removed. In memory but for the removals: cheap
        enough for every request (ui_users.Users.view)."""
        now = self.clock()
        with self._lock:
            expired = [session for session, seen in self._seen.items()
                       if (now - seen > self.ttl_s
                           or (session in self._ending and now - self._ending[session] >= self.grace_s))
                       and not self._busy(session)]
            for session in expired:
                del self._seen[session]
                self._ending.pop(session, None)
                self._cookies.pop(session, None)
        for session in expired:
            self._remove(session)
        return expired

    def remove_orphans(self) -> None:
        """Remove the folders no live session owns (left by a writer that ran on after its session
        went). Lists the folder: for the periodic sweep (ui_users.Users._sweeper), not every request."""
        with self._lock:  # held while removing: a session that comes back meanwhile waits in `touch`
            owned = {session_folder(session) for session in self._seen}
            try:
                orphans = [entry for entry in self.root.iterdir() if entry.name not in owned]
            except OSError:
                return
            for entry in orphans:
                shutil.rmtree(entry, ignore_errors=True)

    def _remove(self, session: str) -> None:
        if self.on_remove is not None:
            try:
                self.on_remove(session)
            except Exception:  # noqa: BLE001 - the folder goes all the same
                log.exception("closing a demo session's library")
        shutil.rmtree(self.folder(session), ignore_errors=True)


def folder_size(folder: Path) -> int:
    """Bytes of the files under `folder`."""
    total = 0
    for base, _, names in os.walk(folder):
        for name in names:
            try:
                total += os.path.getsize(os.path.join(base, name))
            except OSError:
                pass
    return total


def upload_caps(sizes: Sequence[int], files_now: int, bytes_now: int, max_files: int,
                max_bytes: int) -> list[str | None]:
    """For each file of an upload (its size), in order: None if it fits under the session's caps
    (`max_files` documents, `max_bytes` in all, 0: no cap) given what is there already, else why not."""
    reasons: list[str | None] = []
    files, used = files_now, bytes_now
    for size in sizes:
        if max_files and files + 1 > max_files:
            reasons.append(f"this demo library holds at most {plural(max_files, 'file')}: "
                           "delete one to add another")
        elif max_bytes and used + size > max_bytes:
            reasons.append(f"this demo library holds at most {max_bytes / 1024**2:.3g} MB in all "
                           f"({max(0, max_bytes - used) / 1024**2:.3g} MB left)")
        else:
            reasons.append(None)
            files, used = files + 1, used + size
    return reasons


class WithShared:
    """`own` searched together with read-only `extras`: what the chat searches. Listing gives every
    library's documents (own first); the hits of each keep their order and are merged by score
    (the reranker's p(match) where both have it, else the fused first-stage score)."""

    def __init__(self, own: Any, extras: Iterable[Any]) -> None:
        self.own = own
        self.extras = [extra for extra in extras if extra is not None and extra is not own]

    def __getattr__(self, name: str) -> Any:  # everything else is the user's own library's
        return getattr(self.own, name)

    @property
    def libraries(self) -> list[Any]:
        return [self.own, *self.extras]

    def documents(self) -> list[Any]:
        seen: set[str] = set()
        docs = []
        for library in self.libraries:
            for doc in library.documents():
                if doc.doc_id not in seen:
                    seen.add(doc.doc_id)
                    docs.append(doc)
        return docs

    def read_only_ids(self) -> set[str]:
        own = {doc.doc_id for doc in self.own.documents()}
        return {doc.doc_id for extra in self.extras for doc in extra.documents()} - own

    @property
    def relevance_floor(self) -> float | None:
        for library in self.libraries:
            floor = getattr(library, "relevance_floor", None)
            if floor is not None and library.documents():
                return floor
        return None

    def serves(self, path: str | Path) -> bool:
        return any(library.serves(path) for library in self.libraries)

    def search(self, query: Any, k: int = 10, **options: Any) -> list[Any]:
        ranked = [library.search(query, k=k, **options) for library in self.libraries if library.documents()]
        return merge_hits(ranked, k)


class ReadOnlyDocument:
    """A document of a shared read-only library, as a user's listing shows it."""

    read_only = True
    text_note = "shared, read-only"

    def __init__(self, doc: Any) -> None:
        self._doc = doc

    def __getattr__(self, name: str) -> Any:
        return getattr(self._doc, name)


def _hit_key(hit: Any) -> tuple[int, float]:
    if hit.rerank_score is not None:
        return 1, float(hit.rerank_score)
    return 0, float(hit.fused_score if hit.fused_score is not None else hit.score)


def merge_hits(ranked: Sequence[Sequence[Any]], k: int) -> list[Any]:
    """Merge ranked lists (each kept in its own order): the best head first, one item once, `k` at most."""
    heads = [0] * len(ranked)
    merged, seen = [], set()
    while len(merged) < k:
        live = [n for n, hits in enumerate(ranked) if heads[n] < len(hits)]
        if not live:
            break
        best = max(live, key=lambda n: (_hit_key(ranked[n][heads[n]]), -n))
        hit = ranked[best][heads[best]]
        heads[best] += 1
        if hit.item.item_id not in seen:
            seen.add(hit.item.item_id)
            merged.append(hit)
    return merged
