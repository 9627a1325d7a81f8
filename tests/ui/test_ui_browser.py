"""End-to-end: the real app (`python app.py`) in a subprocess, driven by a real headless Chromium
and by gradio_client.

The model is a real VLM folder whose language model is SmolLM2-135M-Instruct (fluent answers,
see ui_models.py); indexing, retrieval, reranking and answering all run for real on CPU.
Screenshots and the app log go to $FREERET_ARTIFACTS or tests/ui/artifacts/.
"""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
from pathlib import Path

import pytest

from ui_harness import (GUIDE_PAGES, AppServer, artifacts_dir, browser_page, browser_skip_reason, make_pdf, model_app,
                        screenshot, shared_samples)

pytestmark = [pytest.mark.slow]
needs_browser = [pytest.mark.browser, pytest.mark.usefixtures("browser_available")]  # skips locally, fails in CI

SERVER_FLAGS = ["--top-k", "5", "--rerank-k", "3", "--sources", "2", "--max-answer-tokens", "40",
                "--min-relevance", "0"]
QUESTION = "Which beetles eat aphids in the garden?"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    """A 2-page PDF made here and temp copies of two sample photos."""
    samples = shared_samples()
    folder = tmp_path_factory.mktemp("corpus")
    files = {"pdf": make_pdf(folder / "garden-guide.pdf", GUIDE_PAGES)}
    for key, name in (("image", "LadyBird.jpg"), ("image2", "YellowFlower.jpg")):
        shutil.copyfile(samples / name, folder / name)
        files[key] = folder / name
    return files


@pytest.fixture(scope="module")
def server(fluent_vlm_dir, tmp_path_factory):
    with model_app(fluent_vlm_dir, tmp_path_factory.mktemp("app-data"), SERVER_FLAGS, "app-e2e.log") as app:
        yield app


def client_for(server, **kwargs):
    from gradio_client import Client

    return Client(server.url, verbose=False, analytics_enabled=False, download_files=False, **kwargs)


def last_bot_text(page) -> str:
    """Text of the newest assistant message, without its sources block."""
    return page.evaluate("""() => {
        const groups = document.querySelectorAll('#fr-chat .message.bot');  // an answer and its sources block
        const bots = groups.length ? groups : document.querySelectorAll('#fr-chat [data-testid="bot"]');
        if (!bots.length) return '';
        const node = bots[bots.length - 1].cloneNode(true);
        node.querySelectorAll('.fr-sources, .fr-status, .sr-only, [data-testid="status-tracker"]')
            .forEach(n => n.remove());
        return node.innerText.replace('Loading content', '').replace('\u258d', '').trim();
    }""")


def ask(page, question: str, timeout: float = 300.0) -> dict:
    """Type, submit, and watch the answer stream; returns timings and the text lengths seen."""
    answered = page.locator("#fr-chat .fr-sources-head", has_text="answered in")
    before = answered.count()
    page.fill("#fr-question textarea", question)
    start = time.monotonic()
    page.keyboard.press("Enter")
    lengths: list[int] = []
    first_text = sources_at = None
    deadline = start + timeout
    while time.monotonic() < deadline:
        text = last_bot_text(page)
        if text and first_text is None:
            first_text = time.monotonic() - start
        if sources_at is None and page.locator("#fr-chat .fr-card").count() > 0:
            sources_at = time.monotonic() - start
        if not lengths or lengths[-1] != len(text):
            lengths.append(len(text))
        if answered.count() > before:
            break
        page.wait_for_timeout(100)
    else:
        raise AssertionError(f"no finished answer within {timeout:.0f} s")
    return {"first_text_s": first_text, "sources_s": sources_at, "total_s": time.monotonic() - start,
            "lengths": lengths, "text": last_bot_text(page)}


