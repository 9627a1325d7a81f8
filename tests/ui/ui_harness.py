"""Helpers for the end-to-end UI tests: start the real app on a free port, drive a real headless
Chromium with Playwright, save screenshots as test artifacts.

Chromium is Debian's (`apt-get install -y chromium`); Playwright's own browser download
(`playwright install`) is never used. Tests that need a browser skip with a clear reason when it
is missing, and fail under CI (fixture `browser_available`, conftest.require_tool).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

REPO_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]

OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
               "GRADIO_ANALYTICS_ENABLED": "False", "ANONYMIZED_TELEMETRY": "False", "DO_NOT_TRACK": "1"}


def make_pdf(path: Path, pages: list[str]) -> Path:
    """A small real PDF: one text paragraph and a coloured box per page."""
    import pymupdf

    doc = pymupdf.open()
    for number, text in enumerate(pages):
        page = doc.new_page(width=420, height=300)
        page.insert_textbox(pymupdf.Rect(30, 30, 390, 200), text, fontsize=13)
        page.draw_rect(pymupdf.Rect(30, 210, 130 + 40 * number, 270), color=(0.2, 0.3, 0.8), fill=(0.6, 0.7, 1.0))
    doc.save(path)
    doc.close()
    return path


GUIDE_PAGES = [
    "Garden guide. Ladybirds are small red beetles with black spots. They eat aphids and protect roses.",
    "Watering plan. Water the yellow flowers every morning in summer; the garden pond needs a pump check.",
]


def shared_samples() -> Path:
    """The read-only sample files shipped in tests/data/samples."""
    return REPO_ROOT / "tests" / "data" / "samples"


def chromium_path() -> str | None:
    env = os.environ.get("FREERET_CHROMIUM")
    for candidate in ([env] if env else []) + list(CHROMIUM_CANDIDATES):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("chromium")
    return found


def browser_skip_reason() -> str | None:
    """Why browser tests cannot run here, or None when they can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Python package playwright is not installed (pip install playwright; no `playwright install` needed)"
    if chromium_path() is None:
        return "Chromium not found: apt-get install -y chromium (or set FREERET_CHROMIUM)"
    return None


def artifacts_dir() -> Path:
    """Where screenshots and app logs go: $FREERET_ARTIFACTS, else tests/ui/artifacts (gitignored)."""
    path = Path(os.environ.get("FREERET_ARTIFACTS") or Path(__file__).resolve().parent / "artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class AppServer:
    """`python app.py ...` in a subprocess on 127.0.0.1:<free port>; log kept under artifacts."""

    def __init__(self, args: list[str], log_name: str = "app.log", env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log_path = artifacts_dir() / log_name
        self.args = [sys.executable, str(REPO_ROOT / "app.py"), "--host", "127.0.0.1", "--port", str(self.port), *args]
        self.env = {**os.environ, **OFFLINE_ENV, **(env or {})}
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 180.0) -> "AppServer":
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(self.args, cwd=REPO_ROOT, env=self.env, stdout=self._log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"app exited with {self.process.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + "gradio_api/info", timeout=2) as response:
                    if response.status == 200:
                        return self
            except urllib.error.HTTPError as error:
                if error.code in (401, 403):  # up, behind a login
                    return self
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"app did not answer on {self.url} within {timeout:.0f} s:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text()[-6000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # our own process group only (start_new_session)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        if getattr(self, "_log", None):
            self._log.close()

    def __enter__(self) -> "AppServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def model_app(model_dir: Path, data_dir: Path, flags: list[str], log_name: str) -> AppServer:
    """The app on `model_dir` with its library in `data_dir` (start it with `with`)."""
    return AppServer(["--model", str(model_dir), "--data-dir", str(data_dir), *flags], log_name=log_name)


@contextmanager
def browser_page(width: int = 1440, height: int = 960) -> Iterator:
    """A Playwright page in Debian's headless Chromium; records every requested URL on `page.requests`."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(viewport={"width": width, "height": height}, device_scale_factor=1)
            page = context.new_page()
            page.requests = []
            page.on("request", lambda request: page.requests.append(request.url))
            yield page
        finally:
            browser.close()


def screenshot(page, name: str, full_page: bool = False) -> Path:
    path = artifacts_dir() / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path
