"""The prompt table: every instruction the model is given, in one place, with one version string.

Embeddings depend on these exact words, so `PROMPT_VERSION` is stored with every vector and an
index built with other prompts is refused instead of silently mixed. Change any embedding or
rerank wording -> bump the version.

Choices the method leaves open (see README, "Method choices"):
- one *generic* task line shared by the query and every candidate kind, so a query is embedded
  once and can search pages, images, video and text in one vector space;
- per-kind semantic grounding ("Capture the semantics of <modality>. Favor <aspect>.");
- rerank options are scored once, in A/B order (no swapped second pass by default: it would
  double the dominant cost; `swap=True` averages both orders).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .items import ItemKind

PROMPT_VERSION = "freeret-p1"
# Part of every kind's embedding identity (`FreeRet.kind_version`), which otherwise hashes the
# prompts' own words: bump it when the read-out itself changes (embed.py), not the wording.
READOUT_REVISION = "r1"

RerankFraming = Literal["choice", "yesno"]


@dataclass(frozen=True)
class KindWording:
    noun: str  # what the item is called in an instruction ("the image")
    modality: str  # what its semantics are ("the image")
    favor: str  # the aspect retrieval should favour


KIND_WORDING: dict[str, KindWording] = {
    "text": KindWording("the passage", "the text", "its topic, named entities and key facts"),
    "image": KindWording("the image", "the image", "the main objects, the scene and any visible text"),
    "pdf_page": KindWording("the page", "the document page", "its title, topic and key facts in its text and figures"),
    "video_segment": KindWording("the video clip", "the video frames", "the objects, actions and scene shown"),
    "query": KindWording("the query", "the query", "what the user is looking for"),
}

# Task alignment: identical on the query side and the candidate side of a search.
TASK_LINE = "You are required to assess if a document, image or video is related to a search query."
NOISE_LINE = "Do not use function words, prepositions, or symbols."


def embed_instruction(kind: ItemKind | Literal["query"], priors: bool = True) -> str:
    """The instruction after the item: task alignment, grounding, noise suppression, one word.

    With `priors=False` it is E5-V's free summary prompt, the baseline FreeRet improves on.
    """
    wording = KIND_WORDING[kind]
    if not priors:
        return f"Summarize above {wording.noun.removeprefix('the ')} in one word:"
    return (
        f"{TASK_LINE}\n"
        f"Capture the semantics of {wording.modality}. Favor {wording.favor}.\n"
        f"{NOISE_LINE}\n"
        f"Based on {wording.noun}, output one word:"
    )


def item_text_block(kind: ItemKind, text: str) -> str:
    """How an item's own text is shown to the model (before the instruction)."""
    if not text:
        return ""
    label = {"pdf_page": "Page text", "text": "Passage", "image": "File", "video_segment": "Video"}[kind]
    return f"{label}: {text}\n"


def rerank_question(query: str, kind: ItemKind, candidate_text: str, framing: RerankFraming = "choice",
                    swap: bool = False) -> str:
    """Point-wise rerank prompt. The candidate's media precede this text in the user turn.

    "choice": neutral lettered options, scored as p(A) (p(B) when `swap` puts the match second).
    "yesno": the Yes/No framing the paper measured as weaker, kept for ablations.
    """
    noun = KIND_WORDING[kind].noun
    candidate = f"Candidate ({noun}): {candidate_text}" if candidate_text else f"Candidate: {noun} shown above."
    if framing == "yesno":
        return (f"Query: {query}\n{candidate}\n"
                "Does the candidate match the query? Answer Yes or No.")
    match = "The candidate fully matches the query."
    no_match = "The candidate does not match or only partially matches the query."
    first, second = (no_match, match) if swap else (match, no_match)
    return (
        "Determine whether the candidate matches the query.\n"
        f"Query: {query}\n{candidate}\n"
        f"Options:\nA. {first}\nB. {second}\n"
        "Answer with the option's letter."
    )


# The two label tokens whose logits are compared, per framing: (match, no match).
RERANK_LABELS: dict[str, tuple[str, str]] = {"choice": ("A", "B"), "yesno": ("Yes", "No")}

# The self-check (selfcheck.py): the model writes the query a user would type to find an item.
# Small models copy worked examples and chat when asked in the user turn; a system line and a bare
# "Search query:" cue keep them closest to a query.
SELF_QUERY_SYSTEM = (
    "Reply with a short search query (a few words, lowercase) that would find the user's {noun}. "
    "Use your own words. Do not explain."
)


def self_query_prompt(kind: ItemKind) -> tuple[str, str]:
    """(system line, cue after the item) for the self-check's test query about an item of `kind`."""
    noun = KIND_WORDING[kind].noun.removeprefix("the ")
    return SELF_QUERY_SYSTEM.format(noun=noun), "Search query:"


ANSWER_SYSTEM = (
    "You answer questions about the user's own files. Use only the numbered sources given with the "
    "question. After each fact, cite its source number in square brackets, like [1] or [2]. "
    "If the sources do not contain the answer, say that you could not find it in the library."
)


def source_header(number: int, label: str) -> str:
    return f"[{number}] {label}"


def answer_question(question: str) -> str:
    return f"Question: {question}\nAnswer using the sources above and cite them like [1]."


# Small models tend to answer instead of rewriting; a worked example keeps them on task.
REWRITE_TEMPLATE = (
    "Rewrite the last question so that it can be understood without the conversation: replace "
    "words like it, they, this or that with what they refer to. Do not answer it. Reply with the "
    "rewritten question only.\n\n"
    "Conversation:\nuser: Who wrote the report on river pollution?\nassistant: Dr. Lee wrote it [1].\n"
    "Last question: When was it published?\nRewritten: When was the report on river pollution published?\n\n"
    "Conversation:\n{transcript}\nLast question: {question}\nRewritten:"
)
