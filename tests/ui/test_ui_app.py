"""UI callbacks and the chat pipeline on the real engine (tiny Qwen2-VL) and a real Library.

No browser here: FreeRetApp's methods are what the Gradio events call. Browser and HTTP-level
tests are in test_ui_browser.py.
"""

from __future__ import annotations

import html
import inspect
import re
import threading
from pathlib import Path
from urllib.parse import unquote

import pytest

from freeret_rag.chat import NOTHING_IN_LIBRARY, NOTHING_RELEVANT, ChatSettings, for_spaces, respond, turn
from freeret_rag.ui import FileStatus, FreeRetApp, build_blocks, launch_options, render_progress

FAST = dict(top_k=5, rerank=True, rerank_k=3, n_sources=2, min_relevance=0.0)


def ingest(app: FreeRetApp, *paths):
    snapshots = []
    for result in app.ingest([str(p) for p in paths]):
        snapshots.append([(s.name, s.state, s.done, s.total, s.items, s.message) for s in result.files])
    return snapshots


def run_chat(app: FreeRetApp, text: str, chatbot=None, history=None, image=None, **settings):
    outputs = list(app.chat({"text": text, "files": [image] if image else []}, chatbot or [], history or [],
                            **{**FAST, **settings}))
    chatbot, history, _ = outputs[-1]
    return outputs, chatbot, history


def last_turn(chatbot) -> str:
    """The assistant messages after the last question, joined (an answer is its text, then its sources)."""
    last_user = max(i for i, m in enumerate(chatbot) if m["role"] == "user")
    return "\n".join(m["content"] for m in chatbot[last_user + 1:])


def served_paths(html: str) -> list[Path]:
    return [Path(unquote(url.split("#")[0])) for url in re.findall(r'(?:src|href|poster)="gradio_api/file=([^"]+)"', html)]


def test_ingest_reports_progress_per_file_and_lists_documents(make_app, media, tmp_path):
    app = make_app()
    junk = tmp_path / "notes.xyz"
    junk.write_bytes(b"\x00\x01binary junk" * 10)
    snapshots = ingest(app, media["pdf"], media["image"], media["video"], junk)
    final = {name: (state, items, message) for name, state, _, _, items, message in snapshots[-1]}
    assert final["garden-guide.pdf"] == ("done", 2, "")
    assert final["LadyBird.jpg"][:2] == ("done", 1)
    assert final["nature-scenes.mp4"][0] == "done" and final["nature-scenes.mp4"][1] >= 1
    assert final["notes.xyz"][0] == "skipped" and "unsupported" in final["notes.xyz"][2]
    # progress: the PDF was seen while indexing, before it was done; before any indexing the refused
    # file already had its reason and every other file was "waiting"
    assert [state for _, state, *_ in snapshots[0]] == ["waiting", "waiting", "waiting", "skipped"]
    assert any(snap[0][1] == "indexing" for snap in snapshots)
    html = render_progress([FileStatus("a.pdf", "indexing", done=1, total=4), FileStatus("b.png", "done", items=1)])
    assert "1/4" in html and "width:25%" in html and "done · 1 item" in html

    rows = app.document_rows()
    assert [(name, kind, items) for name, kind, items, *_ in rows] == [
        ("garden-guide.pdf", "PDF", 2), ("LadyBird.jpg", "Image", 1), ("nature-scenes.mp4", "Video", final["nature-scenes.mp4"][1])]
    assert "3 documents" in app.library_summary()
    # originals are kept in the data dir (so the UI can link PDFs and play videos)
    for doc in app.documents():
        assert Path(doc.path).is_file() and app.config.upload_dir in Path(doc.path).parents
    # the same bytes again: nothing re-indexed
    again = ingest(app, media["pdf"])[-1][0]
    assert again[1] == "done" and "already in the library" in again[5]
    assert len(app.documents()) == 3


