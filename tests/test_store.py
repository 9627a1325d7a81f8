"""Store, lexical index and fusion against raw vectors (no model): the contract the library builds on."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest

from freeret_rag.items import Item
from dataclasses import replace

from freeret_rag.store import LexicalIndex, Store, Substituted, collection_name, connect, list_indexes, rrf

DIM = 16


def unit(seed: int) -> np.ndarray:
    vector = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return vector / np.linalg.norm(vector)


def doc_items(doc_id: str, source: str, texts: list[str], kind: str = "pdf_page") -> list[Item]:
    return [Item(kind=kind, text=text, item_id=f"{doc_id}:{n}", doc_id=doc_id, source=source,
                 page=n + 1 if kind == "pdf_page" else None, thumbnail=f"/assets/{doc_id}/{n}.jpg")
            for n, text in enumerate(texts)]


def add_doc(store: Store, items: list[Item], seed: int = 0, commit: bool = True) -> np.ndarray:
    vectors = np.stack([unit(seed + n) for n in range(len(items))])
    store.put(items, vectors, {"content_hash": items[0].doc_id * 4, "path": f"/x/{items[0].source}",
                               "file_type": "pdf", "model_id": store.model_id,
                               "prompt_version": store.prompt_version, "added_at": 1.0})
    if commit:
        store.commit(items[0].doc_id)
    return vectors


@pytest.fixture()
def client(tmp_path):
    return connect(tmp_path)


@pytest.fixture()
def store(client):
    return Store(client, "tiny/model", "p1")


def test_collection_names_are_valid_for_chroma_and_distinct_per_space():
    pattern = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._-]{1,61}[a-zA-Z0-9]$")
    names = {collection_name(model, version)
             for model in ("Qwen/Qwen2-VL-2B-Instruct", "/tmp/some dir/tiny-model/", r"C:\models\x.gguf",
                           "ü" * 200, "a" * 300, "")
             for version in ("p1", "p2")}
    assert len(names) == 12
    assert all(pattern.match(name) and ".." not in name for name in names)
    assert collection_name("m", "p1") == collection_name("m", "p1")


def test_rrf_matches_hand_computed_scores():
    fused = rrf([["a", "b", "c"], ["c", "a"]], k=60)
    assert fused["a"] == pytest.approx(1 / 61 + 1 / 62)
    assert fused["b"] == pytest.approx(1 / 62)
    assert fused["c"] == pytest.approx(1 / 63 + 1 / 61)
    assert max(fused, key=fused.get) == "a"
    assert rrf([["a"], ["b"]], weights=[1.0, 2.0])["b"] == pytest.approx(2 / 61)
    assert rrf([[], []]) == {}


def test_lexical_index_finds_file_names_and_applies_filters():
    index = LexicalIndex()
    assert index.search("anything", 5) == []
    index.add([("1", "shared mime info spec\nThe MIME database", "pdf_page", "d1"),
               ("2", "LadyBird\n", "image", "d2"),
               ("3", "garden photo\nflowers in the garden", "image", "d3")])
    assert [i for i, _ in index.search("mime", 5)] == ["1"]
    assert [i for i, _ in index.search("ladybird photo garden", 5)][0] == "3"
    assert [i for i, _ in index.search("garden", 5, kinds=["pdf_page"])] == []
    assert [i for i, _ in index.search("garden ladybird", 5, doc_ids=["d2"])] == ["2"]
    assert index.search("the of and", 5) == []  # stopwords only: no lexical evidence at all
    assert index.search("", 5) == []
    index.remove_documents(["d3"])
    assert index.search("garden", 5) == []


def test_pending_items_are_invisible_until_commit(store):
    items = doc_items("d1", "spec.pdf", ["mime types", "glob patterns"])
    vectors = add_doc(store, items, commit=False)
    assert store.documents() == []
    assert store.search(vectors[0], "mime", 5) == []
    assert store.commit("d1") == 2
    [doc] = store.documents()
    assert (doc.doc_id, doc.source, doc.items, doc.file_type) == ("d1", "spec.pdf", 2, "pdf")
    hits = store.search(vectors[0], "glob", 5)
    assert {hit.item.item_id for hit in hits} == {"d1:0", "d1:1"}
    top = hits[0]
    assert top.dense_score is not None and top.fused_score is not None


def test_pending_neighbours_never_crowd_out_complete_items(store):
    good = doc_items("good", "a.pdf", ["alpha", "beta", "gamma"])
    add_doc(store, good, seed=0)
    query = unit(0)
    crowd = doc_items("crowd", "b.pdf", [f"page {n}" for n in range(40)])
    store.put(crowd, np.stack([query] * 40), {"added_at": 2.0})  # pending, and nearer than anything else
    hits = store.dense(query, 2)
    assert len(hits) == 2 and {hit.item.doc_id for hit in hits} == {"good"}
    everything = store.dense(query, 10)
    assert len(everything) == 3 and everything[0].item.item_id == "good:0"


@pytest.mark.parametrize("kinds, doc_ids", [(None, None), (["image"], None), (None, ["b"]), (None, ["c"]),
                                             (["pdf_page"], ["a", "c"]), (["image"], ["c"])])
def test_dense_filters_match_brute_force(store, kinds, doc_ids):
    """Both paths (over-fetch and filter here, or Chroma's where) give the exact filtered top-k."""
    rng = np.random.default_rng(1)
    sizes = {"a": 40, "b": 15, "c": 2}  # c is under 10% of the index: Chroma filters
    expected = []
    for doc_id, size in sizes.items():
        items = [Item(kind="image" if n % 3 == 0 else "pdf_page", text="", item_id=f"{doc_id}:{n}", doc_id=doc_id,
                      source=f"{doc_id}.pdf") for n in range(size)]
        vectors = rng.standard_normal((size, DIM)).astype(np.float32)
        store.put(items, vectors, {"added_at": 1.0})
        store.commit(doc_id)
        expected += [(item, vector / np.linalg.norm(vector)) for item, vector in zip(items, vectors)]
    store.put(doc_items("pending", "p.pdf", ["x"] * 20), rng.standard_normal((20, DIM)), {"added_at": 1.0})
    query = unit(7)
    wanted = [(item, float(vector @ query)) for item, vector in expected
              if (not kinds or item.kind in kinds) and (not doc_ids or item.doc_id in doc_ids)]
    best = [item.item_id for item, _ in sorted(wanted, key=lambda pair: -pair[1])[:5]]
    hits = store.dense(query, 5, kinds, doc_ids)
    assert [hit.item.item_id for hit in hits] == best
    assert hits[0].dense_score == pytest.approx(max(score for _, score in wanted), abs=1e-5)


def test_metadata_round_trips_and_uses_cosine(store):
    items = doc_items("d1", "spec.pdf", ["page one", "page two"])
    vectors = add_doc(store, items)
    hit = store.dense(vectors[1], 1)[0]
    assert hit.item == items[1]
    assert hit.dense_score == pytest.approx(1.0, abs=1e-5)
    meta = store.collection.get(ids=["d1:1"])["metadatas"][0]
    assert {"doc_id", "source", "kind", "page", "thumbnail", "content_hash", "model_id", "prompt_version"} <= set(meta)
    assert store.collection.configuration["hnsw"]["space"] == "cosine"


def test_hybrid_fuses_dense_and_lexical_and_filters(store):
    pdf = doc_items("d1", "spec.pdf", ["mime magic rules", "subclassing types", "xml namespaces"])
    img = doc_items("d2", "LadyBird.jpg", [""], kind="image")
    vectors = np.concatenate([add_doc(store, pdf, seed=0), add_doc(store, img, seed=10)])
    hits = store.search(vectors[3], "subclassing", 5)
    by_id = {hit.item.item_id: hit for hit in hits}
    assert by_id["d1:1"].lexical_score > 0 and by_id["d2:0"].dense_score == pytest.approx(1.0, abs=1e-5)
    assert set(by_id) == {"d1:0", "d1:1", "d1:2", "d2:0"}
    assert [hit.fused_score for hit in hits] == sorted((hit.fused_score for hit in hits), reverse=True)
    assert {hit.item.kind for hit in store.search(vectors[3], "ladybird", 5, kinds=["pdf_page"])} == {"pdf_page"}
    assert {hit.item.doc_id for hit in store.search(vectors[0], "subclassing ladybird", 5, doc_ids=["d2"])} == {"d2"}
    assert [hit.item.item_id for hit in store.search(None, "ladybird", 5)] == ["d2:0"]


def test_substituted_channels_equal_a_store_that_holds_the_other_content(client, store):
    """Oracle: a second store built from scratch with items 1 and 3 already replaced; the substituted
    view of the first must rank every query the same, and the first store must stay as it was."""
    texts = ["mime magic rules", "subclassing types and aliases", "xml namespaces", "glob patterns of names",
             "icons for types", "magic bytes at offsets"]
    items = [replace(item, words=(f"w{n}", "shared")) for n, item in enumerate(doc_items("d1", "spec.pdf", texts))]
    vectors = add_doc(store, items, seed=0)
    new_items = [replace(items[1], text="glob rules for magic", words=("w9", "shared")),
                 replace(items[3], text="xml aliases", words=("w8",))]
    new_vectors = np.stack([unit(100), 3.0 * unit(101)])  # not unit length: cosine must not care
    other = Store(client, "tiny/model", "p9")
    swapped = {1: (new_items[0], new_vectors[0]), 3: (new_items[1], new_vectors[1])}
    add_doc(other, [swapped.get(n, (item, None))[0] for n, item in enumerate(items)], seed=0)
    for n, (item, vector) in swapped.items():  # the oracle holds the new vectors too
        other.collection.update(ids=[item.item_id], embeddings=[vector.tolist()])
    view = Substituted(store, new_items, new_vectors)
    for seed, text, words in [(0, "magic", ()), (100, "glob aliases", ("shared",)), (101, "xml", ("w8",)),
                              (5, "types", ("w1", "w3"))]:
        query = unit(seed)
        expected, _ = other.channels(query, text, 4, query_words=words)
        assert view.channels(query, text, 4, words) == expected
    assert [i for i, _ in store.lexical.search("subclassing", 5)] == ["d1:1"]  # the index is untouched
    assert store.dense(vectors[1], 1)[0].item.item_id == "d1:1"


def test_delete_removes_exactly_one_document(store):
    add_doc(store, doc_items("d1", "a.pdf", ["alpha", "beta"]))
    vectors = add_doc(store, doc_items("d2", "b.pdf", ["gamma"]), seed=5)
    store.delete(["d1"])
    assert [doc.doc_id for doc in store.documents()] == ["d2"]
    assert store.collection.count() == 1
    assert store.search(vectors[0], "alpha gamma", 5)[0].item.doc_id == "d2"
    assert store.lexical.search("alpha", 5) == []


def test_purge_removes_what_a_crash_left_behind(client, store):
    add_doc(store, doc_items("good", "a.pdf", ["alpha", "beta"]))
    add_doc(store, doc_items("pending", "b.pdf", ["gamma", "delta"]), commit=False)
    add_doc(store, doc_items("torn", "c.pdf", ["epsilon", "zeta", "eta"]))
    # A torn commit: the flip reached only some items (count differs from the committed n_items).
    store.collection.delete(ids=["torn:2"])
    reopened = Store(client, "tiny/model", "p1")
    assert reopened.purge_incomplete() == {"pending", "torn"}
    assert [doc.doc_id for doc in reopened.documents()] == ["good"]
    assert reopened.collection.count() == 2
    assert reopened.purge_incomplete() == set()


def test_reopen_rebuilds_listing_and_lexical_index(client, store):
    add_doc(store, doc_items("d1", "Garden photo.pdf", ["roses and tulips"]))
    reopened = Store(client, "tiny/model", "p1")
    assert [doc.source for doc in reopened.documents()] == ["Garden photo.pdf"]
    assert [i for i, _ in reopened.lexical.search("tulips", 5)] == ["d1:0"]
    assert reopened.items("d1")[0].thumbnail == "/assets/d1/0.jpg"


def test_collections_are_separate_per_model_and_listed_with_status(client, store):
    add_doc(store, doc_items("d1", "a.pdf", ["alpha"]))
    other = Store(client, "tiny/model", "p2", status="building")
    assert other.documents() == [] and other.name != store.name
    infos = {info.prompt_version: info for info in list_indexes(client)}
    assert (infos["p1"].status, infos["p1"].count) == ("active", 1)
    assert (infos["p2"].status, infos["p2"].count) == ("building", 0)
    other.set_status("active")
    assert {info.status for info in list_indexes(client)} == {"active"}


def test_large_document_is_written_committed_and_read_in_batches(client, monkeypatch):
    import freeret_rag.store as store_module

    # Chroma's limits, scaled down: max batch 5461 (embedded client), our get() page 5000.
    monkeypatch.setattr(type(client), "get_max_batch_size", lambda self: 1000)
    monkeypatch.setattr(store_module, "_PAGE", 700)
    store = Store(client, "big", "p1")
    n = 2500
    items = [Item(kind="text", text=f"chunk {i}", item_id=f"big:{i}", doc_id="big", source="big.txt", chunk=i)
             for i in range(n)]
    store.put(items, np.random.default_rng(0).standard_normal((n, DIM)).astype(np.float32), {"added_at": 1.0})
    assert store.commit("big") == n
    assert Store(client, "big", "p1").documents()[0].items == n
    assert store.purge_incomplete() == set()


def test_a_recent_pending_only_document_is_kept_for_a_resume_and_an_old_one_purged(client, store):
    import time

    add_doc(store, doc_items("recent", "r.pdf", ["alpha", "beta"]), commit=False)
    add_doc(store, doc_items("old", "o.pdf", ["gamma"]), commit=False)
    add_doc(store, doc_items("torn", "t.pdf", ["delta", "epsilon"]))
    store.collection.update(ids=["old:0"], metadatas=[{"put_at": time.time() - 7200}])  # stored 2 h ago
    store.collection.update(ids=["torn:1"], metadatas=[{"complete": False}])  # a flip cut half-way: never resumable
    reopened = Store(client, "tiny/model", "p1")
    assert reopened.purge_incomplete(keep_pending_s=3600) == {"old", "torn"}
    assert reopened.pending_items("recent").keys() == {"recent:0", "recent:1"}
    assert reopened.documents() == []  # kept, yet invisible
    assert reopened.purge_incomplete() == {"recent"}  # no keep period: purged like any half document


# -- the lexical index: BM25 by brute force, saved per generation, reopened ------------------------------

def bm25_brute_force(texts: dict[str, str], query: str, k1: float = 1.5, b: float = 0.75) -> list[tuple[str, float]]:
    """BM25 (Lucene idf, bm25s's defaults) term by term over bm25s's own tokens: (item_id, score) best
    first, ties by item id, zero scores left out."""
    import bm25s

    tokens = {item_id: bm25s.tokenize([text], stopwords="en", return_ids=False, show_progress=False)[0]
              for item_id, text in texts.items()}
    query_tokens = bm25s.tokenize([query], stopwords="en", return_ids=False, show_progress=False)[0]
    n = len(tokens)
    mean = sum(len(t) for t in tokens.values()) / n
    scores = {}
    for item_id, words in tokens.items():
        score = 0.0
        for term in query_tokens:
            df = sum(term in other for other in tokens.values())
            tf = words.count(term)
            if tf:
                idf = np.log(1 + (n - df + 0.5) / (df + 0.5))
                score += idf * tf / (tf + k1 * (1 - b + b * len(words) / mean))
        if score > 0:
            scores[item_id] = score
    return sorted(scores.items(), key=lambda pair: (-pair[1], pair[0]))


def assert_same_ranking(found: list[tuple[str, float]], expected: list[tuple[str, float]]) -> None:
    assert [i for i, _ in found] == [i for i, _ in expected]
    assert [s for _, s in found] == pytest.approx([s for _, s in expected], rel=1e-6)


VOCAB = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda omicron sigma tau upsilon phi chi "
         "psi omega mime glob ladybird garden").split()


