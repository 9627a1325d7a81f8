"""Per-user views in process (no browser): the flags, a Chroma server with one database per login,
watched folders off with many users, and a demo tab's library removed when the tab closes."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pytest

from test_chroma_server_down import server  # noqa: F401 - the fixture

from freeret_rag.config import ConfigError, parse_config


@dataclass
class FakeRequest:  # what the handlers read of a gr.Request
    username: str | None = None
    session_hash: str | None = None


def test_demo_is_on_in_a_space_without_a_login_and_the_flags_are_checked(tmp_path):
    assert parse_config([], {"SPACE_ID": "me/app"}).demo
    assert not parse_config(["--auth", "ann:pw"], {"SPACE_ID": "me/app"}).demo
    assert not parse_config([], {"SPACE_ID": "me/app", "FREERET_DEMO": "0"}).demo
    assert not parse_config([], {}).demo and parse_config(["--demo"], {}).demo
    assert parse_config(["--host", "0.0.0.0"], {"SPACE_ID": "me/app"}).host == "0.0.0.0"  # a demo needs no login
    demo = parse_config(["--demo", "--demo-ttl-minutes", "5", "--demo-max-mb", "2", "--demo-max-files", "1"], {})
    assert (demo.demo_ttl_minutes, demo.demo_max_mb, demo.demo_max_files) == (5.0, 2.0, 1)
    with pytest.raises(ConfigError, match="choose one"):
        parse_config(["--demo", "--auth", "ann:pw"], {})
    with pytest.raises(ConfigError, match="--watch keeps one library"):
        parse_config(["--auth", "ann:pw", "--watch", str(tmp_path)], {})
    with pytest.raises(ConfigError, match="holds no library"):
        parse_config(["--shared-library", str(tmp_path)], {})


def test_every_login_has_its_own_database_on_a_chroma_server(server, make_app, tmp_path):
    import chromadb
    from chromadb.config import Settings

    notes = tmp_path / "ann-notes.txt"
    notes.write_text("Ann's notes: the greenhouse key is in the red box.\n")
    old = tmp_path / "old-single-library.txt"
    old.write_text("The single library of before: the boiler is serviced in October.\n")
    single = make_app("--chroma-url", server.url, data_dir=tmp_path / "single")
    *_, result = single.ingest([str(old)])
    assert [s.state for s in result.files] == ["done"]
    app = make_app("--auth", "ann:pw,bob:pw", "--chroma-url", server.url)
    assert app.document_rows() == [] and app.document_choices() == []  # the page's first values: nobody's
    ann, bob = app.for_request(FakeRequest("ann")), app.for_request(FakeRequest("bob"))
    *_, result = ann.ingest([str(notes)])
    assert [s.state for s in result.files] == ["done"]
    assert [doc.source for doc in ann.documents()] == ["ann-notes.txt"] and bob.documents() == []
    admin = chromadb.AdminClient(Settings(chroma_api_impl="chromadb.api.fastapi.FastAPI",
                                          chroma_server_host="127.0.0.1", chroma_server_http_port=server.port,
                                          anonymized_telemetry=False))
    names = {db["name"] if isinstance(db, dict) else db.name for db in admin.list_databases()}
    expected = {f"freeret_{login}_{hashlib.sha256(login.encode()).hexdigest()[:10]}" for login in ("ann", "bob")}
    assert expected <= names
    ann_db = chromadb.HttpClient(host="127.0.0.1", port=server.port, database=min(expected))  # ann sorts first
    assert sum(ann_db.get_collection(c.name).count() for c in ann_db.list_collections()) >= 1
    bob_db = chromadb.HttpClient(host="127.0.0.1", port=server.port, database=max(expected))
    assert sum(bob_db.get_collection(c.name).count() for c in bob_db.list_collections()) == 0
    assert "freeret_empty" in names  # the app's own, empty, library with logins
    assert [doc.source for doc in bob.listed()] == []  # the single library of before is nobody's


def test_with_many_users_watched_folders_are_off_and_a_closed_tab_takes_its_library(make_app, tmp_path):
    users = make_app("--auth", "ann:pw")
    ann = users.for_request(FakeRequest("ann"))
    assert not ann.may_watch and "library of its own" in ann.watch_folder(str(tmp_path))
    with pytest.raises(Exception, match="Sign in first"):
        users.for_request(FakeRequest(None))

    demo = make_app("--demo", "--demo-grace-seconds", "0", data_dir=tmp_path / "demo-data")
    tab = demo.for_request(FakeRequest(session_hash="tab-1"))
    folder = tmp_path / "demo-data" / "demo" / hashlib.sha256(b"demo:tab-1").hexdigest()[:24]
    assert tab.config.data_dir == folder and folder.is_dir()
    note = tmp_path / "note.txt"
    note.write_text("A note about otters.\n")
    *_, result = tab.ingest([str(note)])
    assert [s.state for s in result.files] == ["done"] and any(folder.rglob("note.txt"))
    del tab
    demo.users.end_session(FakeRequest(session_hash="tab-1"))  # what demo.unload calls
    assert not folder.exists()
    assert demo.for_request(FakeRequest(session_hash="tab-1")).documents() == []  # back: a fresh library


def test_a_demo_tabs_megabyte_cap_refuses_the_file_that_goes_over(make_app, tmp_path):
    demo = make_app("--demo", "--demo-max-mb", "0.01", data_dir=tmp_path / "demo-data")  # 10240 bytes
    small, big = tmp_path / "small.txt", tmp_path / "big.txt"
    small.write_text("Otters hold hands while they sleep.\n" * 100)     # 3600 bytes
    big.write_text("Badgers dig setts with many tunnels.\n" * 200)      # 7400 bytes: 11000 in all
    tab = demo.for_request(FakeRequest(session_hash="tab-2"))
    *_, result = tab.ingest([str(small), str(big)])
    assert [(s.name, s.state) for s in result.files] == [("small.txt", "done"), ("big.txt", "skipped")]
    # left: (int(0.01 * 2**20) - 3600) / 2**20 = 0.006566...
    assert result.files[1].message == "this demo library holds at most 0.01 MB in all (0.00657 MB left)"
    assert [doc.source for doc in tab.documents()] == ["small.txt"]
    # A later upload counts what the library already keeps: 7020 bytes alone fit, 3600 + 7020 do not.
    medium = tmp_path / "medium.txt"
    medium.write_text("Moles dig long tunnels under lawns.\n" * 195)  # 36 x 195 = 7020 bytes
    assert medium.stat().st_size == 7020 < int(0.01 * 2**20) < 3600 + 7020
    *_, result = demo.for_request(FakeRequest(session_hash="tab-2")).ingest([str(medium)])
    assert [(s.name, s.state, s.message) for s in result.files] == [
        ("medium.txt", "skipped", "this demo library holds at most 0.01 MB in all (0.00657 MB left)")]
    assert [doc.source for doc in tab.documents()] == ["small.txt"]


def test_a_demo_tabs_sample_library_on_a_chroma_server_holds_only_the_samples(server, make_app, tmp_path,
                                                                               monkeypatch):
    from freeret_rag.ui_users import Users

    old = tmp_path / "old-single-library.txt"
    old.write_text("The single library of before: the boiler is serviced in October.\n")
    single = make_app("--chroma-url", server.url, data_dir=tmp_path / "single")
    *_, result = single.ingest([str(old)])
    assert [s.state for s in result.files] == ["done"]
    samples = tmp_path / "samples"
    samples.mkdir()
    (samples / "garden.txt").write_text("Ladybirds eat aphids in the garden.\n")
    monkeypatch.setattr(Users.__init__, "__defaults__", (samples,))  # a small sample library
    demo = make_app("--demo", "--chroma-url", server.url, data_dir=tmp_path / "demo-data")
    tab = FakeRequest(session_hash="tab-3")
    said = demo.users.attach_samples(tab)
    assert "garden.txt" in said
    assert "old-single-library.txt" not in said
    view = demo.for_request(tab)
    assert [doc.source for doc in view.listed()] == ["garden.txt"]
    assert "No documents of yours yet: the 1 shared document below is searched" in view.library_summary()


def test_a_demo_tab_closed_during_its_upload_leaves_nothing_on_disk(make_app, tmp_path):
    demo = make_app("--demo", "--demo-grace-seconds", "0", data_dir=tmp_path / "demo-data")
    tab = demo.for_request(FakeRequest(session_hash="tab-4"))
    folder = tmp_path / "demo-data" / "demo" / hashlib.sha256(b"demo:tab-4").hexdigest()[:24]
    assert tab.config.data_dir == folder
    files = []
    for number in range(3):
        note = tmp_path / f"note-{number}.txt"
        note.write_text(f"Note {number} about otters and badgers.\n" * 20)
        files.append(str(note))
    for step, _ in enumerate(tab.ingest(files)):
        if step == 2:  # the upload is under way: the tab closes (demo.unload)
            demo.users.end_session(FakeRequest(session_hash="tab-4"))
            assert folder.is_dir()  # not while its upload runs (it would write on into a removed folder)
    assert [doc.source for doc in tab.documents()] == ["note-0.txt", "note-1.txt", "note-2.txt"]
    del tab
    demo.users.sessions.sweep()
    assert not demo.users.sessions.live("tab-4")
    assert not folder.exists(), sorted(str(p.relative_to(folder)) for p in folder.rglob("*.txt"))


def test_at_exit_the_sample_librarys_indexing_stops_at_its_next_batch_and_is_waited_for(make_app, tmp_path,
                                                                                        monkeypatch):
    """Left running at exit, the start-up indexing of the sample library would be in the model's
    native code while Python finalises, which aborts the process (exit status 134): the exit hook
    stops it at its next batch and waits for it."""
    from freeret_rag import ui_users
    from freeret_rag.ui_users import Users

    samples = tmp_path / "samples"
    samples.mkdir()
    for number in range(40):
        (samples / f"note-{number:02d}.txt").write_text(f"Note {number}: the heron fishes at dawn.\n" * 30)
    monkeypatch.setattr(Users.__init__, "__defaults__", (samples,))
    demo = make_app("--demo", data_dir=tmp_path / "demo-data")
    users = demo.users
    assert users._indexing.is_alive() and users in ui_users._RUNNING
    ui_users._stop_background_indexing()  # what the interpreter runs at exit
    assert not users._indexing.is_alive()
    indexed = users._samples.documents() if users._samples is not None else []
    assert len(indexed) < 40  # stopped, not run to the end
