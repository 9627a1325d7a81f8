"""End-to-end: "Add a folder to watch" in the real app (`python app.py` on a tiny model) driven by
headless Chromium; files created and deleted on disk show up in, and leave, the document table."""

from __future__ import annotations

import pytest

from ui_harness import AppServer, browser_page, screenshot

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.usefixtures("browser_available")]


def table_has(page, name: str, present: bool = True, timeout: float = 60_000) -> None:
    check = "" if present else "!"
    page.wait_for_function(f"() => {check}document.querySelector('#fr-documents').innerText.includes({name!r})",
                           timeout=timeout)


def test_browser_watch_a_folder(tiny_model_dirs, tmp_path):
    folder = tmp_path / "watched"
    folder.mkdir()
    (folder / "owls.md").write_text("# Owls\n\nBarn owls hunt at night.\n")
    with AppServer(["--model", str(tiny_model_dirs["qwen2_vl"]), "--data-dir", str(tmp_path / "data")],
                   log_name="app-watch.log") as app, browser_page() as page:
        page.goto(app.url)
        page.wait_for_selector("#fr-summary .fr-empty")
        page.get_by_text("Watched folders").click()
        page.fill("#fr-watch-path textarea, #fr-watch-path input", str(folder))
        page.click("#fr-watch")
        page.wait_for_selector("#fr-notice", state="attached")
        page.wait_for_function("() => document.querySelector('#fr-notice').innerText.includes('Watching')")
        table_has(page, "owls.md")

        (folder / "herons.txt").write_text("Grey herons stand still in shallow water.\n")
        table_has(page, "herons.txt")  # no click: the panel follows the watcher
        page.wait_for_function(
            "() => document.querySelector('#fr-watch-status').innerText.includes('added herons.txt')")
        screenshot(page, "watch-01-folder-watched")

        (folder / "owls.md").unlink()
        table_has(page, "owls.md", present=False)
        assert "removed owls.md" in page.inner_text("#fr-watch-status")