def test_upload_size_limit_and_missing_file(make_app, media):
    app = make_app("--max-upload", "10kb")
    (name, state, _, _, _, message), = ingest(app, media["image"])[-1]
    assert state == "skipped" and "too large" in message and "10.0 KB" in message
    assert app.documents() == []
    (_, state, _, _, _, message), = ingest(app, media["image"].parent / "gone.jpg")[-1]
    assert (state, message) == ("skipped", "file not found")


def test_chat_streams_an_answer_with_sources_and_scores(make_app, media):
    app = make_app()
    ingest(app, media["pdf"], media["image"])
    outputs, chatbot, history = run_chat(app, "Which beetles eat aphids?")
    first = outputs[0][0]
    assert first[0] == {"role": "user", "content": "Which beetles eat aphids?"}
    assert "Waiting for the model" in last_turn(first)  # shown before the model's queue slot
    assert "Thinking" in last_turn(outputs[1][0])
    streaming = [last_turn(out[0]) for out in outputs if "▍" in last_turn(out[0])]
    assert len(streaming) >= 2, "the answer must stream (several partial updates)"
    final = last_turn(chatbot)
    assert final.count('class="fr-card') == 2  # n_sources
    assert '<span class="fr-num">1</span>' in final and '<span class="fr-num">2</span>' in final
    assert "<details><summary>Scores</summary>" in final and "rerank p(match)" in final and "dense cosine" in final
    assert "answered in" in final and "searched for “Which beetles eat aphids?”" in final
    # every served file exists and lies under an allowed path (assets or kept uploads)
    allowed = [Path(p) for p in launch_options(app.config)["allowed_paths"]]
    paths = served_paths(final)
    assert paths and all(p.is_file() and any(a in p.parents for a in allowed) for p in paths)
    assert history[0] == {"role": "user", "content": "Which beetles eat aphids?"}
    assert history[1]["role"] == "assistant" and history[1]["content"]


def test_respond_event_order_and_answer(make_app, media, tiny_engine):
    app = make_app()
    ingest(app, media["pdf"])
    events = list(respond(app.library, tiny_engine, "What should be watered every morning?", None, [],
                          ChatSettings(**FAST)))
    kinds = [event.kind for event in events]
    assert kinds[0] == "status" and kinds[-1] == "answer"
    assert kinds.index("sources") < kinds.index("token")
    answer = events[-1].answer
    sources = next(event.sources for event in events if event.kind == "sources")
    assert [h.item.item_id for h in answer.sources] == [h.item.item_id for h in sources]
    assert len(sources) == 2 and all(h.rerank_score is not None for h in sources)
    assert all(1 <= n <= len(sources) for n in answer.cited)
    assert answer.retrieval_query == "What should be watered every morning?"
    texts = [event.text for event in events if event.kind == "token"]
    assert texts == sorted(texts, key=len)  # accumulated text grows


def test_says_so_when_nothing_is_relevant(make_app, media):
    app = make_app()
    _, chatbot, history = run_chat(app, "Where is the pond pump?")
    assert NOTHING_IN_LIBRARY in last_turn(chatbot) and "fr-card" not in last_turn(chatbot)
    ingest(app, media["pdf"])
    # a rerank probability of 1.0 is never reached: no source clears the floor
    _, chatbot, history = run_chat(app, "Where is the pond pump?", min_relevance=1.0)
    assert "could not find anything" in last_turn(chatbot) and "fr-card" not in last_turn(chatbot)
    assert history[-1]["content"] == NOTHING_RELEVANT
    # without reranking there is no calibrated score: the floor does not apply
    _, chatbot, _ = run_chat(app, "Where is the pond pump?", rerank=False, min_relevance=1.0)
    assert "fr-card" in last_turn(chatbot)


