"""The web app's HTML and Markdown, as pure functions of plain values (no Gradio, no library).

Everything shown in the app is built here: the header badge, the model panel, the document table,
the upload progress list, the re-index warning, and the chat messages with their source cards.
Text from files (names, excerpts, queries, answers) is always HTML-escaped. Files are linked
through Gradio's file route (`file_url`); which files may be served is decided at launch
(`ui.launch_options`, allowed_paths).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .chat import EMPTY_ANSWER, ChatEvent
from .items import Hit, format_timestamp, plural
from .ui_viewer import escape, file_url, inline_pictures, view_href

KIND_NAMES = {"pdf": "PDF", "image": "Image", "video": "Video", "text": "Text"}
ITEM_KIND_NAMES = {"pdf_page": "page", "image": "image", "video_segment": "video", "text": "text"}
CAPABILITY_NAMES = {"text": "text", "image": "images", "video": "video"}
EXCERPT_CHARS = 260  # text shown on a source card without a picture

CSS = """
.fr-header {display:flex; align-items:center; justify-content:space-between; gap:1rem; padding:.25rem .25rem .75rem;}
.fr-header h1 {margin:0; font-size:1.6rem; font-weight:700; letter-spacing:-.01em;}
.fr-header p {margin:.15rem 0 0; color:var(--body-text-color-subdued); font-size:.95rem;}
.fr-model {font-size:.85rem; padding:.35rem .7rem; border-radius:999px; background:var(--color-accent-soft);
  color:var(--body-text-color); white-space:nowrap; border:1px solid var(--border-color-accent-subdued);}
.fr-panel-note {color:var(--body-text-color-subdued); font-size:.85rem; margin:.2rem 0 .4rem;}
.fr-watch {font-size:.85rem; margin:.3rem 0;}
.fr-watch-log {font-size:.75rem; white-space:pre-wrap; margin:.2rem 0; color:var(--body-text-color-subdued);}
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
.fr-flag {font-size:.85rem; margin:0 0 .35rem; padding:.25rem .5rem; border-radius:6px;
  background:var(--background-fill-secondary); color:var(--body-text-color);}
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
.fr-collapse:not(:has(.fr-warning)):not(:has(.fr-progress)) {display:none !important;}  /* no comma: Gradio scopes selector lists */
#fr-documents th .header, #fr-documents .body-cell:not([data-col="0"]):not([data-col="4"]) span {white-space:nowrap !important;
  overflow:visible !important; text-overflow:clip !important;}
#fr-documents th, #fr-documents .body-cell {font-size:.8rem !important;}
#fr-documents th .cell-wrap, #fr-documents .body-cell .cell-wrap {padding-left:6px !important; padding-right:6px !important;}
#fr-documents .cell-menu-button {display:none !important;}
.fr-empty {color:var(--body-text-color-subdued); font-size:.9rem; padding:.6rem 0;}
.fr-card a.fr-view {display:block; font-size:.72rem; padding:0 .5rem;}
"""



def human_size(size: float) -> str:
    """Bytes for people: `512 -> "512 B"`, `10240 -> "10.0 KB"` (1 KB = 1024 B)."""
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


def score_text(value: float | None, digits: int = 3) -> str:
    """A score with `digits` decimals, or an en dash when there is none."""
    return "–" if value is None else f"{value:.{digits}f}"


# -- model ------------------------------------------------------------------------------------------

def capability_list(capabilities: Iterable[str]) -> str:
    """"text, images, video" in that order, for the capabilities present."""
    present = set(capabilities)
    return ", ".join(CAPABILITY_NAMES[c] for c in ("text", "image", "video") if c in present)


def model_badge(model_id: str, capabilities: Iterable[str]) -> str:
    """The header pill: model name (folder name for a local path) and what it reads."""
    name = Path(model_id).name if Path(model_id).exists() else model_id
    return (f'<span class="fr-model" title="{escape(model_id)}">{escape(name)} · reads '
            f'{capability_list(capabilities)}</span>')


def header(title: str, badge: str, shared_server: bool = False) -> str:
    """The page's title line. `shared_server`: the app serves many users (logins, a public demo), so
    the model runs on that server, not on the visitor's machine."""
    where = "on this server" if shared_server else "on this machine"
    return (f'<div class="fr-header"><div><h1>{escape(title)}</h1>'
            '<p>Ask questions about your PDFs, images and videos. One multimodal model finds, ranks and '
            f'cites the sources, {where}.</p></div>'
            f'{badge}</div>')


