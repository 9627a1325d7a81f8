"""Issue 13 end to end: the chat as a user meets it, in Debian's headless Chromium and through
gradio_client (sources in their own element, honest citations, Stop, the relevance threshold, the
API's own history and sources as data, uploads that say what happened, the library panel's layout).

The model is the fluent SmolLM2-135M VLM of ui_models.py; its real small-model answers (loops,
stray Markdown, invented links) run through the real app. Where a defect needs a trigger the model
does not give on demand (an unclosed code fence), the app's own chat component renders crafted
model text in the browser. Screenshots go to $FREERET_ARTIFACTS or tests/ui/artifacts/.
"""

from __future__ import annotations

import json
import re
import shutil
import time
import zipfile
from pathlib import Path

import pytest

from ui_harness import (GUIDE_PAGES, artifacts_dir, browser_page, free_port, make_pdf, model_app, screenshot,
                        shared_samples)

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.usefixtures("browser_available")]

SERVER_FLAGS = ["--top-k", "5", "--rerank-k", "3", "--sources", "2", "--max-answer-tokens", "200",
                "--min-relevance", "0"]
FIGURES: dict[str, float] = {}


def record(name: str, value: float) -> None:
    FIGURES[name] = round(value, 2)
    (artifacts_dir() / "chat-browser-figures.json").write_text(json.dumps(FIGURES, indent=2))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("corpus13")
    files = {"pdf": make_pdf(folder / "garden-guide.pdf", GUIDE_PAGES),
             "many": make_pdf(folder / "beds.pdf", [f"Bed {n}: notes on beetles, aphids and roses in bed {n}."
                                                     for n in range(14)])}
    shutil.copyfile(shared_samples() / "LadyBird.jpg", folder / "LadyBird.jpg")
    files["image"] = folder / "LadyBird.jpg"
    files["docx"] = folder / "letter.docx"
    with zipfile.ZipFile(files["docx"], "w") as archive:  # a .docx is a zip of XML parts
        archive.writestr("word/document.xml", "<w:document>Dear gardener</w:document>")
    files["zip"] = folder / "photos.zip"
    with zipfile.ZipFile(files["zip"], "w") as archive:
        archive.write(files["image"], "LadyBird.jpg")
    return files


@pytest.fixture(scope="module")
def server(fluent_vlm_dir, tmp_path_factory):
    with model_app(fluent_vlm_dir, tmp_path_factory.mktemp("app-data13"), SERVER_FLAGS, "app-chat13.log") as app:
        yield app


def open_app(page, server) -> None:
    page.goto(server.url)
    page.wait_for_selector("#fr-chat")
    page.wait_for_selector("#fr-summary")


def upload(page, *paths: Path) -> None:
    page.set_input_files("#fr-upload input[type=file]", [str(p) for p in paths])


def file_lines(page) -> dict[str, tuple[str, str]]:
    """name -> (state, what the line says), from the progress list."""
    return {row["name"]: (row["state"], row["says"]) for row in page.evaluate("""() =>
        [...document.querySelectorAll('#fr-progress .fr-file')].map(r => ({name: r.querySelector('.fr-name').innerText,
            state: r.dataset.state, says: r.querySelector('.fr-state').innerText}))""")}


def ask(page, question: str) -> None:
    page.fill("#fr-question textarea", question)
    page.keyboard.press("Enter")


def bot_messages(page) -> list[dict]:
    """Every assistant message: its text, whether it holds model text or the app's block, its cards."""
    return page.evaluate("""() => [...document.querySelectorAll('#fr-chat [data-testid="bot"]')].map(m => ({
        text: m.querySelector('.message-content') ? m.querySelector('.message-content').innerText : m.innerText,
        sources: m.querySelectorAll('.fr-sources').length, cards: m.querySelectorAll('.fr-card').length,
        cites: [...m.querySelectorAll('.fr-cite')].map(c => c.innerText),
        cited: [...m.querySelectorAll('.fr-card.fr-cited')].map(c => c.dataset.source),
        flags: [...m.querySelectorAll('.fr-flag')].map(f => f.innerText),
        links: [...m.querySelectorAll('a[href]')].map(a => a.getAttribute('href'))}))""")