def random_text(rng: np.random.Generator, words: int = 12) -> str:
    return " ".join(rng.choice(VOCAB, size=words))


def test_lexical_scores_equal_brute_force_and_bm25s_through_adds_and_removals():
    import bm25s

    rng = np.random.default_rng(3)
    index, texts = LexicalIndex(), {}
    for round_ in range(4):  # several merges: additions, replacements and removals in between
        batch = {f"d{round_}-{n}:{j}": (random_text(rng, int(rng.integers(1, 20))), f"d{round_}-{n}")
                 for n in range(3) for j in range(4)}
        index.add((i, text, "text", doc) for i, (text, doc) in batch.items())
        texts.update({i: text for i, (text, _) in batch.items()})
        if round_ == 2:
            replaced = list(texts)[-13]  # merged in the round before, and kept
            texts[replaced] = "omega omega omega " + texts[replaced]
            index.add([(replaced, texts[replaced], "text", replaced.split(":")[0])])
            gone = {i.split(":")[0] for i in list(texts)[:8]}
            index.remove_documents(gone)
            texts = {i: t for i, t in texts.items() if i.split(":")[0] not in gone}
        index.search("alpha", 1)  # merge now, so that later rounds update a built index
    assert len(index) == len(texts)
    ids = sorted(texts)
    reference = bm25s.BM25()
    reference.index(bm25s.tokenize([texts[i] for i in ids], stopwords="en", return_ids=False, show_progress=False),
                    show_progress=False)
    for query in ("alpha", "omega beta beta", "mime glob garden ladybird", "kappa the of", "nothing here"):
        expected = bm25_brute_force(texts, query)
        assert_same_ranking(index.search(query, 100), expected)
        assert_same_ranking(index.search(query, 5), expected[:5])
        tokens = [t for t in bm25s.tokenize([query], stopwords="en", return_ids=False, show_progress=False)[0]
                  if t in reference.vocab_dict]
        if tokens:  # bm25s (main's index) gives every item the same score
            theirs = dict(zip(ids, reference.get_scores(tokens)))
            assert [theirs[i] for i, _ in expected] == pytest.approx([s for _, s in expected], rel=1e-5)


