"""The BEIR loader and the two checked-in eval sets."""

import json
import re
from pathlib import Path

import pytest

from freeret_rag.eval.datasets import corpus_items, load_beir, query_of

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "eval"


def test_multimodal_set_is_small_and_complete(tmp_path):
    root = ASSETS / "multimodal"
    assert sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) < 2_000_000
    dataset = load_beir(root)
    items = list(corpus_items(dataset, tmp_path))
    kinds = {kind: sum(item.kind == kind for item in items) for kind in ("text", "image", "pdf_page", "video_segment")}
    assert kinds == {"text": 4, "image": 10, "pdf_page": 6, "video_segment": 3}
    assert [item.item_id for item in items] == list(dataset.corpus)
    for item in items:
        assert all(Path(image).is_file() for image in item.images)
    page = next(item for item in items if item.item_id == "pdf-p9")
    assert page.page == 9 and "MIME-Magic" in page.text  # the text layer of the rendered page
    segment = next(item for item in items if item.item_id == "vid-yellow-flower")
    assert (segment.t_start, segment.t_end, len(segment.images)) == (3.0, 6.0, 4)
    assert len(dataset.judged_queries()) == 16
    assert Path(query_of(dataset, "q-img-circle").image).is_file()
    assert query_of(dataset, "q-ladybug").image is None


def test_pydoc_set_queries_are_fair():
    dataset = load_beir(ASSETS / "pydoc")
    assert len(dataset.corpus) == 656 and len(dataset.judged_queries()) == 92
    for qid, grades in dataset.qrels.items():
        words = set(re.findall(r"[a-z_0-9]+", dataset.queries[qid]["text"].lower()))
        targets = [doc for doc, grade in grades.items() if grade == 2]
        assert targets, qid
        for doc in targets:  # a query never names the function it looks for
            assert doc.rsplit(".", 1)[-1].lower() not in words, (qid, doc)


def write(root: Path, corpus: list[dict], queries: list[dict], qrels: str) -> Path:
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus))
    (root / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in queries))
    (root / "qrels" / "test.tsv").write_text(qrels)
    return root


def test_loader_reads_titles_grades_and_rejects_bad_sets(tmp_path):
    root = write(tmp_path / "ok", [{"_id": "d1", "title": "T", "text": "body"}, {"_id": "d2", "text": "x"}],
                 [{"_id": "q1", "text": "find"}, {"_id": "q2", "text": "none"}],
                 "query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td2\t0\n")
    dataset = load_beir(root)
    assert dataset.qrels == {"q1": {"d1": 2, "d2": 0}}
    assert dataset.judged_queries() == ["q1"]
    item = next(corpus_items(dataset, tmp_path / "media"))
    assert (item.kind, item.text, item.item_id) == ("text", "T\nbody", "d1")

    bad = write(tmp_path / "bad", [{"_id": "d1", "text": "x"}], [{"_id": "q1", "text": "y"}],
                "query-id\tcorpus-id\tscore\nq1\tmissing\t1\n")
    with pytest.raises(ValueError, match="missing"):
        load_beir(bad)
    with pytest.raises(FileNotFoundError, match="corpus.jsonl"):
        load_beir(tmp_path / "nowhere")
