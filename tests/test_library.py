"""The library with the real engine on tiny offline models and real sample files (copied to tmp):
lifecycle, edge-case files, text-only models, model mismatch and re-index, crash safety (a killed
subprocess), persistence across processes, and a real Chroma server on loopback."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path
from types import SimpleNamespace

import pymupdf
import pytest
from PIL import Image

from freeret_rag.engine import EngineSettings, FreeRet
from freeret_rag.errors import FreeRetError, IndexMismatchError
from freeret_rag.library import CANNOT_SEE, Library, Skipped, iter_files
from freeret_rag.store import list_indexes

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "tests" / "data" / "samples"
PDF, README = "shared-mime-info-spec.pdf", "README.md"
IMAGES = ("Arc-Colors-Transparent-Wallpaper.png", "FreshFlower.webp", "Garden.jpg", "LadyBird.jpg",
          "YellowFlower.jpg", "blobs-l.svg")


def copy_samples(target: Path, names=None) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    for name in names or [p.name for p in SAMPLES.iterdir() if p.is_file()]:
        shutil.copyfile(SAMPLES / name, target / name)
    return target


@pytest.fixture(scope="module")
def engine(tiny_model_dirs) -> FreeRet:
    return FreeRet.from_pretrained(tiny_model_dirs["qwen2_vl"])


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, engine):
    """Every sample indexed once (shared by the read-only tests below)."""
    root = tmp_path_factory.mktemp("indexed")
    src = copy_samples(root / "in")
    library = Library(engine, root / "data")
    events = []
    report = library.add([src], progress=events.append)
    return SimpleNamespace(library=library, src=src, report=report, events=events, data=root / "data")


def chroma_rows(library: Library, **where) -> list[dict]:
    return library.store.collection.get(where=where or None, include=["metadatas"])["metadatas"]


# -- add / list ----------------------------------------------------------------------------------
def test_every_sample_is_indexed_with_its_metadata_and_assets(indexed):
    report, library = indexed.report, indexed.library
    assert report.skipped == [] and report.unchanged == []
    docs = {doc.source: doc for doc in library.documents()}
    assert set(docs) == {PDF, README, "nature-scenes.mp4", *IMAGES}
    assert {name: doc.file_type for name, doc in docs.items()} == {
        PDF: "pdf", README: "text", "nature-scenes.mp4": "video", **dict.fromkeys(IMAGES, "image")}
    assert docs[PDF].items == pymupdf.open(SAMPLES / PDF).page_count
    assert sum(doc.items for doc in docs.values()) == len(library) == library.store.collection.count()

    pages = library.items(docs[PDF].doc_id)
    assert [item.page for item in pages] == list(range(1, len(pages) + 1))
    assert "MIME" in pages[0].text
    segments = library.items(docs["nature-scenes.mp4"].doc_id)
    assert segments[0].t_start == 0 and 8.5 <= segments[-1].t_end <= 9.5

    for doc in docs.values():
        assert doc.doc_id == doc.content_hash[:16] and len(doc.content_hash) == 64
        assert (doc.model_id, doc.prompt_version) == (library.engine.model_id, library.engine.prompt_version)
    for meta in chroma_rows(library):
        assert meta["complete"] is True and meta["content_hash"].startswith(meta["doc_id"])
        for path in [meta.get("thumbnail"), *json.loads(meta["images"])]:
            if path:
                assert Path(path).is_file() and Path(path).parent == indexed.data / "assets" / meta["doc_id"]
    assert all(meta.get("thumbnail") for meta in chroma_rows(library) if meta["kind"] != "text")


def test_progress_reports_each_file_and_each_page(indexed):
    by_file: dict[str, list] = {}
    for event in indexed.events:
        by_file.setdefault(Path(event.path).name, []).append(event)
    assert len(by_file) == 9
    for name, events in by_file.items():
        assert events[0].stage == "file" and events[-1].stage == "added"
        assert {event.files for event in events} == {9}
        done = [event.done for event in events if event.stage == "item"]
        assert done == list(range(1, len(done) + 1)) and done[-1] == events[-1].done
    pdf_items = [event for event in by_file[PDF] if event.stage == "item"]
    assert len(pdf_items) == 17 and pdf_items[-1].total == 17


def test_adding_the_same_content_again_embeds_nothing(indexed, monkeypatch, tmp_path):
    library = indexed.library
    calls = []
    for name in ("embed", "embed_with_words"):
        monkeypatch.setattr(library.engine, name, lambda *a, **k: calls.append(a) or pytest.fail("re-embedded"))
    renamed = tmp_path / "a copy of the ladybird.jpg"
    shutil.copyfile(indexed.src / "LadyBird.jpg", renamed)
    before = library.store.collection.count()
    report = library.add([indexed.src, renamed])
    assert report.added == [] and report.skipped == [] and len(report.unchanged) == 10
    assert library.store.collection.count() == before and calls == []


# -- search --------------------------------------------------------------------------------------
def test_search_is_hybrid_filtered_and_reranked(indexed):
    library = indexed.library
    first_stage = library.search("glob patterns for MIME types", k=40, rerank=False)
    assert all(hit.dense_score is not None and hit.fused_score is not None for hit in first_stage)
    assert any(hit.lexical_score for hit in first_stage)
    assert [hit.fused_score for hit in first_stage] == sorted((hit.fused_score for hit in first_stage), reverse=True)
    assert all(hit.rerank_score is None for hit in first_stage)

    reranked = library.search("glob patterns for MIME types", k=5, rerank_k=4)
    assert len(reranked) == 5
    assert all(0 <= hit.rerank_score <= 1 for hit in reranked[:4]) and reranked[4].rerank_score is None
    # Unmeasured library: the head is ordered by the average of its first-stage and rerank positions
    # (ties: first stage), worked out here by hand from the two orders.
    first = [hit.item.item_id for hit in first_stage[:4]]
    p = {hit.item.item_id: hit.rerank_score for hit in reranked[:4]}
    by_p = sorted(first, key=lambda i: -p[i])
    expected = sorted(first, key=lambda i: (first.index(i) + by_p.index(i), first.index(i)))
    assert [hit.item.item_id for hit in reranked[:4]] == expected
    assert reranked[4].item.item_id == first_stage[4].item.item_id
    library._fixed_share = 1.0  # the reranker's order alone
    try:
        alone = library.search("glob patterns for MIME types", k=5, rerank_k=4)
    finally:
        library._fixed_share = None
    assert [hit.item.item_id for hit in alone[:4]] == by_p

    # File names are in the lexical index: a name finds its image even with a random tiny model.
    [top] = library.search("LadyBird", k=1, kinds=["image"], rerank=False)
    assert top.item.source == "LadyBird.jpg" and top.lexical_score > 0
    pdf_id = next(doc.doc_id for doc in library.documents() if doc.source == PDF)
    assert {hit.item.doc_id for hit in library.search("ladybird garden", k=10, doc_ids=[pdf_id], rerank=False)} \
        == {pdf_id}
    assert {hit.item.kind for hit in library.search("scene", k=10, kinds=["video_segment", "text"],
                                                    rerank=False)} <= {"video_segment", "text"}


def test_search_of_an_empty_library_is_empty(engine, tmp_path):
    assert Library(engine, tmp_path).search("anything") == []


# -- delete --------------------------------------------------------------------------------------
def test_delete_removes_exactly_one_document(engine, tmp_path):
    src = copy_samples(tmp_path / "in", ["Garden.jpg", "LadyBird.jpg", README])
    library = Library(engine, tmp_path / "data")
    library.add([src])
    docs = {doc.source: doc for doc in library.documents()}
    count = library.store.collection.count()
    gone = library.delete(docs["LadyBird.jpg"].doc_id)
    assert gone == docs["LadyBird.jpg"]
    assert {doc.source: doc for doc in library.documents()} == {k: v for k, v in docs.items() if k != "LadyBird.jpg"}
    assert library.store.collection.count() == count - 1
    assert not (tmp_path / "data" / "assets" / gone.doc_id).exists()
    assert (tmp_path / "data" / "assets" / docs["Garden.jpg"].doc_id).is_dir()
    assert all(hit.item.doc_id != gone.doc_id for hit in library.search("LadyBird", k=10, rerank=False))
    assert library.delete("0123456789abcdef") is None
    # It can come back: a deleted file is indexed again on the next add.
    assert [doc.source for doc in library.add([src]).added] == ["LadyBird.jpg"]


def _kept(data: Path, source: Path, name: str | None = None) -> Path:
    """A kept copy as the app makes it: data/files/<first 16 hex of the SHA-256>/<name> (hashed here)."""
    target = data / "files" / hashlib.sha256(source.read_bytes()).hexdigest()[:16] / (name or source.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target


def test_delete_removes_the_kept_copy_and_never_an_original_elsewhere(engine, tmp_path):
    src = copy_samples(tmp_path / "in", ["Garden.jpg", "LadyBird.jpg", "YellowFlower.jpg", README])
    data = tmp_path / "data"
    bird, garden = _kept(data, src / "LadyBird.jpg"), _kept(data, src / "Garden.jpg")
    other_name = _kept(data, src / "LadyBird.jpg", "same-bytes-other-name.jpg")  # an upload "already indexed"
    library = Library(engine, data)
    library.add([bird, garden, src / README])
    docs = {doc.source: doc for doc in library.documents()}
    assert {docs["LadyBird.jpg"].path, docs["Garden.jpg"].path} == {str(bird.resolve()), str(garden.resolve())}
    garden_asset = next((data / "assets" / docs["Garden.jpg"].doc_id).iterdir())
    assert library.serves(bird) and library.serves(garden) and library.serves(garden_asset)
    assert not library.serves(other_name)  # a file under files/ that no document records
    assert not library.serves(data / "chroma.sqlite3") and not library.serves(data / "assets")

    assert library.delete(docs["LadyBird.jpg"].doc_id) == docs["LadyBird.jpg"]
    assert not bird.exists() and not other_name.exists() and not bird.parent.exists()
    assert garden.is_file() and library.serves(garden)
    stray = data / "assets" / docs["LadyBird.jpg"].doc_id / "left-over.png"  # a deleted document's folder
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"x")
    assert not library.serves(stray) and not library.serves(bird)

    library.delete(docs[README].doc_id)  # added from elsewhere (the CLI): its original is the user's
    assert (src / README).is_file()

    # A kept file whose bytes changed is re-added at the same path: the old version is deleted,
    # the file is not (the new version uses it).
    shutil.copyfile(src / "YellowFlower.jpg", garden)
    report = library.add([garden])
    assert [doc.doc_id for doc in report.replaced] == [docs["Garden.jpg"].doc_id]
    assert garden.is_file() and library.serves(garden)


def test_delete_of_a_name_that_is_not_a_document_touches_no_file(engine, tmp_path):
    src = copy_samples(tmp_path / "in", ["LadyBird.jpg"])
    data = tmp_path / "data"
    library = Library(engine, data)
    library.add([_kept(data, src / "LadyBird.jpg")])
    before = sorted(p.relative_to(data) for p in data.rglob("*"))
    for name in ("..", ".", "", "../files", "files/..", "../..", "assets/.."):
        assert library.delete(name) is None, name
    assert sorted(p.relative_to(data) for p in data.rglob("*")) == before
    assert [doc.source for doc in library.documents()] == ["LadyBird.jpg"]


# -- a changed file replaces its older version (upsert by path) ---------------------------------
def _pdf(path: Path, words: str) -> None:
    doc = pymupdf.open()
    for n in range(2):
        doc.new_page().insert_text((72, 72), f"{words} page {n + 1}")
    doc.save(path)


def test_a_changed_file_replaces_its_older_version_only_once_the_new_one_is_in(tmp_path):
    from fake_engine import FakeEngine

    data, folder = tmp_path / "data", tmp_path / "in"
    folder.mkdir()
    report_txt, report_pdf = folder / "report.txt", folder / "report.pdf"
    report_txt.write_text("The first draft mentions apples.\n")
    _pdf(report_pdf, "budget draft one")
    library = Library(FakeEngine(), data)
    first = library.add([folder])
    old = {doc.source: doc for doc in first.added}
    assert set(old) == {"report.txt", "report.pdf"} and first.replaced == []
    assert (data / "assets" / old["report.pdf"].doc_id).is_dir()

    report_txt.write_text("The final version mentions oranges instead.\n")
    _pdf(report_pdf, "budget final two")
    events = []
    second = library.add([folder], progress=events.append)
    new = {doc.source: doc for doc in second.added}
    assert {doc.doc_id for doc in second.replaced} == {old["report.txt"].doc_id, old["report.pdf"].doc_id}
    assert "replaced older version of report.txt" in second.summary()
    assert [e.message for e in events if e.stage == "added" and e.path == str(report_txt)] == [
        "replaced older version of report.txt"]
    rows = chroma_rows(library)
    assert {meta["doc_id"] for meta in rows} == {new["report.txt"].doc_id, new["report.pdf"].doc_id}
    assert [doc.path for doc in library.documents() if doc.source == "report.txt"] == [str(report_txt.resolve())]
    assert [item.text for item in library.items(new["report.txt"].doc_id)] == [
        "The final version mentions oranges instead."]
    assert "budget final two page 2" in library.items(new["report.pdf"].doc_id)[1].text
    assert not (data / "assets" / old["report.pdf"].doc_id).exists()
    assert (data / "assets" / new["report.pdf"].doc_id).is_dir()
    # A model-free open (what `list` does) sees one document per path.
    assert sorted(doc.source for doc in Library(None, data).documents()) == ["report.pdf", "report.txt"]

    again = library.add([folder])  # identical content: nothing changes
    assert again.added == [] and again.replaced == [] and len(again.unchanged) == 2
    assert len(chroma_rows(library)) == len(rows)

    # A new version that fails (an unreadable file, a failing model) leaves the old one searchable.
    report_txt.write_text("")
    report_pdf.write_bytes(report_pdf.read_bytes()[:200])
    broken = library.add([folder])
    assert broken.added == [] and broken.replaced == [] and len(broken.skipped) == 2
    report_txt.write_text("A third draft about pears.\n")
    library.engine.fail = True
    failed = library.add([report_txt])
    assert failed.replaced == [] and "embedding failed on purpose" in failed.skipped[0].reason
    library.engine.fail = False
    assert {meta["doc_id"] for meta in chroma_rows(library)} == {new["report.txt"].doc_id, new["report.pdf"].doc_id}
    assert [h.item.doc_id for h in library.search("oranges", k=1, rerank=False)] == [new["report.txt"].doc_id]
    assert (data / "assets" / new["report.pdf"].doc_id).is_dir()


# -- bad files -----------------------------------------------------------------------------------
def _png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def test_bad_files_are_skipped_with_reasons_and_the_rest_is_indexed(engine, tmp_path):
    folder = tmp_path / "mixed"
    nested = folder / "nested"
    nested.mkdir(parents=True)
    pdf_bytes = (SAMPLES / PDF).read_bytes()
    (folder / "empty.pdf").write_bytes(b"")
    (folder / "truncated.pdf").write_bytes(pdf_bytes[: len(pdf_bytes) // 2])
    pymupdf.open(SAMPLES / PDF).save(folder / "locked.pdf", encryption=pymupdf.PDF_ENCRYPT_AES_256,
                                     user_pw="u", owner_pw="o")
    (folder / "huge.png").write_bytes(_png_header(60000, 60000))
    (folder / "broken.mp4").write_bytes(os.urandom(4096))
    (folder / "notes.jpg").write_text("plain words in a file named like a photo\n")
    (folder / "archive.xyz").write_bytes(b"\x00\x01binary")
    shutil.copyfile(SAMPLES / "Garden.jpg", folder / "photo.pdf")  # wrong extension, fine content
    Image.open(SAMPLES / "YellowFlower.jpg").resize((200, 150)).save(nested / "été  photo n°1.jpg")
    (nested / "notes.txt").write_text("The quarterly report mentions a yellow flower.\n")
    (nested / ".hidden.txt").write_text("not indexed")
    os.symlink("..", nested / "loop")  # a folder symlink loop
    library = Library(engine, tmp_path / "data")

    report = library.add([folder, tmp_path / "missing.pdf"])

    assert sorted(doc.source for doc in report.added) == ["notes.txt", "photo.pdf", "été  photo n°1.jpg"]
    reasons = {Path(skip.path).name: skip.reason for skip in report.skipped}
    assert set(reasons) == {"empty.pdf", "truncated.pdf", "locked.pdf", "huge.png", "broken.mp4", "notes.jpg",
                            "archive.xyz", "missing.pdf"}
    assert "empty" in reasons["empty.pdf"]
    assert "truncated" in reasons["truncated.pdf"]
    assert "password" in reasons["locked.pdf"]
    assert "decompression bomb" in reasons["huge.png"]
    assert "video" in reasons["broken.mp4"]
    assert "unsupported" in reasons["archive.xyz"]
    assert "no such file" in reasons["missing.pdf"]
    assert all(reasons.values())
    # Nothing of a skipped file is left behind: no items, no asset folders.
    kept = {doc.doc_id for doc in library.documents()}
    assert {meta["doc_id"] for meta in chroma_rows(library)} == kept
    assert {p.name for p in (tmp_path / "data" / "assets").iterdir()} <= kept
    assert library.search("été photo", k=1, kinds=["image"], rerank=False)[0].item.source == "été  photo n°1.jpg"
    assert "skipped locked.pdf: the PDF is password-protected" in report.summary()


def test_unexpected_errors_skip_one_file_only(engine, tmp_path, monkeypatch):
    src = copy_samples(tmp_path / "in", ["Garden.jpg", "LadyBird.jpg"])
    library = Library(engine, tmp_path / "data")
    real_embed = engine.embed_with_words

    def flaky(items, batch_size=None, **kwargs):
        if any(item.source == "Garden.jpg" for item in items):
            raise RuntimeError("out of memory")
        return real_embed(items, batch_size, **kwargs)

    monkeypatch.setattr(engine, "embed_with_words", flaky)
    report = library.add([src])
    assert [doc.source for doc in report.added] == ["LadyBird.jpg"]
    assert report.skipped == [Skipped(str(src / "Garden.jpg"), "RuntimeError: out of memory")]
    assert library.store.collection.count() == 1
    assert [p.name for p in (tmp_path / "data" / "assets").iterdir()] == [report.added[0].doc_id]


def test_iter_files_walks_once_ignores_hidden_and_excluded(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "x.txt").write_text("x")
    (tmp_path / "a" / ".git").mkdir()
    (tmp_path / "a" / ".git" / "config").write_text("x")
    (tmp_path / "a" / "y.txt").write_text("y")
    os.symlink(tmp_path / "a", tmp_path / "a" / "b" / "up")  # loop
    os.symlink(tmp_path / "a" / "y.txt", tmp_path / "a" / "y-link.txt")  # same file twice
    (tmp_path / "a" / "data").mkdir()
    (tmp_path / "a" / "data" / "z.txt").write_text("z")
    found = list(iter_files([tmp_path / "a", tmp_path / "a" / "y.txt", tmp_path / "nope"],
                            exclude=[tmp_path / "a" / "data"]))
    files = sorted(os.path.relpath(p, tmp_path) for p in found if isinstance(p, Path))
    assert files == ["a/b/x.txt", "a/y-link.txt"]
    assert [s.reason for s in found if isinstance(s, Skipped)] == ["no such file or folder"]


# -- text-only models ----------------------------------------------------------------------------
def test_text_only_model_indexes_text_and_says_what_it_cannot_see(tiny_model_dirs, tmp_path):
    text_engine = FreeRet.from_pretrained(tiny_model_dirs["llama"])
    assert text_engine.capabilities == {"text"}
    src = copy_samples(tmp_path / "in", [PDF, README, "LadyBird.jpg", "nature-scenes.mp4"])
    library = Library(text_engine, tmp_path / "data")
    report = library.add([src])
    assert sorted(doc.source for doc in report.added) == [README, PDF]
    assert {Path(s.path).name: s.reason.startswith(CANNOT_SEE) for s in report.skipped} == {
        "LadyBird.jpg": True, "nature-scenes.mp4": True}
    pdf = next(doc for doc in report.added if doc.source == PDF)
    assert pdf.items == 17
    # Pages were embedded from their text but keep their page images for a later vision model.
    assert all(item.images and Path(item.images[0]).is_file() for item in library.items(pdf.doc_id))
    hits = library.search("MIME glob", k=3, rerank_k=3)
    assert hits and all(hit.rerank_score is not None for hit in hits)


# -- another model: refuse, then re-index --------------------------------------------------------
def test_other_model_is_refused_until_reindexed(engine, tmp_path):
    src = copy_samples(tmp_path / "in", ["LadyBird.jpg", README])
    data = tmp_path / "data"
    Library(engine, data).add([src])
    other = FreeRet(engine.lm, EngineSettings(priors=False))  # same weights, another embedding space
    assert other.prompt_version != engine.prompt_version

    with pytest.raises(IndexMismatchError) as refused:
        Library(other, data)
    message = str(refused.value)
    assert engine.prompt_version in message and other.prompt_version in message and "reindex" in message

    pending = Library(other, data, allow_mismatch=True)
    assert pending.needs_reindex and pending.mismatch == message and pending.documents() == []
    with pytest.raises(IndexMismatchError):
        pending.add([src])
    report = pending.reindex()
    assert sorted(doc.source for doc in report.added) == ["LadyBird.jpg", README] and not report.skipped

    assert not pending.needs_reindex and pending.mismatch is None
    moved = Library(other, data)
    assert not moved.needs_reindex and [i.prompt_version for i in list_indexes(moved.client)] == [
        other.prompt_version]
    assert {d.source: d.items for d in moved.documents()} == {README: 2, "LadyBird.jpg": 1}
    assert all(Path(p).is_file() for item in moved.items(moved.documents()[0].doc_id) for p in item.images)
    assert moved.search("LadyBird", k=1, kinds=["image"], rerank=False)[0].item.source == "LadyBird.jpg"
    with pytest.raises(IndexMismatchError):
        Library(engine, data)  # and now the first space is the foreign one


def test_library_without_engine_lists_and_deletes(engine, tmp_path):
    with pytest.raises(FreeRetError, match="no index"):
        Library(None, tmp_path / "data")
    Library(engine, tmp_path / "data").add([copy_samples(tmp_path / "in", [README])])
    model_free = Library(None, tmp_path / "data")
    [doc] = model_free.documents()
    assert model_free.delete(doc.doc_id) == doc and model_free.documents() == []
    with pytest.raises(FreeRetError, match="needs a model"):
        model_free.search("x")


def test_concurrent_searches_while_adding(engine, tmp_path):
    src = copy_samples(tmp_path / "in", [README, PDF])
    library = Library(engine, tmp_path / "data")
    library.add([src / README])
    errors: list[BaseException] = []
    adder = threading.Thread(target=lambda: library.add([src / PDF]))
    adder.start()
    while adder.is_alive():
        try:
            hits = library.search("MIME", k=5, rerank=False)
            assert all(library.document(hit.item.doc_id) for hit in hits)
        except BaseException as error:  # noqa: BLE001 - collected and re-raised below
            errors.append(error)
        time.sleep(0.05)
    adder.join()
    assert not errors
    assert len(library.documents()) == 2


# -- crash safety and persistence across processes -----------------------------------------------
CHILD = r"""
import json, sys
from pathlib import Path
from freeret_rag.engine import FreeRet
from freeret_rag.library import Library

