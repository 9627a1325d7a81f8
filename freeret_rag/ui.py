"""The web app: a library panel, a chat panel and a settings panel (Gradio Blocks).

`FreeRetApp` holds the model and the library and has every callback as a plain method, so tests
can call them without a browser; `build_blocks(app)` wires them to components and `launch(app)`
serves them. The HTML is built by `ui_render` (pure functions), uploads are checked, kept and
indexed by `ui_uploads`.

Concurrency: one model serves every browser session. Answers share one queue slot
(`concurrency_id="model"`, limit `config.concurrency`), so they never interleave. Library writes
(uploads, re-index, delete) take turns in a slot of their own (`concurrency_id="library"`), so the
index is written by one event at a time while questions keep being answered: the engine's model
lock serves a question between two indexing batches (engine.ModelLock). Cancelling an upload (the
Stop button, an API client's cancel) stops its indexing at the next batch. Per-session state
(history, chat, settings) lives in Gradio session state, never in globals.
"""

from __future__ import annotations

import contextlib
import html
import shutil
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from . import ui_render as render
from . import ui_viewer
from .chat import EMPTY_ANSWER, ChatSettings, for_spaces, plain_history, respond, turn
from .config import AppConfig, default_model
from .errors import FreeRetError
from .items import Hit
from .settings import MIN_RELEVANCE, N_SOURCES, RERANK, RERANK_K, TOP_K
from .ui_render import CSS, FileStatus, render_progress
from .ui_uploads import IngestResult, index_pending, ingest_files, received_copies, reindex_library, triage