def fill(store: Store, rng: np.random.Generator, docs: range, kinds=("pdf_page", "image")) -> None:
    for n in docs:
        items = [Item(kind=kinds[n % len(kinds)], text=random_text(rng), item_id=f"doc{n}:{j}", doc_id=f"doc{n}",
                      source=f"file_{n}.pdf", page=j + 1, words=tuple(rng.choice(VOCAB, size=3)))
                 for j in range(int(rng.integers(1, 5)))]
        add_doc(store, items, seed=10 * n)


def truth(client, name: str = "tiny/model") -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """What Chroma holds as complete items: id -> lexical text, id -> model words, id -> kind."""
    from freeret_rag.store import lexical_text

    got = Store(client, name, "p1").collection.get(where={"complete": True}, include=["metadatas", "documents"])
    lexical = {i: lexical_text(m["source"], d) for i, m, d in zip(got["ids"], got["metadatas"], got["documents"])}
    words = {i: m["words"] for i, m in zip(got["ids"], got["metadatas"]) if m.get("words")}
    return lexical, words, {i: m["kind"] for i, m in zip(got["ids"], got["metadatas"])}


QUERIES = ("alpha beta", "file 3 omega", "mime glob garden", "sigma sigma tau", "ladybird")


def assert_matches_brute_force(store: Store, client) -> None:
    lexical, words, kinds = truth(client)
    assert len(store) == len(lexical)
    assert {doc.doc_id: doc.items for doc in store.documents()} == dict(Counter(i.split(":")[0] for i in lexical))
    for query in QUERIES:
        assert_same_ranking(store.lexical.search(query, 50), bm25_brute_force(lexical, query))
        assert_same_ranking(store.words.search(query, 50), bm25_brute_force(words, query))
        images = {i: t for i, t in lexical.items() if kinds[i] == "image"}
        expected = [(i, s) for i, s in bm25_brute_force(lexical, query) if i in images]
        assert_same_ranking(store.lexical.search(query, 50, kinds=["image"]), expected)


