"""One writer at a time per data folder, across processes, and who that writer is.

    lock = WriterLock(data_dir)
    lock.observe()            # before reading the index: remember which write it has seen last
    with lock as stale:       # blocks while another process writes
        ...                   # stale: another process wrote since observe() / our last hold

The lock is `fcntl.flock` on `data_dir/writer.lock` (`msvcrt.locking` on Windows); the system drops
it when its holder dies, so a crash never leaves it held. `data_dir/writer.json` records the holder
(`Writer`) and a fresh token at every acquire and every release: a process that finds a token it did
not write knows its in-memory view of the index (and Chroma's cached HNSW segment) may be stale.

`Writer` identifies a process (host, pid, process start time). It is stored on pending items, so
that recovery can tell items a live process is writing from items a dead one left behind.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType

log = logging.getLogger(__name__)

LOCK_FILE, STATE_FILE = "writer.lock", "writer.json"
_START_TOLERANCE_S = 2.0  # process start times read twice may differ by clock-tick rounding


def _boot_time() -> float | None:
    try:
        with open("/proc/stat") as handle:
            return next(float(line.split()[1]) for line in handle if line.startswith("btime "))
    except (OSError, StopIteration, ValueError):
        return None


def process_start(pid: int) -> float | None:
    """When process `pid` started (epoch seconds), where the OS tells (Linux /proc); else None."""
    boot = _boot_time()
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return None if boot is None else boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this host (it may be another one that reused the id)."""
    if pid <= 0:
        return False
    if os.name == "nt":
        import ctypes

        kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        code = ctypes.c_ulong()
        kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        kernel32.CloseHandle(handle)
        return code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by someone else
    return True


@dataclass(frozen=True)
class Writer:
    """A process that writes to an index: where it runs, its pid, when it started."""

    host: str
    pid: int
    started: float

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> Writer | None:
        """The writer recorded in metadata, or None when absent or unreadable."""
        try:
            data = json.loads(text or "")
            return cls(str(data["host"]), int(data["pid"]), float(data["started"]))
        except (ValueError, KeyError, TypeError):
            return None

    def certainly_dead(self) -> bool:
        """True only when this host can prove it: the writer ran here and its process is gone
        (no such pid, or the pid now belongs to a process that started later)."""
        if self.host != socket.gethostname():
            return False
        if not pid_alive(self.pid):
            return True
        start = process_start(self.pid)
        return start is not None and abs(start - self.started) > _START_TOLERANCE_S


_IMPORTED_AT = time.time()


def this_writer() -> Writer:
    """This process (its pid is read each time, so a forked child is a writer of its own)."""
    pid = os.getpid()
    return Writer(socket.gethostname(), pid, process_start(pid) or _IMPORTED_AT)


def _lock(handle, blocking: bool) -> bool:
    """Take the OS lock on an open file; False if `blocking` is off and someone else holds it."""
    if os.name == "nt":
        import msvcrt

        while True:
            try:
                handle.seek(0)
                msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
                return True
            except OSError:
                if not blocking:
                    return False
                time.sleep(0.05)
    import fcntl

    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        return True
    except BlockingIOError:
        return False


def _unlock(handle) -> None:
    if os.name == "nt":
        import msvcrt

        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
        return
    import fcntl

    fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


class WriterLock:
    """The inter-process writer lock of one data folder; reentrant within one instance (and thread).

    Two instances on the same folder exclude each other even inside one process (flock locks
    belong to an open file, not to a process), so two Library objects behave like two processes.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._handle = None
        self._token: str | None = None  # the last token this instance wrote or observed

    def _read_state(self) -> dict:
        try:
            return json.loads((self.folder / STATE_FILE).read_text())
        except (OSError, ValueError):
            return {}

    def _write_state(self, **fields) -> str:
        token = uuid.uuid4().hex
        target = self.folder / STATE_FILE
        temporary = target.with_name(f"{STATE_FILE}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps({"token": token, **fields}))
        os.replace(temporary, target)
        return token

    def holder(self) -> Writer | None:
        """Who holds the lock now or held it last (from writer.json; informational)."""
        state = self._read_state()
        return Writer.from_json(json.dumps(state["writer"])) if state.get("writer") else None

    def observe(self) -> None:
        """Remember the writes seen so far: call before reading the index."""
        self._token = self._read_state().get("token")

    def changed(self) -> bool:
        """Whether another writer took the lock since `observe` or since this instance released it."""
        return self._read_state().get("token") != self._token

    def __enter__(self) -> bool:
        """Acquire (blocking). True when another writer held the lock since `observe` or since
        this instance last released it, i.e. what this process read of the index may be stale."""
        self._thread_lock.acquire()
        self._depth += 1
        if self._depth > 1:
            return False
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._handle = open(self.folder / LOCK_FILE, "a+b")
            if not _lock(self._handle, blocking=False):
                holder = self.holder()
                log.warning("waiting for another writer of %s (%s)", self.folder,
                            f"pid {holder.pid} on {holder.host}" if holder else "unknown process")
                _lock(self._handle, blocking=True)
            stale = self.changed()
            self._token = self._write_state(writer=json.loads(this_writer().to_json()), writing=True,
                                            since=time.time())
            return stale
        except BaseException:
            self._release()
            raise

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self._depth == 1 and self._handle is not None:
            try:
                self._token = self._write_state(writer=json.loads(this_writer().to_json()), writing=False,
                                                since=time.time())
            finally:
                self._release()
        else:
            self._depth -= 1
            self._thread_lock.release()

    def _release(self) -> None:
        try:
            if self._handle is not None:
                _unlock(self._handle)
                self._handle.close()
        finally:
            self._handle = None
            self._depth -= 1
            self._thread_lock.release()
