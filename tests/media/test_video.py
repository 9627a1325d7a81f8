"""Video segments: timing coverage, sampled frames on disk, long-video caps, corrupt files."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageStat

from freeret_rag.media import IngestError, MediaSettings, load_items
from freeret_rag.media.video import frame_indices, plan_segments

VIDEO = "nature-scenes.mp4"  # 9 s: 0-3 ladybird, 3-6 yellow flower, 6-9 garden


def difference(a: Image.Image, b: Image.Image) -> float:
    small = (32, 24)
    diff = ImageChops.difference(a.convert("RGB").resize(small), b.convert("RGB").resize(small))
    return sum(ImageStat.Stat(diff).mean)


def test_short_video_is_one_segment_by_default(sample, assets: Path) -> None:
    calls: list[tuple[int, int]] = []
    items = list(load_items(sample(VIDEO), "vid", assets, progress=lambda d, t: calls.append((d, t))))
    assert len(items) == 1 and calls == [(1, 1)]
    item = items[0]
    assert (item.kind, item.item_id, item.t_start, item.t_end) == ("video_segment", "vid:video_segment:0", 0.0, 9.0)
    assert len(item.images) == 4 and item.location == "0:00-0:09"


def test_segments_cover_the_video_and_show_the_right_scene(sample, assets: Path) -> None:
    settings = MediaSettings(video_segment_s=3.0, video_frames_per_segment=3)
    items = list(load_items(sample(VIDEO), "vid", assets, settings=settings))
    assert [(item.t_start, item.t_end) for item in items] == [(0.0, 3.0), (3.0, 6.0), (6.0, 9.0)]
    photos = [Image.open(sample(name)) for name in ("LadyBird.jpg", "YellowFlower.jpg", "Garden.jpg")]
    for scene, item in enumerate(items):
        assert len(item.images) == 3 and all(Path(path).parent == assets / "vid" for path in item.images)
        assert Path(item.thumbnail).exists()
        for path in item.images:
            with Image.open(path) as frame:
                assert frame.size == (320, 240)
                scores = [difference(frame, photo) for photo in photos]
            assert scores.index(min(scores)) == scene, (item.location, scores)


def test_last_partial_segment_is_kept(sample, assets: Path) -> None:
    items = list(load_items(sample(VIDEO), "vid", assets, settings=MediaSettings(video_segment_s=4.0)))
    assert [(item.t_start, item.t_end) for item in items] == [(0.0, 4.0), (4.0, 8.0), (8.0, 9.0)]


def test_segment_plan() -> None:
    settings = MediaSettings(video_segment_s=10.0, video_max_segments=120)
    assert plan_segments(9.0, settings) == [(0.0, 9.0)]
    assert plan_segments(10.2, settings) == [(0.0, 10.2)]  # a sliver is merged, not its own item
    assert plan_segments(25.0, settings) == [(0.0, 10.0), (10.0, 20.0), (20.0, 25.0)]
    hour = plan_segments(3600.0, settings)
    assert len(hour) == 120 and hour[0] == (0.0, 30.0) and hour[-1][1] == 3600.0  # longer, not dropped
    assert all(a[1] == pytest.approx(b[0]) for a, b in zip(hour, hour[1:]))


def test_frame_indices_are_spread_and_distinct() -> None:
    assert frame_indices(0.0, 3.0, 12.0, 108, 4) == [4, 13, 22, 31]
    assert frame_indices(0.0, 0.1, 12.0, 2, 4) == [0, 1]  # fewer frames than asked: no duplicates
    assert frame_indices(8.0, 9.0, 12.0, 108, 2)[-1] <= 107


def test_random_bytes_mp4_is_refused(write, assets: Path) -> None:
    with pytest.raises(IngestError, match="could not be decoded as video"):
        load_items(write("noise.mp4", os.urandom(20_000)), "noise", assets)


@pytest.mark.parametrize("keep", [0.3, 0.9])
def test_truncated_mp4_is_refused(sample, write, assets: Path, keep: float) -> None:
    data = sample(VIDEO).read_bytes()
    with pytest.raises(IngestError, match="could not be decoded as video"):
        load_items(write("cut.mp4", data[: int(len(data) * keep)]), "cut", assets)


def test_video_with_unicode_name(sample, assets: Path) -> None:
    items = list(load_items(sample(VIDEO, "Natur Szenen ü 🎥.mp4"), "uni", assets))
    assert items[0].source == "Natur Szenen ü 🎥.mp4"


def test_a_video_over_the_minutes_cap_gives_its_first_minutes_and_says_so(sample, assets: Path) -> None:
    import decord

    reader = decord.VideoReader(str(sample(VIDEO)))
    minutes = len(reader) / reader.get_avg_fps() / 60  # 9 s, by decord itself
    notes: list[str] = []
    settings = MediaSettings(video_segment_s=3.0, max_video_minutes=0.1)  # the first 6 s
    items = list(load_items(sample(VIDEO), "vid", assets, settings=settings, on_cap=notes.append))
    assert [(item.t_start, item.t_end) for item in items] == [(0.0, 3.0), (3.0, 6.0)]
    assert notes == [f"indexed the first 0.1 of {round(minutes, 1)} minutes (cap --max-video-minutes)"]
    uncapped = list(load_items(sample(VIDEO), "all", assets, settings=replace(settings, max_video_minutes=0),
                               on_cap=notes.append))
    assert uncapped[-1].t_end == 9.0 and len(notes) == 1
