"""The app's HTML builders (freeret_rag.ui_render): pure functions, checked against hand-written HTML.

No model and no library: items and hits are built here. Expected strings are written out by hand
from what a reader should see (page numbers, escaped file names, score rows), not produced by the
functions under test.
"""

from __future__ import annotations

import html as html_module
import time
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import quote

from freeret_rag.chat import EMPTY_ANSWER, ChatEvent
from freeret_rag.items import Answer, Hit, Item
from freeret_rag.ui_render import (NOT_GROUNDED, STOPPED, FileStatus, answer_markdown, chat_messages,
                                   document_choices, document_rows, human_size, is_app_html, library_summary,
                                   mark_citations, model_info, reindex_notice, render_progress, render_sources,
                                   source_card, sources_data)

EVIL = "<script>alert(1)</script>.pdf"


def served(path: Path) -> str:
    """The Gradio file URL of `path`, spelled out by hand."""
    return "gradio_api/file=" + quote(str(path.resolve()), safe="/")


def test_a_pdf_page_card_says_p_3_and_escapes_the_file_name(tmp_path):
    page = Item("pdf_page", text="Section 3: byte order", item_id="d:pdf_page:3", doc_id="d", source=EVIL, page=3)
    html = source_card(1, Hit(page, dense_score=0.25))
    assert "<script>" not in html
    assert ("<figcaption><span class=\"fr-num\">1</span>&lt;script&gt;alert(1)&lt;/script&gt;.pdf"
            " <span class=fr-where>· p. 3</span> <span class=\"fr-where\">· page</span></figcaption>") in html
    assert "<tr><td>dense cosine</td><td>0.250</td></tr>" in html
    # with the original file known, the name links to that page of it
    original = tmp_path / "spec.pdf"
    linked = source_card(1, Hit(page), original=str(original))
    assert f'<a href="{served(original)}#page=3" target="_blank" rel="noopener">&lt;script&gt;' in linked


def test_a_text_card_exactly():
    chunk = Item("text", text="Water <b>daily</b> & weed", item_id="d:text:1", doc_id="d", source="notes.txt",
                 chunk=1)
    expected = ('<figure class="fr-card fr-cited" data-source="2">'
                '<div class="fr-excerpt">Water &lt;b&gt;daily&lt;/b&gt; &amp; weed</div>'
                '<figcaption><span class="fr-num">2</span>notes.txt <span class=fr-where>· part 2</span>'
                ' <span class="fr-where">· text</span></figcaption>'
                '<a class="fr-view" href="#fr-view?n=2&amp;doc=d&amp;item=d%3Atext%3A1&amp;q=" '
                'title="Open beside the chat">Open in the viewer</a>'
                '<details><summary>Scores</summary><table>'
                '<tr><td>lexical BM25</td><td>2.500</td></tr><tr><td>fused (RRF)</td><td>0.033</td></tr>'
                '</table></details></figure>')
    assert source_card(2, Hit(chunk, lexical_score=2.5, fused_score=1 / 30), cited=True) == expected


def test_a_long_excerpt_is_cut_at_260_characters():
    chunk = Item("text", text="a" * 300, item_id="d:text:0", doc_id="d", source="long.txt", chunk=0)
    assert f'<div class="fr-excerpt">{"a" * 260}</div>' in source_card(1, Hit(chunk))


def test_a_video_segment_plays_its_span_with_the_thumbnail_as_poster(tmp_path):
    video, thumb = tmp_path / "clip.mp4", tmp_path / "seg0001_thumb.jpg"
    segment = Item("video_segment", images=(str(tmp_path / "f0.jpg"),), item_id="v:video_segment:1", doc_id="v",
                   source="clip.mp4", t_start=3.0, t_end=6.5, thumbnail=str(thumb))
    html = source_card(1, Hit(segment, rerank_score=0.9), original=str(video))
    assert (f'<video class="fr-video" controls preload="metadata" poster="{served(thumb)}" '
            f'src="{served(video)}#t=3,6.5"></video>') in html
    assert "<span class=fr-where>· 0:03–0:06</span>" in html and "<td>rerank p(match)</td><td>0.900</td>" in html
    # without the original file: the thumbnail, opening the segment in the citation viewer
    html = source_card(1, Hit(segment))
    assert ('<a class="fr-media" href="#fr-view?n=1&amp;doc=v&amp;item=v%3Avideo_segment%3A1&amp;q=" '
            'title="Open in the viewer">'
            f'<img class="fr-thumb" alt="clip.mp4 (0:03-0:06)" src="{served(thumb)}"></a>') in html


