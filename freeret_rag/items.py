"""Value objects shared by every stage: what is indexed, what a search returns, what an answer cites.

They carry no model or store state so that media loaders, the store, the engine and the UI can
exchange them freely (and tests can build them by hand).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Union

from PIL import Image

ItemKind = Literal["text", "image", "pdf_page", "video_segment"]
ITEM_KINDS: tuple[ItemKind, ...] = ("text", "image", "pdf_page", "video_segment")

# An image given to the model: already decoded, or a path to a file on disk (decoded lazily so
# that a search result does not hold every page image in memory).
ImageLike = Union[Image.Image, str, Path]


def open_image(image: ImageLike) -> Image.Image:
    """Return an RGB PIL image for an in-memory image or a path."""
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    with Image.open(image) as opened:
        return opened.convert("RGB")


def plural(count: int, word: str) -> str:
    """"1 file", "2 files", "0 files"."""
    return f"{count} {word}{'s' if count != 1 else ''}"


def format_timestamp(seconds: float) -> str:
    """`75.5 -> "1:15"`, `3725 -> "1:02:05"`: how people read video positions."""
    total = int(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


@dataclass(frozen=True)
class Item:
    """One retrievable unit: a text chunk, an image, a PDF page or a video segment.

    `images` holds what the model sees (the image, the rendered page, the sampled frames of a
    segment); `text` holds what it reads (a chunk, a page's text layer). Pages are 1-based.
    """

    kind: ItemKind
    text: str = ""
    images: tuple[ImageLike, ...] = ()
    item_id: str = ""
    doc_id: str = ""
    source: str = ""
    page: int | None = None
    t_start: float | None = None
    t_end: float | None = None
    chunk: int | None = None
    thumbnail: str | None = None
    #: The model's own top next-token words at the embedding read-out (PromptReps), best first.
    words: tuple[str, ...] = ()
    #: A PDF page without a text layer (a scan); `ocr`: its text was read from the page image by OCR.
    no_text_layer: bool = False
    ocr: bool = False

    def __post_init__(self) -> None:
        if self.kind not in ITEM_KINDS:
            raise ValueError(f"unknown item kind {self.kind!r}; expected one of {ITEM_KINDS}")
        if not isinstance(self.images, tuple):
            object.__setattr__(self, "images", tuple(self.images))
        if not isinstance(self.words, tuple):
            object.__setattr__(self, "words", tuple(self.words))

    @property
    def location(self) -> str:
        """Where in the source this item is, for citations: "p. 3", "0:03-0:06", "chunk 2"."""
        if self.page is not None:
            return f"p. {self.page}"
        if self.t_start is not None:
            end = f"-{format_timestamp(self.t_end)}" if self.t_end is not None else ""
            return f"{format_timestamp(self.t_start)}{end}"
        if self.chunk is not None:
            return f"part {self.chunk + 1}"
        return ""

    @property
    def label(self) -> str:
        """A human label: file name plus location."""
        return f"{self.source} ({self.location})" if self.location else self.source

    def open_images(self) -> list[Image.Image]:
        return [open_image(image) for image in self.images]

    def without_images(self) -> "Item":
        return replace(self, images=())

    def to_metadata(self) -> dict[str, str | int | float | bool]:
        """Flat, None-free metadata (Chroma rejects None values and lists)."""
        meta: dict[str, Any] = {
            "kind": self.kind,
            "doc_id": self.doc_id,
            "source": self.source,
            "images": json.dumps([str(image) for image in self.images if not isinstance(image, Image.Image)]),
        }
        for key in ("page", "t_start", "t_end", "chunk", "thumbnail"):
            value = getattr(self, key)
            if value is not None:
                meta[key] = value
        if self.words:
            meta["words"] = " ".join(self.words)
        for flag in ("no_text_layer", "ocr"):
            if getattr(self, flag):
                meta[flag] = True
        return meta

    @classmethod
    def from_metadata(cls, item_id: str, metadata: dict[str, Any], text: str = "") -> "Item":
        return cls(
            kind=metadata["kind"],
            text=text or "",
            images=tuple(json.loads(metadata.get("images") or "[]")),
            item_id=item_id,
            doc_id=metadata.get("doc_id", ""),
            source=metadata.get("source", ""),
            page=metadata.get("page"),
            t_start=metadata.get("t_start"),
            t_end=metadata.get("t_end"),
            chunk=metadata.get("chunk"),
            thumbnail=metadata.get("thumbnail"),
            words=tuple((metadata.get("words") or "").split()),
            no_text_layer=bool(metadata.get("no_text_layer")),
            ocr=bool(metadata.get("ocr")),
        )


@dataclass(frozen=True)
class Query:
    """What a user searches with: text, optionally with an image."""

    text: str
    image: ImageLike | None = None


@dataclass
class Hit:
    """An item with the scores each stage gave it (None where a stage did not run)."""

    item: Item
    dense_score: float | None = None
    lexical_score: float | None = None
    fused_score: float | None = None
    rerank_score: float | None = None
    #: Rank-blend of the first stage and the rerank (fusion.blend), for the reranked head only.
    final_score: float | None = None

    @property
    def score(self) -> float:
        """The most precise score available: rerank, then fused, then dense, then lexical."""
        for value in (self.rerank_score, self.fused_score, self.dense_score, self.lexical_score):
            if value is not None:
                return value
        return 0.0


@dataclass
class Answer:
    """A finished grounded answer. `sources[i]` is cited as `[i + 1]` in `text`."""

    text: str
    sources: list[Hit] = field(default_factory=list)
    cited: list[int] = field(default_factory=list)
    retrieval_query: str = ""
