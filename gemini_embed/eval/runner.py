"""Run several evaluation tasks against one encoder: timing, progress, MRL truncation."""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence

import numpy as np

from gemini_embed import quantize
from gemini_embed.eval import tasks as tasks_lib
from gemini_embed.eval.cache import EmbeddingCache
from gemini_embed.eval.evaluators import EVALUATORS
from gemini_embed.normalize import mrl_truncate

Encode = Callable[..., np.ndarray]


def checked(encode: Encode) -> Encode:
    """`encode` whose output is verified to be a finite [len(texts), D] float32 array."""

    def wrapped(texts, task=None, titles=None):
        kwargs = {"task": task} if titles is None else {"task": task, "titles": titles}
        out = np.asarray(encode(texts, **kwargs), dtype=np.float32)
        if out.ndim != 2 or out.shape[0] != len(texts):
            raise ValueError(f"encode returned shape {out.shape} for {len(texts)} texts (expected [N, D])")
        for s in range(0, out.shape[0], 65536):  # in chunks: `out` may be a large memory-mapped file
            if not np.all(np.isfinite(out[s:s + 65536])):
                raise ValueError(f"encode returned non-finite values (in rows {s}..{s + 65536})")
        return out

    return wrapped


def truncated(encode: Encode, dims: int) -> Encode:
    """Matryoshka view of `encode`: the first `dims` dimensions, re-normalised."""

    def wrapped(texts, task=None, titles=None):
        return mrl_truncate(encode(texts, task=task, titles=titles), dims)

    return wrapped


def quantized(encode: Encode, precision: str, calibration: np.ndarray | None, dim: int) -> Encode:
    """`encode` at a lower precision, as the float vectors its similarities use (levels; +-1 bits).
    int8/uint8 ranges come from `calibration` (embeddings of other texts) truncated to `dim`."""
    ranges = None
    if precision in ("int8", "uint8"):
        if calibration is None:
            raise ValueError(f"precision={precision!r} needs calibration embeddings")
        ranges = quantize.ranges_at(calibration, dim)

    def wrapped(texts, task=None, titles=None):
        x = encode(texts, task=task, titles=titles)
        return quantize.as_float(quantize.quantize(x, precision, ranges), precision, x.shape[1])

    return wrapped


def memoized(encode: Encode) -> Encode:
    """`encode` that returns the stored array when called again with the same inputs."""
    cache: dict = {}

    def wrapped(texts, task=None, titles=None):
        key = (task, tuple(texts), None if titles is None else tuple(titles))
        if key not in cache:
            cache[key] = encode(texts, task=task, titles=titles)
        return cache[key]

    return wrapped


def evaluate_task(encode: Encode, task: tasks_lib.Task | str, *, data_root: str | os.PathLike | None = None,
                  use_prompts: bool = True, dims: int | None = None, precision: str = "float32",
                  calibration: np.ndarray | None = None) -> dict:
    """One task: the evaluator's result plus `task`, `type`, `dims`, `precision`, `use_prompts`, `seconds`."""
    if isinstance(task, str):
        resolved = tasks_lib.resolve_tasks([task])
        if len(resolved) != 1:
            raise ValueError(f"{task!r} names {len(resolved)} tasks; use evaluate() for families and groups")
        task = resolved[0]
    start = time.perf_counter()
    data = tasks_lib.load_task_data(task, data_root)
    enc = checked(encode)
    if dims is not None:
        enc = truncated(enc, dims)
    if quantize.check_precision(precision) != "float32":
        full = None if calibration is None else calibration.shape[1]
        enc = quantized(enc, precision, calibration, dims or full)
    result = EVALUATORS[task.type](enc, data, task, use_prompts=use_prompts)
    result.update(task=task.name, type=task.type, dims=dims, precision=precision, use_prompts=use_prompts,
                  seconds=time.perf_counter() - start)
    return result


def evaluate(encode: Encode, tasks: str | Sequence[str | tasks_lib.Task] = "quick", *,
             data_root: str | os.PathLike | None = None, use_prompts: bool = True,
             dims: int | Sequence[int] | None = None, precision: str = "float32",
             calibration: np.ndarray | None = None, progress: bool = True,
             cache: EmbeddingCache | None = None, done: dict[str, dict] | None = None,
             on_result: Callable[[dict[str, dict]], None] | None = None) -> dict[str, dict]:
    """Evaluate `encode` on tasks (names, families, groups, `TYPE:PATH`; see `tasks.py`).

    Args:
      encode: `encode(texts, task=None, titles=None) -> [N, D] float32`, the Embedder signature.
      tasks: what to run, e.g. "quick", ["STSBenchmark", "SciFact"], "sts,Tatoeba:deu-eng".
      data_root: benchmark data folder (default $GEMINI_EMBED_DATA, else ../shared/data).
      use_prompts: False encodes raw text (task=None) and retrieval documents as
        `(title + " " + text).strip()`, as MTEB ran all-MiniLM-L6-v2.
      dims: MRL truncation to the first k dims (re-normalised). A list of k evaluates every k,
        encoding each text set once; results are then keyed "Task@k".
      precision: score quantised embeddings ("int8", "uint8", "binary", "ubinary"; see
        `gemini_embed.quantize`); int8/uint8 take their ranges from `calibration`, the float
        embeddings [N, D] of texts outside the evaluation sets.
      progress: show a tqdm bar over tasks.
      cache: an on-disk EmbeddingCache for this model: texts embedded before are read back.
      done: results of an earlier, interrupted run of the same model and settings, by key: those
        tasks are not run again.
      on_result: called with all results so far after each task (e.g. to save them at once, so a
        failing or killed run keeps its finished tasks).
    Returns:
      {key: {"main_score", "metric", "scores", "num_samples", "seconds", "task", "type", "dims",
      "use_prompts"}}, keyed by task name (or "name@k" for a list of dims).
    """
    from tqdm.auto import tqdm

    task_list = tasks_lib.resolve_tasks(tasks)
    dim_list = [dims] if dims is None or isinstance(dims, int) else list(dims)
    multi = not (dims is None or isinstance(dims, int))
    results: dict[str, dict] = {}
    bar = tqdm(total=len(task_list) * len(dim_list), desc="eval", unit="task", disable=not progress)
    try:
        for task in task_list:
            enc = cache.wrap(encode, task.name) if cache is not None else encode
            enc = memoized(checked(enc)) if multi else enc
            for k in dim_list:
                key = f"{task.name}@{k}" if multi else task.name
                bar.set_postfix_str(key)
                if done and key in done:
                    results[key] = done[key]
                    bar.update(1)
                    continue
                results[key] = evaluate_task(enc, task, data_root=data_root, use_prompts=use_prompts, dims=k,
                                             precision=precision, calibration=calibration)
                if on_result is not None:
                    on_result(results)
                bar.update(1)
                if progress:
                    r = results[key]
                    bar.write(f"{key}: {r['metric']} = {r['main_score']:.4f} ({r['seconds']:.1f} s)")
    finally:
        bar.close()
    return results
