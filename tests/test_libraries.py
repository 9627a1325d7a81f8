"""libraries.py without a model: folder names, the registry's LRU and holds, demo sessions' TTL and
removal, upload caps, and the merge of a user's hits with a shared library's. Expected values are
written out by hand (or computed with hashlib directly), never by the functions under test."""

from __future__ import annotations

import gc
import hashlib
import re

import pytest

from freeret_rag.items import Hit, Item
from freeret_rag.libraries import (DemoSessions, LibraryRegistry, WithShared, merge_hits, owner_folder,
                                   session_folder, upload_caps)


def test_owner_folders_are_safe_readable_and_distinct_for_names_that_slug_alike():
    assert owner_folder("Ann") == "ann-" + hashlib.sha256(b"Ann").hexdigest()[:10]
    names = ["a.b", "a_b", "a b", "A.B", "a/b", "../../etc", "", "ünïcode", "a" * 300]
    folders = [owner_folder(name) for name in names]
    assert len(set(folders)) == len(names)
    assert folders[0].startswith("a-b-") and folders[1].startswith("a-b-")  # they slug alike ...
    assert folders[0] != folders[1]                                          # ... and still differ
    for folder in folders:
        assert re.fullmatch(r"[a-z0-9-]+-[0-9a-f]{10}", folder), folder
        assert ".." not in folder and "/" not in folder and len(folder) <= 51
    assert owner_folder("../../etc").startswith("etc-")
    assert owner_folder("") .startswith("user-")


def test_session_folders_hide_the_session_id():
    folder = session_folder("abc123")
    assert "abc123" not in folder and folder == hashlib.sha256(b"demo:abc123").hexdigest()[:24]


class Opened:
    def __init__(self, owner):
        self.owner = owner


class Holder:  # a request's view (anything that can be weakly referenced)
    pass


def test_registry_keeps_the_most_recently_used_and_never_closes_a_held_library():
    opened, closed = [], []
    registry = LibraryRegistry(lambda owner: opened.append(owner) or Opened(owner), max_open=2,
                               closer=lambda owner, lib: closed.append(owner))
    a = registry.get("a")
    assert registry.get("a") is a and opened == ["a"]  # opened once
    registry.get("b")
    registry.get("a")             # a is now the most recently used
    registry.get("c")             # over 2: the least recently used (b) goes
    assert closed == ["b"] and set(registry.owners()) == {"a", "c"}
    holder = Holder()
    assert registry.checkout("c", holder).owner == "c"
    registry.get("a")             # order: c, a
    registry.get("d")             # over 2: c is held, so a goes
    assert closed == ["b", "a"] and set(registry.owners()) == {"c", "d"}
    registry.get("e")             # c still held: d goes
    assert closed == ["b", "a", "d"] and "c" in registry
    del holder
    gc.collect()                  # the request is over: c may go now
    assert registry.held("c") == 0
    registry.get("f")
    assert "c" not in registry and closed[-1] == "c"
    assert registry.drop("f").owner == "f" and registry.drop("f") is None


def test_registry_with_every_library_held_keeps_them_open():
    registry = LibraryRegistry(Opened, max_open=1)
    holders = [Holder(), Holder()]
    registry.checkout("a", holders[0])
    registry.checkout("b", holders[1])
    assert set(registry.owners()) == {"a", "b"}  # over the cap for now, nothing closed under a request
    holders.pop()
    gc.collect()
    assert registry.owners() == ["a"]


def test_demo_sessions_expire_after_the_ttl_and_end_on_unload(tmp_path):
    now = [1000.0]
    removed = []
    stale = tmp_path / "demo" / "left-from-an-earlier-run"
    stale.mkdir(parents=True)
    sessions = DemoSessions(tmp_path / "demo", ttl_s=60, on_remove=removed.append, clock=lambda: now[0])
    assert not stale.exists()
    a, b = sessions.touch("A"), sessions.touch("B")
    (a / "file.txt").write_text("A's")
    assert a == tmp_path / "demo" / hashlib.sha256(b"demo:A").hexdigest()[:24]
    now[0] += 50
    sessions.touch("B")
    assert sessions.sweep() == []
    now[0] += 11                  # A: 61 s unused, B: 11 s
    assert sessions.sweep() == ["A"] and removed == ["A"]
    assert not a.exists() and b.exists()
    assert sessions.session_of(b.name) == "B" and sessions.session_of(a.name) is None
    assert sessions.end("B") and removed == ["A", "B"] and not b.exists()
    assert not sessions.end("B")
    busy = {"C"}
    sessions.busy = lambda session: session in busy  # C is in a long request (an upload)
    c = sessions.touch("C")
    now[0] += 120
    assert sessions.sweep() == [] and c.exists()
    busy.clear()
    assert sessions.sweep() == ["C"] and not c.exists()