def wait_answer(page, count: int, timeout: float = 300_000) -> None:
    """Until `count` answers are finished (their sources line says answered or stopped)."""
    page.wait_for_function(f"""() => [...document.querySelectorAll('#fr-chat .fr-sources-head, #fr-chat .fr-nothing')]
        .filter(h => /answered in|stopped after|could not find|Stopped before/.test(h.innerText)).length >= {count}""",
                           timeout=timeout)


# -- 1 and 2: sources in their own element, citations that are citations ---------------------------

CRAFTED = ("Canberra is the capital of Australia [1].\n\n[1] https://en.wikipedia.org/wiki/Canberra\n"
           "See [the atlas](https://atlas.example.org).\n```\n#\n##\n###\n####")


def test_crafted_model_text_never_swallows_the_sources(tmp_path):
    """The app's chat component, in the browser, with a small model's worst text: an unclosed fence
    of # lines and invented [1] web references. The same text joined to the sources block as one
    message (as before) is shown beside it, to prove the trigger is real."""
    import gradio as gr

    from freeret_rag.chat import ChatEvent
    from freeret_rag.items import Answer, Hit, Item
    from freeret_rag.ui import chat_view
    from freeret_rag.ui_render import CSS, chat_messages, escape, render_sources

    hits = [Hit(Item("text", text=f"Notes {n}\n\n    indented\n\n# not a heading", item_id=f"d:text:{n}", doc_id="d",
                     source=f"notes{n}.txt", chunk=n), rerank_score=0.5) for n in range(2)]
    event = ChatEvent("answer", CRAFTED, sources=hits, answer=Answer(CRAFTED, hits, []), query="capital?")
    messages = [{"role": "user", "content": "What is the capital of Australia?"}]
    messages += [{"role": "assistant", "content": body} for body in chat_messages(event, {}, "answered in 1.0 s")]
    joined = [messages[0], {"role": "assistant", "content": escape(CRAFTED) + render_sources(hits, {}, (), "capital?")}]
    with gr.Blocks() as demo:
        chat_view(value=messages)
        chat_view(value=joined, elem_id="fr-joined", elem_classes=[])
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, css=CSS, ssr_mode=False,
                quiet=True)
    try:
        with browser_page() as page:
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_selector("#fr-joined [data-testid=bot]")
            page.wait_for_timeout(500)
            screenshot(page, "13-01-crafted-answer")
            answer, block = bot_messages(page)[:2]
            joined_text = page.inner_text("#fr-joined [data-testid=bot]")
    finally:
        demo.close()
    assert 'class="fr-sources"' in joined_text or "fr-card" in joined_text  # the old way: cards as raw text
    assert block["cards"] == 2 and block["sources"] == 1 and answer["sources"] == 0
    assert "fr-" not in answer["text"] and "fr-" not in block["text"]  # no markup shown as text
    assert answer["links"] == [] and answer["cites"] == []  # invented references are neither links nor citations
    assert "https://en.wikipedia.org/wiki/Canberra" in answer["text"] and "####" in answer["text"]
    assert block["cited"] == [] and block["flags"][0].startswith("Not grounded in your files")


def test_answers_of_the_small_model_keep_their_sources_apart(server, corpus):
    """Real answers of the fluent 135M model, one grounded question and one the library cannot answer."""
    with browser_page() as page:
        open_app(page, server)
        upload(page, corpus["pdf"])
        page.wait_for_function("() => document.querySelector('#fr-documents').innerText.includes('garden-guide.pdf')",
                               timeout=300_000)
        ask(page, "Which beetles eat aphids? Cite the source.")
        wait_answer(page, 1)
        ask(page, "What is the capital of Australia? Give links.")
        wait_answer(page, 2)
        screenshot(page, "13-02-small-model-answers", full_page=True)
        bots = bot_messages(page)
    blocks = [m for m in bots if m["sources"]]
    answers = [m for m in bots if not m["sources"]]
    assert len(blocks) == 2 and len(answers) == 2, bots
    for answer, block in zip(answers, blocks):
        assert answer["cards"] == 0 and "fr-" not in answer["text"] and block["cards"] == 2
        # links in the answer: the app's own (files, and the pictures that open the citation viewer)
        assert not [link for link in answer["links"] if not link.startswith(("gradio_api/file=", "#fr-view?"))]
        numbers = {int(n) for cite in answer["cites"] for n in re.findall(r"\d+", cite)}
        assert numbers <= {1, 2} and {int(n) for n in block["cited"]} == numbers  # highlighted = cited
        grounded_note = any(f.startswith("Not grounded in your files") for f in block["flags"])
        assert grounded_note == (not numbers)


