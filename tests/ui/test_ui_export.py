"""The /export endpoint end to end: the real app (`python app.py` on a tiny model) in a subprocess,
asked through gradio_client; the exported Markdown holds the question, the answer and every source
/chat returned, resolved to file and page (the expected lines written here from /chat's data)."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest

from ui_harness import GUIDE_PAGES, AppServer, make_pdf

pytestmark = [pytest.mark.slow]

FLAGS = ["--top-k", "5", "--rerank-k", "3", "--sources", "2", "--max-answer-tokens", "12", "--min-relevance", "0"]
QUESTION = "Which beetles eat aphids?"


def plain(content) -> str:
    """A chat message's text as people read it (tags dropped, entities decoded)."""
    if isinstance(content, list):
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return html.unescape(re.sub(r"<[^>]+>", "", str(content))).strip()


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
