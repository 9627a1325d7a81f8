"""Watched folders: keep the library in step with a folder while the app runs.

    watcher = FolderWatcher(library, "~/Papers")
    watcher.start()        # a first sync, then one sync (sync.py) after every burst of changes
    watcher.lines()        # what it did, newest last, for the UI
    watcher.stop()

Changes come from `watchfiles` (inotify / FSEvents / ReadDirectoryChangesW, polling elsewhere),
grouped: a burst of file operations (a copy of 200 files, an editor's save-rename dance) ends in
one sync once nothing changed for `debounce_ms`. The library's own data folder is never watched
(its writes would wake the watcher). Each sync compares the whole folder by content hash, so an
event missed or merged by the OS costs nothing: the next sync sees the files as they are.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING

from .library import Progress
from .sync import FolderSync

if TYPE_CHECKING:
    from .library import Library

log = logging.getLogger(__name__)

LOG_LINES = 40  # lines of what the watcher did, kept for the UI


class FolderWatcher:
    """One watched folder: a thread that syncs it now and after every burst of changes."""

    def __init__(self, library: "Library", folder: str | Path, keep_deleted: bool = False,
                 debounce_ms: int = 1000) -> None:
        self.folder = Path(folder).expanduser().resolve()
        self.library = library
        self.syncer = FolderSync(library, [self.folder], keep_deleted=keep_deleted)
        self.debounce_ms = debounce_ms
        self.state = "starting"  # starting | syncing | watching | stopped | failed
        self.syncs = 0  # finished syncs
        self.changes = 0  # syncs that changed the library (the UI refreshes its listing then)
        self._log: deque[str] = deque(maxlen=LOG_LINES)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "FolderWatcher":
        self._thread = threading.Thread(target=self._run, name=f"freeret-watch {self.folder.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.state = "stopped"

    def lines(self) -> list[str]:
        return list(self._log)

    def say(self, line: str) -> None:
        self._log.append(f"{time.strftime('%H:%M:%S')} {line}")
        log.info("watch %s: %s", self.folder, line)

    def _run(self) -> None:
        import watchfiles

        if not self.folder.is_dir():
            self.state = "failed"
            self.say("folder not found: not watching it")
            return
        try:
            ignore = watchfiles.DefaultFilter(ignore_paths=[str(self.library.data_dir.resolve())])
            first = True  # the first sync runs once the OS watch is set up, so no change falls between
            for changes in watchfiles.watch(self.folder, watch_filter=ignore, debounce=self.debounce_ms,
                                            stop_event=self._stop, raise_interrupt=False, rust_timeout=500,
                                            yield_on_timeout=True, ignore_permission_denied=True):
                if first or changes:
                    self.sync_now("first sync" if first else f"{len(changes)} change(s) seen")
                    first = False
        except Exception as error:  # noqa: BLE001 - the app goes on; the panel says why watching ended
            log.exception("watching %s failed", self.folder)
            self.state = "failed"
            self.say(f"stopped watching: {type(error).__name__}: {error}")
            return
        self.state = "stopped"

    def sync_now(self, why: str) -> None:
        """Sync the folder once (the watcher thread does it after each burst of changes)."""
        self.state = "syncing"
        self.say(f"{why}: syncing ...")

        def progress(event: Progress) -> None:
            if event.stage in ("added", "skipped"):
                self.say(f"{event.stage} {Path(event.path).name}" + (f": {event.message}" if event.message else ""))

        try:
            report = self.syncer.run(progress=progress)
        except Exception as error:  # noqa: BLE001 - e.g. a re-index is pending; try again at the next change
            self.say(f"sync failed: {error}")
        else:
            for line in report.lines():
                if not line.startswith(("added ", "skipped ")):  # those were said as they happened
                    self.say(line)
            self.say(f"synced: {report.counts()} in {report.seconds:.1f} s")
            self.syncs += 1
            self.changes += report.changed
        self.state = "watching" if not self._stop.is_set() else "stopped"