# -- 3: the relevance threshold never passes unscored candidates -------------------------------------

def set_number(page, slider: str, value: float) -> None:
    box = page.locator(f"{slider} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def test_threshold_099_with_top_k_20_answers_from_nothing_unscored(server, corpus):
    from gradio_client import Client, handle_file

    client = Client(server.url, verbose=False, analytics_enabled=False, download_files=False)
    client.predict([handle_file(str(corpus["many"]))], api_name="/add_files")
    with browser_page() as page:
        open_app(page, server)
        page.get_by_role("tab", name="Settings").click()
        set_number(page, "#fr-top-k", 20)
        set_number(page, "#fr-rerank-k", 10)
        page.locator("#fr-fixed-threshold input[type=checkbox]").check()
        set_number(page, "#fr-threshold", 0.99)
        screenshot(page, "13-03-threshold-settings")
        ask(page, "Which bed has notes on beetles and aphids?")
        wait_answer(page, 1)
        screenshot(page, "13-03-threshold-answer")
        said = page.inner_text("#fr-chat")
        scores = [float(s) for s in re.findall(r"rerank p\(match\)\s+([\d.]+)", page.evaluate(
            "() => [...document.querySelectorAll('#fr-chat .fr-card details')].map(d => d.textContent).join(' ')"))]
        cards = page.locator("#fr-chat .fr-card").count()
    assert cards == len(scores)  # every card shown was reranked
    assert all(score >= 0.99 for score in scores)
    assert cards or "could not find anything" in said


# -- 4: Stop ------------------------------------------------------------------------------------------

def ensure_indexed(server, *paths: Path) -> None:
    """The files in the server's library (an upload of a file already there changes nothing), so a
    test does not depend on what earlier tests uploaded."""
    from gradio_client import Client, handle_file

    client = Client(server.url, verbose=False, analytics_enabled=False, download_files=False)
    rows = client.predict([handle_file(str(path)) for path in paths], api_name="/add_files")
    assert all(row["state"] == "done" for row in rows), rows


def test_stop_ends_the_answer_within_a_second_and_keeps_it(server, corpus):
    ensure_indexed(server, corpus["pdf"])
    with browser_page() as page:
        open_app(page, server)
        page.get_by_role("tab", name="Settings").click()
        set_number(page, "#fr-threshold", 0)
        page.get_by_role("tab", name="Library").click()
        ask(page, "Write a long, detailed guide to everything in the garden guide, page by page.")
        page.wait_for_selector("#fr-stop", state="visible", timeout=30_000)
        page.wait_for_function("""() => [...document.querySelectorAll('#fr-chat [data-testid=bot] .message-content')]
            .some(m => m.innerText.includes('\u258d') && m.innerText.length > 20)""", timeout=300_000)
        clicked = time.monotonic()
        page.click("#fr-stop")
        wait_answer(page, 1, timeout=60_000)
        stopped_s = time.monotonic() - clicked
        shown = page.inner_text("#fr-chat")
        page.wait_for_timeout(1500)
        assert page.inner_text("#fr-chat") == shown  # nothing more arrives after the stop
        screenshot(page, "13-04-stopped")
        bots = bot_messages(page)
        assert page.locator("#fr-stop").is_hidden() and page.locator("#fr-question textarea").is_editable()
    record("stop_to_stopped_s", stopped_s)
    answer, block = bots[-2], bots[-1]
    assert "Stopped: the answer above is unfinished." in block["flags"] and "stopped after" in block["text"]
    assert len(answer["text"]) > 20 and "\u258d" not in answer["text"]
    assert stopped_s < 3.0, f"Stop took {stopped_s:.1f} s"


# -- 5: the API's conversation is the history passed in; sources as data ----------------------------

def test_api_chat_uses_only_the_history_passed_in_and_returns_sources_as_data(server, corpus):
    import urllib.request

    from gradio_client import Client, handle_file

    client = Client(server.url, verbose=False, analytics_enabled=False, download_files=False)
    client.predict([handle_file(str(corpus["pdf"]))], api_name="/add_files")

    def chat(question: str, history: list) -> tuple[list, list, str]:
        job = client.submit({"text": question, "files": []}, history, api_name="/chat")
        job.result()
        chatbot, sources, _ = job.outputs()[-1]
        text = "\n".join(message_text(m) for m in chatbot)
        return chatbot, sources, re.sub(r"(answered in|first words after) [\d.]+ s", "", text)

    first, _, _ = chat("Which beetles eat aphids?", [])
    alone, sources, alone_text = chat("What do they eat?", [])
    again, _, again_text = chat("What do they eat?", [])  # the same client: no memory of the calls before
    assert "searched for “What do they eat?”" in alone_text and again_text == alone_text
    assert [m["role"] for m in again] == ["user", "assistant", "assistant"]
    _, _, follow_text = chat("What do they eat?", first)  # the conversation passed in is used
    assert "searched for “What do they eat?”" not in follow_text and "searched for “" in follow_text

    assert [s["number"] for s in sources] == [1, 2]
    for source in sources:
        assert source["file"].endswith(".pdf") and source["page"] >= 1 and source["t_start"] is None
        assert source["doc_id"] and source["scores"]["rerank"] is not None and source["scores"]["dense"] is not None
        with urllib.request.urlopen(server.url + source["asset_url"], timeout=30) as response:
            assert response.status == 200 and response.headers["content-type"].startswith("image/")


def message_text(message) -> str:
    content = message["content"]
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content)


