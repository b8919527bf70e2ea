"""Filtering synthetic pairs: drop near-duplicates, unlikely queries and queries that miss their passage.

Three tests, applied in this order, each row dropped by the first it fails:
  duplicate   the query equals an earlier kept one after lowercasing and dropping punctuation,
              or its embedding has cosine >= `dedup_cosine` with an earlier kept query's;
  loglik      the LLM's mean log p(query token | passage, earlier query tokens) is below
              `min_loglik` (per token, so long queries are not punished for their length);
  round_trip  a first-stage embedder does not retrieve the row's own passage within the top
              `round_trip_k` among all distinct passages of the file.
Every row is scored by all three, so the histograms show the whole input.
"""
from __future__ import annotations

import dataclasses
import pathlib
import re
from typing import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class FilterConfig:
    min_loglik: float | None = -3.0  # None: no likelihood test
    round_trip_k: int | None = 5  # None: no round-trip test
    dedup_cosine: float | None = 0.95  # None: exact (normalised) text duplicates only

    def __post_init__(self):
        if self.round_trip_k is not None and self.round_trip_k < 1:
            raise ValueError(f"round_trip_k must be >= 1, got {self.round_trip_k}")
        if self.dedup_cosine is not None and not 0 < self.dedup_cosine <= 1:
            raise ValueError(f"dedup_cosine must be in (0, 1], got {self.dedup_cosine}")


def normalized(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def duplicates(queries: Sequence[str], emb: np.ndarray | None, cosine: float | None) -> np.ndarray:
    """[N] bool: row i repeats an earlier non-duplicate row (text, or embedding cosine >= `cosine`)."""
    dup = np.zeros(len(queries), bool)
    seen: dict[str, int] = {}
    kept: list[int] = []
    for i, q in enumerate(queries):
        key = normalized(q)
        if key in seen:
            dup[i] = True
        elif emb is not None and cosine is not None and kept and float(np.max(emb[kept] @ emb[i])) >= cosine:
            dup[i] = True
        else:
            seen[key] = i
            kept.append(i)
    return dup


def round_trip_ranks(q_emb: np.ndarray, p_emb: np.ndarray, own: np.ndarray) -> np.ndarray:
    """[N] 1-based rank of passage own[i] for query i among all passages (ties count against it)."""
    scores = q_emb @ p_emb.T  # [N, P]
    mine = scores[np.arange(len(own)), own][:, None]
    return np.sum(scores > mine, axis=1) + np.sum(scores == mine, axis=1)  # itself counts once: rank 1


def filter_rows(rows: Sequence[dict], config: FilterConfig, *, scorer=None, embedder=None,
                batch_size: int = 64) -> tuple[list[dict], dict]:
    """(kept rows, each with provenance["filter"] scores; stats) for generic rows with `query`,
    `positive`, `title`, `task`. scorer: a QueryLikelihoodScorer (needed with min_loglik);
    embedder: an Embedder (needed with round_trip_k or dedup_cosine)."""
    queries = [r["query"] for r in rows]
    passages = [(r.get("title", ""), r["positive"]) for r in rows]
    q_emb = ranks = loglik = None
    if embedder is not None and (config.round_trip_k or config.dedup_cosine):
        task = (rows[0].get("task") or "search result") if rows else None
        q_emb = embedder.embed(queries, task=task, batch_size=batch_size)
    if config.round_trip_k:
        if embedder is None:
            raise ValueError("the round-trip test needs an embedder")
        distinct = list(dict.fromkeys(passages))
        where = {p: i for i, p in enumerate(distinct)}
        p_emb = embedder.embed([t for _, t in distinct], task="document", titles=[h for h, _ in distinct],
                               batch_size=batch_size)
        ranks = round_trip_ranks(q_emb, p_emb, np.array([where[p] for p in passages]))
    if config.min_loglik is not None:
        if scorer is None:
            raise ValueError("the likelihood test needs an LLM scorer")
        total = scorer.score(queries, passages)
        lengths = np.array([max(n, 1) for _, n in scorer.pair_ids(queries, passages)])
        loglik = total / lengths
    dup = duplicates(queries, q_emb if config.dedup_cosine else None, config.dedup_cosine)
    reason = np.full(len(rows), "", object)
    for name, failed in (("duplicate", dup),
                         ("loglik", loglik < config.min_loglik if loglik is not None else None),
                         ("round_trip", ranks > config.round_trip_k if ranks is not None else None)):
        if failed is not None:
            reason[(reason == "") & failed] = name
    kept = []
    for i, r in enumerate(rows):
        if reason[i]:
            continue
        scores = {"loglik_per_token": None if loglik is None else round(float(loglik[i]), 4),
                  "round_trip_rank": None if ranks is None else int(ranks[i])}
        kept.append({**r, "provenance": {**r.get("provenance", {}), "filter": scores}})
    stats = {"rows": len(rows), "kept": len(kept), "kept_fraction": round(len(kept) / max(len(rows), 1), 4),
             "dropped": {n: int(np.sum(reason == n)) for n in ("duplicate", "loglik", "round_trip")},
             "config": dataclasses.asdict(config)}
    if loglik is not None:
        counts, edges = np.histogram(loglik, bins=20)
        stats["loglik_per_token"] = {"histogram": counts.tolist(), "edges": np.round(edges, 3).tolist(),
                                     "median": round(float(np.median(loglik)), 4)}
    if ranks is not None:
        stats["round_trip_rank"] = {f"<= {k}": int(np.sum(ranks <= k)) for k in (1, 3, 5, 10, 100)}
    return kept, stats


def plot_histogram(stats: dict, path) -> None:
    """The per-token log-likelihood histogram with the threshold, as a PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h = stats.get("loglik_per_token")
    if not h:
        return
    fig, ax = plt.subplots(figsize=(6, 3.5))
    edges = np.array(h["edges"])
    ax.bar(edges[:-1], h["histogram"], width=np.diff(edges), align="edge", edgecolor="k")
    if stats["config"]["min_loglik"] is not None:
        ax.axvline(stats["config"]["min_loglik"], color="r", label="threshold")
        ax.legend()
    ax.set(xlabel="mean log p(query token | passage)", ylabel="pairs",
           title=f"kept {stats['kept']} of {stats['rows']}")
    fig.tight_layout()
    fig.savefig(pathlib.Path(path))
    plt.close(fig)


def read_rows(path) -> list[dict]:
    """The rows of a generic JSONL file as they are (provenance kept); the first bad line raises a
    DataError naming the file, line and field."""
    from gemini_embed.data.files import Problems, read_jsonl, text_field

    problems = Problems(on_error="fail")
    rows = []
    for line, row in read_jsonl(path, problems):
        for field in ("query", "positive"):
            text_field(row, field, path, line, problems)
        rows.append(row)
    return rows
