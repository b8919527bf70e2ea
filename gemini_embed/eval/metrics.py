"""Evaluation metrics on the field's libraries, with MTEB's conventions.

Retrieval and reranking go through pytrec_eval (trec_eval), as MTEB's do: a run is ranked by
score descending with ties broken by document id *descending*; a document is relevant when its
qrel is >= 1; nDCG uses the qrel value as a linear gain; MAP@k and recall@k divide by the number
of relevant documents of the query; P@k divides by k. MRR@k is trec_eval's reciprocal rank, cut
at k (MTEB's own MRR ranks the same way). Correlations come from scipy; v-measure, average
precision, accuracy and F1 from scikit-learn. The threshold searches of pair classification are
mteb 2.26's own algorithm (no library has it): thresholds never split tied scores.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pytrec_eval
from scipy import stats
from sklearn import metrics as skm

Qrels = Mapping[str, Mapping[str, int]]  # query id -> doc id -> graded relevance
Run = Mapping[str, Mapping[str, float]]  # query id -> doc id -> score

DEFAULT_K_VALUES = (1, 3, 5, 10, 20, 100, 1000)


# ----------------------------------------------------------------------------- retrieval
def _trec_eval(qrels: Qrels, run: Run, measures: set[str]) -> dict[str, dict[str, float]]:
    """pytrec_eval's per-query measures over the queries present in both qrels and run."""
    judged = {q: {d: int(r) for d, r in qrels[q].items()} for q in run if q in qrels}
    ranked = {q: {d: float(s) for d, s in run[q].items()} for q in judged}
    return pytrec_eval.RelevanceEvaluator(judged, measures).evaluate(ranked) if judged else {}


def _mrr_at(reciprocal_rank: float, k: int) -> float:
    return reciprocal_rank if reciprocal_rank > 0 and round(1 / reciprocal_rank) <= k else 0.0


def retrieval_scores(qrels: Qrels, run: Run, k_values: Sequence[int] = DEFAULT_K_VALUES) -> dict[str, float]:
    """Mean of every retrieval metric at every k, over the queries present in both qrels and run.

    Keys are MTEB's: "ndcg_at_10", "map_at_100", "recall_at_1", "precision_at_5", "mrr_at_10",
    "hit_rate_at_3". Returns {} when no query is shared.
    """
    ks = ",".join(str(k) for k in k_values)
    per_query = _trec_eval(qrels, run, {f"ndcg_cut.{ks}", f"map_cut.{ks}", f"recall.{ks}", f"P.{ks}",
                                        f"success.{ks}", "recip_rank"})
    if not per_query:
        return {}
    names = [("ndcg_at", "ndcg_cut_"), ("map_at", "map_cut_"), ("recall_at", "recall_"),
             ("precision_at", "P_"), ("hit_rate_at", "success_")]
    out = {}
    for k in k_values:
        for ours, theirs in names:
            out[f"{ours}_{k}"] = float(np.mean([m[f"{theirs}{k}"] for m in per_query.values()]))
        out[f"mrr_at_{k}"] = float(np.mean([_mrr_at(m["recip_rank"], k) for m in per_query.values()]))
    return out


# ----------------------------------------------------------------------------- correlation
def pearson(x: np.ndarray, y: np.ndarray) -> float:
    return float(stats.pearsonr(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)).statistic)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    return float(stats.spearmanr(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)).statistic)


# ----------------------------------------------------------------------------- clustering
def v_measure(labels_true: Sequence, labels_pred: Sequence) -> float:
    return float(skm.v_measure_score(np.asarray(labels_true), np.asarray(labels_pred)))


# ----------------------------------------------------------------------------- pair classification
def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    return float(skm.average_precision_score(np.asarray(labels), np.asarray(scores, dtype=np.float64)))


def _sorted_rows(scores, labels, high_score_more_similar):
    rows = sorted(zip(np.asarray(scores).tolist(), np.asarray(labels).tolist()), key=lambda r: r[0],
                  reverse=high_score_more_similar)
    return rows