__all__ = ["CSS", "FileStatus", "FreeRetApp", "IngestResult", "build_blocks", "launch", "launch_options",
           "render_progress", "theme"]


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
                                             dtype=config.dtype, visual_budget=config.visual_budget, **extra)
        self.engine = for_spaces(engine)
        many = bool(config.auth or config.demo)  # a library per login or per session (ui_users.py)
        if library is None:  # with many users, the app's own library is an empty one nobody writes to
            library = self.open_library(config.data_dir / "empty", database=self._empty_database()) if many \
                else self.open_library(config.data_dir)
        self.library = library  # thread-safe: writes are serialised, searches run concurrently
        self.shared: list[Any] = []  # read-only libraries searched besides `library` (ui_users.py)
        self.caps: tuple[int, int] | None = None  # a demo session's (files, bytes) caps
        self.users: Any = None
        if many or config.shared_library:
            from .ui_users import Users

            self.users = Users(self)
            if self.users.shared is not None and not many:
                self.shared = [self.users.shared]
        self.watchers: list[Any] = []  # watched folders (watch.py), shared by every session
        for folder in config.watch:
            self.watch_folder(folder, from_browser=False)
        self._stop_flags: dict[str, threading.Event] = {}  # browser session -> its answer's stop flag

    def open_library(self, data_dir: Path, database: str | None = None, read_only: bool = False) -> Any:
        """A library in `data_dir` with the app's model and settings (`read_only`: no self-check; the
        app never writes to a shared library, and a demo tab's short-lived one skips the check)."""
        from .library import Library, self_check_enabled
        from .media import MediaSettings

        config = self.config
        # An index of another model opens too: the Library panel then offers the re-index.
        caps = MediaSettings(max_pages=config.max_pages, max_chunks=config.max_chunks,
                             max_video_minutes=config.max_video_minutes, ocr=config.ocr)
        check = "background" if self_check_enabled() and not read_only else False
        return Library(self.engine, data_dir, chroma_url=config.chroma_url, allow_mismatch=True,
                       fusion_weights=config.fusion_weights, rerank_share=config.rerank_share,
                       self_check=check, media_settings=caps, database=database)

    def _empty_database(self) -> str | None:
        """On a Chroma server, the database of the app's own (empty) library with many users: not the
        default one, which holds the single library of before (or the shared one)."""
        if not self.config.chroma_url:
            return None
        from .libraries import database_name, ensure_database

        ensure_database(self.config.chroma_url, database_name("empty"))
        return database_name("empty")

    @property
    def many_users(self) -> bool:
        """A library per login or per demo session (ui_users.py), not one library for everyone."""
        return self.users is not None and self.users.many

    def for_request(self, request: Any) -> "FreeRetApp":
        """The app as this request's user sees it: their own library (a login's, a demo session's),
        or this app itself with a single library (ui_users.Users.view)."""
        return self.users.view(self, request) if self.many_users else self

    @property
    def searched(self) -> Any:
        """What the chat searches: the library, plus the read-only shared ones."""
        if not self.shared:
            return self.library
        from .libraries import WithShared

        return WithShared(self.library, self.shared)

    def shared_documents(self) -> list[Any]:
        """The read-only libraries' documents (not this library's), each marked `read_only`."""
        if not self.shared:
            return []
        from .libraries import ReadOnlyDocument, WithShared

        searched = WithShared(self.library, self.shared)
        read_only = searched.read_only_ids()
        docs = [ReadOnlyDocument(doc) for doc in searched.documents() if doc.doc_id in read_only]
        return sorted(docs, key=lambda doc: (doc.source.lower(), doc.doc_id))

    # -- what the model is --------------------------------------------------------------------
    @property
    def reads_images(self) -> bool:
        return "image" in self.engine.capabilities

    def model_badge(self) -> str:
        return render.model_badge(self.engine.model_id, self.engine.capabilities)

    def model_info(self) -> str:
        lm = getattr(self.engine, "lm", None)
        runs_on = f"{lm.device} · {str(lm.dtype).replace('torch.', '')}" if lm is not None else "?"
        return render.model_info(self.engine.model_id, self.engine.capabilities, runs_on, self.engine.prompt_version)

    def self_check_info(self) -> str:
        """The self-check's figures and what they switched on or off, in words (Settings panel)."""
        try:
            return render.self_check_markdown(getattr(self.library, "self_check_result", None))
        except FreeRetError as error:
            return str(error)

    # -- library ------------------------------------------------------------------------------
    def supported_extensions(self) -> list[str]:
        from .media import SUPPORTED_EXTENSIONS

        return sorted(SUPPORTED_EXTENSIONS)

    def documents(self) -> list[Any]:
        return sorted(self.library.documents(), key=lambda doc: (doc.source.lower(), doc.doc_id))

    def waiting(self) -> list[Any]:
        """Documents listed but not searchable with this model (Library.waiting), by name."""
        return sorted(self.library.waiting(), key=lambda doc: (doc.source.lower(), doc.doc_id))

    def listed(self) -> list[Any]:
        """What the table and the delete list show: the searchable documents, then the waiting ones
        (then those of the shared read-only libraries, marked `read_only`)."""
        return self.documents() + self.waiting() + self.shared_documents()

    def document_rows(self) -> list[list[Any]]:
        try:
            return render.document_rows(self.listed())
        except FreeRetError:  # e.g. the Chroma server went away: library_summary says so
            return []

    def document_choices(self) -> list[tuple[str, str]]:
        try:
            return render.document_choices([doc for doc in self.listed() if not getattr(doc, "read_only", False)])
        except FreeRetError:
            return []

    def library_summary(self) -> str:
        try:
            return render.library_summary(self.documents(), self.waiting(), shared=len(self.shared_documents()))
        except FreeRetError as error:
            return render.problem_html(str(error))

    def ingest(self, paths: Iterable[str | Path]) -> Iterator[IngestResult]:
        """Index files one by one, yielding the per-file progress after every step."""
        if self.caps:
            return self._ingest_capped(paths)
        return ingest_files(self.library, paths, self.config.upload_dir, self.config.max_upload_bytes,
                            self.reads_images)

    def _ingest_capped(self, paths: Iterable[str | Path]) -> Iterator[IngestResult]:
        result, pending = self.triage(paths)
        yield result
        yield from self.index_pending(result, pending)

    def triage(self, paths: Iterable[str | Path]) -> tuple[IngestResult, list[tuple[int, Path]]]:
        """Every upload's outcome known without the model (refused, already in the library) and the
        files left to index (ui_uploads.triage)."""
        result, pending = triage(self.library, paths, self.config.max_upload_bytes, self.reads_images)
        if self.caps and self.users is not None:  # a demo session's caps: files and megabytes
            reasons = self.users.capped(self, [path for _, path in pending])
            for (position, _), reason in zip(pending, reasons):
                if reason:
                    result.files[position].state, result.files[position].message = "skipped", reason
            pending = [entry for entry, reason in zip(pending, reasons) if not reason]
        return result, pending

    def index_pending(self, result: IngestResult, pending: Iterable[tuple[int, Path]]) -> Iterator[IngestResult]:
        return index_pending(self.library, result, pending, self.config.upload_dir)

    def delete_preview(self, doc_id: str | None) -> str:
        """What Delete will remove, in words (the confirmation), or "" when nothing is chosen."""
        doc = self.library.document(doc_id) if doc_id else None
        return render.delete_preview(doc, self._kept_copy(doc) is not None) if doc is not None else ""

    def _kept_copy(self, doc: Any) -> Path | None:
        """The app's own copy of an uploaded file (under upload_dir), if `doc` is one."""
        path = Path(getattr(doc, "path", "") or "")
        upload_dir = self.config.upload_dir.resolve()
        return path if path.is_file() and upload_dir in path.resolve().parents else None

    def delete(self, doc_id: str | None) -> str:
        if not doc_id:
            return "Choose a document to delete."
        shared = next((doc for doc in self.shared_documents() if doc.doc_id == doc_id), None)
        if shared is not None:
            return f"{shared.source} is in the shared library (read-only): it cannot be deleted here."
        try:
            listed = next((doc for doc in self.listed() if doc.doc_id == doc_id), None)
            received = received_copies(listed.path) if listed is not None else None
            doc = self.library.delete(doc_id)
        except FreeRetError as error:
            return str(error)
        if doc is None:
            return "That document is no longer in the library."
        if received is not None:  # Gradio's own copy of the upload goes too (its URL answers 404)
            shutil.rmtree(received, ignore_errors=True)
        return f"Deleted {doc.source}."

    # -- stopping an answer (per browser session) -----------------------------------------------------
    def new_stop_flag(self, session: str) -> threading.Event:
        """A fresh stop flag for the session's next answer."""
        flag = self._stop_flags[session] = threading.Event()
        return flag

    def stop_flag(self, session: str) -> threading.Event | None:
        return self._stop_flags.get(session)

    def stop(self, session: str) -> None:
        """The Stop button: the session's answer ends within a rerank batch or a token."""
        flag = self._stop_flags.get(session)
        if flag is not None:
            flag.set()

    def reindex_notice(self) -> str:
        if not self.library.needs_reindex:
            return ""
        try:
            warning = self.library.reindex_plan().warning(self.engine.model_id)
        except FreeRetError:  # the library panel says what is wrong
            warning = ""
        return render.reindex_notice(self.library.others, self.engine.model_id, warning)

    def reindex(self) -> Iterator[IngestResult]:
        """Re-embed every document of another model's index with the loaded model, with progress."""
        return reindex_library(self.library)

    # -- watched folders ----------------------------------------------------------------------
    @property
    def may_watch(self) -> bool:
        """Whether a browser may name folders of this machine to watch: only when the app serves
        this machine alone (--host 127.0.0.1, no --share); otherwise only `--watch DIR` can."""
        if self.many_users:  # a library per login or session: no folders of this machine
            return False
        return self.config.host in ("127.0.0.1", "localhost", "::1") and not self.config.share

    def watch_folder(self, folder: str | Path | None, from_browser: bool = True) -> str:
        """Start watching a folder of this machine (sync now, then after every change); says what happened."""
        from .watch import FolderWatcher

        if from_browser and self.many_users:
            return ("Watched folders are off here: every login (or demo session) has a library of its own, and a "
                    "folder of this machine belongs to none of them. An admin can index a folder into the shared "
                    "library (--shared-library) with the CLI.")
        if from_browser and not self.may_watch:
            return ("Watching folders from the browser is off when the app is served to other machines: "
                    "start it with `--watch DIR`.")
        if not folder or not str(folder).strip():
            return "Type the path of a folder on this machine."
        path = Path(str(folder).strip()).expanduser().resolve()
        data = self.config.data_dir.resolve()
        if not path.is_dir():
            return f"There is no folder {path} on this machine."
        if path == data or data in path.parents:
            return "That is the app's own data folder."
        for watcher in self.watchers:
            if watcher.state != "failed" and (path == watcher.folder or watcher.folder in path.parents):
                return f"{path} is already watched (in {watcher.folder})."
        if self.library.needs_reindex:
            return "Re-index the library with this model first."
        self.watchers.append(FolderWatcher(self.library, path, keep_deleted=self.config.keep_deleted).start())
        kept = "kept" if self.config.keep_deleted else "removed"
        return f"Watching {path}: new and changed files are indexed, deleted ones {kept}."

    def watch_status(self) -> str:
        return render.watch_status(self.watchers)

    def watch_changes(self) -> int:
        """How many syncs have changed the library so far (the panel refreshes when it grows)."""
        return sum(watcher.changes for watcher in self.watchers)

    # -- chat ---------------------------------------------------------------------------------
    def source_files(self, hits: Sequence[Hit]) -> dict[str, str]:
        """doc_id -> path of the kept original, for the hits' documents whose file still exists."""
        wanted = {hit.item.doc_id for hit in hits}
        try:
            docs = self.searched.documents()
        except Exception:  # a listing problem costs the links, not the answer
            return {}
        return {doc.doc_id: doc.path for doc in docs if doc.doc_id in wanted and Path(doc.path).is_file()}

    def render_sources(self, hits: Sequence[Hit], cited: Sequence[int] = (), query: str = "",
                       note: str = "") -> str:
        return render.render_sources(hits, self.source_files(hits), cited, query, note)

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
        chatbot.append({"role": "assistant", "content": render.status_html("Waiting for the model ...")})
        return chatbot, {"text": question, "image": image}

    def chat(self, message: dict | str | None, chatbot: list | None, history: list | None,
             top_k: float = TOP_K, rerank: bool = RERANK, rerank_k: float = RERANK_K, n_sources: float = N_SOURCES,
             min_relevance: float | None = MIN_RELEVANCE, fixed_threshold: bool | None = None,
             ) -> Iterator[tuple[list, list, Any]]:
        """One whole turn: yields (chatbot messages, plain history, textbox value).

        `min_relevance` None is "auto" (the library's measured floor); `fixed_threshold` False
        (the Settings checkbox unticked) ignores the slider's value and uses "auto" too.
        """
        chatbot, pending = self.add_user_turn(message, chatbot)
        yield list(chatbot), plain_history(history), None
        for chatbot, history in self.answer_turn(pending, chatbot, history, top_k, rerank, rerank_k, n_sources,
                                                 min_relevance, fixed_threshold):
            yield chatbot, history, None

    def api_chat(self, message: dict | str | None, chatbot: list | None, top_k: float = TOP_K,
                 rerank: bool = RERANK, rerank_k: float = RERANK_K, n_sources: float = N_SOURCES,
                 min_relevance: float | None = MIN_RELEVANCE, fixed_threshold: bool | None = None,
                 ) -> Iterator[tuple[list, list[dict], Any]]:
        """The /chat API: the conversation is exactly `chatbot` (the messages passed in, nothing a
        session remembers); yields (chatbot messages, sources as data, textbox value)."""
        history = history_from_messages(chatbot)
        chatbot, pending = self.add_user_turn(message, chatbot)
        yield list(chatbot), [], None
        for chatbot, _, sources in self._turn(pending, chatbot, history, top_k, rerank, rerank_k, n_sources,
                                              min_relevance, fixed_threshold):
            yield chatbot, sources, None

    def answer_turn(self, pending: dict | None, chatbot: list | None, history: list | None,
                    top_k: float = TOP_K, rerank: bool = RERANK, rerank_k: float = RERANK_K,
                    n_sources: float = N_SOURCES, min_relevance: float | None = MIN_RELEVANCE,
                    fixed_threshold: bool | None = None, stop: threading.Event | None = None,
                    ) -> Iterator[tuple[list, list]]:
        """Stream the answer in place of the last (placeholder) message: yields (chatbot, plain history).
        Setting `stop` ends it within a rerank batch or a token, keeping what was written."""
        for chatbot, history, _ in self._turn(pending, chatbot, history, top_k, rerank, rerank_k, n_sources,
                                              min_relevance, fixed_threshold, stop):
            yield chatbot, history

    def answer_turn_data(self, pending: dict | None, chatbot: list | None, history: list | None,
                         top_k: float = TOP_K, rerank: bool = RERANK, rerank_k: float = RERANK_K,
                         n_sources: float = N_SOURCES, min_relevance: float | None = MIN_RELEVANCE,
                         fixed_threshold: bool | None = None, stop: threading.Event | None = None,
                         ) -> Iterator[tuple[list, list, list[dict]]]:
        """`answer_turn` with the sources as data too: yields (chatbot, plain history, sources)."""
        return self._turn(pending, chatbot, history, top_k, rerank, rerank_k, n_sources, min_relevance,
                          fixed_threshold, stop)

    # -- export (export.py) ---------------------------------------------------------------------
    def export_chat(self, turns: Sequence[dict] | None, session: str, base_url: str | None = None) -> str:
        """The conversation `turns` (export.export_turn dicts) as a Markdown file for the session to
        download; its earlier export is replaced, old sessions' exports are swept (export.write_export)."""
        from .export import conversation_markdown, write_export

        library = getattr(self.library, "name", None) or Path(getattr(self.library, "data_dir", "") or "").name
        text = conversation_markdown(list(turns or ()), model=self.engine.model_id, library=library,
                                     base_url=base_url, title=f"{self.config.title} conversation")
        return str(write_export(text, export_folder(), session))

    def waiting_for_reindex(self) -> str:
        """What the chat says while every document waits for a re-index with this model ("" otherwise)."""
        if not self.library.needs_reindex or self.library.documents():
            return ""
        return render.reindex_waiting(self.library.others, self.engine.model_id, len(self.library.waiting()))

    def _turn(self, pending: dict | None, chatbot: list | None, history: list | None, top_k: float,
              rerank: bool, rerank_k: float, n_sources: float, min_relevance: float | None,
              fixed_threshold: bool | None, stop: threading.Event | None = None,
              ) -> Iterator[tuple[list, list, list[dict]]]:
        """(chatbot, plain history, sources as data) after every change of the answer."""
        chatbot = list(chatbot or [])
        history = plain_history(history)
        if not pending:
            yield chatbot, history, []
            return
        question, image = pending["text"], pending.get("image")
        threshold = None if fixed_threshold is False or min_relevance is None else float(min_relevance)
        settings = ChatSettings(top_k=int(top_k), rerank=bool(rerank), rerank_k=int(rerank_k),
                                n_sources=int(n_sources), min_relevance=threshold)
        base = max(len(chatbot) - 1, 0)  # the placeholder: the answer's messages replace it
        waiting = self.waiting_for_reindex()
        if waiting:
            chatbot[base:] = [{"role": "assistant", "content": waiting}]
            yield list(chatbot), history, []
            return
        chatbot[base:] = [{"role": "assistant", "content": render.status_html("Thinking ...")}]
        yield list(chatbot), history, []

        started = time.monotonic()
        first_token = None
        final_text = ""
        originals: dict[str, str] = {}
        shown_docs: set[str] | None = None
        data: list[dict] = []
        for event in respond(self.searched, self.engine, question, image, history, settings, stop):
            docs = {hit.item.doc_id for hit in event.sources}
            if docs != shown_docs:  # look the files up once per set of sources, not per token
                shown_docs, originals = docs, (self.source_files(event.sources) if docs else {})
            note = ""
            if event.kind == "token" and first_token is None:
                first_token = time.monotonic() - started
            elif event.kind in ("answer", "stopped"):
                final_text = event.text.strip() or (EMPTY_ANSWER if event.kind == "answer" else "")
                took = time.monotonic() - started
                note = (f"answered in {took:.1f} s" if event.kind == "answer" else f"stopped after {took:.1f} s") \
                    + (f", first words after {first_token:.1f} s" if first_token else "")
            elif event.kind in ("nothing", "error"):
                final_text = event.text if event.kind == "nothing" else ""
            if event.sources:
                cited = event.answer.cited if event.answer else ()
                data = render.sources_data(event.sources, originals, cited)
            bodies = render.chat_messages(event, originals, note)
            if bodies is None:
                continue
            chatbot[base:] = [{"role": "assistant", "content": body} for body in bodies]
            yield list(chatbot), history, data
        if final_text:
            history = history + turn(question, final_text)
        yield list(chatbot), history, data


