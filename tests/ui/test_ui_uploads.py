"""Uploads (freeret_rag.ui_uploads): refusing, keeping and indexing them with per-file progress.

The library here is a small recording double with `Library.add` / `Library.reindex`'s contract
(progress events, an AddReport or an exception); the real Library is in test_ui_app.py.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time

from freeret_rag.errors import IngestError
from freeret_rag.library import AddReport, Progress, Skipped
from freeret_rag.ui_uploads import ingest_files, keep_upload, outcome, reindex_library, upload_problem


def test_keep_upload_copies_once_per_content(tmp_path):
    upload = tmp_path / "gradio-tmp" / "notes.txt"
    upload.parent.mkdir()
    upload.write_bytes(b"pond pump in June")
    kept_dir = tmp_path / "uploads"
    kept = keep_upload(upload, kept_dir)
    assert kept == kept_dir / hashlib.sha256(b"pond pump in June").hexdigest()[:16] / "notes.txt"
    assert kept.read_bytes() == b"pond pump in June"
    kept.write_bytes(b"marker")  # a second upload of the same bytes reuses the kept copy
    assert keep_upload(upload, kept_dir) == kept and kept.read_bytes() == b"marker"


def test_upload_problems(tmp_path, samples_dir):
    image = samples_dir / "LadyBird.jpg"
    assert upload_problem(tmp_path / "gone.pdf", 10, True) == "file not found"
    big = tmp_path / "big.txt"
    big.write_bytes(b"x" * 20480)
    assert upload_problem(big, 10240, True) == "too large (20.0 KB; limit 10.0 KB)"
    junk = tmp_path / "notes.xyz"
    junk.write_bytes(b"\x00\x01 binary")
    assert upload_problem(junk, 1 << 20, True) == "unsupported file type (.xyz)"
    assert upload_problem(image, 1 << 30, False) == "this model reads text only"
    assert upload_problem(image, 1 << 30, True) is None


class FakeLibrary:
    """Records where `add` ran; reports `pages` item events, then returns or raises `outcome`."""

    def __init__(self, outcome, pages: int = 3, known: dict | None = None) -> None:
        self.outcome, self.pages, self.threads, self.added = outcome, pages, set(), []
        self.known = known or {}  # doc_id -> document already indexed

    def refresh(self):  # the real Library re-reads other processes' changes here
        self.refreshed = getattr(self, "refreshed", 0) + 1
        return False

    def document(self, doc_id):
        return self.known.get(doc_id)

    def add(self, paths, progress=None, cancel=None):
        self.threads.add(threading.get_ident())
        self.added += list(paths)
        for done in range(1, self.pages + 1):
            progress(Progress("item", str(paths[0]), 1, 1, done, self.pages))
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome


def snapshots(library, paths, upload_dir):
    return [[(s.name, s.state, s.done, s.total, s.items, s.message) for s in result.files]
            for result in ingest_files(library, [str(p) for p in paths], upload_dir, 1 << 20, True)]


def test_ingest_runs_the_add_in_a_worker_and_reports_its_outcome(tmp_path):
    note = tmp_path / "note.txt"
    note.write_text("water the roses")
    report = AddReport(added=[type("Doc", (), {"items": 3})()], notes=[Skipped(str(note), "1 page left out")])
    library = FakeLibrary(report)
    seen = snapshots(library, [note], tmp_path / "kept")
    assert seen[0] == [("note.txt", "waiting", 0, 0, 0, "")]
    assert seen[1] == [("note.txt", "indexing", 0, 0, 0, "")]
    assert seen[-1] == [("note.txt", "done", 3, 3, 3, "1 page left out")]
    assert threading.get_ident() not in library.threads
    assert [p.parent.parent for p in library.added] == [tmp_path / "kept"]  # the kept copy is indexed

    unchanged = AddReport(unchanged=[type("Doc", (), {"items": 2, "source": "old-note.txt"})()])
    assert snapshots(FakeLibrary(unchanged), [note], tmp_path / "kept")[-1] == [
        ("note.txt", "done", 3, 3, 2, "already in the library as old-note.txt")]
    skipped = AddReport(skipped=[Skipped(str(note), "empty file")])
    assert snapshots(FakeLibrary(skipped), [note], tmp_path / "kept")[-1][0][1::4] == ("failed", "empty file")


def test_unchanged_and_refused_files_are_answered_before_any_indexing(tmp_path):
    note, new, docx = tmp_path / "note.txt", tmp_path / "new.txt", tmp_path / "letter.docx"
    note.write_text("water the roses")
    new.write_text("feed the fish")
    docx.write_bytes(b"PK\x03\x04 a word file")
    known = {hashlib.sha256(b"water the roses").hexdigest()[:16]: type("Doc", (), {"items": 2, "source": "roses.txt"})()}
    library = FakeLibrary(AddReport(added=[type("Doc", (), {"items": 1})()]), pages=1, known=known)
    seen = snapshots(library, [note, docx, new], tmp_path / "kept")
    # the first snapshot, before any add: the known file is done and the .docx refused, with reasons
    assert seen[0] == [("note.txt", "done", 0, 0, 2, "already in the library as roses.txt"),
                       ("letter.docx", "skipped", 0, 0, 0, "unsupported file type (.docx)"),
                       ("new.txt", "waiting", 0, 0, 0, "")]
    assert [p.name for p in library.added] == ["new.txt"]  # only the new file reached Library.add
    assert seen[-1][2][1] == "done"


def test_ingest_errors_fail_that_file_and_the_next_goes_on(tmp_path, caplog):
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_text("a")
    second.write_text("b")
    library = FakeLibrary(IngestError(first, "encrypted"), pages=1)
    final = snapshots(library, [first, tmp_path / "missing.txt", second], tmp_path / "kept")[-1]
    assert [(name, state, message) for name, state, *_, message in final] == [
        ("a.txt", "failed", "encrypted"), ("missing.txt", "skipped", "file not found"), ("b.txt", "failed", "encrypted")]
    with caplog.at_level(logging.ERROR, logger="freeret_rag.ui_uploads"):
        crashed = snapshots(FakeLibrary(RuntimeError("disk full"), pages=0), [first], tmp_path / "kept")[-1]
    assert crashed[0][1::4] == ("failed", "disk full")
    assert "indexing" in caplog.text and "disk full" in caplog.text  # unexpected errors are logged


def test_reindex_progress_per_document(tmp_path):
    class Reindexing:
        def reindex(self, progress=None):
            progress(Progress("file", "/data/a.pdf", 1, 2))
            progress(Progress("item", "/data/a.pdf", 1, 2, 1, 2))
            progress(Progress("added", "/data/a.pdf", 1, 2, 2, 2, ""))
            progress(Progress("file", "/data/b.jpg", 2, 2))
            progress(Progress("skipped", "/data/b.jpg", 2, 2, message="text-only model"))
            return AddReport()

    results = list(reindex_library(Reindexing()))
    assert [(s.name, s.state, s.done, s.total, s.items, s.message) for s in results[-1].files] == [
        ("a.pdf", "done", 1, 2, 2, ""), ("b.jpg", "failed", 0, 0, 0, "text-only model")]

    class Broken:
        def reindex(self, progress=None):
            raise IngestError("/data", "the index is locked")

    assert [(s.name, s.state, s.message) for s in list(reindex_library(Broken()))[-1].files] == [
        ("re-index", "failed", "the index is locked")]


def test_closing_the_progress_stream_cancels_the_indexing_and_a_cancel_is_reported(tmp_path):
    note = tmp_path / "note.txt"
    note.write_text("water the roses")
    told: list[bool] = []

    class SlowLibrary:
        def add(self, paths, progress=None, cancel=None):
            progress(Progress("item", str(paths[0]), 1, 1, 1, 10))
            told.append(cancel.wait(timeout=20))  # indexing goes on until the reader has gone
            return AddReport(cancelled=[Skipped(str(paths[0]), "cancelled after 1 item(s)")])

    stream = ingest_files(SlowLibrary(), [str(note)], tmp_path / "kept", 1 << 20, True)
    states = [next(stream).files[0].state for _ in range(3)]  # waiting, indexing, 1 of 10
    assert states == ["waiting", "indexing", "indexing"]
    stream.close()  # what Gradio does to a cancelled event (Stop button, a client's cancel)
    deadline = time.monotonic() + 60
    while not told:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert told == [True]
    assert outcome(AddReport(cancelled=[Skipped(str(note), "cancelled after 1 item(s)")])) == (
        "cancelled", 0, "cancelled after 1 item(s)")