def test_reopening_loads_the_saved_index_and_finds_what_a_fresh_rebuild_finds(client, tmp_path, monkeypatch):
    rng = np.random.default_rng(5)
    store = Store(client, "tiny/model", "p1", cache_dir=tmp_path / "lexical")
    fill(store, rng, range(12))
    store.delete(["doc2", "doc7"])
    fill(store, rng, range(12, 15))
    assert store.persist()
    rebuilt = Store(client, "tiny/model", "p1")  # no saved state: read back from Chroma
    assert rebuilt.unsaved
    with monkeypatch.context() as patched:  # the saved state is loaded: opening reads no item
        patched.setattr(Store, "_get", lambda *args: pytest.fail("read the items back instead of loading"))
        reopened = Store(client, "tiny/model", "p1", cache_dir=tmp_path / "lexical")
    assert not reopened.unsaved
    for opened in (store, reopened, rebuilt):
        assert_matches_brute_force(opened, client)
    vector = unit(3)
    for query in QUERIES:
        fresh = [(h.item, h.fused_score) for h in rebuilt.search(vector, query, 8, query_words=["tau"])]
        assert [(h.item, h.fused_score) for h in reopened.search(vector, query, 8, query_words=["tau"])] == fresh
    assert reopened.documents() == rebuilt.documents()


