"""Training pairs from the train splits of the shared data, and a deterministic batcher.

Each source yields (query, positive) examples with the prompts of its task. Batches are drawn
from one source at a time by mixture rate (as the recipe's finetuning stage). Batch k is a pure
function of (seed, k): resuming needs only k, and every host computes the same global batch
and keeps its own slice.
"""
from __future__ import annotations

import csv
import dataclasses
import gzip
import json
import os
import pathlib
import zlib
from typing import Sequence

import numpy as np

from gemini_embed.tokenize import apply_prompt


@dataclasses.dataclass(frozen=True)
class PairSource:
    name: str
    queries: list[str]
    positives: list[str]
    query_task: str | None  # prompt of the query side
    positive_task: str | None  # "document" or a query task (symmetric pairs)
    positive_titles: list[str | None] | None = None

    def __len__(self):
        return len(self.queries)


def data_root(path: str | os.PathLike | None = None) -> pathlib.Path:
    root = path or os.environ.get("GEMINI_EMBED_DATA") or pathlib.Path(__file__).parents[3] / "shared" / "data"
    return pathlib.Path(root)


def scifact_train(root) -> PairSource:
    """SciFact train claims -> their cited abstracts (qrels/train.tsv)."""
    root = data_root(root) / "scifact"
    with gzip.open(root / "corpus.jsonl.gz", "rt", encoding="utf-8") as f:
        corpus = {d["_id"]: d for d in map(json.loads, f)}
    with open(root / "queries.jsonl", encoding="utf-8") as f:
        queries = {d["_id"]: d["text"] for d in map(json.loads, f)}
    q, p, t = [], [], []
    with open(root / "qrels" / "train.tsv", encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            doc = corpus[row["corpus-id"]]
            q.append(queries[row["query-id"]])
            p.append(doc["text"])
            t.append(doc["title"])
    return PairSource("scifact-train", q, p, "fact checking", "document", t)


def stsb_train(root, min_score: float = 4.0) -> PairSource:
    """STS Benchmark train pairs scored >= min_score (of 5), as symmetric positives."""
    q, p = [], []
    with open(data_root(root) / "sts" / "stsbenchmark" / "sts-train.csv", encoding="utf-8") as f:
        for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            if float(row[4]) >= min_score:
                q.append(row[5])
                p.append(row[6])
    return PairSource("stsb-train", q, p, "sentence similarity", "sentence similarity")


def mrpc_train(root) -> PairSource:
    """MRPC train paraphrase pairs (label 1)."""
    q, p = [], []
    with open(data_root(root) / "mrpc" / "train.tsv", encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            if row["label"] == "1":
                q.append(row["sentence1"])
                p.append(row["sentence2"])
    return PairSource("mrpc-train", q, p, "sentence similarity", "sentence similarity")


def banking77_train(root) -> PairSource:
    """Banking77 train: utterance -> its label text ("card_arrival" -> "card arrival")."""
    q, p = [], []
    with open(data_root(root) / "banking77" / "train.csv", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            q.append(row["text"])
            p.append(row["category"].replace("_", " "))
    return PairSource("banking77-train", q, p, "classification", None)


SOURCES = {"scifact-train": scifact_train, "stsb-train": stsb_train, "mrpc-train": mrpc_train,
           "banking77-train": banking77_train}


def load_sources(names: Sequence[str], root=None) -> list[PairSource]:
    unknown = [n for n in names if n not in SOURCES]
    if unknown:
        raise ValueError(f"unknown training source(s) {unknown}; known: {sorted(SOURCES)}")
    return [SOURCES[n](root) for n in names]


def text_id(text: str) -> int:
    """Stable id of a text: equal texts -> equal ids (the loss's duplicate mask)."""
    return zlib.crc32(text.encode("utf-8")) & 0x7FFFFFFF


class PairBatcher:
    """Global batch k = f(seed, k): a source chosen by mixture rate, then the next examples of that
    source's seeded per-epoch permutation. `host_batch(k)` is this host's contiguous slice."""

    def __init__(self, sources: Sequence[PairSource], rates: Sequence[float] | None, tokenizer, *,
                 global_batch_size: int, query_len: int, positive_len: int, seed: int = 0,
                 process_index: int = 0, process_count: int = 1, uses_prompts: bool = True):
        if global_batch_size % process_count:
            raise ValueError(f"global_batch_size {global_batch_size} is not divisible by {process_count} hosts")
        self.sources = list(sources)
        rates = np.ones(len(sources)) if rates is None else np.asarray(rates, np.float64)
        if len(rates) != len(self.sources) or (rates < 0).any() or rates.sum() <= 0:
            raise ValueError(f"mixture rates {list(rates)} do not fit sources {[s.name for s in sources]}")
        self.rates = rates / rates.sum()
        self.tokenizer, self.uses_prompts = tokenizer, uses_prompts
        self.B, self.Lq, self.Lp, self.seed = global_batch_size, query_len, positive_len, seed
        self.host, self.hosts = process_index, process_count
        self._choices = np.zeros(0, np.int64)

    def source_of(self, k: int) -> int:
        """Source of batch k: seeded blocks of 1024 draws, extended on demand (cheap to replay)."""
        while k >= len(self._choices):
            block = len(self._choices) // 1024
            draws = np.random.default_rng([self.seed, 0, block]).choice(len(self.sources), size=1024, p=self.rates)
            self._choices = np.concatenate([self._choices, draws])
        return int(self._choices[k])

    def example_indices(self, k: int) -> tuple[int, np.ndarray]:
        s = self.source_of(k)
        drawn_before = int(np.sum(self._choices[:k] == s))  # batches this source gave before k
        n = len(self.sources[s])
        start = drawn_before * self.B
        out = []
        while len(out) < self.B:  # walk through seeded epochs of this source
            epoch, offset = divmod(start + len(out), n)
            perm = np.random.default_rng([self.seed, 1, s, epoch]).permutation(n)
            out.extend(perm[offset:offset + self.B - len(out)])
        return s, np.asarray(out)

    def _tokens(self, texts, task, titles, length):
        prompted = apply_prompt(texts, task if self.uses_prompts else None, titles)
        ids, _ = self.tokenizer.encode(prompted, length)
        tokens = np.full((len(ids), length), self.tokenizer.pad_id, np.int32)
        for r, x in enumerate(ids):
            tokens[r, :len(x)] = x
        mask = np.zeros_like(tokens, bool)
        for r, x in enumerate(ids):
            mask[r, :len(x)] = True
        return tokens, mask

    def host_batch(self, k: int) -> dict[str, np.ndarray]:
        """This host's rows of global batch k (rows host*B/H .. (host+1)*B/H)."""
        s, idx = self.example_indices(k)
        per_host = self.B // self.hosts
        idx = idx[self.host * per_host:(self.host + 1) * per_host]
        src = self.sources[s]
        queries = [src.queries[i] for i in idx]
        positives = [src.positives[i] for i in idx]
        titles = None if src.positive_titles is None else [src.positive_titles[i] for i in idx]
        qt, qm = self._tokens(queries, src.query_task, None, self.Lq)
        pt, pm = self._tokens(positives, src.positive_task, titles, self.Lp)
        return {"query_tokens": qt, "query_mask": qm, "positive_tokens": pt, "positive_mask": pm,
                "query_ids": np.array([text_id(t) for t in queries], np.int32),
                "positive_ids": np.array([text_id(t) for t in positives], np.int32)}
