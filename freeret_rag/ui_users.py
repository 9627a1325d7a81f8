"""Whose library a request uses: one per login (`--auth`), one per browser session (`--demo`), or
the app's single library (neither: today's behaviour). See libraries.py for the parts without UI.

`Users.view(app, request)` is what `FreeRetApp.for_request` returns: a shallow copy of the app
whose `library` is the requester's own (held open while the view lives), whose `config.data_dir`
(hence upload and asset folders) is that library's folder, and whose `shared` lists the read-only
libraries searched besides it (the `--shared-library`, the demo's sample library once asked for).

Folders under the app's data folder:
    users/<owner_folder(login)>/     a login's library (its Chroma, or its own database on a server)
    demo/<session_folder(session)>/  a demo session's library, removed on unload or after the TTL
    samples/                         the bundled sample library, indexed once, read-only
    empty/                           the app's own (never written) library in these modes

The file routes (`serves(path, requester)`, used by ui_files.FileGuard) serve a file under the data
folder only from the requesting login's library; a demo session's files only while the session
lives, and only to requests with the browser cookie (ui_files.DemoCookie) the session first came
with (a session that came without one: to whoever has the URL, its folder name being a hash of
the session id); the shared and sample libraries' files to everyone.
"""

from __future__ import annotations

import atexit
import copy
import dataclasses
import logging
import os
import shutil
import threading
import weakref
from pathlib import Path
from typing import Any

from .errors import FreeRetError
from .ui_files import DEMO_COOKIE, parse_cookies
from .libraries import (DemoSessions, LibraryRegistry, database_name, ensure_database, folder_size,
                        forget_embedded_client, owner_folder, upload_caps)

log = logging.getLogger(__name__)

SAMPLES = Path(__file__).resolve().parents[1] / "assets" / "samples"
IDLE_CLOSE_S = 30 * 60  # a library nobody asked for in this long is closed (opened again when needed)
SAMPLE_QUESTIONS = ("What do ladybirds eat?", "When does the yellow flower appear in the video?",
                    "When must an application run update-mime-database?")


def browser_cookie(request: Any) -> str | None:
    """The demo cookie (ui_files.DemoCookie) a request came with, if any."""
    headers = getattr(request, "headers", None)
    try:
        header = headers.get("cookie") if headers is not None else None
    except Exception:  # noqa: BLE001 - headers of another shape: no cookie
        header = None
    return parse_cookies(header).get(DEMO_COOKIE) if header else None


STOP_WAIT_S = 60.0  # at exit, how long the sample library's indexing may take to finish its batch
_RUNNING: "weakref.WeakSet[Users]" = weakref.WeakSet()  # apps whose background indexing stops at exit


@atexit.register
def _stop_background_indexing() -> None:
    """At interpreter exit: stop the sample library's indexing and wait for it. Left running, its
    thread would be in the model's native code when Python finalises, which aborts the process
    ("terminate called without an active exception", exit status 134)."""
    for users in list(_RUNNING):
        users.stop_background()


