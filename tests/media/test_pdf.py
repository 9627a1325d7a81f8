"""PDF pages: count, 1-based numbering, rendering size, text layer, and the ways a PDF can fail."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pymupdf
import pytest
from PIL import Image

from freeret_rag.media import IngestError, MediaSettings, load_items

SPEC = "shared-mime-info-spec.pdf"


def test_sample_pdf_gives_one_item_per_page(sample, assets: Path) -> None:
    calls: list[tuple[int, int]] = []
    items = list(load_items(sample(SPEC), "spec", assets, progress=lambda d, t: calls.append((d, t))))

    assert [item.page for item in items] == list(range(1, 18))
    assert [item.item_id for item in items[:2]] == ["spec:pdf_page:1", "spec:pdf_page:2"]
    assert {item.kind for item in items} == {"pdf_page"} and {item.source for item in items} == {SPEC}
    assert calls == [(n, 17) for n in range(1, 18)]
    first = items[0]
    assert "Shared MIME-info Database" in first.text and "  " not in first.text
    assert any("glob" in item.text for item in items)
    page_file = Path(first.images[0])
    assert page_file.parent == assets / "spec" and page_file.exists()
    with Image.open(page_file) as page:
        assert max(page.size) == MediaSettings().pdf_max_side and page.mode == "RGB"
    with Image.open(first.thumbnail) as thumb:
        assert max(thumb.size) <= 320


def _pdf_with_scanned_page(path: Path) -> None:
    doc = pymupdf.open()
    doc.new_page().insert_text((72, 72), "Typed page about ladybirds")
    photo = io.BytesIO()
    Image.new("RGB", (400, 300), (200, 30, 30)).save(photo, "PNG")
    doc.new_page().insert_image(pymupdf.Rect(50, 50, 450, 350), stream=photo.getvalue())
    doc.save(path)


def test_scanned_page_without_text_still_gives_an_item(tmp_path: Path, assets: Path) -> None:
    path = tmp_path / "scan.pdf"
    _pdf_with_scanned_page(path)
    items = list(load_items(path, "scan", assets))
    assert [item.page for item in items] == [1, 2]
    assert "ladybirds" in items[0].text
    assert items[1].text == "" and Path(items[1].images[0]).exists()


def test_password_protected_pdf_is_refused(sample, tmp_path: Path, assets: Path) -> None:
    locked = tmp_path / "locked.pdf"
    pymupdf.open(sample(SPEC)).save(locked, encryption=pymupdf.PDF_ENCRYPT_AES_256, user_pw="u", owner_pw="o")
    with pytest.raises(IngestError, match="password-protected"):
        load_items(locked, "locked", assets)


def test_pdf_with_only_an_owner_password_is_read(sample, tmp_path: Path, assets: Path) -> None:
    restricted = tmp_path / "restricted.pdf"
    pymupdf.open(sample(SPEC)).save(restricted, encryption=pymupdf.PDF_ENCRYPT_AES_256, owner_pw="o", permissions=0)
    assert len(list(load_items(restricted, "restricted", assets))) == 17


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9])
def test_truncated_pdf_is_refused(sample, write, assets: Path, keep: float) -> None:
    data = sample(SPEC).read_bytes()
    with pytest.raises(IngestError, match="truncated or corrupt"):
        load_items(write("cut.pdf", data[: int(len(data) * keep)]), "cut", assets)


def test_garbage_named_pdf_is_refused(write, assets: Path) -> None:
    with pytest.raises(IngestError, match="not a readable PDF"):
        load_items(write("junk.pdf", b"this is not a pdf at all\n" * 20), "junk", assets)


def test_page_that_fails_to_render_is_skipped(sample, assets: Path, monkeypatch, caplog) -> None:
    original = pymupdf.Page.get_pixmap

    def flaky(page, *args, **kwargs):
        if page.number == 1:
            raise RuntimeError("simulated render failure")
        return original(page, *args, **kwargs)

    monkeypatch.setattr(pymupdf.Page, "get_pixmap", flaky)
    with caplog.at_level(logging.WARNING, logger="freeret_rag.media.pdf"):
        items = list(load_items(sample(SPEC), "spec", assets))
    assert [item.page for item in items] == [1] + list(range(3, 18))
    assert "page 2 could not be rendered" in caplog.text


def test_pdf_named_jpg_is_read_as_pdf(sample, assets: Path) -> None:
    items = list(load_items(sample(SPEC, "actually a pdf.jpg"), "x", assets))
    assert len(items) == 17 and items[0].kind == "pdf_page" and items[0].source == "actually a pdf.jpg"


def test_unicode_and_spaces_in_pdf_name(sample, assets: Path) -> None:
    items = list(load_items(sample(SPEC, "Spéc ïnfo – 日本.pdf"), "uni", assets))
    assert items[0].source == "Spéc ïnfo – 日本.pdf" and items[0].label == "Spéc ïnfo – 日本.pdf (p. 1)"


def _pdf_bytes(objects: list[str]) -> bytes:
    """A well-formed PDF with these objects (1 is the catalog), its cross-reference table written
    by hand with the byte offsets counted here (not by pymupdf, which cannot save a page-less PDF)."""
    out, offsets = b"%PDF-1.4\n", []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{offset:010d} 00000 n \n".encode() for offset in offsets)
    return out + f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()


def test_valid_pdf_without_pages_says_so_not_corrupt(write, assets: Path) -> None:
    empty = write("no-pages.pdf", _pdf_bytes(["<< /Type /Catalog /Pages 2 0 R >>",
                                              "<< /Type /Pages /Kids [] /Count 0 >>"]))
    assert pymupdf.open(empty).page_count == 0 and not pymupdf.open(empty).is_repaired  # valid, as written
    with pytest.raises(IngestError, match="has no pages") as refused:
        load_items(empty, "empty", assets)
    assert "corrupt" not in refused.value.reason


@pytest.mark.parametrize("cap", [5, 17, 0])
def test_a_pdf_over_the_page_cap_gives_its_first_pages_and_says_so(sample, assets: Path, cap: int) -> None:
    path = sample("shared-mime-info-spec.pdf")
    with pymupdf.open(path) as doc:  # the page count, read by MuPDF itself
        pages = doc.page_count
    notes: list[str] = []
    items = list(load_items(path, "capped", assets, settings=MediaSettings(max_pages=cap), on_cap=notes.append))
    kept = cap if 0 < cap < pages else pages
    assert [item.page for item in items] == list(range(1, kept + 1))
    assert notes == ([f"indexed the first {cap} of {pages} pages (cap --max-pages)"] if kept < pages else [])
    assert sorted(p.name for p in (assets / "capped").glob("page*_thumb.jpg")) == [
        f"page{n:04d}_thumb.jpg" for n in range(1, kept + 1)]  # pages past the cap are not even rendered
