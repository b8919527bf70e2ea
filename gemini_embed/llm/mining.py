"""Hard-negative mining: first-stage retrieval, a rank window, optional LLM rescoring by RRF.

    mine(embedder, queries, corpus, qrels, "triplets.jsonl", config=MiningConfig(top_k=30, rank_window=(5, 30)))

Each query's top_k neighbours (by the embedder's cosine similarity over the whole corpus) are
taken; its positives are dropped, and the candidates whose 1-based retrieval rank lies inside
`rank_window` (inclusive) remain. Without a scorer the highest-ranked candidates become the
negatives. With a `QueryLikelihoodScorer` (llm/scoring.py) each candidate also gets log p(query | passage) from
Gemma 3 in causal mode; the embedding order and the LLM order are fused by reciprocal-rank fusion
and the lowest-fused candidates become the negatives (the LLM vetoes likely false negatives).

Output (one line per (query, positive) qrel, in qrels order), the generic training format:
  {"query", "positive", "title", "negatives": [{"text", "title"}, ...], "task"}
with `triplets.details.jsonl` (per query: ids, ranks, scores) and `triplets.stats.json` beside it.
Work is done in chunks of queries, each written atomically under `triplets.jsonl.progress/`; a restart
with the same arguments skips finished chunks, and the merged file is identical to an
uninterrupted run's (retrieval is cached there too, so it is not recomputed differently).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import shutil
import time
from typing import Any, Sequence

import numpy as np
from tqdm.auto import tqdm

from gemini_embed.eval.search import top_k as search_top_k


def rrf(rankings: Sequence[Sequence[Any]], k: float = 60.0) -> dict[Any, float]:
    """Reciprocal-rank fusion: item -> sum over rankings of 1 / (k + rank), rank 1-based."""
    if k < 0:
        raise ValueError(f"rrf k must be >= 0, got {k!r}")
    fused: dict[Any, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            fused[item] = fused.get(item, 0.0) + 1.0 / (k + rank)
    return fused


# ------------------------------------------------------------------ mining

@dataclasses.dataclass(frozen=True)
class MiningConfig:
    top_k: int = 30
    rank_window: tuple[int, int] = (5, 30)  # 1-based retrieval ranks, inclusive
    num_negatives: int = 3
    rrf_k: float = 60.0
    task: str | None = "search result"  # written to each record (the query prompt for training)
    query_batch: int = 16  # queries per resumable chunk

    def __post_init__(self):
        lo, hi = self.rank_window
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if not 1 <= lo <= hi <= self.top_k:
            raise ValueError(f"rank_window {lo}:{hi} must satisfy 1 <= start <= end <= top_k={self.top_k} "
                             f"(1-based ranks, both ends included)")
        if self.num_negatives < 1:
            raise ValueError(f"num_negatives must be >= 1, got {self.num_negatives}")
        if self.query_batch < 1:
            raise ValueError(f"query_batch must be >= 1, got {self.query_batch}")


def _fingerprint(cfg: MiningConfig, embedder_name: str, scorer, qids, doc_ids, qrels) -> dict:
    h = hashlib.sha256(json.dumps([qids, doc_ids, [sorted(qrels[q].items()) for q in qids]]).encode())
    return {**dataclasses.asdict(cfg), "rank_window": list(cfg.rank_window), "embedder": embedder_name,
            "scorer": None if scorer is None else getattr(scorer, "config", type(scorer).__name__),
            "data_sha256": h.hexdigest()}


def _write_atomic(path: pathlib.Path, lines: Sequence[str]) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(line + "\n" for line in lines)
    os.replace(tmp, path)  # a killed run leaves no half-written chunk behind


def select_negatives(cand: list[int], llm: np.ndarray | None, n: int, rrf_k: float) -> tuple[list[int], dict]:
    """Positions (into `cand`, which is in retrieval order) of the n chosen negatives, and details.

    Plain: the first n (hardest). Rescored: the n lowest by RRF of retrieval and LLM order;
    ties go to the lower LLM score (the less likely false negative).
    """
    if llm is None:
        return list(range(min(n, len(cand)))), {}
    by_llm = sorted(range(len(cand)), key=lambda i: (-llm[i], i))  # most likely relevant first
    fused = rrf([list(range(len(cand))), by_llm], rrf_k)
    chosen = sorted(range(len(cand)), key=lambda i: (fused[i], llm[i], i))[:n]
    return chosen, {"llm_loglik": [round(float(x), 4) for x in llm], "fused": [round(fused[i], 6) for i in range(len(cand))]}


def _embed_cached(embedder, texts, task, titles, batch_size, cache_dir):
    """embedder.embed, stored in cache_dir under a hash of (model, task, texts): re-mining with
    other windows or a rescorer need not embed the corpus again (minutes on a CPU)."""
    if cache_dir is None:
        return embedder.embed(texts, task=task, titles=titles, batch_size=batch_size)
    name = getattr(embedder, "name", type(embedder).__name__)
    key = hashlib.sha256(json.dumps([name, getattr(embedder, "dim", None), task, texts, titles]).encode()).hexdigest()
    path = pathlib.Path(cache_dir) / f"{name}.{key[:20]}.npy"
    if path.exists():
        return np.load(path)
    emb = embedder.embed(texts, task=task, titles=titles, batch_size=batch_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + f".tmp{os.getpid()}.npy")
    np.save(tmp, emb)
    os.replace(tmp, path)
    return emb


def mine(embedder, queries: dict[str, str], corpus: dict[str, tuple[str, str]], qrels: dict[str, dict[str, int]],
         output, *, config: MiningConfig = MiningConfig(), scorer=None, embed_batch_size: int = 64,
         embed_cache=None, overwrite: bool = False, keep_progress: bool = False, progress: bool = True) -> dict:
    """Mine hard negatives for every query of `qrels` with a positive (score > 0); returns stats.

    embedder: anything with `embed(texts, task=..., titles=...)` -> [N, D] (an Embedder) and a `name`.
    corpus: {doc_id: (title, text)}; queries: {query_id: text}; qrels: {query_id: {doc_id: score}}.
    scorer: None, or an object with `score(queries, passages) -> [N]` (higher = more relevant).
    embed_cache: a folder for embeddings, reused by later runs with the same model and texts.
    """
    cfg = config
    output = pathlib.Path(output)
    work = output.with_name(output.name + ".progress")
    details_path = output.with_name(output.stem + ".details.jsonl")
    stats_path = output.with_name(output.stem + ".stats.json")
    qids = [q for q in qrels if any(s > 0 for s in qrels[q].values())]
    missing = [q for q in qids if q not in queries] + [d for q in qids for d in qrels[q] if d not in corpus]
    if missing:
        raise ValueError(f"qrels name {len(missing)} id(s) absent from queries/corpus, e.g. {missing[:3]}")
    doc_ids = list(corpus)
    fp = _fingerprint(cfg, getattr(embedder, "name", type(embedder).__name__), scorer, qids, doc_ids, qrels)
    if work.exists():
        old = json.loads((work / "config.json").read_text())
        diff = sorted(k for k in set(old) | set(fp) if old.get(k) != fp.get(k))
        if diff:
            raise ValueError(f"{work} holds an unfinished run with different settings ({', '.join(diff)}: "
                             f"{[old.get(k) for k in diff]} there vs {[fp.get(k) for k in diff]} now); "
                             f"rerun with the same arguments or delete {work}")
    elif output.exists() and not overwrite:
        raise FileExistsError(f"{output} exists; pass overwrite=True (--overwrite) to mine it again")
    else:
        work.mkdir(parents=True)
        (work / "config.json").write_text(json.dumps(fp, indent=1))

    t0 = time.perf_counter()
    retrieval = work / "retrieval.npz"
    if retrieval.exists():
        indices = np.load(retrieval)["indices"]
        scores = np.load(retrieval)["scores"]
    else:
        titles, texts = [corpus[d][0] for d in doc_ids], [corpus[d][1] for d in doc_ids]
        c_emb = _embed_cached(embedder, texts, "document", titles, embed_batch_size, embed_cache)
        q_emb = _embed_cached(embedder, [queries[q] for q in qids], cfg.task, None, embed_batch_size, embed_cache)
        scores, indices = search_top_k(q_emb, c_emb, cfg.top_k)
        tmp = work / f"retrieval.tmp{os.getpid()}.npz"
        np.savez(tmp, indices=indices, scores=scores)
        os.replace(tmp, retrieval)
    retrieval_s = time.perf_counter() - t0

    chunks = [list(range(s, min(s + cfg.query_batch, len(qids)))) for s in range(0, len(qids), cfg.query_batch)]
    lo, hi = cfg.rank_window
    n_pairs, t_mine = 0, time.perf_counter()
    bar = tqdm(total=len(qids), desc="mine" + (" +llm" if scorer else ""), unit="query", disable=not progress)
    for c, rows in enumerate(chunks):
        done = work / f"chunk_{c:05d}.jsonl"
        if done.exists():
            bar.update(len(rows))
            continue
        cands = []  # per query: corpus indices of the window's non-positive docs, in retrieval order
        for r in rows:
            pos = {d for d, s in qrels[qids[r]].items() if s > 0}
            cands.append([(rank, int(j)) for rank, j in enumerate(indices[r], start=1)
                          if lo <= rank <= hi and doc_ids[j] not in pos])
        llm = None
        if scorer is not None:
            flat = [(r, j) for r, cand in zip(rows, cands) for _, j in cand]
            n_pairs += len(flat)
            flat_scores = scorer.score([queries[qids[r]] for r, _ in flat], [corpus[doc_ids[j]] for _, j in flat])
            llm, s = [], 0
            for cand in cands:
                llm.append(flat_scores[s:s + len(cand)])
                s += len(cand)
        records, details = [], []
        for i, (r, cand) in enumerate(zip(rows, cands)):
            qid = qids[r]
            chosen, extra = select_negatives(cand, None if llm is None else llm[i], cfg.num_negatives, cfg.rrf_k)
            neg = [doc_ids[cand[p][1]] for p in chosen]
            for did, s in qrels[qid].items():
                if s <= 0:
                    continue
                rec = {"query": queries[qid], "positive": corpus[did][1], "title": corpus[did][0],
                       "negatives": [{"text": corpus[d][1], "title": corpus[d][0]} for d in neg]}
                if cfg.task:
                    rec["task"] = cfg.task
                records.append(json.dumps(rec, ensure_ascii=False))
            details.append(json.dumps({
                "query_id": qid, "positive_ids": [d for d, s in qrels[qid].items() if s > 0],
                "positive_ranks": [k + 1 for k, j in enumerate(indices[r]) if qrels[qid].get(doc_ids[j], 0) > 0],
                "candidate_ids": [doc_ids[j] for _, j in cand], "candidate_ranks": [k for k, _ in cand],
                "embedding_scores": [round(float(scores[r][k - 1]), 6) for k, _ in cand],
                **extra, "negative_ids": neg}))
        _write_atomic(work / f"chunk_{c:05d}.details.jsonl", details)
        _write_atomic(done, records)  # written last: its presence marks the chunk finished
        bar.update(len(rows))
        if scorer is not None:
            bar.set_postfix(pairs_per_s=f"{n_pairs / (time.perf_counter() - t_mine):.2f}")
    bar.close()

    lines = [x for c in range(len(chunks)) for x in (work / f"chunk_{c:05d}.jsonl").read_text().splitlines()]
    det = [x for c in range(len(chunks)) for x in (work / f"chunk_{c:05d}.details.jsonl").read_text().splitlines()]
    _write_atomic(details_path, det)
    _write_atomic(output, lines)
    negs = [len(json.loads(x)["negative_ids"]) for x in det]
    stats = {"output": str(output), "queries": len(qids), "records": len(lines), "corpus": len(doc_ids),
             "negatives_per_query": {str(n): negs.count(n) for n in sorted(set(negs))},
             "mean_negatives": float(np.mean(negs)) if negs else 0.0,
             "retrieval_seconds": round(retrieval_s, 1), "mining_seconds_this_run": round(time.perf_counter() - t_mine, 1),
             "llm_pairs_this_run": n_pairs, "settings": fp}
    _write_atomic(stats_path, [json.dumps(stats, indent=1)])
    if not keep_progress:
        shutil.rmtree(work)
    return stats
