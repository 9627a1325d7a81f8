"""A conversation as Markdown: every question, its answer and the sources it was given, with each
[n] resolved to file and place ("guide.pdf, page 3", "clip.mp4, 0:42-1:10", "notes.txt, part 2").

Pure functions of plain values (no Gradio, no library): a turn is a dict
`{"question": str, "answer": str, "sources": [source dicts as ui_render.sources_data / the /chat
API return them]}`. `write_export` puts the Markdown in a per-session temp folder for a download;
`sweep_exports` removes old ones.
"""

from __future__ import annotations

import math
import re
import shutil
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

from .items import format_timestamp

__all__ = ["EXPORT_MAX_AGE_S", "conversation_markdown", "export_turn", "remove_export", "source_place",
           "sweep_exports", "write_export"]

EXPORT_MAX_AGE_S = 3600.0  # an export file older than this is removed at the next export
MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>#|])")


def md_escape(text: Any) -> str:
    """A file name or label shown as written in Markdown (no emphasis, link or HTML forms)."""
    return MARKDOWN_SPECIAL.sub(r"\\\1", str(text))


def export_turn(question: str, answer: str, sources: Sequence[Mapping[str, Any]] = (),
                image: str | None = None) -> dict[str, Any]:
    """One turn as the plain dict the export keeps (sources copied as plain dicts)."""
    turn = {"question": question or "", "answer": answer or "", "sources": [dict(s) for s in sources or ()]}
    if image:
        turn["image"] = Path(image).name
    return turn


def _number(value: Any) -> float | None:
    """`value` as a finite number of 0 or more, else None (sources of /export come from the client)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number >= 0 else None


def source_place(source: Mapping[str, Any]) -> str:
    """"file.pdf, page 3", "clip.mp4, 0:42-1:10", "photo.jpg", "notes.txt, part 2". A place that is
    not a number (a client's /export request) is left out: the file name alone."""
    name = str(source.get("file") or source.get("label") or "source")
    page, start, end, chunk = (_number(source.get(key)) for key in ("page", "t_start", "t_end", "chunk"))
    if page is not None:
        return f"{name}, page {int(page)}"
    if start is not None:
        span = format_timestamp(start) + (f"-{format_timestamp(end)}" if end is not None else "")
        return f"{name}, {span}"
    if chunk is not None:
        return f"{name}, part {int(chunk) + 1}"
    return name


def _links(source: Mapping[str, Any], base_url: str) -> str:
    """" · [file](url) · [picture](url)" for the source's URLs (relative to the app) under `base_url`."""
    parts = []
    if source.get("file_url"):
        page = _number(source.get("page"))
        anchor = f"#page={int(page)}" if source.get("kind") == "pdf_page" and page else ""
        parts.append(f"[file](<{urljoin(base_url, str(source['file_url']))}{anchor}>)")
    if source.get("asset_url"):
        word = "page image" if source.get("kind") == "pdf_page" else "picture"
        parts.append(f"[{word}](<{urljoin(base_url, str(source['asset_url']))}>)")
    return "".join(f" · {part}" for part in parts)


def _quote(text: str) -> str:
    """`text` as a Markdown block quote; a line's leading "#" stays a "#" (no heading)."""
    lines = [re.sub(r"^(\s*)#", r"\1\\#", line) for line in text.strip().splitlines() or [""]]
    return "\n".join("> " + line if line.strip() else ">" for line in lines)


def conversation_markdown(turns: Sequence[Mapping[str, Any]], *, model: str = "", library: str = "",
                          now: datetime | None = None, base_url: str | None = None,
                          title: str = "FreeRet RAG conversation") -> str:
    """The conversation as one Markdown document.

    Header: title, date (UTC), model, library. Per turn: the question (quoted), the answer as the
    model wrote it, then "Sources": every source the answer was given, numbered as the answer cites
    them, each resolved to file and place; cited ones marked. With `base_url` (the app's address),
    the files and their page images / pictures are linked.
    """
    now = now or datetime.now(timezone.utc)
    lines = [f"# {title}", "",
             f"- Date: {now.astimezone(timezone.utc):%Y-%m-%d %H:%M} UTC"]
    if model:
        lines.append(f"- Model: `{model}`")
    if library:
        lines.append(f"- Library: {md_escape(library)}")
    if not turns:
        lines += ["", "(No questions asked yet.)"]
    for number, turn in enumerate(turns, start=1):
        question = str(turn.get("question") or "").strip()
        answer = str(turn.get("answer") or "").strip()
        lines += ["", f"## Question {number}", "", _quote(question or "(an image)")]
        if turn.get("image"):
            lines += [">", f"> (with the image {md_escape(turn['image'])})"]
        lines += ["", answer or "(no answer)"]
        sources = list(turn.get("sources") or ())
        if sources:
            lines += ["", "**Sources**", ""]
            for position, source in enumerate(sources, start=1):
                cite = int(_number(source.get("number")) or position)
                mark = " (cited)" if source.get("cited") else ""
                links = _links(source, base_url) if base_url else ""
                lines.append(f"- \\[{cite}\\] {md_escape(source_place(source))}{mark}{links}")
    return "\n".join(lines) + "\n"


def sweep_exports(folder: Path, max_age_s: float = EXPORT_MAX_AGE_S, now: float | None = None) -> int:
    """Remove the per-session export folders under `folder` not written for `max_age_s`; how many went."""
    now = time.time() if now is None else now
    removed = 0
    if not folder.is_dir():
        return 0
    for session in folder.iterdir():
        try:
            if now - session.stat().st_mtime > max_age_s:
                shutil.rmtree(session, ignore_errors=True) if session.is_dir() else session.unlink()
                removed += 1
        except OSError:
            continue
    return removed


SAFE_SESSION = re.compile(r"[^A-Za-z0-9_-]")


def write_export(markdown: str, folder: Path, session: str, now: datetime | None = None) -> Path:
    """Write `markdown` as `<folder>/<session>/chat-<date>.md` (the session's earlier export goes)
    and return its path; older sessions' exports are swept."""
    folder = Path(folder)
    sweep_exports(folder)
    target = folder / (SAFE_SESSION.sub("", session or "") or "session")
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True, exist_ok=True)
    now = now or datetime.now(timezone.utc)
    path = target / f"chat-{now.astimezone(timezone.utc):%Y-%m-%d-%H%M}.md"
    path.write_text(markdown, encoding="utf-8")
    return path


def remove_export(folder: Path, session: str) -> None:
    """The session's export folder removed (New chat, the session's end)."""
    shutil.rmtree(Path(folder) / (SAFE_SESSION.sub("", session or "") or "session"), ignore_errors=True)
