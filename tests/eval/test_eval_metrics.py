"""Metrics on tiny cases computed by hand: the conventions (ties, cuts, averaging) we rely on from
pytrec_eval, scipy and scikit-learn."""
import math

import numpy as np
import pytest

from gemini_embed.eval import metrics

# qrels graded 3/2/1; the run ties d4 and d1 at 0.8, and trec_eval breaks ties by doc id
# descending, so the ranking is d3, d4, d1, d2 (d4 is not relevant).
QRELS = {"q": {"d1": 3, "d2": 2, "d3": 1}}
RUN = {"q": {"d3": 0.9, "d1": 0.8, "d4": 0.8, "d2": 0.1}}


def _one(qrels, run, k):
    return metrics.retrieval_scores(qrels, run, k_values=(k,))


def test_ties_break_by_doc_id_descending():
    # d4 (not relevant) ties d1 and ranks first of the two: a hit at rank 3, not 2
    assert _one(QRELS, RUN, 2)["recall_at_2"] == pytest.approx(1 / 3)
    assert _one(QRELS, RUN, 3)["recall_at_3"] == pytest.approx(2 / 3)
    renamed = {"q": {"d3": 0.9, "d1": 0.8, "d0": 0.8, "d2": 0.1}}  # now the irrelevant doc sorts after d1
    assert _one(QRELS, renamed, 2)["recall_at_2"] == pytest.approx(2 / 3)


def test_ndcg_graded_by_hand():
    # ranking d3, d4, d1, d2
    # DCG@3  = 1/log2(2) + 0/log2(3) + 3/log2(4) = 1 + 0 + 1.5 = 2.5
    # IDCG@3 = 3/log2(2) + 2/log2(3) + 1/log2(4) = 3 + 1.2618595 + 0.5 = 4.7618595
    assert _one(QRELS, RUN, 3)["ndcg_at_3"] == pytest.approx(2.5 / (3 + 2 / math.log2(3) + 0.5), abs=1e-12)
    assert _one(QRELS, RUN, 3)["ndcg_at_3"] == pytest.approx(0.5250050, abs=1e-7)  # 2.5 / 4.7618595
    # nDCG@1: the top document has gain 1, the ideal top has gain 3.
    assert _one(QRELS, RUN, 1)["ndcg_at_1"] == pytest.approx(1 / 3)
    # a perfect ranking scores 1 at every cut
    assert _one(QRELS, {"q": {"d1": 3.0, "d2": 2.0, "d3": 1.0}}, 10)["ndcg_at_10"] == pytest.approx(1.0)


def test_map_recall_precision_mrr_by_hand():
    # hits at ranks 1 and 3: (1/1 + 2/3) / 3 relevant
    assert _one(QRELS, RUN, 3)["map_at_3"] == pytest.approx((1 + 2 / 3) / 3)
    assert _one(QRELS, RUN, 2)["map_at_2"] == pytest.approx(1 / 3)
    assert _one(QRELS, RUN, 3)["precision_at_3"] == pytest.approx(2 / 3)
    assert _one(QRELS, RUN, 5)["precision_at_5"] == pytest.approx(3 / 5)  # divides by k, as trec_eval P_5
    late = {"q": {"d4": 0.9, "d9": 0.8, "d2": 0.7}}  # first relevant at rank 3
    assert _one(QRELS, late, 3)["mrr_at_3"] == pytest.approx(1 / 3)
    assert _one(QRELS, late, 2)["mrr_at_2"] == 0.0
    assert _one(QRELS, late, 2)["hit_rate_at_2"] == 0.0
    assert _one(QRELS, late, 3)["hit_rate_at_3"] == 1.0


def test_retrieval_scores_average_over_the_shared_queries():
    qrels = {**QRELS, "q2": {"a": 1}, "unjudged_in_run_only": {}}
    run = {**RUN, "q2": {"b": 0.5, "a": 0.4}, "not_in_qrels": {"a": 1.0}}
    s = metrics.retrieval_scores(qrels, run, k_values=(1, 3, 10))
    # averaged over the 2 queries in both run and qrels
    assert s["ndcg_at_3"] == pytest.approx((_one(QRELS, RUN, 3)["ndcg_at_3"] + 1 / math.log2(3)) / 2)
    assert s["map_at_10"] == pytest.approx(((1 + 2 / 3 + 3 / 4) / 3 + 1 / 2) / 2)
    assert s["mrr_at_1"] == pytest.approx(0.5)
    assert s["recall_at_1"] == pytest.approx((1 / 3 + 0) / 2)
    assert s["precision_at_10"] == pytest.approx((3 / 10 + 1 / 10) / 2)
    assert s["hit_rate_at_3"] == 1.0
    assert sorted(s) == sorted(f"{m}_at_{k}" for m in ("ndcg", "map", "recall", "precision", "mrr", "hit_rate")
                               for k in (1, 3, 10))
    assert metrics.retrieval_scores(qrels, {"not_in_qrels": {"a": 1.0}}) == {}


def test_spearman_pearson():
    # no ties: d = [0, 1, 1, 0], rho = 1 - 6 * 2 / (4 * (16 - 1)) = 0.8
    assert metrics.spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert metrics.pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    # ties take their average rank: [3, 1, 3, 2] -> [3.5, 1, 3.5, 2], Pearson of those with [4, 1, 3, 2]
    r = np.array([3.5, 1, 3.5, 2]) - 2.5
    assert metrics.spearman([3, 1, 3, 2], [4, 1, 3, 2]) == pytest.approx(
        np.sum(r * np.array([1.5, -1.5, 0.5, -0.5])) / np.sqrt(np.sum(r * r) * 5), abs=1e-12)


