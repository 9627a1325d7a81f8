"""freeret_rag/settings.py: one set of defaults and one validation path for the app, the CLI and eval;
the core never imports the web app (checked on the source files themselves)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from freeret_rag import cli, settings
from freeret_rag.chat import ChatSettings
from freeret_rag.config import AppConfig, parse_config

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "freeret_rag"
FORBIDDEN = ("freeret_rag.config", "freeret_rag.ui", "gradio")


def is_app_side(relative: Path) -> bool:
    """The web app's own modules: config.py, ui.py, and ui_*.py / a ui/ package should ui.py be split."""
    top = relative.parts[0]
    return top in ("config.py", "ui.py", "ui") or top.startswith("ui_")


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in a file, at any depth; relative ones resolved."""
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def test_the_import_walker_resolves_relative_imports(tmp_path):
    # the walker is the oracle below, so check it on known lines first
    sample = PACKAGE / "eval" / "cli.py"
    names = {name for _, name in imports_of(sample)}
    assert {"freeret_rag.settings", "freeret_rag.embed", "freeret_rag.errors.FreeRetError"} <= names
    assert "freeret_rag.config" in {name for _, name in imports_of(PACKAGE / "ui.py")}


def test_the_core_never_imports_the_web_app_or_gradio():
    core = [path for path in sorted(PACKAGE.rglob("*.py")) if not is_app_side(path.relative_to(PACKAGE))]
    assert PACKAGE / "settings.py" in core and PACKAGE / "cli.py" in core and PACKAGE / "library.py" in core
    offenders = [f"{path.relative_to(REPO)}:{line} imports {name}" for path in core
                 for line, name in imports_of(path)
                 if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN)]
    assert offenders == []


def test_settings_imports_neither_torch_nor_gradio():
    code = ("import sys, freeret_rag.settings, freeret_rag.config; "
            "print(sorted(m for m in ('torch', 'gradio', 'chromadb', 'transformers') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def readme_answer_defaults() -> dict[str, object]:
    """The answer defaults as the README's options table states them (the documented values)."""
    row = next(line for line in (REPO / "README.md").read_text().splitlines() if line.startswith("| `--top-k`"))
    top_k, rerank, rerank_k, sources, min_relevance = (cell.strip() for cell in row.split("|")[3].split(","))
    return {"top_k": int(top_k), "rerank": rerank == "on", "rerank_k": int(rerank_k), "n_sources": int(sources),
            "min_relevance": None if min_relevance == "auto" else float(min_relevance)}


def test_answer_defaults_are_the_documented_ones_everywhere():
    documented = readme_answer_defaults()
    assert documented == {"top_k": 20, "rerank": True, "rerank_k": 10, "n_sources": 3, "min_relevance": None}
    chat, app, parsed = ChatSettings(), AppConfig(), parse_config([], {})
    for name, value in documented.items():
        assert (getattr(chat, name), getattr(app, name), getattr(parsed, name)) == (value,) * 3, name
    search = cli.build_parser({}).parse_args(["search", "q"])
    assert settings.read_flags(search, ("rerank", "rerank_k")) == {"rerank": True, "rerank_k": 10}


@pytest.mark.parametrize("environ,message,command", [
    ({"FREERET_TOP_K": "many"}, "--top-k [FREERET_TOP_K]: expected a whole number, got 'many'", None),
    ({"FREERET_MIN_RELEVANCE": "high"}, "--min-relevance [FREERET_MIN_RELEVANCE]: expected a number, got 'high'",
     None),
    ({"FREERET_RERANK": "maybe"}, "--rerank [FREERET_RERANK]: expected true/false, got 'maybe'", ["search", "q"]),
    ({"FREERET_RERANK_K": "0"}, "rerank-k must be at least 1, got 0", ["search", "q"]),
    ({"FREERET_CHROMA_URL": "chroma:8000"}, "chroma-url must start with http:// or https://, got 'chroma:8000'",
     ["list"]),
])
def test_the_app_and_the_cli_reject_a_bad_variable_with_the_same_message(environ, message, command, monkeypatch,
                                                                        capsys, tmp_path):
    with pytest.raises(settings.ConfigError) as raised:
        parse_config([], environ)
    assert str(raised.value) == message
    if command is None:  # an app-only answer default: the CLI has no such flag
        return
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert cli.main(["--data-dir", str(tmp_path / "data"), *command]) == 2
    assert capsys.readouterr().err == f"error: {message}\n"  # before any model or index is opened
    assert not (tmp_path / "data").exists()


def test_chat_settings_use_the_same_checks():
    with pytest.raises(settings.ConfigError, match="sources must be at least 1"):
        ChatSettings(n_sources=0)
    with pytest.raises(ValueError, match="probability"):
        ChatSettings(min_relevance=1.5)


@pytest.mark.parametrize("command", [["add", "x"], ["list"], ["delete", "d"], ["search", "q"], ["reindex"],
                                     ["eval", "ds"], ["check"], ["sync", "d"]])
