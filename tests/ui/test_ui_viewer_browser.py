"""Issue 14, parts 2 and 4, in Debian's headless Chromium: the citation viewer and the answers'
inline pictures.

The app runs in this process on the tiny seeded Qwen2-VL (tests/tiny_models.py) and a real
Library: the PDF is uploaded through the page, indexed, searched and ranked by that model for real.
The tiny model's own words are random tokens that never cite, so its `answer_stream` is replaced
by a fixed answer citing [1] and [2] (`CitingEngine`): everything around the words (citations,
inline pictures, source cards, the viewer, the file routes) is the app's real code.

Expected highlights are computed from the page's own words (PyMuPDF's get_text("words")), not by
highlight.py. The first test's last screenshot goes to assets/screenshots/answer-pictures.png.
The second test runs `python app.py` on the fluent SmolLM2-135M VLM (ui_models.py) with nothing
scripted; its screenshot of the viewer goes to assets/screenshots/citation-viewer.png. Both also
go to the artifacts folder; FREERET_SCREENSHOTS=0 leaves assets/ alone. The third test opens a
video segment (loaded at its start) and a text chunk (its words marked) in the page.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pymupdf
import pytest

from ui_harness import GUIDE_PAGES, REPO_ROOT, browser_page, free_port, make_pdf, model_app, screenshot

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.usefixtures("browser_available")]

QUESTION = "When are the yellow flowers watered, and is the pond pump checked?"
ANSWER = "Water the yellow flowers every morning in summer [2]. Ladybirds eat aphids [1]."


class CitingEngine:
    """The tiny engine, except that its answer is the fixed ANSWER (streamed word by word)."""

    def __init__(self, engine) -> None:
        self._engine = engine

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def answer_stream(self, question, sources, history=(), image=None):
        words = ANSWER.split(" ")
        for n in range(1, len(words) + 1):
            yield " ".join(words[:n])


def page_words_hit(pdf: Path, page: int, words: list[str]) -> int:
    """How many words of the page contain a question word: the boxes the viewer must draw."""
    with pymupdf.open(pdf) as doc:
        return sum(1 for word in doc[page - 1].get_text("words") for wanted in words if wanted in word[4].lower())


@pytest.fixture
def served_app(tmp_path, tiny_engine):
    from freeret_rag.config import parse_config
    from freeret_rag.ui import FreeRetApp, build_blocks, launch_options

    config = parse_config(["--data-dir", str(tmp_path / "data"), "--top-k", "5", "--rerank-k", "3",
                           "--sources", "2", "--min-relevance", "0", "--no-rerank"], {})
    app = FreeRetApp(config, engine=CitingEngine(tiny_engine))
    port = free_port()
    demo = build_blocks(app)  # as ui.launch does, in this process
    demo.launch(**{**launch_options(config, serves=app.library.serves), "server_port": port,
                   "prevent_thread_lock": True, "quiet": True})
    try:
        yield app, f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


ON_SCREEN = """const on_screen = el => { if (!el || el.offsetParent === null) return false;
    const r = el.getBoundingClientRect(); return r.width > 100 && r.left >= 0 && r.right <= window.innerWidth + 1; };"""


def viewer_state(page) -> dict:
    return page.evaluate("""() => { """ + ON_SCREEN + """ const v = document.querySelector('#fr-viewer .fr-viewer');
        const img = v && v.querySelector('.fr-page img');
        return {head: v ? v.querySelector('.fr-viewer-head').innerText : '', kind: v ? v.dataset.kind : '',
                boxes: v ? v.querySelectorAll('.fr-hl').length : 0,
                loaded: !!(img && img.complete && img.naturalWidth > 0), width: img ? img.naturalWidth : 0,
                original: v && v.querySelector('a.fr-viewer-original') ?
                          v.querySelector('a.fr-viewer-original').getAttribute('href') : null,
                visible: on_screen(v)}; }""")


def upload_and_ask(page, url: str, pdf: Path, question: str) -> None:
    """Open the app, upload `pdf` through the Library panel, ask `question`, wait for the answer."""
    page.goto(url)
    page.wait_for_selector("#fr-chat")
    page.set_input_files("#fr-upload input[type=file]", [str(pdf)])
    page.wait_for_function(f"() => document.querySelector('#fr-documents').innerText.includes({pdf.name!r})",
                           timeout=300_000)
    page.fill("#fr-question textarea", question)
    page.keyboard.press("Enter")
    page.wait_for_function("""() => [...document.querySelectorAll('#fr-chat .fr-sources-head')]
        .some(h => /answered in/.test(h.innerText))""", timeout=300_000)


def test_clicking_a_source_card_or_an_inline_picture_opens_the_cited_page(served_app, tmp_path):
    from freeret_rag.highlight import question_words

    app, url = served_app
    pdf = make_pdf(tmp_path / "garden-guide.pdf", GUIDE_PAGES)
    words = question_words(QUESTION)
    on_page = {n: page_words_hit(pdf, n, words) for n in (1, 2)}
    assert on_page[2] >= 3 and on_page[1] == 0  # the question's words are on page 2 only
    with browser_page() as page:
        upload_and_ask(page, url, pdf, QUESTION)
        # both pages are sources (2 sources, threshold 0); which number each got is the model's ranking
        cards = page.evaluate("""() => [...document.querySelectorAll('#fr-chat .fr-card')].map(c =>
            ({n: c.querySelector('.fr-num').innerText, caption: c.querySelector('figcaption').innerText}))""")
        number = {int(re.search(r"p\. (\d)", card["caption"]).group(1)): int(card["n"]) for card in cards}
        assert set(number) == {1, 2}, cards
        assert not page.evaluate("() => { " + ON_SCREEN + " return on_screen(document.querySelector('#fr-viewer')); }")

        # 1. the card of page 2: the viewer opens beside the chat on page 2, its words boxed
        page.locator("#fr-chat .fr-card a.fr-media").nth(number[2] - 1).click()
        page.wait_for_function("() => /page 2/.test((document.querySelector('#fr-viewer .fr-viewer-head') || {}).innerText)",
                               timeout=60_000)
        page.wait_for_function("() => { const i = document.querySelector('#fr-viewer .fr-page img'); "
                               "return i && i.complete && i.naturalWidth > 0; }", timeout=30_000)
        page.wait_for_function("() => { " + ON_SCREEN + " return on_screen(document.querySelector('#fr-viewer .fr-viewer')); }",
                               timeout=10_000)  # the sidebar slides in
        state = viewer_state(page)
        assert state["visible"] and state["kind"] == "pdf_page" and "garden-guide.pdf" in state["head"]
        assert state["boxes"] == on_page[2] >= 1
        assert state["width"] == 840  # full size: 420 pt at zoom 2, not the indexed thumbnail
        assert state["original"].endswith("garden-guide.pdf#page=2")
        screenshot(page, "14-citation-viewer-tiny")

        # 2. the answer's inline pictures: one after the first [1] and one after the first [2]
        inline = page.evaluate("""() => [...document.querySelectorAll('#fr-chat a.fr-inline')].map(a =>
            ({href: a.getAttribute('href'), before: a.previousElementSibling ? a.previousElementSibling.innerText : '',
              loaded: a.querySelector('img').complete && a.querySelector('img').naturalWidth > 0}))""")
        assert [i["before"] for i in inline] == ["[2]", "[1]"], inline
        # the page-1 picture (after "[n]" where n is page 1's number) opens page 1 in the viewer
        page.locator("#fr-chat a.fr-inline").nth(0 if number[1] == 2 else 1).click()
        page.wait_for_function("() => /page 1/.test(document.querySelector('#fr-viewer .fr-viewer-head').innerText)",
                               timeout=60_000)
        state = viewer_state(page)
        assert state["visible"] and state["boxes"] == on_page[1] == 0
        assert "None of the question's words" in page.inner_text("#fr-viewer")
        # and back to page 2 through its inline picture
        page.locator("#fr-chat a.fr-inline").nth(0 if number[2] == 2 else 1).click()
        page.wait_for_function("() => /page 2/.test(document.querySelector('#fr-viewer .fr-viewer-head').innerText)",
                               timeout=60_000)
        assert viewer_state(page)["boxes"] == on_page[2]
        shot = screenshot(page, "14-inline-picture")
        assert not [u for u in page.requests if "#fr-view" in u]  # the links never left the page
        # ... nor changed its address: the script caught the clicks (a followed "#fr-view?" link
        # would only change the fragment, which requests nothing)
        assert page.evaluate("() => location.href") == url
    if os.environ.get("FREERET_SCREENSHOTS", "1") != "0":  # the README's picture of part 4
        shutil.copyfile(shot, REPO_ROOT / "assets" / "screenshots" / "answer-pictures.png")


def test_the_real_app_and_model_open_the_cited_page_beside_the_chat(fluent_vlm_dir, tmp_path):
    """`python app.py` with the fluent 135M VLM: upload, a real answer, click page 1's card."""
    from freeret_rag.highlight import question_words

    pdf = make_pdf(tmp_path / "garden-guide.pdf", GUIDE_PAGES)
    question = "Which beetles eat aphids? Cite the source."
    expected = page_words_hit(pdf, 1, question_words(question))
    assert expected == 3  # "beetles", "eat", "aphids" ("cite", "source" are stopwords)
    flags = ["--top-k", "5", "--rerank-k", "3", "--sources", "2", "--max-answer-tokens", "60", "--min-relevance", "0"]
    with model_app(fluent_vlm_dir, tmp_path / "data", flags, "app-viewer14.log") as server, browser_page() as page:
        upload_and_ask(page, server.url, pdf, question)
        captions = page.locator("#fr-chat .fr-card figcaption").all_inner_texts()
        first = next(n for n, caption in enumerate(captions) if "p. 1" in caption)
        page.locator("#fr-chat .fr-card a.fr-view").nth(first).click()
        page.wait_for_function("() => /page 1/.test((document.querySelector('#fr-viewer .fr-viewer-head') || {}).innerText)",
                               timeout=60_000)
        page.wait_for_function("() => { " + ON_SCREEN + " const i = document.querySelector('#fr-viewer .fr-page img');"
                               " return on_screen(document.querySelector('#fr-viewer .fr-viewer')) && i && i.complete"
                               " && i.naturalWidth > 0; }", timeout=30_000)
        state = viewer_state(page)
        assert state["visible"] and state["boxes"] == expected >= 1 and "garden-guide.pdf" in state["head"]
        page.wait_for_timeout(300)
        shot = screenshot(page, "14-citation-viewer")
    if os.environ.get("FREERET_SCREENSHOTS", "1") != "0":
        target = REPO_ROOT / "assets" / "screenshots" / "citation-viewer.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, target)