def test_a_saved_index_of_an_older_generation_is_never_used(client, tmp_path):
    cache = tmp_path / "lexical"
    rng = np.random.default_rng(6)
    first = Store(client, "tiny/model", "p1", cache_dir=cache)
    fill(first, rng, range(6))
    assert first.persist()
    saved = first.saved_path.read_bytes()
    # Another process opens (from the saved state), adds and deletes, and never saves.
    other = Store(client, "tiny/model", "p1", cache_dir=cache)
    fill(other, rng, range(6, 9))
    other.delete(["doc1"])
    assert other.saved_path.read_bytes() == saved  # still the older generation's state on disk
    assert first.persist() is False  # the first view is stale now: never saved as current
    reopened = Store(client, "tiny/model", "p1", cache_dir=cache)
    assert reopened.unsaved  # rebuilt from Chroma, not loaded
    assert_matches_brute_force(reopened, client)
    assert "doc1" not in {doc.doc_id for doc in reopened.documents()}
    assert not any(i.startswith("doc1:") for i, _ in reopened.lexical.search(" ".join(VOCAB), 100))
    # The first view changes Chroma too: it was stale before, so what it saves would be wrong: it does not.
    fill(first, rng, range(9, 10))
    assert first.persist() is False
    assert reopened.persist() is False  # the first's change made this view stale as well
    assert_matches_brute_force(Store(client, "tiny/model", "p1", cache_dir=cache), client)


