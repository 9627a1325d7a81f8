"""Retrieval datasets in BEIR layout (read and written), turned into the app's Items and Queries.

    DATASET_DIR/corpus.jsonl    {"_id", "text", "title"?, "image"?, "pdf"?, "page"?, "video"?, "t_start"?, "t_end"?}
    DATASET_DIR/queries.jsonl   {"_id", "text", "image"?}
    DATASET_DIR/qrels/test.tsv  query-id <tab> corpus-id <tab> score   (with a header line)

Media paths are relative to DATASET_DIR. Media records become exactly the Items that `Library.add`
indexes for those files, made by the same loaders (`freeret_rag.media.load_items`) with the same
`MediaSettings`: a record with `image` is the image item of that file; `pdf` + `page` (1-based) is
that page as the PDF loader renders it (size, text layer); `video` + `t_start`/`t_end` (seconds) is
the segment the video loader cuts at that start when its segments are `t_end - t_start` seconds
long (the settings' `video_segment_s` without `t_end`), with the loader's frames. A span the loader
does not cut is an error, not a silently different segment. Anything else is a text item (title and
text). A non-empty record text replaces the loader's text. Every item's `item_id` and `doc_id` is the
corpus `_id`.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..items import Item, Query
from ..media import MediaSettings, load_items
from .metrics import Qrels

SPAN_TOLERANCE_S = 1e-3  # the video loader rounds segment bounds to milliseconds


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


def write_beir(out: Path, corpus: Iterable[Mapping[str, Any]], queries: Iterable[Mapping[str, Any]],
               qrels: Mapping[str, Mapping[str, int]]) -> None:
    """Write corpus.jsonl, queries.jsonl and qrels/test.tsv (with header) under `out`."""
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    for name, records in (("corpus.jsonl", corpus), ("queries.jsonl", queries)):
        with (out / name).open("w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(dict(record), ensure_ascii=False) + "\n" for record in records)
    lines = ["query-id\tcorpus-id\tscore"]
    lines += [f"{qid}\t{doc}\t{grade}" for qid, grades in qrels.items() for doc, grade in grades.items()]
    (out / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def safe_name(record_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in record_id)


def record_text(record: dict[str, Any]) -> str:
    return "\n".join(part for part in (record.get("title", ""), record.get("text", "")) if part).strip()


class MediaItems:
    """The app's media loaders (`freeret_rag.media.load_items`) over one dataset's files.

    Each file is loaded once (a PDF up to the highest page asked for, a video once per segment
    length) and its Items are handed out to the records that name them. Asset files go under
    `asset_dir/<file's relative path, made safe>/`. `close()` closes loaders left half-read.
    """

    def __init__(self, root: Path, asset_dir: Path, settings: MediaSettings) -> None:
        self.root, self.asset_dir, self.settings = root, asset_dir, settings
        self._pages: dict[Path, tuple[Iterator[Item], dict[int, Item]]] = {}
        self._segments: dict[tuple[Path, float], list[Item]] = {}

    def _folder(self, path: Path, suffix: str = "") -> str:
        return safe_name(path.relative_to(self.root).as_posix()) + suffix

    def image(self, path: Path) -> Item:
        return next(load_items(path, self._folder(path), self.asset_dir, settings=self.settings))

    def page(self, pdf: Path, page: int) -> Item:
        """Page `page` (1-based) as the PDF loader renders it."""
        if pdf not in self._pages:
            self._pages[pdf] = (load_items(pdf, self._folder(pdf), self.asset_dir, settings=self.settings), {})
        pages, seen = self._pages[pdf]
        if page not in seen:
            for item in pages:  # read on only as far as needed
                seen[item.page] = item
                if item.page >= page:
                    break
        if page not in seen:
            raise ValueError(f"{pdf.name}: the PDF loader gave no page {page} (the file has fewer pages, "
                             "or that page could not be rendered)")
        return seen[page]

    def segment(self, video: Path, t_start: float, t_end: float | None) -> Item:
        """The segment starting at `t_start` when the video loader cuts segments of (t_end - t_start) s
        (of the settings' `video_segment_s` without `t_end`)."""
        length = self.settings.video_segment_s if t_end is None else t_end - t_start
        if length <= 0:
            raise ValueError(f"{video.name}: a segment must end after it starts, got {t_start:g}-{t_end:g} s")
        key = (video, round(length, 3))
        if key not in self._segments:
            settings = replace(self.settings, video_segment_s=length)
            self._segments[key] = list(load_items(video, self._folder(video, f"_{length:g}s"), self.asset_dir,
                                                  settings=settings))
        segments = self._segments[key]
        for item in segments:
            if abs(item.t_start - t_start) < SPAN_TOLERANCE_S and (
                    t_end is None or abs(item.t_end - t_end) < SPAN_TOLERANCE_S):
                return item
        spans = ", ".join(f"{item.t_start:g}-{item.t_end:g}" for item in segments)
        raise ValueError(f"{video.name}: {t_start:g}-{'end' if t_end is None else f'{t_end:g}'} s is not a "
                         f"segment the app indexes; cut into {length:g} s segments it has {spans} s")

    def close(self) -> None:
        for pages, _ in self._pages.values():
            close = getattr(pages, "close", None)
            if close is not None:
                close()


def corpus_item(dataset: BeirDataset, record: dict[str, Any], media: MediaItems) -> Item:
    """One corpus record as an Item: media records come from the app's loaders (see the module doc)."""
    rid, text = str(record["_id"]), record_text(record)
    if record.get("image"):
        loaded = media.image(dataset.root / record["image"])
    elif record.get("pdf"):
        loaded = media.page(dataset.root / record["pdf"], int(record.get("page", 1)))
    elif record.get("video"):
        t_end = float(record["t_end"]) if record.get("t_end") is not None else None
        loaded = media.segment(dataset.root / record["video"], float(record.get("t_start", 0.0)), t_end)
    else:
        return Item("text", text=text, source=str(record.get("title", "")), item_id=rid, doc_id=rid)
    return replace(loaded, item_id=rid, doc_id=rid, text=text or loaded.text)


def corpus_items(dataset: BeirDataset, asset_dir: str | Path,
                 settings: MediaSettings = MediaSettings()) -> Iterator[Item]:
    """Every corpus record as an Item, in file order; media files are loaded with `settings`
    (pass the library's `media_settings` so that eval items are the ones it would index)."""
    asset_dir = Path(asset_dir)
    asset_dir.mkdir(parents=True, exist_ok=True)
    media = MediaItems(dataset.root, asset_dir, settings)
    try:
        for record in dataset.corpus.values():
            yield corpus_item(dataset, record, media)
    finally:
        media.close()


def query_of(dataset: BeirDataset, qid: str) -> Query:
    record = dataset.queries[qid]
    image = record.get("image")
    return Query(text=record.get("text", ""), image=str(dataset.root / image) if image else None)
