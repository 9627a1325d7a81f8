"""PDF -> one item per page: the rendered page (what a VLM sees) plus its text layer (what it reads).

Scanned pages without a text layer still give an item, flagged `no_text_layer`: with
`MediaSettings.ocr` "auto" (the default) their text is read from the rendered page by OCR
(ocr.py), "on" reads every page so (for PDFs whose text layer is garbled), "off" leaves them image
only (still findable by image). A page that fails to render is skipped with a warning; a file that cannot be opened at all
(encrypted, corrupt, truncated) raises IngestError before any item is produced.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pymupdf
from PIL import Image

from freeret_rag.items import Item
from freeret_rag.media.common import (
    IngestError,
    MediaSettings,
    OnCap,
    Progress,
    asset_folder,
    cap_note,
    capped,
    item_id,
    report,
    save_image,
    save_thumbnail,
)

logger = logging.getLogger(__name__)

_TEXT_FLAGS = pymupdf.TEXTFLAGS_TEXT | pymupdf.TEXT_DEHYPHENATE


def open_pdf(path: Path) -> pymupdf.Document:
    """Open and validate: refuse password-protected, unreadable and page-less files clearly."""
    try:
        doc = pymupdf.open(path, filetype="pdf")
    except pymupdf.EmptyFileError:
        raise IngestError(path, "empty file") from None
    except (pymupdf.FileDataError, RuntimeError, ValueError) as error:
        raise IngestError(path, f"not a readable PDF (corrupt or truncated): {error}") from None
    if doc.needs_pass:
        doc.close()
        raise IngestError(path, "the PDF is password-protected; remove the password and add it again")
    if doc.page_count == 0:
        repaired = doc.is_repaired  # MuPDF had to rebuild a broken file, and found no page in it
        doc.close()
        if repaired:
            raise IngestError(path, "the PDF has no readable pages (truncated or corrupt)")
        raise IngestError(path, "the PDF has no pages: there is nothing in it to index")
    return doc


def clean_text(text: str) -> str:
    """Collapse runs of spaces, drop blank-line runs: layout whitespace carries no meaning here."""
    lines = (re.sub(r"[ \t\u00a0\f\v]+", " ", line).strip() for line in text.splitlines())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def render_zoom(page: pymupdf.Page, settings: MediaSettings) -> float:
    """Scale so the longest side is pdf_max_side px, but never above pdf_max_dpi."""
    longest_pt = max(page.rect.width, page.rect.height) or 1.0
    return min(settings.pdf_max_side / longest_pt, settings.pdf_max_dpi / 72)


def load_pdf(
    path: Path, doc_id: str, asset_dir: Path, progress: Progress | None, settings: MediaSettings,
    on_cap: OnCap | None = None,
) -> Iterator[Item]:
    doc = open_pdf(path)  # eager: file-level errors surface at call time
    total = capped(doc.page_count, settings.max_pages)
    if total < doc.page_count and on_cap is not None:
        on_cap(cap_note(total, doc.page_count, "pages", "--max-pages"))
    return _pages(doc, total, path, doc_id, asset_dir, progress, settings)


def _pages(
    doc: pymupdf.Document,
    total: int,
    path: Path,
    doc_id: str,
    asset_dir: Path,
    progress: Progress | None,
    settings: MediaSettings,
) -> Iterator[Item]:
    """The first `total` pages."""
    folder = asset_folder(asset_dir, doc_id)
    produced = 0
    ocr = settings.ocr
    with doc:
        for index in range(total):
            number = index + 1
            try:
                page = doc.load_page(index)
                zoom = render_zoom(page, settings)
                pix = page.get_pixmap(matrix=pymupdf.Matrix(zoom, zoom), alpha=False)
                image = Image.frombytes("RGB", (pix.width, pix.height), pix.samples)
                page_path = save_image(image, folder / f"page{number:04d}.jpg", settings, settings.pdf_max_side)
                thumb = save_thumbnail(image, folder / f"page{number:04d}_thumb.jpg", settings)
            except Exception as error:  # noqa: BLE001 - MuPDF raises many types; one bad page must not sink the file
                logger.warning("%s: page %d could not be rendered, skipped: %s", path.name, number, error)
                report(progress, number, total)
                continue
            try:
                text = clean_text(page.get_text("text", flags=_TEXT_FLAGS))
            except Exception as error:  # noqa: BLE001 - keep the image even if the text layer is broken
                logger.warning("%s: page %d text layer unreadable: %s", path.name, number, error)
                text = ""
            no_text_layer = not text
            read_by_ocr = False
            if ocr == "on" or (ocr == "auto" and no_text_layer):
                try:
                    from freeret_rag.media.ocr import read_text

                    text, read_by_ocr = read_text(image), True
                except ImportError as error:
                    logger.warning("%s: OCR needs the rapidocr package (pip install rapidocr), not read by OCR: %s",
                                   path.name, error)
                    ocr = "off"  # once per file, not once per page
                except Exception as error:  # noqa: BLE001 - without OCR text the page is still indexed by image
                    logger.warning("%s: page %d could not be read by OCR: %s", path.name, number, error)
            produced += 1
            yield Item(
                kind="pdf_page",
                text=text,
                images=(page_path,),
                item_id=item_id(doc_id, "pdf_page", number),
                doc_id=doc_id,
                source=path.name,
                page=number,
                thumbnail=thumb,
                no_text_layer=no_text_layer,
                ocr=read_by_ocr,
            )
            report(progress, number, total)
    if produced == 0:
        raise IngestError(path, "no page of the PDF could be rendered (corrupt file?)")
