"""Long indexing jobs: caps per file, a cancel between batches, resuming a file where it stopped,
and questions served between the batches of an indexing job (the engine's ModelLock)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
from fake_engine import FakeEngine, vector

from freeret_rag.engine import ModelLock
from freeret_rag.library import Library, Skipped
from freeret_rag.media import MediaSettings, load_items

PARAGRAPH = "Paragraph {n} of the long file is about the {topic}, and it says a few more words about it."
TOPICS = ["garden pond pump", "yellow flowers", "ladybird beetles", "mime database"]


def long_text(path: Path, paragraphs: int = 60) -> Path:
    path.write_text("\n\n".join(PARAGRAPH.format(n=n, topic=TOPICS[n % 4]) * 6 for n in range(paragraphs)))
    return path


def chunks_of(path: Path, tmp_path: Path) -> list[str]:
    """The file's chunks as the text loader alone gives them (no cap): the count to expect."""
    return [item.text for item in load_items(path, "x", tmp_path / "scratch", settings=MediaSettings(max_chunks=0))]


def rows(library: Library) -> list[dict]:
    return library.store.collection.get(include=["metadatas"])["metadatas"]


def cancel_at(cancel: threading.Event, done: int, events: list):
    def progress(event) -> None:
        events.append(event)
        if event.stage == "item" and event.done == done:
            cancel.set()
    return progress


def test_a_cancel_stops_at_the_next_batch_shows_nothing_and_adding_again_resumes(tmp_path):
    data, long, later = tmp_path / "data", long_text(tmp_path / "long.txt"), long_text(tmp_path / "later.txt", 3)
    total = len(chunks_of(long, tmp_path))
    assert total > 20
    engine, cancel, events = FakeEngine(), threading.Event(), []
    library = Library(engine, data, batch_size=4)
    report = library.add([long, later], progress=cancel_at(cancel, 10, events), cancel=cancel)

    # Set while the 3rd batch was being stored: that batch is finished, no 4th one is embedded.
    assert engine.embedded == 12 and engine.calls == 3
    assert report.added == [] and report.skipped == []
    assert [Path(s.path).name for s in report.cancelled] == ["long.txt", "later.txt"]
    assert "cancelled after 12 item(s)" in report.cancelled[0].reason
    assert report.cancelled[1] == Skipped(str(later), "not started: indexing was cancelled")
    assert [e.stage for e in events if e.stage not in ("item",)] == ["file", "cancelled"]
    assert library.documents() == [] and len(library) == 0
    assert library.search("garden pond pump", k=5, rerank=False) == []
    assert sum(not meta["complete"] for meta in rows(library)) == 12  # kept, invisible

    again = FakeEngine()
    report = Library(again, data, batch_size=4).add([long])
    [doc] = report.added
    assert doc.items == total and again.embedded == total - 12  # the 12 finished items are not embedded again
    stored = library.store.collection.get(include=["metadatas", "documents", "embeddings"])
    assert len(stored["ids"]) == total and all(meta["complete"] for meta in stored["metadatas"])
    expected = np.stack([vector(f"{m['source']}\n{m.get('page')}\n{text}")
                         for m, text in zip(stored["metadatas"], stored["documents"])])
    assert np.allclose(np.asarray(stored["embeddings"]), expected, atol=1e-6)  # every vector is its item's
    assert sorted(stored["documents"]) == sorted(chunks_of(long, tmp_path))


def test_a_resume_under_a_lower_cap_drops_the_kept_items_past_it(tmp_path):
    data, long = tmp_path / "data", long_text(tmp_path / "long.txt")
    cancel = threading.Event()
    Library(FakeEngine(), data, batch_size=4).add([long], progress=cancel_at(cancel, 10, []), cancel=cancel)
    engine = FakeEngine()
    library = Library(engine, data, batch_size=4, media_settings=MediaSettings(max_chunks=8))
    report = library.add([long])
    assert [doc.items for doc in report.added] == [8] and engine.embedded == 0
    assert len(rows(library)) == 8 and all(meta["complete"] for meta in rows(library))
    assert sorted(meta["chunk"] for meta in rows(library)) == list(range(8))


def test_a_file_over_a_cap_is_indexed_in_part_and_the_report_says_so(tmp_path):
    long = long_text(tmp_path / "long.txt")
    total = len(chunks_of(long, tmp_path))
    events: list = []
    library = Library(FakeEngine(), tmp_path / "data", batch_size=4, media_settings=MediaSettings(max_chunks=5))
    report = library.add([long], progress=events.append)
    note = f"indexed the first 5 of {total:,} chunks (cap --max-chunks)"
    assert [doc.items for doc in report.added] == [5]
    assert report.notes == [Skipped(str(long), note)]
    assert f"note long.txt: {note}" in report.summary()
    assert [e.message for e in events if e.stage == "added"] == [note]
    assert [e.total for e in events if e.stage == "item"][-1] == 5