def export_folder() -> Path:
    """Where the per-session export files are written (a temp folder: Gradio serves from there)."""
    import tempfile

    return Path(tempfile.gettempdir()) / "freeret-exports"


def history_from_messages(messages: Sequence[Any] | None) -> list[dict]:
    """The conversation held in chat messages (what an API caller passes): the questions and the
    model's answers as plain text; the app's own messages (status, sources, notices) left out."""
    kept = []
    for message in messages or ():
        if not isinstance(message, dict):
            message = {"role": getattr(message, "role", None), "content": getattr(message, "content", None)}
        content = message.get("content")
        if isinstance(content, list):
            content = " ".join(part.get("text", "") for part in content if isinstance(part, dict))
        if not isinstance(content, str) or render.is_app_html(content):
            continue
        content = ui_viewer.strip_inline(content)  # the answer's inline pictures are the app's, not the model's
        kept.append({"role": message.get("role"), "content": html.unescape(content).replace("▍", "")})
    return plain_history(kept)


# -- Gradio wiring ---------------------------------------------------------------------------------

def theme():
    import gradio as gr

    system_fonts = ["ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto", "Helvetica Neue",
                    "Arial", "sans-serif"]
    return gr.themes.Soft(primary_hue="indigo", secondary_hue="slate", neutral_hue="slate", font=system_fonts,
                          font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"])


def chat_view(**overrides: Any):
    """The chat (a gr.Chatbot): model text and the app's source blocks are messages of their own."""
    import gradio as gr

    options = dict(elem_id="fr-chat", elem_classes=["fr-chat"], height="68vh", show_label=False,
                   layout="bubble", buttons=["copy"], feedback_options=None, sanitize_html=True,
                   placeholder="<h3>Ask about your library</h3><p>Add files on the right, then ask a question. "
                               "Answers cite their sources [1], [2] … shown under each answer.</p>")
    return gr.Chatbot(**{**options, **overrides})


def build_blocks(app: FreeRetApp):
    import gradio as gr

    config = app.config
    model_events = dict(concurrency_id="model", concurrency_limit=config.concurrency)
    library_events = dict(concurrency_id="library", concurrency_limit=1)  # writes; questions go on meanwhile

    with gr.Blocks(title=config.title, analytics_enabled=False, fill_width=True,
                   delete_cache=(3600, 3600)) as demo:
        history = gr.State([])
        gr.HTML(render.header(config.title, app.model_badge(), shared_server=app.many_users), elem_id="fr-header")
        viewer, viewer_html, view_request = ui_viewer.viewer_panel()  # the citation viewer (right sidebar)
        ui_viewer.wire(app, view_request, viewer_html, viewer)
        with gr.Row(equal_height=False):
            with gr.Column(scale=3, min_width=480):
                chatbot = chat_view()
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
                    stop = gr.Button("Stop", size="sm", variant="stop", elem_id="fr-stop", scale=0, min_width=120,
                                     visible=False)
                    download = gr.DownloadButton("Download chat (.md)", size="sm", variant="secondary",
                                                 elem_id="fr-download-chat", scale=0, min_width=170,
                                                 interactive=False)  # once a question is answered
                demo_mode = app.users is not None and app.users.mode == "demo"
                if demo_mode:  # a public demo: a library per tab, the sample library one click away
                    from .ui_users import SAMPLE_QUESTIONS

                    gr.Markdown(render.demo_note(config.demo_ttl_minutes, config.demo_max_files, config.demo_max_mb),
                                elem_id="fr-demo-note")
                    try_samples = gr.Button("Try the sample library", variant="primary", size="sm",
                                            elem_id="fr-try-samples")
                    samples_note = gr.Markdown(elem_id="fr-samples-note")
                    with gr.Row(visible=False, elem_id="fr-examples") as examples:
                        example_buttons = [gr.Button(question, size="sm", variant="secondary")
                                           for question in SAMPLE_QUESTIONS]
            with gr.Column(scale=2, min_width=340):
                with gr.Tabs():
                    with gr.Tab("Library", elem_id="fr-library-tab"):
                        # No file_types filter: the browser would drop other files silently (or show a
                        # bare "Error"); every file gets a line with its outcome and reason instead.
                        files = gr.File(label="Add files", file_count="multiple", elem_id="fr-upload", height=140)
                        folder = gr.UploadButton("Add a folder", file_count="directory", size="sm",
                                                 elem_id="fr-upload-folder", variant="secondary")
                        warning = gr.HTML(app.reindex_notice(), elem_id="fr-reindex-notice", min_height=0, padding=False,
                                          elem_classes=["fr-collapse"])
                        reindex = gr.Button("Re-index with this model", variant="primary", size="sm",
                                            elem_id="fr-reindex", visible=app.library.needs_reindex)
                        progress = gr.HTML(elem_id="fr-progress", min_height=0, padding=False,
                                           elem_classes=["fr-collapse"])
                        stop_indexing = gr.Button("Stop indexing", size="sm", variant="secondary",
                                                  elem_id="fr-stop-indexing", visible=False)  # while indexing
                        summary = gr.HTML(app.library_summary(), elem_id="fr-summary", min_height=0, padding=False)
                        table = gr.Dataframe(app.document_rows(), headers=["File", "Type", "Items", "Added", "Note"],
                                             datatype=["str", "str", "number", "str", "str"], interactive=False,
                                             elem_id="fr-documents", wrap=True, max_height=320,
                                             column_widths=["27%", "12%", "12%", "31%", "18%"],
                                             show_label=False, buttons=[])
                        chosen = gr.Dropdown(choices=app.document_choices(), value=None, label="Remove a document",
                                             elem_id="fr-delete-choice", interactive=True,
                                             info="Pick one here or click its row in the table")
                        delete = gr.Button("Delete from library", variant="stop", elem_id="fr-delete", size="sm")
                        with gr.Group(visible=False, elem_id="fr-delete-confirm") as confirm_box:
                            confirm_text = gr.HTML(elem_id="fr-delete-what", padding=False)
                            with gr.Row():
                                confirm_yes = gr.Button("Yes, delete", variant="stop", size="sm",
                                                        elem_id="fr-delete-yes")
                                confirm_no = gr.Button("Cancel", variant="secondary", size="sm",
                                                       elem_id="fr-delete-no")
                        notice = gr.Markdown(elem_id="fr-notice")
                        with gr.Accordion("Watched folders", open=bool(app.watchers), elem_id="fr-watch-panel"):
                            watch_path = gr.Textbox(label="Folder on this machine", elem_id="fr-watch-path",
                                                    placeholder="/home/me/Papers", interactive=app.may_watch,
                                                    info="Kept in step: new and changed files are indexed, "
                                                         "deleted ones leave the library" if not app.many_users else
                                                         "Off here: every login (or demo tab) has a library of "
                                                         "its own, and a folder of this machine is nobody's")
                            watch_button = gr.Button("Add a folder to watch", size="sm", elem_id="fr-watch",
                                                     interactive=app.may_watch)
                            watch_status = gr.HTML(app.watch_status(), elem_id="fr-watch-status", min_height=0,
                                                   padding=False)
                            watch_timer = gr.Timer(2.0)
                    with gr.Tab("Settings", elem_id="fr-settings-tab"):
                        gr.Markdown(app.model_info(), elem_id="fr-model-info")
                        top_k = gr.Slider(1, 100, value=config.top_k, step=1, label="Candidates (top-K)", elem_id="fr-top-k",
                                          info="Found by the embedding + keyword search")
                        rerank = gr.Checkbox(value=config.rerank, label="Rerank with the model",
                                             info="Slower, more precise: the model judges each candidate")
                        rerank_k = gr.Slider(1, 50, value=config.rerank_k, step=1, label="Candidates reranked (K)",
                                             elem_id="fr-rerank-k")
                        n_sources = gr.Slider(1, 10, value=config.n_sources, step=1, label="Sources in the answer")
                        fixed_threshold = gr.Checkbox(value=config.min_relevance is not None, elem_id="fr-fixed-threshold",
                                                      label="Fixed relevance threshold",
                                                      info="Off: the floor the self-check measured on your "
                                                           "library (below)")
                        min_relevance = gr.Slider(0.0, 1.0, step=0.05,
                                                  value=0.2 if config.min_relevance is None else config.min_relevance,
                                                  label="Relevance threshold", elem_id="fr-threshold",
                                                  info="With reranking: sources below this match probability "
                                                       "are dropped; if none is left, the app says so")
                        self_check = gr.Markdown(app.self_check_info(), elem_id="fr-self-check")

        settings = [top_k, rerank, rerank_k, n_sources, min_relevance, fixed_threshold]

        def refresh(current=None, request=None):
            """The listing again; the document picked for deletion stays picked while it exists."""
            view = app.for_request(request)
            choices = view.document_choices()
            kept = current if current in {doc_id for _, doc_id in choices} else None
            return (view.library_summary(), view.document_rows(), gr.update(choices=choices, value=kept),
                    view.reindex_notice(), gr.update(visible=view.library.needs_reindex), view.self_check_info())

        listing = [summary, table, chosen, warning, reindex, self_check]

        def run_reindex(request=None):
            for result in app.for_request(request).reindex():
                yield render_progress(result.files)

        def upload_names(paths) -> list[str]:
            return [p if isinstance(p, str) else getattr(p, "name", str(p)) for p in paths or []]

        def run_triage(paths, request=None):
            """At once, without the model: every file's line, refused ones with their reason and
            unchanged ones answered; the upload control resets for the next pick."""
            if not paths:
                return gr.update(), None, None, gr.update()
            result, pending = app.for_request(request).triage(upload_names(paths))
            return render_progress(result.files), None, (result, pending), gr.update(visible=bool(pending))

        def run_ingest(batch, request=None):
            """Per-file progress; the document list refreshes as soon as each file is done."""
            view = app.for_request(request)
            unchanged = (gr.update(),) * 3
            if not batch or not batch[1]:
                yield gr.update(), *unchanged
                return
            result, pending = batch
            finished = 0
            with closing(view.index_pending(result, pending)) as results:  # a cancelled event closes this
                for result in results:  # ... and closing it cancels the indexing (ui_uploads._ingest_one)
                    done = sum(1 for s in result.files if s.state == "done")
                    listing_now = unchanged
                    if done != finished:
                        finished = done
                        listing_now = (view.library_summary(), view.document_rows(),
                                       gr.update(choices=view.document_choices(), value=None))
                    yield render_progress(result.files), *listing_now
            yield render_progress(result.files), *unchanged

        batch = gr.State(None)
        uploads = []
        for control in (files, folder):
            uploads.append(control.upload(run_triage, inputs=control, outputs=[progress, control, batch, stop_indexing],
                                          api_name=False, show_progress="hidden", concurrency_id="uploads",
                                          concurrency_limit=None
                                          ).then(run_ingest, inputs=batch, outputs=[progress, summary, table, chosen],
                                                 api_name=False, show_progress="hidden", **library_events))
            uploads[-1].then(refresh, inputs=chosen, outputs=listing, api_name=False, queue=False,
                             show_progress="hidden")
            uploads[-1].then(lambda: gr.update(visible=False), outputs=stop_indexing, api_name=False, queue=False,
                             show_progress="hidden")

        def stopped():
            return render.status_html("Stopped: the file being indexed stops after its current batch. Its "
                                      "finished part is kept; add the same file again to continue."), \
                gr.update(visible=False)

        # Cancelling the event closes run_ingest, which cancels the indexing (ui_uploads._ingest_one).
        stop_indexing.click(stopped, outputs=[progress, stop_indexing], cancels=uploads, api_name=False, queue=False,
                   show_progress="hidden").then(refresh, inputs=chosen, outputs=listing, api_name=False, queue=False,
                                                show_progress="hidden")

        # Delete asks first, naming what goes; "Yes" deletes the document it named (`asked`), even if
        # another one is picked meanwhile; picking another one closes the question.
        asked = gr.State(None)

        def run_delete(doc_id, request=None):
            return app.for_request(request).delete(doc_id), gr.update(visible=False), None

        def ask_delete(doc_id, request=None):
            preview = app.for_request(request).delete_preview(doc_id)
            if not preview:
                return gr.update(visible=False), "", "Choose a document to delete.", None
            return gr.update(visible=True), preview, "", doc_id

        def close_question():
            return gr.update(visible=False), None

        delete.click(ask_delete, inputs=chosen, outputs=[confirm_box, confirm_text, notice, asked], api_name=False,
                     queue=False, show_progress="hidden")
        confirm_no.click(close_question, outputs=[confirm_box, asked], api_name=False, queue=False,
                         show_progress="hidden")
        confirm_yes.click(run_delete, inputs=asked, outputs=[notice, confirm_box, asked], api_name=False,
                          **library_events
                          ).then(refresh, inputs=chosen, outputs=listing, api_name=False, queue=False, show_progress="hidden")
        chosen.input(close_question, outputs=[confirm_box, asked], api_name=False, queue=False,
                     show_progress="hidden")

        def select_row(event, request=None):
            docs = app.for_request(request).listed()
            row = event.index[0] if isinstance(event.index, (list, tuple)) else event.index
            return (docs[row].doc_id if 0 <= row < len(docs) else None), *close_question()

        select_row.__annotations__ = {"event": gr.SelectData, "request": gr.Request}  # Gradio injects these

        reindex.click(run_reindex, outputs=progress, api_name=False, show_progress="hidden", **library_events
                      ).then(refresh, inputs=chosen, outputs=listing, api_name=False, queue=False, show_progress="hidden")

        seen_changes = gr.State(0)

        def watch_tick(seen, request=None):
            """The watchers' log; the document list too when a sync changed the library."""
            now = app.watch_changes()
            if now == seen:
                return app.watch_status(), seen, gr.update(), gr.update(), gr.update()
            view = app.for_request(request)
            return (app.watch_status(), now, view.library_summary(), view.document_rows(),
                    gr.update(choices=view.document_choices()))

        def watch_click(folder, request=None):
            return app.for_request(request).watch_folder(folder), app.watch_status()

        watch_timer.tick(watch_tick, inputs=seen_changes, outputs=[watch_status, seen_changes, summary, table, chosen],
                         api_name=False, queue=False, show_progress="hidden")
        watch_button.click(watch_click, inputs=watch_path,
                           outputs=[notice, watch_status], api_name=False, queue=False, show_progress="hidden")

        table.select(select_row, outputs=[chosen, confirm_box, asked], api_name=False, queue=False,
                     show_progress="hidden")

        # The question shows at once; the answer waits for the model's queue slot. The textbox is
        # locked meanwhile so that one session never streams two answers into the same chat; Stop
        # sets the session's stop flag, which ends the rerank or the generation within a step.
        pending = gr.State(None)

        def submit_turn(message, messages, request):
            chatbot_now, turn_now = app.add_user_turn(message, messages)
            if turn_now:
                app.new_stop_flag(request.session_hash)
            return chatbot_now, turn_now, gr.update(value=None, interactive=False), gr.update(visible=bool(turn_now))

        # The session's turns as plain dicts (question, answer text, sources as data), for the export.
        turns = gr.State([])

        def answer_turn(turn_now, messages, plain, turns_, top_k_, rerank_, rerank_k_, n_sources_, min_relevance_,
                        fixed_threshold_, request):
            view = app.for_request(request)
            chatbot_now, plain_now, data = messages, plain_history(plain), []
            for chatbot_now, plain_now, data in view.answer_turn_data(
                    turn_now, messages, plain, top_k_, rerank_, rerank_k_, n_sources_, min_relevance_,
                    fixed_threshold_, stop=app.stop_flag(request.session_hash)):
                yield chatbot_now, plain_now, gr.skip()
            if turn_now:
                from .export import export_turn

                grew = len(plain_now) > len(plain_history(plain))
                answered = plain_now[-1]["content"] if grew else ""
                turns_ = [*(turns_ or []), export_turn(turn_now["text"], answered, data, turn_now.get("image"))]
            yield chatbot_now, plain_now, turns_

        def export_download(turns_, request):
            """The download button holds the session's conversation as Markdown (rewritten per turn)."""
            if not turns_:
                return gr.update(value=None, interactive=False)
            path = app.for_request(request).export_chat(turns_, request.session_hash)
            return gr.update(value=path, interactive=True)

        def new_chat_export(request):
            from .export import remove_export

            remove_export(export_folder(), request.session_hash)
            return [], gr.update(value=None, interactive=False)

        def stop_turn(request):
            app.stop(request.session_hash)

        for function in (submit_turn, answer_turn, stop_turn, refresh, run_reindex, run_triage, run_ingest,
                         run_delete, ask_delete, watch_tick, watch_click, export_download,
                         new_chat_export):  # Gradio injects the request by this type
            function.__annotations__ = {"request": gr.Request}

        def ask(submitted):
            submitted.then(answer_turn, inputs=[pending, chatbot, history, turns, *settings],
                           outputs=[chatbot, history, turns], api_name=False, show_progress="minimal",
                           **model_events
                           ).then(lambda: (gr.update(interactive=True), gr.update(visible=False)),
                                  outputs=[textbox, stop], api_name=False, queue=False
                                  ).then(export_download, inputs=turns, outputs=download, api_name=False,
                                         queue=False, show_progress="hidden")

        ask(textbox.submit(submit_turn, inputs=[textbox, chatbot], outputs=[chatbot, pending, textbox, stop],
                           api_name=False, queue=False))
        if demo_mode:
            def attach_samples(request):
                return app.users.attach_samples(request), gr.update(visible=True)

            attach_samples.__annotations__ = {"request": gr.Request}
            try_samples.click(attach_samples, outputs=[samples_note, examples], api_name="try_samples",
                              show_progress="minimal", **library_events
                              ).then(refresh, inputs=chosen, outputs=listing, api_name=False, queue=False,
                                     show_progress="hidden")
            for button, question in zip(example_buttons, SAMPLE_QUESTIONS):
                ask(button.click(lambda q=question: {"text": q, "files": []}, outputs=textbox, api_name=False,
                                 queue=False
                                 ).then(submit_turn, inputs=[textbox, chatbot],
                                        outputs=[chatbot, pending, textbox, stop], api_name=False, queue=False))

        stop.click(stop_turn, api_name=False, queue=False, show_progress="hidden")
        new_chat.click(lambda: ([], [], None), outputs=[chatbot, history, textbox], api_name=False, queue=False)
        new_chat.click(new_chat_export, outputs=[turns, download], api_name=False, queue=False, show_progress="hidden")

        def end_session(request):
            """A closed or reloaded tab: the session's export file goes, and in the demo its library."""
            from .export import remove_export

            remove_export(export_folder(), request.session_hash)
            app._stop_flags.pop(request.session_hash, None)  # the tab's answer stop flag
            if demo_mode:
                app.users.end_session(request)

        end_session.__annotations__ = {"request": gr.Request}
        demo.unload(end_session)
        # Static first values above; every page load refreshes them (without progress overlays).
        demo.load(refresh, outputs=listing, api_name=False, queue=False, show_progress="hidden")

        # API endpoints (gradio_client) for the same operations as the panels. Files come in as
        # uploads (the client sends them), never as server paths.
        with gr.Row(visible=False):
            api_files = gr.File(file_count="multiple", visible=False)
            api_report = gr.JSON(visible=False)
            api_add_button = gr.Button(visible=False)

        def api_add(paths, request=None) -> Iterator[list[dict]]:
            """Per-file rows after every step (a generator, so that a client's cancel stops the indexing)."""
            paths = [p if isinstance(p, str) else getattr(p, "name", str(p)) for p in paths or []]
            # A client's cancel closes us: close the indexing now.
            with closing(app.for_request(request).ingest(paths)) as results:
                for result in results:
                    yield [{"file": s.name, "state": s.state, "items": s.items, "done": s.done, "total": s.total,
                            "message": s.message} for s in result.files]

        def api_documents(request: gr.Request = None) -> list[dict]:
            """Searchable documents, then those waiting ("waiting" says why; absent for the others), then
            those of the shared library ("read_only": true)."""
            return [{"doc_id": d.doc_id, "file": d.source, "type": d.file_type, "items": d.items}
                    | ({"waiting": d.waiting} if getattr(d, "waiting", "") else {})
                    | ({"read_only": True} if getattr(d, "read_only", False) else {})
                    for d in app.for_request(request).listed()]

        def api_chat(message, messages, top_k_, rerank_, rerank_k_, n_sources_, min_relevance_, fixed_threshold_,
                     request=None):
            yield from app.for_request(request).api_chat(message, messages, top_k_, rerank_, rerank_k_, n_sources_,
                                                         min_relevance_, fixed_threshold_)

        def api_delete(doc_id: str, request: gr.Request = None) -> str:
            return app.for_request(request).delete(doc_id)

        for function in (api_add, api_chat):
            function.__annotations__ = {"request": gr.Request}
        api_documents.__annotations__ = {"request": gr.Request, "return": list[dict]}
        api_delete.__annotations__ = {"doc_id": str, "request": gr.Request, "return": str}

        api_chat_button = gr.Button(visible=False)
        api_sources = gr.JSON(visible=False)
        # The API's conversation is exactly the chat messages passed in (never the session's history).
        api_chat_button.click(api_chat, inputs=[textbox, chatbot, *settings],
                              outputs=[chatbot, api_sources, textbox], api_name="chat", **model_events)
        api_add_button.click(api_add, inputs=api_files, outputs=api_report, api_name="add_files", **library_events)

        # /export: a conversation as Markdown. `turns` is a list of {"question", "answer", "sources"}
        # (sources exactly as /chat returned them); the answer is a .md file.
        api_turns = gr.JSON(visible=False)
        api_export_file = gr.File(visible=False)
        api_export_button = gr.Button(visible=False)

        def api_export(turns_, request):
            from .export import export_turn

            if not isinstance(turns_, list) or not all(isinstance(t, dict) and isinstance(t.get("sources") or [], list)
                                                       for t in turns_):
                raise gr.Error('Pass a list of turns: {"question": ..., "answer": ..., "sources": [as /chat '
                               'returned them]}.')
            kept = [export_turn(str(t.get("question") or ""), str(t.get("answer") or ""),
                                [s for s in t.get("sources") or () if isinstance(s, dict)]) for t in turns_]
            return app.for_request(request).export_chat(kept, "api-" + (request.session_hash or "client"))

        api_export.__annotations__ = {"request": gr.Request}
        api_export_button.click(api_export, inputs=api_turns, outputs=api_export_file, api_name="export", queue=False)
        gr.api(api_documents, api_name="documents", queue=False)
        gr.api(api_delete, api_name="delete", **library_events)
    demo.queue(default_concurrency_limit=config.concurrency, max_size=config.max_queue)
    return demo


def launch_options(config: AppConfig, serves: Any = None, users: Any = None) -> dict[str, Any]:
    """Keyword arguments of `Blocks.launch` for this configuration. `serves(path)`: whether a file
    under the data folder may be served (`Library.serves`; ui_files.FileGuard answers 404 otherwise).
    `users` (ui_users.Users): files are served per login or demo session (`users.serves`)."""
    middleware = [login_guard()] if config.auth else []
    extra_paths = []
    if users is not None:  # every library folder is under the data folder, or the shared library's
        from .ui_files import file_guard

        extra_paths = [config.data_dir, *([config.shared_library] if config.shared_library else [])]
        middleware.append(file_guard(extra_paths, users.serves, by_login=True))
        if config.demo:
            from .ui_files import demo_cookie

            middleware.append(demo_cookie())
    elif serves is not None:
        from .ui_files import file_guard

        middleware.append(file_guard([config.data_dir], serves))
    return dict(
        server_name=config.host,
        server_port=config.port,
        share=config.share,
        auth=config.auth or None,
        auth_message="Sign in to FreeRet RAG" if config.auth else None,
        # A demo tab's uploads stop at its size cap already in Gradio (before they reach its disk).
        max_file_size=min(config.max_upload_bytes, int(config.demo_max_mb * 1024**2))
        if config.demo and config.demo_max_mb else config.max_upload_bytes,
        allowed_paths=[str(config.asset_dir), str(config.upload_dir), *map(str, config.watch), *map(str, extra_paths)],
        root_path=config.root_path,
        theme=theme(),
        css=CSS + ui_viewer.VIEWER_CSS,
        head=ui_viewer.VIEWER_HEAD,  # clicks on sources open them in the viewer
        show_error=True,
        ssr_mode=False,
        mcp_server=False,
        pwa=False,
        footer_links=["api"],
        # Failed sign-ins slowed, then refused per client; the login page without the API description;
        # from the data folder, only the files of documents in the library.
        app_kwargs={"middleware": middleware} if middleware else None,
    )


def login_guard():
    """The login's guard (ui_guard.LoginGuard) as a Starlette middleware entry."""
    from starlette.middleware import Middleware

    from .ui_guard import LoginGuard

    return Middleware(LoginGuard)


STARTUP_PATIENCE_S = 120.0  # how long the start-up probe keeps asking a busy machine


def patient_url_ok(url: str, patience: float = STARTUP_PATIENCE_S) -> bool:
    """Gradio's start-up probe (`gradio.networking.url_ok`), patient: Gradio's gives up at the first
    request slower than 3 s and then refuses to start ("When localhost is not accessible, a
    shareable link must be created"), which happens on a busy machine although the server is up.
    This one asks again, with a longer timeout each time, until `patience` seconds have passed."""
    import httpx

    deadline, timeout = time.monotonic() + patience, 3.0
    while True:
        try:
            response = httpx.head(url, timeout=timeout, verify=False)  # noqa: S501 - our own local server
            if response.status_code in (200, 401, 301, 302, 303, 307, 308):  # as Gradio's: up, maybe behind a login
                return True
        except (httpx.TransportError, ConnectionError):  # refused, reset or too slow: ask again
            pass
        if time.monotonic() >= deadline:
            return False
        timeout = min(2 * timeout, 30.0)
        time.sleep(0.5)


@contextmanager
def patient_startup_probe() -> Iterator[None]:
    """Gradio's start-up probe replaced by `patient_url_ok` while the app launches."""
    from gradio import networking

    hasty = networking.url_ok
    networking.url_ok = patient_url_ok
    try:
        yield
    finally:
        networking.url_ok = hasty


def launch(app: FreeRetApp, **overrides: Any):
    demo = build_blocks(app)
    with patient_startup_probe():  # the app starts whenever its port is free, also on a busy machine
        return demo.launch(**{**launch_options(app.config, serves=app.library.serves, users=app.users), **overrides})
