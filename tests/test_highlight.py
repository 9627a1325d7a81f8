"""highlight.py against real PDFs: the expected boxes come from the page's own words, read with
PyMuPDF's `get_text("words")` (not from `search_for`, which highlight.py uses)."""

from __future__ import annotations

from pathlib import Path

import pymupdf
import pytest
from PIL import Image

from freeret_rag.highlight import (mark_words, overlap, page_boxes, page_picture, question_words,
                                   text_window)

SAMPLES = Path(__file__).resolve().parent / "data" / "samples"
PAGES = ["Garden guide. Ladybirds are small red beetles with black spots. They eat aphids and protect roses.",
         "Watering plan. Water the yellow flowers every morning in summer; the garden pond needs a pump check."]


@pytest.fixture
def guide(tmp_path) -> Path:
    doc = pymupdf.open()
    for text in PAGES:
        page = doc.new_page(width=420, height=300)
        page.insert_textbox(pymupdf.Rect(30, 30, 390, 200), text, fontsize=13)
    path = tmp_path / "guide.pdf"
    doc.save(path)
    doc.close()
    return path


def words_on_page(pdf: Path, page: int) -> list[tuple[str, tuple[float, float, float, float]]]:
    """(word, its box as fractions of the page) for every word of the page, by get_text("words")."""
    with pymupdf.open(pdf) as doc:
        sheet = doc[page - 1]
        w, h = sheet.rect.width, sheet.rect.height
        return [(word[4], (word[0] / w, word[1] / h, word[2] / w, word[3] / h)) for word in sheet.get_text("words")]


def test_question_words_drop_stopwords_short_words_and_repeats():
    assert question_words("Which beetles eat the aphids? Do beetles eat 2 roses, a B?") == \
        ["beetles", "eat", "aphids", "roses"]
    assert question_words("What is it?") == []


def expected_boxes(pdf: Path, page: int, words: list[str]) -> list[tuple[float, ...]]:
    """The boxes of the page's words that contain a question word (case-insensitive)."""
    return sorted(box for text, box in words_on_page(pdf, page)
                  for word in words if word in text.lower())


def close(a: tuple[float, ...], b: tuple[float, ...], tolerance: float = 0.01) -> bool:
    return all(abs(x - y) <= tolerance for x, y in zip(a, b))


def test_boxes_are_where_the_page_says_its_words_are(guide):
    words = question_words("When should the yellow flowers and the pond be watered?")
    assert words == ["yellow", "flowers", "pond", "watered"]
    found = sorted((b.x0, b.y0, b.x1, b.y1) for b in page_boxes(guide, 2, words))
    expected = expected_boxes(guide, 2, words)
    # "yellow", "flowers", "pond" are on page 2 ("watered" is not: the page says "Water", "Watering")
    assert len(expected) == 3 and len(found) == 3
    for box, want in zip(found, expected):  # search_for's box of a whole word is the word's box
        assert close(box, want)
    assert page_boxes(guide, 1, words) == []  # page 1 has none of them
    assert page_boxes(guide, 3, words) == []  # no such page


def test_boxes_on_a_real_specification_page():
    pdf = SAMPLES / "shared-mime-info-spec.pdf"
    words = ["glob", "magic"]
    with pymupdf.open(pdf) as doc:  # a page holding both words, found by reading the pages' words
        page = next(number for number in range(1, doc.page_count + 1)
                    if {"glob", "magic"} <= {w[4].lower().strip(".,:;()\"'") for w in doc[number - 1].get_text("words")})
    found = page_boxes(pdf, page, words)
    expected = expected_boxes(pdf, page, words)
    assert len(found) >= 2 and {b.word for b in found} == {"glob", "magic"}
    # every box is the box of a page word that contains its word
    for box in found:
        assert any(close((box.x0, box.y0, box.x1, box.y1), want, 0.02) or
                   (want[0] - 0.01 <= box.x0 and box.x1 <= want[2] + 0.01 and abs(box.y0 - want[1]) < 0.02)
                   for want in expected), box
    assert len(found) >= len(expected) // 2


def test_page_picture_is_the_page_at_full_size_and_made_once(guide, tmp_path):
    folder = tmp_path / "pictures"
    picture = page_picture(guide, 2, folder, zoom=2.0)
    with Image.open(picture) as image:
        assert image.size == (840, 600)  # 420 x 300 pt at zoom 2
    made = picture.stat().st_mtime_ns
    assert page_picture(guide, 2, folder, zoom=2.0) == picture and picture.stat().st_mtime_ns == made
    assert page_picture(guide, 1, folder, zoom=2.0) != picture
    with pytest.raises(ValueError):
        page_picture(guide, 9, folder)
    # the file changes (its page 2 is now wider): the page is rendered anew, never the old picture
    doc = pymupdf.open()
    doc.new_page(width=420, height=300)
    doc.new_page(width=500, height=300)
    doc.save(tmp_path / "changed.pdf")
    doc.close()
    (tmp_path / "changed.pdf").replace(guide)
    again = page_picture(guide, 2, folder, zoom=2.0)
    with Image.open(again) as image:
        assert again != picture and image.size == (1000, 600)


def test_mark_words_escapes_and_marks_inside_longer_words():
    assert mark_words("Aphids <b> & aphid", ["aphid"]) == \
        "<mark>Aphid</mark>s &lt;b&gt; &amp; <mark>aphid</mark>"
    assert mark_words("x < y", []) == "x &lt; y"


def test_text_window_shows_overlapping_chunks_once_with_marks():
    text = "Roses need sun. Aphids eat roses. Ladybirds eat aphids. Water daily."
    chunks = [text[0:33], text[24:56], text[46:]]  # overlapping, as text.chunk_text makes them
    assert overlap(chunks[0], chunks[1]) == 9
    window = text_window(chunks, 1, ["aphids"])
    from html import unescape
    import re

    plain = lambda part: unescape(re.sub("<[^>]+>", "", part))  # noqa: E731
    assert plain(window.before) + plain(window.chunk) + plain(window.after) == text
    assert window.marks == 2 and window.chunk.count("<mark>") == 1
    alone = text_window(chunks, 0, ["aphids"], radius=0)
    assert alone.before == "" and alone.after == "" and plain(alone.chunk) == chunks[0]
    with pytest.raises(IndexError):
        text_window(chunks, 3, [])