def test_follow_up_questions_are_rewritten_with_the_history(make_app, media, tiny_engine):
    app = make_app()
    ingest(app, media["pdf"])
    question = "Which beetles protect the roses in the garden?"
    first = list(respond(app.library, tiny_engine, question, None, [], ChatSettings(**FAST)))
    assert first[-1].kind == "answer"
    history = turn(question, first[-1].text)
    follow_up = "what do they eat?"
    events = list(respond(app.library, tiny_engine, follow_up, None, history, ChatSettings(**FAST)))
    searched = next(event.query for event in events if event.kind == "status" and event.query)
    expected = tiny_engine.standalone_query(follow_up, history)
    assert searched == expected != follow_up
    # the UI keeps the same plain history across turns
    _, chatbot, history = run_chat(app, "Which beetles protect the roses in the garden?")
    _, chatbot, history = run_chat(app, follow_up, chatbot, history)
    assert f"searched for “{expected}”" in last_turn(chatbot).replace("&#x27;", "'")
    assert len(history) == 4 and len([m for m in chatbot if m["role"] == "user"]) == 2


def test_concurrent_sessions_get_their_own_answers(make_app, media):
    app = make_app()
    ingest(app, media["pdf"], media["image"])
    questions = ["Which beetles eat aphids?", "When should the yellow flowers be watered?"]

    def strip_timing(html: str) -> str:
        return re.sub(r" · answered in [^<]*", "", html)

    alone = {q: strip_timing(last_turn(run_chat(app, q)[1])) for q in questions}
    results: dict[str, str] = {}

    def worker(question: str) -> None:
        results[question] = strip_timing(last_turn(run_chat(app, question)[1]))

    threads = [threading.Thread(target=worker, args=(q,)) for q in questions * 2]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert results == alone
    assert f"searched for “{questions[0]}”" in results[questions[0]]
    assert f"searched for “{questions[1]}”" in results[questions[1]]


def test_streams_survive_being_resumed_from_different_threads(make_app, media, tiny_engine):
    """Gradio resumes a sync generator from worker threads; the engine's lock must not be orphaned."""
    app = make_app()
    ingest(app, media["pdf"])
    stream = app.chat({"text": "Which beetles eat aphids?", "files": []}, [], [], **FAST)
    outputs = []
    while True:
        box: list = []
        thread = threading.Thread(target=lambda: box.append(next(stream, None)))
        thread.start()
        thread.join(timeout=120)
        if not box or box[0] is None:
            break
        outputs.append(box[0])
    assert "fr-card" in last_turn(outputs[-1][0])
    done = threading.Event()
    threading.Thread(target=lambda: (tiny_engine.embed_query("still usable?"), done.set())).start()
    assert done.wait(60), "the engine lock was left held by a finished stream"


def test_closing_a_stream_early_releases_the_engine(make_app, media, tiny_engine):
    app = make_app()
    ingest(app, media["pdf"])
    stream = respond(app.library, tiny_engine, "Which beetles eat aphids?", None, [], ChatSettings(**FAST))
    for event in stream:
        if event.kind == "token":
            break
    stream.close()  # the browser went away mid-answer
    done = threading.Event()
    threading.Thread(target=lambda: (tiny_engine.embed_query("next user"), done.set())).start()
    assert done.wait(120)


def test_delete_removes_the_document_and_its_assets(make_app, media):
    app = make_app()
    ingest(app, media["pdf"], media["image"])
    doc = next(d for d in app.documents() if d.source == "garden-guide.pdf")
    assert (app.library.assets / doc.doc_id).is_dir()
    assert app.delete(doc.doc_id) == "Deleted garden-guide.pdf."
    assert [d.source for d in app.documents()] == ["LadyBird.jpg"]
    assert not (app.library.assets / doc.doc_id).exists()
    assert app.delete(doc.doc_id) == "That document is no longer in the library."
    assert app.delete(None) == "Choose a document to delete."
    _, chatbot, _ = run_chat(app, "Which beetles eat aphids?")
    assert "garden-guide.pdf" not in last_turn(chatbot)