def test_a_closed_tab_keeps_its_library_for_the_grace_time_and_a_running_upload_keeps_it_longer(tmp_path):
    """Gradio's unload also comes when a tab's connection drops and comes back: `end` removes a
    session only `grace_s` later without a request, never while a request of it runs; a folder left
    by a request that ran on after its session went is swept."""
    now, removed, busy = [0.0], [], set()
    sessions = DemoSessions(tmp_path / "demo", ttl_s=3600, on_remove=removed.append, clock=lambda: now[0],
                            busy=lambda session: session in busy, grace_s=60)
    a, b = sessions.touch("A"), sessions.touch("B")
    assert sessions.end("A") and a.exists() and sessions.live("A")  # said closed: kept for now
    now[0] += 59
    assert sessions.sweep() == [] and a.exists()
    now[0] += 1                                                      # 60 s after the unload
    assert sessions.sweep() == ["A"] and not a.exists() and removed == ["A"]
    assert sessions.end("B")
    now[0] += 30
    sessions.touch("B")                                              # the tab came back
    now[0] += 100
    assert sessions.sweep() == [] and b.exists() and sessions.live("B")
    assert sessions.end("B")
    busy.add("B")                                                    # its upload still runs
    now[0] += 600
    assert sessions.sweep() == [] and b.exists()
    busy.clear()
    assert sessions.sweep() == ["B"] and not b.exists()
    stray = tmp_path / "demo" / session_folder("gone")               # re-created by a late writer
    (stray / "files").mkdir(parents=True)
    kept = sessions.touch("C")
    assert sessions.sweep() == [] and stray.exists()  # a request's sweep does not list the folder
    sessions.remove_orphans()                                        # the periodic sweep does
    assert not stray.exists() and kept.exists()
    assert not sessions.end("never-seen")


def test_upload_caps_say_files_and_megabytes_in_the_right_number():
    mb = 1024 ** 2
    assert upload_caps([10, 20], 0, 0, max_files=1, max_bytes=0) == [
        None, "this demo library holds at most 1 file: delete one to add another"]
    assert upload_caps([10, 20, 30], 1, 0, max_files=3, max_bytes=0)[2] == \
        "this demo library holds at most 3 files: delete one to add another"
    reasons = upload_caps([3 * mb, 3 * mb, mb], 0, 0, max_files=10, max_bytes=5 * mb)
    assert reasons[0] is None and reasons[2] is None  # the third still fits after the second was refused
    assert reasons[1] == "this demo library holds at most 5 MB in all (2 MB left)"
    assert upload_caps([10 ** 9], 50, 10 ** 9, 0, 0) == [None]  # 0: no cap
    assert upload_caps([mb], 0, int(49.5 * mb), 10, 50 * mb) == ["this demo library holds at most 50 MB in all "
                                                                 "(0.5 MB left)"]


def hit(item_id, doc_id, rerank=None, fused=None):
    return Hit(Item(item_id=item_id, doc_id=doc_id, source=doc_id, kind="text", text=item_id),
               rerank_score=rerank, fused_score=fused)


def test_merged_hits_keep_each_librarys_order_best_head_first():
    own = [hit("o1", "own", rerank=0.9), hit("o2", "own", rerank=0.2), hit("o3", "own", fused=0.5)]
    shared = [hit("s1", "shared", rerank=0.5), hit("s2", "shared", fused=0.9)]
    assert [h.item.item_id for h in merge_hits([own, shared], 10)] == ["o1", "s1", "o2", "s2", "o3"]
    assert [h.item.item_id for h in merge_hits([own, shared], 2)] == ["o1", "s1"]
    assert merge_hits([[], []], 5) == []


class FakeLibrary:
    def __init__(self, docs, hits):
        self.docs, self.hits, self.asked = docs, hits, []
        self.relevance_floor = 0.3

    def documents(self):
        return [type("Doc", (), {"doc_id": d, "source": d})() for d in self.docs]

    def search(self, query, k=10, **options):
        self.asked.append((query, k, options))
        return self.hits

    def serves(self, path):
        return str(path) in self.docs


def test_with_shared_searches_both_and_lists_the_shared_documents_as_read_only():
    own = FakeLibrary(["mine"], [hit("o1", "mine", rerank=0.1)])
    shared = FakeLibrary(["theirs"], [hit("s1", "theirs", rerank=0.8)])
    both = WithShared(own, [shared, None])
    assert [h.item.item_id for h in both.search("q", k=5, rerank=True)] == ["s1", "o1"]
    assert own.asked == shared.asked == [("q", 5, {"rerank": True})]
    assert [d.doc_id for d in both.documents()] == ["mine", "theirs"]
    assert both.read_only_ids() == {"theirs"}
    assert both.serves("theirs") and not both.serves("nothing")
    empty = WithShared(FakeLibrary([], []), [shared])
    assert [h.item.item_id for h in empty.search("q")] == ["s1"] and empty.relevance_floor == 0.3


def test_registry_closes_libraries_idle_for_long_unless_held():
    closed = []
    registry = LibraryRegistry(Opened, closer=lambda owner, lib: closed.append(owner))
    holder = Holder()
    registry.get("idle")
    registry.checkout("held", holder)
    import time as clock

    later = clock.monotonic() + 3600
    assert registry.close_idle(60, now=later) == ["idle"] and closed == ["idle"]
    assert registry.owners() == ["held"]
    registry.get("fresh")
    assert registry.close_idle(60) == [] and set(registry.owners()) == {"held", "fresh"}


def test_a_checkout_during_a_plain_get_that_opens_the_same_library_does_not_hang():
    import threading

    opening, go_on = threading.Event(), threading.Event()

    def opener(owner):
        opening.set()
        go_on.wait(10)  # opening a library takes a while (Chroma, the lexical index)
        return Opened(owner)

    registry = LibraryRegistry(opener)
    done: dict[str, object] = {}
    file_route = threading.Thread(target=lambda: done.setdefault("get", registry.get("ann")), daemon=True)
    file_route.start()
    assert opening.wait(10)
    holder = Holder()
    handler = threading.Thread(target=lambda: done.setdefault("checkout", registry.checkout("ann", holder)),
                               daemon=True)
    handler.start()
    handler.join(1)  # the handler now waits for ann's library to be opened (not a timing assertion)
    go_on.set()
    file_route.join(10)
    handler.join(10)
    assert set(done) == {"get", "checkout"}  # both came back
    assert done["get"] is done["checkout"]
