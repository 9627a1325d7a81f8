"""Several replicas on one Chroma server (issue 12, part 4): two long-running processes, each with its
own Library, on a real `chroma run` (with a data folder each, so only the server is shared, and with
one shared data folder, as the README recommends). What one adds is found by the other's dense and
keyword channels within seconds, and what it deletes is gone from the other's search, listing and
`serves`, with no restart. Expected values are read from the server
directly (a fresh client, brute-force cosine over every stored vector), never from a Library.

Also the change log itself (replicas.ChangeLog) on an in-memory Chroma: records of other views are
returned once, its own never, and a reader whose last look is older than the log keeps is told so."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from fake_engine import FakeEngine, vector

from freeret_rag.replicas import KEEP_S, MARGIN_S, ChangeLog, log_name
from freeret_rag.store import collection_name, list_indexes

from test_library import chroma_server  # noqa: F401 - a fixture: a real Chroma server on loopback

REPO = Path(__file__).resolve().parents[1]
DEADLINE_S = 10.0  # "within a few seconds": polled, the first matching answer ends the wait

REPLICA = r"""
import json, sys
from fake_engine import FakeEngine
from freeret_rag.library import Library

data, url = sys.argv[1:3]
library = Library(FakeEngine(), data, url)
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    command = json.loads(line)
    if command["op"] == "add":
        report = library.add(command["paths"])
        out = {"added": [d.doc_id for d in report.added], "skipped": [s.reason for s in report.skipped]}
    elif command["op"] == "delete":
        out = {"deleted": getattr(library.delete(command["doc_id"]), "doc_id", None)}
    else:  # look: what this replica answers now (each public call refreshes by itself)
        listed = sorted(doc.doc_id for doc in library.documents())
        hits = library.search(command["words"], k=50, rerank=False)
        store = library.store
        dense = [(h.item.item_id, h.item.doc_id) for h in store.dense(library.engine.embed_query(command["dense"]), 50)]
        lexical = [store.lexical.describe(item_id)[1] for item_id, _ in store.lexical.search(command["words"], 50)]
        out = {"listed": listed, "hits": sorted({h.item.doc_id for h in hits}), "dense": dense,
               "lexical": sorted(set(lexical)), "serves": {p: library.serves(p) for p in command["paths"]}}
    print(json.dumps(out), flush=True)
