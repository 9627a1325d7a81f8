"""Text file -> overlapping chunks, cut at paragraph, then sentence, then word boundaries.

Chunks are sized in characters (cheap, tokenizer-independent); the overlap keeps a sentence that
straddles a cut retrievable from either side. Encodings: BOMs, UTF-8, then a guess
(charset-normalizer when installed), then cp1252 / latin-1. Binary content is refused.
"""

from __future__ import annotations

import codecs
import re
import unicodedata
from collections.abc import Iterator
from pathlib import Path

from freeret_rag.items import Item
from freeret_rag.media.common import IngestError, MediaSettings, OnCap, Progress, cap_note, capped, item_id, report

_BOMS = (  # UTF-32 first: its little-endian BOM starts with UTF-16's
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_SENTENCE_END = re.compile(r"[.!?\u2026][\"'\u201d\u2019)\]]*\s")
_SPACES = re.compile(r"\s+")
_MAX_CONTROL_SHARE = 0.01


def _guess(data: bytes) -> str | None:
    """charset-normalizer's pick; among equally good picks prefer cp1252 (short Western texts tie)."""
    try:
        from charset_normalizer import from_bytes
    except ImportError:
        return None
    matches = list(from_bytes(data[:1_000_000]))
    if not matches:
        return None
    ties = [m.encoding for m in matches if (m.chaos, m.coherence) == (matches[0].chaos, matches[0].coherence)]
    encoding = "cp1252" if "cp1252" in ties else matches[0].encoding
    try:
        return data.decode(encoding)
    except (UnicodeDecodeError, LookupError):
        return None


def decode_text(data: bytes, path: Path) -> str:
    """Bytes -> str, or IngestError for binary content."""
    text = next((data.decode(encoding) for bom, encoding in _BOMS if data.startswith(bom)), None)
    if text is None:
        if b"\x00" in data[:8192]:
            raise IngestError(path, "looks like a binary file, not text")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = _guess(data)
        if text is None:
            try:
                text = data.decode("cp1252")
            except UnicodeDecodeError:
                text = data.decode("latin-1")
    sample = text[:100_000]
    controls = sum(1 for char in sample if char not in "\t\n\r\f" and unicodedata.category(char) == "Cc")
    if controls > _MAX_CONTROL_SHARE * len(sample):
        raise IngestError(path, "looks like a binary file, not text")
    return text


def normalize(text: str) -> str:
    """Unify newlines, drop trailing spaces and runs of blank lines; keep paragraph breaks."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\f", "\n\n")
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _break_before(text: str, low: int, high: int) -> int:
    """Best cut in text[low:high]: after a blank line, a sentence, a line, a space; else high."""
    paragraph = text.rfind("\n\n", low, high)
    if paragraph >= 0:
        return paragraph + 2
    sentences = list(_SENTENCE_END.finditer(text, low, high))
    if sentences:
        return sentences[-1].end()
    for separator in ("\n", " "):
        position = text.rfind(separator, low, high)
        if position >= 0:
            return position + 1
    return high


def _word_start(text: str, position: int, limit: int) -> int:
    """First word start at or after position (before limit), so chunks never begin mid-word."""
    if text[position - 1].isspace():
        return position
    match = _SPACES.search(text, position, limit)
    return match.end() if match else position


def chunk_text(text: str, size: int, overlap: int) -> list[str]:
    """Split into chunks of at most `size` chars; each starts within the last `overlap` of the previous."""
    chunks: list[str] = []
    start, length = 0, len(text)
    while start < length:
        end = min(start + size, length)
        if end < length:
            end = _break_before(text, start + size // 2, end)
        chunk = text[start:end].strip()
        if chunk:
            chunks.append(chunk)
        if end >= length:
            break
        start = _word_start(text, max(end - overlap, start + 1), end)
    return chunks


def load_text(
    path: Path, doc_id: str, asset_dir: Path, progress: Progress | None, settings: MediaSettings,
    on_cap: OnCap | None = None,
) -> Iterator[Item]:
    text = normalize(decode_text(path.read_bytes(), path))
    if not text:
        raise IngestError(path, "empty file")
    chunks = chunk_text(text, settings.text_chunk_chars, settings.text_overlap_chars)
    kept = capped(len(chunks), settings.max_chunks)
    if kept < len(chunks) and on_cap is not None:
        on_cap(cap_note(kept, len(chunks), "chunks", "--max-chunks"))
    return _items(chunks[:kept], path, doc_id, progress)


def _items(chunks: list[str], path: Path, doc_id: str, progress: Progress | None) -> Iterator[Item]:
    for index, chunk in enumerate(chunks):
        yield Item(
            kind="text",
            text=chunk,
            item_id=item_id(doc_id, "text", index),
            doc_id=doc_id,
            source=path.name,
            chunk=index,
        )
        report(progress, index + 1, len(chunks))
