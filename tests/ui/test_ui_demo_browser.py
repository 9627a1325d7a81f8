"""The public demo in a real headless Chromium (tiny Qwen2-VL): a visitor clicks "Try the sample
library", then an example question, and gets an answer whose sources include a page, a picture and
a video moment; closing the tab removes its temporary library (Gradio's unload)."""

from __future__ import annotations

import hashlib
import time
from urllib.parse import quote

import httpx

import pytest

from ui_harness import AppServer, browser_page, screenshot

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.usefixtures("browser_available")]


def test_a_visitor_tries_the_samples_and_closing_the_tab_removes_its_library(tiny_model_dirs,
                                                                             tmp_path):
    data = tmp_path / "data"
    with AppServer(["--model", str(tiny_model_dirs["qwen2_vl"]), "--data-dir", str(data), "--demo", "--top-k", "20",
                    "--demo-grace-seconds", "0", "--no-rerank", "--sources", "10", "--max-answer-tokens", "4"],
                   log_name="app-demo-browser.log") as server:
        with browser_page() as page:
            page.goto(server.url)
            page.wait_for_selector("#fr-try-samples")
            assert "Public demo" in page.inner_text("#fr-demo-note")
            page.wait_for_function("() => document.querySelectorAll('#fr-chat').length > 0")
            deadline = time.monotonic() + 60
            while not any((data / "demo").iterdir()) and time.monotonic() < deadline:  # the page's load made it
                time.sleep(0.2)
            [folder] = list((data / "demo").iterdir())
            started = time.monotonic()
            page.click("#fr-try-samples")
            page.wait_for_selector("#fr-examples button", timeout=120_000)
            page.get_by_role("button", name="What do ladybirds eat?").click()
            page.wait_for_selector("#fr-chat .fr-sources-head", timeout=120_000)
            page.wait_for_function("() => document.querySelector('#fr-chat').innerText.includes('answered in')",
                                   timeout=120_000)
            took = time.monotonic() - started
            print(f"samples button to a finished answer: {took:.1f} s")
            screenshot(page, "20-demo-samples-answer")
            cards = page.locator("#fr-chat .fr-card").all_inner_texts()
            text = " ".join(cards)
            assert "LadyBird.jpg" in text and "nature-scenes.mp4" in text and "shared-mime-info-spec-p1-4.pdf" in text
            assert page.locator("#fr-chat .fr-card video").count() >= 1  # a video moment plays in place
            assert page.locator("#fr-chat .fr-card img").count() >= 2    # page and picture thumbnails
            assert "shared, read-only" in page.inner_text("#fr-documents")
            # The tab's own upload: served to this browser (its cookie), 404 to anyone else, even with the URL.
            note = tmp_path / "otter-note.txt"
            note.write_text("Otters hold hands while they sleep.\n")
            page.set_input_files("#fr-upload input[type=file]", [str(note)])
            page.wait_for_function("() => document.querySelector('#fr-documents').innerText.includes('otter-note.txt')",
                                   timeout=120_000)
            kept = folder / "files" / hashlib.sha256(note.read_bytes()).hexdigest()[:16] / "otter-note.txt"
            url = server.url + "gradio_api/file=" + quote(str(kept))
            assert kept.is_file() and page.request.get(url).body() == note.read_bytes()
            assert httpx.get(url, timeout=60).status_code == 404
            assert httpx.get(url, cookies={"freeret-demo": "another-browser"}, timeout=60).status_code == 404
            assert folder.is_dir()
            page.close()
        deadline = time.monotonic() + 60
        while folder.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not folder.exists(), "the closed tab's library is still there"
        assert (data / "samples" / "files" / "LadyBird.jpg").is_file()  # the shared samples stay