def state(library):
    rows = library.store.collection.get(include=["metadatas"])["metadatas"]
    hits = library.search("MIME database spec", k=50, rerank=False)
    print(json.dumps({"docs": {d.source: d.items for d in library.documents()}, "rows": len(rows),
                      "pending": sum(not m["complete"] for m in rows), "hits": sorted({h.item.source for h in hits})}))

model, data, *paths = sys.argv[1:]
library = Library(FreeRet.from_pretrained(model), data)
state(library)
report = library.add(paths, progress=lambda e: print(json.dumps(
    {"stage": e.stage, "file": Path(e.path).name, "done": e.done}), flush=True))
print(json.dumps({"added": [d.source for d in report.added], "unchanged": [d.source for d in report.unchanged]}))
state(library)
"""


def start_child(tmp_path: Path, *args: str) -> subprocess.Popen:
    """Open the library in a fresh process, print its state, add `paths`, print the state again."""
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    return subprocess.Popen([sys.executable, str(script), *args], cwd=REPO, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)})


def test_kill_during_ingestion_then_restart_is_consistent_and_resumes(tiny_model_dirs, tmp_path):
    model, data = str(tiny_model_dirs["qwen2_vl"]), tmp_path / "data"
    src = copy_samples(tmp_path / "in", [README, PDF])
    args = [model, str(data), str(src / README), str(src / PDF)]
    child = start_child(tmp_path, *args)
    seen = []
    try:
        for line in child.stdout:  # kill once the PDF has pages stored (pending), long before it finishes
            seen.append(event := json.loads(line))
            if event.get("file") == PDF and event.get("stage") == "item" and event["done"] >= 9:
                child.send_signal(signal.SIGKILL)
                break
    finally:
        child.kill()
        child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL
    assert {"stage": "added", "file": README, "done": 2} in seen
    assert not any(e.get("file") == PDF and e.get("stage") == "added" for e in seen)
    pdf_id = hashlib.sha256((src / PDF).read_bytes()).hexdigest()[:16]
    assert (data / "assets" / pdf_id).is_dir()  # the killed run had rendered pages

    # Restart: opening purges nothing, and the half-indexed PDF is invisible; the README survived.
    # Adding again keeps the dead writer's pending pages and embeds only the rest (test_long_jobs counts it).
    out, err = start_child(tmp_path, *args).communicate(timeout=300)
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert lines, err[-3000:]
    before, *_, summary, after = lines
    assert before["docs"] == {README: 2} and before["hits"] == [README]
    assert before["pending"] >= 8 and before["rows"] == 2 + before["pending"]  # at least one batch of pages
    assert summary == {"added": [PDF], "unchanged": [README]}
    assert after == {"docs": {README: 2, PDF: 17}, "rows": 19, "pending": 0, "hits": sorted([PDF, README])}
    assert (data / "assets" / pdf_id).is_dir()


# -- a real Chroma server ------------------------------------------------------------------------
def chroma_cli() -> str | None:
    beside = Path(sys.executable).parent / "chroma"
    return str(beside) if beside.exists() else shutil.which("chroma")


@pytest.fixture()
def chroma_server(tmp_path, require_tool):
    cli = chroma_cli()
    require_tool("chroma", cli is not None, "the `chroma` command line comes with the chromadb package")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([cli, "run", "--path", str(tmp_path / "server"), "--host", "127.0.0.1",
                               "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        import chromadb

        deadline = time.time() + 60
        while True:
            try:
                chromadb.HttpClient(host="127.0.0.1", port=port).heartbeat()
                break
            except Exception:
                if time.time() > deadline or server.poll() is not None:
                    raise RuntimeError("chroma server did not start")
                time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_library_on_a_chroma_server(engine, chroma_server, tmp_path):
    src = copy_samples(tmp_path / "in", ["LadyBird.jpg", "Garden.jpg", README])
    library = Library(engine, tmp_path / "data", chroma_url=chroma_server)
    assert len(library.add([src]).added) == 3
    assert not (tmp_path / "data" / "chroma").exists()  # vectors live on the server, assets locally
    garden = next(doc for doc in library.documents() if doc.source == "Garden.jpg")
    library.delete(garden.doc_id)

    reopened = Library(engine, tmp_path / "data", chroma_url=chroma_server)  # a new client, same server
    assert sorted(doc.source for doc in reopened.documents()) == ["LadyBird.jpg", README]
    assert len(reopened.add([src / "LadyBird.jpg", src / README]).unchanged) == 2
    assert reopened.store.collection.count() == 3
    top = reopened.search("LadyBird", k=1, kinds=["image"], rerank_k=1)[0]
    assert top.item.source == "LadyBird.jpg" and top.rerank_score is not None
    with pytest.raises(IndexMismatchError):
        Library(FreeRet(engine.lm, EngineSettings(priors=False)), tmp_path / "data", chroma_url=chroma_server)


def test_a_replace_that_failed_half_way_is_finished_by_the_next_add(tmp_path, monkeypatch):
    from fake_engine import FakeEngine

    data, report_txt = tmp_path / "data", tmp_path / "report.txt"
    report_txt.write_text("version one\n")
    library = Library(FakeEngine(), data)
    [old] = library.add([report_txt]).added
    report_txt.write_text("version two\n")

    def broken_delete(doc_id):
        raise OSError("disk went away")

    monkeypatch.setattr(library, "_delete_document", broken_delete)
    half = library.add([report_txt])
    [new] = half.added  # the new version is in; the old one could not be removed, and it says so
    assert half.replaced == [] and half.skipped == []
    assert [note.reason for note in half.notes] == ["an older version is still indexed: OSError: disk went away"]
    assert {meta["doc_id"] for meta in chroma_rows(library)} == {old.doc_id, new.doc_id}
    monkeypatch.undo()

    again = library.add([report_txt])
    assert again.unchanged == [new] and again.replaced == [old]
    assert {meta["doc_id"] for meta in chroma_rows(library)} == {new.doc_id}


def test_a_new_empty_library_opens_and_saves_its_lexical_index_without_an_error(tmp_path, caplog):
    """An empty store has len 0: it must still be the store saved at open (it once fell back to an
    attribute not set yet, logged 'could not save the lexical index')."""
    import logging

    from fake_engine import FakeEngine

    with caplog.at_level(logging.WARNING, logger="freeret_rag"):
        library = Library(FakeEngine(), tmp_path / "data")
    assert len(library) == 0
    assert not [r for r in caplog.records if "could not save" in r.getMessage()]
