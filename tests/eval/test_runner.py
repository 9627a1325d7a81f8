"""The eval runner and the `eval` command, end to end."""

import json
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from freeret_rag.cli import main
from freeret_rag.eval.datasets import load_beir
from freeret_rag.eval.runner import EvalConfig, evaluate_engine, format_report, latency

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "eval"
STAGES = ("lexical", "dense", "plain", "fused", "final", "reranked")  # an engine without the words read-out
METRICS = {"recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10"}


class BagOfWordsEngine:
    """A model-free engine: hashed bag-of-words vectors; the reranker is an oracle reading the qrels."""

    model_id, prompt_version, capabilities = "fake-bow", "fake-1", frozenset({"text"})

    def __init__(self, grades: dict[str, dict[str, int]]) -> None:
        self.grades = dict(grades)  # query text -> {item id: grade}
        self.reranked: list[tuple[str, int]] = []

    def supports(self, item) -> bool:
        return not item.images

    def _vector(self, text: str) -> np.ndarray:
        vector = np.zeros(32, dtype=np.float32)
        for word in text.lower().split():
            vector[zlib.crc32(word.encode()) % 32] += 1
        return vector / max(float(np.linalg.norm(vector)), 1e-6)

    def embed(self, items, batch_size=8):
        return np.stack([self._vector(item.text) for item in items])

    def embed_query(self, query):
        return self._vector(query.text)

    def write_query(self, item) -> str:
        """The self-check's test query: the item's words backwards (not a verbatim span), graded 1."""
        query = " ".join(reversed(item.text.split()))
        self.grades.setdefault(query, {item.item_id: 1})
        return query

    def rerank(self, query, hits, batch_size=8):
        self.reranked.append((query.text, len(hits)))
        grades = self.grades[query.text]
        scored = [replace(hit, rerank_score=float(grades.get(hit.item.item_id, 0))) for hit in hits]
        return sorted(scored, key=lambda hit: -hit.rerank_score)


