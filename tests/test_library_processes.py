"""Several real processes on one data folder (a model-free FakeEngine, so they are quick): a writer
paused mid-document while others list, search and add; a writer killed mid-document; what recovery
may purge with an embedded index and with a Chroma server. Rows are counted in Chroma directly."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pymupdf
import pytest
from fake_engine import FakeEngine, vector

from freeret_rag.items import Item
from freeret_rag.library import Library
from freeret_rag.locking import Writer, this_writer
from freeret_rag.store import collection_name

from test_library import chroma_server  # noqa: F401 - a fixture: a real Chroma server on loopback

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "tests" / "data" / "samples"
PDF, README = "shared-mime-info-spec.pdf", "README.md"

CHILD = r"""
import json, logging, sys
from pathlib import Path
from fake_engine import FakeEngine
from freeret_rag.library import Library

logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s", stream=sys.stderr)
data, command, *rest = sys.argv[1:]
if command == "add":
    barrier, block_at, *paths = rest
    engine = FakeEngine(Path(barrier) if barrier != "-" else None, int(block_at))
    library = Library(engine, data, batch_size=4)
    report = library.add(paths, progress=lambda e: print(json.dumps(
        {"stage": e.stage, "file": Path(e.path).name, "done": e.done}), flush=True))
    print(json.dumps({"added": {d.source: d.items for d in report.added},
                      "skipped": [s.reason for s in report.skipped], "embedded": engine.embedded}), flush=True)
elif command == "search":
    library = Library(FakeEngine(), data)
    print(json.dumps(sorted({h.item.source for h in library.search(rest[0], k=20, rerank=False)})))
"""


def child(tmp_path: Path, data: Path, *args: str) -> subprocess.Popen:
    script = tmp_path / "writer_child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
    return subprocess.Popen([sys.executable, str(script), str(data), *map(str, args)], cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def cli(data: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "freeret_rag", "--data-dir", str(data), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def chroma_rows(data: Path) -> list[dict]:
    """Every row's metadata, read by a fresh Chroma client (nothing cached from earlier reads)."""
    import chromadb
    from chromadb.api.shared_system_client import SharedSystemClient
    from chromadb.config import Settings

    SharedSystemClient.clear_system_cache()
    client = chromadb.PersistentClient(path=str(data / "chroma"), settings=Settings(anonymized_telemetry=False))
    name = collection_name(FakeEngine.model_id, FakeEngine.prompt_version)
    return client.get_collection(name).get(include=["metadatas"])["metadatas"]


def pending(data: Path) -> int:
    return sum(not meta["complete"] for meta in chroma_rows(data))


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        if process.poll() is not None:
            pytest.fail(f"the child ended early: {process.communicate()}")
        if time.time() > deadline:
            pytest.fail(f"{path} did not appear")
        time.sleep(0.05)


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


