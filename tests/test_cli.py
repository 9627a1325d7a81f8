"""`python -m freeret_rag`: add / list / delete / search / reindex on a tiny model, the extension registry."""

from __future__ import annotations

import argparse
import io
import json
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


def test_search_loads_the_model_recorded_in_the_index(tiny_model_dirs, src, tmp_path, capsys, monkeypatch):
    data = ["--data-dir", tmp_path / "data"]
    assert run(capsys, *data, "--model", tiny_model_dirs["qwen2_vl"], "add", src / "README.md", "-q")[0] == 0
    monkeypatch.delenv("FREERET_MODEL", raising=False)
    # no --model: the machine's default model would be a hub download (impossible here) and the wrong space
    code, out, err = run(capsys, *data, "search", "garden", "--no-rerank", "--json")
    assert code == 0, err
    assert {row["label"].split(" ")[0] for row in json.loads(out)} == {"README.md"}
    assert all(row["dense"] is not None for row in json.loads(out))  # searched in the index's own space


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


# -- errors: one line on stderr, a non-zero exit code, never a traceback -------------------------
def run_failing(capsys, *argv: str) -> tuple[int, str]:
    """main(argv) where argparse may exit: (exit code, stderr)."""
    try:
        code = cli.main([str(arg) for arg in argv])
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().err


def write_beir(folder: Path, qrels: str) -> Path:
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text('{"_id": "d1", "text": "a ladybird"}\n')
    (folder / "queries.jsonl").write_text('{"_id": "q1", "text": "beetle"}\n')
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + qrels)
    return folder


@pytest.mark.parametrize("case", ["no dataset", "not beir", "unknown ids", "bad chroma url", "rerank-k 0",
                                  "unknown command", "missing path", "bad flag value", "model not found",
                                  "data dir is a file"])
def test_every_error_is_one_line_without_a_traceback(case, tmp_path, capsys):
    data = ["--data-dir", tmp_path / "data"]
    argv, code, phrase = {
        "no dataset": (["eval", tmp_path / "nope"], 2, f"error: no such dataset folder: {tmp_path / 'nope'}"),
        "not beir": (["eval", tmp_path], 2, "is not a BEIR dataset: corpus.jsonl is missing"),
        "unknown ids": (["eval", write_beir(tmp_path / "ds", "q1\tghost\t1\n")], 2, "cannot read the dataset in"),
        "bad chroma url": ([*data, "list", "--chroma-url", "chroma:8000"], 2, "chroma-url must start with http"),
        "rerank-k 0": ([*data, "search", "q", "--rerank-k", "0"], 2, "rerank-k must be at least 1, got 0"),
        "unknown command": (["bogus"], 2, "invalid choice: 'bogus'"),
        "missing path": (["add"], 2, "the following arguments are required: PATH"),
        "bad flag value": ([*data, "search", "q", "-k", "many"], 2, "argument -k: invalid int value: 'many'"),
        "model not found": ([*data, "add", tmp_path, "--model", tmp_path / "no-model"], 2, "no-model"),
        "data dir is a file": (["--data-dir", Path(write_beir(tmp_path / "f", "")) / "corpus.jsonl", "list"], 1,
                               "Not a directory"),
    }[case]
    exit_code, err = run_failing(capsys, *argv)
    assert exit_code == code, err
    assert len(err.splitlines()) == 1 and err.endswith("\n"), err
    assert phrase in err and "Traceback" not in err


