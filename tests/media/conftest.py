"""Fixtures for the media loaders: writable copies of the shared samples, an asset folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples"  # shipped with the repository


@pytest.fixture
def sample(tmp_path: Path):
    """sample("Garden.jpg", "new name.jpg") -> a writable copy in tmp (samples are read-only)."""

    def copy(name: str, as_name: str | None = None) -> Path:
        source = SAMPLES / name
        assert source.exists(), f"sample {name} is missing from tests/data/samples"
        target = tmp_path / "in" / (as_name or name)
        target.parent.mkdir(exist_ok=True)
        shutil.copyfile(source, target)
        return target

    return copy


@pytest.fixture
def assets(tmp_path: Path) -> Path:
    return tmp_path / "assets"


@pytest.fixture
def write(tmp_path: Path):
    """write("name.ext", bytes) -> path of a new file with that content."""

    def make(name: str, data: bytes) -> Path:
        target = tmp_path / "in" / name
        target.parent.mkdir(exist_ok=True)
        target.write_bytes(data)
        return target

    return make