def model_info(model_id: str, capabilities: Iterable[str], runs_on: str, prompt_version: str) -> str:
    """The Settings panel's Markdown: model, device, what it can and cannot read, index version."""
    caps = set(capabilities)
    missing = [CAPABILITY_NAMES[c] for c in ("image", "video") if c not in caps]
    lines = [
        f"**Model:** `{model_id}`",
        f"**Runs on:** {runs_on}",
        "**Reads:** " + capability_list(caps) + (" · **cannot read:** " + ", ".join(missing) if missing else ""),
        f"**Index:** prompt version `{prompt_version}`",
    ]
    if "image" not in caps:
        lines.append("This model reads text only: PDFs are searched by their text; images and videos "
                     "cannot be indexed. Start the app with a vision-language model to use them.")
    return "\n\n".join(lines)


# -- library ----------------------------------------------------------------------------------------

def kind_name(file_type: str) -> str:
    return KIND_NAMES.get(file_type, file_type)


def listed_name(doc: Any) -> str:
    """A document's name in the table and the delete list; a waiting one (Library.waiting) says so."""
    waiting = getattr(doc, "waiting", "")
    return f"{doc.source} ({waiting})" if waiting else doc.source


def document_rows(docs: Sequence[Any]) -> list[list[Any]]:
    """Rows of the document table: file, type, items, added (local time), a note (scanned pages)."""
    return [[listed_name(doc), kind_name(doc.file_type), doc.items,
             time.strftime("%Y-%m-%d %H:%M", time.localtime(doc.added_at)), getattr(doc, "text_note", "")]
            for doc in docs]


def document_choices(docs: Sequence[Any]) -> list[tuple[str, str]]:
    """(label, doc_id) pairs of the delete dropdown."""
    return [(f"{listed_name(doc)} ({kind_name(doc.file_type)}, {doc.items} items)", doc.doc_id) for doc in docs]


def library_summary(docs: Sequence[Any], waiting: Sequence[Any] = (), shared: int = 0) -> str:
    """The line above the table: searchable documents, those listed that wait (not searchable), and
    how many read-only shared documents (a shared library, the demo's samples) are searched too."""
    note = (f'<div class="fr-warning">{plural(len(waiting), "more document")} listed below '
            f'{"is" if len(waiting) == 1 else "are"} not searchable with this model: '
            f'{escape("; ".join(sorted({doc.waiting for doc in waiting})))}.</div>') if waiting else ""
    if not docs:
        if shared and not note:
            return (f'<div class="fr-panel-note">No documents of yours yet: the {plural(shared, "shared document")} '
                    f'below {"is" if shared == 1 else "are"} searched (read-only). Add PDFs, images or videos '
                    f'above.</div>')
        return note or '<div class="fr-empty">No documents yet. Add PDFs, images or videos above.</div>'
    items = sum(doc.items for doc in docs)
    also = f" · and {plural(shared, 'shared document')} (read-only)" if shared else ""
    return (f'<div class="fr-panel-note">{plural(len(docs), "document")} · {plural(items, "searchable item")}'
            f'{also}</div>{note}')


def watch_status(watchers: Sequence[Any], lines: int = 6) -> str:
    """The watched folders, each with its state and the last `lines` things it did."""
    if not watchers:
        return '<div class="fr-panel-note">No folder is watched.</div>'
    parts = []
    for watcher in watchers:
        recent = escape("\n".join(watcher.lines()[-lines:]))
        parts.append(f'<div class="fr-watch"><b>{escape(watcher.folder)}</b> · {escape(watcher.state)}'
                     f'<pre class="fr-watch-log">{recent}</pre></div>')
    return "".join(parts)


