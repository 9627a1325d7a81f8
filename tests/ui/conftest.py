"""Fixtures of the UI tests: the real engine on tiny models, a real Library in a temp folder,
small media files, and (for the browser tests) a fluent SmolLM2-based VLM."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # ui_harness, ui_models

from ui_harness import GUIDE_PAGES, browser_skip_reason, make_pdf  # noqa: E402


@pytest.fixture(scope="session")
def tiny_engine(tiny_model_dirs):
    from freeret_rag import FreeRet

    return FreeRet.from_pretrained(tiny_model_dirs["qwen2_vl"], max_new_tokens=24)


@pytest.fixture(scope="session")
def text_only_engine(tiny_model_dirs):
    from freeret_rag import FreeRet

    return FreeRet.from_pretrained(tiny_model_dirs["llama"], max_new_tokens=16)


@pytest.fixture
def media(tmp_path, samples_dir) -> dict[str, Path]:
    """A 2-page PDF made here plus (temp copies of) the shared sample image, video and spec PDF."""
    folder = tmp_path / "media"
    folder.mkdir()
    files = {"pdf": make_pdf(folder / "garden-guide.pdf", GUIDE_PAGES)}
    for key, name in (("image", "LadyBird.jpg"), ("video", "nature-scenes.mp4"), ("image2", "YellowFlower.jpg"),
                      ("spec", "shared-mime-info-spec.pdf")):
        files[key] = samples_dir / name
    return files


@pytest.fixture
def make_app(tmp_path, tiny_engine):
    """Build a FreeRetApp on the real tiny engine and a real Library in a fresh data dir."""
    from freeret_rag.config import parse_config
    from freeret_rag.ui import FreeRetApp

    def build(*flags: str, engine=None, data_dir: Path | None = None) -> FreeRetApp:
        config = parse_config(["--data-dir", str(data_dir or tmp_path / "data"), *flags], {})
        return FreeRetApp(config, engine=engine or tiny_engine)

    return build


@pytest.fixture(scope="session")
def fluent_vlm_dir(tmp_path_factory, smollm2_gguf) -> Path:
    """Idefics3 shell around SmolLM2-135M-Instruct (fluent answers), built once per session (~20-40 s)."""
    from ui_models import build_fluent_vlm

    package_dir, gguf_file = smollm2_gguf
    return build_fluent_vlm(tmp_path_factory.mktemp("fluent_vlm"), package_dir, gguf_file)


@pytest.fixture
def browser_available(require_tool) -> None:
    """Headless Chromium and the playwright package are there (else skip; under CI, fail)."""
    reason = browser_skip_reason()
    require_tool("chromium", reason is None, reason or "")
