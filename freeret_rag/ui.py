"""The web app: a library panel, a chat panel and a settings panel (Gradio Blocks).

`FreeRetApp` holds the model, the library and every callback as plain methods, so tests can call
them without a browser; `build_blocks(app)` wires them to components and `launch(app)` serves them.

Concurrency: one model serves every browser session. Model-bound events (answering, indexing,
deleting) share one queue slot (`concurrency_id="model"`, limit `config.concurrency`), so the
index is only written by one event at a time and answers never interleave; per-session state
(history, chat, settings) lives in Gradio session state, never in globals.
"""

from __future__ import annotations

import hashlib
import html
import logging
import re
import shutil
import threading
import time
import queue as queue_module
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence
from urllib.parse import quote

from .chat import EMPTY_ANSWER, ChatSettings, for_spaces, plain_history, respond, turn
from .config import AppConfig, default_model
from .errors import FreeRetError, IndexMismatchError
from .items import Hit, format_timestamp
from .settings import MIN_RELEVANCE, N_SOURCES, RERANK, RERANK_K, TOP_K

log = logging.getLogger(__name__)

KIND_NAMES = {"pdf": "PDF", "image": "Image", "video": "Video", "text": "Text"}
ITEM_KIND_NAMES = {"pdf_page": "page", "image": "image", "video_segment": "video", "text": "text"}
CAPABILITY_NAMES = {"text": "text", "image": "images", "video": "video"}

CSS = """
.fr-header {display:flex; align-items:center; justify-content:space-between; gap:1rem; padding:.25rem .25rem .75rem;}
.fr-header h1 {margin:0; font-size:1.6rem; font-weight:700; letter-spacing:-.01em;}
.fr-header p {margin:.15rem 0 0; color:var(--body-text-color-subdued); font-size:.95rem;}
.fr-model {font-size:.85rem; padding:.35rem .7rem; border-radius:999px; background:var(--color-accent-soft);
  color:var(--body-text-color); white-space:nowrap; border:1px solid var(--border-color-accent-subdued);}
.fr-panel-note {color:var(--body-text-color-subdued); font-size:.85rem; margin:.2rem 0 .4rem;}
.fr-sources {margin-top:.6rem; border-top:1px solid var(--border-color-primary); padding-top:.5rem;}
.fr-sources-head {font-size:.8rem; color:var(--body-text-color-subdued); margin-bottom:.4rem;}
.fr-grid {display:flex; flex-wrap:wrap; gap:.6rem;}
.fr-card {width:170px; margin:0; border:1px solid var(--border-color-primary); border-radius:10px; overflow:hidden;
  background:var(--background-fill-primary); font-size:.8rem;}
.fr-card.fr-cited {border-color:var(--color-accent); box-shadow:0 0 0 1px var(--color-accent);}
.fr-card .fr-media {display:block; width:170px; height:120px; background:var(--background-fill-secondary);}
.fr-card img.fr-thumb, .fr-chat .fr-card img.fr-thumb {width:170px !important; height:120px !important; max-width:none !important;
  object-fit:cover; margin:0 !important; border-radius:0 !important; display:block;}
.fr-card video.fr-video {width:170px; height:120px; display:block; background:#000; margin:0;}
.fr-card .fr-excerpt {height:120px; overflow:hidden; padding:.45rem .55rem; color:var(--body-text-color-subdued);
  font-size:.75rem; line-height:1.3; box-sizing:border-box;}
.fr-card figcaption {padding:.35rem .5rem .1rem; line-height:1.3; word-break:break-word;}
.fr-num {display:inline-block; min-width:1.3rem; text-align:center; font-weight:700; border-radius:6px;
  background:var(--color-accent); color:white; margin-right:.3rem; font-size:.75rem; padding:0 .2rem;}
.fr-where {color:var(--body-text-color-subdued);}
.fr-card details {padding:.1rem .5rem .4rem; color:var(--body-text-color-subdued);}
.fr-card details summary {cursor:pointer; font-size:.75rem;}
.fr-card details table {width:100%; font-size:.72rem; margin:.2rem 0 0; border:0;}
.fr-card details td {padding:0 .2rem !important; border:0 !important;}
.fr-card details td:last-child {text-align:right; font-variant-numeric:tabular-nums;}
.fr-cite {font-weight:600; color:var(--color-accent);}
.fr-status {color:var(--body-text-color-subdued); font-style:italic;}
.fr-nothing {color:var(--body-text-color);}
.fr-progress {display:flex; flex-direction:column; gap:.35rem; font-size:.85rem;}
.fr-file {display:grid; grid-template-columns:1fr auto; gap:.1rem .5rem; align-items:center;}
.fr-file .fr-name {overflow:hidden; text-overflow:ellipsis; white-space:nowrap;}
.fr-file .fr-state {color:var(--body-text-color-subdued); font-size:.8rem; text-align:right;}
.fr-file .fr-state.fr-failed {color:var(--error-text-color, #c0392b);}
.fr-bar {grid-column:1 / span 2; height:5px; border-radius:3px; background:var(--background-fill-secondary); overflow:hidden;}
.fr-bar > div {height:100%; background:var(--color-accent); transition:width .2s;}
.fr-warning {border:1px solid #e0b252; background:rgba(224,178,82,.12); border-radius:8px; padding:.5rem .7rem;
  font-size:.85rem; margin-bottom:.4rem;}
.fr-empty {color:var(--body-text-color-subdued); font-size:.9rem; padding:.6rem 0;}
"""