# -- 6: uploads that say what happened; delete asks first ---------------------------------------------

def upload_control_is_empty(page) -> bool:
    return page.evaluate("""() => !document.querySelector('#fr-upload').innerText.match(/\\.(docx|zip|jpg|pdf)|Error/)""")


def test_every_upload_gets_its_line_and_unchanged_files_answer_at_once(server, corpus):
    with browser_page() as page:
        open_app(page, server)
        upload(page, corpus["docx"])  # alone: a line with the reason, no red "Error"
        page.wait_for_function("() => document.querySelector('#fr-progress').innerText.includes('letter.docx')")
        assert file_lines(page) == {"letter.docx": ("skipped", "unsupported file type (.docx)")}
        assert page.locator("#fr-progress .fr-file").first.is_visible()
        page.wait_for_timeout(500)
        assert upload_control_is_empty(page)
        screenshot(page, "13-06-docx-alone")

        upload(page, corpus["image"], corpus["zip"], corpus["docx"])  # mixed with a valid file
        page.wait_for_function("() => document.querySelectorAll('#fr-progress .fr-file').length === 3")
        page.wait_for_function("() => document.querySelector('#fr-progress .fr-file[data-state=done]')",
                               timeout=300_000)
        assert file_lines(page) == {"LadyBird.jpg": ("done", "done · 1 item"),
                                    "photos.zip": ("skipped", "unsupported file type (.zip)"),
                                    "letter.docx": ("skipped", "unsupported file type (.docx)")}
        assert upload_control_is_empty(page)
        screenshot(page, "13-06-mixed")

        # while the model writes an answer, re-adding an unchanged file is answered at once
        ask(page, "Write a long, detailed guide to everything in the library.")
        page.wait_for_function("""() => [...document.querySelectorAll('#fr-chat [data-testid=bot] .message-content')]
            .some(m => m.innerText.includes('\\u258d'))""", timeout=300_000)
        started = time.monotonic()
        upload(page, corpus["image"])
        page.wait_for_function("() => document.querySelector('#fr-progress').innerText.includes('already in the library')",
                               timeout=120_000)
        record("readd_unchanged_while_answering_s", time.monotonic() - started)
        still_writing = page.evaluate("""() => [...document.querySelectorAll('#fr-chat [data-testid=bot] .message-content')]
            .some(m => m.innerText.includes('\\u258d'))""")
        screenshot(page, "13-06-readd-while-answering")
        page.click("#fr-stop")
        assert still_writing, "the re-add waited for the answer (the model's queue slot)"
        assert file_lines(page)["LadyBird.jpg"] == ("done", "done · 1 item · already in the library as LadyBird.jpg")

        # Delete asks first and says what goes
        page.locator("#fr-documents .body-cell", has_text="LadyBird.jpg").first.click()
        page.wait_for_function("""() => (document.querySelector('#fr-delete-choice input') || {}).value
                                   ?.includes('LadyBird.jpg')""", timeout=20_000)
        page.click("#fr-delete")
        page.wait_for_selector("#fr-delete-confirm", state="visible")
        what = page.inner_text("#fr-delete-what")
        assert what.startswith("Delete LadyBird.jpg (Image)? This removes its 1 searchable item") and \
            "cannot be undone" in what
        screenshot(page, "13-06-delete-confirm")
        page.click("#fr-delete-no")
        page.wait_for_selector("#fr-delete-confirm", state="hidden")
        assert "LadyBird.jpg" in page.inner_text("#fr-documents")
        page.click("#fr-delete")
        page.click("#fr-delete-yes")
        page.wait_for_function("() => !document.querySelector('#fr-documents').innerText.includes('LadyBird.jpg')",
                               timeout=60_000)
        assert "Deleted LadyBird.jpg" in page.inner_text("#fr-notice")