def test_a_search_is_not_held_up_by_a_file_this_process_is_indexing(tmp_path):
    data, barrier = tmp_path / "data", tmp_path / "barrier"
    barrier.mkdir()
    note = tmp_path / "note.txt"
    note.write_text("the garden pond pump sits in the shed\n")
    library = Library(FakeEngine(barrier, block_at=3), data, batch_size=4)
    library.add([note])  # embed call 1
    writer = threading.Thread(target=library.add, args=([long_text(tmp_path / "long.txt")],))
    writer.start()  # call 2 stores a batch, call 3 waits on the barrier while holding the write turn
    try:
        deadline = time.monotonic() + 60
        while not (barrier / "waiting").exists():
            assert time.monotonic() < deadline and writer.is_alive()
            time.sleep(0.02)
        found: list = []
        searcher = threading.Thread(target=lambda: found.append(
            [hit.item.source for hit in library.search("garden pond pump", k=3, rerank=False)]))
        searcher.start()
        searcher.join(timeout=30)
        assert not searcher.is_alive(), "the search waited for the file being indexed"
        assert found == [["note.txt"]]
        assert [doc.source for doc in library.documents()] == ["note.txt"]
    finally:
        (barrier / "go").write_text("")
        writer.join(timeout=60)


# -- the model lock: questions between batches -----------------------------------------------------
def _wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_a_question_waiting_for_the_model_goes_before_the_next_batch():
    lock, order = ModelLock(grace_s=0.0), []

    def batch() -> None:
        with lock.background():
            order.append("batch")

    def question() -> None:
        with lock:
            order.append("question")

    lock.acquire()  # a batch (or anything) holds the model
    threads = [threading.Thread(target=batch), threading.Thread(target=question)]
    threads[0].start()  # the indexing job asks for its next batch first ...
    time.sleep(0.1)
    threads[1].start()  # ... and a question after it
    _wait_until(lambda: lock._waiting == 1)
    lock.release()
    for thread in threads:
        thread.join(timeout=10)
    assert order == ["question", "batch"] and not lock.locked()


def test_the_steps_of_one_question_run_back_to_back_and_the_batch_waits_for_the_grace():
    lock, order, started = ModelLock(grace_s=30.0, patience_s=60.0), [], []
    with lock:
        order.append("rewrite")

    def batch() -> None:
        with lock.background():
            started.append(time.monotonic())
            order.append("batch")

    worker = threading.Thread(target=batch)
    worker.start()
    time.sleep(0.2)
    with lock:  # the question's next step, well within the grace: it goes first
        order.append("rerank")
    assert order == ["rewrite", "rerank"] and worker.is_alive()
    lock.grace_s = 0.3
    with lock:
        order.append("answer")
    released = time.monotonic()
    worker.join(timeout=10)
    assert order == ["rewrite", "rerank", "answer", "batch"]
    assert started[0] - released >= 0.3 - 0.02  # not before the grace after the question's last step


def test_questions_in_a_row_cannot_starve_an_indexing_job():
    lock, stop, order = ModelLock(grace_s=60.0, patience_s=0.3), threading.Event(), []

    def questions() -> None:  # each within the grace of the one before: without patience, no batch ever runs
        while not stop.is_set():
            with lock:
                order.append("question")
                time.sleep(0.01)

    def batch() -> None:
        with lock.background():
            order.append("batch")

    asker, indexer = threading.Thread(target=questions, daemon=True), threading.Thread(target=batch, daemon=True)
    asker.start()
    _wait_until(lambda: "question" in order)
    asked = len(order)
    started = time.monotonic()
    indexer.start()
    try:
        indexer.join(timeout=10)
        waited = time.monotonic() - started
        assert not indexer.is_alive(), "the batch never got the model"
        _wait_until(lambda: order[-1] == "question")  # and the questions go on after it
    finally:
        stop.set()
        asker.join(timeout=10)
        indexer.join(timeout=10)
    assert order.count("batch") == 1 and len(order) > asked + 2
    assert 0.3 - 0.02 <= waited < 5.0  # its patience, then at most a question's hold


def test_the_engine_embeds_items_as_background_work(tiny_engine, monkeypatch):
    """Item embedding (indexing) waits while a question is being served; the question's own calls do not."""
    import freeret_rag.engine as engine_module
    from freeret_rag.items import Item

    engine = tiny_engine()
    order: list[str] = []
    real = engine_module.embed_prompts

    def recording(lm, prompts, *args, **kwargs):
        order.append("query" if "Query:" in prompts[0].text else "items")
        return real(lm, prompts, *args, **kwargs)

    monkeypatch.setattr(engine_module, "embed_prompts", recording)
    lock, grace, patience = engine._lock, engine._lock.grace_s, engine._lock.patience_s
    lock.patience_s = 120.0
    items = threading.Thread(target=engine.embed, args=([Item(kind="text", text="a pond pump", item_id="i:0")],),
                             daemon=True)
    lock.grace_s = 60.0
    try:
        with lock:  # a question's step has just ended
            pass
        items.start()
        items.join(timeout=1.0)
        assert items.is_alive() and order == []  # the batch waits: the question may have more steps
        engine.embed_query("pond")  # its next step goes at once
        assert order == ["query"]
    finally:
        lock.grace_s, lock.patience_s = grace, patience
        with lock:  # wakes the waiting batch, which now waits the usual grace
            pass
    items.join(timeout=120)
    assert order == ["query", "items"]
