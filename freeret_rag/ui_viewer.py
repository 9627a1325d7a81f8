"""The citation viewer: a source opened beside the chat, and the answer's inline pictures.

Source cards and the pictures shown after an answer's first citation of a source link to
`#fr-view?n=&doc=&item=&q=` (`view_href`). A small script given to `launch(head=VIEWER_HEAD)`
catches clicks on such links and writes the request into a hidden textbox (`#fr-view-request`),
whose `change` event calls `view_source` and opens the right sidebar:

- a PDF page at full size (highlight.page_picture) with boxes over the question's words
  (highlight.page_boxes), and a link to the original at that page;
- a video from the segment's start (`#t=start,end`), the segment marked on a time bar, "0:42–1:10";
- an image at full size;
- a text chunk in its neighbours' text, the question's words in <mark>.

The viewer only opens documents of the library it is given (the requesting user's, `for_request`).
Its markup never reaches the model: `strip_inline` takes the inline pictures out of a chat message.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

from .highlight import page_boxes, page_picture, question_words, text_window
from .items import Hit, Item, format_timestamp, plural

VIEW_PREFIX = "#fr-view?"
REQUEST_ID = "fr-view-request"

VIEWER_CSS = """
.fr-viewer {font-size:.85rem; display:flex; flex-direction:column; gap:.5rem;}
.fr-viewer-head {font-size:.95rem; font-weight:600; word-break:break-word;}
.fr-viewer-note {color:var(--body-text-color-subdued); font-size:.8rem;}
.fr-page {position:relative; line-height:0; border:1px solid var(--border-color-primary);}
.fr-page img {width:100%; height:auto; display:block; margin:0;}
.fr-hl {position:absolute; background:rgba(255,214,0,.42); outline:2px solid rgba(230,160,0,.9); border-radius:2px;
  pointer-events:none; mix-blend-mode:multiply;}
