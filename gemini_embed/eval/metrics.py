"""Evaluation metrics in plain NumPy, matching the tools MTEB uses.

Retrieval follows pytrec_eval / trec_eval (which MTEB calls): a run is ranked by score
descending with ties broken by document id *descending*; a document is relevant when its qrel
is >= 1; nDCG uses the qrel value as a linear gain; MAP@k and recall@k divide by the number of
relevant documents of the query; P@k divides by k. MRR@k follows MTEB's own implementation.
Pair classification and bitext follow mteb 2.26 (threshold search that never splits tied
scores; sklearn-style average precision; weighted F1 over gold indices).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

Qrels = Mapping[str, Mapping[str, int]]  # query id -> doc id -> graded relevance
Run = Mapping[str, Mapping[str, float]]  # query id -> doc id -> score

DEFAULT_K_VALUES = (1, 3, 5, 10, 20, 100, 1000)


# ----------------------------------------------------------------------------- retrieval
def rank_documents(doc_scores: Mapping[str, float]) -> list[str]:
    """Doc ids by score descending, ties by doc id descending (trec_eval's order)."""
    return [d for d, _ in sorted(doc_scores.items(), key=lambda x: (x[1], x[0]), reverse=True)]


def _relevant(rels: Mapping[str, int]) -> set[str]:
    return {d for d, r in rels.items() if r >= 1}


def ndcg_at_k(ranked: Sequence[str], rels: Mapping[str, int], k: int) -> float:
    """nDCG@k with linear gain (trec_eval ndcg_cut): sum rel_i / log2(i + 2) over the top k."""
    gains = np.array([max(rels.get(d, 0), 0) for d in ranked[:k]], dtype=np.float64)
    discounts = 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))
    dcg = float(np.sum(gains * discounts[: len(gains)]))
    ideal = np.sort(np.array([r for r in rels.values() if r > 0], dtype=np.float64))[::-1][:k]
    idcg = float(np.sum(ideal * discounts[: len(ideal)]))
    return dcg / idcg if idcg > 0 else 0.0


def average_precision_at_k(ranked: Sequence[str], rels: Mapping[str, int], k: int) -> float:
    """trec_eval map_cut.k: precision at each relevant hit in the top k / number relevant."""
    relevant = _relevant(rels)
    if not relevant:
        return 0.0
    hits, total = 0, 0.0
    for i, d in enumerate(ranked[:k]):
        if d in relevant:
            hits += 1
            total += hits / (i + 1)
    return total / len(relevant)


def recall_at_k(ranked: Sequence[str], rels: Mapping[str, int], k: int) -> float:
    relevant = _relevant(rels)
    return sum(d in relevant for d in ranked[:k]) / len(relevant) if relevant else 0.0


def precision_at_k(ranked: Sequence[str], rels: Mapping[str, int], k: int) -> float:
    """trec_eval P_k: relevant in the top k divided by k (even if fewer were retrieved)."""
    relevant = _relevant(rels)
    return sum(d in relevant for d in ranked[:k]) / k


def reciprocal_rank_at_k(ranked: Sequence[str], rels: Mapping[str, int], k: int) -> float:
    relevant = {d for d, r in rels.items() if r > 0}
    for i, d in enumerate(ranked[:k]):
        if d in relevant:
            return 1.0 / (i + 1)
    return 0.0


def hit_rate_at_k(ranked: Sequence[str], rels: Mapping[str, int], k: int) -> float:
    relevant = _relevant(rels)
    return float(any(d in relevant for d in ranked[:k]))


def query_retrieval_scores(ranked: Sequence[str], rels: Mapping[str, int], k_values: Sequence[int]) -> dict[str, float]:
    """Every metric at every k for one query, from one pass over its ranking (same values as the
    per-metric functions above)."""
    kmax = max(k_values)
    grades = np.array([rels.get(d, 0) for d in ranked[:kmax]], dtype=np.float64)
    is_rel = (grades >= 1).astype(np.float64)
    hits = np.cumsum(is_rel)
    positions = np.arange(1, len(grades) + 1, dtype=np.float64)
    dcg = np.cumsum(np.maximum(grades, 0) / np.log2(positions + 1))
    ideal = np.sort(np.array([r for r in rels.values() if r > 0], dtype=np.float64))[::-1]
    idcg = np.cumsum(ideal / np.log2(np.arange(2, len(ideal) + 2)))
    ap_terms = np.cumsum(is_rel * hits / positions)
    num_rel = sum(r >= 1 for r in rels.values())
    first_hit = int(np.argmax(grades > 0)) if np.any(grades > 0) else None
    out = {}
    for k in k_values:
        n = min(k, len(grades))  # documents actually ranked within the cut
        at = (lambda a: a[n - 1] if n > 0 else 0.0)
        i = min(k, len(ideal))
        out[f"ndcg_at_{k}"] = float(at(dcg) / idcg[i - 1]) if i > 0 and idcg[i - 1] > 0 else 0.0
        out[f"map_at_{k}"] = float(at(ap_terms) / num_rel) if num_rel else 0.0
        out[f"recall_at_{k}"] = float(at(hits) / num_rel) if num_rel else 0.0
        out[f"precision_at_{k}"] = float(at(hits) / k)
        out[f"mrr_at_{k}"] = 1.0 / (first_hit + 1) if first_hit is not None and first_hit < k else 0.0
        out[f"hit_rate_at_{k}"] = float(at(hits) > 0)
    return out


