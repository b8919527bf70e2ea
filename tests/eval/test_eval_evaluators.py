"""Evaluators and the runner with a tiny deterministic encoder, plus cross-checks against mteb."""
import hashlib
import types

import numpy as np
import pytest
from reference_libs import require

from gemini_embed.eval import custom_task, evaluate, evaluate_task, format_table, truncated, undersample
from gemini_embed.eval import datasets as ds
from gemini_embed.tokenize import apply_prompt
from gemini_embed.eval import evaluators as ev
from gemini_embed.eval import tasks as tasks_lib

DIM = 1024


ROTATION = np.linalg.qr(np.random.default_rng(0).normal(size=(DIM, DIM)))[0].astype(np.float32)


class BagOfWords:
    """Hashed bag of words, L2-normalised, then rotated by a fixed orthogonal matrix (cosines are
    kept, every dimension is dense); records every call's (task, titles, texts)."""

    def __init__(self):
        self.calls = []

    def __call__(self, texts, task=None, titles=None):
        apply_prompt(texts, task, titles)  # the Embedder's contract: valid task, titles only for documents
        self.calls.append((task, titles, list(texts)))
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                out[i, int(hashlib.md5(w.encode()).hexdigest(), 16) % DIM] += 1.0
        out[:, -1] += 1e-3  # no all-zero rows
        return (out / np.linalg.norm(out, axis=1, keepdims=True)) @ ROTATION


def check_result(r, metric):
    assert set(r) >= {"main_score", "metric", "scores", "num_samples"}
    assert r["metric"] == metric and r["main_score"] == r["scores"][metric]
    assert isinstance(r["main_score"], float)


@pytest.fixture
def beir(tmp_path):
    (tmp_path / "qrels").mkdir()
    docs = [("d1", "Cats", "cats purr and sleep"), ("d2", "", "dogs bark loudly"), ("d3", "Fish", "fish swim")]
    (tmp_path / "corpus.jsonl").write_text(
        "".join(f'{{"_id": "{i}", "title": "{t}", "text": "{x}"}}\n' for i, t, x in docs))
    (tmp_path / "queries.jsonl").write_text(
        '{"_id": "q1", "text": "cats purr"}\n{"_id": "q2", "text": "dogs bark"}\n{"_id": "q3", "text": "unjudged"}\n')
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t2\n")
    return tmp_path


def test_retrieval_prompts_and_titles(beir):
    task = custom_task("retrieval", beir, query_task="fact checking")
    enc = BagOfWords()
    r = evaluate_task(enc, task, use_prompts=True)
    check_result(r, "ndcg_at_10")
    assert r["num_samples"] == 2  # only queries in the qrels
    (q_task, q_titles, q_texts), (d_task, d_titles, d_texts) = enc.calls
    assert (q_task, q_titles, q_texts) == ("fact checking", None, ["cats purr", "dogs bark"])
    assert d_task == "document" and d_titles == ["Cats", None, "Fish"] and d_texts[0] == "cats purr and sleep"
    assert r["main_score"] == pytest.approx(1.0)

    enc = BagOfWords()
    evaluate_task(enc, task, use_prompts=False)
    assert [c[0] for c in enc.calls] == [None, None] and [c[1] for c in enc.calls] == [None, None]
    assert enc.calls[1][2] == ["Cats cats purr and sleep", "dogs bark loudly", "Fish fish swim"]


def test_sts_pairs_bitext_reranking_clustering_classification():
    enc = BagOfWords()
    sts = ds.STSData(["a b c", "a b", "x y"], ["a b c", "a z", "q r"], np.array([5.0, 2.5, 0.0]))
    task = tasks_lib.Task("t", "sts", None, "sentence similarity", main_metric="cosine_spearman")
    r = ev.evaluate_sts(enc, sts, task)
    check_result(r, "cosine_spearman")
    assert r["main_score"] == pytest.approx(1.0) and enc.calls[0][0] == "sentence similarity"

    pairs = ds.PairData(["a b c", "a b", "x y", "m n"], ["a b c", "a z", "q r", "m n o"], np.array([1, 1, 0, 1]))
    r = ev.evaluate_pair_classification(enc, pairs, dataclass_replace(task, "pair_classification", "cosine_ap"))
    check_result(r, "cosine_ap")
    assert r["main_score"] == pytest.approx(1.0) and r["scores"]["cosine_accuracy"] == 1.0

    words = [f"w{i} v{i}" for i in range(20)]
    r = ev.evaluate_bitext(enc, ds.BitextData(words, list(words)), dataclass_replace(task, "bitext", "f1"))
    check_result(r, "f1")
    assert r["main_score"] == pytest.approx(1.0) and r["scores"]["accuracy"] == 1.0

    rr = ds.RerankingData(["cats purr"], [["dogs bark", "cats purr loudly", "fish"]], [np.array([0, 1, 0])])
    r = ev.evaluate_reranking(enc, rr, dataclass_replace(task, "reranking", "map"))
    check_result(r, "map")
    assert r["main_score"] == 1.0 and r["scores"]["mrr_at_10"] == 1.0

    texts = [f"topic{c} word{i}" for c in range(3) for i in range(30)]
    labels = [c for c in range(3) for _ in range(30)]
    for options in ({"protocol": "sets", "n_sets": 3, "set_size": 60}, {"protocol": "bootstrap", "draw_size": 200}):
        t = tasks_lib.Task("c", "clustering", None, "clustering", main_metric="v_measure", options=options)
        r = ev.evaluate_clustering(enc, ds.ClusteringData(texts, labels), t)
        check_result(r, "v_measure")
        assert r["main_score"] > 0.5 and len(r["scores"]["v_measures"]) == options.get("n_sets", 10)

    cls = ds.ClassificationData(texts, labels, texts[::3], labels[::3])
    t = tasks_lib.Task("k", "classification", None, "classification", main_metric="accuracy",
                       options={"samples_per_label": 4})
    enc = BagOfWords()
    r = ev.evaluate_classification(enc, cls, t)
    check_result(r, "accuracy")
    assert r["main_score"] > 0.9 and len(r["scores"]["scores_per_experiment"]) == 10
    assert len(enc.calls[0][2]) <= 3 * 4 * 10 and enc.calls[1][2] == texts[::3]  # train union, then test


