"""The citation viewer without a browser: `ui_viewer.view_source` on a real Library (tiny Qwen2-VL)
for each kind of source, the request box's handler, another library's and deleted documents, and
the answer's inline pictures (placed after the first citation, kept out of the model's history).

Expected values come from the files themselves: page words read with PyMuPDF's get_text("words"),
the picture's size from PIL, the segment's times from the stored items."""

from __future__ import annotations

import html
import re
from pathlib import Path
from urllib.parse import unquote

import pymupdf
from PIL import Image

from freeret_rag import ui_viewer
from freeret_rag.items import Hit, Item

QUESTION = "When are the yellow flowers watered? Is the pond pump checked?"


def ingest(app, *paths) -> dict:
    for _ in app.ingest([str(p) for p in paths]):
        pass
    return {doc.source: doc for doc in app.documents()}


def served_path(url: str) -> Path:
    return Path(unquote(url.split("gradio_api/file=", 1)[1].split("#", 1)[0]))


def hits_on_page(pdf: Path, page: int, words: list[str]) -> int:
    with pymupdf.open(pdf) as doc:
        return sum(1 for w in doc[page - 1].get_text("words") for wanted in words if wanted in w[4].lower())


def request(number: int, item: Item, query: str = QUESTION) -> str:
    return ui_viewer.view_href(number, item, query)


def test_a_pdf_page_at_full_size_with_boxes_over_the_question_words(make_app, media):
    app = make_app()
    docs = ingest(app, media["pdf"])
    doc = docs["garden-guide.pdf"]
    page2 = next(it for it in app.library.items(doc.doc_id) if it.page == 2)
    shown = ui_viewer.view_source(app.library, request(1, page2))
    assert '<div class="fr-viewer-head"><span class="fr-num">1</span>garden-guide.pdf · page 2</div>' in shown
    words = ["yellow", "flowers", "watered", "pond", "pump", "checked"]
    assert shown.count('class="fr-hl"') == hits_on_page(Path(doc.path), 2, words) == 4
    picture = served_path(re.search(r'<div class="fr-page"><img [^>]*src="([^"]+)"', shown).group(1))
    assert picture.is_relative_to(app.library.assets / doc.doc_id)  # served only while the document is listed
    assert app.library.serves(picture)
    with pymupdf.open(doc.path) as pdf, Image.open(picture) as image:
        assert image.size == (round(pdf[1].rect.width * 2), round(pdf[1].rect.height * 2))
    # each box is inside the page and on a line of page 2's words
    with pymupdf.open(doc.path) as pdf:
        tops = {round(w[1] / pdf[1].rect.height, 2) for w in pdf[1].get_text("words")}
    for top in re.findall(r'class="fr-hl"[^>]*top:([\d.]+)%', shown):
        assert any(abs(float(top) / 100 - t) < 0.02 for t in tops)
    link = re.search(r'<a class="fr-viewer-original" href="([^"]+)"', shown).group(1)
    assert html.unescape(link).endswith("#page=2") and served_path(html.unescape(link)) == Path(doc.path)
    assert "not on this page: watered, checked" in shown
    # page 1 has none of the words: no box, and the viewer says so
    page1 = next(it for it in app.library.items(doc.doc_id) if it.page == 1)
    other = ui_viewer.view_source(app.library, request(2, page1))
    assert "page 1" in other and "fr-hl" not in other and "None of the question's words" in other