.fr-viewer video {width:100%; background:#000; border-radius:6px;}
.fr-timeline {position:relative; height:8px; border-radius:4px; background:var(--background-fill-secondary);}
.fr-timeline > div {position:absolute; top:0; bottom:0; border-radius:4px; background:var(--color-accent);}
.fr-viewer-image {width:100%; height:auto; border-radius:6px;}
.fr-viewer-text {white-space:pre-wrap; line-height:1.45; max-height:70vh; overflow:auto; padding:.5rem;
  border:1px solid var(--border-color-primary); border-radius:6px; color:var(--body-text-color-subdued);}
.fr-viewer-text .fr-chunk {color:var(--body-text-color); background:var(--color-accent-soft); border-radius:3px;}
.fr-viewer mark {background:#ffe066; color:#000; padding:0 1px; border-radius:2px;}
a.fr-inline {display:inline-block; vertical-align:middle; margin:0 .25rem; line-height:0;}
a.fr-inline img.fr-inline-thumb, .fr-chat a.fr-inline img.fr-inline-thumb {height:3.2rem !important; width:auto !important;
  max-width:6rem !important; margin:0 !important; border-radius:4px !important; border:1px solid var(--border-color-primary);
  display:inline-block !important; object-fit:cover;}
#fr-view-request {display:none !important;}
"""

# Clicks on viewer links (cards, inline pictures) go to the hidden request box, not to the URL.
VIEWER_HEAD = """<script>
document.addEventListener("click", function (event) {
  var link = event.target && event.target.closest ? event.target.closest("a[href*='#fr-view?']") : null;
  if (!link) return;
  event.preventDefault();
  event.stopPropagation();
  var box = document.querySelector("#fr-view-request textarea, #fr-view-request input");
  if (!box) return;
  var wanted = link.getAttribute("href").split("#fr-view?")[1];
  box.value = wanted + "&at=" + Date.now();  /* a new value each time: the same source opens again */
  box.dispatchEvent(new Event("input", {bubbles: true}));
}, true);
</script>"""


def file_url(path: str | Path) -> str:
    """URL of a local file, served by Gradio's file route (only under launch's allowed_paths)."""
    return "gradio_api/file=" + quote(str(Path(path).resolve()), safe="/")


def escape(text: Any) -> str:
    """`str(text)` safe inside HTML text and attribute values."""
    return html.escape(str(text), quote=True)


# -- links -------------------------------------------------------------------------------------------

def view_href(number: int, item: Item, query: str = "") -> str:
    """The link that opens `item` (source `number`) in the viewer, highlighting `query`'s words."""
    return VIEW_PREFIX + urlencode({"n": number, "doc": item.doc_id, "item": item.item_id, "q": query})


def parse_request(value: str | None) -> dict[str, str]:
    """The viewer request written by the page script (`n=&doc=&item=&q=`, maybe after '#fr-view?')."""
    value = (value or "").split(VIEW_PREFIX, 1)[-1].lstrip("?")
    return {key: values[0] for key, values in parse_qs(value, keep_blank_values=True).items()}


def _preview(item: Item) -> str | None:
    stored = str(item.images[0]) if item.images and isinstance(item.images[0], (str, Path)) else None
    return item.thumbnail or stored


def inline_picture(number: int, hit: Hit, query: str = "") -> str:
    """The small picture shown after an answer's first citation of source `number` ("" for a source
    without one, e.g. a text chunk): it opens the source in the viewer."""
    preview = _preview(hit.item)
    if not preview or hit.item.kind == "text":
        return ""
    return (f'<a class="fr-inline" href="{escape(view_href(number, hit.item, query))}" '
            f'title="Open source {number}: {escape(hit.item.label)}">'
            f'<img class="fr-inline-thumb" alt="source {number}" src="{escape(file_url(preview))}"></a>')


def inline_pictures(hits: Sequence[Hit], query: str = "") -> dict[int, str]:
    """number -> inline picture, for the sources that have one."""
    pictures = {number: inline_picture(number, hit, query) for number, hit in enumerate(hits, start=1)}
    return {number: picture for number, picture in pictures.items() if picture}


INLINE = re.compile(r'<a class="fr-inline" [^>]*>.*?</a>', re.DOTALL)


def strip_inline(content: str) -> str:
    """A chat message without its inline pictures (what the model may read again)."""
    return INLINE.sub("", content)


# -- the viewer --------------------------------------------------------------------------------------

def message_html(text: str) -> str:
    return f'<div class="fr-viewer"><div class="fr-viewer-note">{escape(text)}</div></div>'


def _original(doc: Any) -> Path | None:
    path = Path(getattr(doc, "path", "") or "")
    return path if str(path) and path.is_file() else None


def view_source(library: Any, wanted: str | Mapping[str, str] | None, assets: str | Path | None = None) -> str:
    """The viewer's HTML for a request (`parse_request`): only documents of `library` are shown.
    `assets`: where full-size page pictures go (default: the library's asset folder, per document)."""
    request = parse_request(wanted) if not isinstance(wanted, Mapping) else dict(wanted)
    doc_id, item_id = request.get("doc", ""), request.get("item", "")
    if not doc_id or not item_id:
        return message_html("Click a source card or a picture in an answer to open it here.")
    try:
        doc = library.document(doc_id)
        items = library.items(doc_id) if doc is not None else []
    except Exception as error:  # noqa: BLE001 - e.g. the Chroma server went away: say so in the viewer
        return message_html(f"Cannot open this source: {error}")
    item = next((it for it in items if it.item_id == item_id), None)
    if doc is None or item is None:
        return message_html("This source is no longer in your library.")
    words = question_words(request.get("q", ""))
    number = request.get("n", "")
    folder = Path(assets) if assets is not None else Path(library.assets)
    original = _original(doc)
    if item.kind == "pdf_page":
        body, where, note = _pdf_page(item, original, words, folder / doc.doc_id / "viewer")
    elif item.kind == "video_segment":
        body, where, note = _video(item, items, original)
    elif item.kind == "image":
        body, where, note = _image(item, original)
    else:
        body, where, note = _text(item, items, words)
    num = f'<span class="fr-num">{escape(number)}</span>' if number else ""
    link = ""
    if original is not None:
        anchor = f"#page={item.page}" if item.kind == "pdf_page" and item.page else ""
        link = (f'<a class="fr-viewer-original" href="{escape(file_url(original) + anchor)}" target="_blank" '
                f'rel="noopener">Open the original file</a>')
    return (f'<div class="fr-viewer" data-kind="{escape(item.kind)}" data-item="{escape(item.item_id)}">'
            f'<div class="fr-viewer-head">{num}{escape(doc.source)} · {escape(where)}</div>'
            f'<div class="fr-viewer-note">{note}</div>{body}{link}</div>')


def _words_note(words: Sequence[str], found: int, place: str, marked: Sequence[str] = ()) -> str:
    """What the highlights are: how many places, for which of the question's words."""
    if not words:
        return ""
    if not found:
        return f"None of the question's words ({escape(', '.join(words))}) are on this {place}."
    marked = [word for word in words if word in set(marked)] or list(words)
    missing = [word for word in words if word not in marked]
    return (f"{plural(found, 'place')} marked for: {escape(', '.join(marked))}"
            + (f" (not on this {place}: {escape(', '.join(missing))})." if missing else "."))


def _stored_page(item: Item, where: str) -> str:
    """The page as it was indexed (its stored picture, else its thumbnail), without highlights."""
    stored = str(item.images[0]) if item.images else item.thumbnail
    return f'<div class="fr-page"><img alt="{escape(where)}" src="{escape(file_url(stored))}"></div>' if stored else ""


def _pdf_page(item: Item, original: Path | None, words: Sequence[str], folder: Path) -> tuple[str, str, str]:
    where = f"page {item.page}"
    if original is None or not item.page:  # the original is gone: the page as it was indexed
        return _stored_page(item, where), where, "The original file is not kept: this is the page as it was indexed."
    try:
        picture = page_picture(original, item.page, folder)
        boxes = page_boxes(original, item.page, words)
    except Exception as error:  # noqa: BLE001 - a damaged or changed file: say so, show the stored page
        return _stored_page(item, where), where, escape(f"The page could not be rendered again ({error}).")
    marks = "".join(
        f'<span class="fr-hl" title="{escape(box.word)}" style="left:{box.x0 * 100:.3f}%;top:{box.y0 * 100:.3f}%;'
        f'width:{(box.x1 - box.x0) * 100:.3f}%;height:{(box.y1 - box.y0) * 100:.3f}%"></span>' for box in boxes)
    body = (f'<div class="fr-page"><img alt="{escape(where)}" src="{escape(file_url(picture))}">{marks}</div>')
    if not boxes and item.no_text_layer:  # OCR read it for search, but the file has no words to box
        return body, where, "This page is a scan without a text layer: its words cannot be marked."
    return body, where, _words_note(words, len(boxes), "page", [box.word for box in boxes])


def _video(item: Item, items: Sequence[Item], original: Path | None) -> tuple[str, str, str]:
    start = item.t_start or 0.0
    end = item.t_end if item.t_end is not None else start
    where = f"{format_timestamp(start)}–{format_timestamp(end)}"
    duration = max((it.t_end or it.t_start or 0.0 for it in items if it.kind == "video_segment"), default=0.0)
    bar = ""
    if duration > 0:
        bar = (f'<div class="fr-timeline" title="{escape(where)}"><div style="left:{start / duration * 100:.2f}%;'
               f'width:{max((end - start) / duration * 100, 0.5):.2f}%"></div></div>')
    if original is None:
        preview = _preview(item)
        body = f'<img class="fr-viewer-image" alt="{escape(where)}" src="{escape(file_url(preview))}">' if preview else ""
        return body + bar, where, "The original video is not kept: this is a frame of the segment."
    poster = f' poster="{escape(file_url(item.thumbnail))}"' if item.thumbnail else ""
    body = (f'<video controls preload="metadata"{poster} src="{escape(file_url(original))}#t={start:g},{end:g}">'
            f'</video>{bar}<div class="fr-viewer-caption">{escape(where)}</div>')
    return body, where, "Plays from the segment's start and pauses at its end."


def _image(item: Item, original: Path | None) -> tuple[str, str, str]:
    full = original or (Path(str(item.images[0])) if item.images else None)
    source = str(full) if full else _preview(item)
    body = f'<img class="fr-viewer-image" alt="{escape(item.source)}" src="{escape(file_url(source))}">' if source else ""
    return body, "image", ""


def _text(item: Item, items: Sequence[Item], words: Sequence[str]) -> tuple[str, str, str]:
    chunks = sorted((it for it in items if it.kind == "text"), key=lambda it: (it.chunk or 0))
    index = next((i for i, it in enumerate(chunks) if it.item_id == item.item_id), None)
    if index is None:
        window_html, marks = f'<span class="fr-chunk">{escape(item.text)}</span>', 0
    else:
        window = text_window([it.text for it in chunks], index, words)
        window_html = f'{window.before}<span class="fr-chunk">{window.chunk}</span>{window.after}'
        marks = window.marks
    return (f'<div class="fr-viewer-text">{window_html}</div>', item.location or "text",
            _words_note(words, marks, "part of the text"))


# -- Gradio wiring -----------------------------------------------------------------------------------

def viewer_panel():
    """The sidebar (closed until a source is opened), its HTML and the hidden request box."""
    import gradio as gr

    with gr.Sidebar(open=False, position="right", width="34vw", elem_id="fr-viewer-panel") as sidebar:
        shown = gr.HTML(message_html("Click a source card or a picture in an answer to open it here."),
                        elem_id="fr-viewer", padding=False)
    request_box = gr.Textbox(elem_id=REQUEST_ID, show_label=False, container=False, lines=1, max_lines=1,
                             visible="hidden")  # in the page (the script writes to it), never shown
    return sidebar, shown, request_box


def open_source(app: Any, wanted: str, request: Any = None) -> tuple[str, Any]:
    """The request box's handler: the source of the requesting user's library, and the sidebar opened."""
    import gradio as gr

    view = app.for_request(request)
    return view_source(owning_library(view, wanted), wanted), gr.Sidebar(open=True)


def owning_library(view: Any, wanted: str | Mapping[str, str] | None) -> Any:
    """Of the libraries this user searches (their own, then the read-only shared ones: `view.shared`),
    the one that holds the requested document; their own when none does (the viewer then says so)."""
    request = parse_request(wanted) if not isinstance(wanted, Mapping) else dict(wanted)
    doc_id = request.get("doc", "")
    for library in (getattr(view, "shared", None) or []) if doc_id else []:
        try:
            if view.library.document(doc_id) is None and library.document(doc_id) is not None:
                return library
        except Exception:  # noqa: BLE001 - view_source reports a library that cannot be read
            break
    return view.library


def wire(app: Any, request_box: Any, shown: Any, sidebar: Any) -> None:
    import gradio as gr

    def opened(wanted, request):
        return open_source(app, wanted, request)

    opened.__annotations__ = {"request": gr.Request}  # Gradio injects the request by this type
    request_box.change(opened, inputs=request_box, outputs=[shown, sidebar], api_name=False, queue=False,
                      show_progress="hidden")
