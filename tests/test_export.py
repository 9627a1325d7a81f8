"""The conversation export (freeret_rag/export.py): a made-up turn list and its Markdown, written by hand."""

from __future__ import annotations

import os
import time

import pytest
from datetime import datetime, timezone

from freeret_rag.export import (conversation_markdown, export_turn, remove_export, source_place, sweep_exports,
                                write_export)

NOW = datetime(2026, 12, 5, 7, 30, tzinfo=timezone.utc)


def source(number, file, kind, cited=False, **where):
    """A source dict shaped like /chat's (ui_render.sources_data)."""
    row = {"number": number, "cited": cited, "file": file, "kind": kind, "page": None, "t_start": None,
           "t_end": None, "chunk": None, "doc_id": "d", "item_id": "i", "label": file, "scores": {},
           "asset_url": None, "thumbnail_url": None, "file_url": None}
    return row | where


TURNS = [
    {"question": "Which beetles eat aphids?",
     "answer": "Ladybirds eat aphids [1], as the photo shows [3].",
     "sources": [source(1, "garden-guide.pdf", "pdf_page", cited=True, page=3,
                        asset_url="gradio_api/file=/d/assets/p3.png", file_url="gradio_api/file=/d/files/g.pdf"),
                 source(2, "clip.mp4", "video_segment", t_start=42.0, t_end=70.0),
                 source(3, "photo.jpg", "image", cited=True, asset_url="gradio_api/file=/d/files/photo.jpg"),
                 source(4, "notes_v2.txt", "text", chunk=1)]},
    {"question": "# And roses?\nsecond line", "answer": "", "sources": []},
]

EXPECTED = """\
# FreeRet RAG conversation

- Date: 2026-12-05 07:30 UTC
- Model: `tiny/qwen2-vl`
- Library: my\\_papers

## Question 1

> Which beetles eat aphids?

Ladybirds eat aphids [1], as the photo shows [3].

**Sources**

- \\[1\\] garden-guide.pdf, page 3 (cited)
- \\[2\\] clip.mp4, 0:42-1:10
- \\[3\\] photo.jpg (cited)
- \\[4\\] notes\\_v2.txt, part 2

## Question 2

> \\# And roses?
> second line

(no answer)
"""


def test_a_conversation_as_markdown_written_by_hand():
    assert conversation_markdown(TURNS, model="tiny/qwen2-vl", library="my_papers", now=NOW) == EXPECTED


def test_links_to_files_and_page_images_with_the_apps_address():
    text = conversation_markdown(TURNS[:1], now=NOW, base_url="http://127.0.0.1:7860/app/")
    assert ("- \\[1\\] garden-guide.pdf, page 3 (cited)"
            " · [file](<http://127.0.0.1:7860/app/gradio_api/file=/d/files/g.pdf#page=3>)"
            " · [page image](<http://127.0.0.1:7860/app/gradio_api/file=/d/assets/p3.png>)\n") in text
    assert "- \\[3\\] photo.jpg (cited) · [picture](<http://127.0.0.1:7860/app/gradio_api/file=/d/files/photo.jpg>)\n" \
        in text
    assert "- \\[2\\] clip.mp4, 0:42-1:10\n" in text  # no URL, no link
    assert "Model" not in text and "Library" not in text


def test_places_of_every_kind():
    assert source_place(source(1, "a.pdf", "pdf_page", page=12)) == "a.pdf, page 12"
    assert source_place(source(1, "v.mp4", "video_segment", t_start=3725.0, t_end=3790.5)) == "v.mp4, 1:02:05-1:03:10"
    assert source_place(source(1, "v.mp4", "video_segment", t_start=5.0)) == "v.mp4, 0:05"
    assert source_place(source(1, "n.md", "text", chunk=0)) == "n.md, part 1"
    assert source_place(source(1, "p.png", "image")) == "p.png"


def test_an_empty_conversation_and_a_question_with_an_image():
    assert conversation_markdown([], now=NOW) == "# FreeRet RAG conversation\n\n- Date: 2026-12-05 07:30 UTC\n\n" \
                                                 "(No questions asked yet.)\n"
    turn = export_turn("", "A red beetle [1].", [source(1, "LadyBird.jpg", "image", cited=True)],
                       image="/tmp/gradio/abc/upload.jpg")
    assert turn["image"] == "upload.jpg"
    assert conversation_markdown([turn], now=NOW).endswith(
        "## Question 1\n\n> (an image)\n>\n> (with the image upload.jpg)\n\nA red beetle [1].\n\n**Sources**\n\n"
        "- \\[1\\] LadyBird.jpg (cited)\n")


def test_export_files_per_session_replaced_removed_and_swept(tmp_path):
    first = write_export("one", tmp_path, "sess-1", now=NOW)
    assert first == tmp_path / "sess-1" / "chat-2026-12-05-0730.md" and first.read_text() == "one"
    second = write_export("two", tmp_path, "sess-1", now=datetime(2026, 12, 5, 8, 0, tzinfo=timezone.utc))
    assert not first.exists() and second.read_text() == "two"  # the session's earlier export goes
    other = write_export("x", tmp_path, "../../etc", now=NOW)  # a session name never leaves the folder
    assert other.parent == tmp_path / "etc"
    old = time.time() - 7200
    os.utime(other.parent, (old, old))
    assert sweep_exports(tmp_path) == 1 and not other.parent.exists() and second.exists()
    remove_export(tmp_path, "sess-1")
    assert list(tmp_path.iterdir()) == []


def test_an_export_of_sources_with_places_that_are_not_numbers_does_not_fail():
    for bad in ({"page": "x"}, {"t_start": "soon"}, {"number": "one"}, {"page": 1e400}):
        text = conversation_markdown([{"question": "Where?", "answer": "There.",
                                       "sources": [{"file": "a.pdf", **bad}]}], now=NOW)
        assert "- \\[1\\] a.pdf\n" in text, bad  # the file alone: the place that is not a number left out
    text = conversation_markdown([{"question": "Q", "answer": "A", "sources": [
        {"file": "b.mp4", "t_start": "42", "t_end": "nan", "number": "2"}]}], now=NOW)
    assert "- \\[2\\] b.mp4, 0:42\n" in text  # numbers as text are read; a NaN end is left out
