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
    photo = next(item for item in items if item.item_id == "img-ladybird")
    # as the app indexes an image: a copy in the asset folder (JPEG) with a thumbnail
    assert tmp_path in Path(photo.images[0]).parents and photo.images[0].endswith(".jpg") and photo.thumbnail
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


def test_eval_pdf_pages_are_rendered_at_the_apps_size(tmp_path):
    """Oracle: PyMuPDF itself, at the size MediaSettings documents (longest side 1280 px, at most
    200 dpi), computed here by hand rather than with the loader's helpers."""
    import pymupdf
    from PIL import Image

    dataset = load_beir(ASSETS / "multimodal")
    pages = [item for item in corpus_items(dataset, tmp_path) if item.kind == "pdf_page"]
    assert [item.page for item in pages] == [1, 2, 9, 14, 15, 16]
    with pymupdf.open(ASSETS / "multimodal" / "media" / "shared-mime-info-spec.pdf") as pdf:
        for item in pages:
            page = pdf[item.page - 1]
            width_pt, height_pt = page.rect.width, page.rect.height  # 609.7 x 789.0 pt (US Letter-ish)
            zoom = min(1280 / max(width_pt, height_pt), 200 / 72)
            pixmap = page.get_pixmap(matrix=pymupdf.Matrix(zoom, zoom), alpha=False)
            assert max(pixmap.width, pixmap.height) == 1280
            assert abs(pixmap.width - 1280 * width_pt / height_pt) <= 1
            with Image.open(item.images[0]) as image:
                assert (item.item_id, image.size) == (item.item_id, (pixmap.width, pixmap.height))
            assert item.thumbnail and Path(item.thumbnail).is_file()


def test_eval_video_segments_hold_the_frames_the_app_samples(tmp_path):
    """vid-yellow-flower is 3-6 s of a 12 fps clip: the loader samples the centres of four 0.75 s
    slices, 3.375 / 4.125 / 4.875 / 5.625 s = frames 40, 49, 58, 67 (decoded here with decord)."""
    import decord
    import numpy as np
    from PIL import Image

    dataset = load_beir(ASSETS / "multimodal")
    items = {item.item_id: item for item in corpus_items(dataset, tmp_path)}
    reader = decord.VideoReader(str(ASSETS / "multimodal" / "media" / "nature-scenes.mp4"))
    assert reader.get_avg_fps() == 12 and len(reader) == 108
    expected = reader.get_batch([40, 49, 58, 67]).asnumpy().astype(np.int16)
    segment = items["vid-yellow-flower"]
    got = np.stack([np.asarray(Image.open(path).convert("RGB"), dtype=np.int16) for path in segment.images])
    assert got.shape == expected.shape == (4, 240, 320, 3)
    assert np.abs(got - expected).mean() < 3  # JPEG quality 90
    assert [(items[i].t_start, items[i].t_end) for i in ("vid-ladybird", "vid-yellow-flower", "vid-marigold")] == [
        (0.0, 3.0), (3.0, 6.0), (6.0, 9.0)]


def test_spans_and_pages_the_loaders_do_not_make_are_errors(tmp_path, samples_dir):
    import shutil

    cases = {"video": ({"_id": "v", "video": "clip.mp4", "t_start": 1.0, "t_end": 4.0}, "nature-scenes.mp4",
                       "1-4 s is not a segment the app indexes; cut into 3 s segments it has 0-3, 3-6, 6-9 s"),
             "page": ({"_id": "p", "pdf": "spec.pdf", "page": 18}, "shared-mime-info-spec.pdf",
                      "spec.pdf: the PDF loader gave no page 18")}  # the spec has 17 pages
    for name, (record, sample, message) in cases.items():
        qrels = f"query-id\tcorpus-id\tscore\nq\t{record['_id']}\t1\n"
        root = write(tmp_path / name, [record], [{"_id": "q", "text": "x"}], qrels)
        shutil.copy(samples_dir / sample, root / (record.get("video") or record["pdf"]))
        with pytest.raises(ValueError, match=message):
            list(corpus_items(load_beir(root), tmp_path / f"assets-{name}"))