def _human_size(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


def _escape(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _number(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


@dataclass
class FileStatus:
    """One file of an upload, as the progress list shows it."""

    name: str
    state: str = "waiting"  # waiting | indexing | done | skipped | failed
    done: int = 0
    total: int = 0
    items: int = 0
    message: str = ""


@dataclass
class IngestResult:
    files: list[FileStatus] = field(default_factory=list)

    @property
    def added(self) -> int:
        return sum(1 for status in self.files if status.state == "done")

    @property
    def failed(self) -> int:
        return sum(1 for status in self.files if status.state in ("failed", "skipped"))


def render_progress(files: Sequence[FileStatus]) -> str:
    if not files:
        return ""
    rows = []
    for status in files:
        if status.state == "indexing":
            fraction = status.done / status.total if status.total else 0.05
            state = f"{status.done}/{status.total}" if status.total else "reading ..."
        elif status.state == "done":
            fraction, state = 1.0, f"done · {status.items} item{'s' if status.items != 1 else ''}"
            if status.message:
                state += f" · {status.message}"
        elif status.state in ("failed", "skipped"):
            fraction, state = 0.0, status.message or status.state
        else:
            fraction, state = 0.0, "waiting"
        failed = " fr-failed" if status.state in ("failed", "skipped") else ""
        rows.append(
            f'<div class="fr-file" data-state="{status.state}"><span class="fr-name" title="{_escape(status.name)}">'
            f'{_escape(status.name)}</span><span class="fr-state{failed}">{_escape(state)}</span>'
            f'<div class="fr-bar"><div style="width:{fraction * 100:.0f}%"></div></div></div>')
    return '<div class="fr-progress">' + "".join(rows) + "</div>"


class FreeRetApp:
    """The model, the library and every UI callback (browser-independent, unit-testable)."""

    def __init__(self, config: AppConfig, engine: Any = None, library: Any = None) -> None:
        self.config = config
        config.data_dir.mkdir(parents=True, exist_ok=True)
        config.upload_dir.mkdir(parents=True, exist_ok=True)
        if engine is None:
            from .engine import FreeRet

            extra = {"max_new_tokens": config.max_answer_tokens} if config.max_answer_tokens else {}
            engine = FreeRet.from_pretrained(config.model or default_model(), device=config.device,
                                             dtype=config.dtype, **extra)
        self.engine = for_spaces(engine)
        #: Set when the index on disk was built with another model or prompt version.
        self.mismatch: str = ""
        if library is None:
            from .library import Library

            try:
                library = Library(self.engine, config.data_dir, chroma_url=config.chroma_url)
            except IndexMismatchError as error:
                self.mismatch = str(error)
                library = Library(self.engine, config.data_dir, chroma_url=config.chroma_url, allow_mismatch=True)
        self.library = library  # thread-safe: writes are serialised, searches run concurrently

    # -- what the model is --------------------------------------------------------------------
    @property
    def reads_images(self) -> bool:
        return "image" in self.engine.capabilities

    def model_badge(self) -> str:
        reads = ", ".join(CAPABILITY_NAMES[c] for c in ("text", "image", "video") if c in self.engine.capabilities)
        name = Path(self.engine.model_id).name if Path(self.engine.model_id).exists() else self.engine.model_id
        return f'<span class="fr-model" title="{_escape(self.engine.model_id)}">{_escape(name)} · reads {reads}</span>'

    def model_info(self) -> str:
        engine = self.engine
        caps = engine.capabilities
        lm = getattr(engine, "lm", None)
        device = f"{lm.device} · {str(lm.dtype).replace('torch.', '')}" if lm is not None else "?"
        lines = [
            f"**Model:** `{engine.model_id}`",
            f"**Runs on:** {device}",
            "**Reads:** " + ", ".join(CAPABILITY_NAMES[c] for c in ("text", "image", "video") if c in caps)
            + ("" if {"image", "video"} <= caps else
               " · **cannot read:** " + ", ".join(CAPABILITY_NAMES[c] for c in ("image", "video") if c not in caps)),
            f"**Index:** prompt version `{engine.prompt_version}`",
        ]
        if "image" not in caps:
            lines.append("This model reads text only: PDFs are searched by their text; images and videos "
                         "cannot be indexed. Start the app with a vision-language model to use them.")
        return "\n\n".join(lines)

    # -- library ------------------------------------------------------------------------------
    def supported_extensions(self) -> list[str]:
        from .media import SUPPORTED_EXTENSIONS

        return sorted(SUPPORTED_EXTENSIONS)

    def documents(self) -> list[Any]:
        return sorted(self.library.documents(), key=lambda doc: (doc.source.lower(), doc.doc_id))

    def document_rows(self) -> list[list[Any]]:
        return [[doc.source, KIND_NAMES.get(doc.file_type, doc.file_type), doc.items,
                 time.strftime("%Y-%m-%d %H:%M", time.localtime(doc.added_at))] for doc in self.documents()]

    def document_choices(self) -> list[tuple[str, str]]:
        return [(f"{doc.source} ({KIND_NAMES.get(doc.file_type, doc.file_type)}, {doc.items} items)", doc.doc_id)
                for doc in self.documents()]

    def library_summary(self) -> str:
        docs = self.documents()
        if not docs:
            return '<div class="fr-empty">No documents yet. Add PDFs, images or videos above.</div>'
        items = sum(doc.items for doc in docs)
        return (f'<div class="fr-panel-note">{len(docs)} document{"s" if len(docs) != 1 else ""} · '
                f'{items} searchable item{"s" if items != 1 else ""}</div>')

    def _keep_upload(self, path: Path) -> Path:
        """Copy an upload out of Gradio's temporary folder into the data dir (sources stay viewable)."""
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        target = self.config.upload_dir / digest.hexdigest()[:16] / path.name
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
        return target

    def _check_upload(self, path: Path) -> str | None:
        from .media import kind_for_path

        if not path.is_file():
            return "file not found"
        size = path.stat().st_size
        if size > self.config.max_upload_bytes:
            return f"too large ({_human_size(size)}; limit {_human_size(self.config.max_upload_bytes)})"
        if kind_for_path(path) is None:
            return f"unsupported file type ({path.suffix or 'no extension'})"
        if kind_for_path(path) in ("image", "video") and not self.reads_images:
            return "this model reads text only"
        return None

    def ingest(self, paths: Iterable[str | Path]) -> Iterator[IngestResult]:
        """Index files one by one, yielding the per-file progress after every step."""
        paths = [Path(p) for p in paths or [] if p]
        result = IngestResult([FileStatus(path.name) for path in paths])
        yield result
        for path, status in zip(paths, result.files):
            problem = self._check_upload(path)
            if problem:
                status.state, status.message = "skipped", problem
                yield result
                continue
            status.state = "indexing"
            yield result
            yield from self._ingest_one(path, status, result)

    def _ingest_one(self, path: Path, status: FileStatus, result: IngestResult) -> Iterator[IngestResult]:
        updates: queue_module.Queue = queue_module.Queue()
        outcome: dict[str, Any] = {}

        def progress(event: Any) -> None:
            if getattr(event, "stage", "") == "item":
                updates.put((int(event.done), int(event.total)))

        def work() -> None:
            try:
                kept = self._keep_upload(path)
                outcome["report"] = self.library.add([kept], progress=progress)
            except BaseException as error:  # reported in the progress list
                outcome["error"] = error
            finally:
                updates.put(None)

        worker = threading.Thread(target=work, name="freeret-ingest", daemon=True)
        worker.start()
        last = 0.0
        while True:
            update = updates.get()
            if update is None:
                break
            status.done, status.total = update
            if time.monotonic() - last > 0.25:
                last = time.monotonic()
                yield result
        worker.join()
        error = outcome.get("error")
        if error is not None:
            status.state = "failed"
            status.message = getattr(error, "reason", None) or str(error) or type(error).__name__
            if not isinstance(error, FreeRetError):
                log.exception("indexing %s failed", path, exc_info=error)
        else:
            status.state, status.items, status.message = self._read_report(outcome.get("report"), path)
        yield result

    @staticmethod
    def _read_report(report: Any, path: Path) -> tuple[str, int, str]:
        """(state, items, message) for one file from Library.add's AddReport."""
        if report.skipped:
            return "failed", 0, report.skipped[0].reason
        if report.unchanged and not report.added:
            return "done", report.unchanged[0].items, f"already in the library as {report.unchanged[0].source}"
        note = "; ".join(note.reason for note in report.notes)
        return "done", report.items, note

    def delete(self, doc_id: str | None) -> str:
        if not doc_id:
            return "Choose a document to delete."
        doc = self.library.delete(doc_id)
        if doc is None:
            return "That document is no longer in the library."
        return f"Deleted {doc.source}."

    def reindex_notice(self) -> str:
        if not self.library.needs_reindex:
            return ""
        others = ", ".join(sorted({f"{i.model_id} ({i.count} items)" for i in self.library.others}))
        return (f'<div class="fr-warning"><b>This library was indexed with another model</b> ({_escape(others)}). '
                f'Vectors of different models cannot be mixed: re-index it with {_escape(self.engine.model_id)} '
                f'to search those documents (the files need not be uploaded again).</div>')

    def reindex(self) -> Iterator[IngestResult]:
        """Re-embed every document of another model's index with the loaded model, with progress."""
        result = IngestResult()
        by_path: dict[str, FileStatus] = {}
        updates: queue_module.Queue = queue_module.Queue()
        outcome: dict[str, Any] = {}

        def work() -> None:
            try:
                outcome["report"] = self.library.reindex(progress=updates.put)
            except BaseException as error:  # shown in the progress list
                outcome["error"] = error
            finally:
                updates.put(None)

        threading.Thread(target=work, name="freeret-reindex", daemon=True).start()
        while (event := updates.get()) is not None:
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
            yield result
        if "error" in outcome:
            result.files.append(FileStatus("re-index", "failed", message=str(outcome["error"])))
        elif not self.library.needs_reindex:
            self.mismatch = ""
        yield result

    # -- chat ---------------------------------------------------------------------------------
    def file_url(self, path: str | Path) -> str:
        """URL of a file under the data dir, served by Gradio's file route (see allowed_paths)."""
        return "gradio_api/file=" + quote(str(Path(path).resolve()), safe="/")

    def _source_paths(self, hits: Sequence[Hit]) -> dict[str, str]:
        wanted = {hit.item.doc_id for hit in hits}
        try:
            return {doc.doc_id: doc.path for doc in self.library.documents() if doc.doc_id in wanted}
        except Exception:
            return {}

    def render_sources(self, hits: Sequence[Hit], cited: Sequence[int] = (), query: str = "",
                       note: str = "") -> str:
        if not hits:
            return ""
        paths = self._source_paths(hits)
        cards = []
        for number, hit in enumerate(hits, start=1):
            item = hit.item
            original = paths.get(item.doc_id)
            preview = item.thumbnail or (str(item.images[0]) if item.images and not hasattr(item.images[0], "size") else None)
            full = str(item.images[0]) if item.images and not hasattr(item.images[0], "size") else preview
            if item.kind == "video_segment" and original and Path(original).is_file():
                start = item.t_start or 0.0
                fragment = f"#t={start:g}" + (f",{item.t_end:g}" if item.t_end is not None else "")
                poster = f' poster="{_escape(self.file_url(preview))}"' if preview else ""
                media = (f'<video class="fr-video" controls preload="metadata"{poster} '
                         f'src="{_escape(self.file_url(original) + fragment)}"></video>')
            elif preview:
                media = (f'<a class="fr-media" href="{_escape(self.file_url(full))}" target="_blank" rel="noopener">'
                         f'<img class="fr-thumb" alt="{_escape(item.label)}" src="{_escape(self.file_url(preview))}"></a>')
            else:
                media = f'<div class="fr-excerpt">{_escape(item.text[:260])}</div>'
            where = item.location
            if item.kind == "video_segment" and item.t_start is not None:
                where = f"{format_timestamp(item.t_start)}–{format_timestamp(item.t_end or item.t_start)}"
            name = _escape(item.source or "source")
            if original and Path(original).is_file():
                anchor = f"#page={item.page}" if item.kind == "pdf_page" and item.page else ""
                name = f'<a href="{_escape(self.file_url(original) + anchor)}" target="_blank" rel="noopener">{name}</a>'
            scores = [("rerank p(match)", hit.rerank_score), ("dense cosine", hit.dense_score),
                      ("lexical BM25", hit.lexical_score), ("fused (RRF)", hit.fused_score)]
            rows = "".join(f"<tr><td>{label}</td><td>{_number(value)}</td></tr>" for label, value in scores
                           if value is not None)
            cited_class = " fr-cited" if number in cited else ""
            cards.append(
                f'<figure class="fr-card{cited_class}" data-source="{number}">{media}'
                f'<figcaption><span class="fr-num">{number}</span>{name}'
                f'{f" <span class=fr-where>· {_escape(where)}</span>" if where else ""}'
                f' <span class="fr-where">· {ITEM_KIND_NAMES.get(item.kind, item.kind)}</span></figcaption>'
                f'<details><summary>Scores</summary><table>{rows}</table></details></figure>')
        head = f"Sources{f' · searched for “{_escape(query)}”' if query else ''}{f' · {note}' if note else ''}"
        return f'<div class="fr-sources"><div class="fr-sources-head">{head}</div><div class="fr-grid">{"".join(cards)}</div></div>'

    @staticmethod
    def mark_citations(text: str, n_sources: int) -> str:
        def mark(match: re.Match) -> str:
            numbers = [int(n) for n in re.split(r"\s*[,;]\s*", match.group(1))]
            if all(1 <= n <= n_sources for n in numbers):
                return f'<span class="fr-cite">{match.group(0)}</span>'
            return match.group(0)

        return re.sub(r"\[(\d+(?:\s*[,;]\s*\d+)*)\]", mark, text)

    @staticmethod
    def parse_message(message: dict | str | None) -> tuple[str, str | None]:
        """(question, image path) from a MultimodalTextbox value (or plain text)."""
        if isinstance(message, dict):
            files = [f if isinstance(f, str) else (f.get("path") if isinstance(f, dict) else getattr(f, "path", None))
                     for f in message.get("files") or []]
            return (message.get("text") or "").strip(), next((f for f in files if f), None)
        return (message or "").strip(), None

    def add_user_turn(self, message: dict | str | None, chatbot: list | None) -> tuple[list, dict | None]:
        """Show the question at once (before the model is free) with a waiting placeholder."""
        question, image = self.parse_message(message)
        chatbot = list(chatbot or [])
        if not question and image is None:
            return chatbot, None
        if image:
            chatbot.append({"role": "user", "content": {"path": image}})
        if question:
            chatbot.append({"role": "user", "content": question})
        chatbot.append({"role": "assistant", "content": '<span class="fr-status">Waiting for the model ...</span>'})
        return chatbot, {"text": question, "image": image}

    def chat(self, message: dict | str | None, chatbot: list | None, history: list | None,
             top_k: float = TOP_K, rerank: bool = RERANK, rerank_k: float = RERANK_K, n_sources: float = N_SOURCES,
             min_relevance: float = MIN_RELEVANCE) -> Iterator[tuple[list, list, Any]]:
        """One whole turn (the /chat API): yields (chatbot messages, plain history, textbox value)."""
        chatbot, pending = self.add_user_turn(message, chatbot)
        yield list(chatbot), plain_history(history), None
        for chatbot, history in self.answer_turn(pending, chatbot, history, top_k, rerank, rerank_k, n_sources,
                                                 min_relevance):
            yield chatbot, history, None

    def answer_turn(self, pending: dict | None, chatbot: list | None, history: list | None,
                    top_k: float = TOP_K, rerank: bool = RERANK, rerank_k: float = RERANK_K,
                    n_sources: float = N_SOURCES, min_relevance: float = MIN_RELEVANCE) -> Iterator[tuple[list, list]]:
        """Stream the answer into the last (placeholder) message: yields (chatbot, plain history)."""
        chatbot = list(chatbot or [])
        history = plain_history(history)
        if not pending:
            yield chatbot, history
            return
        question, image = pending["text"], pending.get("image")
        settings = ChatSettings(top_k=int(top_k), rerank=bool(rerank), rerank_k=int(rerank_k),
                                n_sources=int(n_sources), min_relevance=float(min_relevance))
        chatbot[-1] = {"role": "assistant", "content": '<span class="fr-status">Thinking ...</span>'}
        yield list(chatbot), history

        started = time.monotonic()
        first_token = None
        final_text = ""
        for event in respond(self.library, self.engine, question, image, history, settings):
            if event.kind == "status":
                body = f'<span class="fr-status">{_escape(event.text)}</span>'
                if event.sources:
                    body += self.render_sources(event.sources, (), event.query)
            elif event.kind == "token":
                if first_token is None:
                    first_token = time.monotonic() - started
                body = (self.mark_citations(_escape(event.text), len(event.sources))
                        + "▍" + self.render_sources(event.sources, (), event.query))
            elif event.kind == "answer":
                text = event.text.strip() or EMPTY_ANSWER
                final_text = text
                elapsed = time.monotonic() - started
                note = f"answered in {elapsed:.1f} s" + (f", first words after {first_token:.1f} s" if first_token else "")
                body = (self.mark_citations(_escape(text), len(event.sources))
                        + self.render_sources(event.sources, event.answer.cited if event.answer else (), event.query,
                                              note))
            elif event.kind == "nothing":
                final_text = event.text
                body = f'<span class="fr-nothing">{_escape(event.text)}</span>'
            elif event.kind == "error":
                final_text = ""
                body = f'<span class="fr-nothing"><b>Cannot answer:</b> {_escape(event.text)}</span>'
            else:
                continue
            chatbot[-1] = {"role": "assistant", "content": body}
            yield list(chatbot), history
        if final_text:
            history = history + turn(question, final_text)
        yield list(chatbot), history


# -- Gradio wiring ---------------------------------------------------------------------------------

def theme():
    import gradio as gr

    system_fonts = ["ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto", "Helvetica Neue",
                    "Arial", "sans-serif"]
    return gr.themes.Soft(primary_hue="indigo", secondary_hue="slate", neutral_hue="slate", font=system_fonts,
                          font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"])


def build_blocks(app: FreeRetApp):
    import gradio as gr

    config = app.config
    model_events = dict(concurrency_id="model", concurrency_limit=config.concurrency)

    with gr.Blocks(title=config.title, analytics_enabled=False, fill_width=True,
                   delete_cache=(3600, 3600)) as demo:
        history = gr.State([])
        gr.HTML(
            f'<div class="fr-header"><div><h1>{_escape(config.title)}</h1>'
            '<p>Ask questions about your PDFs, images and videos. One multimodal model finds, ranks and '
            'cites the sources, on this machine.</p></div>'
            f'{app.model_badge()}</div>', elem_id="fr-header")
        with gr.Row(equal_height=False):
            with gr.Column(scale=3, min_width=480):
                chatbot = gr.Chatbot(
                    elem_id="fr-chat", elem_classes=["fr-chat"], height="68vh", show_label=False,
                    layout="bubble", buttons=["copy"], feedback_options=None, sanitize_html=True,
                    placeholder="<h3>Ask about your library</h3><p>Add files on the right, then ask a question. "
                                "Answers cite their sources [1], [2] … shown under each answer.</p>")
                textbox = gr.MultimodalTextbox(
                    elem_id="fr-question", show_label=False, file_count="single",
                    file_types=["image"] if app.reads_images else None,
                    sources=["upload"] if app.reads_images else [],
                    placeholder=("Ask a question, or attach an image to search with it ..." if app.reads_images
                                 else "Ask a question ..."),
                    submit_btn=True, autofocus=True)
                with gr.Row():
                    new_chat = gr.Button("New chat", size="sm", variant="secondary", elem_id="fr-new-chat",
                                         scale=0, min_width=120)
            with gr.Column(scale=2, min_width=340):
                with gr.Tabs():
                    with gr.Tab("Library", elem_id="fr-library-tab"):
                        files = gr.File(label="Add files", file_count="multiple", elem_id="fr-upload",
                                        file_types=app.supported_extensions(), height=140)
                        folder = gr.UploadButton("Add a folder", file_count="directory", size="sm",
                                                 elem_id="fr-upload-folder", variant="secondary")
                        warning = gr.HTML(app.reindex_notice(), elem_id="fr-reindex-notice", min_height=0, padding=False)
                        reindex = gr.Button("Re-index with this model", variant="primary", size="sm",
                                            elem_id="fr-reindex", visible=app.library.needs_reindex)
                        progress = gr.HTML(elem_id="fr-progress", min_height=0, padding=False)
                        summary = gr.HTML(app.library_summary(), elem_id="fr-summary", min_height=0, padding=False)
                        table = gr.Dataframe(app.document_rows(), headers=["File", "Type", "Items", "Added"],
                                             datatype=["str", "str", "number", "str"], interactive=False,
                                             elem_id="fr-documents", wrap=True, max_height=320,
                                             show_label=False, buttons=[])
                        chosen = gr.Dropdown(choices=app.document_choices(), value=None, label="Remove a document",
                                             elem_id="fr-delete-choice", interactive=True,
                                             info="Pick one here or click its row in the table")
                        delete = gr.Button("Delete from library", variant="stop", elem_id="fr-delete", size="sm")
                        notice = gr.Markdown(elem_id="fr-notice")
                    with gr.Tab("Settings", elem_id="fr-settings-tab"):
                        gr.Markdown(app.model_info(), elem_id="fr-model-info")
                        top_k = gr.Slider(1, 100, value=config.top_k, step=1, label="Candidates (top-K)",
                                          info="Found by the embedding + keyword search")
                        rerank = gr.Checkbox(value=config.rerank, label="Rerank with the model",
                                             info="Slower, more precise: the model judges each candidate")
                        rerank_k = gr.Slider(1, 50, value=config.rerank_k, step=1, label="Candidates reranked (K)")
                        n_sources = gr.Slider(1, 10, value=config.n_sources, step=1, label="Sources in the answer")
                        min_relevance = gr.Slider(0.0, 1.0, value=config.min_relevance, step=0.05,
                                                  label="Relevance threshold",
                                                  info="With reranking: sources below this match probability "
                                                       "are dropped; if none is left, the app says so")

        settings = [top_k, rerank, rerank_k, n_sources, min_relevance]

        def refresh():
            choices = app.document_choices()
            return (app.library_summary(), app.document_rows(), gr.update(choices=choices, value=None),
                    app.reindex_notice(), gr.update(visible=app.library.needs_reindex))

        listing = [summary, table, chosen, warning, reindex]

        def run_reindex():
            result = None
            for result in app.reindex():
                yield render_progress(result.files)

        def run_ingest(paths):
            """Per-file progress; the document list refreshes as soon as each file is done."""
            unchanged = (gr.update(),) * 3
            if not paths:
                yield gr.update(), None, *unchanged
                return
            paths = [p if isinstance(p, str) else getattr(p, "name", str(p)) for p in paths]
            finished = 0
            for result in app.ingest(paths):
                done = sum(1 for s in result.files if s.state == "done")
                listing_now = unchanged
                if done != finished:
                    finished = done
                    listing_now = (app.library_summary(), app.document_rows(),
                                   gr.update(choices=app.document_choices(), value=None))
                yield render_progress(result.files), gr.update(), *listing_now
            yield render_progress(result.files), None, *unchanged

        for source in (files.upload, folder.upload):
            source(run_ingest, inputs=files if source == files.upload else folder,
                   outputs=[progress, files, summary, table, chosen], api_name=False, show_progress="hidden",
                   **model_events
                   ).then(refresh, outputs=listing, api_name=False, queue=False, show_progress="hidden")

        def run_delete(doc_id):
            return app.delete(doc_id)

        delete.click(run_delete, inputs=chosen, outputs=notice, api_name=False, **model_events
                     ).then(refresh, outputs=listing, api_name=False, queue=False, show_progress="hidden")

        def select_row(event):
            docs = app.documents()
            row = event.index[0] if isinstance(event.index, (list, tuple)) else event.index
            return docs[row].doc_id if 0 <= row < len(docs) else None

        select_row.__annotations__ = {"event": gr.SelectData}  # Gradio injects the event by this type

        reindex.click(run_reindex, outputs=progress, api_name=False, show_progress="hidden", **model_events
                      ).then(refresh, outputs=listing, api_name=False, queue=False, show_progress="hidden")

        table.select(select_row, outputs=chosen, api_name=False, queue=False, show_progress="hidden")

        # The question shows at once; the answer waits for the model's queue slot. The textbox is
        # locked meanwhile so that one session never streams two answers into the same chat.
        pending = gr.State(None)
        textbox.submit(lambda message, messages: (*app.add_user_turn(message, messages),
                                                  gr.update(value=None, interactive=False)),
                       inputs=[textbox, chatbot], outputs=[chatbot, pending, textbox], api_name=False, queue=False
                       ).then(app.answer_turn, inputs=[pending, chatbot, history, *settings],
                              outputs=[chatbot, history], api_name=False, show_progress="minimal", **model_events
                              ).then(lambda: gr.update(interactive=True), outputs=textbox, api_name=False, queue=False)
        new_chat.click(lambda: ([], [], None), outputs=[chatbot, history, textbox], api_name=False, queue=False)
        # Static first values above; every page load refreshes them (without progress overlays).
        demo.load(refresh, outputs=listing, api_name=False, queue=False, show_progress="hidden")

        # API endpoints (gradio_client) for the same operations as the panels. Files come in as
        # uploads (the client sends them), never as server paths.
        with gr.Row(visible=False):
            api_files = gr.File(file_count="multiple", visible=False)
            api_report = gr.JSON(visible=False)
            api_add_button = gr.Button(visible=False)

        def api_add(paths) -> list[dict]:
            result = IngestResult()
            paths = [p if isinstance(p, str) else getattr(p, "name", str(p)) for p in paths or []]
            for result in app.ingest(paths):
                pass
            return [{"file": s.name, "state": s.state, "items": s.items, "message": s.message} for s in result.files]

        def api_documents() -> list[dict]:
            return [{"doc_id": d.doc_id, "file": d.source, "type": d.file_type, "items": d.items}
                    for d in app.documents()]

        api_chat_button = gr.Button(visible=False)
        api_chat_button.click(app.chat, inputs=[textbox, chatbot, history, *settings],
                              outputs=[chatbot, history, textbox], api_name="chat", **model_events)
        api_add_button.click(api_add, inputs=api_files, outputs=api_report, api_name="add_files", **model_events)
        gr.api(api_documents, api_name="documents", queue=False)
        gr.api(app.delete, api_name="delete", **model_events)
    demo.queue(default_concurrency_limit=config.concurrency, max_size=config.max_queue)
    return demo


def launch_options(config: AppConfig) -> dict[str, Any]:
    """Keyword arguments of `Blocks.launch` for this configuration."""
    return dict(
        server_name=config.host,
        server_port=config.port,
        share=config.share,
        auth=config.auth or None,
        auth_message="Sign in to FreeRet RAG" if config.auth else None,
        max_file_size=config.max_upload_bytes,
        allowed_paths=[str(config.asset_dir), str(config.upload_dir)],
        root_path=config.root_path,
        theme=theme(),
        css=CSS,
        show_error=True,
        ssr_mode=False,
        mcp_server=False,
        pwa=False,
        footer_links=["api"],
    )


def launch(app: FreeRetApp, **overrides: Any):
    demo = build_blocks(app)
    return demo.launch(**{**launch_options(app.config), **overrides})