def test_global_flags_work_after_every_subcommand(command):
    parser = cli.build_parser({})
    flags = ["--model", "m", "--device", "cpu", "--dtype", "float32", "--visual-budget", "full", "--data-dir", "/d",
             "--chroma-url", "http://c:1", "--ocr", "off", "--fusion-weights", "1,0.5,0", "--rerank-share", "0.25", "-v"]
    before, after = parser.parse_args(flags + command), parser.parse_args(command + flags)
    expected = {"model": "m", "device": "cpu", "dtype": "float32", "visual_budget": "full", "data_dir": Path("/d"),
                "chroma_url": "http://c:1", "ocr": "off", "fusion_weights": (1.0, 0.5, 0.0), "rerank_share": 0.25}
    for args in (before, after):
        assert settings.read_flags(args) == expected and args.verbose is True


def test_visual_budget_is_auto_or_full():
    parser = cli.build_parser({"FREERET_VISUAL_BUDGET": "half"})
    with pytest.raises(settings.ConfigError, match="visual-budget is auto or full, got 'half'"):
        settings.read_flags(parser.parse_args(["list"]))
    assert settings.read_flags(cli.build_parser({}).parse_args(["list"]))["visual_budget"] == "auto"


def test_a_flag_before_the_subcommand_is_not_reset_by_the_subcommand():
    parser = cli.build_parser({"FREERET_MODEL": "from-env", "FREERET_DATA_DIR": "/env"})
    assert parser.parse_args(["list"]).model == "from-env"
    args = parser.parse_args(["--model", "before", "--data-dir", "/b", "add", "x"])
    assert (args.model, args.data_dir) == ("before", "/b")
    args = parser.parse_args(["--model", "before", "add", "x", "--model", "after"])
    assert args.model == "after"


def test_default_data_dir_follows_xdg_and_the_variable(tmp_path):
    if sys.platform in ("win32", "darwin"):
        pytest.skip("XDG_DATA_HOME applies on Linux and other Unix systems only")
    assert settings.default_data_dir({"XDG_DATA_HOME": str(tmp_path)}) == tmp_path / "freeret-rag"
    parsed = cli.build_parser({"XDG_DATA_HOME": str(tmp_path)}).parse_args(["list"])
    assert settings.read_flags(parsed)["data_dir"] == tmp_path / "freeret-rag"
    assert parse_config([], {"FREERET_DATA_DIR": str(tmp_path / "x")}).data_dir == tmp_path / "x"


def test_app_help_still_groups_the_shared_flags(capsys):
    with pytest.raises(SystemExit):
        parse_config(["--help"], {})
    text = capsys.readouterr().out
    groups = re.findall(r"^(\w[^\n:]*):$", text, re.M)
    assert groups == ["options", "model", "storage", "server",
                      "answer defaults (each session can change them in Settings)",
                      "search (a fixed value overrides what the library's self-check measured)",
                      "indexing (caps per file; 0 for none)", "many users"]
    for flag in settings.FLAGS.values():
        assert flag.option in text and flag.env in text


def test_fixed_search_settings_parse_and_reach_the_library(tmp_path):
    assert settings.parse_weights("1,0.25,0.5", "w") == (1.0, 0.25, 0.5)
    assert settings.parse_weights("1,0", "w") == (1.0, 0.0, 1.0)  # no words weight given: 1
    assert settings.parse_weights("auto", "w") is None
    for bad in ("0,0,0", "1,-1", "a,b", "1,2,3,4"):
        with pytest.raises(settings.ConfigError):
            settings.parse_weights(bad, "w")
    config = parse_config(["--fusion-weights", "0,1,0", "--rerank-share", "0"], {})
    assert config.fusion_weights == (0.0, 1.0, 0.0) and config.rerank_share == 0.0
    args = cli.build_parser({}).parse_args(["--data-dir", str(tmp_path), "list", "--fusion-weights", "1,0,0"])
    assert settings.read_flags(args, settings.COMMON)["fusion_weights"] == (1.0, 0.0, 0.0)
    with pytest.raises(settings.ConfigError, match="rerank-share is between 0 and 1"):
        parse_config(["--rerank-share", "1.5"], {})


def test_caps_per_file_come_from_flag_or_environment_and_reach_the_library(tmp_path):
    config = parse_config(["--max-pages", "7"], {"FREERET_MAX_CHUNKS": "40", "FREERET_MAX_PAGES": "9"})
    assert (config.max_pages, config.max_chunks, config.max_video_minutes) == (7, 40, settings.MAX_VIDEO_MINUTES)
    args = cli.build_parser({"FREERET_MAX_VIDEO_MINUTES": "2.5"}).parse_args(
        ["--data-dir", str(tmp_path), "add", "x", "--max-pages", "0"])
    assert settings.read_flags(args, settings.CAPS) == {"max_pages": 0, "max_chunks": settings.MAX_CHUNKS,
                                                        "max_video_minutes": 2.5}
    with pytest.raises(settings.ConfigError, match="max-chunks must be 0 \\(no cap\\) or more"):
        parse_config(["--max-chunks", "-1"], {})
    with pytest.raises(settings.ConfigError, match="expected a whole number"):
        parse_config([], {"FREERET_MAX_PAGES": "lots"})

    from fake_engine import FakeEngine

    from freeret_rag.ui import FreeRetApp

    app = FreeRetApp(parse_config(["--data-dir", str(tmp_path / "data"), "--max-pages", "3"], {}),
                     engine=FakeEngine())
    assert app.library.media_settings.max_pages == 3
