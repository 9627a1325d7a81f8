"""A re-index copies the vectors of kinds whose embedding did not change (issue 10, "overlap and reuse").

Every item stores its kind's embedding identity (`FreeRet.kind_version`). A re-index with the same
model copies the items whose identity is unchanged and embeds the others. The expected sets come
from the index itself (items by kind) and the expected vectors from the engine called directly
on those items, never from the re-index code.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from PIL import Image

from freeret_rag import prompts
from freeret_rag.engine import EngineSettings, FreeRet
from freeret_rag.items import Item
from freeret_rag.library import Library
from freeret_rag.store import list_indexes

from test_library import copy_samples


def count_embeddings(engine: FreeRet, monkeypatch) -> Counter:
    """Items the engine embeds, by kind (both embedding entry points the library may call)."""
    counted: Counter = Counter()
    for name in ("embed", "embed_with_words"):
        original = getattr(engine, name)

        def counting(items, *args, _original=original, **kwargs):
            counted.update(item.kind for item in items)
            return _original(items, *args, **kwargs)

        monkeypatch.setattr(engine, name, counting)
    return counted


def stored_vectors(library: Library) -> dict[str, np.ndarray]:
    """item_id -> vector, read from Chroma directly."""
    rows = library.store.collection.get(include=["embeddings"])
    return {item_id: np.asarray(vector, np.float32) for item_id, vector in zip(rows["ids"], rows["embeddings"])}


def items_by_kind(library: Library) -> dict[str, list]:
    found: dict[str, list] = {}
    for doc in library.documents():
        for item in library.items(doc.doc_id):
            found.setdefault(item.kind, []).append(item)
    return found


def test_a_new_visual_budget_re_embeds_pictures_and_copies_text_chunks(tiny_engine, tmp_path, monkeypatch):
    auto = tiny_engine("qwen2_vl")
    full = FreeRet(auto.lm, EngineSettings(visual_budget="full"))
    assert auto.prompt_version != full.prompt_version  # another embedding space: a re-index is due
    src, data = copy_samples(tmp_path / "in", ["README.md", "LadyBird.jpg", "shared-mime-info-spec.pdf",
                                               "nature-scenes.mp4"]), tmp_path / "data"
    first = Library(auto, data)
    assert not first.add([src]).skipped
    before, old = items_by_kind(first), stored_vectors(first)
    assert {"text", "image", "pdf_page", "video_segment"} <= set(before)

    embedded = count_embeddings(full, monkeypatch)
    library = Library(full, data, allow_mismatch=True)
    report = library.reindex()
    assert not report.skipped and not report.waiting
    texts = len(before["text"])
    assert report.reused == texts
    # Every picture is embedded again at the new budget; no text chunk is.
    assert embedded == Counter({kind: len(items) for kind, items in before.items() if kind != "text"})
    assert f"{texts} item(s) copied from the old index" in report.summary()

    after, new = items_by_kind(library), stored_vectors(library)
    assert {k: sorted(i.item_id for i in v) for k, v in after.items()} == \
        {k: sorted(i.item_id for i in v) for k, v in before.items()}
    assert [i.model_id for i in list_indexes(library.client)] == [full.model_id]  # the old index is retired
    # The copied text vectors are what the new engine computes for those items itself ...
    text_items = after["text"]
    direct = FreeRet(auto.lm, EngineSettings(visual_budget="full")).embed(text_items)
    assert np.allclose(np.stack([new[i.item_id] for i in text_items]), direct, atol=1e-6)
    assert all(i.words for i in text_items)  # the words channel's words came along
    # ... and the pictures' vectors are the new budget's, which differ from the old ones (the tiny
    # random model moves them little, but beyond the 1e-7 noise of embedding the same item twice).
    for kind in ("image", "pdf_page"):
        pictures = after[kind]
        direct = full.embed(pictures)
        assert np.allclose(np.stack([new[i.item_id] for i in pictures]), direct, atol=1e-6)
        assert not np.allclose(np.stack([old[i.item_id] for i in pictures]), direct, atol=1e-5)
    assert library.search("LadyBird", k=1, kinds=["image"], rerank=False)[0].item.source == "LadyBird.jpg"


def reindex_with_version(engine: FreeRet, data, version: str, monkeypatch) -> tuple:
    """Re-index `data` as if PROMPT_VERSION were `version`: (report, items embedded, the library).
    Only the version and the counting are undone afterwards (wording patched by the caller stays)."""
    with monkeypatch.context() as patch:
        patch.setattr(prompts, "PROMPT_VERSION", version)
        embedded = count_embeddings(engine, patch)
        library = Library(engine, data, allow_mismatch=True)
        report = library.reindex()
    return report, sum(embedded.values()), library


def test_prompt_changes_reuse_only_what_they_leave_alone(tiny_engine, tmp_path, monkeypatch):
    text_model = tiny_engine("llama")
    src, data = copy_samples(tmp_path / "in", ["README.md"]), tmp_path / "data"
    [doc] = Library(text_model, data).add([src]).added
    n = doc.items
    assert n > 1

    # Only the version string changed: every vector is copied.
    report, embedded, _ = reindex_with_version(text_model, data, "test-v2", monkeypatch)
    assert (report.reused, embedded, len(report.added)) == (n, 0, 1)

    # Another kind's wording changed: the text chunks are still copied.
    monkeypatch.setitem(prompts.KIND_WORDING, "image", prompts.KindWording("the photo", "the photo", "its colours"))
    report, embedded, _ = reindex_with_version(text_model, data, "test-v3", monkeypatch)
    assert (report.reused, embedded) == (n, 0)

    # The query's instruction changed: a query is embedded differently, no item vector is kept.
    wording = prompts.KIND_WORDING["query"]
    monkeypatch.setitem(prompts.KIND_WORDING, "query", prompts.KindWording(wording.noun, wording.modality,
                                                                          "the words the user typed"))
    report, embedded, _ = reindex_with_version(text_model, data, "test-v4", monkeypatch)
    assert (report.reused, embedded) == (0, n)

    # The text's own wording changed: embedded again.
    monkeypatch.setitem(prompts.KIND_WORDING, "text", prompts.KindWording("the note", "the note", "its facts"))
    report, embedded, _ = reindex_with_version(text_model, data, "test-v5", monkeypatch)
    assert (report.reused, embedded) == (0, n)


def test_old_indexes_without_kind_versions_are_re_embedded(tiny_engine, tmp_path, monkeypatch):
    text_model = tiny_engine("llama")

    class Older:  # an engine from before kinds had an identity: its items store none
        def __getattr__(self, name):
            if name == "kind_version":
                raise AttributeError(name)
            return getattr(text_model, name)

    src, data = copy_samples(tmp_path / "in", ["README.md"]), tmp_path / "data"
    [doc] = Library(Older(), data).add([src]).added
    report, embedded, _ = reindex_with_version(text_model, data, "test-v2", monkeypatch)
    assert (report.reused, embedded) == (0, doc.items)


def test_items_without_words_are_re_embedded_for_the_words_channel(tiny_engine, tmp_path, monkeypatch):
    text_model = tiny_engine("llama")
    src, data = copy_samples(tmp_path / "in", ["README.md"]), tmp_path / "data"
    [doc] = Library(text_model, data, words=False).add([src]).added
    report, embedded, library = reindex_with_version(text_model, data, "test-v2", monkeypatch)
    assert (report.reused, embedded) == (0, doc.items)
    assert all(item.words for item in library.items(doc.doc_id))


def test_a_document_of_several_kinds_copies_only_the_unchanged_kind(tiny_engine, tmp_path, monkeypatch):
    auto = tiny_engine("qwen2_vl")
    full = FreeRet(auto.lm, EngineSettings(visual_budget="full"))
    picture = tmp_path / "noise.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (600, 700, 3), dtype=np.uint8)).save(picture)  # over the 448 x 448 cap
    items = [Item("text", text="Ladybirds eat aphids in the garden.", doc_id="mixed", source="notes"),
             Item("image", images=(str(picture),), doc_id="mixed", source="notes")]
    data = tmp_path / "data"
    Library(auto, data).ingest_items("notes", "mixed", items, {"content_hash": "0" * 64, "path": "", "file_type": "x",
                                                                "added_at": 0.0}, lambda done: None)
    old = stored_vectors(Library(auto, data))
    embedded = count_embeddings(full, monkeypatch)
    library = Library(full, data, allow_mismatch=True)
    report = library.reindex()
    assert (report.reused, embedded) == (1, Counter({"image": 1}))
    [text, image] = sorted(library.items("mixed"), key=lambda item: item.kind, reverse=True)
    assert (text.kind, image.kind) == ("text", "image")  # both are in the new index, committed together
    new = stored_vectors(library)
    assert np.array_equal(new[text.item_id], old[text.item_id])
    assert np.allclose(new[text.item_id], full.embed([text])[0], atol=1e-6)


def test_another_model_reuses_nothing(tiny_engine, tmp_path, monkeypatch):
    vision, text_model = tiny_engine("qwen2_vl"), tiny_engine("llama")
    assert vision.kind_version("text") == text_model.kind_version("text")  # the same prompts: only the model differs
    src, data = copy_samples(tmp_path / "in", ["README.md"]), tmp_path / "data"
    [doc] = Library(vision, data).add([src]).added
    embedded = count_embeddings(text_model, monkeypatch)
    report = Library(text_model, data, allow_mismatch=True).reindex()
    assert (report.reused, sum(embedded.values()), len(report.added)) == (0, doc.items, 1)


@pytest.mark.parametrize("family", ["qwen2_vl", "smolvlm"])
def test_kind_versions_follow_what_changes_vectors(tiny_engine, family):
    engine = tiny_engine(family)
    variant = lambda **knobs: FreeRet(engine.lm, EngineSettings(**knobs))  # noqa: E731
    full = variant(visual_budget="full")
    for kind in ("image", "pdf_page", "video_segment"):
        assert full.kind_version(kind) != engine.kind_version(kind)
        assert variant(max_image_side=512).kind_version(kind) != engine.kind_version(kind)
    assert full.kind_version("text") == engine.kind_version("text")
    assert variant(max_image_side=512).kind_version("text") == engine.kind_version("text")
    for knobs in ({"embed_point": "final"}, {"priors": False}, {"max_text_chars": 100}):
        assert variant(**knobs).kind_version("text") != engine.kind_version("text")
    assert len({engine.kind_version(kind) for kind in ("text", "image", "pdf_page", "video_segment")}) == 4
