"""`python -m freeret_rag`: add / list / delete / search / reindex on a tiny model, the extension registry."""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

from freeret_rag import cli
from freeret_rag.library import Progress

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "tests" / "data" / "samples"


@pytest.fixture()
def src(tmp_path) -> Path:
    folder = tmp_path / "my files"
    folder.mkdir()
    for name in ("LadyBird.jpg", "Garden.jpg", "README.md"):
        shutil.copyfile(SAMPLES / name, folder / name)
    return folder


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_add_list_search_delete_reindex(tiny_model_dirs, src, tmp_path, capsys):
    base = ["--data-dir", tmp_path / "data", "--model", tiny_model_dirs["qwen2_vl"]]

    code, out, err = run(capsys, *base, "add", src, tmp_path / "missing.pdf")
    assert code == 0
    assert "indexed 3 file(s) (4 items), 0 already indexed, 1 skipped" in out
    assert "skipped missing.pdf: no such file or folder" in out
    assert "added     LadyBird.jpg: 1 item(s)" in err  # the per-file lines under the progress bar

    code, out, _ = run(capsys, *base, "add", src / "Garden.jpg")
    assert code == 0 and "1 already indexed" in out

    code, out, _ = run(capsys, "--data-dir", tmp_path / "data", "list")  # no model needed
    assert code == 0 and "3 document(s), 4 items" in out and "LadyBird.jpg" in out
    code, out, _ = run(capsys, "--data-dir", tmp_path / "data", "list", "--json")
    docs = {doc["source"]: doc for doc in json.loads(out)}
    assert set(docs) == {"LadyBird.jpg", "Garden.jpg", "README.md"}

    code, out, _ = run(capsys, *base, "search", "LadyBird", "-k", "2", "--kind", "image", "--no-rerank", "--json")
    rows = json.loads(out)
    assert code == 0 and rows[0]["label"] == "LadyBird.jpg" and rows[0]["rerank"] is None and len(rows) == 2
    code, out, _ = run(capsys, *base, "search", "garden photo", "--doc", "README.md", "-k", "3", "--rerank-k", "2")
    assert code == 0 and out.startswith(" 1. ") and "README.md" in out and ".jpg" not in out

    code, _, err = run(capsys, "--data-dir", tmp_path / "data", "delete", "nothing-like-this")
    assert code == 2 and "no document matches" in err
    code, out, _ = run(capsys, "--data-dir", tmp_path / "data", "delete", "Garden.jpg")
    assert code == 0 and f"deleted {docs['Garden.jpg']['doc_id']} (Garden.jpg)" in out

    code, out, _ = run(capsys, *base, "reindex")
    assert code == 0 and "nothing to re-index" in out

    other = ["--data-dir", tmp_path / "data", "--model", tiny_model_dirs["idefics3"]]
    code, _, err = run(capsys, *other, "search", "anything")
    assert code == 2 and "reindex" in err and str(tiny_model_dirs["qwen2_vl"]) in err
    code, out, _ = run(capsys, *other, "reindex", "--quiet")
    assert code == 0 and "indexed 2 file(s) (3 items)" in out
    code, out, _ = run(capsys, "--data-dir", tmp_path / "data", "list")
    assert f"model {tiny_model_dirs['idefics3']}" in out and "2 document(s), 3 items" in out


def test_add_fails_only_when_nothing_could_be_indexed(tiny_model_dirs, tmp_path, capsys):
    (tmp_path / "empty.txt").write_text("")
    code, out, _ = run(capsys, "--data-dir", tmp_path / "data", "--model", tiny_model_dirs["qwen2_vl"], "add", "-q",
                       tmp_path / "empty.txt")
    assert code == 1 and "skipped empty.txt: empty file" in out


def test_list_without_an_index_says_what_to_do(tmp_path, capsys):
    code, _, err = run(capsys, "--data-dir", tmp_path / "data", "list")
    assert code == 2 and "add files with a model loaded first" in err


def test_module_entry_point_runs(tiny_model_dirs, src, tmp_path):
    done = subprocess.run([sys.executable, "-m", "freeret_rag", "--data-dir", str(tmp_path / "data"), "--model",
                           str(tiny_model_dirs["qwen2_vl"]), "add", "--quiet", str(src / "README.md")],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "indexed 1 file(s) (2 items)" in done.stdout


def test_extensions_register_their_subcommands(monkeypatch):
    assert "eval" in cli.build_parser()._subparsers._group_actions[0].choices  # freeret_rag.eval.cli

    def register(subparsers: argparse._SubParsersAction) -> None:
        subparsers.add_parser("hello").set_defaults(func=lambda args: print(f"hello from {args.data_dir}") or 7)

    module = types.ModuleType("fake_extension")
    module.register = register
    monkeypatch.setitem(sys.modules, "fake_extension", module)
    monkeypatch.setattr(cli.importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(cli, "EXTENSIONS", ("fake_extension",))
    assert cli.main(["--data-dir", "/x", "hello"]) == 7


def test_progress_bar_prints_one_line_per_file():
    stream = io.StringIO()
    bar = cli.ProgressBar(stream)
    for event in [Progress("file", "/a/x.pdf", 1, 2), Progress("item", "/a/x.pdf", 1, 2, 1, 3),
                  Progress("item", "/a/x.pdf", 1, 2, 3, 3), Progress("added", "/a/x.pdf", 1, 2, 3, 3),
                  Progress("file", "/a/y.mp4", 2, 2), Progress("skipped", "/a/y.mp4", 2, 2, message="corrupt")]:
        bar(event)
    lines = [line.split("\r")[-1].strip() for line in stream.getvalue().splitlines()]
    assert "[1/2] added     x.pdf: 3 item(s)" in lines
    assert "[2/2] skipped   y.mp4: corrupt" in lines
