"""Folder sync: make the library follow folders on disk.

    syncer = FolderSync(library, ["~/Papers"])
    report = syncer.run()          # again after every change (watch.py does it on its own)

A run walks the folders (as `add` does: recursively, hidden files left out) and compares each
supported file's content hash with the library, which identifies documents by content:

- a file whose content is not indexed is added (`Library.add`; a changed file replaces the older
  version indexed at its path, after the new one is committed);
- a file whose content is indexed under a path that no longer exists was renamed or moved: the
  document is pointed at the new path, nothing is re-embedded;
- a document whose file was under a synced folder and no longer exists is deleted from the
  library, unless `keep_deleted`. Nothing is deleted for a folder that is missing altogether (an
  unmounted drive is not an empty folder), nor for a file that still exists but failed to index
  (its older version stays).

Incremental: hashes are remembered per path with the file's size and modification time, so a
run over unchanged folders only reads directory entries; a file is hashed again when its size or
mtime changed. Runs of one FolderSync are serialised.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from .library import AddReport, ProgressCallback, Skipped, file_sha256, iter_files
from .media import kind_for_path
from .store import DocumentInfo

if TYPE_CHECKING:
    from .library import Library


@dataclass
class SyncReport:
    """What one sync run did. `added` / `replaced` / `skipped` / `notes` are those of `Library.add`."""

    folders: list[str] = field(default_factory=list)
    add: AddReport = field(default_factory=AddReport)
    moved: list[tuple[str, DocumentInfo]] = field(default_factory=list)  # (old path, document now)
    removed: list[DocumentInfo] = field(default_factory=list)
    kept: list[DocumentInfo] = field(default_factory=list)  # deleted on disk, kept by keep_deleted
    unchanged: int = 0
    ignored: int = 0  # files of unsupported types
    missing: list[str] = field(default_factory=list)  # synced folders that do not exist
    seconds: float = 0.0

    @property
    def changed(self) -> bool:
        """Whether the library changed (something added, replaced, moved or removed)."""
        return bool(self.add.added or self.add.replaced or self.moved or self.removed)

    def counts(self) -> str:
        """One line: "3 indexed, 1 older version replaced, 1 renamed, 3 removed, 40 unchanged"."""
        parts = [(len(self.add.added), "indexed"), (len(self.add.replaced), "older version(s) replaced"),
                 (len(self.moved), "renamed"),
                 (len(self.removed), "removed"), (len(self.kept), "deleted on disk, kept"),
                 (len(self.add.skipped), "skipped"), (self.unchanged + len(self.add.unchanged), "unchanged"),
                 (self.ignored, "not supported")]
        return ", ".join(f"{n} {what}" for n, what in parts if n) or "nothing to do"

    def lines(self) -> list[str]:
        """What changed, one line per file."""
        lines = [f"added {doc.source} ({doc.items} items)" for doc in self.add.added]
        lines += [f"replaced older version of {doc.source}" for doc in self.add.replaced]
        lines += [f"renamed {Path(old).name} -> {doc.source}" for old, doc in self.moved]
        lines += [f"removed {doc.source} (deleted on disk)" for doc in self.removed]
        lines += [f"kept {doc.source} (deleted on disk, --keep-deleted)" for doc in self.kept]
        lines += [f"skipped {Path(s.path).name}: {s.reason}" for s in self.add.skipped]
        lines += [f"note {Path(s.path).name}: {s.reason}" for s in self.add.notes]
        lines += [f"no such folder (nothing removed for it): {folder}" for folder in self.missing]
        return lines

    def summary(self) -> str:
        return "\n".join([f"synced {', '.join(self.folders)}: {self.counts()} in {self.seconds:.1f} s",
                          *(f"  {line}" for line in self.lines())])


class FolderSync:
    """Keeps the library in step with `folders` (see the module docstring)."""

    def __init__(self, library: "Library", folders: Iterable[str | Path], keep_deleted: bool = False) -> None:
        self.library = library
        self.folders = [Path(folder).expanduser() for folder in folders]
        self.keep_deleted = keep_deleted
        self._hashes: dict[str, tuple[int, int, str]] = {}  # resolved path -> (size, mtime_ns, sha256)
        self._lock = threading.Lock()

    def content_hash(self, path: Path) -> str:
        """The file's sha256, read again only when its size or modification time changed."""
        stat = path.stat()
        key = str(path.resolve())
        known = self._hashes.get(key)
        if known is not None and known[:2] == (stat.st_size, stat.st_mtime_ns):
            return known[2]
        digest = file_sha256(path)
        self._hashes[key] = (stat.st_size, stat.st_mtime_ns, digest)
        return digest

    def run(self, progress: ProgressCallback | None = None) -> SyncReport:
        with self._lock:
            return self._run(progress)

    def _run(self, progress: ProgressCallback | None) -> SyncReport:
        started = time.perf_counter()
        library = self.library
        report = SyncReport(folders=[str(folder) for folder in self.folders])
        roots = [folder.resolve() for folder in self.folders if folder.is_dir()]
        report.missing = [str(folder) for folder in self.folders if not folder.is_dir()]
        own = [library.assets, library.data_dir / "chroma"]
        present: set[str] = set()  # every file found, readable or not: none of them was deleted
        found: list[tuple[Path, str, str]] = []  # (path, resolved, doc_id) of supported, readable files
        for entry in iter_files(roots, own):
            if isinstance(entry, Skipped):
                continue
            resolved = str(entry.resolve())
            present.add(resolved)
            if kind_for_path(entry) is None:
                report.ignored += 1
                continue
            try:
                found.append((entry, resolved, self.content_hash(entry)[:16]))
            except OSError as error:  # unreadable now: leave it (and its older version) alone
                report.add.skipped.append(Skipped(str(entry), f"cannot read it: {error.strerror or error}"))

        for key in [key for key in self._hashes if key not in present]:
            del self._hashes[key]  # gone or out of the folders: forget it
        by_id = {doc.doc_id: doc for doc in library.documents()}
        to_add: list[Path] = []
        for path, resolved, doc_id in found:
            doc = by_id.get(doc_id)
            if doc is None:
                to_add.append(path)
            elif doc.path == resolved or doc.path in present or os.path.exists(doc.path):
                report.unchanged += 1  # indexed here, or a copy of a file indexed elsewhere
            else:
                moved = library.move(doc_id, path)
                if moved is not None:
                    report.moved.append((doc.path, moved))
                    by_id[doc_id] = moved
        current = {resolved: doc_id for _, resolved, doc_id in found}
        for doc in list(by_id.values()):
            # An older version at a path whose current content is indexed elsewhere (a copy or a
            # rename over it); `add` removes older versions of the files it indexes by itself.
            if current.get(doc.path) not in (None, doc.doc_id) and current[doc.path] in by_id:
                if library.delete(doc.doc_id) is not None:
                    report.add.replaced.append(doc)
        if to_add:
            added = library.add(to_add, progress=progress)
            report.add.added, report.add.unchanged = added.added, added.unchanged
            report.add.replaced += added.replaced
            report.add.skipped += added.skipped
            report.add.notes = added.notes
        for doc in library.documents():
            if doc.path in present or not any(_inside(doc.path, root) for root in roots) or os.path.exists(doc.path):
                continue
            if self.keep_deleted:
                report.kept.append(doc)
            elif library.delete(doc.doc_id) is not None:
                report.removed.append(doc)
        report.seconds = time.perf_counter() - started
        return report


def _inside(path: str, root: Path) -> bool:
    return bool(path) and Path(path).is_relative_to(root)
