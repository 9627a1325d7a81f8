"""The app when things are not as they should be (issue 11): documents another model indexed wait
(and say so) instead of an "empty" library, a re-index keeps what the model cannot see, and a
document deleted by another process is never cited."""

from __future__ import annotations

import os
import subprocess
import sys
import time
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
    from freeret_rag.ui import build_blocks

    api = next(f.fn for f in build_blocks(app).fns.values() if f.api_name == "documents")
    assert sorted((row["file"], row.get("waiting")) for row in api()) == [("LadyBird.jpg", WAITING_FOR_IMAGES),
                                                                         ("garden-guide.pdf", None)]
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


def test_the_app_starts_although_the_first_request_is_slow(make_app, monkeypatch):
    """Gradio's start-up probe gives up at the first request slower than 3 s; a busy machine is
    simulated by making the first HEAD request wait out its timeout (as a slow server does)."""
    import httpx
    from gradio import networking
    from ui_harness import free_port

    from freeret_rag.ui import launch, patient_url_ok

    real_head, slow = httpx.head, {"left": 1}

    def head(url, *args, timeout=None, **kwargs):
        if slow["left"]:
            slow["left"] -= 1
            time.sleep(timeout or 0)
            raise httpx.ReadTimeout(f"no answer within {timeout} s")
        return real_head(url, *args, timeout=timeout, **kwargs)

    monkeypatch.setattr(httpx, "head", head)
    hasty = networking.url_ok
    server_app, local_url, _ = launch(make_app(), server_port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        assert slow["left"] == 0  # the slow request happened during the launch
        assert networking.url_ok is hasty  # Gradio's own probe is back after the launch
        assert httpx.get(local_url, timeout=60).status_code == 200
        slow["left"] = 1
        assert not hasty(local_url)  # Gradio's probe alone gives up on the same slow first request
        slow["left"] = 1
        assert patient_url_ok(local_url, patience=30)
    finally:
        server_app.get_blocks().close()


def test_failed_logins_are_slowed_then_refused_and_the_login_page_hides_the_api(make_app, monkeypatch):
    import httpx
    from ui_harness import free_port

    from freeret_rag import ui_guard
    from freeret_rag.ui import launch

    monkeypatch.setattr(ui_guard, "MAX_FAILURES", 3)
    monkeypatch.setattr(ui_guard, "DELAY_S", 0.5)
    monkeypatch.setattr(ui_guard, "LOCKOUT_S", 4.0)
    server_app, url, _ = launch(make_app("--auth", "ann:secret"), server_port=free_port(),
                                prevent_thread_lock=True, quiet=True)
    try:
        with httpx.Client(base_url=url, timeout=60) as client:
            assert client.get("gradio_api/info").status_code == 401
            login_page = client.get("").text
            assert "auth_required" in login_page
            for endpoint in ("add_files", "documents", "delete", "/chat"):  # the app's API, by name
                assert endpoint not in login_page, endpoint

            def sign_in(password: str) -> tuple[int, float, httpx.Response]:
                started = time.monotonic()
                response = client.post("login", data={"username": "ann", "password": password})
                return response.status_code, time.monotonic() - started, response

            for _ in range(3):
                status, took, _ = sign_in("wrong")
                assert status == 400 and took >= 0.5
            status, took, refused = sign_in("secret")  # locked out: even the right password waits
            assert status == 429 and took < 0.5 and 1 <= int(refused.headers["retry-after"]) <= 4
            assert "Too many failed sign-ins" in refused.json()["detail"]
            time.sleep(4.2)
            assert sign_in("secret")[0] == 200
            assert "add_files" in client.get("").text  # signed in: the page describes the API again
            assert client.get("gradio_api/info").status_code == 200
            assert [sign_in("wrong")[0] for _ in range(2)] == [400, 400]  # the count started again
    finally:
        server_app.get_blocks().close()