@pytest.fixture
def toy_dataset(tmp_path):
    corpus = {"d1": "apples and pears grow on trees", "d2": "the train leaves at noon",
              "d3": "fresh pears from the orchard", "d4": "a red bicycle with a bell",
              "d5": "trees shed leaves in autumn", "d6": "noon is twelve o'clock"}
    queries = {"q1": "where do pears grow", "q2": "when does the train leave"}
    qrels = {"q1": {"d3": 2, "d1": 1}, "q2": {"d2": 2}}
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in corpus.items()))
    (tmp_path / "queries.jsonl").write_text("".join(json.dumps({"_id": i, "text": t}) + "\n"
                                                    for i, t in queries.items()))
    (tmp_path / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{g}\n" for q, gs in qrels.items() for d, g in gs.items()))
    return load_beir(tmp_path), {queries[q]: grades for q, grades in qrels.items()}


def test_runner_stages_with_an_oracle_reranker(toy_dataset, tmp_path):
    dataset, grades = toy_dataset
    engine = BagOfWordsEngine(grades)
    report = evaluate_engine(engine, dataset, EvalConfig(rerank_k=4, depth=6, baselines=("bm25",)), work_dir=tmp_path)
    assert list(report["stages"]) == [*STAGES, "baseline:bm25"]
    asked = [n for text, n in engine.reranked if text in grades]
    assert asked == [4, 4]  # top K of the fused ranking, once per judged query
    check = report["self_check"]["all"]
    # the test queries are bags of the items' own words: the first stage already finds every one first,
    # so even an oracle reranker cannot improve it, and it gets no share (final = fused, no rerank cost)
    assert len(check["queries"]) == 6 and check["mrr"]["fused"] == 1.0 and check["rerank_share"] == 0.0
    assert report["per_query"]["q1"]["final"] == report["per_query"]["q1"]["fused"]
    reranked = report["stages"]["reranked"]["metrics"]
    # the oracle puts the best judged item first whenever fusion brought it into the top 4
    for qid in ("q1", "q2"):
        fused = report["per_query"][qid]["fused"]
        best = max(dataset.qrels[qid], key=dataset.qrels[qid].get)
        if best in fused[:4]:
            assert report["per_query"][qid]["reranked"][0] == best
    assert reranked["mrr@10"] >= report["stages"]["fused"]["metrics"]["mrr@10"]
    assert report["dataset"]["indexed_items"] == 6 and report["dataset"]["evaluated_queries"] == 2
    assert report["stages"]["final"]["metrics"]["mrr@10"] >= report["stages"]["fused"]["metrics"]["mrr@10"]
    assert max(check["weights"]["*"]) == 1.0 and report["self_check"]["nowords"] is None  # no words read-out
    assert set(report["targets"]) == {"fusion is safe", "the rerank gate is safe"}
    for result in report["stages"].values():
        assert set(result["metrics"]) == METRICS
        assert all(0.0 <= value <= 1.0 for value in result["metrics"].values())
    assert "reranked" in format_report(report)


def test_targets_by_hand():
    from freeret_rag.eval.runner import targets

    def stage(value):
        return {"metrics": {"ndcg@10": value}}

    found = targets({"lexical": stage(0.5), "dense": stage(0.7), "fused": stage(0.695), "final": stage(0.6)})
    assert found["fusion is safe"]["holds"] and found["fusion is safe"]["right"] == 0.7
    assert not found["the rerank gate is safe"]["holds"]  # 0.6 < 0.695 - 0.01


def test_latency_summary():
    assert latency([]) == {"mean": 0.0, "p50": 0.0, "p95": 0.0}
    summary = latency([float(v) for v in range(1, 21)])  # 1..20 ms
    assert summary["p50"] == 10.5 and summary["mean"] == 10.5
    assert summary["p95"] == pytest.approx(19.05)


def run_eval(tmp_path, model_dir, *extra) -> dict:
    output = tmp_path / "report.json"
    code = main(["--data-dir", str(tmp_path / "unused"), "eval", str(ASSETS / "multimodal"), "--model", str(model_dir),
                 "--output", str(output), "--quiet", *extra])
    assert code == 0
    return json.loads(output.read_text())


def test_eval_command_end_to_end_with_a_tiny_vlm(tmp_path, tiny_model_dirs, capsys):
    report = run_eval(tmp_path, tiny_model_dirs["qwen2_vl"], "--limit", "6", "--rerank-k", "3", "--depth", "20",
                      "--check-queries", "6")
    stages = list(report["stages"])
    assert stages[:7] == ["lexical", "dense", "words", "plain", "fused", "final", *stages[6:7]]
    assert set(stages) - {"fused-nowords", "final-nowords"} == {*STAGES, "words"}
    for result in report["stages"].values():
        assert set(result["metrics"]) == METRICS and set(result["ms_per_query"]) == {"mean", "p50", "p95"}
    data = report["dataset"]
    assert (data["indexed_items"], data["evaluated_queries"], data["skipped_queries"]) == (23, 6, [])
    assert report["model"]["settings"]["embed_point"] == "attn" and report["config"]["rerank_k"] == 3
    assert report["index"]["seconds"] > 0 and set(report["per_query"]) == {
        "q-ladybug", "q-img-circle", "q-magic", "q-yellow", "q-hours", "q-img-ladybug"}
    printed = capsys.readouterr().out
    assert "reranked" in printed and "report written to" in printed


def test_eval_command_ablations_with_a_text_only_model(tmp_path, tiny_model_dirs):
    report = run_eval(tmp_path, tiny_model_dirs["llama"], "--limit", "6", "--embed-point", "mean", "--no-priors",
                      "--rerank-framing", "yesno", "--rerank-k", "2", "--no-words", "--depth", "20",
                      "--check-queries", "4")
    assert list(report["stages"]) == list(STAGES)
    settings = report["model"]["settings"]
    assert (settings["embed_point"], settings["priors"], settings["rerank_framing"]) == ("mean", False, "yesno")
    assert report["config"]["words"] is False and report["self_check"]["nowords"] is None
    data = report["dataset"]
    # a text-only model indexes texts and PDF pages (text layer), not pictures or video; image queries are skipped
    assert data["indexed_items"] == 10 and data["left_out_items"] == {"image": 10, "video_segment": 3}
    assert data["skipped_queries"] == ["q-img-circle", "q-img-ladybug"] and data["evaluated_queries"] == 4
