"""Where a question's words are in a source: boxes on a PDF page, <mark>s in a text's chunks.

Used by the citation viewer (ui_viewer). Plain functions of paths and strings, no model, no UI:

- `question_words("Which beetles eat aphids?") -> ["beetles", "eat", "aphids"]` (stopwords and
  one-letter words left out, each word once, in order);
- `page_boxes(pdf, page, words)`: where those words are on a page (PyMuPDF's `search_for`), as
  fractions of the page's width and height, so that they can be drawn over a picture of any size;
- `page_picture(pdf, page, folder)`: the page rendered at full size as a PNG in `folder`, made
  once and then reused (the file's size and time are part of its name, so a changed file is
  rendered again);
- `mark_words(text, words)`: the text HTML-escaped with the words in <mark>;
- `text_window(chunks, index, words)`: a chunk with its neighbours, their overlaps removed.
"""

from __future__ import annotations

import hashlib
import html
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

FULL_ZOOM = 2.0  # 144 dpi: a page at full size, sharp on a laptop screen
MAX_WORDS = 12  # a long question highlights its first dozen content words
MAX_BOXES = 200  # per page (a word on every line of a dense page is enough)

STOPWORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being below between both
but by can could did do does doing down during each few for from further had has have having he her here hers
him his how i if in into is it its itself just me more most my no nor not now of off on once only or other our
ours out over own same she should so some such than that the their theirs them then there these they this those
through to too under until up very was we were what when where which while who whom why will with would you
your yours tell show give find says say said according cite source sources please describe explain document
file page pdf
""".split())

WORD = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*", re.UNICODE)


def question_words(question: str, limit: int = MAX_WORDS) -> list[str]:
    """The words worth finding in a source: lower-cased, without stopwords, digits-only words and
    single letters, each once, in the question's order; at most `limit`."""
    seen: list[str] = []
    for match in WORD.finditer(question or ""):
        word = match.group(0).lower()
        if len(word) < 2 or word in STOPWORDS or word.isdigit() or word in seen:
            continue
        seen.append(word)
        if len(seen) >= limit:
            break
    return seen


@dataclass(frozen=True)
class Box:
    """A found word on a page: its corners as fractions (0..1) of the page's width and height."""

    word: str
    x0: float
    y0: float
    x1: float
    y1: float


def page_boxes(pdf: str | Path, page: int, words: Sequence[str]) -> list[Box]:
    """Where `words` are on `page` (1-based) of `pdf`: PyMuPDF finds them case-insensitively, also
    inside longer words ("aphid" in "aphids"). [] when the page has none of them or no text layer."""
    import pymupdf

    boxes: list[Box] = []
    with pymupdf.open(str(pdf)) as doc:
        if not 1 <= page <= doc.page_count:
            return []
        sheet = doc[page - 1]
        width, height = sheet.rect.width, sheet.rect.height
        origin_x, origin_y = sheet.rect.x0, sheet.rect.y0
        for word in words:
            for rect in sheet.search_for(word):
                boxes.append(Box(word, (rect.x0 - origin_x) / width, (rect.y0 - origin_y) / height,
                                 (rect.x1 - origin_x) / width, (rect.y1 - origin_y) / height))
                if len(boxes) >= MAX_BOXES:
                    return boxes
    return boxes


def page_picture(pdf: str | Path, page: int, folder: str | Path, zoom: float = FULL_ZOOM) -> Path:
    """The page (1-based) as a PNG at `zoom` in `folder`, rendered once: the name holds the file's
    path, size and time, so the same page of the same file is reused and a changed file renders anew."""
    import pymupdf

    pdf = Path(pdf)
    stat = pdf.stat()
    key = hashlib.sha256(f"{pdf.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{page}|{zoom}".encode()).hexdigest()[:16]
    target = Path(folder) / f"page{page:04d}-{key}.png"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with pymupdf.open(str(pdf)) as doc:
        if not 1 <= page <= doc.page_count:
            raise ValueError(f"{pdf.name} has no page {page}")
        pix = doc[page - 1].get_pixmap(matrix=pymupdf.Matrix(zoom, zoom), alpha=False)
    partial = target.with_suffix(f".{os.getpid()}-{threading.get_ident()}.part")  # one per writer
    pix.save(str(partial), output="png")
    partial.replace(target)  # another viewer of the same page never reads half a file
    return target


def _pattern(words: Sequence[str]) -> re.Pattern | None:
    words = sorted({w for w in words if w}, key=len, reverse=True)  # longest first: "aphids" before "aphid"
    return re.compile("|".join(re.escape(w) for w in words), re.IGNORECASE) if words else None


def mark_words(text: str, words: Sequence[str]) -> str:
    """`text` HTML-escaped, each occurrence of a word (case-insensitive, also inside longer words,
    as on PDF pages) in <mark>."""
    pattern = _pattern(words)
    if pattern is None:
        return html.escape(text)
    out, last = [], 0
    for match in pattern.finditer(text):
        out += [html.escape(text[last:match.start()]), f"<mark>{html.escape(match.group(0))}</mark>"]
        last = match.end()
    return "".join(out) + html.escape(text[last:])


def overlap(before: str, after: str, longest: int = 2000) -> int:
    """How many first characters of `after` repeat the end of `before` (chunks overlap)."""
    for size in range(min(len(before), len(after), longest), 0, -1):
        if before.endswith(after[:size]):
            return size
    return 0


@dataclass(frozen=True)
class Window:
    """A chunk in its surroundings, as HTML: the text before it, the chunk, the text after it."""

    before: str
    chunk: str
    after: str
    marks: int


def text_window(chunks: Sequence[str], index: int, words: Sequence[str], radius: int = 1) -> Window:
    """Chunk `index` with `radius` neighbours each side, the overlaps between chunks shown once,
    every word of `words` in <mark> (`marks` counts them)."""
    if not 0 <= index < len(chunks):
        raise IndexError(f"no chunk {index}")
    first, last = max(0, index - radius), min(len(chunks), index + radius + 1)
    before = ""
    for position in range(first, index):
        before += chunks[position][overlap(before, chunks[position]):]
    chunk = chunks[index][overlap(before, chunks[index]):]
    after, tail = "", before + chunk
    for position in range(index + 1, last):
        piece = chunks[position][overlap(tail, chunks[position]):]
        after += piece
        tail += piece
    parts = [mark_words(part, words) for part in (before, chunk, after)]
    return Window(*parts, marks=sum(part.count("<mark>") for part in parts))