def test_a_change_interrupted_after_its_new_generation_is_never_served_from_the_old_save(client, tmp_path,
                                                                                          monkeypatch):
    cache = tmp_path / "lexical"
    store = Store(client, "tiny/model", "p1", cache_dir=cache)
    fill(store, np.random.default_rng(7), range(4))
    assert store.persist()
    # A crash in the middle of a deletion: Chroma changed, the process never updated or saved its view.
    monkeypatch.setattr(Store, "_forget", lambda self, doc_ids: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        store.delete(["doc0"])
    monkeypatch.undo()
    assert store.persist() is False  # its view is not of any generation any more
    reopened = Store(client, "tiny/model", "p1", cache_dir=cache)
    assert reopened.unsaved and "doc0" not in {doc.doc_id for doc in reopened.documents()}
    assert_matches_brute_force(reopened, client)


def test_an_unreadable_or_foreign_save_is_ignored(client, tmp_path):
    cache = tmp_path / "lexical"
    store = Store(client, "tiny/model", "p1", cache_dir=cache)
    fill(store, np.random.default_rng(8), range(3))
    assert store.persist()
    store.saved_path.write_bytes(b"not a numpy archive")
    reopened = Store(client, "tiny/model", "p1", cache_dir=cache)
    assert reopened.unsaved
    assert_matches_brute_force(reopened, client)


def test_an_index_without_a_generation_is_saved_only_when_stamped(client, tmp_path, monkeypatch):
    """An index written by an older version has no generation: opening never writes one (nor saves),
    a writer stamps one and saves, and the next opening loads what it saved."""
    from freeret_rag.store import GENERATION

    cache = tmp_path / "lexical"
    fill(Store(client, "tiny/model", "p1"), np.random.default_rng(9), range(4))
    old = Store(client, "tiny/model", "p1")
    old.collection.modify(metadata={k: v for k, v in old._stored_meta().items() if k != GENERATION})
    opened = Store(client, "tiny/model", "p1", cache_dir=cache)
    assert opened.generation is None and opened.persist() is False and not cache.exists()
    assert GENERATION not in opened._stored_meta()
    assert opened.persist(stamp=True) and opened._stored_meta()[GENERATION] == opened.generation
    with monkeypatch.context() as patched:
        patched.setattr(Store, "_get", lambda *args: pytest.fail("read the items back instead of loading"))
        reopened = Store(client, "tiny/model", "p1", cache_dir=cache)
    assert_matches_brute_force(reopened, client)