"""


class Replica:
    """One app-like process: a Library on the shared server with a data folder of its own."""

    def __init__(self, tmp_path: Path, name: str, url: str) -> None:
        script = tmp_path / "replica.py"
        script.write_text(REPLICA)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
        self.process = subprocess.Popen([sys.executable, str(script), str(tmp_path / name), url], cwd=tmp_path,
                                        text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, env=env)
        assert self._answer() == {"ready": True}

    def _answer(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            pytest.fail(f"the replica ended: {self.process.communicate(timeout=30)[1][-3000:]}")
        return json.loads(line)

    def ask(self, **command) -> dict:
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        return self._answer()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait(timeout=60)


def server_truth(url: str, query: str) -> dict:
    """What the server holds, read with a fresh client: complete documents, and every complete
    item ranked by brute-force cosine to the FakeEngine vector of `query` (its top 50)."""
    import chromadb

    port = int(url.rsplit(":", 1)[1])
    client = chromadb.HttpClient(host="127.0.0.1", port=port)
    rows = client.get_collection(collection_name(FakeEngine.model_id, FakeEngine.prompt_version)).get(
        where={"complete": True}, include=["metadatas", "embeddings"])
    wanted = vector(query)
    cosine = [(float(np.dot(np.asarray(e) / np.linalg.norm(e), wanted)), item_id, meta["doc_id"])
              for item_id, meta, e in zip(rows["ids"], rows["metadatas"], rows["embeddings"])]
    ranked = sorted(cosine, key=lambda row: -row[0])[:50]
    return {"docs": sorted({meta["doc_id"] for meta in rows["metadatas"]}),
            "dense": [(item_id, doc_id) for _, item_id, doc_id in ranked]}


def doc_id_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def poll(replica: Replica, expected, deadline_s: float = DEADLINE_S, **command) -> tuple[dict, float]:
    """Ask until `expected(answer)` holds or the deadline passes; (last answer, seconds waited)."""
    started = time.monotonic()
    while True:
        answer = replica.ask(**command)
        waited = time.monotonic() - started
        if expected(answer) or waited > deadline_s:
            return answer, waited
        time.sleep(0.1)


@pytest.fixture(params=["a data folder each", "one shared data folder"])
def replicas(request, tmp_path, chroma_server):  # noqa: F811 - the fixture imported above
    folders = ["data-a", "data-b"] if request.param == "a data folder each" else ["data", "data"]
    made = [Replica(tmp_path, folder, chroma_server) for folder in folders]
    yield made
    for replica in made:
        replica.close()


def test_what_one_replica_adds_or_deletes_the_other_sees_within_seconds(replicas, chroma_server, tmp_path):
    a, b = replicas
    notes = tmp_path / "in"
    notes.mkdir()
    first, second = notes / "garden.txt", notes / "zeppelin.txt"
    first.write_text("The garden pond needs a pump check every spring.\n")
    second.write_text("Quixotic zeppelin mooring rules for the harbour.\n")
    paths = [str(first.resolve()), str(second.resolve())]
    look = {"op": "look", "words": "zeppelin mooring", "dense": "harbour zeppelin", "paths": paths}

    assert a.ask(op="add", paths=[str(first)]) == {"added": [doc_id_of(first)], "skipped": []}
    before, _ = poll(b, lambda answer: answer["listed"] == [doc_id_of(first)], **look)
    assert before["listed"] == [doc_id_of(first)] and before["lexical"] == [] and before["hits"] == [doc_id_of(first)]

    assert a.ask(op="add", paths=[str(second)]) == {"added": [doc_id_of(second)], "skipped": []}
    truth = server_truth(chroma_server, "harbour zeppelin")
    assert truth["docs"] == sorted([doc_id_of(first), doc_id_of(second)])
    seen, waited = poll(b, lambda answer: doc_id_of(second) in answer["listed"], **look)
    assert waited < DEADLINE_S, seen
    assert seen["listed"] == truth["docs"]
    assert [tuple(pair) for pair in seen["dense"]] == truth["dense"]  # the dense channel, as brute force ranks it
    assert seen["lexical"] == [doc_id_of(second)]  # only that file has these words
    assert doc_id_of(second) in seen["hits"]
    assert seen["serves"] == {paths[0]: True, paths[1]: True}

    assert a.ask(op="delete", doc_id=doc_id_of(second)) == {"deleted": doc_id_of(second)}
    truth = server_truth(chroma_server, "harbour zeppelin")
    assert truth["docs"] == [doc_id_of(first)]
    gone, waited = poll(b, lambda answer: doc_id_of(second) not in answer["listed"], **look)
    assert waited < DEADLINE_S, gone
    assert gone["listed"] == truth["docs"] and [tuple(pair) for pair in gone["dense"]] == truth["dense"]
    assert gone["lexical"] == [] and doc_id_of(second) not in gone["hits"]
    assert gone["serves"] == {paths[0]: True, paths[1]: False}

    # and the other way round: B deletes, A (which wrote everything so far) sees it
    assert b.ask(op="delete", doc_id=doc_id_of(first)) == {"deleted": doc_id_of(first)}
    empty, waited = poll(a, lambda answer: answer["listed"] == [], **look)
    assert waited < DEADLINE_S and empty["hits"] == [] and empty["dense"] == []
    assert empty["serves"] == {paths[0]: False, paths[1]: False}


def test_the_change_log_returns_other_views_changes_once_and_never_its_own(tmp_path):
    import chromadb
    from chromadb.config import Settings

    client = chromadb.EphemeralClient(settings=Settings(anonymized_telemetry=False))
    start = 1_000_000.0
    mine, other = ChangeLog(client, "freeret-x", now=start), ChangeLog(client, "freeret-x", now=start)
    assert mine.changes(now=start + 0.5) == set()  # no log yet: reading creates nothing (opening writes nothing)
    assert [c.name for c in client.list_collections()] == []
    assert log_name("freeret-x") != log_name("freeret-y") and not log_name("freeret-x").startswith("freeret-")
    other.record(["d2", "d1"], now=start + 1)
    mine.record(["d3"], now=start + 2)
    assert mine.changes(now=start + 3) == {"d1", "d2"}  # its own record (d3) is not returned
    assert mine.changes(now=start + 4) == set()  # nor the same record twice
    other.record(["d4"], now=start + 3.5)  # written before the reader's last look, seen within the margin
    assert mine.changes(now=start + 5) == {"d4"}
    assert other.changes(now=start + 6) == {"d3"}
    # old records are dropped by the next writer; a reader away longer than the log keeps must reload all
    other.record(["d5"], now=start + KEEP_S + 3)  # drops records older than start + 3
    left = client.get_collection(log_name("freeret-x")).get(include=["metadatas"])["metadatas"]
    assert sorted(json.loads(meta["docs"])[0] for meta in left) == ["d4", "d5"]  # d1/d2, d3 were older than KEEP_S
    assert mine.changes(now=start + 5 + KEEP_S - MARGIN_S + 1) is None
    # looked just now: fine again; records within the margin of that look come again (re-reading is harmless)
    assert mine.changes(now=start + 5 + KEEP_S - MARGIN_S + 2) == {"d5"}
    assert list_indexes(client) == []  # the log is not taken for an index


# -- two real app processes ------------------------------------------------------------------------
@pytest.mark.slow
def test_two_app_processes_on_one_server_show_each_others_uploads(tiny_model_dirs, chroma_server, tmp_path):  # noqa: F811
    """`python app.py` twice (the tiny model, a data folder each) on one Chroma server: a file uploaded
    through A's API is listed by B's /documents and cited by B's /chat, then deleted through A and
    gone from B's, with neither restarted."""
    sys.path.insert(0, str(REPO / "tests" / "ui"))
    from gradio_client import Client, handle_file
    from ui_harness import model_app

    notes = tmp_path / "zeppelin-rules.txt"
    notes.write_text("Quixotic zeppelin mooring rules: the harbour master checks every mast at dawn.\n")
    flags = ["--chroma-url", chroma_server, "--top-k", "3", "--rerank-k", "1", "--max-answer-tokens", "8",
             "--min-relevance", "0"]
    model = tiny_model_dirs["qwen2_vl"]
    with model_app(model, tmp_path / "app-a", flags, "replica-a.log") as app_a, \
            model_app(model, tmp_path / "app-b", flags, "replica-b.log") as app_b:
        a, b = (Client(app.url, verbose=False, analytics_enabled=False, download_files=False) for app in (app_a, app_b))
        assert b.predict(api_name="/documents") == []
        report = a.predict([handle_file(str(notes))], api_name="/add_files")
        assert [(row["file"], row["state"]) for row in report] == [("zeppelin-rules.txt", "done")]

        deadline = time.monotonic() + DEADLINE_S
        while not (listed := b.predict(api_name="/documents")) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert [row["file"] for row in listed] == ["zeppelin-rules.txt"], app_b.log()
        job = b.submit({"text": "zeppelin mooring rules", "files": []}, [], api_name="/chat")
        final = json.dumps(job.result()[0][-1])
        assert "zeppelin-rules.txt" in final, final[-2000:]  # B's answer cites the file A indexed

        assert a.predict(listed[0]["doc_id"], api_name="/delete") == "Deleted zeppelin-rules.txt."
        deadline = time.monotonic() + DEADLINE_S
        while (listed := b.predict(api_name="/documents")) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert listed == [], app_b.log()
        job = b.submit({"text": "zeppelin mooring rules", "files": []}, [], api_name="/chat")
        assert "zeppelin-rules.txt" not in json.dumps(job.result()[0][-1])


