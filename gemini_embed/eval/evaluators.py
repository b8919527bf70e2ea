"""One evaluator per task type, following MTEB's protocols (mteb 2.26; see
`shared/guide/mteb-protocol.md`).

Every evaluator takes `(encode, data, task, use_prompts)` and returns
`{"main_score": float, "metric": str, "scores": {...}, "num_samples": int}`.

`encode(texts, task=None, titles=None) -> [N, D] float32` is the Embedder's signature. With
`use_prompts=True` queries (and both sides of symmetric tasks) are encoded with
`task.query_task` and documents with `task.document_task` (titles passed separately); with
`use_prompts=False` everything is raw text (`task=None`) and a retrieval document is
`(title + " " + text).strip()`, as MTEB ran all-MiniLM-L6-v2.
"""
from __future__ import annotations

import random
import warnings
from collections import defaultdict
from collections.abc import Callable, Sequence

import numpy as np

from gemini_embed.eval import datasets as ds
from gemini_embed.eval import metrics
from gemini_embed.eval.search import cosine_pairs, top_k
from gemini_embed.eval.tasks import DOCUMENT, Task
from gemini_embed.normalize import l2_normalize

Encode = Callable[..., np.ndarray]
SEED = 42
RETRIEVAL_K_VALUES = metrics.DEFAULT_K_VALUES


def _result(task: Task, scores: dict, num_samples: int) -> dict:
    return {"main_score": float(scores[task.main_metric]), "metric": task.main_metric,
            "scores": scores, "num_samples": int(num_samples)}


def encode_queries(encode: Encode, texts: Sequence[str], task: Task, use_prompts: bool) -> np.ndarray:
    """Queries, or either side of a symmetric task."""
    return encode(list(texts), task=task.query_task if use_prompts else None)


def encode_documents(encode: Encode, titles: Sequence[str | None], texts: Sequence[str], task: Task,
                     use_prompts: bool) -> np.ndarray:
    """Retrieval / reranking documents. With prompts and `document_task == "document"` titles go
    separately (`title: ... | text: ...`); otherwise a title is joined as `(title + " " + text).strip()`."""
    doc_task = task.document_task or task.query_task
    if use_prompts and doc_task == DOCUMENT:
        return encode(list(texts), task=DOCUMENT, titles=[t if t else None for t in titles])
    return encode([(f"{t or ''} {x}").strip() for t, x in zip(titles, texts)], task=doc_task if use_prompts else None)


def encode_pairs(encode: Encode, first: Sequence[str], second: Sequence[str], task: Task,
                 use_prompts: bool) -> tuple[np.ndarray, np.ndarray]:
    """Both sides of a symmetric pair task in one call, each distinct text once: fewer part-full
    batches, and sentences that recur across pairs (frequent in STS data) are embedded once."""
    unique = list(dict.fromkeys([*first, *second]))
    emb = encode_queries(encode, unique, task, use_prompts)
    row = {t: i for i, t in enumerate(unique)}
    return emb[[row[t] for t in first]], emb[[row[t] for t in second]]


# ----------------------------------------------------------------------------- STS
def evaluate_sts(encode: Encode, data: ds.STSData, task: Task, use_prompts: bool = True) -> dict:
    """Cosine of each pair against the gold score: Spearman (main) and Pearson."""
    e1, e2 = encode_pairs(encode, data.sentences1, data.sentences2, task, use_prompts)
    cos = cosine_pairs(e1, e2)
    scores = {"cosine_spearman": metrics.spearman(cos, data.scores),
              "cosine_pearson": metrics.pearson(cos, data.scores)}
    return _result(task, scores, len(data.scores))


# ----------------------------------------------------------------------------- pair classification
def evaluate_pair_classification(encode: Encode, data: ds.PairData, task: Task, use_prompts: bool = True) -> dict:
    """Cosine of each pair as the score for label 1: average precision (main), best acc/F1."""
    e1, e2 = encode_pairs(encode, data.sentences1, data.sentences2, task, use_prompts)
    cos = cosine_pairs(e1, e2)
    acc, acc_t = metrics.best_accuracy_threshold(cos, data.labels)
    f1, precision, recall, f1_t = metrics.best_f1_threshold(cos, data.labels)
    scores = {"cosine_ap": metrics.average_precision(data.labels, cos), "cosine_accuracy": acc,
              "cosine_accuracy_threshold": acc_t, "cosine_f1": f1, "cosine_precision": precision,
              "cosine_recall": recall, "cosine_f1_threshold": f1_t}
    return _result(task, scores, len(data.labels))


