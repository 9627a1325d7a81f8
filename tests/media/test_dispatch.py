"""Choosing a loader: content before extension, clear refusals, stable ids, settings checks."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from freeret_rag.items import Item
from freeret_rag.media import SUPPORTED_EXTENSIONS, IngestError, MediaSettings, kind_for_path, load_items


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("name", "kind"),
    [("shared-mime-info-spec.pdf", "pdf"), ("Garden.jpg", "image"), ("FreshFlower.webp", "image"),
     ("blobs-l.svg", "image"), ("nature-scenes.mp4", "video"), ("README.md", "text")],
)
def test_kind_of_samples(sample, name: str, kind: str) -> None:
    assert kind_for_path(sample(name)) == kind


def test_content_wins_over_extension(sample, write) -> None:
    assert kind_for_path(write("image.pdf", png_bytes())) == "image"
    assert kind_for_path(sample("shared-mime-info-spec.pdf", "doc.jpg")) == "pdf"
    assert kind_for_path(sample("nature-scenes.mp4", "clip.txt")) == "video"
    assert kind_for_path(sample("blobs-l.svg", "drawing")) == "image"
    assert kind_for_path(write("NOTES", b"plain words, no extension\n")) == "text"
    assert kind_for_path(write("noise.mp4", b"\x01\x02 not a video")) == "video"  # the video loader refuses it


def test_every_supported_extension_maps_to_a_kind() -> None:
    assert set(SUPPORTED_EXTENSIONS.values()) == {"pdf", "image", "video", "text"}
    assert all(ext.startswith(".") and ext == ext.lower() for ext in SUPPORTED_EXTENSIONS)
    assert kind_for_path("missing/Photo.JPG") == "image"  # unreadable: extension only, any case


def test_unsupported_types_are_refused(write, assets: Path) -> None:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("word/document.xml", "<w:document/>")
    with pytest.raises(IngestError, match=r"unsupported file type \.docx"):
        load_items(write("report.docx", archive.getvalue()), "doc", assets)
    with pytest.raises(IngestError, match=r"unsupported file type \(no extension\)"):
        load_items(write("blob", b"\x00\x01\x02" * 100), "doc", assets)


def test_missing_and_empty_files(tmp_path: Path, write, assets: Path) -> None:
    with pytest.raises(IngestError, match="file not found") as caught:
        load_items(tmp_path / "gone.pdf", "doc", assets)
    assert caught.value.path.name == "gone.pdf" and str(caught.value) == "gone.pdf: file not found"
    with pytest.raises(IngestError, match="not a regular file"):
        load_items(tmp_path, "doc", assets)
    for name in ("empty.pdf", "empty.jpg", "empty.mp4", "empty.txt"):
        with pytest.raises(IngestError, match="empty file"):
            load_items(write(name, b""), "doc", assets)


def test_ids_are_stable_and_metadata_round_trips(sample, tmp_path: Path) -> None:
    path = sample("shared-mime-info-spec.pdf")
    first = list(load_items(path, "spec", tmp_path / "a"))
    second = list(load_items(path, "spec", tmp_path / "b"))
    assert [item.item_id for item in first] == [item.item_id for item in second]
    item = first[3]
    assert Item.from_metadata(item.item_id, item.to_metadata(), item.text) == item


def test_bad_doc_id_and_settings_are_refused(sample, assets: Path) -> None:
    with pytest.raises(ValueError, match="doc_id"):
        list(load_items(sample("Garden.jpg"), "../escape", assets))
    with pytest.raises(ValueError, match="overlap"):
        MediaSettings(text_chunk_chars=100, text_overlap_chars=100)
    with pytest.raises(ValueError, match="segment"):
        MediaSettings(video_frames_per_segment=0)
