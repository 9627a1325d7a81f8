"""The prompt table: explicit priors per item kind, identical task alignment on both sides."""

from __future__ import annotations

import pytest

from freeret_rag.items import ITEM_KINDS
from freeret_rag.prompts import NOISE_LINE, TASK_LINE, embed_instruction, rerank_question


@pytest.mark.parametrize("kind, modality", [("text", "the text"), ("image", "the image"),
                                            ("pdf_page", "the document page"), ("video_segment", "the video frames"),
                                            ("query", "the query")])
def test_each_kind_gets_its_own_grounding_and_the_shared_priors(kind, modality):
    instruction = embed_instruction(kind)
    lines = instruction.splitlines()
    assert lines[0] == TASK_LINE  # task alignment, same line for queries and candidates
    assert lines[1].startswith(f"Capture the semantics of {modality}. Favor ")
    assert lines[2] == NOISE_LINE
    assert lines[3].startswith("Based on ") and lines[3].endswith("output one word:")


def test_groundings_differ_between_kinds():
    assert len({embed_instruction(kind).splitlines()[1] for kind in [*ITEM_KINDS, "query"]}) == len(ITEM_KINDS) + 1


def test_priors_off_is_the_e5v_summary_prompt():
    assert embed_instruction("image", priors=False) == "Summarize above image in one word:"
    assert TASK_LINE not in embed_instruction("text", priors=False)


def test_rerank_question_is_neutral_lettered_choice():
    text = rerank_question("red beetle", "image", "")
    assert "A. The candidate fully matches the query." in text
    assert "B. The candidate does not match or only partially matches the query." in text
    swapped = rerank_question("red beetle", "image", "", swap=True)
    assert "A. The candidate does not match" in swapped and "B. The candidate fully matches" in swapped
