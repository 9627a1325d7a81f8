"""Stage 3: streamed grounded answers, citations, and standalone follow-up queries."""

from __future__ import annotations

import pytest
from PIL import Image

from freeret_rag import Hit, Item
from freeret_rag.answer import fallback_query, is_valid_rewrite, needs_rewrite, parse_citations, source_prompt
from freeret_rag.inputs import render

HISTORY = [{"role": "user", "content": "When was the Eiffel Tower built?"},
           {"role": "assistant", "content": "It was completed in 1889 [1]."}]


@pytest.mark.parametrize("text, n, expected", [
    ("Paris [1] and 1889 [2].", 2, [1, 2]),
    ("See [2][1] and again [2].", 3, [2, 1]),
    ("Both [1, 3] agree; [4] does not exist.", 3, [1, 3]),
    ("No citation here.", 2, []),
    ("[0] is not a source, nor [12].", 5, []),
    ("[1, 9] names a source that is not shown.", 3, []),
    # numbers the model made web references of are not citations, anywhere in the text
    ("Canberra [1].\n\n[1] https://en.wikipedia.org/wiki/Canberra", 2, []),
    ("Canberra [2].\n- [1] wikipedia.org, Australia", 2, [2]),
    ("See [1](https://atlas.example.org) and [2].", 2, [2]),
    ("Paris [1] (p. 3) and the tower [2]: 1889.", 2, [1, 2]),
])
def test_citations_map_to_numbered_sources(text, n, expected):
    assert parse_citations(text, n) == expected


def test_follow_up_detection():
    assert not needs_rewrite("Where is it?", [])  # nothing to refer back to
    assert needs_rewrite("Where is it?", HISTORY)
    assert needs_rewrite("And the height?", HISTORY)  # short follow-up
    assert not needs_rewrite("What colour are ladybird spots in the garden photo?", HISTORY)


def test_rewrites_that_answer_or_drop_words_are_rejected():
    assert is_valid_rewrite("Where is the Eiffel Tower?", "Where is it?")
    assert not is_valid_rewrite("The Eiffel Tower is in Paris [1].", "Where is it?")  # an answer
    assert not is_valid_rewrite("Where is Paris?", "Where is the tower located?")  # lost 'tower', 'located'
    assert fallback_query("Where is it?", HISTORY) == "When was the Eiffel Tower built? Where is it?"


def test_each_source_shows_its_own_images_under_its_numbered_header(tiny_engine):
    engine = tiny_engine("qwen2_vl")
    hits = [Hit(Item("pdf_page", text="Tower history", images=(Image.new("RGB", (32, 32)),), source="tower.pdf",
                     page=3)),
            Hit(Item("video_segment", images=tuple(Image.new("RGB", (32, 32)) for _ in range(4)),
                     source="trip.mp4", t_start=63.0, t_end=73.0))]
    prompt = source_prompt(hits, "When was it built?", HISTORY, vision=True, max_source_chars=100,
                           max_images_per_source=2)
    assert "[1] tower.pdf (p. 3), 1 image:" in prompt.text and "[2] trip.mp4 (1:03-1:13), 2 images:" in prompt.text
    assert len(prompt.images) == 3  # one page + two of the four frames
    rendered = render(engine.lm, prompt)
    first, second, question = (rendered.index(mark) for mark in ("[1] tower.pdf", "[2] trip.mp4", "Question:"))
    pad = "<|image_pad|>"
    assert pad not in rendered[:first]  # no block of images before the sources any more
    assert rendered[first:second].count(pad) == 1 and rendered[second:question].count(pad) == 2
    assert rendered.index("Tower history") > rendered.index(pad, first)  # text after its own image
    assert "When was the Eiffel Tower built?" in rendered  # history is part of the conversation


