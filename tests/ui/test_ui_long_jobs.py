"""A long upload in the real app (a server process, gradio_client as two clients): another client's
question is answered between the indexing batches, a client's cancel stops the indexing within a
batch and shows no half document, and uploading the same file again resumes it.

The model is the tiny Qwen2-VL; each indexing batch is made slow (SLOW_BATCH_S, inside the model
lock, as a large model on a CPU would be) and logged with its size, so the test can count them.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import pytest

from ui_harness import REPO_ROOT, AppServer

pytestmark = [pytest.mark.slow]

SLOW_BATCH_S = 0.5
SERVER = r"""
import os, runpy, sys, time
from pathlib import Path
import freeret_rag.engine as engine_module

log, delay = Path(os.environ["SLOW_BATCH_LOG"]), float(os.environ["SLOW_BATCH_S"])
real = engine_module.embed_prompts_with_words

def slow_items(lm, prompts, *args, **kwargs):
    if "Query:" not in prompts[0].text:  # a batch of items being indexed, not a question
        time.sleep(delay)
        with open(log, "a") as handle:
            handle.write(f"{len(prompts)}\n")
    return real(lm, prompts, *args, **kwargs)

engine_module.embed_prompts_with_words = slow_items
sys.argv[0] = os.environ["APP_PY"]
runpy.run_path(os.environ["APP_PY"], run_name="__main__")
"""
PARAGRAPH = "Paragraph {n} of the pond notes: the garden pond pump needs a check, and the {thing} too."


def batches(log: Path) -> list[int]:
    return [int(line) for line in log.read_text().split()] if log.exists() else []


def client_for(server):
    from gradio_client import Client

    return Client(server.url, verbose=False, analytics_enabled=False, download_files=False)


def test_a_question_is_answered_during_a_long_upload_and_a_cancel_stops_it(tiny_model_dirs, tmp_path):
    from gradio_client import handle_file

    from freeret_rag.media import MediaSettings, load_items

    note = tmp_path / "note.txt"
    note.write_text("The garden pond pump sits in the shed next to the yellow watering can.\n")
    long = tmp_path / "pond-notes.txt"
    long.write_text("\n\n".join(PARAGRAPH.format(n=n, thing=["roses", "hedge", "path"][n % 3]) * 6
                                for n in range(320)))
    total = len(list(load_items(long, "x", tmp_path / "scratch", settings=MediaSettings())))  # the loader's count
    assert total >= 300  # >= 38 batches of 8: >= 19 s of indexing at SLOW_BATCH_S

    script, log = tmp_path / "slow_server.py", tmp_path / "batches.log"
    script.write_text(SERVER)
    server = AppServer(["--model", str(tiny_model_dirs["qwen2_vl"]), "--data-dir", str(tmp_path / "data"),
                        "--min-relevance", "0", "--max-answer-tokens", "8"], log_name="app-long-jobs.log",
                       env={"SLOW_BATCH_LOG": str(log), "SLOW_BATCH_S": str(SLOW_BATCH_S), "PYTHONPATH": str(REPO_ROOT),
                            "APP_PY": str(REPO_ROOT / "app.py"), "FREERET_SELF_CHECK": "0"})
    server.args = [sys.executable, str(script), *server.args[2:]]
    with server:
        uploader, asker = client_for(server), client_for(server)
        assert uploader.predict([handle_file(str(note))], api_name="/add_files")[0]["state"] == "done"
        log.unlink()

        upload = uploader.submit([handle_file(str(long))], api_name="/add_files")
        deadline = time.monotonic() + 120
        while len(batches(log)) < 3:  # indexing is under way
            assert time.monotonic() < deadline and not upload.done(), server.log()
            time.sleep(0.1)

        asked = time.monotonic()
        question = asker.submit({"text": "Where is the pond pump?", "files": []}, [], api_name="/chat")
        chatbot = question.result(timeout=120)[0]
        waited = time.monotonic() - asked
        done_then = sum(batches(log))
        final = str(chatbot[-1]["content"])
        assert "Waiting for the model" not in final and "Thinking" not in final
        assert not upload.done() and done_then < total  # answered while the upload went on
        print(f"question answered in {waited:.1f} s during the upload ({done_then} of {total} items indexed)")
        assert waited < 60

        assert upload.cancel()
        cancelled_at = time.monotonic()
        settled = sum(batches(log))
        while True:  # the batch in flight finishes, then nothing more is embedded
            time.sleep(4 * SLOW_BATCH_S)
            now = sum(batches(log))
            if now == settled:
                break
            settled = now
            assert time.monotonic() - cancelled_at < 30, "indexing went on after the cancel"
        assert settled < total
        stopped_after = len(batches(log))
        time.sleep(6 * SLOW_BATCH_S)
        assert len(batches(log)) == stopped_after
        assert [d["file"] for d in asker.predict(api_name="/documents")] == ["note.txt"]  # no half document

        report = uploader.predict([handle_file(str(long))], api_name="/add_files")  # the same file again
        assert [(row["file"], row["state"], row["items"]) for row in report] == [("pond-notes.txt", "done", total)]
        resumed = batches(log)[stopped_after:]
        assert sum(resumed) == total - settled  # only what the cancelled run had not embedded
        assert len(resumed) == math.ceil((total - settled) / 8)
        assert sorted(d["file"] for d in asker.predict(api_name="/documents")) == ["note.txt", "pond-notes.txt"]