def test_a_views_sync_follows_another_views_commit_move_and_delete(tmp_path):
    """Two views (Stores with a change log) of one index: after each change by one, the other's
    `sync` re-reads exactly that document, and its listing equals what Chroma holds."""
    from freeret_rag.items import Item
    from freeret_rag.store import Store, connect

    client = connect(tmp_path)
    writer, reader = Store(client, "m", "p1", changelog=True), Store(client, "m", "p1", changelog=True)
    items = [Item(kind="text", text=f"zeppelin mooring rule {n}", item_id=f"d1:{n}", doc_id="d1", source="rules.txt",
                  chunk=n) for n in range(3)]
    writer.put(items, np.eye(3, 4, dtype=np.float32), {"content_hash": "h" * 64, "path": "/in/rules.txt",
                                                        "file_type": "text", "added_at": 1.0})
    assert reader.sync() == set()  # pending items are nobody's business yet
    writer.commit("d1")

    def chroma_paths() -> dict[str, set[str]]:  # doc_id -> paths of its complete items, read directly
        rows = client.get_collection(writer.name).get(where={"complete": True}, include=["metadatas"])["metadatas"]
        return {m["doc_id"]: {r["path"] for r in rows if r["doc_id"] == m["doc_id"]} for m in rows}

    assert reader.sync() == {"d1"} and chroma_paths() == {"d1": {"/in/rules.txt"}}
    assert [(d.doc_id, d.path, d.items) for d in reader.documents()] == [("d1", "/in/rules.txt", 3)]
    assert {i for i, _ in reader.lexical.search("zeppelin", 10)} == {"d1:0", "d1:1", "d1:2"}
    assert reader.sync() == set()  # nothing new: nothing re-read

    writer.relocate("d1", "/in/moved/harbour.txt", "harbour.txt")  # same items, another name
    assert reader.sync() == {"d1"} and chroma_paths() == {"d1": {"/in/moved/harbour.txt"}}
    assert [(d.path, d.source) for d in reader.documents()] == [("/in/moved/harbour.txt", "harbour.txt")]
    assert {i for i, _ in reader.lexical.search("harbour", 10)} == {"d1:0", "d1:1", "d1:2"}  # the new name

    writer.delete(["d1"])
    assert reader.sync() == {"d1"} and chroma_paths() == {}
    assert reader.documents() == [] and len(reader) == 0 and reader.lexical.search("zeppelin", 10) == []
