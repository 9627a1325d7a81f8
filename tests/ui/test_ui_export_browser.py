"""Export in the browser: the real app (`python app.py` on a tiny model) in Debian's headless
Chromium; ask, click "Download chat (.md)", and the downloaded file has the question and every
source card's citation resolved to its file and page (read from the cards on screen)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from ui_harness import GUIDE_PAGES, AppServer, browser_page, make_pdf, screenshot

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.usefixtures("browser_available")]

FLAGS = ["--top-k", "5", "--rerank-k", "3", "--sources", "2", "--max-answer-tokens", "12", "--min-relevance", "0"]
QUESTION = "Which beetles eat aphids?"


def test_browser_download_chat_as_markdown(tiny_model_dirs, tmp_path):
    pdf = make_pdf(tmp_path / "garden-guide.pdf", GUIDE_PAGES)
    started = time.time() - 1
    with AppServer(["--model", str(tiny_model_dirs["qwen2_vl"]), "--data-dir", str(tmp_path / "data"), *FLAGS],
                   log_name="app-export-browser.log") as app, browser_page() as page:
        page.goto(app.url)
        page.wait_for_selector("#fr-summary")
        assert page.locator("#fr-download-chat").is_disabled()  # nothing to download yet
        page.set_input_files("#fr-upload input[type=file]", [str(pdf)])
        page.wait_for_function("() => document.querySelector('#fr-documents').innerText.includes('garden-guide.pdf')",
                               timeout=120_000)
        page.fill("#fr-question textarea", QUESTION)
        page.keyboard.press("Enter")
        page.wait_for_selector("#fr-chat .fr-sources-head:has-text('answered in')", timeout=180_000)
        page.wait_for_function("() => !document.querySelector('#fr-download-chat').disabled", timeout=30_000)
        cards = page.evaluate("""() => [...document.querySelectorAll('#fr-chat .fr-card figcaption')]
            .map(c => c.innerText)""")
        screenshot(page, "export-01-answered")
        with page.expect_download(timeout=30_000) as download_info:
            page.click("#fr-download-chat")
        download = download_info.value
        assert download.suggested_filename.startswith("chat-") and download.suggested_filename.endswith(".md")
        text = open(download.path(), encoding="utf-8").read()

        assert f"## Question 1\n\n> {QUESTION}\n" in text and "**Sources**" in text
        assert len(cards) == 2
        for card in cards:  # "1garden-guide.pdf · p. 2 · page" on screen -> "- \[1\] garden-guide.pdf, page 2"
            found = re.match(r"\s*(\d+)\s*garden-guide\.pdf\s*·\s*p\. (\d+)", card)
            assert found, card
            number, page_number = found.groups()
            assert re.search(rf"^- \\\[{number}\\\] garden-guide\.pdf, page {page_number}( \(cited\))?$", text,
                             re.M), (card, text)

        [kept] = session_exports(started)  # the session's file on the server, until New chat
        page.click("#fr-new-chat")  # a new chat has nothing to download, and its file goes
        page.wait_for_function("() => document.querySelector('#fr-download-chat').disabled", timeout=30_000)
        assert not kept.exists() and session_exports(started) == []

        page.fill("#fr-question textarea", "What needs a pump check?")
        page.keyboard.press("Enter")
        page.wait_for_function("() => !document.querySelector('#fr-download-chat').disabled", timeout=180_000)
        [kept] = session_exports(started)
        assert "What needs a pump check?" in kept.read_text(encoding="utf-8") and QUESTION not in kept.read_text()
        page.goto("about:blank")  # the tab leaves: the session ends, its export goes
        deadline = time.monotonic() + 30
        while kept.exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not kept.exists()


def session_exports(since: float) -> list[Path]:
    """The export files written since `since` (this test's session: the app runs on this machine)."""
    from freeret_rag.ui import export_folder

    return [path for path in export_folder().glob("*/chat-*.md") if path.stat().st_mtime >= since
            and not path.parent.name.startswith("api-")]
