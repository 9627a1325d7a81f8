"""Scanned copies of PDFs, for OCR tests and benchmarks: every page rendered to an image and the
images rebuilt into a PDF that has no text layer at all (what a scanner produces).

    scanned_copy("paper.pdf", "paper-scanned.pdf", dpi=150)
"""

from __future__ import annotations

from pathlib import Path

import pymupdf


def scanned_copy(source: str | Path, target: str | Path, dpi: int = 150) -> Path:
    """Write an image-only copy of `source` (same page sizes, pages as PNG at `dpi`) to `target`."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with pymupdf.open(source) as original, pymupdf.open() as scan:
        for page in original:
            pixmap = page.get_pixmap(dpi=dpi, alpha=False)
            scan.new_page(width=page.rect.width, height=page.rect.height).insert_image(
                pymupdf.Rect(0, 0, page.rect.width, page.rect.height), stream=pixmap.tobytes("png"))
        scan.save(target, garbage=3, deflate=True)
    return target


def text_pdf(target: str | Path, pages: list[str], fontsize: float = 16) -> Path:
    """A PDF with a text layer: one page per string (lines split at newlines), Helvetica."""
    target = Path(target)
    with pymupdf.open() as doc:
        for text in pages:
            page = doc.new_page()
            for number, line in enumerate(text.splitlines()):
                page.insert_text((72, 96 + number * fontsize * 1.6), line, fontsize=fontsize)
        doc.save(target)
    return target
