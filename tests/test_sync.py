"""Folder sync (sync.py): real file operations in a temp folder, a model-free engine.

Expected values come from the file system and hashlib, never from the code under test.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from freeret_rag import sync as sync_module
from freeret_rag.library import Library
from freeret_rag.sync import FolderSync
from tests.fake_engine import FakeEngine


def doc_id_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def indexed(library: Library) -> dict[str, str]:
    """resolved path -> doc_id, as the library lists it."""
    return {doc.path: doc.doc_id for doc in library.documents()}


def expected(*paths: Path) -> dict[str, str]:
    return {str(path.resolve()): doc_id_of(path) for path in paths}


@pytest.fixture()
def setup(tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    engine = FakeEngine()
    library = Library(engine, tmp_path / "data", self_check=False)
    return folder, engine, library


def keyword_hits(library: Library, text: str) -> set[str]:
    """Sources of the items the keyword channel finds for `text` (no model involved)."""
    return {hit.item.source for hit in library.store.search(None, text, 10, weights={"*": (0.0, 1.0, 0.0)})}


def test_create_edit_rename_delete(setup):
    folder, engine, library = setup
    a, b = folder / "alpha.txt", folder / "sub" / "beta.md"
    b.parent.mkdir()
    a.write_text("the aardvark eats termites at night\n")
    b.write_text("a bright blue butterfly\n")
    (folder / "picture.xyz").write_bytes(b"\x00\x01 not a supported file")
    syncer = FolderSync(library, [folder])

    report = syncer.run()
    assert indexed(library) == expected(a, b)
    assert report.ignored == 1 and len(report.add.added) == 2

    calls = engine.calls
    report = syncer.run()  # nothing changed: nothing embedded, nothing removed
    assert engine.calls == calls and not report.changed and report.unchanged == 2
    assert indexed(library) == expected(a, b)

    old_a = doc_id_of(a)
    a.write_text("the aardvark now eats ants in the morning\n")
    report = syncer.run()
    assert indexed(library) == expected(a, b)
    assert old_a not in {doc.doc_id for doc in library.documents()}
    assert [doc.doc_id for doc in report.add.replaced] == [old_a]
    assert keyword_hits(library, "morning") == {"alpha.txt"} and keyword_hits(library, "termites") == set()

    calls = engine.calls
    renamed = folder / "sub" / "gamma.txt"
    a.rename(renamed)
    report = syncer.run()
    assert engine.calls == calls  # a rename re-embeds nothing
    assert indexed(library) == expected(renamed, b)
    assert [(old, doc.source) for old, doc in report.moved] == [(str(a.resolve()), "gamma.txt")]
    assert keyword_hits(library, "gamma") == {"gamma.txt"}  # the file name is searchable under its new name
    assert {item.source for item in library.items(doc_id_of(renamed))} == {"gamma.txt"}

    b.unlink()
    report = syncer.run()
    assert indexed(library) == expected(renamed)
    assert [doc.source for doc in report.removed] == ["beta.md"]
    assert keyword_hits(library, "butterfly") == set()


def test_keep_deleted_keeps_documents_of_deleted_files(setup):
    folder, _, library = setup
    a = folder / "kept.txt"
    a.write_text("a keepsake of the harbour\n")
    FolderSync(library, [folder]).run()
    a.unlink()
    report = FolderSync(library, [folder], keep_deleted=True).run()
    assert [doc.source for doc in report.kept] == ["kept.txt"] and not report.removed
    assert set(indexed(library)) == {str(a.resolve())}
    report = FolderSync(library, [folder]).run()
    assert [doc.source for doc in report.removed] == ["kept.txt"] and indexed(library) == {}


def test_a_missing_folder_removes_nothing(setup, tmp_path):
    folder, _, library = setup
    (folder / "one.txt").write_text("one lighthouse\n")
    FolderSync(library, [folder]).run()
    before = indexed(library)
    shutil.rmtree(folder)  # e.g. an unmounted drive: not the same as deleting every file
    report = FolderSync(library, [folder]).run()
    assert report.missing == [str(folder)] and not report.removed and indexed(library) == before


def test_a_changed_file_that_fails_keeps_its_older_version(setup):
    folder, _, library = setup
    note = folder / "note.txt"
    note.write_text("the older version mentions a walrus\n")
    syncer = FolderSync(library, [folder])
    syncer.run()
    before = indexed(library)
    note.write_bytes(b"")  # now unreadable as a document (empty)
    report = syncer.run()
    assert [Path(s.path).name for s in report.add.skipped] == ["note.txt"]
    assert "empty" in report.add.skipped[0].reason
    assert indexed(library) == before and keyword_hits(library, "walrus") == {"note.txt"}


def test_copies_and_a_rename_over_an_indexed_file(setup):
    folder, engine, library = setup
    a, b = folder / "a.txt", folder / "b.txt"
    a.write_text("an original about otters\n")
    b.write_text("something else about badgers\n")
    syncer = FolderSync(library, [folder])
    syncer.run()
    copy = folder / "copy of a.txt"
    shutil.copyfile(a, copy)
    calls = engine.calls
    syncer.run()  # same content: indexed once, under the first path
    assert engine.calls == calls and indexed(library) == expected(a, b)
    os.replace(a, b)  # `mv a.txt b.txt`: b's old content is gone, a's now lives at b (and in the copy)
    syncer.run()
    assert engine.calls == calls
    docs = library.documents()
    assert [doc.doc_id for doc in docs] == [doc_id_of(b)]
    assert docs[0].path in {str(b.resolve()), str(copy.resolve())}
    assert keyword_hits(library, "badgers") == set()


def test_a_burst_of_200_files_then_no_work_then_half_deleted(setup, monkeypatch):
    folder, engine, library = setup
    files = []
    for number in range(200):
        path = folder / f"batch{number // 50}" / f"file{number:03d}.txt"
        path.parent.mkdir(exist_ok=True)
        path.write_text(f"note number {number} with the token zz{number:03d}\n")
        files.append(path)
    syncer = FolderSync(library, [folder])
    report = syncer.run()
    assert len(report.add.added) == 200 and indexed(library) == expected(*files)
    assert keyword_hits(library, "zz137") == {"file137.txt"}

    hashed = []
    real = sync_module.file_sha256
    monkeypatch.setattr(sync_module, "file_sha256", lambda path: hashed.append(path) or real(path))
    calls = engine.calls
    report = syncer.run()
    assert hashed == [] and engine.calls == calls and report.unchanged == 200  # incremental: stat only

    for path in files[::2]:
        path.unlink()
    files[1].write_text("note number 1 rewritten with zzedited\n")
    report = syncer.run()
    assert hashed == [files[1]]  # only the file whose size / mtime changed is read again
    assert len(report.removed) == 100 and len(report.add.added) == 1
    assert indexed(library) == expected(*files[1::2])


def test_files_indexed_from_elsewhere_stay_where_they_are(setup, tmp_path):
    folder, _, library = setup
    outside = tmp_path / "elsewhere.txt"
    outside.write_text("a report on lighthouses indexed with `add`\n")
    hidden = folder / ".hidden.txt"  # inside the folder, but a sync walk leaves hidden files out
    hidden.write_text("a hidden memo about kestrels\n")
    library.add([outside, hidden])
    copy = folder / "copy.txt"
    shutil.copyfile(outside, copy)
    syncer = FolderSync(library, [folder])
    report = syncer.run()
    assert not report.moved and indexed(library) == expected(outside, hidden)  # a copy, not a rename
    copy.unlink()
    report = syncer.run()
    assert not report.removed and indexed(library) == expected(outside, hidden)
