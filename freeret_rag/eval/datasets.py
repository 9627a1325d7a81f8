"""Retrieval datasets in BEIR layout, turned into the app's Items and Queries.

    DATASET_DIR/corpus.jsonl    {"_id", "text", "title"?, "image"?, "pdf"?, "page"?, "video"?, "t_start"?, "t_end"?}
    DATASET_DIR/queries.jsonl   {"_id", "text", "image"?}
    DATASET_DIR/qrels/test.tsv  query-id <tab> corpus-id <tab> score   (with a header line)

Media paths are relative to DATASET_DIR. A record with `image` becomes an image item, `pdf` + `page`
(1-based) a rendered PDF page, `video` (+ `t_start`/`t_end` seconds) a video segment with sampled
frames, anything else a text item. Every item's `item_id` is the corpus `_id`.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..items import Item, Query
from .metrics import Qrels

FRAMES_PER_SEGMENT = 4
PAGE_DPI = 100


@dataclass(frozen=True)
class BeirDataset:
    """A loaded dataset: raw records plus graded qrels."""

    root: Path
    corpus: dict[str, dict[str, Any]]
    queries: dict[str, dict[str, Any]]
    qrels: Qrels

    @property
    def name(self) -> str:
        return self.root.name

    def judged_queries(self) -> list[str]:
        """Ids of the queries with at least one relevant document, in file order."""
        return [qid for qid in self.queries if any(g > 0 for g in self.qrels.get(qid, {}).values())]


def read_jsonl(path: Path) -> dict[str, dict[str, Any]]:
    records: dict[str, dict[str, Any]] = {}
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if line.strip():
                record = json.loads(line)
                if "_id" not in record:
                    raise ValueError(f"{path}:{number}: record has no _id")
                records[str(record["_id"])] = record
    return records


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8", newline="") as handle:
        rows = csv.reader(handle, delimiter="\t")
        next(rows, None)  # header
        for row in rows:
            if row:
                qid, doc, score = row[0], row[1], row[2]
                qrels.setdefault(qid, {})[doc] = int(score)
    return qrels


def load_beir(root: str | Path, split: str = "test") -> BeirDataset:
    """Read a BEIR-layout folder; raise ValueError when qrels name unknown ids."""
    root = Path(root).resolve()
    for needed in ("corpus.jsonl", "queries.jsonl", f"qrels/{split}.tsv"):
        if not (root / needed).is_file():
            raise FileNotFoundError(f"{root} is not a BEIR dataset: {needed} is missing")
    dataset = BeirDataset(root, read_jsonl(root / "corpus.jsonl"), read_jsonl(root / "queries.jsonl"),
                          read_qrels(root / "qrels" / f"{split}.tsv"))
    unknown = sorted({q for q in dataset.qrels if q not in dataset.queries}
                     | {d for grades in dataset.qrels.values() for d in grades if d not in dataset.corpus})
    if unknown:
        raise ValueError(f"qrels name ids that are not in the corpus or queries: {unknown[:5]}")
    return dataset


def render_pdf_page(pdf: Path, page: int, out: Path, dpi: int = PAGE_DPI) -> tuple[Path, str]:
    """Render 1-based `page` of `pdf` to PNG at `out`; return the path and the page's text layer."""
    import pymupdf

    with pymupdf.open(pdf) as document:
        if not 1 <= page <= document.page_count:
            raise ValueError(f"{pdf.name} has {document.page_count} pages; page {page} does not exist")
        loaded = document[page - 1]
        if not out.exists():
            loaded.get_pixmap(dpi=dpi).save(out)
        return out, loaded.get_text().strip()


def sample_video_frames(video: Path, t_start: float, t_end: float | None, out_stem: Path,
                        count: int = FRAMES_PER_SEGMENT) -> tuple[Path, ...]:
    """Save `count` evenly spaced frames of [t_start, t_end) as JPEGs named `<out_stem>_<i>.jpg`."""
    import decord
    from PIL import Image

    reader = decord.VideoReader(str(video))
    fps = reader.get_avg_fps()
    first = min(int(t_start * fps), len(reader) - 1)
    last = len(reader) if t_end is None else max(first + 1, min(int(t_end * fps), len(reader)))
    step = (last - first) / count
    indices = sorted({first + int(step * (i + 0.5)) for i in range(count)})
    paths = tuple(out_stem.with_name(f"{out_stem.name}_{i}.jpg") for i in range(len(indices)))
    if not all(path.exists() for path in paths):
        for path, frame in zip(paths, reader.get_batch(indices).asnumpy()):
            Image.fromarray(frame).save(path, quality=90)
    return paths


def safe_name(record_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in record_id)


def record_text(record: dict[str, Any]) -> str:
    return "\n".join(part for part in (record.get("title", ""), record.get("text", "")) if part).strip()


def corpus_item(dataset: BeirDataset, record: dict[str, Any], asset_dir: Path) -> Item:
    """One corpus record as an Item (renders pages / samples frames into `asset_dir`)."""
    rid, text = str(record["_id"]), record_text(record)
    common = {"item_id": rid, "doc_id": rid}
    if record.get("image"):
        path = dataset.root / record["image"]
        return Item("image", text=text, images=(str(path),), source=path.name, **common)
    if record.get("pdf"):
        pdf, page = dataset.root / record["pdf"], int(record.get("page", 1))
        image, page_text = render_pdf_page(pdf, page, asset_dir / f"{safe_name(rid)}.png")
        return Item("pdf_page", text=text or page_text, images=(str(image),), source=pdf.name, page=page, **common)
    if record.get("video"):
        video = dataset.root / record["video"]
        t_start = float(record.get("t_start", 0.0))
        t_end = float(record["t_end"]) if record.get("t_end") is not None else None
        frames = sample_video_frames(video, t_start, t_end, asset_dir / safe_name(rid))
        return Item("video_segment", text=text, images=tuple(map(str, frames)), source=video.name,
                    t_start=t_start, t_end=t_end, **common)
    return Item("text", text=text, source=str(record.get("title", "")), **common)


def corpus_items(dataset: BeirDataset, asset_dir: str | Path) -> Iterator[Item]:
    """Every corpus record as an Item, in file order."""
    asset_dir = Path(asset_dir)
    asset_dir.mkdir(parents=True, exist_ok=True)
    for record in dataset.corpus.values():
        yield corpus_item(dataset, record, asset_dir)


def query_of(dataset: BeirDataset, qid: str) -> Query:
    record = dataset.queries[qid]
    image = record.get("image")
    return Query(text=record.get("text", ""), image=str(dataset.root / image) if image else None)