@needs_browser[0]
@needs_browser[1]
def test_browser_upload_ask_stream_sources_delete(server, corpus):
    figures = {}
    with browser_page() as page:
        page.goto(server.url)
        page.wait_for_selector("#fr-chat")
        page.wait_for_selector("#fr-summary .fr-empty")
        screenshot(page, "01-empty-library")

        # 1. upload a PDF and an image; watch per-file progress until both are indexed
        start = time.monotonic()
        page.set_input_files("#fr-upload input[type=file]", [str(corpus["pdf"]), str(corpus["image"])])
        page.wait_for_selector("#fr-progress .fr-file", timeout=60_000)
        page.wait_for_function(
            "() => document.querySelectorAll('#fr-progress .fr-file[data-state=done]').length === 2",
            timeout=300_000)
        figures["index_pdf_and_image_s"] = round(time.monotonic() - start, 1)
        page.wait_for_function("() => document.querySelector('#fr-documents').innerText.includes('LadyBird.jpg')")
        table = page.inner_text("#fr-documents")
        assert "garden-guide.pdf" in table and "PDF" in table and "Image" in table
        screenshot(page, "02-indexed")

        # 2. ask: the answer streams, then shows numbered sources with thumbnails and scores
        result = ask(page, QUESTION)
        figures.update({f"first_answer_{k}": round(v, 2) for k, v in result.items() if k.endswith("_s") and v})
        growing = [n for n in result["lengths"] if n > 0]
        assert len(set(growing)) >= 3, f"expected a streamed answer, saw lengths {result['lengths']}"
        assert result["text"], "the answer is empty"
        thumbs = page.locator("#fr-chat img.fr-thumb")
        assert thumbs.count() >= 1
        page.wait_for_function("""() => [...document.querySelectorAll('#fr-chat img.fr-thumb')]
                                   .some(img => img.complete && img.naturalWidth > 0)""", timeout=20_000)
        captions = page.inner_text("#fr-chat .fr-grid")
        assert re.search(r"garden-guide\.pdf\s*· p\. \d|LadyBird\.jpg", captions)
        numbers = page.locator("#fr-chat .fr-card .fr-num").all_inner_texts()
        assert numbers[:2] == ["1", "2"]
        for number in re.findall(r"\[(\d+)\]", result["text"]):
            assert int(number) <= len(numbers), "a citation points at a source that is not shown"
        page.locator("#fr-chat .fr-card details summary").first.click()
        assert "rerank p(match)" in page.locator("#fr-chat .fr-card details").first.inner_text()
        screenshot(page, "03-answer-with-sources")

        # 3. a follow-up is searched as a standalone query built from the conversation
        follow = ask(page, "What do they eat?")
        figures["follow_up_total_s"] = round(follow["total_s"], 2)
        heads = page.locator("#fr-chat .fr-sources-head").all_inner_texts()
        assert len(heads) == 2 and "searched for" in heads[-1]
        screenshot(page, "04-follow-up")

        # 4. settings: model and what it reads, retrieval knobs
        page.get_by_role("tab", name="Settings").click()
        page.wait_for_selector("#fr-model-info")
        info = page.inner_text("#fr-model-info")
        assert "Reads" in info and "images" in info
        screenshot(page, "05-settings")
        page.get_by_role("tab", name="Library").click()

        # 5. delete the PDF: choose it by clicking its row, then Delete
        page.locator("#fr-documents .body-cell", has_text="garden-guide.pdf").first.click()
        page.wait_for_function("""() => (document.querySelector('#fr-delete-choice input') || {}).value
                                   ?.includes('garden-guide.pdf')""", timeout=20_000)
        page.click("#fr-delete")
        page.click("#fr-delete-yes")  # Delete asks first
        page.wait_for_function("() => !document.querySelector('#fr-documents').innerText.includes('garden-guide.pdf')",
                               timeout=60_000)
        assert "Deleted garden-guide.pdf" in page.inner_text("#fr-notice")
        assert "1 document" in page.inner_text("#fr-summary")
        screenshot(page, "06-deleted")

        external = sorted({url for url in page.requests if not url.startswith(server.url) and not url.startswith("data:")})
        assert external == [], f"the page made network calls outside the app: {external}"
    (artifacts_dir() / "browser-figures.json").write_text(json.dumps(figures, indent=2))
    print("browser figures:", figures)


def test_gradio_client_drives_the_same_flow(server, corpus):
    from gradio_client import handle_file

    client = client_for(server)
    report = client.predict([handle_file(str(corpus["pdf"])), handle_file(str(corpus["image2"]))],
                            api_name="/add_files")
    states = {row["file"]: row["state"] for row in report}
    assert states == {"garden-guide.pdf": "done", "YellowFlower.jpg": "done"}
    documents = client.predict(api_name="/documents")
    assert {"garden-guide.pdf", "YellowFlower.jpg"} <= {d["file"] for d in documents}

    job = client.submit({"text": QUESTION, "files": []}, [], api_name="/chat")
    updates = [output for output in job]
    chatbot = job.outputs()[-1][0] if job.outputs() else updates[-1][0]
    assert len(job.outputs()) >= 3, "the API streams partial answers too"
    final = _message_text(chatbot[-1])
    assert "answered in" in final and 'class="fr-card' in final
    assert f"searched for “{QUESTION}”" in final

    doc_id = next(d["doc_id"] for d in documents if d["file"] == "YellowFlower.jpg")
    assert client.predict(doc_id, api_name="/delete") == "Deleted YellowFlower.jpg."
    assert "YellowFlower.jpg" not in {d["file"] for d in client.predict(api_name="/documents")}


def _message_text(message) -> str:
    content = message["content"]
    if isinstance(content, list):  # the API returns [{"type": "text", "text": ...}]
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content)


def test_two_concurrent_clients_get_their_own_answers(server, corpus):
    from gradio_client import handle_file

    client_for(server).predict([handle_file(str(corpus["pdf"]))], api_name="/add_files")
    questions = ["Which beetles eat aphids in the garden?", "When should the yellow flowers be watered?"]

    def answer(client, question):
        job = client.submit({"text": question, "files": []}, [], api_name="/chat")
        job.result()
        return re.sub(r" · answered in [^<]*", "", _message_text(job.outputs()[-1][0][-1]))

    alone = {q: answer(client_for(server), q) for q in questions}
    clients = [client_for(server), client_for(server)]
    together: dict[str, str] = {}
    threads = [threading.Thread(target=lambda c=c, q=q: together.__setitem__(q, answer(c, q)))
               for c, q in zip(clients, questions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert together == alone
    for question in questions:
        assert f"searched for “{question}”" in together[question]


def test_login_and_upload_limit(tiny_model_dirs, tmp_path, corpus):
    import urllib.error
    import urllib.request

    from gradio_client import handle_file

    users = tmp_path / "users.txt"
    users.write_text("ann:correct-horse\n")
    with AppServer(["--model", str(tiny_model_dirs["qwen2_vl"]), "--data-dir", str(tmp_path / "data"),
                    "--auth", str(users), "--max-upload", "100kb"], log_name="app-auth.log") as server:
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(server.url + "gradio_api/info", timeout=10)
        assert denied.value.code == 401
        with pytest.raises(Exception):
            client_for(server)  # no credentials
        client = client_for(server, auth=("ann", "correct-horse"))
        with pytest.raises(Exception, match="(?i)size|large|exceed"):
            client.predict([handle_file(str(corpus["image"]))], api_name="/add_files")  # 343 KB > 100 KB
        assert client.predict(api_name="/documents") == []
        if browser_skip_reason() is None:
            with browser_page() as page:
                page.goto(server.url)
                page.wait_for_selector("input[type=password]", timeout=30_000)
                screenshot(page, "07-login")
