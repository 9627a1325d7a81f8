"""Turn one file into Items: PDF pages, images, video segments, text chunks.

    from freeret_rag.media import load_items, kind_for_path, SUPPORTED_EXTENSIONS, IngestError
    for item in load_items(path, doc_id, asset_dir, progress=print):
        ...

The file type is decided by content (magic bytes) before the extension, so a PNG named .pdf is
read as an image and a PDF named .jpg as a PDF. File-level problems (missing, empty, unsupported,
encrypted, corrupt) raise IngestError when load_items is called; page and frame images are written
under asset_dir/doc_id/ as the returned iterator is consumed, and progress(done, total) is called
per page / segment / chunk. Heavy libraries (pymupdf, decord) are imported only when needed.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path

from freeret_rag.errors import IngestError
from freeret_rag.items import Item
from freeret_rag.media.common import MediaSettings, OnCap, Progress
from freeret_rag.media.image import looks_like_svg

_IMAGE, _VIDEO, _PDF, _TEXT = "image", "video", "pdf", "text"

SUPPORTED_EXTENSIONS: dict[str, str] = {
    ".pdf": _PDF,
    **dict.fromkeys((".jpg", ".jpeg", ".jpe", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".svg"), _IMAGE),
    **dict.fromkeys((".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi"), _VIDEO),
    # CSV / JSON / logs are indexed as plain text: good enough for keyword and dense search.
    **dict.fromkeys((".txt", ".text", ".md", ".markdown", ".rst", ".csv", ".tsv", ".json", ".log"), _TEXT),
}

_LOADERS = {_PDF: "pdf:load_pdf", _IMAGE: "image:load_image", _VIDEO: "video:load_video", _TEXT: "text:load_text"}
_HEIF_BRANDS = {b"avif", b"avis", b"heic", b"heix", b"mif1", b"msf1"}  # ISO-BMFF that holds images
_BMP_HEADER_SIZES = {12, 40, 52, 56, 64, 108, 124}


def sniff(head: bytes) -> str | None:
    """Kind from the first bytes of a file, for the formats with a reliable signature."""
    if b"%PDF-" in head[:1024]:
        return _PDF
    if head.startswith((b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"II*\x00", b"MM\x00*")):
        return _IMAGE
    if head[:4] == b"RIFF" and head[8:12] in (b"WEBP", b"AVI "):
        return _IMAGE if head[8:12] == b"WEBP" else _VIDEO
    if head[:2] == b"BM" and int.from_bytes(head[14:18], "little") in _BMP_HEADER_SIZES:
        return _IMAGE
    if head[4:8] == b"ftyp":
        return _IMAGE if head[8:12] in _HEIF_BRANDS else _VIDEO
    if head.startswith(b"\x1a\x45\xdf\xa3"):  # Matroska / WebM
        return _VIDEO
    return None


def kind_for_path(path: str | Path) -> str | None:
    """"pdf" | "image" | "video" | "text", or None when unsupported. Content first, then extension.

    A file without extension is accepted as SVG or plain text when its content looks like one.
    """
    path = Path(path)
    extension_kind = SUPPORTED_EXTENSIONS.get(path.suffix.lower())
    try:
        with open(path, "rb") as handle:
            head = handle.read(4096)
    except OSError:
        return extension_kind
    found = sniff(head)
    if found or path.suffix:
        return found or extension_kind
    if looks_like_svg(head):
        return _IMAGE
    return _TEXT if head and b"\x00" not in head else None


def load_items(
    path: str | Path,
    doc_id: str,
    asset_dir: str | Path,
    *,
    progress: Progress | None = None,
    settings: MediaSettings = MediaSettings(),
    on_cap: OnCap | None = None,
) -> Iterator[Item]:
    """Items of one file; raises IngestError (eagerly) when the file cannot be read at all.

    A file over one of the settings' caps gives only its first pages / chunks / minutes, and
    `on_cap` is told which part (a sentence for the user) before the first item."""
    path = Path(path)
    if not path.is_file():
        raise IngestError(path, "file not found" if not path.exists() else "not a regular file")
    if path.stat().st_size == 0:
        raise IngestError(path, "empty file")
    kind = kind_for_path(path)
    if kind is None:
        supported = " ".join(sorted(SUPPORTED_EXTENSIONS))
        raise IngestError(path, f"unsupported file type {path.suffix or '(no extension)'!s}; supported: {supported}")
    module_name, function_name = _LOADERS[kind].split(":")
    loader = getattr(importlib.import_module(f"freeret_rag.media.{module_name}"), function_name)
    return loader(path, doc_id, Path(asset_dir), progress, settings, on_cap or (lambda note: None))


__all__ = ["SUPPORTED_EXTENSIONS", "IngestError", "MediaSettings", "kind_for_path", "load_items", "sniff"]
