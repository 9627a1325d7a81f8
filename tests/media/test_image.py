"""Images: every format, orientation, transparency, size caps and decompression bombs."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from freeret_rag.media import IngestError, MediaSettings, load_items

RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


def only_item(path: Path, assets: Path, **kwargs):
    items = list(load_items(path, "doc", assets, **kwargs))
    assert len(items) == 1
    return items[0]


def saved(item) -> Image.Image:
    with Image.open(item.images[0]) as image:
        return image.convert("RGB")


def close(color: tuple[int, ...], expected: tuple[int, int, int], tolerance: int = 40) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(color, expected))


def encoded(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("name", "words"),
    [("YellowFlower.jpg", "Yellow Flower"), ("LadyBird.jpg", "Lady Bird"), ("FreshFlower.webp", "Fresh Flower"),
     ("Garden.jpg", "Garden"), ("Arc-Colors-Transparent-Wallpaper.png", "Arc Colors Transparent Wallpaper")],
)
def test_sample_images(sample, assets: Path, name: str, words: str) -> None:
    calls: list[tuple[int, int]] = []
    item = only_item(sample(name), assets, progress=lambda d, t: calls.append((d, t)))
    assert (item.kind, item.text, item.item_id, item.source) == ("image", words, "doc:image:0", name)
    assert calls == [(1, 1)]
    assert Path(item.images[0]).parent == assets / "doc"
    image = saved(item)
    assert image.mode == "RGB" and max(image.size) <= 1536
    with Image.open(item.thumbnail) as thumb:
        assert max(thumb.size) == 320


def test_transparent_sample_is_flattened_onto_white(sample, assets: Path) -> None:
    with Image.open(sample("Arc-Colors-Transparent-Wallpaper.png")) as original:
        transparent = next(xy for xy in [(0, 0), (5, 5), (original.width - 1, 0)] if original.getpixel(xy)[3] == 0)
        scale = 1536 / original.width
    image = saved(only_item(sample("Arc-Colors-Transparent-Wallpaper.png"), assets))
    assert close(image.getpixel((int(transparent[0] * scale), int(transparent[1] * scale))), WHITE, 5)


def test_png_alpha_flattened_onto_white(write, assets: Path) -> None:
    rgba = Image.new("RGBA", (100, 50), (0, 0, 0, 0))
    rgba.paste((255, 0, 0, 255), (50, 0, 100, 50))
    image = saved(only_item(write("half.png", encoded(rgba, "PNG")), assets))
    assert close(image.getpixel((10, 25)), WHITE) and close(image.getpixel((90, 25)), RED)


def test_gif_uses_first_frame(write, assets: Path) -> None:
    frames = [Image.new("RGB", (60, 40), RED), Image.new("RGB", (60, 40), BLUE)]
    data = encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert close(saved(only_item(write("anim.gif", data), assets)).getpixel((30, 20)), RED)


@pytest.mark.parametrize(("name", "fmt"), [("pic.bmp", "BMP"), ("pic.tiff", "TIFF"), ("pic.webp", "WEBP")])
def test_other_raster_formats(write, assets: Path, name: str, fmt: str) -> None:
    image = saved(only_item(write(name, encoded(Image.new("RGB", (80, 60), BLUE), fmt)), assets))
    assert image.size == (80, 60) and close(image.getpixel((40, 30)), BLUE)


def test_exif_orientation_is_applied(write, assets: Path) -> None:
    landscape = Image.new("RGB", (200, 100), RED)
    landscape.paste(BLUE, (100, 0, 200, 100))  # left red, right blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display": left side ends up on top
    image = saved(only_item(write("phone.jpg", encoded(landscape, "JPEG", exif=exif.tobytes())), assets))
    assert image.size == (100, 200)
    assert close(image.getpixel((50, 20)), RED) and close(image.getpixel((50, 180)), BLUE)


def test_sample_svg_is_rasterised(sample, assets: Path) -> None:
    item = only_item(sample("blobs-l.svg"), assets)
    image = saved(item)
    assert image.size == (1536, 1536) and item.text == "blobs l"
    assert len(image.resize((16, 16)).getcolors(256) or []) > 4  # a drawing, not a blank canvas


def test_small_svg_keeps_colours_on_white(write, assets: Path) -> None:
    svg = (b'<svg xmlns="http://www.w3.org/2000/svg" width="100" height="50">'
           b'<rect x="50" width="50" height="50" fill="red"/></svg>')
    image = saved(only_item(write("shape.svg", svg), assets))
    assert image.size == (1536, 768)
    assert close(image.getpixel((300, 384)), WHITE) and close(image.getpixel((1200, 384)), RED)


def test_huge_image_is_downscaled(write, assets: Path) -> None:
    image = saved(only_item(write("big.png", encoded(Image.new("RGB", (3000, 2000), BLUE), "PNG")), assets))
    assert image.size == (1536, 1024)


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


@pytest.mark.parametrize("size", [(20000, 20000), (12000, 9000)])  # above Pillow's own limit / only ours
def test_decompression_bomb_is_refused_before_decoding(write, assets: Path, size: tuple[int, int]) -> None:
    with pytest.raises(IngestError, match="decompression bomb"):
        load_items(write("bomb.png", _png_header_only(*size)), "bomb", assets)
    assert not (assets / "bomb").exists()


def test_pixel_cap_is_a_setting(write, assets: Path) -> None:
    path = write("small.png", encoded(Image.new("RGB", (200, 200)), "PNG"))
    with pytest.raises(IngestError, match="above the 0 MP limit"):
        load_items(path, "doc", assets, settings=MediaSettings(max_pixels=10_000))


def test_truncated_jpeg_is_refused(sample, write, assets: Path) -> None:
    data = sample("Garden.jpg").read_bytes()
    with pytest.raises(IngestError, match="corrupt or truncated"):
        load_items(write("cut.jpg", data[: len(data) // 3]), "cut", assets)


def test_png_named_pdf_is_read_as_image(sample, assets: Path) -> None:
    item = only_item(sample("YellowFlower.jpg", "flower.pdf"), assets)
    assert item.kind == "image" and item.text == "flower"


def test_unicode_and_spaces_in_image_name(sample, assets: Path) -> None:
    item = only_item(sample("YellowFlower.jpg", "Blüte gelb 🌼 (1).jpg"), assets)
    assert item.source == "Blüte gelb 🌼 (1).jpg" and item.text == "Blüte gelb 🌼 (1)"
    assert Path(item.images[0]).exists()