def problem_html(message: str) -> str:
    """A problem with the library itself (not with one file), shown above the document table."""
    return f'<div class="fr-warning">{escape(message)}</div>'


def reindex_notice(others: Iterable[Any], model_id: str, warning: str = "") -> str:
    """The warning shown while documents of other models' indexes wait for a re-index; `warning`
    says what the re-index cannot move (ReindexPlan.warning), before it starts."""
    listed = ", ".join(sorted({f"{index.model_id} ({index.count} items)" for index in others}))
    extra = f" {escape(warning)}" if warning else ""
    return (f'<div class="fr-warning"><b>This library was indexed with another model</b> ({escape(listed)}). '
            f'Vectors of different models cannot be mixed: re-index it with {escape(model_id)} '
            f'to search those documents (the files need not be uploaded again).{extra}</div>')


def delete_preview(doc: Any, kept_copy: bool) -> str:
    """The confirmation shown before a document is deleted: what goes, and that it cannot be undone."""
    kept = ", and the copy of the file kept for links and playback" if kept_copy else ""
    return (f'<div class="fr-warning fr-confirm">Delete <b>{escape(doc.source)}</b> '
            f'({escape(kind_name(doc.file_type))})? This removes its {plural(doc.items, "searchable item")}, '
            f'their page images and thumbnails{kept} from this library. It cannot be undone; the file on '
            'your own disk is not touched.</div>')


def reindex_waiting(others: Iterable[Any], model_id: str, documents: int) -> str:
    """The chat's answer while every document waits for a re-index with the loaded model."""
    others = list(others)
    items = sum(index.count for index in others)
    models = ", ".join(sorted({index.model_id for index in others}))
    return (f'<span class="fr-nothing fr-waiting">Your library holds {documents} document(s) '
            f'({plural(items, "item")}) indexed with another model ({escape(models)}); they wait for a re-index with {escape(model_id)} before they '
            'can be searched. Press <b>Re-index with this model</b> in the Library panel (the files need '
            'not be uploaded again), then ask again.</span>')


@dataclass
class FileStatus:
    """One file of an upload or re-index, as the progress list shows it."""

    name: str
    state: str = "waiting"  # waiting | indexing | done | skipped | failed | cancelled
    done: int = 0
    total: int = 0
    items: int = 0
    message: str = ""


def render_progress(files: Sequence[FileStatus]) -> str:
    """One row per file: name, state text and a bar (done/total while indexing)."""
    if not files:
        return ""
    rows = []
    for status in files:
        if status.state == "indexing":
            fraction = status.done / status.total if status.total else 0.05
            state = f"{status.done}/{status.total}" if status.total else "reading ..."
        elif status.state == "done":
            fraction, state = 1.0, f"done · {plural(status.items, 'item')}"
            if status.message:
                state += f" · {status.message}"
        elif status.state in ("failed", "skipped", "cancelled"):
            fraction, state = 0.0, status.message or status.state
        else:
            fraction, state = 0.0, "waiting"
        failed = " fr-failed" if status.state in ("failed", "skipped") else ""
        rows.append(
            f'<div class="fr-file" data-state="{escape(status.state)}">'
            f'<span class="fr-name" title="{escape(status.name)}">'
            f'{escape(status.name)}</span><span class="fr-state{failed}">{escape(state)}</span>'
            f'<div class="fr-bar"><div style="width:{fraction * 100:.0f}%"></div></div></div>')
    return '<div class="fr-progress">' + "".join(rows) + "</div>"


# -- chat -------------------------------------------------------------------------------------------

def _inert(text: str) -> str:
    """Model text that Markdown shows as written: HTML escaped, brackets as entities (no link, image
    or reference definition can form), web addresses not auto-linked, no heading marks."""
    text = escape(text).replace("[", "&#91;").replace("]", "&#93;")
    text = text.replace("://", ":&#47;&#47;").replace("www.", "www&#46;")
    return re.sub(r"^( {0,3})#", r"\1&#35;", text, flags=re.M)


