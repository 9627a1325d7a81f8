"""Build the checked-in eval sets under assets/eval/ (run once; the output is committed).

    python -m freeret_rag.eval.build_sets [--samples tests/data/samples] [--out assets/eval]

* `multimodal/`: the shared sample photos (downsized), the sample PDF (6 pages), the sample video
  (3 segments of 3 s) and generated pictures with known content (shapes, a bar chart, a shop sign),
  plus a few short texts; 16 queries (2 with an image) whose answers are known by construction.
* `pydoc/`: see `freeret_rag.eval.pydoc_set` (real stdlib docstrings, hand-written queries).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from .datasets import write_beir
from .pydoc_set import build_pydoc

PHOTO_WIDTH = 384
GENERATED_SIZE = (320, 240)


def downsize(source: Path, target: Path, width: int = PHOTO_WIDTH) -> None:
    with Image.open(source) as image:
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, "black")
        flat.paste(rgba, mask=rgba.getchannel("A"))
        flat.resize((width, round(width * flat.height / flat.width)), Image.LANCZOS).save(target, quality=85)


def font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def draw_shape(shape: str, colour: str, size: tuple[int, int] = GENERATED_SIZE, background: str = "white",
               scale: float = 0.3) -> Image.Image:
    image = Image.new("RGB", size, background)
    draw = ImageDraw.Draw(image)
    cx, cy, r = size[0] / 2, size[1] / 2, min(size) * scale
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=colour)
    return image


def draw_chart() -> Image.Image:
    """A bar chart titled "Quarterly sales 2024" with bars Q1..Q4 (Q3 tallest)."""
    image = Image.new("RGB", GENERATED_SIZE, "white")
    draw = ImageDraw.Draw(image)
    draw.text((60, 8), "Quarterly sales 2024", fill="black", font=font(20))
    for i, (label, value) in enumerate((("Q1", 60), ("Q2", 95), ("Q3", 150), ("Q4", 110))):
        x = 40 + i * 70
        draw.rectangle((x, 210 - value, x + 45, 210), fill="steelblue")
        draw.text((x + 10, 214), label, fill="black", font=font(16))
    draw.line((30, 210, 310, 210), fill="black", width=2)
    return image


def draw_sign() -> Image.Image:
    """A shop sign with opening hours."""
    image = Image.new("RGB", GENERATED_SIZE, "darkgreen")
    draw = ImageDraw.Draw(image)
    for y, (text, size) in zip((30, 100, 150), (("OPEN", 56), ("Monday - Friday", 26), ("9:00 - 17:00", 26))):
        width = draw.textlength(text, font=font(size))
        draw.text(((GENERATED_SIZE[0] - width) / 2, y), text, fill="white", font=font(size))
    return image


PHOTOS = {  # corpus id -> sample file (no caption: found by its pixels only)
    "img-ladybird": "LadyBird.jpg",
    "img-yellow-flower": "YellowFlower.jpg",
    "img-marigold": "Garden.jpg",
    "img-orange-petals": "FreshFlower.webp",
    "img-arc-wallpaper": "Arc-Colors-Transparent-Wallpaper.png",
}
PDF_PAGES = (1, 2, 9, 14, 15, 16)
VIDEO_SEGMENTS = {"vid-ladybird": (0.0, 3.0), "vid-yellow-flower": (3.0, 6.0), "vid-marigold": (6.0, 9.0)}
TEXTS = {
    "txt-aphids": "Ladybirds are small beetles; most species eat aphids and other soft-bodied pests, "
                  "which makes them welcome in gardens.",
    "txt-marigold-care": "Marigolds need full sun and well-drained soil. Remove spent blooms to keep "
                         "the plant flowering until the first frost.",
    "txt-train": "The night train leaves the central station at 22:40 and reaches the coast at 06:15; "
                 "sleeping cars must be booked in advance.",
    "txt-bread": "Knead the dough for ten minutes, let it rise for an hour in a warm place, then bake "
                 "at 220 degrees until the crust sounds hollow.",
}
# (query id, text, query image, {corpus id: grade}); the first six span every kind, for quick --limit runs
QUERIES: tuple[tuple[str, str, str | None, dict[str, int]], ...] = (
    ("q-ladybug", "a small red beetle with black spots sitting on a grass stalk", None,
     {"img-ladybird": 2, "vid-ladybird": 2, "txt-aphids": 1}),
    ("q-img-circle", "the same shape and colour", "queries/query2.png", {"gen-red-circle": 2}),
    ("q-magic", "header bytes at the start of the binary magic rules file, and byte order", None, {"pdf-p9": 2}),
    ("q-yellow", "close-up of a bright yellow bloom with many long petals", None,
     {"img-yellow-flower": 2, "vid-yellow-flower": 2}),
    ("q-hours", "when is the shop open during the week", None, {"gen-shop-sign": 2}),
    ("q-img-ladybug", "find this insect", "queries/query1.jpg", {"img-ladybird": 2, "vid-ladybird": 2}),
    ("q-marigold", "a red and orange marigold flower in front of a blurred background", None,
     {"img-marigold": 2, "vid-marigold": 2, "txt-marigold-care": 1}),
    ("q-orange", "macro shot where orange petals fill the whole picture", None, {"img-orange-petals": 2}),
    ("q-abstract", "abstract dark grey wallpaper with soft light curves", None,
     {"img-arc-wallpaper": 2}),
    ("q-circle", "a red circle on a white background", None, {"gen-red-circle": 2}),
    ("q-square", "a blue square", None, {"gen-blue-square": 2}),
    ("q-triangle", "a green triangle shape", None, {"gen-green-triangle": 2}),
    ("q-chart", "bar chart comparing revenue across the four quarters of a year", None, {"gen-sales-chart": 2}),
    ("q-rfc", "how requirement words such as MUST and SHOULD are to be understood", None, {"pdf-p2": 2}),
    ("q-xattr", "keeping a file's type in a filesystem extended attribute", None, {"pdf-p14": 2}),
    ("q-order", "in which order to try explicit types, filename globs and content sniffing", None, {"pdf-p15": 2}),
)


def build_multimodal(out: Path, samples: Path) -> None:
    for folder in ("images", "media", "queries"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    corpus: list[dict[str, Any]] = []
    # neutral file names: the lexical index reads file names, and the content must be found by pixels
    for number, (cid, name) in enumerate(PHOTOS.items(), start=1):
        downsize(samples / name, out / "images" / f"photo{number}.jpg")
        corpus.append({"_id": cid, "text": "", "image": f"images/photo{number}.jpg"})
    generated = {
        "gen-red-circle": draw_shape("circle", "red"),
        "gen-blue-square": draw_shape("square", "blue"),
        "gen-green-triangle": draw_shape("triangle", "green"),
        "gen-sales-chart": draw_chart(),
        "gen-shop-sign": draw_sign(),
    }
    for number, (cid, image) in enumerate(generated.items(), start=1):
        image.save(out / "images" / f"drawing{number}.png", optimize=True)
        corpus.append({"_id": cid, "text": "", "image": f"images/drawing{number}.png"})
    pdf = "media/shared-mime-info-spec.pdf"
    shutil.copyfile(samples / "shared-mime-info-spec.pdf", out / pdf)
    corpus += [{"_id": f"pdf-p{page}", "text": "", "pdf": pdf, "page": page} for page in PDF_PAGES]
    video = "media/nature-scenes.mp4"
    shutil.copyfile(samples / "nature-scenes.mp4", out / video)
    corpus += [{"_id": cid, "text": "", "video": video, "t_start": start, "t_end": end}
               for cid, (start, end) in VIDEO_SEGMENTS.items()]
    corpus += [{"_id": cid, "text": text} for cid, text in TEXTS.items()]
    # query images: a crop around the ladybird (not the indexed picture itself) and a redrawn disc
    with Image.open(samples / "LadyBird.jpg") as photo:
        photo.convert("RGB").crop((1530, 600, 2030, 1000)).resize((200, 160)).save(
            out / "queries" / "query1.jpg", quality=85)
    draw_shape("circle", "#e02020", size=(200, 200), background="#dddddd", scale=0.35).save(
        out / "queries" / "query2.png", optimize=True)
    queries = [{"_id": qid, "text": text, **({"image": image} if image else {})} for qid, text, image, _ in QUERIES]
    write_beir(out, corpus, queries, {qid: grades for qid, _, _, grades in QUERIES})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=Path, default=Path(__file__).resolve().parents[2] / "tests" / "data" / "samples")
    parser.add_argument("--out", type=Path, default=Path("assets/eval"))
    parser.add_argument("--only", choices=("multimodal", "pydoc"))
    args = parser.parse_args(argv)
    if args.only in (None, "multimodal"):
        build_multimodal(args.out / "multimodal", args.samples)
    if args.only in (None, "pydoc"):
        build_pydoc(args.out / "pydoc")


if __name__ == "__main__":
    main()