@pytest.mark.parametrize("family", ["qwen2_vl", "idefics3", "llava", "llama"])
def test_answer_streams_growing_text_and_returns_citations(family, tiny_engine):
    engine = tiny_engine(family)
    hits = [Hit(Item("text", text="The tower was completed in 1889.", source="tower.txt", chunk=0))]
    pieces = list(engine.answer_stream("When was the tower built?", hits, HISTORY))
    assert len(pieces) > 1
    assert all(later.startswith(earlier) for earlier, later in zip(pieces, pieces[1:]))
    answer = engine.answer("When was the tower built?", hits, HISTORY)
    streamed = pieces[-1].strip()  # the finished answer is the stream's end, less any looping tail
    assert streamed.startswith(answer.text)
    removed = streamed[len(answer.text):]
    # brute force: what was cut is whole copies of one stretch that the kept answer also ends with
    assert not removed or any(removed == removed[-k:] * (len(removed) // k) and len(removed) // k >= 2
                              and answer.text.endswith(removed[-k:].strip())
                              for k in range(1, len(removed) // 2 + 1)), (answer.text[-80:], removed)
    assert answer.sources == hits and answer.cited == parse_citations(answer.text, 1)


def test_standalone_query_passes_self_contained_questions_through(tiny_engine):
    engine = tiny_engine("llama")
    question = "What colour are ladybird spots in the garden photo?"
    assert engine.standalone_query(question, HISTORY) == question
    rewritten = engine.standalone_query("Where is it?", HISTORY)
    # A random model cannot rewrite: the guarded fallback keeps the earlier question's words.
    assert "Eiffel" in rewritten and "Where is it?" in rewritten


def test_stream_can_be_resumed_from_other_threads_and_frees_the_model(tiny_engine):
    """Gradio resumes generators on worker threads: no lock may be held across a yield."""
    from concurrent.futures import ThreadPoolExecutor

    engine = tiny_engine("llama")
    hits = [Hit(Item("text", text="The tower was completed in 1889.", source="tower.txt", chunk=0))]
    stream = engine.answer_stream("When was the tower built?", hits)
    with ThreadPoolExecutor(max_workers=3) as pool:
        pieces = [pool.submit(next, stream).result() for _ in range(3)]
    assert len(pieces) == 3 and pieces[2].startswith(pieces[0])
    stream.close()
    assert engine._lock.acquire(timeout=5)  # the model is free again for the next caller
    engine._lock.release()


def test_closing_a_stream_stops_generation_early(tiny_engine, monkeypatch):
    engine = tiny_engine("llama")
    produced = []
    original = engine.lm.model.generate

    def counting_generate(*args, **kwargs):
        output = original(*args, **kwargs)
        produced.append(output.shape[1] - kwargs["input_ids"].shape[1])
        return output

    monkeypatch.setattr(engine.lm.model, "generate", counting_generate)
    hits = [Hit(Item("text", text="The tower was completed in 1889.", source="tower.txt", chunk=0))]
    stream = engine.answer_stream("When was the tower built?", hits)
    next(stream)
    stream.close()
    assert produced and produced[0] < engine.settings.max_new_tokens


def test_question_image_is_shown_to_the_answering_model(tiny_engine):
    from freeret_rag import UnsupportedModalityError

    hits = [Hit(Item("text", text="Ladybirds are red.", source="bugs.txt", chunk=0))]
    question_image = Image.new("RGB", (32, 32), (255, 0, 0))
    prompt = source_prompt(hits, "Is this a ladybird?", [], vision=True, max_source_chars=100,
                           max_images_per_source=2, query_image=question_image)
    assert len(prompt.images) == 1 and prompt.segments[0] == ("The user asked about this image:\n", 1)
    assert tiny_engine("qwen2_vl").answer("Is this a ladybird?", hits, image=question_image).sources == hits
    with pytest.raises(UnsupportedModalityError):
        tiny_engine("llama").answer("Is this a ladybird?", hits, image=question_image)


def test_repeating_tail_and_trim_loop_by_hand():
    from freeret_rag.answer import repeating_tail, trim_loop

    loop = [7, 8, 9, 10, 11] * 3  # period 5, three copies, 15 tokens
    assert repeating_tail([1, 2, *loop]) == 10  # two copies to drop
    assert repeating_tail([1, 2, 3, 4, 5, 6]) == 0
    assert repeating_tail([5, 6] * 3) == 0  # 6 tokens: too short to call a loop
    assert repeating_tail([1, 2, 3] + [4] * 12) == 11
    assert trim_loop("Intro. " + "the pump is in the shed and " * 3) == "Intro. the pump is in the shed and"
    # the first copy lacks the blank line that starts the others: still three copies
    fact = "The tower was completed in 1889."
    assert trim_loop(f"{fact}\n\n{fact}\n\n{fact}") == fact
    assert trim_loop(f"{fact}\n\n{fact}") == f"{fact}\n\n{fact}"  # two copies are not yet a loop
    assert repeating_tail([4, 5, 6, 7, 9, 9] * 2 + [4, 5, 6, 7]) == 12  # keeps the first [4, 5, 6, 7]
    assert repeating_tail([1, 2, 3]) == 0
    assert trim_loop("A normal answer [1]. Another fact [1].") == "A normal answer [1]. Another fact [1]."
    assert trim_loop("- a\n- b\n- c\n") == "- a\n- b\n- c\n"  # a list is not a loop


def test_the_loop_criterion_stops_only_looping_rows():
    import torch

    from freeret_rag.answer import _StopOnLoop

    stop = _StopOnLoop(prompt_length=2)
    rows = torch.tensor([[0, 0, *([3, 4, 5, 6] * 3)], [0, 0, *range(12)]])
    assert stop(rows, None).tolist() == [True, False] and stop.looped  # three copies of a 4-token period


def test_answer_keeps_the_sources_in_the_order_given(tiny_model_dirs):
    """[n] cites sources[n - 1]: Answer.sources must be exactly the list given, in that order."""
    from freeret_rag import FreeRet

    hits = [Hit(Item("text", text=f"Fact number {n}.", source=f"source{n}.txt", chunk=0, item_id=f"s{n}"))
            for n in (3, 1, 2)]
    engine = FreeRet.from_pretrained(tiny_model_dirs["llama"], dtype="float32", max_new_tokens=8)
    answer = engine.answer("Which facts are there?", hits)
    assert [hit.item.item_id for hit in answer.sources] == ["s3", "s1", "s2"]
    assert all(0 < n <= 3 for n in answer.cited)
