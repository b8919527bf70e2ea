"""Exact nearest-neighbour search by cosine similarity.

`top_k` is the one place the evaluators score queries against a corpus, so it can be swapped
for a jitted, sharded matmul on accelerators; this NumPy version walks the queries in batches.
"""
from __future__ import annotations

import numpy as np


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)


def top_k(queries: np.ndarray, corpus: np.ndarray, k: int, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """The k most cosine-similar corpus rows for every query.

    Args:
      queries: [Q, D] embeddings. corpus: [N, D] embeddings (normalised here).
      k: neighbours per query (capped at N).
    Returns:
      (scores [Q, k] float32, indices [Q, k] int64), best first; equal scores keep the lower index
      first.
    """
    q, c = l2_normalize(queries), l2_normalize(corpus)
    k = min(k, c.shape[0])
    all_scores = np.empty((q.shape[0], k), dtype=np.float32)
    all_idx = np.empty((q.shape[0], k), dtype=np.int64)
    for start in range(0, q.shape[0], batch_size):
        sims = q[start:start + batch_size] @ c.T  # [B, N]
        if k < c.shape[0]:
            part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        else:
            part = np.broadcast_to(np.arange(c.shape[0]), sims.shape)
        part_scores = np.take_along_axis(sims, part, axis=1)
        # sort by score descending, then index ascending
        order = np.lexsort((part, -part_scores), axis=1)
        all_idx[start:start + batch_size] = np.take_along_axis(part, order, axis=1)
        all_scores[start:start + batch_size] = np.take_along_axis(part_scores, order, axis=1)
    return all_scores, all_idx


def cosine_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two [N, D] arrays -> [N]."""
    return np.sum(l2_normalize(a) * l2_normalize(b), axis=-1)
