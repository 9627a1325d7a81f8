"""Watched folders (watch.py): a real watcher thread over a temp folder, real file operations."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from freeret_rag.library import Library
from freeret_rag.watch import FolderWatcher
from tests.fake_engine import FakeEngine


def wait_for(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


def listed(library: Library) -> dict[str, str]:
    return {Path(doc.path).name: doc.doc_id for doc in library.documents()}


def sha16(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@pytest.fixture()
def watched(tmp_path):
    folder = tmp_path / "inbox"
    folder.mkdir()
    (folder / "already.txt").write_text("there before the watcher started\n")
    library = Library(FakeEngine(), tmp_path / "data", self_check=False)
    watcher = FolderWatcher(library, folder, debounce_ms=200).start()
    yield folder, library, watcher
    watcher.stop()
    assert watcher.state == "stopped"


def test_the_watcher_follows_creates_edits_renames_and_deletes(watched):
    folder, library, watcher = watched
    wait_for(lambda: watcher.syncs >= 1)
    assert listed(library) == {"already.txt": sha16("there before the watcher started\n")}

    (folder / "new.md").write_text("a new note about puffins\n")
    wait_for(lambda: "new.md" in listed(library))
    (folder / "new.md").write_text("an edited note about puffins\n")
    wait_for(lambda: listed(library).get("new.md") == sha16("an edited note about puffins\n"))
    (folder / "new.md").rename(folder / "puffins.md")
    wait_for(lambda: "puffins.md" in listed(library))
    assert listed(library) == {"already.txt": sha16("there before the watcher started\n"),
                               "puffins.md": sha16("an edited note about puffins\n")}
    (folder / "already.txt").unlink()
    wait_for(lambda: "already.txt" not in listed(library))
    wait_for(lambda: watcher.state == "watching")
    said = "\n".join(watcher.lines())
    assert "added new.md" in said and "renamed new.md -> puffins.md" in said
    assert "removed already.txt (deleted on disk)" in said and "replaced older version of new.md" in said


def test_a_burst_of_200_files_is_indexed(watched):
    folder, library, watcher = watched
    wait_for(lambda: watcher.syncs >= 1)
    for number in range(200):
        (folder / f"burst{number:03d}.txt").write_text(f"burst file {number}\n")
    wait_for(lambda: len(library.documents()) == 201, timeout=120)
    assert set(listed(library)) == {"already.txt", *(f"burst{n:03d}.txt" for n in range(200))}
    wait_for(lambda: watcher.state == "watching")
    assert watcher.syncs <= 6  # a burst is synced in a few runs, not once per file


def test_a_missing_folder_is_reported(tmp_path):
    library = Library(FakeEngine(), tmp_path / "data", self_check=False)
    watcher = FolderWatcher(library, tmp_path / "nowhere").start()
    wait_for(lambda: watcher.state == "failed")
    assert any("folder not found" in line for line in watcher.lines())