# ----------------------------------------------------------------------------- bitext mining
def evaluate_bitext(encode: Encode, data: ds.BitextData, task: Task, use_prompts: bool = True) -> dict:
    """Each sentences1[i] retrieves its cosine nearest neighbour among sentences2; gold is i."""
    e1 = encode_queries(encode, data.sentences1, task, use_prompts)
    e2 = encode_queries(encode, data.sentences2, task, use_prompts)
    _, idx = top_k(e1, e2, 1)
    return _result(task, metrics.bitext_scores(idx[:, 0]), len(data.sentences1))


# ----------------------------------------------------------------------------- retrieval
def evaluate_retrieval(encode: Encode, data: ds.RetrievalData, task: Task, use_prompts: bool = True,
                       k_values: Sequence[int] = RETRIEVAL_K_VALUES,
                       search: Callable[..., tuple[np.ndarray, np.ndarray]] = top_k) -> dict:
    """Exact cosine top-max(k) over the corpus for the queries in the qrels; MTEB/pytrec metrics."""
    query_ids = [q for q in data.queries if q in data.qrels]
    doc_ids = list(data.corpus)
    q_emb = encode_queries(encode, [data.queries[q] for q in query_ids], task, use_prompts)
    d_emb = encode_documents(encode, [data.corpus[d][0] for d in doc_ids], [data.corpus[d][1] for d in doc_ids],
                             task, use_prompts)
    scores, idx = search(q_emb, d_emb, max(k_values))
    run = {q: {doc_ids[j]: float(s) for j, s in zip(idx[i], scores[i])} for i, q in enumerate(query_ids)}
    return _result(task, metrics.retrieval_scores(data.qrels, run, k_values), len(query_ids))


# ----------------------------------------------------------------------------- reranking
def evaluate_reranking(encode: Encode, data: ds.RerankingData, task: Task, use_prompts: bool = True) -> dict:
    """Each query ranks only its own candidates by cosine: MAP (main) and MRR@10."""
    q_emb = l2_normalize(encode_queries(encode, data.queries, task, use_prompts))
    flat = [c for cands in data.candidates for c in cands]
    c_emb = l2_normalize(encode_documents(encode, [None] * len(flat), flat, task, use_prompts))
    bounds = np.cumsum([0] + [len(c) for c in data.candidates])
    cand_scores = [c_emb[bounds[i]:bounds[i + 1]] @ q_emb[i] for i in range(len(data.queries))]
    return _result(task, metrics.reranking_scores(cand_scores, data.labels), len(data.queries))


# ----------------------------------------------------------------------------- classification
def undersample(labels: Sequence, samples_per_label: int, n_experiments: int = 10, seed: int = SEED) -> list[list[int]]:
    """MTEB's training subsets: each experiment shuffles the index list left by the previous one
    with a fresh `np.random.RandomState(seed)` and keeps the first `samples_per_label` per label."""
    idxs = list(range(len(labels)))
    selected = []
    for _ in range(n_experiments):
        np.random.RandomState(seed).shuffle(idxs)
        counts: dict = defaultdict(int)
        chosen = []
        for i in idxs:
            if counts[labels[i]] < samples_per_label:
                chosen.append(i)
                counts[labels[i]] += 1
        selected.append(chosen)
    return selected