def test_sources_render_video_segments_pages_and_text(make_app, media, tmp_path):
    from freeret_rag.items import Hit

    app = make_app()
    notes = tmp_path / "notes.txt"
    notes.write_text("The pond pump is checked every June. " * 5)
    ingest(app, media["pdf"], media["video"], notes)
    docs = {d.source: d for d in app.documents()}
    segment = app.library.items(docs["nature-scenes.mp4"].doc_id)[-1]
    page = app.library.items(docs["garden-guide.pdf"].doc_id)[1]
    text = app.library.items(docs["notes.txt"].doc_id)[0]
    html = app.render_sources([Hit(segment, dense_score=0.5, rerank_score=0.9), Hit(page, lexical_score=2.0),
                               Hit(text, fused_score=0.03)], cited=[2])
    video = re.search(r'<video class="fr-video"[^>]*src="([^"]+)"', html).group(1)
    assert video.endswith(f"#t={segment.t_start:g},{segment.t_end:g}") and "nature-scenes.mp4" in video
    assert 'poster="gradio_api/file=' in html
    assert "garden-guide.pdf#page=2" in html and "· p. 2" in html
    assert 'class="fr-excerpt">The pond pump' in html
    assert html.count("<details>") == 3 and "0.900" in html and "2.000" in html and "0.030" in html
    assert re.search(r'fr-card fr-cited" data-source="2"', html)


def test_text_only_model_explains_what_it_cannot_read(make_app, media, text_only_engine, tmp_path):
    app = make_app(engine=text_only_engine, data_dir=tmp_path / "text-only")
    assert not app.reads_images
    assert "reads text only" in app.model_info() and "**cannot read:** images, video" in app.model_info()
    final = {row[0]: row for row in ingest(app, media["pdf"], media["image"])[-1]}
    assert final["garden-guide.pdf"][1] == "done"  # searched by its text layer
    assert final["LadyBird.jpg"][1] == "skipped" and "text only" in final["LadyBird.jpg"][5]
    _, chatbot, _ = run_chat(app, "What is this?", image=str(media["image"]))
    assert "reads text only" in last_turn(chatbot)
    _, chatbot, _ = run_chat(app, "Which beetles eat aphids?")
    assert "fr-card" in last_turn(chatbot)


def test_index_of_another_model_offers_a_reindex(make_app, media, text_only_engine, tmp_path):
    data_dir = tmp_path / "shared-data"
    ingest(make_app(data_dir=data_dir), media["pdf"])
    app = make_app(engine=text_only_engine, data_dir=data_dir)
    assert app.library.mismatch and app.library.needs_reindex
    assert "indexed with another model" in app.reindex_notice()
    (_, state, *_), = ingest(app, media["image2"])[-1]
    assert state in ("failed", "skipped")  # nothing is added to a mixed index
    final = list(app.reindex())[-1]
    assert [(s.name, s.state) for s in final.files] == [("garden-guide.pdf", "done")]
    assert not app.library.needs_reindex and app.reindex_notice() == ""
    _, chatbot, _ = run_chat(app, "Which beetles eat aphids?")
    assert "garden-guide.pdf" in last_turn(chatbot)


def test_spaces_gpu_wraps_every_model_call_and_splits_indexing(make_app, media, tiny_engine):
    calls: list[tuple[str, int | None]] = []
    kinds: dict[str, bool] = {}

    def fake_gpu(duration=None):  # records what ZeroGPU's decorator would receive
        def decorate(task):
            kinds[task.__name__] = inspect.isgeneratorfunction(task)

            def run(*args, **kwargs):
                calls.append((task.__name__, duration))
                return task(*args, **kwargs)
            return run
        return decorate

    engine = for_spaces(tiny_engine, gpu=fake_gpu, chunk=1)
    app = make_app(engine=engine)
    assert app.engine is engine and engine.model_id == tiny_engine.model_id
    ingest(app, media["pdf"])
    assert engine.gpu_calls >= 2, "a 2-page PDF with chunk=1 takes one GPU call per page"
    calls.clear()
    _, chatbot, _ = run_chat(app, "Which beetles eat aphids?")
    assert "fr-card" in last_turn(chatbot)
    assert len(calls) == 3  # the query's embedding (with its words), rerank, answer_stream: each its own GPU call
    # ZeroGPU dispatches on inspect.isgeneratorfunction: the streaming call must be one, the others not
    assert kinds == {"call": False, "stream": True}


