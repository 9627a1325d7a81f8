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


def test_too_few_written_queries_are_topped_up_with_spans_of_the_items_text(tmp_path):
    engine = ScriptedEngine()
    engine.write_query = lambda item: "I'm ready to help! " * 5  # chatter: every reply is rejected
    library = Library(engine, tmp_path / "data", self_check=False)
    notes = tmp_path / "notes"
    notes.mkdir()
    texts = [" ".join(f"w{i}x{j}" for j in range(30)) for i in range(6)]
    for i, text in enumerate(texts):
        (notes / f"n{i}.txt").write_text(text)
    library.add([notes])
    check = library.self_check()
    assert check.rejected == 6 and check.spans == 6 and check.measured
    # by hand: words 9..20 of each 30-word text, less its 4 rarest (all occur once: the first four go)
    assert {q["query"] for q in check.queries} == {" ".join(t.split()[13:21]) for t in texts}
    assert check.mrr["lexical"] == 1.0 and any("stood in" in line for line in check.describe())
    assert selfcheck.middle_span("too short") == ""
    text = " ".join(["common"] * 9 + ["rare1", "common", "rare2", "common", "common"] + ["common"] * 10)
    # words 6..17 hold rare1 and rare2 (frequency 1); the other two dropped are the first 'common's
    assert selfcheck.middle_span(text, document_frequency={"common": 5, "rare1": 1, "rare2": 1}) \
        == " ".join(["common"] * 8)
    assert selfcheck.document_frequencies([Item("text", text="A a b"), Item("text", text="b c")]) \
        == {"a": 1, "b": 2, "c": 1}