def retrieval_scores(qrels: Qrels, run: Run, k_values: Sequence[int] = DEFAULT_K_VALUES) -> dict[str, float]:
    """Mean of every retrieval metric at every k, over the queries present in both qrels and run.

    Keys are MTEB's: "ndcg_at_10", "map_at_100", "recall_at_1", "precision_at_5", "mrr_at_10",
    "hit_rate_at_3". Returns {} when no query is shared.
    """
    query_ids = [q for q in run if q in qrels]
    if not query_ids:
        return {}
    per_query = [query_retrieval_scores(rank_documents(run[q]), qrels[q], k_values) for q in query_ids]
    return {key: float(np.mean([m[key] for m in per_query])) for key in per_query[0]}


# ----------------------------------------------------------------------------- correlation
def rankdata(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties get their average rank (scipy.stats.rankdata 'average')."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    # boundaries of runs of equal values
    starts = np.r_[0, np.flatnonzero(sorted_x[1:] != sorted_x[:-1]) + 1]
    ends = np.r_[starts[1:], len(x)]
    avg = (starts + ends - 1) / 2.0 + 1.0
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64) - np.mean(x)
    y = np.asarray(y, dtype=np.float64) - np.mean(y)
    return float(np.sum(x * y) / np.sqrt(np.sum(x * x) * np.sum(y * y)))


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    return pearson(rankdata(x), rankdata(y))


# ----------------------------------------------------------------------------- clustering
def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-np.sum(p * np.log(p)))


def v_measure(labels_true: Sequence, labels_pred: Sequence) -> float:
    """Harmonic mean of homogeneity and completeness (sklearn.metrics.v_measure_score, beta=1)."""
    _, t = np.unique(np.asarray(labels_true), return_inverse=True)
    _, p = np.unique(np.asarray(labels_pred), return_inverse=True)
    if len(t) == 0:
        return 1.0
    contingency = np.zeros((t.max() + 1, p.max() + 1), dtype=np.float64)
    np.add.at(contingency, (t, p), 1.0)
    h_true, h_pred = _entropy(contingency.sum(1)), _entropy(contingency.sum(0))
    nz = contingency > 0
    n = contingency.sum()
    outer = np.outer(contingency.sum(1), contingency.sum(0))
    mi = float(np.sum(contingency[nz] / n * (np.log(contingency[nz] * n) - np.log(outer[nz]))))
    homogeneity = mi / h_true if h_true else 1.0
    completeness = mi / h_pred if h_pred else 1.0
    if homogeneity + completeness == 0:
        return 0.0
    return 2 * homogeneity * completeness / (homogeneity + completeness)


# ----------------------------------------------------------------------------- pair classification
def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """sklearn.metrics.average_precision_score: sum_n (R_n - R_{n-1}) P_n over distinct thresholds."""
    labels = np.asarray(labels).astype(np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order]
    last_of_run = np.r_[np.flatnonzero(s[1:] != s[:-1]), len(s) - 1]  # ties form one threshold
    tps = np.cumsum(y)[last_of_run]
    fps = (last_of_run + 1) - tps
    if tps[-1] == 0:
        return 0.0
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


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
    return float(np.mean(np.asarray(y_true) == np.asarray(y_pred)))


def _per_class_prf(y_true, y_pred):
    """Labels (union of true and predicted), their precision, recall, f1 and true support."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    labels, inv = np.unique(np.concatenate([y_true, y_pred]), return_inverse=True)
    t, p = inv[: len(y_true)], inv[len(y_true):]
    n = len(labels)
    tp = np.bincount(t[t == p], minlength=n).astype(np.float64)
    support = np.bincount(t, minlength=n).astype(np.float64)
    predicted = np.bincount(p, minlength=n).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return precision, recall, f1, support


def macro_f1(y_true, y_pred) -> float:
    """sklearn f1_score(average="macro") (zero_division=0)."""
    return float(np.mean(_per_class_prf(y_true, y_pred)[2]))


def bitext_scores(predicted: Sequence[int], gold: Sequence[int] | None = None) -> dict[str, float]:
    """MTEB bitext metrics: query i should retrieve gold[i] (default i); sklearn 'weighted' P/R/F1."""
    predicted = np.asarray(predicted)
    gold = np.arange(len(predicted)) if gold is None else np.asarray(gold)
    precision, recall, f1, support = _per_class_prf(gold, predicted)
    w = support / support.sum()
    return {"f1": float(np.sum(w * f1)), "precision": float(np.sum(w * precision)),
            "recall": float(np.sum(w * recall)), "accuracy": accuracy(gold, predicted)}


# ----------------------------------------------------------------------------- reranking
def reranking_scores(scores: Sequence[np.ndarray], labels: Sequence[np.ndarray], mrr_k: int = 10) -> dict[str, float]:
    """Mean AP and MRR@k over queries, each with its own candidates (label 1 = positive).

    Candidates are ranked by score descending. Tied scores put negatives first: mteb 2.26 ranks
    reranking candidates through pytrec_eval, whose doc-id tie-break ("negative_..." sorts after
    "apositive_...", descending) does that. AP divides by the number of positives.
    """
    aps, rrs = [], []
    for s, y in zip(scores, labels):
        y = np.asarray(y)
        y = y[np.lexsort((y, -np.asarray(s, dtype=np.float64)))]
        hits = np.cumsum(y)
        npos = hits[-1] if len(y) else 0
        aps.append(float(np.sum(y * hits / np.arange(1, len(y) + 1)) / npos) if npos else 0.0)
        first = np.flatnonzero(y[:mrr_k])
        rrs.append(1.0 / (first[0] + 1) if len(first) else 0.0)
    return {"map": float(np.mean(aps)), f"mrr_at_{mrr_k}": float(np.mean(rrs))}