def test_real_spaces_package_is_a_no_op_outside_zerogpu(make_app, media, tiny_engine):
    spaces = pytest.importorskip("spaces", reason="the `spaces` package is only needed on Hugging Face Spaces")
    engine = for_spaces(tiny_engine)
    app = make_app(engine=engine)
    ingest(app, media["pdf"])
    _, chatbot, _ = run_chat(app, "Which beetles eat aphids?")
    assert "fr-card" in last_turn(chatbot) and spaces.GPU


def test_blocks_wiring_queue_and_launch_options(make_app):
    app = make_app()
    demo = build_blocks(app)
    config = demo.get_config_file()
    endpoints = {dep.get("api_name"): dep for dep in config["dependencies"] if dep.get("api_name")}
    assert {"chat", "add_files", "documents", "delete"} <= set(endpoints)
    slots = {name: (demo.fns[endpoints[name]["id"]].concurrency_id, demo.fns[endpoints[name]["id"]].concurrency_limit)
             for name in ("chat", "add_files", "delete")}
    # Answers take turns among themselves; library writes too, in a slot of their own, so that a long
    # upload never holds a question back (the model lock serves it between batches).
    assert slots == {"chat": ("model", 1), "add_files": ("library", 1), "delete": ("library", 1)}
    uploads = [fn for fn in demo.fns.values() if fn.name == "run_ingest"]
    assert len(uploads) == 2 and {(fn.concurrency_id, fn.concurrency_limit) for fn in uploads} == {("library", 1)}
    [stop] = [block._id for block in demo.blocks.values()
              if getattr(block, "elem_id", None) == "fr-stop-indexing"]
    cancelling = {(target, tuple(sorted(fn.cancels))) for fn in demo.fns.values() if fn.cancels
                  for target, _ in fn.targets}
    assert cancelling == {(stop, tuple(sorted(fn._id for fn in uploads)))}  # the Stop button cancels both uploads
    options = launch_options(app.config)
    assert options["share"] is False and options["auth"] is None and options["ssr_mode"] is False
    assert options["max_file_size"] == 200 * 1024**2
    assert options["server_name"] == "127.0.0.1"
    allowed = [Path(p) for p in options["allowed_paths"]]
    assert app.config.data_dir not in allowed  # the Chroma files are not served
    assert all(app.config.data_dir in p.parents for p in allowed)