def mark_citations(text: str, n_sources: int, cited: Iterable[int] | None = None,
                   pictures: dict[int, str] | None = None) -> str:
    """Model text made inert (`_inert`) with every real citation (`answer.citation_spans`: a [n]
    naming a shown source, not an invented reference) highlighted; with `cited`, only citations
    of those numbers (the whole answer's, when `text` is a part of it). `pictures` (number -> the
    app's inline picture, ui_viewer.inline_pictures): each is placed after the first citation of
    its number and taken out of the dict."""
    from .answer import citation_spans

    allowed = None if cited is None else set(cited)
    out, last = [], 0
    for start, end, numbers in citation_spans(text, n_sources):
        if allowed is not None and not allowed.issuperset(numbers):
            continue
        out += [_inert(text[last:start]), f'<span class="fr-cite">{_inert(text[start:end])}</span>']
        out += [pictures.pop(number) for number in numbers if pictures and number in pictures]
        last = end
    return "".join(out) + _inert(text[last:])


FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})", re.M)
CODE_SPAN = re.compile(r"`[^`\n]+`")


def answer_markdown(text: str, n_sources: int, cursor: str = "", pictures: Mapping[int, str] | None = None) -> str:
    """The model's answer as the Markdown of its own chat message: code kept as code (an unclosed
    fence is closed), everything else inert with its citations marked (`mark_citations`); `cursor`
    ends the text. Of the app's own HTML, only the citation marks and `pictures` (after each
    source's first citation) go into this message; ui.history_from_messages takes them out."""
    pictures = dict(pictures or {})
    from .answer import parse_citations

    cited = parse_citations(text, n_sources)
    parts, position, fenced = [], 0, None
    for line in re.finditer(r"[^\n]*(?:\n|$)", text):
        if not line.group(0):
            break
        fence = FENCE.match(line.group(0))
        if fenced is None and fence:
            parts.append(("text", text[position:line.start()]))
            position, fenced = line.start(), fence.group(1)[0] * len(fence.group(1))
        elif fenced is not None and fence and fence.group(1).startswith(fenced) and \
                not line.group(0).strip().strip(fenced[0]):
            parts.append(("code", text[position:line.end()]))
            position, fenced = line.end(), None
    if fenced is not None:  # an unclosed fence closes where the answer ends
        parts.append(("code", text[position:].rstrip("\n") + cursor + "\n" + fenced))
        cursor = ""
    else:
        parts.append(("text", text[position:]))
    out = []
    for kind, chunk in parts:
        if kind == "code":
            out.append(chunk)
            continue
        last = 0
        for span in CODE_SPAN.finditer(chunk):  # inline code stays as written (Markdown escapes it)
            out += [mark_citations(chunk[last:span.start()], n_sources, cited, pictures), span.group(0)]
            last = span.end()
        out.append(mark_citations(chunk[last:], n_sources, cited, pictures))
    return "".join(out) + cursor


def _picture(item: Any) -> tuple[str | None, str | None]:
    """(thumbnail path, full-size path) of an item, when it has pictures stored as files."""
    stored = str(item.images[0]) if item.images and not hasattr(item.images[0], "size") else None
    preview = item.thumbnail or stored
    return preview, stored or preview


WORDS_SHOWN = 12