def dataclass_replace(task, type_, metric):
    import dataclasses
    return dataclasses.replace(task, type=type_, main_metric=metric)


def test_undersample_reshuffles_previous_order():
    labels = ["a"] * 20 + ["b"] * 5

    def first_three_per_label(order):
        counts, out = {}, []
        for i in order:
            if counts.get(labels[i], 0) < 3:
                out.append(i)
                counts[labels[i]] = counts.get(labels[i], 0) + 1
        return out

    subsets = undersample(labels, 3, n_experiments=2, seed=42)
    idxs = list(range(25))
    np.random.RandomState(42).shuffle(idxs)
    assert subsets[0] == first_three_per_label(idxs)
    np.random.RandomState(42).shuffle(idxs)  # experiment 2 re-shuffles the already shuffled list
    assert subsets[1] == first_three_per_label(idxs)
    assert subsets[0] != subsets[1]


def test_truncated_renormalises():
    enc = truncated(BagOfWords(), 8)
    out = enc(["a b c d e f"])
    assert out.shape == (1, 8) and np.allclose(np.linalg.norm(out, axis=1), 1.0)
    with pytest.raises(ValueError, match="exceeds"):
        truncated(BagOfWords(), DIM + 1)(["a"])


def test_evaluate_runner_dims_and_table(tmp_path):
    p = tmp_path / "s.tsv"
    p.write_text("sentence1\tsentence2\tscore\na b\ta b\t5\na b\ta c\t3\nx\ty\t0\n")
    enc = BagOfWords()
    res = evaluate(enc, [f"sts:{p}"], dims=[16, 32], progress=False)
    assert list(res) == [f"sts:{p}@16", f"sts:{p}@32"]
    # both sides in one call, each distinct text once, reused for both dims
    assert enc.calls == [("sentence similarity", None, ["a b", "x", "a c", "y"])]
    assert res[f"sts:{p}@16"]["dims"] == 16 and res[f"sts:{p}@16"]["seconds"] >= 0
    res = evaluate(enc, f"sts:{p}", dims=16, progress=False)
    assert list(res) == [f"sts:{p}"]
    assert "cosine_spearman" in format_table(res)

    def bad(texts, task=None, titles=None):
        return np.zeros((len(texts) + 1, 4), np.float32)

    with pytest.raises(ValueError, match="shape"):
        evaluate(bad, f"sts:{p}", progress=False)


# ----------------------------------------------------------------------------- against mteb 2.26
def test_clustering_bootstrap_matches_mteb():
    clustering = require("mteb.abstasks.clustering")
    import random

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 400)
    emb = (np.eye(16)[labels] + 0.6 * rng.normal(size=(400, 16))).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    ref, _ = clustering._evaluate_clustering_bootstrapped(
        emb, [[int(x)] for x in labels], n_clusters=4, cluster_size=300, kmean_batch_size=512, max_depth=None,
        rng_state=random.Random(42), seed=42)
    task = tasks_lib.Task("c", "clustering", None, "clustering", main_metric="v_measure",
                          options={"protocol": "bootstrap", "n_draws": 4, "draw_size": 300})
    ours = ev.evaluate_clustering(lambda texts, task=None, titles=None: emb, ds.ClusteringData(
        [str(i) for i in range(400)], labels.tolist()), task)
    np.testing.assert_allclose(ours["scores"]["v_measures"], ref["v_measure"]["Level 0"], rtol=1e-12)


def test_pair_classification_matches_mteb():
    pc = require("mteb.abstasks.pair_classification")
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 300)
    scores = np.round(labels * 0.3 + rng.normal(size=300) * 0.5, 2)  # rounded: ties on purpose
    cls = pc.AbsTaskPairClassification
    fake = types.SimpleNamespace(_find_best_acc_and_threshold=lambda *a: cls._find_best_acc_and_threshold(None, *a),
                                 _find_best_f1_and_threshold=lambda *a: cls._find_best_f1_and_threshold(None, *a))
    ref = cls._compute_metrics_values(fake, scores.tolist(), labels, True)
    from gemini_embed.eval import metrics
    acc, _ = metrics.best_accuracy_threshold(scores, labels)
    f1, precision, recall, _ = metrics.best_f1_threshold(scores, labels)
    assert ref == pytest.approx({"accuracy": acc, "f1": f1, "precision": precision, "recall": recall,
                                 "ap": metrics.average_precision(labels, scores)}, abs=1e-12)


def test_undersample_matches_mteb():
    cls = require("mteb.abstasks.classification")
    datasets = require("datasets")
    labels = np.random.default_rng(2).integers(0, 7, 500).tolist()
    data = datasets.Dataset.from_dict({"label": labels})
    fake = types.SimpleNamespace(seed=42, samples_per_label=8, label_column_name="label")
    idxs, ref = None, []
    for i in range(10):
        _, idxs, chosen = cls.AbsTaskClassification._undersample_data(fake, data, i, idxs)
        ref.append(chosen)
    assert undersample(labels, 8, 10) == ref