def best_accuracy_threshold(scores, labels, high_score_more_similar: bool = True) -> tuple[float, float]:
    """Best accuracy of `score >= t` over thresholds between distinct sorted scores (mteb 2.26)."""
    labels = np.asarray(labels)
    rows = _sorted_rows(scores, labels, high_score_more_similar)
    max_acc, best_threshold = 0.0, -1.0
    positive_so_far, remaining_negatives = 0, int(np.sum(labels == 0))
    for i in range(len(rows) - 1):
        score, label = rows[i]
        if label == 1:
            positive_so_far += 1
        else:
            remaining_negatives -= 1
        if score == rows[i + 1][0]:  # a threshold cannot split tied scores
            continue
        acc = (positive_so_far + remaining_negatives) / len(labels)
        if acc > max_acc:
            max_acc, best_threshold = acc, (rows[i][0] + rows[i + 1][0]) / 2
    return max_acc, best_threshold


def best_f1_threshold(scores, labels, high_score_more_similar: bool = True) -> tuple[float, float, float, float]:
    """(f1, precision, recall, threshold) maximising F1 of the positive class (mteb 2.26)."""
    labels = np.asarray(labels)
    rows = _sorted_rows(scores, labels, high_score_more_similar)
    best = (0.0, 0.0, 0.0, 0.0)
    ncorrect, total_pos = 0, int(np.sum(labels))
    for i, (score, label) in enumerate(rows[:-1]):
        if label == 1:
            ncorrect += 1
        if score == rows[i + 1][0]:
            continue
        if ncorrect > 0:
            precision, recall = ncorrect / (i + 1), ncorrect / total_pos
            f1 = 2 * precision * recall / (precision + recall)
            if f1 > best[0]:
                best = (f1, precision, recall, (rows[i][0] + rows[i + 1][0]) / 2)
    return best


# ----------------------------------------------------------------------------- classification / bitext
def accuracy(y_true, y_pred) -> float:
    return float(skm.accuracy_score(np.asarray(y_true), np.asarray(y_pred)))


def macro_f1(y_true, y_pred) -> float:
    """F1 averaged over the labels of both y_true and y_pred; a label never predicted scores 0."""
    return float(skm.f1_score(np.asarray(y_true), np.asarray(y_pred), average="macro", zero_division=0))


def bitext_scores(predicted: Sequence[int], gold: Sequence[int] | None = None) -> dict[str, float]:
    """MTEB bitext metrics: query i should retrieve gold[i] (default i); 'weighted' P/R/F1."""
    predicted = np.asarray(predicted)
    gold = np.arange(len(predicted)) if gold is None else np.asarray(gold)
    precision, recall, f1, _ = skm.precision_recall_fscore_support(gold, predicted, average="weighted",
                                                                   zero_division=0)
    return {"f1": float(f1), "precision": float(precision), "recall": float(recall),
            "accuracy": accuracy(gold, predicted)}


# ----------------------------------------------------------------------------- reranking
def reranking_scores(scores: Sequence[np.ndarray], labels: Sequence[np.ndarray], mrr_k: int = 10) -> dict[str, float]:
    """Mean AP and MRR@k over queries, each with its own candidates (label 1 = positive).

    Candidates are ranked by score descending. Tied scores put negatives first: mteb 2.26 names
    its candidates "apositive_..." and "negative_..." for pytrec_eval, whose doc-id tie-break
    (descending) does that; the same names here. AP divides by the number of positives.
    """
    qrels, run = {}, {}
    for q, (s, y) in enumerate(zip(scores, labels)):
        names = [f"{'apositive' if lab else 'negative'}_{i}" for i, lab in enumerate(np.asarray(y))]
        qrels[str(q)] = {n: int(lab) for n, lab in zip(names, np.asarray(y))}
        run[str(q)] = dict(zip(names, np.asarray(s, dtype=np.float64).tolist()))
    per_query = _trec_eval(qrels, run, {"map", "recip_rank"})
    # trec_eval drops a query without any candidate; it counts as 0, as before
    aps = [per_query[q]["map"] if q in per_query else 0.0 for q in qrels]
    rrs = [_mrr_at(per_query[q]["recip_rank"], mrr_k) if q in per_query else 0.0 for q in qrels]
    return {"map": float(np.mean(aps)), f"mrr_at_{mrr_k}": float(np.mean(rrs))}