def source_card(number: int, hit: Hit, original: str | None = None, cited: bool = False, query: str = "") -> str:
    """One source under an answer: picture, video player or excerpt; name, place, kind and scores.

    `original` is the path of the indexed file itself (linked, and played for video segments from
    the segment's start); None when it is not available. The picture and "Open in the viewer" open
    the source in the citation viewer (ui_viewer), with `query`'s words highlighted.
    """

    item = hit.item
    view = escape(view_href(number, item, query))
    preview, full = _picture(item)
    if item.kind == "video_segment" and original:
        start = item.t_start or 0.0
        fragment = f"#t={start:g}" + (f",{item.t_end:g}" if item.t_end is not None else "")
        poster = f' poster="{escape(file_url(preview))}"' if preview else ""
        media = (f'<video class="fr-video" controls preload="metadata"{poster} '
                 f'src="{escape(file_url(original) + fragment)}"></video>')
    elif preview:
        media = (f'<a class="fr-media" href="{view}" title="Open in the viewer">'
                 f'<img class="fr-thumb" alt="{escape(item.label)}" src="{escape(file_url(preview))}"></a>')
    else:
        media = f'<div class="fr-excerpt">{escape(item.text[:EXCERPT_CHARS])}</div>'
    where = item.location
    if item.kind == "video_segment" and item.t_start is not None:
        where = f"{format_timestamp(item.t_start)}–{format_timestamp(item.t_end or item.t_start)}"
    name = escape(item.source or "source")
    if original:
        anchor = f"#page={item.page}" if item.kind == "pdf_page" and item.page else ""
        name = f'<a href="{escape(file_url(original) + anchor)}" target="_blank" rel="noopener">{name}</a>'
    scores = [("rerank p(match)", hit.rerank_score), ("dense cosine", hit.dense_score),
              ("lexical BM25", hit.lexical_score), ("fused (RRF)", hit.fused_score),
              ("final (blend)", hit.final_score)]
    rows = "".join(f"<tr><td>{label}</td><td>{score_text(value)}</td></tr>" for label, value in scores
                   if value is not None)
    if item.words:  # the model's own words for this item (its keyword channel)
        rows += f'<tr><td>model\'s words</td><td class="fr-words">{escape(" ".join(item.words[:WORDS_SHOWN]))}</td></tr>'

    place = f" <span class=fr-where>· {escape(where)}</span>" if where else ""
    return (f'<figure class="fr-card{" fr-cited" if cited else ""}" data-source="{number}">{media}'
            f'<figcaption><span class="fr-num">{number}</span>{name}{place}'
            f' <span class="fr-where">· {escape(ITEM_KIND_NAMES.get(item.kind, item.kind))}</span></figcaption>'
            f'<a class="fr-view" href="{view}" title="Open beside the chat">Open in the viewer</a>'
            f'<details><summary>Scores</summary><table>{rows}</table></details></figure>')


NOT_GROUNDED = ("Not grounded in your files: this answer cites none of the sources below, so it may "
                "come from the model's own memory.")
STOPPED = "Stopped: the answer above is unfinished."
STOPPED_EARLY = "Stopped before the answer was written."


def render_sources(hits: Sequence[Hit], originals: Mapping[str, str] | None = None, cited: Sequence[int] = (),
                   query: str = "", note: str = "", flags: Sequence[str] = ()) -> str:
    """The numbered source cards under an answer ("" without hits), in one line of HTML.

    `originals` maps doc_id to the path of the indexed file (for links and video playback);
    `flags` are remarks about the answer above ("stopped", "not grounded"), shown first. The
    block is a chat message of its own, never joined to model text, and holds no line break, so
    Markdown reads it as one HTML block whatever the file texts in it contain.
    """
    if not hits:
        return ""
    originals = originals or {}
    cards = "".join(source_card(number, hit, originals.get(hit.item.doc_id), number in cited, query)
                    for number, hit in enumerate(hits, start=1))
    head = ("Sources" + (f" · searched for “{escape(query)}”" if query else "")
            + (f" · {escape(note)}" if note else ""))
    remarks = "".join(f'<div class="fr-flag">{escape(flag)}</div>' for flag in flags)
    block = (f'<div class="fr-sources">{remarks}<div class="fr-sources-head">{head}</div>'
             f'<div class="fr-grid">{cards}</div></div>')
    return re.sub(r"\s*\n\s*", " ", block)