def test_app_py_rejects_bad_configuration(capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("freeret_app", Path(__file__).resolve().parents[2] / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--port", "70000"]) == 2
    assert "port must be between" in capsys.readouterr().err


# -- issue 13: separate messages, stop, the API's own history, waiting documents, deletes ------------

def test_the_answer_and_its_sources_are_separate_messages(make_app, media):
    from freeret_rag.ui_render import is_app_html

    app = make_app()
    ingest(app, media["pdf"])
    _, chatbot, history = run_chat(app, "Which beetles eat aphids?")
    answer, sources = chatbot[-2]["content"], chatbot[-1]["content"]
    assert [m["role"] for m in chatbot] == ["user", "assistant", "assistant"]
    assert not is_app_html(answer) and "fr-sources" not in answer and "<div" not in answer
    assert sources.startswith('<div class="fr-sources">') and "\n" not in sources
    assert history[1]["content"] == html.unescape(answer).strip()  # the model's own text, not the markup


class Wordy:
    """The tiny engine, answering with readable words: one word per token it really generates."""

    def __init__(self, engine) -> None:
        self._engine = engine

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def answer_stream(self, *args, **kwargs):
        for count, _ in enumerate(self._engine.answer_stream(*args, **kwargs), 1):
            yield " ".join(f"word{n}" for n in range(count))


def test_a_stop_during_generation_keeps_the_partial_answer(make_app, media, tiny_engine):
    app = make_app()
    ingest(app, media["pdf"])
    question = "Which beetles eat aphids in the garden?"
    full = [e.text for e in respond(app.library, tiny_engine, question, None, [], ChatSettings(**FAST))
            if e.kind == "token"]
    assert len(full) >= 10  # unstopped, the tiny model writes many tokens (greedy: the same ones every time)
    flag = threading.Event()
    events = []
    for event in respond(app.library, tiny_engine, question, None, [], ChatSettings(**FAST), stop=flag):
        events.append(event)
        if event.kind == "token":
            flag.set()  # the Stop button, at the first words
    tokens = [e.text for e in events if e.kind == "token"]
    assert events[-1].kind == "stopped" and 1 <= len(tokens) <= 2  # generation ended within a token
    assert events[-1].sources and tokens == full[:len(tokens)] and events[-1].text == tokens[-1].strip()
    # in the app: the partial answer stays, marked as stopped, and stays in the history
    app = make_app(engine=Wordy(tiny_engine), data_dir=app.config.data_dir)
    flag = app.new_stop_flag("session-a")
    stream = app.answer_turn(*app.add_user_turn(question, [])[::-1], [], **FAST, stop=flag)
    for chatbot, history in stream:
        if "▍" in last_turn(chatbot):
            flag.set()
    assert "Stopped: the answer above is unfinished." in chatbot[-1]["content"] and "stopped after" in chatbot[-1]["content"]
    assert chatbot[-2]["content"] in ("word0", "word0 word1", "word0 word1 word2")  # shown when Stop was pressed
    assert history[-1]["content"] == chatbot[-2]["content"]


def test_a_stop_ends_the_rerank_at_its_next_batch(make_app, media, tiny_engine, monkeypatch):
    from freeret_rag import cancel
    from freeret_rag.items import Hit

    app = make_app()
    ingest(app, media["pdf"], media["image"])
    hits = [Hit(item) for doc in app.documents() for item in app.library.items(doc.doc_id)]
    flag = threading.Event()
    passes = []

    def forward_then_stop(*_args):  # the user presses Stop during the first forward pass
        passes.append(1)
        flag.set()

    layer = tiny_engine.lm.model.get_decoder().layers[0]
    handle = layer.register_forward_pre_hook(forward_then_stop)
    try:
        with cancel.stop_scope(flag), pytest.raises(cancel.Stopped):
            tiny_engine.rerank("beetles", hits, batch_size=1)
        assert len(hits) == 3 and len(passes) == 1
        # a turn stopped while it waited for the model does no model work at all
        passes.clear()
        events = list(respond(app.library, tiny_engine, "beetles?", None, [], ChatSettings(**FAST), stop=flag))
        assert [e.kind for e in events] == ["stopped"] and passes == []
    finally:
        handle.remove()


def test_the_api_history_is_the_messages_passed_in(make_app, media):
    from freeret_rag.ui import history_from_messages

    app = make_app()
    ingest(app, media["pdf"])
    ask = {"text": "Which beetles eat aphids?", "files": []}
    first = list(app.api_chat(ask, [], **FAST))
    second = list(app.api_chat(ask, [], **FAST))
    assert re.sub(r"answered in [^<]*", "", str(first[-1][0])) == re.sub(r"answered in [^<]*", "", str(second[-1][0]))
    chatbot, sources, _ = first[-1]
    assert [s["number"] for s in sources] == [1, 2] and {s["file"] for s in sources} == {"garden-guide.pdf"}
    assert all(s["scores"]["rerank"] is not None and s["page"] in (1, 2) and s["asset_url"] for s in sources)
    # a follow-up passes the conversation back: only the question and the model's text count
    assert history_from_messages(chatbot) == [
        {"role": "user", "content": "Which beetles eat aphids?"},
        {"role": "assistant", "content": html.unescape(chatbot[1]["content"]).strip()}]
    assert history_from_messages([{"role": "user", "content": [{"type": "text", "text": "Hi [1]"}]},
                                  {"role": "assistant", "content": "A &#91;1&#93; &lt;b&gt;"},
                                  {"role": "assistant", "content": '<div class="fr-sources">x</div>'}]) == [
        {"role": "user", "content": "Hi [1]"}, {"role": "assistant", "content": "A [1] <b>"}]


def test_a_threshold_of_099_never_answers_from_unreranked_candidates(make_app, tmp_path):
    from ui_harness import make_pdf

    app = make_app()
    pages = [f"Page {n}: notes on beetles, aphids and roses in bed {n}." for n in range(14)]
    ingest(app, make_pdf(tmp_path / "many.pdf", pages))
    assert len(app.library) == 14
    outputs, chatbot, _ = run_chat(app, "Which beetles eat aphids?", top_k=20, rerank_k=10, n_sources=3,
                                   min_relevance=0.99, fixed_threshold=True)
    shown = last_turn(chatbot)
    scores = [float(v) for v in re.findall(r"rerank p\(match\)</td><td>([\d.]+)", shown)]
    assert "fr-card" not in shown or all(score >= 0.99 for score in scores)
    assert "fr-card" in shown or "could not find anything" in shown
    # with every reranked candidate below 0.99, candidates 11-20 (never reranked) are not used either
    head = app.library.search("Which beetles eat aphids?", k=20, rerank_k=10, score_head=True)
    if max(h.rerank_score or 0 for h in head) < 0.99:
        assert "could not find anything" in shown and len(head) == 14


def test_chat_says_what_waits_for_a_reindex(make_app, media, text_only_engine, tmp_path):
    data_dir = tmp_path / "shared-data"
    ingest(make_app(data_dir=data_dir), media["pdf"])
    app = make_app(engine=text_only_engine, data_dir=data_dir)
    _, chatbot, _ = run_chat(app, "Which beetles eat aphids?")
    said = html.unescape(re.sub(r"<[^>]+>", "", last_turn(chatbot)))
    assert NOTHING_IN_LIBRARY not in said
    assert "Your library holds 1 document(s) (2 items) indexed with another model" in said  # one PDF, 2 pages
    assert "Re-index with this model" in said


def test_delete_says_what_goes_and_removes_the_kept_copy(make_app, media):
    app = make_app()
    ingest(app, media["pdf"])
    doc = app.documents()[0]
    kept = Path(doc.path)
    assert kept.is_file() and app.config.upload_dir in kept.parents
    preview = html.unescape(re.sub(r"<[^>]+>", "", app.delete_preview(doc.doc_id)))
    assert preview.startswith("Delete garden-guide.pdf (PDF)? This removes its 2 searchable items")
    assert "copy of the file kept" in preview and "cannot be undone" in preview
    assert app.delete_preview(None) == "" and app.documents()  # asking deletes nothing
    assert app.delete(doc.doc_id) == "Deleted garden-guide.pdf."
    assert not kept.exists()  # nothing deleted stays reachable through the file route


def test_a_stop_flag_ends_any_generation_at_the_next_token(tiny_engine):
    """Also generation that no chat loop reads token by token (the follow-up rewrite)."""
    from freeret_rag import cancel
    from freeret_rag.answer import rewrite_prompt, stream_generate

    prompt = rewrite_prompt("what do they eat?", [{"role": "user", "content": "Which beetles eat aphids?"}])
    full = list(stream_generate(tiny_engine.lm, prompt, 30, 256, threading.Lock(), stop_loops=False))
    flag = threading.Event()
    flag.set()
    with cancel.stop_scope(flag):
        stopped = list(stream_generate(tiny_engine.lm, prompt, 30, 256, threading.Lock(), stop_loops=False))
    assert len(full) >= 10 and len(stopped) <= 1


def test_the_settings_slider_starts_at_the_configured_threshold_even_zero(make_app):
    """`--min-relevance 0` (keep every source) shows 0 in Settings, not the 0.2 used without a value."""
    def threshold(app):
        config = build_blocks(app).get_config_file()
        return next(c["props"]["value"] for c in config["components"] if c["props"].get("elem_id") == "fr-threshold")

    assert threshold(make_app("--min-relevance", "0")) == 0.0
    assert threshold(make_app("--min-relevance", "0.35")) == 0.35
    assert threshold(make_app()) == 0.2  # no fixed value: the slider's starting point when switched on