def test_a_video_segment_and_a_text_chunk_open_in_the_viewer(served_app, tmp_path):
    """The viewer in the page for the other kinds: a link like the cards' (added to the page) opens
    a video segment, which loads at the segment's start, and a text chunk among its neighbours."""
    from ui_harness import shared_samples

    from freeret_rag.ui_viewer import view_href

    app, url = served_app
    notes = tmp_path / "notes.txt"
    notes.write_text("".join(f"Week {n}: the pond pump is checked and the roses are pruned. " * 5 for n in range(10)))
    from dataclasses import replace

    app.library.media_settings = replace(app.library.media_settings, video_segment_s=3.0)  # 9 s: 3 segments
    for _ in app.ingest([str(shared_samples() / "nature-scenes.mp4"), str(notes)]):
        pass
    docs = {doc.source: doc for doc in app.documents()}
    segment = [it for it in app.library.items(docs["nature-scenes.mp4"].doc_id) if it.kind == "video_segment"][-1]
    chunk = [it for it in app.library.items(docs["notes.txt"].doc_id) if it.kind == "text"][1]
    with browser_page() as page:
        page.goto(url)
        page.wait_for_selector("#fr-chat")

        def open_link(href: str) -> None:
            page.evaluate("""href => { const a = document.createElement('a'); a.href = href; a.textContent = 'open';
                a.id = 'probe'; document.querySelector('#fr-chat').appendChild(a); }""", href)
            page.click("#probe")
            page.evaluate("() => document.querySelector('#probe').remove()")

        open_link(view_href(1, segment, "pond"))
        page.wait_for_function("() => { const v = document.querySelector('#fr-viewer video'); "
                               "return v && v.readyState >= 1; }", timeout=60_000)
        position = page.evaluate("() => document.querySelector('#fr-viewer video').currentTime")
        caption = page.inner_text("#fr-viewer .fr-viewer-caption")
        start, end = (f"{int(t) // 60}:{int(t) % 60:02d}" for t in (segment.t_start, segment.t_end))
        assert segment.t_start >= 5 and caption == f"{start}–{end}" and abs(position - segment.t_start) < 0.6
        assert page.locator("#fr-viewer .fr-timeline > div").count() == 1
        page.wait_for_function("() => { " + ON_SCREEN + " return on_screen(document.querySelector('#fr-viewer .fr-viewer')); }",
                               timeout=10_000)
        screenshot(page, "14-viewer-video")

        open_link(view_href(2, chunk, "When is the pump checked?"))
        page.wait_for_selector("#fr-viewer .fr-viewer-text", timeout=60_000)
        marks = page.locator("#fr-viewer .fr-viewer-text mark").all_inner_texts()
        shown = page.inner_text("#fr-viewer .fr-viewer-text")
        assert {m.lower() for m in marks} == {"pump", "checked"}
        assert len(marks) == shown.lower().count("pump") + shown.lower().count("checked")
        assert chunk.text.strip()[:30] in page.inner_text("#fr-viewer .fr-chunk")
        screenshot(page, "14-viewer-text")