def test_video_image_and_text_sources(make_app, media, tmp_path):
    app = make_app()
    notes = tmp_path / "notes.txt"
    notes.write_text("".join(f"Paragraph {n}: the pond pump is checked in week {n}. " * 6 for n in range(12)))
    docs = ingest(app, media["video"], media["image"], notes)
    segments = [it for it in app.library.items(docs["nature-scenes.mp4"].doc_id) if it.kind == "video_segment"]
    segment = segments[-1]
    shown = ui_viewer.view_source(app.library, request(1, segment))
    src = html.unescape(re.search(r'<video [^>]*src="([^"]+)"', shown).group(1))
    assert src.endswith(f"#t={segment.t_start:g},{segment.t_end:g}") and served_path(src).name == "nature-scenes.mp4"
    start, end = (f"{int(t) // 60}:{int(t) % 60:02d}" for t in (segment.t_start, segment.t_end))
    assert f'<div class="fr-viewer-caption">{start}–{end}</div>' in shown
    duration = max(it.t_end for it in segments)
    left = float(re.search(r'class="fr-timeline"[^>]*><div style="left:([\d.]+)%', shown).group(1))
    assert abs(left - segment.t_start / duration * 100) < 0.01

    image = next(iter(app.library.items(docs["LadyBird.jpg"].doc_id)))
    shown = ui_viewer.view_source(app.library, request(2, image))
    full = served_path(html.unescape(re.search(r'<img class="fr-viewer-image" [^>]*src="([^"]+)"', shown).group(1)))
    with Image.open(full) as opened, Image.open(media["image"]) as original:
        assert opened.size == original.size  # the original itself, not the thumbnail

    chunks = [it for it in app.library.items(docs["notes.txt"].doc_id) if it.kind == "text"]
    assert len(chunks) >= 3
    middle = chunks[1]
    shown = ui_viewer.view_source(app.library, request(3, middle, "When is the pump checked?"))
    text = re.search(r'<div class="fr-viewer-text">(.*?)</div>', shown, re.S).group(1)
    plain = html.unescape(re.sub(r"<[^>]+>", "", text))
    assert chunks[0].text[:40] in plain and chunks[2].text[-40:] in plain  # its neighbours around it
    chunk_html = re.search(r'<span class="fr-chunk">(.*?)</span>', text, re.S).group(1)
    assert middle.text.strip()[-60:] in html.unescape(re.sub(r"<[^>]+>", "", chunk_html))
    marked = re.findall(r"<mark>(.*?)</mark>", text)
    window = plain.lower()
    assert set(m.lower() for m in marked) == {"pump", "checked"}
    assert len(marked) == window.count("pump") + window.count("checked")


def test_only_documents_of_the_given_library_and_never_a_deleted_one(make_app, media, tmp_path):
    mine = make_app()
    theirs = make_app(data_dir=tmp_path / "other-user")
    docs = ingest(theirs, media["pdf"])
    page = theirs.library.items(docs["garden-guide.pdf"].doc_id)[0]
    assert "garden-guide.pdf" in ui_viewer.view_source(theirs.library, request(1, page))
    # another user's document, asked for by its ids: not shown from my library
    assert ui_viewer.view_source(mine.library, request(1, page)) == \
        ui_viewer.message_html("This source is no longer in your library.")
    # the request box's handler answers from the requesting user's library (app.for_request)
    shown, sidebar = ui_viewer.open_source(mine, request(1, page)[len("#fr-view?"):], request=None)
    assert "no longer in your library" in shown and sidebar.open is True
    picture = theirs.library.assets / page.doc_id / "viewer"
    rendered = [p for p in picture.iterdir()]
    assert len(rendered) == 1 and theirs.library.serves(rendered[0])  # the full-size page, served
    theirs.delete(docs["garden-guide.pdf"].doc_id)
    assert not theirs.library.serves(rendered[0]) and not rendered[0].exists()
    gone = ui_viewer.view_source(theirs.library, request(1, page))
    assert "no longer in your library" in gone and "fr-page" not in gone
    assert not (theirs.library.assets / page.doc_id).exists()  # its rendered pages went with it
    assert "Click a source card" in ui_viewer.view_source(theirs.library, "")
    assert "Click a source card" in ui_viewer.view_source(theirs.library, "n=1&doc=&item=")


