"""Video -> one item per time segment, each carrying a few evenly sampled frames.

decord is imported inside the functions: importing it maps the CUDA libraries of torch (+420 MiB),
which text-only use of the app should not pay for.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from PIL import Image

from freeret_rag.items import Item
from freeret_rag.media.common import (
    IngestError,
    MediaSettings,
    OnCap,
    Progress,
    asset_folder,
    cap_note,
    capped,
    item_id,
    report,
    save_image,
    save_thumbnail,
)

logger = logging.getLogger(__name__)

# A last segment shorter than this share of a segment is merged into the previous one rather than
# becoming an item of a few frames (10.4 s at 10 s segments -> one 0-10.4 s segment).
_MIN_TAIL_SHARE = 0.25


def plan_segments(duration: float, settings: MediaSettings) -> list[tuple[float, float]]:
    """Contiguous (start, end) spans covering [0, duration]; at most video_max_segments of them.

    Long videos get longer segments instead of losing their end.
    """
    length = max(settings.video_segment_s, duration / settings.video_max_segments)
    count = max(1, math.ceil(duration / length - 1e-9))
    if count > 1 and duration - (count - 1) * length < _MIN_TAIL_SHARE * length:
        count -= 1
    starts = [index * length for index in range(count)]
    return [(start, duration if index == count - 1 else start + length) for index, start in enumerate(starts)]


def frame_indices(start: float, end: float, fps: float, frame_count: int, per_segment: int) -> list[int]:
    """Centres of per_segment equal slices of [start, end), as distinct frame numbers."""
    step = (end - start) / per_segment
    indices = (min(int((start + (k + 0.5) * step) * fps), frame_count - 1) for k in range(per_segment))
    return list(dict.fromkeys(indices))


def open_video(path: Path) -> tuple[Any, float, int]:
    """Return (reader, fps, frame count) or raise IngestError for anything decord cannot play."""
    import decord

    try:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0))
        frame_count, fps = len(reader), float(reader.get_avg_fps())
    except (RuntimeError, decord.DECORDError) as error:
        raise IngestError(path, f"could not be decoded as video (corrupt, truncated or unsupported codec): "
                                f"{str(error).splitlines()[0]}") from None
    if frame_count <= 0 or not fps > 0:
        raise IngestError(path, "the video has no frames or no frame rate")
    return reader, fps, frame_count


def load_video(
    path: Path, doc_id: str, asset_dir: Path, progress: Progress | None, settings: MediaSettings,
    on_cap: OnCap | None = None,
) -> Iterator[Item]:
    reader, fps, frame_count = open_video(path)  # eager: file-level errors surface at call time
    minutes = frame_count / fps / 60
    kept = capped(minutes, settings.max_video_minutes)
    if kept < minutes and on_cap is not None:
        on_cap(cap_note(kept, round(minutes, 1), "minutes", "--max-video-minutes"))
    return _segments(reader, fps, frame_count, kept * 60, path, doc_id, asset_dir, progress, settings)


def _segments(
    reader: Any,
    fps: float,
    frame_count: int,
    seconds: float,
    path: Path,
    doc_id: str,
    asset_dir: Path,
    progress: Progress | None,
    settings: MediaSettings,
) -> Iterator[Item]:
    """Segments of the first `seconds` of the video."""
    import decord

    folder = asset_folder(asset_dir, doc_id)
    spans = plan_segments(seconds, settings)
    produced = 0
    for number, (start, end) in enumerate(spans):
        indices = frame_indices(start, end, fps, frame_count, settings.video_frames_per_segment)
        try:
            frames = [Image.fromarray(frame) for frame in reader.get_batch(indices).asnumpy()]
        except (RuntimeError, decord.DECORDError) as error:
            logger.warning("%s: frames at %.1f-%.1f s could not be decoded, skipped: %s", path.name, start, end, error)
            report(progress, number + 1, len(spans))
            continue
        paths = tuple(
            save_image(frame, folder / f"seg{number:04d}_f{k}.jpg", settings, settings.video_frame_max_side)
            for k, frame in enumerate(frames)
        )
        thumb = save_thumbnail(frames[len(frames) // 2], folder / f"seg{number:04d}_thumb.jpg", settings)
        produced += 1
        yield Item(
            kind="video_segment",
            images=paths,
            item_id=item_id(doc_id, "video_segment", number),
            doc_id=doc_id,
            source=path.name,
            t_start=round(start, 3),
            t_end=round(end, 3),
            thumbnail=thumb,
        )
        report(progress, number + 1, len(spans))
    if produced == 0:
        raise IngestError(path, "no frame of the video could be decoded (corrupt file?)")
