"""The app when things are not as they should be (issue 11): documents another model indexed wait
(and say so) instead of an "empty" library, a re-index keeps what the model cannot see, and a
document deleted by another process is never cited."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from test_ui_app import ingest, run_chat

from freeret_rag.chat import NOTHING_IN_LIBRARY
from freeret_rag.library import WAITING_FOR_IMAGES, WAITING_FOR_REINDEX

REPO = Path(__file__).resolve().parents[2]


def test_a_mismatched_model_says_what_waits_and_a_reindex_keeps_what_it_cannot_see(
        make_app, media, text_only_engine, tmp_path):
    data_dir = tmp_path / "shared-data"
    ingest(make_app(data_dir=data_dir), media["pdf"], media["image"])  # the vision model indexes both
    app = make_app(engine=text_only_engine, data_dir=data_dir)
    assert app.documents() == []

    _, chatbot, _ = run_chat(app, "Which beetles eat aphids?")
    said = chatbot[-1]["content"]
    assert NOTHING_IN_LIBRARY.split(",")[0] not in said  # not "Your library is empty"
    assert "2 document(s)" in said and "Re-index with this model" in said
    assert "2 more documents" in app.library_summary() and WAITING_FOR_REINDEX in app.library_summary()
    assert sorted(row[0] for row in app.document_rows()) == [f"LadyBird.jpg ({WAITING_FOR_REINDEX})",
                                                             f"garden-guide.pdf ({WAITING_FOR_REINDEX})"]
    notice = app.reindex_notice()  # told before the re-index starts
    assert "1 document(s) cannot be read" in notice and "nothing is deleted" in notice

    final = list(app.reindex())[-1]
    assert sorted((s.name, s.state) for s in final.files) == [("LadyBird.jpg", "skipped"),
                                                             ("garden-guide.pdf", "done")]
    bird = next(doc for doc in app.waiting() if doc.source == "LadyBird.jpg")
    assert sorted(row[0] for row in app.document_rows()) == [f"LadyBird.jpg ({WAITING_FOR_IMAGES})",
                                                             "garden-guide.pdf"]
    assert (app.library.assets / bird.doc_id).is_dir()
    _, chatbot, _ = run_chat(app, "Which beetles eat aphids?")
    assert "garden-guide.pdf" in chatbot[-1]["content"]
    assert app.delete(bird.doc_id) == "Deleted LadyBird.jpg."
    assert app.waiting() == [] and not (app.library.assets / bird.doc_id).exists()


def test_a_document_deleted_by_the_cli_is_never_cited_by_the_running_app(make_app, media, tmp_path):
    app = make_app()
    ingest(app, media["pdf"], media["image"])
    _, chatbot, _ = run_chat(app, "Which beetles eat aphids?", top_k=5, n_sources=2)
    assert "garden-guide.pdf" in chatbot[-1]["content"]  # cited while it exists

    deleted = subprocess.run([sys.executable, "-m", "freeret_rag", "--data-dir", str(app.config.data_dir),
                              "delete", "garden-guide.pdf"], cwd=REPO, capture_output=True, text=True, timeout=300,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
    assert deleted.returncode == 0, deleted.stderr[-2000:]
    _, chatbot, _ = run_chat(app, "Which beetles eat aphids?", top_k=5, n_sources=2)  # asked first
    answer = chatbot[-1]["content"]
    assert "garden-guide.pdf" not in answer and "LadyBird.jpg" in answer
    assert [row[0] for row in app.document_rows()] == ["LadyBird.jpg"]