def test_inline_pictures_follow_the_first_citation_and_stay_out_of_the_history(tmp_path):
    from freeret_rag.chat import ChatEvent
    from freeret_rag.items import Answer
    from freeret_rag.ui import history_from_messages
    from freeret_rag.ui_render import chat_messages

    thumb = tmp_path / "page0002_thumb.jpg"
    Image.new("RGB", (8, 8)).save(thumb)
    hits = [Hit(Item("text", text="notes", item_id="t:text:0", doc_id="t", source="notes.txt", chunk=0)),
            Hit(Item("pdf_page", text="p", item_id="g:pdf_page:2", doc_id="g", source="g.pdf", page=2,
                     thumbnail=str(thumb)))]
    text = "Water daily [2] and see [1]; again [2] and [1, 2]."
    event = ChatEvent("answer", text, sources=hits, answer=Answer(text, hits, [1, 2]), query="water")
    answer, _ = chat_messages(event, {})
    # one picture, for the page (a text chunk has none), right after the first [2]
    assert answer.count('class="fr-inline"') == 1
    first = answer.index("&#91;2&#93;</span>")
    assert answer.index('<a class="fr-inline"') == first + len("&#91;2&#93;</span>")
    assert 'href="#fr-view?n=2&amp;doc=g&amp;item=g%3Apdf_page%3A2&amp;q=water"' in answer
    # the model's history holds its own words only
    history = history_from_messages([{"role": "user", "content": "When?"}, {"role": "assistant", "content": answer}])
    assert "fr-inline" not in history[1]["content"] and "img" not in history[1]["content"]
    assert re.sub(r"<[^>]+>", "", history[1]["content"]) == text


class OneDocLibrary:
    """A library of one document (what view_source asks of a library), for cases without a model."""

    def __init__(self, doc, items, assets: Path) -> None:
        self.doc, self._items, self.assets = doc, items, assets

    def document(self, doc_id):
        return self.doc if doc_id == self.doc.doc_id else None

    def items(self, doc_id):
        return list(self._items) if doc_id == self.doc.doc_id else []


def test_a_scanned_page_says_its_words_cannot_be_marked_and_a_lost_original_shows_the_stored_page(tmp_path):
    from types import SimpleNamespace

    from freeret_rag.devtools.scans import scanned_copy
    from ui_harness import GUIDE_PAGES, make_pdf

    scan = scanned_copy(make_pdf(tmp_path / "guide.pdf", GUIDE_PAGES), tmp_path / "scan.pdf", dpi=72)
    stored = tmp_path / "page0002.png"
    Image.new("RGB", (40, 30)).save(stored)
    page = Item("pdf_page", text="Watering plan. Water the yellow flowers", images=(str(stored),),
                item_id="s:pdf_page:2", doc_id="s", source="scan.pdf", page=2, no_text_layer=True, ocr=True)
    doc = SimpleNamespace(doc_id="s", source="scan.pdf", path=str(scan))
    library = OneDocLibrary(doc, [page], tmp_path / "assets")
    shown = ui_viewer.view_source(library, request(1, page, "yellow flowers"))
    assert "page 2" in shown and "fr-hl" not in shown and "scan without a text layer" in shown
    assert served_path(re.search(r'<div class="fr-page"><img [^>]*src="([^"]+)"', shown).group(1)).parent == \
        tmp_path / "assets" / "s" / "viewer"
    scan.unlink()  # the original is gone: the page as it was indexed, no link to the original
    shown = ui_viewer.view_source(library, request(1, page, "yellow flowers"))
    assert served_path(re.search(r'<div class="fr-page"><img [^>]*src="([^"]+)"', shown).group(1)) == stored
    assert "fr-viewer-original" not in shown and "original file is not kept" in shown


def test_the_viewer_opens_a_shared_librarys_document_from_that_library():
    """A source from the read-only shared library opens from it; the user's own comes first."""
    from types import SimpleNamespace

    from freeret_rag.ui_viewer import owning_library

    class Holding:
        def __init__(self, *doc_ids):
            self.doc_ids = set(doc_ids)

        def document(self, doc_id):
            return object() if doc_id in self.doc_ids else None

    own, shared, samples = Holding("mine"), Holding("common"), Holding("sample", "mine")
    view = SimpleNamespace(library=own, shared=[shared, samples])
    assert owning_library(view, {"doc": "common", "item": "x"}) is shared
    assert owning_library(view, {"doc": "sample", "item": "x"}) is samples
    assert owning_library(view, {"doc": "mine", "item": "x"}) is own  # the user's own wins
    assert owning_library(view, {"doc": "gone", "item": "x"}) is own  # the viewer then says it is gone
    assert owning_library(SimpleNamespace(library=own), {"doc": "common"}) is own  # no shared libraries