@pytest.fixture()
def src(tmp_path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    for name in (PDF, README):
        shutil.copyfile(SAMPLES / name, folder / name)
    return folder


def pdf_id(src: Path) -> str:
    import hashlib

    return hashlib.sha256((src / PDF).read_bytes()).hexdigest()[:16]


def test_a_paused_writer_survives_others_listing_searching_and_adding(tmp_path, src):
    data, barrier = tmp_path / "data", tmp_path / "barrier"
    barrier.mkdir()
    writer_a = child(tmp_path, data, "add", barrier, 2, src / PDF)  # 2nd batch of 4 pages waits
    try:
        wait_for(barrier / "waiting", writer_a)
        assert pending(data) == 4
        assets = data / "assets" / pdf_id(src)
        rendered = files_under(assets)
        assert rendered  # A has rendered page images for the pages it has read so far

        listed = cli(data, "list", "--json")  # read-only: deletes nothing, shows nothing pending
        assert listed.returncode == 0, listed.stderr[-2000:]
        assert json.loads(listed.stdout) == []
        searcher = child(tmp_path, data, "search", "MIME")
        out, err = searcher.communicate(timeout=300)
        assert searcher.returncode == 0, err[-2000:]
        assert json.loads(out) == []
        assert pending(data) == 4 and files_under(assets) >= rendered

        writer_b = child(tmp_path, data, "add", "-", 0, src / README)
        for line in writer_b.stderr:  # B waits for A's turn (and says whose)
            if "waiting for another writer" in line:
                assert f"pid {writer_a.pid} " in line
                break
        else:
            pytest.fail(f"B never waited: {writer_b.communicate()}")
        assert writer_b.poll() is None and not any(m["source"] == README for m in chroma_rows(data))
    finally:
        (barrier / "go").write_text("")
    out_a, err_a = writer_a.communicate(timeout=300)
    out_b, _ = writer_b.communicate(timeout=300)
    assert writer_a.returncode == 0 and writer_b.returncode == 0, err_a[-2000:]
    assert json.loads(out_a.splitlines()[-1]) == {"added": {PDF: 17}, "skipped": [], "embedded": 17}
    assert json.loads(out_b.splitlines()[-1]) == {"added": {README: 2}, "skipped": [], "embedded": 2}

    rows = chroma_rows(data)
    assert len(rows) == 19 and all(meta["complete"] for meta in rows)
    pages = [meta for meta in rows if meta["source"] == PDF]
    assert sorted(meta["page"] for meta in pages) == list(range(1, 18))
    assert all(json.loads(meta["images"]) for meta in pages)  # every page kept its page image
    for meta in rows:
        for path in [meta.get("thumbnail"), *json.loads(meta["images"])]:
            assert not path or Path(path).is_file()
    assert Writer.from_json(rows[0]["writer"]).pid in {writer_a.pid, writer_b.pid}
    assert {d["source"] for d in json.loads(cli(data, "list", "--json").stdout)} == {PDF, README}


def test_read_only_opens_never_purge_and_the_next_writer_keeps_only_what_can_resume(tmp_path, src):
    data, barrier = tmp_path / "data", tmp_path / "barrier"
    barrier.mkdir()
    killed = child(tmp_path, data, "add", barrier, 2, src / PDF)
    wait_for(barrier / "waiting", killed)
    killed.send_signal(signal.SIGKILL)
    killed.communicate(timeout=60)
    assert killed.returncode == -signal.SIGKILL
    assets = data / "assets"
    orphan = assets / "0123456789abcdef"  # an asset folder no item refers to
    orphan.mkdir()
    (orphan / "page.png").write_bytes(b"x")
    before = files_under(assets)
    dead = Writer.from_json(chroma_rows(data)[0]["writer"])
    assert pending(data) == 4 and dead.pid == killed.pid and dead.certainly_dead()

    assert cli(data, "list").returncode == 0  # the CLI, another process
    searcher = child(tmp_path, data, "search", "MIME")
    assert searcher.communicate(timeout=300)[0].strip() == "[]"
    model_free = Library(None, data)  # and in this process, with and without a model
    assert model_free.documents() == [] and len(model_free) == 0
    with_model = Library(FakeEngine(), data)
    assert with_model.search("MIME", rerank=False) == []
    assert pending(data) == 4 and files_under(assets) == before

    writer = child(tmp_path, data, "add", "-", 0, src / README)  # the next writer recovers
    out, err = writer.communicate(timeout=300)
    assert writer.returncode == 0, err[-2000:]
    rows = chroma_rows(data)
    # The dead writer's 4 embedded pages stay pending (invisible) for a resume, with their page
    # images; the orphan folder went; text has no assets.
    assert sorted(meta["source"] for meta in rows) == [README] * 2 + [PDF] * 4 and pending(data) == 4
    assert sorted(p.name for p in assets.iterdir()) == [pdf_id(src)]
    assert [d["source"] for d in json.loads(cli(data, "list", "--json").stdout)] == [README]  # not the half PDF


def test_a_file_killed_half_way_resumes_without_embedding_its_finished_batches_again(tmp_path, src):
    data, barrier = tmp_path / "data", tmp_path / "barrier"
    barrier.mkdir()
    killed = child(tmp_path, data, "add", barrier, 3, src / PDF)  # 2 batches of 4 pages stored, the 3rd waits
    wait_for(barrier / "waiting", killed)
    killed.send_signal(signal.SIGKILL)
    killed.communicate(timeout=60)
    assert pending(data) == 8
    kept = {meta["page"]: meta["put_at"] for meta in chroma_rows(data)}
    assert sorted(kept) == list(range(1, 9))

    again = child(tmp_path, data, "add", "-", 0, src / PDF)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err[-2000:]
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[-1] == {"added": {PDF: 17}, "skipped": [], "embedded": 17 - 8}  # only the 9 missing pages
    rows = chroma_rows(data)
    assert sorted(meta["page"] for meta in rows) == list(range(1, 18)) and pending(data) == 0
    assert {meta["page"]: meta["put_at"] for meta in rows if meta["page"] <= 8} == kept  # the very rows kept
    assert [line["done"] for line in lines if line.get("stage") == "item"][:8] == list(range(1, 9))
    for meta in rows:  # the resumed document is whole: every page with its image
        assert all(Path(path).is_file() for path in json.loads(meta["images"]))


def _pending_doc(library: Library, doc_id: str, writer: str | None, age_s: float = 30 * 24 * 3600) -> None:
    """Two pending items of `writer`, last stored `age_s` ago (by default long past a resume)."""
    items = [Item(kind="text", text=f"{doc_id} part {n}", item_id=f"{doc_id}:{n}", doc_id=doc_id,
                  source=f"{doc_id}.txt", chunk=n) for n in range(2)]
    fields = {"added_at": 1.0, **({"writer": writer} if writer else {})}
    library.store.put(items, np.stack([vector(item.text) for item in items]), fields)
    library.store.collection.update(ids=[item.item_id for item in items],
                                    metadatas=[{"put_at": time.time() - age_s}] * len(items))
    (library.assets / doc_id).mkdir(parents=True)
    (library.assets / doc_id / "x.png").write_bytes(b"x")


def _dead_pid() -> int:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    return gone.pid


@pytest.mark.parametrize("server", [False, True], ids=["embedded", "chroma-server"])
def test_recovery_purges_only_what_is_certainly_dead(request, tmp_path, src, server):
    url = request.getfixturevalue("chroma_server") if server else None
    data = tmp_path / "data"
    library = Library(FakeEngine(), data, chroma_url=url)
    me, dead_pid = this_writer(), _dead_pid()
    writers = {"deadhere": Writer(me.host, dead_pid, me.started).to_json(),  # this host, process gone
               "reusedpid": Writer(me.host, me.pid, me.started - 3600).to_json(),  # pid now someone else's
               "alivehere": me.to_json(),  # this very process
               "elsewhere": Writer("another-host", dead_pid, me.started).to_json(),
               "legacy": None}  # written before writers were recorded
    for doc_id, writer in writers.items():
        _pending_doc(library, doc_id, writer)
    _pending_doc(library, "resumable", writers["deadhere"], age_s=3600)  # an hour ago: kept for a resume

    def pending_docs() -> set[str]:
        return set(Library(None, data, chroma_url=url).store.pending_documents())  # a read-only open, too

    assert pending_docs() == set(writers) | {"resumable"}
    assert {p.name for p in (data / "assets").iterdir()} == set(writers) | {"resumable"}

    report = Library(FakeEngine(), data, chroma_url=url).add([src / README])  # a write: recovery runs
    assert [doc.source for doc in report.added] == [README]
    kept = {"resumable"} | (set() if not server else {"alivehere", "elsewhere", "legacy"})
    assert pending_docs() == kept
    assert {p.name for p in (data / "assets").iterdir()} == kept


def _long_text(path: Path, word: str, lines: int = 18000) -> Path:
    path.write_text("".join(f"line {n} of the {word} file, with a few more words to fill it\n" for n in range(lines)))
    return path


def test_a_long_lived_writer_rereads_what_another_process_wrote(tmp_path):
    """Chroma keeps an HNSW index in memory per process and persists it every 1000 writes: a
    process that wrote after another one without re-reading would persist its stale index over
    the other's vectors. Oracle: a fresh client finds every vector by a query for all of them."""
    data = tmp_path / "data"
    library = Library(FakeEngine(), data, batch_size=256)  # a long-lived process (the app)
    note = tmp_path / "note.txt"
    note.write_text("a small note\n")
    assert len(library.add([note]).added) == 1
    other = child(tmp_path, data, "add", "-", 0, _long_text(tmp_path / "beta.txt", "beta"))
    out, err = other.communicate(timeout=300)
    assert other.returncode == 0, err[-2000:]
    beta_items = json.loads(out.splitlines()[-1])["added"]["beta.txt"]
    assert beta_items > 1000  # past Chroma's sync threshold: the other process persisted its index

    alpha = library.add([_long_text(tmp_path / "alpha.txt", "alpha")]).added  # and so does this one
    assert alpha[0].items > 1000

    import chromadb
    from chromadb.api.shared_system_client import SharedSystemClient
    from chromadb.config import Settings

    SharedSystemClient.clear_system_cache()
    fresh = chromadb.PersistentClient(path=str(data / "chroma"), settings=Settings(anonymized_telemetry=False))
    collection = fresh.get_collection(collection_name(FakeEngine.model_id, FakeEngine.prompt_version))
    everything = set(collection.get(include=[])["ids"])
    assert len(everything) == 1 + beta_items + alpha[0].items
    found = collection.query(query_embeddings=[vector("x")], n_results=len(everything), include=[])["ids"][0]
    assert set(found) == everything


def test_refresh_shows_what_another_process_added(tmp_path, src):
    data = tmp_path / "data"
    note = tmp_path / "note.txt"
    note.write_text("a small note\n")
    library = Library(FakeEngine(), data)
    library.add([note])
    assert library.refresh() is False  # only this process wrote
    other = child(tmp_path, data, "add", "-", 0, src / README)
    assert other.communicate(timeout=300) and other.returncode == 0
    assert [doc.source for doc in library.store.documents()] == ["note.txt"]  # the view before a re-read
    assert [doc.source for doc in library.documents()] == ["note.txt", README]  # listing re-reads by itself
    assert library.refresh() is False  # already re-read
    assert [hit.item.source for hit in library.store.search(None, "wallpaper backgrounds", 5)] == [README]
    assert library.refresh() is False


def test_writer_lock_excludes_other_holders_is_reentrant_and_tells_staleness(tmp_path):
    import threading

    from freeret_rag.locking import WriterLock

    mine, theirs = WriterLock(tmp_path), WriterLock(tmp_path)  # two holders, as two processes would be
    mine.observe()
    theirs.observe()
    order: list[str] = []
    with mine as stale:
        assert stale is False
        with mine as nested:  # reentrant: no deadlock, and no news from itself
            assert nested is False
        def take_turn() -> None:
            with theirs:
                order.append("theirs")

        other = threading.Thread(target=take_turn)
        other.start()
        other.join(timeout=1.0)
        assert other.is_alive() and order == []  # blocked while this one holds it
        order.append("mine")
    other.join(timeout=30)
    assert order == ["mine", "theirs"]
    assert theirs.holder() == this_writer()
    assert mine.changed() is True and theirs.changed() is False
    with mine as stale:
        assert stale is True
    assert mine.changed() is False


def test_a_document_deleted_by_another_process_is_never_found(tmp_path, src):
    data = tmp_path / "data"
    note = tmp_path / "note.txt"
    note.write_text("the pond pump sits in the garden shed\n")
    library = Library(FakeEngine(), data)
    [doc] = library.add([note]).added
    assert library.search("pond pump", k=1, rerank=False)[0].item.doc_id == doc.doc_id
    other = subprocess.run([sys.executable, "-m", "freeret_rag", "--data-dir", str(data), "delete", doc.doc_id],
                           capture_output=True, text=True, timeout=300, cwd=REPO)
    assert other.returncode == 0, other.stderr
    assert library.search("pond pump", k=5, rerank=False) == []  # the running process re-reads first
    assert library.documents() == []


def test_refresh_loads_the_lexical_index_the_other_process_saved(tmp_path, src, monkeypatch):
    """The other process saves its lexical index for the generation it wrote; a refresh loads it
    (reads no item back from Chroma) and ranks as BM25 computed by brute force over Chroma's items."""
    from test_store import assert_same_ranking, bm25_brute_force

    from freeret_rag.store import Store, lexical_text

    data = tmp_path / "data"
    note = tmp_path / "note.txt"
    note.write_text("a small note about wallpaper\n")
    library = Library(FakeEngine(), data)
    library.add([note])
    other = child(tmp_path, data, "add", "-", 0, src / README, src / PDF)
    assert other.communicate(timeout=300) and other.returncode == 0
    with monkeypatch.context() as patched:
        patched.setattr(Store, "_get", lambda *args: pytest.fail("read every item back instead of loading"))
        assert library.refresh() is True
    assert not library.store.unsaved
    got = library.store.collection.get(where={"complete": True}, include=["metadatas", "documents"])
    texts = {i: lexical_text(m["source"], d) for i, m, d in zip(got["ids"], got["metadatas"], got["documents"])}
    assert len(library.store) == len(texts) and {doc.source for doc in library.documents()} == {"note.txt", README, PDF}
    for query in ("wallpaper backgrounds", "mime type glob", "note", "shared mime info spec"):
        assert_same_ranking(library.store.lexical.search(query, 20), bm25_brute_force(texts, query)[:20])