def evaluate_classification(encode: Encode, data: ds.ClassificationData, task: Task, use_prompts: bool = True,
                            n_experiments: int = 10) -> dict:
    """10 experiments of LogisticRegression(max_iter=100, random_state=42) on few-shot subsets of
    the train split, each scored on the whole test split; mean accuracy (main) and macro F1."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    samples_per_label = task.options.get("samples_per_label", 8)
    subsets = undersample(data.train_labels, samples_per_label, n_experiments)
    union = sorted(set().union(*subsets))  # encode each needed training text once, as MTEB does
    train_emb = encode_queries(encode, [data.train_texts[i] for i in union], task, use_prompts)
    test_emb = encode_queries(encode, data.test_texts, task, use_prompts)
    pos = {orig: p for p, orig in enumerate(union)}
    y_test = np.asarray(data.test_labels)
    binary_int = len(np.unique(y_test)) == 2 and np.issubdtype(y_test.dtype, np.integer)
    per_experiment = []
    for chosen in subsets:
        clf = LogisticRegression(max_iter=100, random_state=SEED)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(train_emb[[pos[i] for i in chosen]], [data.train_labels[i] for i in chosen])
        y_pred = clf.predict(test_emb)
        s = {"accuracy": metrics.accuracy(y_test, y_pred), "f1": metrics.macro_f1(y_test, y_pred)}
        if binary_int:
            s["ap"] = metrics.average_precision(y_test, y_pred)
        per_experiment.append(s)
    scores = {k: float(np.mean([s[k] for s in per_experiment])) for k in per_experiment[0]}
    scores["accuracy_std"] = float(np.std([s["accuracy"] for s in per_experiment]))
    scores["scores_per_experiment"] = per_experiment
    return _result(task, scores, len(data.test_texts))


# ----------------------------------------------------------------------------- clustering
def evaluate_clustering(encode: Encode, data: ds.ClusteringData, task: Task, use_prompts: bool = True) -> dict:
    """V-measure of MiniBatchKMeans clusters (k = number of gold labels), as MTEB computes it.

    protocol "sets" (MTEB legacy, e.g. TwentyNewsgroupsClustering): `n_sets` subsets of
    `set_size` texts drawn without replacement with one `np.random.RandomState(42)`, each
    clustered with MiniBatchKMeans(batch_size=500, n_init="auto", random_state=42); mean V-measure.
    protocol "bootstrap" (MTEB v2 AbsTaskClustering): `n_draws` draws of `draw_size` texts with
    replacement by `random.Random(42).choices`, one MiniBatchKMeans(batch_size=512,
    init="k-means++", n_init=1, random_state=42) refit per draw; mean V-measure.
    All texts are encoded once.
    """
    from sklearn.cluster import MiniBatchKMeans

    opts = dict(task.options)
    protocol = opts.get("protocol", "bootstrap")
    emb = l2_normalize(encode_queries(encode, data.texts, task, use_prompts))
    labels = np.asarray(data.labels)
    n = len(labels)
    v_measures = []
    if protocol == "sets":
        rng = np.random.RandomState(SEED)
        set_size = min(opts.get("set_size", n), n)
        for _ in range(opts.get("n_sets", 10)):
            idx = np.sort(rng.choice(n, set_size, replace=False)) if set_size < n else np.arange(n)
            model = MiniBatchKMeans(n_clusters=len(np.unique(labels[idx])), batch_size=opts.get("batch_size", 500),
                                    n_init="auto", random_state=SEED)
            v_measures.append(metrics.v_measure(labels[idx], model.fit_predict(emb[idx])))
    elif protocol == "bootstrap":
        rng = random.Random(SEED)
        model = MiniBatchKMeans(n_clusters=len(np.unique(labels)), batch_size=opts.get("batch_size", 512),
                                init="k-means++", n_init=1, random_state=SEED)
        for _ in range(opts.get("n_draws", 10)):
            idx = np.asarray(rng.choices(range(n), k=opts.get("draw_size", 16384)))
            v_measures.append(metrics.v_measure(labels[idx], model.fit_predict(emb[idx])))
    else:
        raise ValueError(f"{task.name}: unknown clustering protocol {protocol!r}")
    scores = {"v_measure": float(np.mean(v_measures)), "v_measure_std": float(np.std(v_measures)),
              "v_measures": [float(v) for v in v_measures]}
    return _result(task, scores, n)


EVALUATORS: dict[str, Callable[..., dict]] = {
    "sts": evaluate_sts,
    "pair_classification": evaluate_pair_classification,
    "bitext": evaluate_bitext,
    "retrieval": evaluate_retrieval,
    "reranking": evaluate_reranking,
    "classification": evaluate_classification,
    "clustering": evaluate_clustering,
}
