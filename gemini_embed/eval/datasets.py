"""Typed containers for evaluation data, and the loaders that fill them from files.

One container per task type. The loaders here read the shared benchmark data (layout in
`shared/data/README.md`) and the user formats accepted as `TYPE:PATH` (see `tasks.py`).
"""
from __future__ import annotations

import csv
import dataclasses
import pathlib
from collections import defaultdict

import numpy as np

from gemini_embed.eval import readers
from gemini_embed.eval.readers import DataFormatError


@dataclasses.dataclass
class STSData:
    sentences1: list[str]
    sentences2: list[str]
    scores: np.ndarray  # [N] gold similarity


@dataclasses.dataclass
class PairData:
    sentences1: list[str]
    sentences2: list[str]
    labels: np.ndarray  # [N] 1 = positive (paraphrase / match), 0 = negative


@dataclasses.dataclass
class BitextData:
    sentences1: list[str]  # the queries (non-English side for Tatoeba)
    sentences2: list[str]  # the candidates; sentences1[i] translates sentences2[i]


@dataclasses.dataclass
class ClassificationData:
    train_texts: list[str]
    train_labels: list
    test_texts: list[str]
    test_labels: list


@dataclasses.dataclass
class ClusteringData:
    texts: list[str]
    labels: list


@dataclasses.dataclass
class RetrievalData:
    corpus: dict[str, tuple[str, str]]  # doc id -> (title, text)
    queries: dict[str, str]  # query id -> text
    qrels: dict[str, dict[str, int]]  # query id -> doc id -> relevance


@dataclasses.dataclass
class RerankingData:
    queries: list[str]
    candidates: list[list[str]]  # per query: positives first, then negatives
    labels: list[np.ndarray]  # per query: 1 for a positive candidate, 0 otherwise


# ----------------------------------------------------------------------------- user formats
def load_sts_tsv(path) -> STSData:
    """TSV with a header holding `sentence1`, `sentence2`, `score` (other columns ignored)."""
    s1, s2, scores = [], [], []
    for lineno, row in readers.read_table(path, ["sentence1", "sentence2", "score"]):
        scores.append(readers.parse_value(path, lineno, "score", row["score"], float))
        s1.append(row["sentence1"])
        s2.append(row["sentence2"])
    if len(scores) < 2 or len(set(scores)) < 2:  # a Spearman correlation needs two different gold scores
        raise DataFormatError(path, None, f"{len(scores)} pair(s) with {len(set(scores))} distinct score(s): "
                                          f"an STS set needs at least two pairs with different scores")
    return STSData(s1, s2, np.asarray(scores, dtype=np.float64))


def load_pairs_tsv(path, label_column: str = "label") -> PairData:
    """TSV with a header holding `sentence1`, `sentence2` and a 0/1 `label`."""
    s1, s2, labels = [], [], []
    for lineno, row in readers.read_table(path, ["sentence1", "sentence2", label_column]):
        label = readers.parse_value(path, lineno, label_column, row[label_column], lambda v: int(float(v)))
        if label not in (0, 1):
            raise DataFormatError(path, lineno, f"label must be 0 or 1, got {row[label_column]!r}")
        s1.append(row["sentence1"])
        s2.append(row["sentence2"])
        labels.append(label)
    return PairData(s1, s2, np.asarray(labels, dtype=np.int64))


def load_bitext_tsv(path) -> BitextData:
    """TSV with a header holding `sentence1` and `sentence2` (row i is a translation pair)."""
    rows = [r for _, r in readers.read_table(path, ["sentence1", "sentence2"])]
    return BitextData([r["sentence1"] for r in rows], [r["sentence2"] for r in rows])


def _read_text_label(path, text_column: str = "text", label_column: str = "label", quoting=None, convert=None):
    texts, labels = [], []
    path = pathlib.Path(path)
    rows = (readers.read_table(path, [text_column, label_column], quoting=quoting)
            if quoting is not None else readers.read_rows(path, [text_column, label_column]))
    for lineno, row in rows:
        text, label = row[text_column], row[label_column]
        if not isinstance(text, str):
            raise DataFormatError(path, lineno, f"column {text_column!r} must be a string")
        if label is None or isinstance(label, (list, dict)) or (isinstance(label, str) and not label.strip()):
            raise DataFormatError(path, lineno, f"column {label_column!r}: invalid label {label!r}")
        if convert is not None:
            label = readers.parse_value(path, lineno, label_column, label, convert)
        texts.append(text)
        labels.append(label)
    return texts, labels


def load_classification_folder(folder) -> ClassificationData:
    """A folder with `train` and `test` files (`.csv`, `.tsv` or `.jsonl`), columns `text`, `label`."""
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a folder (expected train and test files)")
    train = readers.find_file(folder, "train", [".csv", ".tsv", ".jsonl"])
    test = readers.find_file(folder, "test", [".csv", ".tsv", ".jsonl"])
    return ClassificationData(*_read_text_label(train), *_read_text_label(test))


def load_clustering_jsonl(path) -> ClusteringData:
    """JSONL (optionally gzipped) with `text` and `label` fields."""
    texts, labels = _read_text_label(path)
    if len(set(map(str, labels))) < 2 or len(set(map(str, labels))) >= len(texts):
        raise DataFormatError(path, None, f"{len(texts)} text(s) in {len(set(map(str, labels)))} cluster(s): "
                                          f"clustering needs at least two clusters, one of them with two texts")
    return ClusteringData(texts, labels)