# -- 7: the library panel's layout --------------------------------------------------------------------

LAYOUT = """() => {
    const box = el => el.getBoundingClientRect();
    const lines = el => { const r = document.createRange(); r.selectNodeContents(el); return new Set([...r.getClientRects()]
        .filter(x => x.width > 0).map(x => Math.round(x.top))).size; };
    const folder = document.querySelector('#fr-upload-folder');
    const summary = document.querySelector('#fr-summary');  // the next thing with words, when nothing is uploading
    const viewport = document.querySelector('#fr-documents .table-wrap') || document.querySelector('#fr-documents');
    const right = box(viewport).right;
    const fits = (text, cell) => ({text: text.innerText, lines: lines(text),
        cut: box(text).right > Math.min(box(cell).right, right) + 1 || box(text).left < box(cell).left - 1});
    const heads = [...document.querySelectorAll('#fr-documents th')].map(th => fits(th.querySelector('.header'), th));
    const dates = [...document.querySelectorAll('#fr-documents .body-cell[data-col="3"]')]
        .map(cell => fits(cell.querySelector('span'), cell));
    return {gap: box(summary).top - box(folder).bottom, heads, dates};
}"""


@pytest.mark.parametrize("width", [1024, 1440])
def test_library_table_header_and_dates_fit_and_no_gap_under_add_a_folder(server, corpus, width):
    from gradio_client import Client, handle_file

    Client(server.url, verbose=False, analytics_enabled=False, download_files=False).predict(
        [handle_file(str(corpus["pdf"]))], api_name="/add_files")  # at least one row (at once when known)
    with browser_page(width=width, height=900) as page:
        open_app(page, server)
        page.wait_for_selector("#fr-documents .body-cell[data-col='3']", timeout=60_000)
        facts = page.evaluate(LAYOUT)
        screenshot(page, f"13-07-library-{width}")
    assert [h["text"] for h in facts["heads"]] == ["File", "Type", "Items", "Added", "Note"]
    assert all(h["lines"] == 1 and not h["cut"] for h in facts["heads"]), facts["heads"]
    assert facts["dates"] and all(d["lines"] == 1 and not d["cut"] and re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d", d["text"])
                                  for d in facts["dates"]), facts["dates"]
    assert facts["gap"] is not None and facts["gap"] <= 20, facts
