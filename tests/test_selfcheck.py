"""The self-check on a real library (Chroma + BM25) with a scripted engine whose qualities are known by
construction: a perfect dense channel, a misleading keyword channel, a helpful or a useless reranker.
What the self-check must decide follows from that by hand."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from freeret_rag import selfcheck
from freeret_rag.items import Hit, Item, Query
from freeret_rag.library import Library

N_FILES = 10


def words_of(i: int) -> list[str]:
    return [f"{w}{i}" for w in ("alpha", "beta", "gamma", "delta", "epsilon", "zeta")]


class ScriptedEngine:
    """Dense: the query written for item X embeds exactly like X. Keywords: that query is made of the
    words of the *next* item, so BM25 finds the wrong one. Rerank: `helpful` scores the target 1 and
    everything else 0; `useless` scores everything 0.5."""

    model_id, prompt_version, capabilities = "scripted", "p", frozenset({"text"})

    def __init__(self, reranker: str = "helpful") -> None:
        self.reranker = reranker
        self.written: dict[str, str] = {}  # query -> target text
        self.rerank_calls = 0
        self.verbatim_for: set[str] = set()

    def supports(self, item: Item) -> bool:
        return True

    @staticmethod
    def _vector(text: str) -> np.ndarray:
        rng = np.random.default_rng(int(hashlib.sha1(text.encode()).hexdigest()[:8], 16))
        vector = rng.standard_normal(32)
        return (vector / np.linalg.norm(vector)).astype(np.float32)

    def embed(self, items, batch_size=None):
        return np.stack([self._vector(item.text) for item in items])

    def embed_query(self, query):
        text = query.text if isinstance(query, Query) else query
        return self._vector(self.written.get(text, text))

    def write_query(self, item: Item) -> str:
        if item.text in self.verbatim_for:
            return "Query: " + " ".join(item.text.split()[:5])  # a copied span: must be rejected
        number = int(item.text.split()[0].removeprefix("alpha"))
        query = " ".join(reversed(words_of((number + 1) % N_FILES)[:3]))
        self.written[query] = item.text
        return f'"{query}"'

    def rerank(self, query, candidates):
        self.rerank_calls += 1
        target = self.written.get(query.text if isinstance(query, Query) else query)
        hits = [c if isinstance(c, Hit) else Hit(c) for c in candidates]
        for hit in hits:
            hit.rerank_score = (1.0 if hit.item.text == target else 0.0) if self.reranker == "helpful" else 0.5
        return sorted(hits, key=lambda hit: -hit.rerank_score)


def make_files(folder, start: int, stop: int):
    folder.mkdir(exist_ok=True)
    for i in range(start, stop):
        (folder / f"note{i}.txt").write_text(" ".join(words_of(i % N_FILES)) + f" serial{i}")
    return folder


def test_clean_query_and_verbatim_rule_by_hand():
    assert selfcheck.clean_query('Query: "red ladybird on a leaf"\nmore') == "red ladybird on a leaf"
    text = "The quick brown fox jumps over the lazy dog"
    assert selfcheck.is_verbatim("quick brown fox jumps over", text)  # five words in a row
    assert not selfcheck.is_verbatim("fox that jumps over dogs", text)
    assert selfcheck.is_verbatim("lazy dog", text)  # a short query that is all copied
    assert selfcheck.is_verbatim("", text)


def test_sample_covers_every_kind_deterministically():
    items = [Item("text", item_id=f"t{i}") for i in range(30)] + [Item("image", item_id=f"i{i}") for i in range(3)]
    sample = selfcheck.sample_items(items, limit=12)
    assert len(sample) == 12 and sum(item.kind == "image" for item in sample) == 3  # all three, kinds take turns
    assert selfcheck.sample_items(list(reversed(items)), limit=12) == sample
    assert len(selfcheck.sample_items(items[:30], limit=12)) == 12


def test_self_check_finds_the_good_channel_and_a_helpful_reranker(tmp_path):
    engine = ScriptedEngine("helpful")
    library = Library(engine, tmp_path / "data", self_check=False)
    library.add([make_files(tmp_path / "notes", 0, N_FILES)])
    check = library.self_check()
    assert len(check.queries) == N_FILES and check.rejected == 0
    assert check.mrr["dense"] == 1.0 and check.mrr["lexical"] == 0.0
    assert check.mrr["plain"] < 1.0  # BM25's wrong first hit outranks the target under plain RRF
    assert check.mrr["fused"] == 1.0 and check.weights["*"][0] == 1.0 and check.weights["*"][1] < 1.0
    assert check.mrr["final"] >= check.mrr["fused"]
    assert check.floor is not None and check.auc == 1.0  # targets 1.0, random items 0.0
    # stored with the index: another Library on the same folder reads the same decisions
    again = Library(engine, tmp_path / "data", self_check=False)
    assert again.self_check_result.weights == check.weights and again.relevance_floor == check.floor
    assert again.fusion_weights["*"] == tuple(check.weights["*"])
    # and the search uses them: every written query finds its item first
    for query, target in engine.written.items():
        assert again.search(query, k=1)[0].item.text == target


def test_a_useless_reranker_is_switched_off_and_costs_nothing(tmp_path):
    engine = ScriptedEngine("useless")
    library = Library(engine, tmp_path / "data", self_check=False)
    library.add([make_files(tmp_path / "notes", 0, N_FILES)])
    check = library.self_check()
    assert check.rerank_share == 0.0 and check.floor is None and check.auc == 0.5
    assert any("off" in line for line in check.describe())
    calls = engine.rerank_calls
    library.search(next(iter(engine.written)), k=3)
    assert engine.rerank_calls == calls  # no share, no floor: the rerank is skipped


def test_verbatim_queries_are_rejected_and_too_few_means_unmeasured(tmp_path):
    engine = ScriptedEngine()
    library = Library(engine, tmp_path / "data", self_check=False)
    library.add([make_files(tmp_path / "notes", 0, 5)])
    engine.verbatim_for = {item.text for item in library.store.all_items()[:2]}
    check = library.self_check()
    assert check.rejected == 2 and len(check.queries) == 3 and not check.measured
    assert library.rerank_share == selfcheck.DEFAULT_SHARE and library.relevance_floor is None
    assert "Not measured" in check.describe()[0]


def test_runs_at_the_end_of_indexing_only_when_the_library_changed_by_half(tmp_path):
    engine = ScriptedEngine()
    library = Library(engine, tmp_path / "data", self_check=True)
    events = []
    library.add([make_files(tmp_path / "a", 0, 8)], progress=events.append)
    first = library.self_check_result
    assert first is not None and first.size == 8 and any(e.stage == "check" for e in events)
    library.add([make_files(tmp_path / "b", 8, 10)])  # 8 -> 10: not worth a re-measure
    assert library.self_check_result.measured_at == first.measured_at
    library.add([make_files(tmp_path / "c", 10, 14)])  # 10 -> 14 > 1.5 x 8
    assert library.self_check_result.size == 14


@pytest.mark.parametrize("fixed", [(0.0, 1.0, 0.0)])
def test_fixed_settings_override_the_measurement(tmp_path, fixed):
    engine = ScriptedEngine("helpful")
    library = Library(engine, tmp_path / "data", self_check=False, fusion_weights=fixed, rerank_share=0.0)
    library.add([make_files(tmp_path / "notes", 0, N_FILES)])
    library.self_check()
    assert library.fusion_weights == {"*": fixed} and library.rerank_share == 0.0
    query, target = next(iter(engine.written.items()))
    assert library.search(query, k=1, rerank=False)[0].item.text != target  # BM25 alone is misled, as fixed


def test_background_mode_returns_at_once_and_measures_in_a_thread(tmp_path):
    import threading

    engine = ScriptedEngine()
    release = threading.Event()
    original = engine.write_query
    engine.write_query = lambda item: release.wait(60) and original(item)  # held until the upload returned
    library = Library(engine, tmp_path / "data", self_check="background")
    report = library.add([make_files(tmp_path / "notes", 0, N_FILES)])
    assert len(report.added) == N_FILES and library.self_check_result is None  # add did not wait for it
    release.set()
    library._check_thread.join(60)
    assert library.self_check_result is not None and library.self_check_result.size == N_FILES


def test_items_the_model_cannot_read_are_skipped_not_fatal(tiny_engine, tmp_path):
    from freeret_rag import selfcheck as sc

    engine = tiny_engine("llama")  # text-only: cannot write about an image without text
    items = [Item("image", images=(str(tmp_path / "x.jpg"),), item_id=f"i{n}") for n in range(3)]
    check = sc.measure(engine, items, lambda query: {}, lambda item_id: "image", 3)
    assert check.rejected == 3 and not check.measured


def test_cloze_takes_the_sentence_nearest_the_middle_that_leaves_the_item_mostly_itself():
    # sentences of 6, 7, 8 and 7 words (28): centres at 3, 9.5, 17, 24.5 against the middle 14 -> the third
    text = ("One two three four five six. Alpha beta gamma delta epsilon zeta eta.\n"
            "Red green blue cyan magenta yellow black white. Last words of this short text here.")
    assert selfcheck.cloze(text) == ("Red green blue cyan magenta yellow black white.",
                                     "One two three four five six. Alpha beta gamma delta epsilon zeta eta. "
                                     "Last words of this short text here.")
    # 7 + 12 words: the 12-word one is nearer the middle (9.5) but would leave 7 < 12: the first goes
    text = ("Marigolds need full sun and well-drained soil. "
            "Remove spent blooms to keep the plant flowering until the first frost.")
    assert selfcheck.cloze(text) == ("Marigolds need full sun and well-drained soil.",
                                     "Remove spent blooms to keep the plant flowering until the first frost.")
    assert selfcheck.cloze("Only one sentence of some eight words here.") is None  # nothing would be left
    assert selfcheck.cloze("Too short. Also short. Tiny.") is None  # no sentence of 6 to 24 words
    # "e.g. a" does not end a sentence (a lower-case word follows): 9 + 9 words, equally near the middle,
    # the first wins the tie (split there, no piece before "Then" would reach 6 words)
    assert selfcheck.cloze("Use a tool, e.g. a hammer or a saw. Then rest for a while and drink some water.")[0] \
        == "Use a tool, e.g. a hammer or a saw."
    stand_in = selfcheck.cloze_item(Item("pdf_page", text=text, images=("p.png",), item_id="d:1", doc_id="d",
                                         source="a.pdf", page=1))
    assert stand_in == ("Marigolds need full sun and well-drained soil.",
                        Item("text", text="Remove spent blooms to keep the plant flowering until the first frost.",
                             item_id="d:1", doc_id="d", source="a.pdf"))


def sentence_of(i: int) -> str:
    return " ".join(f"{w}{i}" for w in ("Only", "here", "in", "this", "one", "sentence")) + "."


def test_too_few_written_queries_are_topped_up_with_cloze_sentences_ranked_without_them(tmp_path):
    """Each stand-in's sentence occurs nowhere but in its item: once it is taken out, keyword search
    cannot find the item (lexical MRR 0; a verbatim span would have scored 1). The scripted engine
    embeds the sentence like the item's *rest* and its reranker scores 1 only for the rest: both are
    right only if the first stage and the reranker see the item without its sentence."""
    engine = ScriptedEngine()
    engine.write_query = lambda item: "I'm ready to help! " * 5  # chatter: every reply is rejected
    library = Library(engine, tmp_path / "data", self_check=False)
    notes = tmp_path / "notes"
    notes.mkdir()
    rests = {}
    for i in range(6):
        first, last = " ".join(words_of(i)) + " begins.", "And so it ends with plain words."
        (notes / f"n{i}.txt").write_text(f"{first} {sentence_of(i)} {last}")
        rests[sentence_of(i)] = f"{first} {last}"
    engine.written.update(rests)  # query -> the text its target should be read as
    library.add([notes])
    check = library.self_check()
    assert check.rejected == 6 and check.spans == 6 and check.measured
    assert {q["query"] for q in check.queries} == set(rests)
    assert all(q["stand_in"] == "cloze" for q in check.queries)
    assert check.mrr["lexical"] == 0.0 and check.mrr["dense"] == 1.0
    assert check.weights == {"*": [1.0, 0.0, 0.0]}
    assert check.auc == 1.0 and check.floor == 1.0  # the reranker read the stand-ins, not the full items
    assert any("sentences taken out" in line for line in check.describe())
    # the index itself is untouched: the full items are still found by their sentence's words
    assert library.search(sentence_of(3), k=1, rerank=False)[0].item.text.startswith("alpha3")


class ConstantReranker:
    model_id, prompt_version = "constant", "p"

    def rerank(self, query, candidates):
        return [Hit(hit.item, rerank_score=0.5) for hit in candidates]


@pytest.mark.parametrize("odd_lexical, kept", [(["V", "U", "p5"], False), (["p5"], True)])
def test_a_kind_gets_its_own_weights_only_when_they_win_by_more_than_the_noise_margin(odd_lexical, kept):
    """Six text queries: dense finds each target first; BM25 ranks a wrong text item Z first, which
    also sits second in dense, so any mix drops the target to rank 2: overall the dense channel alone
    wins (MRR 11/12). Six page queries: both channels find p0..p4 first; for p5 dense misses it.
    With BM25 at rank 3 for p5 the pages' lexical MRR is (5 + 1/3) / 6 = 0.889 against the dense
    weights' (5 + 1/5) / 6 = 0.867 (a channel weighted 0 still adds its candidates behind, in channel
    order: p5 comes fifth): a gain of 0.022, under the margin 0.5/6 = 0.083 (half a query moving up
    one place), so no page weights and fused MRR (11 + 1/5) / 12. With BM25 at rank 1 the gain is
    1/6 - 1/30: the pages get keywords alone and every target comes first."""
    kinds = {**{f"t{i}": "text" for i in range(6)}, "Z": "text",
             **{f"p{i}": "pdf_page" for i in range(6)}, "X": "pdf_page", "Y": "pdf_page", "V": "pdf_page",
             "U": "pdf_page"}
    items = {item_id: Item(kind, text=item_id, item_id=item_id) for item_id, kind in kinds.items()}
    rankings = {f"t{i}": {"dense": [f"t{i}", "Z"], "lexical": ["Z"]} for i in range(6)}
    rankings |= {f"p{i}": {"dense": [f"p{i}"], "lexical": [f"p{i}"]} for i in range(5)}
    rankings["p5"] = {"dense": ["X", "Y"], "lexical": odd_lexical}
    queries = [(f"query for {target}", items[target]) for target in rankings]
    check = selfcheck.measure(ConstantReranker(), list(items.values()),
                              lambda query: rankings[query.text.removeprefix("query for ")], kinds.get, len(items),
                              ("dense", "lexical"), queries=queries)
    assert check.mrr["dense"] == pytest.approx(11 / 12, abs=1e-4)  # stored rounded to 4 places
    assert check.weights == ({"*": [1.0, 0.0, 0.0], "pdf_page": [0.0, 1.0, 0.0]} if kept
                             else {"*": [1.0, 0.0, 0.0]})
    assert check.mrr["fused"] == pytest.approx(1.0 if kept else (11 + 1 / 5) / 12, abs=1e-4)
