"""The grain input pipeline: prepared tfds sources -> per-host slices of single-dataset global batches.

Per source d (a prepared split, read through `tfds.data_source`)::

  range(n_d) -> shuffle(seed_d; a new permutation every epoch) -> repeat -> batch(global B)
             -> this host's rows [h*B/H, (h+1)*B/H) -> read records -> prompt -> tokenize, pad

Global batch k = the next batch of the source that `MixtureSelection` draws for k (seeded, by the
configured rates), so every batch comes from one dataset and batch k is a pure function of
(seed, sources, k). Hosts read disjoint rows of each global batch and together give the same
global batches as one process; `global_batch` joins the slices with
`jax.make_array_from_process_local_data`. The grain iterator state ({"next_index": k}) is all a
checkpoint needs to resume exactly where it stopped, with any number of hosts.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import sys
import threading
import zlib
from collections.abc import Sequence
from typing import Any

import grain
import numpy as np

from gemini_embed.data import builders, store
from gemini_embed.tokenize import DOCUMENT_TASK, apply_prompt

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Source:
    """A prepared split of a dataset, ready for random access."""

    name: str  # the name it was asked for (`scifact-train`, a file path, ...)
    spec: builders.DatasetSpec
    split: str
    records: Any  # tfds ArrayRecordDataSource: len() and __getitems__

    def __len__(self) -> int:
        return len(self.records)


def open_sources(names: Sequence[str], *, root=None, data_dir=None, on_error: str = "skip",
                 allow_test_split: bool = False, verbose: bool = True) -> list[Source]:
    """Resolves, prepares (once) and opens each training source. A `test` split is refused unless
    `allow_test_split`: test data must not leak into training by a typo."""
    out = []
    for name in names:
        spec, split = builders.resolve_source(name, root)
        if split == "test" and not allow_test_split:
            raise ValueError(f"training source {name!r} is a test split; test data is for evaluation. Set "
                             f"data.allow_test_split=True to train on it anyway.")
        if split != "train":
            log.warning("training source %s is the %s split, not train", name, split)
        shared = builders.EVAL_OVERLAP.get(f"{spec.name}-{split}")
        if shared:
            log.warning("training source %s shares texts with the test data of %s: their scores are not unseen",
                        name, ", ".join(sorted(shared)))
        report = store.prepare(spec, data_dir, on_error=on_error, verbose=verbose)
        if not report["splits"][split].get("examples"):
            raise ValueError(f"training source {name!r} has no examples (see {report['path']})")
        out.append(Source(name, spec, split, store.data_source(spec, split, data_dir)))
    return out


# ----------------------------------------------------------------------------- mixture
class MixtureSelection(grain.transforms.DatasetSelectionMap):
    """Global batch k -> (source d, the source's batch number j = draws of d before k).

    d is drawn i.i.d. by `rates` from a seeded generator in blocks of `block` draws, so the choice
    of any k costs a replay of at most one block; per-block counts are memoised (thread-safe).
    """

    def __init__(self, rates: Sequence[float], seed: int, block: int = 1024):
        rates = np.asarray(rates, np.float64)
        if rates.ndim != 1 or not len(rates) or (rates < 0).any() or not np.isfinite(rates).all() or rates.sum() <= 0:
            raise ValueError(f"mixture rates must be non-negative with a positive sum, got {list(rates)}")
        self.rates = rates / rates.sum()
        self.seed, self.block = int(seed), block
        self._draws: list[np.ndarray] = []
        self._counts = [np.zeros(len(rates), np.int64)]  # draws of each source before block b
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return sys.maxsize

    def _extend(self, b: int) -> None:
        with self._lock:
            while len(self._draws) <= b:
                n = len(self._draws)
                rng = np.random.default_rng([self.seed, 0x6D6978, n])  # 'mix'
                draws = rng.choice(len(self.rates), size=self.block, p=self.rates)
                self._draws.append(draws)
                self._counts.append(self._counts[n] + np.bincount(draws, minlength=len(self.rates)))

    def __getitem__(self, k: int) -> tuple[int, int]:
        b, i = divmod(int(k), self.block)
        if b >= len(self._draws):
            self._extend(b)
        draws = self._draws[b]
        d = int(draws[i])
        return d, int(self._counts[b][d] + np.count_nonzero(draws[:i] == d))


# ----------------------------------------------------------------------------- features
def text_id(text: str) -> int:
    """Stable id of a model input: equal inputs -> equal ids (the loss's duplicate masks)."""
    return zlib.crc32(text.encode("utf-8")) & 0x7FFFFFFF


def _str(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def prompt_example(record: dict, spec: builders.DatasetSpec, uses_prompts: bool) -> tuple[str, str, list[str]]:
    """(query, positive, negatives) as model inputs: `task: {task} | query: {text}` for queries (and
    both sides of symmetric data), `title: {title or none} | text: {text}` for documents."""
    task = _str(record["task"]) or spec.query_task
    doc_side = spec.positive_task == DOCUMENT_TASK
    side_task = DOCUMENT_TASK if doc_side else task
    if not uses_prompts:  # a model trained without prompts: raw text, a title in front of a document
        task = side_task = None

    def side(text, title):
        return apply_prompt([_str(text)], side_task, [_str(title) or None] if doc_side else None)[0]

    query = apply_prompt([_str(record["query"])], task)[0]
    negatives = [side(t, h) for t, h in zip(record["negatives"], record["negative_titles"])]
    return query, side(record["positive"], record["title"]), negatives


@dataclasses.dataclass(frozen=True)
class BatchShape:
    global_batch_size: int
    query_len: int
    positive_len: int
    num_negatives: int = 0
    scored: bool = False  # a `pair_score` column (NaN in unscored sources' batches): some source is scored


def _pad(tokenizer, texts: list[str], length: int) -> tuple[np.ndarray, np.ndarray]:
    ids = tokenizer.encode(texts, length).ids
    tokens = np.full((len(texts), length), tokenizer.pad_id, np.int32)
    mask = np.zeros((len(texts), length), bool)
    for r, x in enumerate(ids):
        tokens[r, :len(x)] = x
        mask[r, :len(x)] = True
    return tokens, mask


def teacher_texts(record: dict) -> tuple[str, str, list[str]]:
    """(query, positive, negatives) as a teacher sees them: raw text, documents as `title text`
    (MTEB's retrieval convention), no prompts: the teacher was trained without ours."""
    def doc(text, title):
        return f"{_str(title)} {_str(text)}".strip()

    negatives = [doc(t, h) for t, h in zip(record["negatives"], record["negative_titles"])]
    return _str(record["query"]), doc(record["positive"], record["title"]), negatives


def featurize(rows: np.ndarray, *, source: Source, index: int, tokenizer, shape: BatchShape,
              uses_prompts: bool, teacher=None) -> dict[str, np.ndarray]:
    """This host's rows of one global batch of `source` as the train step's arrays (+ "dataset").
    teacher: an Embedder whose embeddings of the rows' raw texts go in `teacher_*` (distillation)."""
    records = source.records.__getitems__([int(r) for r in rows])
    prompted = [prompt_example(r, source.spec, uses_prompts) for r in records]
    queries, positives = [q for q, _, _ in prompted], [p for _, p, _ in prompted]
    qt, qm = _pad(tokenizer, queries, shape.query_len)
    pt, pm = _pad(tokenizer, positives, shape.positive_len)
    out = {"query_tokens": qt, "query_mask": qm, "positive_tokens": pt, "positive_mask": pm,
           "query_ids": np.array([text_id(t) for t in queries], np.int32),
           "positive_ids": np.array([text_id(t) for t in positives], np.int32)}
    k = shape.num_negatives
    if k:
        n, length = len(records), shape.positive_len
        present = np.zeros((n, k), bool)
        flat = []
        for r, (_, _, negs) in enumerate(prompted):
            present[r, :min(k, len(negs))] = True
            flat += negs[:k] + [""] * (k - len(negs[:k]))  # absent: an empty text (BOS, EOS), masked out by present
        nt, nm = _pad(tokenizer, flat, length)
        out |= {"negative_tokens": nt.reshape(n, k, length), "negative_mask": nm.reshape(n, k, length),
                "negative_present": present}
    if shape.scored:
        out["pair_score"] = np.array([r["score"] if source.spec.scored else np.nan for r in records], np.float32)
    if teacher is not None:
        raw = [teacher_texts(r) for r in records]
        n, k = len(records), shape.num_negatives
        negatives = [t for _, _, negs in raw for t in negs[:k] + [""] * (k - len(negs[:k]))]
        e = teacher.embed([q for q, _, _ in raw] + [p for _, p, _ in raw] + negatives, progress=False)
        out |= {"teacher_query": e[:n], "teacher_positive": e[n:2 * n]}
        if k:  # absent negatives embed "" and are masked out by negative_present, as the student's
            out["teacher_negative"] = e[2 * n:].reshape(n, k, -1)
    out["dataset"] = np.int32(index)
    return out


def _host_rows(batch: np.ndarray, lo: int, hi: int) -> np.ndarray:
    return batch[lo:hi]


def source_seed(seed: int, name: str) -> int:
    """Per-source shuffle seed: adding or removing one source does not reorder the others."""
    return int(np.random.SeedSequence([seed, zlib.crc32(name.encode())]).generate_state(1)[0])


def build_dataset(sources: Sequence[Source], tokenizer, shape: BatchShape, *, rates: Sequence[float] | None = None,
                  seed: int = 0, process_index: int = 0, process_count: int = 1,
                  uses_prompts: bool = True, teacher=None) -> grain.MapDataset:
    """The infinite MapDataset whose element k is this host's slice of global batch k."""
    b = shape.global_batch_size
    if b % process_count:
        raise ValueError(f"global batch size {b} is not divisible by the {process_count} processes")
    rates = [1.0] * len(sources) if rates is None else list(rates)
    if len(rates) != len(sources):
        raise ValueError(f"{len(rates)} mixture rates for {len(sources)} sources {[s.name for s in sources]}")
    lo, hi = process_index * b // process_count, (process_index + 1) * b // process_count
    per_source = []
    for d, src in enumerate(sources):
        ds = grain.MapDataset.range(len(src)).shuffle(seed=source_seed(seed, src.name) % 2**31).repeat()
        ds = ds.batch(b).map(functools.partial(_host_rows, lo=lo, hi=hi))
        per_source.append(ds.map(functools.partial(featurize, source=src, index=d, tokenizer=tokenizer, shape=shape,
                                                   uses_prompts=uses_prompts, teacher=teacher)))
    return grain.MapDataset.select_from_datasets(per_source, MixtureSelection(rates, seed))


class Pipeline:
    """The training input: `iterator()` yields this host's slice of each global batch in turn;
    `state(it)` / `iterator(state)` save and resume it."""

    def __init__(self, sources: Sequence[Source], tokenizer, shape: BatchShape, *, rates=None, seed: int = 0,
                 process_index: int = 0, process_count: int = 1, uses_prompts: bool = True, threads: int = 2,
                 teacher=None):
        self.sources, self.shape, self.seed = list(sources), shape, seed
        self.names = [s.name for s in self.sources]
        self.teacher_dim = 0 if teacher is None else teacher.dim
        self.dataset = build_dataset(self.sources, tokenizer, shape, rates=rates, seed=seed,
                                     process_index=process_index, process_count=process_count,
                                     uses_prompts=uses_prompts, teacher=teacher)
        self.threads = threads
        self._fingerprint = {"sources": self.names, "seed": seed, "global_batch_size": shape.global_batch_size,
                             "rates": None if rates is None else [float(r) for r in rates]}

    def iterator(self, state: dict | None = None) -> grain.DatasetIterator:
        # threads=0: read in the caller's thread, nothing ahead (grain's default would start 16 threads)
        options = grain.ReadOptions(num_threads=self.threads, prefetch_buffer_size=2 * self.threads)
        it = iter(self.dataset.to_iter_dataset(options))
        if state:
            changed = {k: (state.get(k), v) for k, v in self._fingerprint.items() if state.get(k) != v}
            if changed:
                log.warning("the data config changed since the checkpoint (%s): batches from here on differ "
                            "from the interrupted run's", changed)
            it.set_state(state["grain"])
        return it

    def state(self, it: grain.DatasetIterator) -> dict:
        """What a checkpoint stores: the grain iterator state plus what it depends on."""
        return {"grain": it.get_state(), **self._fingerprint}


def source_names(data_cfg) -> list[str]:
    """The comma-separated `data.sources` of a config, as a list."""
    return [n.strip() for n in str(data_cfg.get("sources") or "").split(",") if n.strip()]


def from_config(data_cfg, global_batch_size: int, tokenizer, *, uses_prompts: bool, seed: int,
                process_index: int = 0, process_count: int = 1, verbose: bool = True, teacher=None) -> Pipeline:
    """The Pipeline of a config's `data` block (see docs/data.md for the keys); `teacher`: an
    Embedder for distillation targets (`featurize`)."""
    get = data_cfg.get
    names = source_names(data_cfg)
    sources = open_sources(names, root=get("root") or None, data_dir=get("dir") or None,
                           on_error=get("on_error") or "skip", allow_test_split=bool(get("allow_test_split")),
                           verbose=verbose)
    rates = get("rates")
    if isinstance(rates, str):
        rates = [float(r) for r in rates.split(",")]
    shape = BatchShape(global_batch_size, data_cfg.query_len, data_cfg.positive_len, int(get("num_negatives") or 0),
                       scored=any(s.spec.scored for s in sources))
    data_seed = get("seed")
    return Pipeline(sources, tokenizer, shape, rates=rates, seed=seed if data_seed is None else int(data_seed),
                    process_index=process_index, process_count=process_count, uses_prompts=uses_prompts,
                    threads=int(get("threads") if get("threads") is not None else 2), teacher=teacher)


def global_batch(host_batch: dict[str, np.ndarray], mesh) -> dict:
    """This host's slice -> global jax.Arrays sharded over the mesh's batch axes (drops "dataset")."""
    import jax

    from gemini_embed import sharding

    return {name: jax.make_array_from_process_local_data(sharding.batch_sharding(mesh, a.ndim), a)
            for name, a in host_batch.items() if name != "dataset"}
