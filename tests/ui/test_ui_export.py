"""The /export endpoint end to end: the real app (`python app.py` on a tiny model) in a subprocess,
asked through gradio_client; the exported Markdown holds the question, the answer and every source
/chat returned, resolved to file and page (the expected lines written here from /chat's data)."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest

from ui_harness import GUIDE_PAGES, AppServer, make_pdf

FLAGS = ["--top-k", "5", "--rerank-k", "3", "--sources", "2", "--max-answer-tokens", "12", "--min-relevance", "0"]
QUESTION = "Which beetles eat aphids?"


def plain(content) -> str:
    """A chat message's text as people read it (tags dropped, entities decoded)."""
    if isinstance(content, list):
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return html.unescape(re.sub(r"<[^>]+>", "", str(content))).strip()


@pytest.mark.slow
def test_export_endpoint_resolves_chat_sources_to_file_and_page(tiny_model_dirs, tmp_path):
    from gradio_client import Client, handle_file

    pdf = make_pdf(tmp_path / "garden-guide.pdf", GUIDE_PAGES)
    with AppServer(["--model", str(tiny_model_dirs["qwen2_vl"]), "--data-dir", str(tmp_path / "data"), *FLAGS],
                   log_name="app-export.log") as app:
        client = Client(app.url, verbose=False, analytics_enabled=False, download_files=False)
        client.predict([handle_file(str(pdf))], api_name="/add_files")
        job = client.submit({"text": QUESTION, "files": []}, [], api_name="/chat")
        job.result()
        chatbot, sources, _ = job.outputs()[-1]
        answer = plain(chatbot[1]["content"])
        assert len(sources) == 2 and answer

        turns = [{"question": QUESTION, "answer": answer, "sources": sources},
                 {"question": "And the roses?", "answer": "No idea.", "sources": []}]
        exported = client.predict(turns, api_name="/export")
        path = Path(exported["path"] if isinstance(exported, dict) else exported)
        if not path.is_file():  # a URL: fetch it the way a remote client would
            import urllib.request

            with urllib.request.urlopen(exported["url"], timeout=30) as response:
                text = response.read().decode("utf-8")
        else:
            text = path.read_text(encoding="utf-8")

        with pytest.raises(Exception, match="Pass a list of turns"):  # bad input: one clear message
            client.predict({"question": "not a list"}, api_name="/export")

    assert path.name.startswith("chat-") and path.suffix == ".md"
    assert text.startswith("# FreeRet RAG conversation\n\n- Date: ")
    assert f"- Model: `{tiny_model_dirs['qwen2_vl']}`" in text and "- Library: data" in text
    first, second = text.split("## Question 2")
    assert f"## Question 1\n\n> {QUESTION}\n\n{answer}\n\n**Sources**\n\n" in first
    for source in sources:  # by hand from /chat's data: "garden-guide.pdf, page N"
        assert source["file"] == "garden-guide.pdf" and source["page"] in (1, 2)
        cited = " (cited)" if source["cited"] else ""
        assert f"- \\[{source['number']}\\] garden-guide.pdf, page {source['page']}{cited}\n" in first
    assert second == "\n\n> And the roses?\n\nNo idea.\n"


def test_the_app_writes_the_sessions_export_with_model_and_library(make_app, tmp_path):
    """FreeRetApp.export_chat (what the button and /export call): the header names the loaded model
    and the library's folder; each session has its own file, replaced by its next export."""
    from freeret_rag.export import remove_export
    from freeret_rag.ui import export_folder

    app = make_app("--data-dir", str(tmp_path / "my-library"))
    turns = [{"question": "Q?", "answer": "A [1].", "sources": [
        {"number": 1, "cited": True, "file": "notes.txt", "kind": "text", "chunk": 2}]}]
    first = Path(app.export_chat(turns, "session-a"))
    other = Path(app.export_chat([], "session-b"))
    text = first.read_text(encoding="utf-8")
    assert first.parent == export_folder() / "session-a" and other.parent == export_folder() / "session-b"
    assert f"- Model: `{app.engine.model_id}`\n- Library: my-library\n" in text
    assert text.endswith("> Q?\n\nA [1].\n\n**Sources**\n\n- \\[1\\] notes.txt, part 3 (cited)\n")
    again = Path(app.export_chat(turns[:0], "session-a"))
    assert not first.exists() or first == again
    assert "(No questions asked yet.)" in again.read_text(encoding="utf-8") and other.exists()
    for session in ("session-a", "session-b"):
        remove_export(export_folder(), session)
    assert not again.exists() and not other.exists()
