"""Scanned pages: a PDF page without a text layer is read by OCR (RapidOCR, offline models).

The pages are drawn in the test (text PDF -> rendered -> image-only PDF); the expected words are
the words drawn, and the scanned copy is checked to have no text layer before OCR is asked.
"""

from __future__ import annotations

import re
from pathlib import Path

import pymupdf
import pytest

from freeret_rag.answer import source_prompt
from freeret_rag.devtools.scans import scanned_copy, text_pdf
from freeret_rag.library import Library
from freeret_rag.media import MediaSettings, load_items
from tests.fake_engine import FakeEngine

TYPED = "A typed page about lighthouses"
DRAWN = ["Quokka saxophone zeppelin", "marmalade hippopotamus 1987"]


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


@pytest.fixture(scope="module")
def mixed_pdf(tmp_path_factory) -> Path:
    """Page 1 with a text layer; page 2 a scan of the drawn words (no text layer)."""
    folder = tmp_path_factory.mktemp("scans")
    scan = scanned_copy(text_pdf(folder / "drawn.pdf", ["\n".join(DRAWN)]), folder / "scan.pdf", dpi=150)
    with pymupdf.open(scan) as scanned:
        assert scanned[0].get_text().strip() == ""  # really no text layer: only OCR can read it
    with pymupdf.open() as mixed:
        text_pdf(folder / "typed.pdf", [TYPED])
        mixed.insert_pdf(pymupdf.open(folder / "typed.pdf"))
        mixed.insert_pdf(pymupdf.open(scan))
        mixed.save(folder / "mixed.pdf")
    return folder / "mixed.pdf"


def test_auto_reads_only_pages_without_a_text_layer(mixed_pdf, tmp_path):
    typed, scanned = load_items(mixed_pdf, "mixed", tmp_path / "assets", settings=MediaSettings(ocr="auto"))
    assert words(typed.text) == words(TYPED) and not typed.no_text_layer and not typed.ocr
    assert scanned.no_text_layer and scanned.ocr
    assert words(" ".join(DRAWN)) <= words(scanned.text)
    assert Path(scanned.images[0]).exists()  # the page image is still what the model sees


def test_off_leaves_scanned_pages_without_text_and_on_reads_every_page(mixed_pdf, tmp_path):
    typed, scanned = load_items(mixed_pdf, "off", tmp_path / "a", settings=MediaSettings(ocr="off"))
    assert scanned.text == "" and scanned.no_text_layer and not scanned.ocr and not typed.ocr
    typed, scanned = load_items(mixed_pdf, "on", tmp_path / "b", settings=MediaSettings(ocr="on"))
    assert typed.ocr and not typed.no_text_layer and words(TYPED) <= words(typed.text)
    assert scanned.ocr and words(" ".join(DRAWN)) <= words(scanned.text)
    with pytest.raises(ValueError, match="ocr must be auto, on or off"):
        MediaSettings(ocr="maybe")


@pytest.mark.parametrize("mode", ["auto", "off"])
def test_the_library_flags_scanned_pages_and_searches_their_ocr_text(mixed_pdf, tmp_path, mode):
    library = Library(FakeEngine(), tmp_path / "data", self_check=False, media_settings=MediaSettings(ocr=mode))
    library.add([mixed_pdf])
    (doc,) = library.documents()
    assert (doc.items, doc.no_text) == (2, 1)
    hits = library.store.search(None, "zeppelin hippopotamus", 5)
    found = {hit.item.page for hit in hits}
    if mode == "auto":
        assert doc.text_note == "1 of 2 pages have no text layer (1 read by OCR)" and found == {2}
        prompt = source_prompt(hits, "What is drawn?", [], vision=False, max_source_chars=2000,
                               max_images_per_source=0)  # what the answer stage gives the model
        assert words(" ".join(DRAWN)) <= words(prompt.text)
    else:
        assert doc.text_note == "1 of 2 pages have no text layer (not searchable by words; OCR is off)"
        assert found == set()
    # the flags survive a reopening of the index (they are stored with the items)
    assert Library(None, tmp_path / "data").documents()[0].text_note == doc.text_note


def test_without_rapidocr_scanned_pages_are_kept_with_one_warning(mixed_pdf, tmp_path, monkeypatch, caplog):
    from freeret_rag.media import ocr

    monkeypatch.setattr(ocr, "_engine", None)
    monkeypatch.setitem(__import__("sys").modules, "rapidocr", None)  # `import rapidocr` raises ImportError
    items = list(load_items(mixed_pdf, "noocr", tmp_path / "assets", settings=MediaSettings(ocr="on")))
    assert [item.page for item in items] == [1, 2] and not any(item.ocr for item in items)
    assert words(TYPED) <= words(items[0].text) and items[1].text == "" and items[1].no_text_layer
    assert [r.getMessage().count("pip install rapidocr") for r in caplog.records] == [1]