def test_v_measure():
    assert metrics.v_measure([0, 0, 1, 2], [0, 0, 1, 1]) == pytest.approx(0.8)  # sklearn's docstring example
    assert metrics.v_measure([0, 0, 1, 1], [1, 1, 0, 0]) == pytest.approx(1.0)
    assert metrics.v_measure([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(0.0, abs=1e-12)
    # true [a a a b b b], clusters [0 0 1 1 2 2]:
    #   homogeneity  h = 1 - H(C|K)/H(C) = 1 - (2/6 ln 2)/ln 2 = 2/3
    #   completeness c = 1 - H(K|C)/H(K),  H(K|C) = H(2/3, 1/3), H(K) = ln 3
    h23 = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3))
    h, c = 2 / 3, 1 - h23 / math.log(3)
    assert metrics.v_measure(list("aaabbb"), [0, 0, 1, 1, 2, 2]) == pytest.approx(2 * h * c / (h + c))


def test_average_precision():
    # sklearn's docstring example: ranks 1 (pos, P=1) and 3 (pos, P=2/3) -> (1 + 2/3) / 2
    assert metrics.average_precision([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.8333333333)
    assert metrics.average_precision([1, 0], [0.5, 0.5]) == pytest.approx(0.5)  # a tie is one threshold


def test_best_accuracy_and_f1_thresholds():
    assert metrics.best_accuracy_threshold([0.9, 0.8, 0.7, 0.6], [1, 1, 0, 0]) == pytest.approx((1.0, 0.75))
    # tied 0.5s cannot be split: candidate cuts are 0.7 (acc 3/4) and 0.3 (acc 3/4); the first wins
    assert metrics.best_accuracy_threshold([0.9, 0.5, 0.5, 0.1], [1, 1, 0, 0]) == pytest.approx((0.75, 0.7))
    # cut at 0.7: P=1, R=1/2, F1=2/3; cut at 0.3: P=2/3, R=1, F1=0.8
    f1, p, r, t = metrics.best_f1_threshold([0.9, 0.5, 0.5, 0.1], [1, 1, 0, 0])
    assert (f1, p, r, t) == pytest.approx((0.8, 2 / 3, 1.0, 0.3))
    # lower-is-more-similar scores (distances) flip the order
    assert metrics.best_accuracy_threshold([0.1, 0.2, 0.3, 0.4], [1, 1, 0, 0], False) == pytest.approx((1.0, 0.25))


def test_classification_and_bitext_scores():
    y, p = [0, 1, 2, 2, 1, 0, 2], [0, 2, 2, 2, 1, 1, 0]
    assert metrics.accuracy(y, p) == pytest.approx(4 / 7)
    # class 0: P 1/2 R 1/2; class 1: P 1/2 R 1/2; class 2: P 2/3 R 2/3 -> macro F1 (1/2 + 1/2 + 2/3) / 3
    assert metrics.macro_f1(y, p) == pytest.approx((1 / 2 + 1 / 2 + 2 / 3) / 3)
    assert metrics.macro_f1([0, 0], [0, 1]) == pytest.approx((2 / 3 + 0) / 2)  # a label never true scores 0
    # predicted [0, 0, 2], gold [0, 1, 2]: class 0 has P=1/2, R=1 -> F1=2/3; class 1 F1=0; class 2 F1=1
    s = metrics.bitext_scores([0, 0, 2])
    assert s["f1"] == pytest.approx((2 / 3 + 0 + 1) / 3)
    assert s["accuracy"] == pytest.approx(2 / 3)
    assert s["precision"] == pytest.approx((1 / 2 + 0 + 1) / 3)
    # gold [0, 0, 1], predicted [0, 1, 1]: class 0 (support 2) P 1 R 1/2 F1 2/3; class 1 (support 1) P 1/2 R 1 F1 2/3
    s = metrics.bitext_scores([0, 1, 1], gold=[0, 0, 1])
    assert s == pytest.approx({"f1": 2 / 3, "precision": (2 * 1 + 1 / 2) / 3, "recall": (2 / 2 + 1) / 3,
                               "accuracy": 2 / 3})


def test_reranking_scores():
    # query 1: positive ranked first -> AP 1, RR 1; query 2: the only positive ranked third -> 1/3
    s = metrics.reranking_scores([np.array([0.9, 0.1, 0.5]), np.array([0.2, 0.9, 0.5])],
                                 [np.array([1, 0, 0]), np.array([1, 0, 0])])
    assert s == pytest.approx({"map": (1 + 1 / 3) / 2, "mrr_at_10": (1 + 1 / 3) / 2})
    # two positives at ranks 1 and 3: AP = (1 + 2/3) / 2; MRR@1 counts only the top
    s = metrics.reranking_scores([np.array([0.9, 0.3, 0.5])], [np.array([1, 1, 0])], mrr_k=1)
    assert s == pytest.approx({"map": (1 + 2 / 3) / 2, "mrr_at_1": 1.0})
    # a tie ranks the negative first (pytrec_eval's doc-id tie-break in mteb 2.26)
    s = metrics.reranking_scores([np.array([0.5, 0.5])], [np.array([1, 0])])
    assert s == pytest.approx({"map": 0.5, "mrr_at_10": 0.5})