def sources_data(hits: Sequence[Hit], originals: Mapping[str, str] | None = None,
                 cited: Sequence[int] = ()) -> list[dict[str, Any]]:
    """The sources of an answer as data (the /chat API): what each card shows, as plain values.
    URLs are relative to the app's address, like the cards' links."""
    originals = originals or {}
    rows = []
    for number, hit in enumerate(hits, start=1):
        item = hit.item
        preview, full = _picture(item)
        original = originals.get(item.doc_id)
        rows.append({
            "number": number, "cited": number in cited, "file": item.source, "kind": item.kind,
            "page": item.page, "t_start": item.t_start, "t_end": item.t_end, "chunk": item.chunk, "doc_id": item.doc_id,
            "item_id": item.item_id, "label": item.label,
            "scores": {"rerank": hit.rerank_score, "dense": hit.dense_score, "lexical": hit.lexical_score,
                       "fused": hit.fused_score, "final": hit.final_score},
            "asset_url": file_url(full) if full else None,
            "thumbnail_url": file_url(preview) if preview else None,
            "file_url": file_url(original) if original else None,
        })
    return rows


APP_HTML = re.compile(r'^<(?:div|span) class="fr-')


def is_app_html(content: str) -> bool:
    """Whether a chat message is one of the app's own (status, sources, notices), not model text
    (model text is escaped, so it never starts with a tag)."""
    return bool(APP_HTML.match(content))


def status_html(text: str) -> str:
    return f'<span class="fr-status">{escape(text)}</span>'


def chat_messages(event: ChatEvent, originals: Mapping[str, str] | None = None, note: str = "") -> list[str] | None:
    """The assistant messages for one chat event (None for events that change nothing on screen).

    An answer is two messages: the model's text (`answer_markdown`) and, under it, the app's own
    block (`render_sources`: remarks, the query searched, the cards). `note` goes into the sources
    line of a finished answer (timing).
    """

    n = len(event.sources)
    pictures = inline_pictures(event.sources, event.query)  # after each source's first [n]
    if event.kind == "status":
        return [status_html(event.text) + render_sources(event.sources, originals, (), event.query)]
    if event.kind == "token":
        return [answer_markdown(event.text, n, "▍", pictures), render_sources(event.sources, originals, (), event.query)]
    if event.kind in ("answer", "stopped") and event.sources and event.text.strip():
        from .answer import parse_citations

        cited = event.answer.cited if event.answer else parse_citations(event.text, n)
        flags = ([STOPPED] if event.kind == "stopped" else []) + ([] if cited else [NOT_GROUNDED])
        return [answer_markdown(event.text.strip(), n, pictures=pictures),
                render_sources(event.sources, originals, cited, event.query, note, flags)]
    if event.kind == "answer":
        return [answer_markdown(EMPTY_ANSWER, 0), render_sources(event.sources, originals, (), event.query, note)]
    if event.kind == "stopped":
        return [f'<span class="fr-nothing fr-stopped">{escape(STOPPED_EARLY)}</span>']
    if event.kind == "nothing":
        return [f'<span class="fr-nothing">{escape(event.text)}</span>']
    if event.kind == "error":
        return [f'<span class="fr-nothing"><b>Cannot answer:</b> {escape(event.text)}</span>']
    return None


def self_check_markdown(result: Any) -> str:
    """The library's self-check (selfcheck.SelfCheck or None) as Markdown for the Settings panel."""
    if result is None:
        return ("**Self-check:** not run yet. After indexing, the model writes test queries for a sample of "
                "your files and the app measures which search channels, how much reranking and which "
                "relevance floor work for this model on this library.")
    return "**Self-check of this library**\n\n" + "\n".join(f"- {line}" for line in result.describe())


def demo_note(ttl_minutes: float, max_files: int, max_mb: float) -> str:
    """What a visitor of the public demo is told about their library (Markdown)."""
    limits = [f"at most {plural(max_files, 'file')}" if max_files else "",
              f"{max_mb:g} MB in all" if max_mb else ""]
    limits_text = " and ".join(part for part in limits if part)
    return (f"**Public demo.** Your files go into a temporary library of this browser tab only: nobody else sees "
            f"them, and they are removed when you close the tab or after {ttl_minutes:g} minutes without use"
            + (f" ({limits_text})." if limits_text else "."))
