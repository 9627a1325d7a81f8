"""Text chunks: sizes, overlap, boundaries, encodings, and refusing empty or binary files."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from freeret_rag.media import IngestError, MediaSettings, load_items
from freeret_rag.media.text import chunk_text

SENTENCES = [f"Sentence number {n} talks about {topic} in some detail." for n, topic in
             zip(range(60), ["ladybirds", "yellow flowers", "garden paths", "mime types"] * 15)]
ESSAY = "\n\n".join(" ".join(SENTENCES[i:i + 4]) for i in range(0, 60, 4))  # 15 paragraphs


def load(path: Path, assets: Path, **kwargs):
    return list(load_items(path, "doc", assets, **kwargs))


def test_chunks_are_bounded_overlapping_and_lose_nothing(write, assets: Path) -> None:
    calls: list[tuple[int, int]] = []
    items = load(write("essay.md", ESSAY.encode()), assets, progress=lambda d, t: calls.append((d, t)))
    texts = [item.text for item in items]
    assert len(items) > 3 and [item.chunk for item in items] == list(range(len(items)))
    assert items[2].item_id == "doc:text:2" and items[0].kind == "text" and items[0].images == ()
    assert calls == [(n, len(items)) for n in range(1, len(items) + 1)]
    assert all(len(text) <= 800 for text in texts)
    for previous, following in zip(texts, texts[1:]):
        assert following[:40] in previous[-200:]  # the overlap
    for sentence in SENTENCES:
        assert any(sentence in text for text in texts), sentence
    assert all(re.match(r"\w", text) for text in texts)  # never starts mid-word or on punctuation


def test_cuts_prefer_paragraphs_then_sentences() -> None:
    assert all(chunk.endswith(".") for chunk in chunk_text(ESSAY, 800, 150))
    prose = " ".join(SENTENCES)  # no paragraphs: cut after a sentence
    assert all(chunk.endswith(".") for chunk in chunk_text(prose, 300, 50)[:-1])


def test_long_word_without_spaces_is_cut_hard() -> None:
    chunks = chunk_text("x" * 2000, 800, 150)
    assert [len(chunk) for chunk in chunks] == [800, 800, 700]


def test_chunk_size_is_a_setting(write, assets: Path) -> None:
    settings = MediaSettings(text_chunk_chars=200, text_overlap_chars=0)
    items = load(write("essay.txt", ESSAY.encode()), assets, settings=settings)
    assert all(len(item.text) <= 200 for item in items) and len(items) > 15


def test_short_file_is_one_chunk(write, assets: Path) -> None:
    items = load(write("note.txt", b"  A short note.\r\nSecond line.   \r\n\r\n\r\n\r\nEnd.\n"), assets)
    assert [item.text for item in items] == ["A short note.\nSecond line.\n\nEnd."]


@pytest.mark.parametrize(
    ("data", "expected"),
    [("Crème brûlée, naïve café".encode("utf-8-sig"), "Crème brûlée, naïve café"),
     ("Crème brûlée, naïve café".encode("utf-16"), "Crème brûlée, naïve café"),
     ("Crème brûlée – naïve café".encode("cp1252"), "Crème brûlée – naïve café"),
     ("日本語のテキストです。".encode("utf-8"), "日本語のテキストです。")],
)
def test_encodings(write, assets: Path, data: bytes, expected: str) -> None:
    assert load(write("enc.txt", data), assets)[0].text == expected


def test_legacy_cyrillic_encoding_is_guessed(write, assets: Path) -> None:
    pytest.importorskip("charset_normalizer")
    russian = "Привет, как дела? Это тестовый текст на русском языке о божьих коровках."
    assert load(write("ru.txt", russian.encode("cp1251")), assets)[0].text == russian


@pytest.mark.parametrize("data", [b"", b"   \n\n\t  \n", "  \n".encode("utf-16")])
def test_empty_file_is_refused(write, assets: Path, data: bytes) -> None:
    with pytest.raises(IngestError, match="empty file"):
        load_items(write("empty.txt", data), "doc", assets)


@pytest.mark.parametrize("data", [os.urandom(5000), bytes(range(1, 32)) * 20])
def test_binary_junk_named_txt_is_refused(write, assets: Path, data: bytes) -> None:
    with pytest.raises(IngestError, match="binary"):
        load_items(write("junk.txt", data), "doc", assets)


@pytest.mark.parametrize("name", ["data.csv", "data.json", "README.rst", "notes.markdown", "Notizen für mich.txt"])
def test_text_like_formats(write, assets: Path, name: str) -> None:
    items = load(write(name, b'{"flower": "yellow", "insect": "ladybird"}\n'), assets)
    assert "ladybird" in items[0].text and items[0].source == name


def test_a_text_over_the_chunk_cap_gives_its_first_chunks_and_says_so(write, assets: Path) -> None:
    path = write("essay.md", ESSAY.encode())
    everything = load(path, assets, settings=MediaSettings(max_chunks=0))
    notes: list[str] = []
    capped = load(path, assets, settings=MediaSettings(max_chunks=3), on_cap=notes.append)
    assert len(everything) > 3 and [item.text for item in capped] == [item.text for item in everything[:3]]
    assert notes == [f"indexed the first 3 of {len(everything)} chunks (cap --max-chunks)"]
    assert len(load(path, assets, settings=MediaSettings(max_chunks=len(everything)), on_cap=notes.append)) \
        == len(everything) and len(notes) == 1  # at the cap exactly: all of it, nothing said
