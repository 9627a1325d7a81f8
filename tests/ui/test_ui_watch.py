"""Watched folders in the app: `--watch DIR`, the "Add a folder to watch" control and its log."""

from __future__ import annotations

import time
from dataclasses import replace
import pytest

from freeret_rag.config import ConfigError, parse_config


def wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.1)


@pytest.fixture()
def apps(make_app):
    built = []

    def build(*flags):
        built.append(make_app(*flags))
        return built[-1]

    yield build
    for app in built:
        for watcher in app.watchers:
            watcher.stop()


def test_a_folder_added_in_the_panel_is_watched(apps, tmp_path):
    folder = tmp_path / "papers"
    folder.mkdir()
    (folder / "first.md").write_text("# First\n\nnotes about owls\n")
    app = apps()
    assert "No folder is watched" in app.watch_status()
    message = app.watch_folder(str(folder))
    assert message == f"Watching {folder.resolve()}: new and changed files are indexed, deleted ones removed."
    wait_for(lambda: [row[0] for row in app.document_rows()] == ["first.md"])
    wait_for(lambda: app.watchers[0].syncs == 1)
    seen = app.watch_changes()
    (folder / "second.txt").write_text("notes about hawks\n")
    wait_for(lambda: app.watch_changes() > seen)
    wait_for(lambda: [row[0] for row in app.document_rows()] == ["first.md", "second.txt"])
    status = app.watch_status()
    assert str(folder.resolve()) in status and "added second.txt" in status
    assert app.watch_folder(str(folder / ".")).endswith("is already watched (in " + str(folder.resolve()) + ").")


def test_what_the_panel_refuses(apps, tmp_path):
    app = apps()
    assert app.watch_folder("  ") == "Type the path of a folder on this machine."
    assert app.watch_folder(str(tmp_path / "nowhere")).startswith("There is no folder")
    assert app.watch_folder(str(tmp_path / "data")) == "That is the app's own data folder."
    served = apps("--data-dir", str(tmp_path / "data2"))
    served.config = replace(served.config, host="0.0.0.0")  # as if served beyond this machine
    assert not served.may_watch and "start it with `--watch DIR`" in served.watch_folder(str(tmp_path))
    assert served.watchers == []


def test_watch_flags_start_watchers(apps, tmp_path):
    folder = tmp_path / "shared"
    folder.mkdir()
    (folder / "memo.txt").write_text("a memo about cranes\n")
    app = apps("--watch", str(folder), "--keep-deleted")
    assert [w.folder for w in app.watchers] == [folder.resolve()]
    wait_for(lambda: [row[0] for row in app.document_rows()] == ["memo.txt"])
    (folder / "memo.txt").unlink()
    wait_for(lambda: any("kept memo.txt" in line for line in app.watchers[0].lines()))
    assert [row[0] for row in app.document_rows()] == ["memo.txt"]  # --keep-deleted


def test_watch_configuration(tmp_path):
    config = parse_config(["--data-dir", str(tmp_path)], {"FREERET_WATCH": f"{tmp_path}"})
    assert config.watch == (tmp_path,) and config.keep_deleted is False
    with pytest.raises(ConfigError, match="watch: there is no folder"):
        parse_config(["--watch", str(tmp_path / "missing")], {})
