"""Image file -> one item: an upright, RGB, size-capped copy the model sees, plus a thumbnail.

Raster formats go through Pillow (EXIF orientation applied, alpha flattened onto white, first
frame of animations); SVG is rasterised with MuPDF. Declared dimensions are checked from the
header before decoding so that a decompression bomb is refused instead of eating memory.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from freeret_rag.items import Item
from freeret_rag.media.common import (
    IngestError,
    MediaSettings,
    OnCap,
    Progress,
    asset_folder,
    item_id,
    report,
    save_image,
    save_thumbnail,
    stem_words,
)


def looks_like_svg(head: bytes) -> bool:
    """SVG is XML: decide by content, so a PNG renamed .svg still goes to Pillow."""
    head = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return head.startswith((b"<?xml", b"<svg", b"<!--", b"<!doctype svg")) and b"<svg" in head


def is_svg(path: Path) -> bool:
    with open(path, "rb") as handle:
        return looks_like_svg(handle.read(4096))


def check_pixels(path: Path, width: int, height: int, settings: MediaSettings) -> None:
    if width * height > settings.max_pixels:
        raise IngestError(
            path,
            f"image is {width}x{height} pixels ({width * height / 1e6:.0f} MP), above the "
            f"{settings.max_pixels / 1e6:.0f} MP limit (possible decompression bomb); downscale it first",
        )


def read_raster(path: Path, settings: MediaSettings) -> Image.Image:
    """Decode the first frame, upright, capped at image_max_side."""
    try:
        with warnings.catch_warnings():
            # Our own max_pixels check decides; Pillow's hard DecompressionBombError is still caught.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:  # lazy: only the header is read here
                check_pixels(path, *image.size, settings)
                # JPEG can decode at 1/2, 1/4, 1/8 scale directly: big photos load much faster.
                image.draft("RGB", (settings.image_max_side, settings.image_max_side))
                image.load()
                return ImageOps.exif_transpose(image)  # always a new image, detached from the file
    except IngestError:
        raise
    except Image.DecompressionBombError as error:
        raise IngestError(path, f"refused as a possible decompression bomb: {error}") from None
    except UnidentifiedImageError:
        raise IngestError(path, "not a readable image (unknown or corrupt format)") from None
    except (OSError, SyntaxError, ValueError) as error:  # Pillow's truncated/corrupt-data errors
        raise IngestError(path, f"image data is corrupt or truncated: {error}") from None


def read_svg(path: Path, settings: MediaSettings) -> Image.Image:
    """Rasterise with MuPDF (no extra dependency), longest side = image_max_side, on white."""
    import pymupdf

    try:
        with pymupdf.open(path, filetype="svg") as doc:
            page = doc.load_page(0)
            longest = max(page.rect.width, page.rect.height)
            if longest <= 0:
                raise ValueError("the drawing has no size")
            zoom = settings.image_max_side / longest
            pix = page.get_pixmap(matrix=pymupdf.Matrix(zoom, zoom), alpha=False)
            return Image.frombytes("RGB", (pix.width, pix.height), pix.samples)
    except (RuntimeError, ValueError) as error:  # pymupdf.FileDataError is a RuntimeError
        raise IngestError(path, f"not a readable SVG drawing: {error}") from None


def load_image(
    path: Path, doc_id: str, asset_dir: Path, progress: Progress | None, settings: MediaSettings,
    on_cap: OnCap | None = None,
) -> Iterator[Item]:
    image = read_svg(path, settings) if is_svg(path) else read_raster(path, settings)
    folder = asset_folder(asset_dir, doc_id)
    saved = save_image(image, folder / "image.jpg", settings, settings.image_max_side)
    thumb = save_thumbnail(image, folder / "image_thumb.jpg", settings)
    report(progress, 1, 1)
    item = Item(
        kind="image",
        text=stem_words(path),
        images=(saved,),
        item_id=item_id(doc_id, "image", 0),
        doc_id=doc_id,
        source=path.name,
        thumbnail=thumb,
    )
    return iter([item])
