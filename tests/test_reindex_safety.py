"""Re-indexing never destroys what the new model cannot read (issue 11, item 1).

Every sample file is indexed with the tiny vision model, then re-indexed with the tiny text-only
Llama, then back with the vision model. The image and video documents cannot be embedded by the
text model: they must stay listed (kept in their old index, marked as waiting), keep their page
and frame images on disk, and come back searchable after the re-index with a vision model. The
expected sets are taken from the files and the first index (by kind), not from the code tested.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from freeret_rag.engine import FreeRet
from freeret_rag.library import WAITING_FOR_IMAGES, Library
from freeret_rag.store import list_indexes

from test_library import copy_samples

REPO = Path(__file__).resolve().parents[1]


def asset_folders(data: Path) -> set[str]:
    return {p.name for p in (data / "assets").iterdir() if p.is_dir() and any(p.iterdir())}


@pytest.fixture(scope="module")
def engines(tiny_model_dirs) -> dict[str, FreeRet]:
    return {"vision": FreeRet.from_pretrained(tiny_model_dirs["qwen2_vl"]),
            "text": FreeRet.from_pretrained(tiny_model_dirs["llama"])}


def test_reindex_with_a_text_model_keeps_what_it_cannot_see_and_a_vision_model_brings_it_back(
        engines, tiny_model_dirs, tmp_path):
    src, data = copy_samples(tmp_path / "in"), tmp_path / "data"
    vision = Library(engines["vision"], data)
    first = vision.add([src])
    assert not first.skipped
    everything = {doc.doc_id: doc for doc in vision.documents()}
    # What a text-only model can read: text files, and PDF pages by their text layer.
    readable = {d for d, doc in everything.items() if doc.file_type in ("text", "pdf")}
    unseeable = set(everything) - readable
    assert len(everything) == 9 and len(readable) == 2 and len(unseeable) == 7
    folders = asset_folders(data)
    assert folders >= unseeable  # image thumbnails, video frames, PDF pages

    text = Library(engines["text"], data, allow_mismatch=True)
    assert sorted(d.doc_id for d in text.waiting()) == sorted(everything)  # all wait before the re-index
    plan = text.reindex_plan()
    assert sorted(doc.doc_id for doc in plan.unseeable) == sorted(unseeable)  # told before it starts
    report = text.reindex()
    assert sorted(doc.doc_id for doc in report.added) == sorted(readable)
    assert not report.skipped
    assert sorted(Path(w.path).name for w in report.waiting) == sorted(everything[d].source for d in unseeable)

    # Nothing is lost: the text model searches what it can read; the rest waits, listed, with its assets.
    assert {d.doc_id for d in text.documents()} == readable
    waiting = text.waiting()
    assert {d.doc_id: d.waiting for d in waiting} == {d: WAITING_FOR_IMAGES for d in unseeable}
    assert asset_folders(data) == folders
    assert not text.needs_reindex
    reopened = Library(engines["text"], data)  # no mismatch: only the waiting documents are elsewhere
    assert {d.doc_id for d in reopened.waiting()} == unseeable

    # `list` (model-free, another process) shows every document, the waiting ones marked.
    listed = subprocess.run([sys.executable, "-m", "freeret_rag", "--data-dir", str(data), "list", "--json"],
                            cwd=REPO, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert listed.returncode == 0, listed.stderr[-2000:]
    rows = {row["doc_id"]: row.get("waiting") for row in json.loads(listed.stdout)}
    assert rows == {d: (WAITING_FOR_IMAGES if d in unseeable else None) for d in everything}

    # Re-indexing with the text model again moves nothing and deletes nothing.
    again = Library(engines["text"], data).reindex()
    assert not again.added and not again.skipped and {d.doc_id for d in text.waiting()} == unseeable

    back = Library(engines["vision"], data, allow_mismatch=True)
    assert back.needs_reindex
    restored = back.reindex()
    assert sorted(doc.doc_id for doc in restored.added) == sorted(readable) and not restored.waiting
    final = Library(engines["vision"], data)
    assert {d.doc_id for d in final.documents()} == set(everything) and final.waiting() == []
    assert [i.model_id for i in list_indexes(final.client)] == [engines["vision"].model_id]
    assert asset_folders(data) == folders
    assert final.search("LadyBird", k=1, kinds=["image"], rerank=False)[0].item.source == "LadyBird.jpg"


def test_a_waiting_document_can_be_deleted_with_its_assets(engines, tmp_path):
    src, data = copy_samples(tmp_path / "in", ["LadyBird.jpg", "README.md"]), tmp_path / "data"
    Library(engines["vision"], data).add([src])
    text = Library(engines["text"], data, allow_mismatch=True)
    text.reindex()
    [bird] = text.waiting()
    assert (data / "assets" / bird.doc_id).is_dir()
    assert text.delete(bird.doc_id).doc_id == bird.doc_id
    assert text.waiting() == [] and not (data / "assets" / bird.doc_id).exists()
    assert [i.model_id for i in list_indexes(text.client)] == [engines["text"].model_id]
    back = Library(engines["vision"], data, allow_mismatch=True)
    back.reindex()
    assert [d.source for d in back.documents()] == ["README.md"]  # a deleted document never comes back


def test_cli_reindex_of_images_only_keeps_them_waiting_and_unblocks_the_text_model(engines, tiny_model_dirs, tmp_path):
    src, data = copy_samples(tmp_path / "in", ["LadyBird.jpg"]), tmp_path / "data"
    [bird] = Library(engines["vision"], data).add([src]).added

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "freeret_rag", "--model", str(tiny_model_dirs["llama"]),
                               "--data-dir", str(data), *args], cwd=REPO, capture_output=True, text=True,
                              timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})

    done = cli("reindex", "-q")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "1 document(s) cannot be read" in done.stderr  # said before the re-index ran
    assert "kept 1 document(s) in the old index" in done.stdout and "waiting LadyBird.jpg" in done.stdout
    text = Library(engines["text"], data)  # no mismatch any more: the text model can add files
    assert not text.needs_reindex and [d.doc_id for d in text.waiting()] == [bird.doc_id]
    readme = copy_samples(tmp_path / "more", ["README.md"]) / "README.md"
    assert [d.source for d in text.add([readme]).added] == ["README.md"]
    again = cli("reindex")
    assert again.returncode == 0 and "nothing to re-index; 1 document(s) still waiting" in again.stdout