def load_beir_folder(folder, split: str = "test") -> RetrievalData:
    corpus, queries, qrels = readers.read_beir(folder, split)
    if not corpus or not any(v > 0 for judged in qrels.values() for v in judged.values()):
        raise DataFormatError(folder, None, f"{len(corpus)} document(s) and {len(qrels)} judged quer(ies) for "
                                            f"split {split!r}: retrieval needs documents and a relevant one per query")
    return RetrievalData(corpus, queries, qrels)


# ----------------------------------------------------------------------------- shared data
def load_stsbenchmark(root: pathlib.Path, split: str = "test") -> STSData:
    """Original STSbenchmark csv: tab separated, no header, QUOTE_NONE; score is field 5."""
    path = root / "sts" / "stsbenchmark" / f"sts-{split}.csv"
    s1, s2, scores = [], [], []
    with readers.open_text(path) as f:
        for lineno, row in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), start=1):
            if len(row) < 7:
                raise DataFormatError(path, lineno, f"{len(row)} field(s), expected at least 7")
            scores.append(readers.parse_value(path, lineno, "score", row[4], float))
            s1.append(row[5])
            s2.append(row[6])
    return STSData(s1, s2, np.asarray(scores, dtype=np.float64))


def load_sts_subsets(path: pathlib.Path, subset: str | None = None) -> STSData:
    """Normalised SemEval STS `test.tsv` (subset, score, sentence1, sentence2), optionally one subset."""
    s1, s2, scores = [], [], []
    for lineno, row in readers.read_table(path, ["subset", "score", "sentence1", "sentence2"]):
        if subset is not None and row["subset"] != subset:
            continue
        scores.append(readers.parse_value(path, lineno, "score", row["score"], float))
        s1.append(row["sentence1"])
        s2.append(row["sentence2"])
    if not s1:
        raise DataFormatError(path, None, f"no rows for subset {subset!r}")
    return STSData(s1, s2, np.asarray(scores, dtype=np.float64))


def load_banking77(root: pathlib.Path) -> ClassificationData:
    folder = root / "banking77"
    return ClassificationData(*_read_text_label(folder / "train.csv", "text", "category"),
                              *_read_text_label(folder / "test.csv", "text", "category"))


def load_banking77_dev(root: pathlib.Path, held_out: float = 0.2, seed: int = 0) -> ClassificationData:
    """The Banking77 train split only, cut in two by a seeded permutation: (probe train, dev)."""
    texts, labels = _read_text_label(root / "banking77" / "train.csv", "text", "category")
    order = np.random.RandomState(seed).permutation(len(texts))
    cut = int(len(texts) * (1 - held_out))
    pick = lambda idx: ([texts[i] for i in idx], [labels[i] for i in idx])  # noqa: E731
    return ClassificationData(*pick(order[:cut]), *pick(order[cut:]))


def load_amazon_counterfactual(root: pathlib.Path, prefix: str) -> ClassificationData:
    """AMCD `{prefix}_{train,test}.tsv`; the files are CSV-quoted, so read with standard quoting."""
    folder = root / "amazon_counterfactual"
    out: list = []
    for split in ("train", "test"):
        path = folder / f"{prefix}_{split}.tsv"
        out += _read_text_label(path, "sentence", "is_counterfactual", quoting=csv.QUOTE_MINIMAL, convert=int)
    return ClassificationData(*out)


def load_twentynewsgroups(root: pathlib.Path, split: str = "test", field: str = "subjects") -> ClusteringData:
    return load_clustering_jsonl(root / "twentynewsgroups" / f"{split}_{field}.jsonl.gz")


def load_tatoeba(root: pathlib.Path, lang: str) -> BitextData:
    """LASER Tatoeba: line i of `tatoeba.{lang}-eng.{lang}` translates line i of `...eng`."""
    sides = []
    for suffix in (lang, "eng"):
        path = root / "tatoeba" / f"tatoeba.{lang}-eng.{suffix}"
        with readers.open_text(path) as f:
            sides.append([line.rstrip("\n").rstrip("\r") for line in f])
    if len(sides[0]) != len(sides[1]):
        raise DataFormatError(root / "tatoeba", None, f"{lang}-eng: {len(sides[0])} vs {len(sides[1])} lines")
    return BitextData(sides[0], sides[1])


def load_mrpc(root: pathlib.Path, split: str = "test") -> PairData:
    return load_pairs_tsv(root / "mrpc" / f"{split}.tsv")


def load_snli_reranking(root: pathlib.Path, split: str = "test") -> RerankingData:
    """SNLI as reranking: query = premise; candidates = its hypotheses; positive = entailment.

    Neutral and contradiction hypotheses are the negatives. Premises whose hypotheses are all
    positive or all negative are dropped (AP is undefined or trivial for them).
    """
    path = root / "snli_senteval" / f"{split}.tsv.gz"
    groups: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for lineno, row in readers.read_table(path, ["premise", "hypothesis", "label"]):
        if row["label"] not in ("entailment", "neutral", "contradiction"):
            raise DataFormatError(path, lineno, f"unknown label {row['label']!r}")
        groups[row["premise"]].append((row["hypothesis"], int(row["label"] == "entailment")))
    queries, candidates, labels = [], [], []
    for premise, hyps in groups.items():
        y = [lab for _, lab in hyps]
        if 0 < sum(y) < len(y):
            ordered = [h for h in hyps if h[1] == 1] + [h for h in hyps if h[1] == 0]
            queries.append(premise)
            candidates.append([h for h, _ in ordered])
            labels.append(np.array([lab for _, lab in ordered], dtype=np.int64))
    return RerankingData(queries, candidates, labels)

