"""Uploads of the web app: check them, keep them in the data dir, index them with per-file progress.

Gradio stores uploads in a temporary folder that it cleans up; the library links and plays the
original files later (PDF pages, video segments), so every accepted upload is first copied to
`upload_dir/<first 16 hex digits of its SHA-256>/<file name>` (`keep_upload`). Indexing runs in a
worker thread (`relay.relay`) while the generators here yield `IngestResult` snapshots for the
progress list. Closing such a generator (Gradio does when an event is cancelled: the Stop button,
an API client's cancel) cancels the indexing at its next batch; the same upload resumes it.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import FreeRetError
from .relay import relay
from .ui_render import FileStatus, human_size

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 0.25  # at most this often a progress snapshot while one file is indexed


@dataclass
class IngestResult:
    """Per-file progress of one upload or re-index (what the progress list shows)."""

    files: list[FileStatus] = field(default_factory=list)


def keep_upload(path: Path, upload_dir: Path) -> Path:
    """Copy an upload out of Gradio's temporary folder into `upload_dir` (once per content)."""
    from .library import file_sha256  # the library's own content hash (its doc_id is the same prefix)

    target = upload_dir / file_sha256(path)[:16] / path.name
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    return target


def received_copies(path: str | Path) -> Path | None:
    """The folder where Gradio's upload route keeps the bytes of `path` if they were uploaded here
    (`<upload folder>/<Gradio's seeded SHA-256 of the content>/<name>`, served by its file route to
    whoever has the URL until its cache cleaning), or None. Call it before the file is deleted."""
    from gradio.processing_utils import hash_file
    from gradio.utils import get_upload_folder

    try:
        folder = Path(get_upload_folder()) / hash_file(path)
    except OSError:  # the file is gone already: nothing to compute the folder from
        return None
    return folder if folder.is_dir() else None


def upload_problem(path: Path, max_bytes: int, reads_images: bool) -> str | None:
    """Why an upload is refused before indexing (missing, too large, unsupported, unseeable), or None."""
    from .media import kind_for_path

    if not path.is_file():
        return "file not found"
    size = path.stat().st_size
    if size > max_bytes:
        return f"too large ({human_size(size)}; limit {human_size(max_bytes)})"
    kind = kind_for_path(path)
    if kind is None:
        return f"unsupported file type ({path.suffix or 'no extension'})"
    if kind in ("image", "video") and not reads_images:
        return "this model reads text only"
    return None


def outcome(report: Any) -> tuple[str, int, str]:
    """(state, items, message) of one file from `Library.add`'s AddReport."""
    if report.skipped:
        return "failed", 0, report.skipped[0].reason
    if report.cancelled:
        return "cancelled", 0, report.cancelled[0].reason
    if report.unchanged and not report.added:
        return "done", report.unchanged[0].items, f"already in the library as {report.unchanged[0].source}"
    return "done", report.items, "; ".join(note.reason for note in report.notes)


def failure_message(error: BaseException) -> str:
    """What the progress list says about an error (an IngestError's reason, else its text)."""
    return getattr(error, "reason", None) or str(error) or type(error).__name__


def already_indexed(library: Any, path: Path) -> Any:
    """The library's document with the same bytes as `path` (its content hash), or None: known
    before any model work, so re-adding unchanged files is answered at once."""
    from .library import file_sha256  # the library's own content hash (its doc_id is the same prefix)

    try:
        return library.document(file_sha256(path)[:16])
    except Exception:  # a lookup problem only costs the shortcut: the add checks again
        log.exception("could not look up %s", path)
        return None


def triage(library: Any, paths: Iterable[str | Path], max_bytes: int,
           reads_images: bool) -> tuple[IngestResult, list[tuple[int, Path]]]:
    """Every file's outcome that needs no model (refused with its reason, or already in the
    library), and the (position, path) of the files left to index, in order."""
    files = [Path(p) for p in paths or [] if p]
    result = IngestResult([FileStatus(path.name) for path in files])
    pending = []
    try:
        library.refresh()  # once per upload: another process may have deleted a document; a server must answer
        current = True
    except Exception:  # a server gone away: no shortcut, the add says what is wrong
        current = False
    for position, (path, status) in enumerate(zip(files, result.files)):
        problem = upload_problem(path, max_bytes, reads_images)
        known = already_indexed(library, path) if current and not problem else None
        if problem:
            status.state, status.message = "skipped", problem
        elif known is not None:
            status.state, status.items, status.message = "done", known.items, f"already in the library as {known.source}"
        else:
            pending.append((position, path))
    return result, pending


def index_pending(library: Any, result: IngestResult, pending: Iterable[tuple[int, Path]],
                  upload_dir: Path) -> Iterator[IngestResult]:
    """Index the files `triage` left, one by one, yielding the per-file progress after every step."""
    for position, path in pending:
        status = result.files[position]
        status.state = "indexing"
        yield result
        yield from _ingest_one(library, Path(path), upload_dir, status, result)


def ingest_files(library: Any, paths: Iterable[str | Path], upload_dir: Path, max_bytes: int,
                 reads_images: bool) -> Iterator[IngestResult]:
    """Index files one by one into `library`, yielding the per-file progress after every step
    (first every outcome known without the model, see `triage`)."""
    result, pending = triage(library, paths, max_bytes, reads_images)
    yield result
    yield from index_pending(library, result, pending, upload_dir)


def _ingest_one(library: Any, path: Path, upload_dir: Path, status: FileStatus,
                result: IngestResult) -> Iterator[IngestResult]:
    cancel = threading.Event()

    def work(emit: Any) -> Any:
        kept = keep_upload(path, upload_dir)
        return library.add([kept], progress=lambda event: event.stage == "item" and emit((event.done, event.total)),
                           cancel=cancel)

    updates = relay(work, "freeret-ingest")  # the add finishes even if nobody reads the progress
    last = 0.0
    try:
        while True:
            status.done, status.total = next(updates)
            if time.monotonic() - last > PROGRESS_EVERY_S:
                last = time.monotonic()
                yield result
    except StopIteration as finished:
        status.state, status.items, status.message = outcome(finished.value)
    except Exception as error:  # reported in the progress list
        status.state, status.message = "failed", failure_message(error)
        if not isinstance(error, FreeRetError):
            log.exception("indexing %s failed", path, exc_info=error)
    finally:
        cancel.set()  # nobody reads on (a cancelled event, a closed client): stop at the next batch
        updates.close()
    yield result


def reindex_library(library: Any) -> Iterator[IngestResult]:
    """Re-embed every document of another model's index with the loaded model, with progress."""
    result = IngestResult()
    by_path: dict[str, FileStatus] = {}
    events = relay(lambda emit: library.reindex(progress=emit), "freeret-reindex")
    try:
        while True:
            event = next(events)
            status = by_path.get(event.path)
            if status is None:
                status = by_path[event.path] = FileStatus(Path(event.path).name, "indexing")
                result.files.append(status)
            if event.stage == "item":
                status.done, status.total = event.done, event.total
            elif event.stage in ("added", "unchanged"):
                status.state, status.items, status.message = "done", event.done, event.message
            elif event.stage == "skipped":
                status.state, status.message = "failed", event.message
            elif event.stage == "waiting":  # kept, listed, not searchable with this model
                status.state, status.message = "skipped", event.message
            yield result
    except StopIteration:
        pass
    except Exception as error:  # shown in the progress list
        result.files.append(FileStatus("re-index", "failed", message=failure_message(error)))
        if not isinstance(error, FreeRetError):
            log.exception("re-index failed", exc_info=error)
    finally:
        events.close()
    yield result