def test_sources_block_numbers_cards_marks_cited_ones_and_escapes_the_query():
    hits = [Hit(Item("text", text=f"t{n}", item_id=f"d:text:{n}", doc_id="d", source="n.txt", chunk=n))
            for n in range(3)]
    html = render_sources(hits, {}, cited=[3], query="<i>beetles</i>", note="answered in 1.0 s")
    assert html.startswith('<div class="fr-sources"><div class="fr-sources-head">'
                           'Sources · searched for “&lt;i&gt;beetles&lt;/i&gt;” · answered in 1.0 s</div>')
    assert [html.count(f'data-source="{n}"') for n in (1, 2, 3)] == [1, 1, 1]
    assert html.count("fr-cited") == 1 and 'fr-card fr-cited" data-source="3"' in html
    assert render_sources([], {}) == ""


def test_mark_citations_only_marks_numbers_of_real_sources():
    assert mark_citations("see [1] and [2, 3] not [9] or [1, 9]", 3) == (
        'see <span class="fr-cite">&#91;1&#93;</span> and <span class="fr-cite">&#91;2, 3&#93;</span> '
        'not &#91;9&#93; or &#91;1, 9&#93;')


def commonmark(text: str) -> str:
    """What a Markdown renderer (CommonMark, as the chat's) makes of a message: another route than ours."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark").render(text)


SMALL_MODEL_TEXT = ("Canberra is the capital of Australia [1].\n\n# Sources\n"
                    "[1] https://en.wikipedia.org/wiki/Canberra\n[2]: https://www.example.com/capital\n"
                    "See [the atlas](https://atlas.example.org) and ![map](https://maps.example.org/au.png) "
                    "or www.gov.au <b>now</b>\n```python\n#\n##\n###")


def test_model_markdown_is_inert_and_an_unclosed_fence_is_closed():
    html = commonmark(answer_markdown(SMALL_MODEL_TEXT, 2, "▍"))
    assert "<a " not in html and "<img" not in html and "<h1" not in html and "<b>" not in html
    assert "&lt;b&gt;now&lt;/b&gt;" in html  # shown as written
    assert 'class="fr-cite"' not in html  # [1] is the model's invented web reference, not source 1
    # the fence is closed inside the answer: the code block ends with the answer
    assert html.count("<pre><code") == 1 and html.rstrip().endswith("###▍\n</code></pre>")
    # what a reader sees of the links: their words and addresses as plain text
    shown = html_module.unescape(html)
    assert "See [the atlas](https://atlas.example.org) and ![map](https://maps.example.org/au.png) or www.gov.au" \
        in shown and "[1] https://en.wikipedia.org/wiki/Canberra" in shown and "# Sources" in shown


def test_only_numbers_of_shown_sources_are_citations():
    html = commonmark(answer_markdown("Ladybirds eat aphids [1], see [3] and `[2]`; [2] agrees.", 2))
    assert html == ('<p>Ladybirds eat aphids <span class="fr-cite">[1]</span>, see [3] and <code>[2]</code>; '
                    '<span class="fr-cite">[2]</span> agrees.</p>\n')


def test_sources_block_survives_whatever_the_texts_in_it_hold():
    card = Item("text", text="Intro\n\n    indented code\n\n```\n# heading", item_id="d:text:0", doc_id="d",
                source="notes.txt", chunk=0)
    html = commonmark(render_sources([Hit(card)], {}, query="q\n\nx"))
    assert "<pre>" not in html and "<h1" not in html and "<code>" not in html
    assert html.startswith('<div class="fr-sources">') and html.rstrip().endswith("</div>")


def test_chat_messages_for_each_event_kind():
    hit = Hit(Item("text", text="Ladybirds eat aphids.", item_id="d:text:0", doc_id="d", source="g.txt", chunk=0))
    assert chat_messages(ChatEvent("error", "no <model>")) == [
        '<span class="fr-nothing"><b>Cannot answer:</b> no &lt;model&gt;</span>']
    assert chat_messages(ChatEvent("nothing", "Nothing here.")) == ['<span class="fr-nothing">Nothing here.</span>']
    assert chat_messages(ChatEvent("status", "Searching ...")) == ['<span class="fr-status">Searching ...</span>']
    assert chat_messages(ChatEvent("sources", sources=[hit])) is None
    answer, sources = chat_messages(ChatEvent("token", "They eat aphids [1", sources=[hit]))
    assert answer == "They eat aphids &#91;1▍" and sources.startswith('<div class="fr-sources">')
    answer, sources = chat_messages(ChatEvent("answer", "Aphids [1].", sources=[hit],
                                              answer=Answer("Aphids [1].", [hit], [1])), note="answered in 2.0 s")
    assert answer == 'Aphids <span class="fr-cite">&#91;1&#93;</span>.'
    assert "· answered in 2.0 s</div>" in sources and 'fr-card fr-cited" data-source="1"' in sources
    assert NOT_GROUNDED not in sources and STOPPED not in sources
    answer, sources = chat_messages(ChatEvent("answer", "Canberra.", sources=[hit], answer=Answer("Canberra.", [hit], [])))
    assert answer == "Canberra." and sources.startswith(
        '<div class="fr-sources"><div class="fr-flag">' + NOT_GROUNDED.replace("'", "&#x27;") + "</div>")
    assert "fr-cited" not in sources
    answer, sources = chat_messages(ChatEvent("stopped", "Aphids [1] and", sources=[hit]))
    assert answer == 'Aphids <span class="fr-cite">&#91;1&#93;</span> and'
    assert f'<div class="fr-flag">{STOPPED}</div>' in sources and NOT_GROUNDED not in sources
    assert chat_messages(ChatEvent("stopped")) == [
        '<span class="fr-nothing fr-stopped">Stopped before the answer was written.</span>']
    empty = chat_messages(ChatEvent("answer", "  ", sources=[hit]))
    assert empty[0] == EMPTY_ANSWER and empty[1].startswith('<div class="fr-sources">')
    # the app's own messages are told from model text (which is escaped) by their first tag
    assert [is_app_html(m) for m in (sources, empty[0], answer, "<div class=\"fr-x\">")] == [True, False, False, True]


def test_sources_as_data(tmp_path):
    thumb = tmp_path / "t.png"
    page = Item("pdf_page", text="p", item_id="r:pdf_page:3", doc_id="r", source="report.pdf", page=3,
                thumbnail=str(thumb))
    clip = Item("video_segment", item_id="v:video_segment:1", doc_id="v", source="v.mp4", t_start=10.0, t_end=20.0)
    rows = sources_data([Hit(page, dense_score=0.5, rerank_score=0.9), Hit(clip, lexical_score=2.0)],
                        {"r": str(tmp_path / "report.pdf")}, cited=[2])
    assert rows[0] == {"number": 1, "cited": False, "file": "report.pdf", "kind": "pdf_page", "page": 3,
                       "t_start": None, "t_end": None, "chunk": None, "doc_id": "r", "item_id": "r:pdf_page:3",
                       "label": page.label,
                       "scores": {"rerank": 0.9, "dense": 0.5, "lexical": None, "fused": None, "final": None},
                       "asset_url": served(thumb), "thumbnail_url": served(thumb),
                       "file_url": served(tmp_path / "report.pdf")}
    assert (rows[1]["cited"], rows[1]["t_start"], rows[1]["t_end"], rows[1]["asset_url"], rows[1]["file_url"]) == (
        True, 10.0, 20.0, None, None)


def test_progress_rows():
    html = render_progress([FileStatus("a<b>.pdf", "indexing", done=1, total=4)])
    assert html == ('<div class="fr-progress"><div class="fr-file" data-state="indexing">'
                    '<span class="fr-name" title="a&lt;b&gt;.pdf">a&lt;b&gt;.pdf</span>'
                    '<span class="fr-state">1/4</span>'
                    '<div class="fr-bar"><div style="width:25%"></div></div></div></div>')
    html = render_progress([FileStatus("b.png", "done", items=1),
                            FileStatus("c.mp4", "done", items=3, message="2 left out"),
                            FileStatus("d.xyz", "skipped", message="unsupported file type (.xyz)"),
                            FileStatus("e.txt")])
    assert '<span class="fr-state">done · 1 item</span>' in html
    assert '<span class="fr-state">done · 3 items · 2 left out</span>' in html
    assert '<span class="fr-state fr-failed">unsupported file type (.xyz)</span>' in html
    assert '<div class="fr-file" data-state="waiting">' in html and '<span class="fr-state">waiting</span>' in html
    assert render_progress([]) == ""


def test_sizes_for_people():
    assert [human_size(n) for n in (0, 512, 1023, 1024, 10 * 1024, 200 * 1024**2, 5 * 1024**3, 4096 * 1024**3)] == [
        "0 B", "512 B", "1023 B", "1.0 KB", "10.0 KB", "200.0 MB", "5.0 GB", "4096.0 GB"]


def test_document_table_dropdown_and_summary():
    added = time.mktime((2024, 5, 6, 7, 8, 0, 0, 0, -1))  # local time, as the table shows it
    docs = [SimpleNamespace(doc_id="x1", source="guide.pdf", file_type="pdf", items=2, added_at=added),
            SimpleNamespace(doc_id="x2", source="song.ogg", file_type="audio", items=1, added_at=added)]
    assert document_rows(docs) == [["guide.pdf", "PDF", 2, "2024-05-06 07:08", ""],
                                   ["song.ogg", "audio", 1, "2024-05-06 07:08", ""]]
    assert document_choices(docs) == [("guide.pdf (PDF, 2 items)", "x1"), ("song.ogg (audio, 1 items)", "x2")]
    assert library_summary(docs) == '<div class="fr-panel-note">2 documents · 3 searchable items</div>'
    assert library_summary(docs[1:]) == '<div class="fr-panel-note">1 document · 1 searchable item</div>'
    assert "No documents yet" in library_summary([])
    # Read-only shared documents (a shared library, the demo's samples) are said to be searched too.
    assert library_summary([], shared=4) == ('<div class="fr-panel-note">No documents of yours yet: the 4 shared '
                                             'documents below are searched (read-only). Add PDFs, images or videos '
                                             'above.</div>')
    assert "the 1 shared document below is searched" in library_summary([], shared=1)
    assert library_summary(docs[1:], shared=1) == ('<div class="fr-panel-note">1 document · 1 searchable item · '
                                                   'and 1 shared document (read-only)</div>')


def test_reindex_notice_and_model_info():
    others = [SimpleNamespace(model_id="org/<vlm>", count=7), SimpleNamespace(model_id="org/<vlm>", count=7)]
    notice = reindex_notice(others, "org/new")
    assert "(org/&lt;vlm&gt; (7 items))" in notice and "re-index it with org/new" in notice
    info = model_info("org/lm", {"text"}, "cpu · float32", "v3")
    assert info.split("\n\n")[:4] == ["**Model:** `org/lm`", "**Runs on:** cpu · float32",
                                      "**Reads:** text · **cannot read:** images, video",
                                      "**Index:** prompt version `v3`"]
    assert "reads text only" in info
    assert model_info("org/vlm", {"video", "text", "image"}, "cuda:0 · bfloat16", "v3").split("\n\n")[2] == (
        "**Reads:** text, images, video")


def test_source_card_shows_the_models_words_escaped_and_the_final_score():
    from freeret_rag.items import Hit, Item
    from freeret_rag.ui_render import source_card

    words = tuple(f"w{n}" for n in range(14)) + ("<b>",)
    card = source_card(1, Hit(Item("image", source="a.jpg", words=words), final_score=0.5))
    assert "model's words" in card and "w0 w1 w2 w3 w4 w5 w6 w7 w8 w9 w10 w11<" in card  # the first 12 only
    assert "w12" not in card and "<b>" not in card.split("fr-words")[1]
    assert "<td>final (blend)</td><td>0.500</td>" in card


def test_the_header_says_where_the_model_runs(make_app, tmp_path):
    """On one's own machine "on this machine"; with logins or a public demo, the server's."""
    from freeret_rag.ui_render import header

    assert "on this machine." in header("T", "") and "on this server" not in header("T", "")
    assert "on this server." in header("T", "", shared_server=True)
    assert "on this machine" not in header("T", "", shared_server=True)
    # the app's page says so: alone on one's machine, and with logins (--auth: many users, one server)
    from freeret_rag.ui import build_blocks

    def shown(app) -> str:
        config = build_blocks(app).get_config_file()
        return next(c["props"]["value"] for c in config["components"] if c["props"].get("elem_id") == "fr-header")

    assert "on this machine." in shown(make_app())
    assert "on this server." in shown(make_app("--auth", "ann:pw", data_dir=tmp_path / "shared-server"))