def test_eval_of_a_missing_folder_in_a_real_process(tmp_path):
    done = subprocess.run([sys.executable, "-m", "freeret_rag", "eval", str(tmp_path / "nonexistent")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == f"error: no such dataset folder: {tmp_path / 'nonexistent'}\n"


def test_global_flags_after_the_subcommand(tiny_model_dirs, src, tmp_path, capsys):
    data = ["--data-dir", tmp_path / "data"]
    code, out, _ = run(capsys, "add", src / "README.md", "-q", "--model", tiny_model_dirs["qwen2_vl"],
                       "--device", "cpu", "--dtype", "float32", *data)
    assert code == 0 and "indexed 1 file(s) (2 items)" in out
    assert (tmp_path / "data").is_dir()  # --data-dir after the command was used, not the default folder
    code, out, _ = run(capsys, "list", "--json", *data)
    assert code == 0 and [doc["source"] for doc in json.loads(out)] == ["README.md"]
    code, out, _ = run(capsys, "search", "garden", "--no-rerank", "--json", *data, "--model",
                       tiny_model_dirs["qwen2_vl"])
    assert code == 0 and {row["label"].split(" ")[0] for row in json.loads(out)} == {"README.md"}


def test_check_measures_stores_and_shows_the_self_check(tiny_model_dirs, src, tmp_path, capsys):
    base = ["--data-dir", tmp_path / "data", "--model", tiny_model_dirs["qwen2_vl"]]
    for n in range(4):
        (src / f"note{n}.txt").write_text(f"Notes {n} about the garden pond, the pump and the lilies. " * 3)
    assert run(capsys, *base, "add", src, "-q")[0] == 0
    code, out, _ = run(capsys, *base, "check", "--json", "-q")  # nothing stored yet: measured now
    stored = json.loads(out)
    assert code == 0 and stored["size"] == 8 and stored["model_id"] == str(tiny_model_dirs["qwen2_vl"])
    # one test query written per sampled item (kept or rejected); spans stand in when too few were kept
    assert len(stored["queries"]) - stored["spans"] + stored["rejected"] == 8
    code, out, _ = run(capsys, *base, "check")  # shown from the index, not measured again
    assert code == 0 and out.startswith("self-check of ") and "\n- " in out
    from freeret_rag.library import Library
    from freeret_rag.selfcheck import SelfCheck

    kept = Library(None, tmp_path / "data").store.get_note("self_check")
    assert SelfCheck.from_json(kept).measured_at == stored["measured_at"]


def test_sync_follows_a_folder(tiny_model_dirs, tmp_path, capsys):
    folder = tmp_path / "watched"
    folder.mkdir()
    (folder / "first.txt").write_text("a note about the first kingfisher\n")
    (folder / "second.md").write_text("# Second\n\na note about herons\n")
    base = ["--data-dir", tmp_path / "data", "--model", tiny_model_dirs["qwen2_vl"]]
    code, out, _ = run(capsys, *base, "sync", "-q", folder)
    assert code == 0 and "2 indexed" in out and "added first.txt" in out

    (folder / "second.md").rename(folder / "renamed.md")
    (folder / "first.txt").unlink()
    code, out, _ = run(capsys, *base, "sync", "-q", folder, "--keep-deleted")
    assert code == 0 and "renamed second.md -> renamed.md" in out and "kept first.txt" in out
    code, out, _ = run(capsys, *base, "sync", "-q", folder)
    assert code == 0 and "removed first.txt (deleted on disk)" in out
    code, out, _ = run(capsys, "--data-dir", tmp_path / "data", "list", "--json")
    assert [doc["source"] for doc in json.loads(out)] == ["renamed.md"]

    code, out, _ = run(capsys, *base, "sync", "-q", tmp_path / "no such folder")
    assert code == 1 and "no such folder (nothing removed for it)" in out


def test_list_flags_scanned_pages_and_ocr_can_be_turned_off(tiny_model_dirs, tmp_path, capsys):
    from freeret_rag.devtools.scans import scanned_copy, text_pdf

    scan = scanned_copy(text_pdf(tmp_path / "typed.pdf", ["Quokka zeppelin", "Marmalade saxophone"]),
                        tmp_path / "in" / "scan.pdf")
    base = ["--data-dir", tmp_path / "data", "--model", tiny_model_dirs["qwen2_vl"]]
    code, _, _ = run(capsys, *base, "add", "-q", "--ocr", "off", scan)
    assert code == 0
    code, out, _ = run(capsys, "--data-dir", tmp_path / "data", "list")
    assert "2 of 2 pages have no text layer (not searchable by words; OCR is off)" in out
    code, _, err = run(capsys, *base, "add", "--ocr", "sometimes", scan)
    assert code == 2 and "ocr is auto, on or off" in err


def test_add_caps_a_long_file_and_says_so(tiny_model_dirs, tmp_path, capsys):
    import pymupdf

    pdf = tmp_path / "spec.pdf"
    shutil.copyfile(SAMPLES / "shared-mime-info-spec.pdf", pdf)
    pages = pymupdf.open(pdf).page_count
    code, out, _ = run(capsys, "--data-dir", tmp_path / "data", "--model", tiny_model_dirs["qwen2_vl"], "add", "-q",
                       pdf, "--max-pages", "2")
    assert code == 0 and "indexed 1 file(s) (2 items)" in out
    assert f"note spec.pdf: indexed the first 2 of {pages} pages (cap --max-pages)" in out
    code, out, _ = run(capsys, "--data-dir", tmp_path / "data", "list", "--json")
    assert [doc["items"] for doc in json.loads(out)] == [2]