class Users:
    """The per-user (or per-session) libraries of one app (see the module's docstring)."""

    def __init__(self, app: Any, samples: Path = SAMPLES) -> None:
        config = app.config
        self.app = app
        self.mode = "demo" if config.demo else "users" if config.auth else "single"
        self.data_dir = config.data_dir
        self.samples_dir = samples
        self.shared = app.open_library(config.shared_library, read_only=True) if config.shared_library else None
        self.registry = LibraryRegistry(self._open, closer=self._close)
        self.sessions: DemoSessions | None = None
        self.with_samples: set[str] = set()  # demo sessions that asked for the sample library
        self._samples: Any = None
        self._samples_lock = threading.Lock()
        self._stopping = threading.Event()  # set at exit: the sample library's indexing stops
        self._indexing: threading.Thread | None = None
        if self.mode == "demo":
            self.sessions = DemoSessions(self.data_dir / "demo", config.demo_ttl_minutes * 60,
                                         on_remove=self._session_gone, grace_s=config.demo_grace_seconds,
                                         busy=lambda session: self.registry.held("demo:" + session) > 0)
            self._indexing = threading.Thread(target=self._prepare_samples, name="freeret-samples", daemon=True)
            _RUNNING.add(self)
            self._indexing.start()
        if self.many:
            threading.Thread(target=self._sweeper, name="freeret-sweep", daemon=True).start()

    @property
    def many(self) -> bool:
        return self.mode != "single"

    # -- libraries ----------------------------------------------------------------------------------
    def folder(self, key: str) -> Path:
        kind, _, name = key.partition(":")
        if kind == "demo":
            assert self.sessions is not None
            return self.sessions.folder(name)
        return self.data_dir / "users" / owner_folder(name)

    def _open(self, key: str) -> Any:
        folder = self.folder(key)
        folder.mkdir(parents=True, exist_ok=True)
        # A demo tab's library skips the self-check (text generated after indexing): fixed defaults.
        return self.app.open_library(folder, database=self._database(folder.name), read_only=self.mode == "demo")

    def _database(self, name: str) -> str | None:
        """On a Chroma server, the database of the library folder `name`, created if needed (never the
        default database, which holds the single library of before); None for a local library."""
        if not self.app.config.chroma_url:
            return None
        database = database_name(name)
        ensure_database(self.app.config.chroma_url, database)
        return database

    @staticmethod
    def _close(key: str, library: Any) -> None:
        if getattr(library, "chroma_url", None) is None:
            forget_embedded_client(library.data_dir)

    def key_of(self, request: Any) -> str:
        if self.mode == "users":
            name = getattr(request, "username", None)
            if not name:
                raise FreeRetError("Sign in first: every login has a library of its own.")
            return "user:" + name
        session = getattr(request, "session_hash", None) or ""
        if not session:
            raise FreeRetError("This request has no browser session, so it has no demo library.")
        return "demo:" + session

    def view(self, app: Any, request: Any) -> Any:
        """The app as the requester sees it (see the module's docstring)."""
        if not self.many:
            return app
        key = self.key_of(request)
        if self.sessions is not None:
            self.sessions.sweep()
            self.sessions.touch(key.partition(":")[2], browser_cookie(request))
        view = copy.copy(app)
        folder = self.folder(key)
        view.config = dataclasses.replace(app.config, data_dir=folder)
        view.config.upload_dir.mkdir(parents=True, exist_ok=True)
        view.library = self.registry.checkout(key, view)
        view.shared = [lib for lib in (self.shared, self._samples if key in self.with_samples else None) if lib]
        view.caps = (self.app.config.demo_max_files, int(self.app.config.demo_max_mb * 1024**2)) \
            if self.mode == "demo" else None
        return view

    # -- demo sessions --------------------------------------------------------------------------------
    def end_session(self, request: Any) -> None:
        """The browser tab closed (`demo.unload`): its demo library goes now."""
        session = getattr(request, "session_hash", None)
        if self.sessions is not None and session:
            self.sessions.end(session)

    def _session_gone(self, session: str) -> None:
        self.with_samples.discard("demo:" + session)
        self.registry.drop("demo:" + session)

    def _sweeper(self) -> None:
        """Every so often: demo sessions past their TTL or grace time removed, folders of no session
        removed, libraries idle for long closed."""
        soonest = min(self.sessions.ttl_s, self.sessions.grace_s or self.sessions.ttl_s) if self.sessions else 240.0
        period = min(60.0, max(1.0, soonest / 4))
        stop = threading.Event()
        while not stop.wait(period):
            try:
                if self.sessions is not None:
                    self.sessions.sweep()
                    self.sessions.remove_orphans()
                self.registry.close_idle(IDLE_CLOSE_S)
            except Exception:  # noqa: BLE001 - the next round tries again
                log.exception("sweeping demo sessions and idle libraries")

    def capped(self, view: Any, paths: list[Path]) -> list[str | None]:
        """Why each upload would go over the demo session's caps (None: it fits)."""
        if not getattr(view, "caps", None):
            return [None] * len(paths)
        max_files, max_bytes = view.caps
        try:
            docs = len(view.library.documents())
        except FreeRetError:
            docs = 0
        used = folder_size(view.config.upload_dir)
        sizes = [path.stat().st_size if path.is_file() else 0 for path in paths]
        return upload_caps(sizes, docs, used, max_files, max_bytes)

    # -- the sample library ----------------------------------------------------------------------------
    def samples_library(self) -> Any:
        """The bundled sample library, indexed once into data/samples (copies of assets/samples)."""
        with self._samples_lock:
            if self._samples is None:
                if not self.samples_dir.is_dir():
                    raise FreeRetError(f"This installation has no sample library ({self.samples_dir} is missing).")
                folder = self.data_dir / "samples"
                files = folder / "files"
                files.mkdir(parents=True, exist_ok=True)
                for source in sorted(self.samples_dir.iterdir()):
                    if source.is_file() and source.suffix.lower() != ".md":
                        target = files / source.name
                        if not target.is_file() or target.stat().st_size != source.stat().st_size:
                            shutil.copyfile(source, target)
                library = self.app.open_library(folder, database=self._database("samples"), read_only=True)
                if not library.needs_reindex:
                    report = library.add([files], cancel=self._stopping)
                    for skipped in report.skipped:
                        log.warning("sample %s not indexed: %s", skipped.path, skipped.reason)
                self._samples = library
            return self._samples

    def stop_background(self, wait_s: float = STOP_WAIT_S) -> bool:
        """Stop the sample library's indexing at its next batch and wait for it (at most `wait_s`).
        Whether it is no longer running."""
        self._stopping.set()
        if self._indexing is not None and self._indexing.is_alive():
            self._indexing.join(wait_s)
        return self._indexing is None or not self._indexing.is_alive()

    def _prepare_samples(self) -> None:
        """Index the sample library at start-up, so that its button answers at once."""
        try:
            self.samples_library()
        except Exception:  # noqa: BLE001 - the button tries again and says what is wrong
            log.exception("indexing the sample library")

    def attach_samples(self, request: Any) -> str:
        """The demo session's chat searches the sample library too (read-only); says so."""
        try:
            library = self.samples_library()
        except FreeRetError as error:
            return str(error)
        self.with_samples.add(self.key_of(request))
        names = sorted(doc.source for doc in library.documents())
        return ("Sample library added (read-only): " + ", ".join(names) +
                ". Ask one of the questions below, or your own.") if names else \
            "The sample library could not be indexed with this model."

    # -- the file routes ------------------------------------------------------------------------------
    def serves(self, path: str | Path, requester: Any) -> bool:
        """Whether the file route may serve `path` to the requester (ui_files.Requester)."""
        login, cookies = getattr(requester, "login", None), getattr(requester, "cookies", {})
        real = Path(os.path.realpath(path))
        data = Path(os.path.realpath(self.data_dir))
        if real.is_relative_to(data) and real != data:
            parts = real.relative_to(data).parts
            if parts[0] == "samples":
                return self._samples is not None and self._samples.serves(real)
            if parts[0] == "users" and len(parts) > 2:
                return self.mode == "users" and bool(login) and parts[1] == owner_folder(login) \
                    and self.registry.get("user:" + login).serves(real)
            if parts[0] == "demo" and len(parts) > 2:
                session = self.sessions.session_of(parts[1]) if self.sessions is not None else None
                if session is None:
                    return False
                bound = self.sessions.cookie_of(session)  # a browser's session: its own cookie only
                return (bound is None or cookies.get(DEMO_COOKIE) == bound) \
                    and self.registry.get("demo:" + session).serves(real)
        if self.shared is not None and self.shared.serves(real):
            return True
        return not self.many and self.app.library.serves(real)
