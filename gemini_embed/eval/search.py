"""Exact nearest-neighbour search by cosine similarity: a jitted, sharded matmul + top-k.

The corpus is streamed in fixed-size blocks (from RAM or a memory-mapped cache file); each
block is sharded over the devices of a mesh, scored against a batch of queries with one
matmul, reduced to its own top-k and merged into a running top-k. Host and device memory
are bounded by the block and query-batch sizes, not the corpus size, and every call after
the first reuses one compiled program (the last block and batch are padded).

Ties are deterministic: equal scores keep the lower corpus index first.
"""
from __future__ import annotations

import collections
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from gemini_embed import sharding
from gemini_embed.normalize import l2_normalize

QUERY_BATCH = 256
CORPUS_BLOCK = 32768  # rows per block: 32768 x 768 float32 = 96 MiB on the host
# Merges allowed in flight before the host waits. Each merge all-gathers across the mesh; on a
# CPU host with few cores a deep queue of them starves XLA's thread pool (the participants
# that arrived first hold every thread while the last device's backlog waits for one), and
# XLA aborts the process when the rendezvous times out.
MAX_IN_FLIGHT = 4


def cosine_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two [N, D] arrays -> [N]."""
    return np.sum(l2_normalize(a) * l2_normalize(b), axis=-1)


def _merge_block(queries, block, offset, n_valid, run_scores, run_idx, *, k: int, normalize: bool):
    """Fold one corpus block into the running top-k.

    queries [B, D] (replicated), block [Nb, D] (rows sharded), run_* [B, k] -> new run_* [B, k].
    """
    if normalize:
        block = l2_normalize(block)
    scores = queries @ block.T  # [B, Nb], columns sharded like the block rows
    col = offset + jnp.arange(block.shape[0], dtype=jnp.int32)  # global corpus index of each column
    scores = jnp.where(col < n_valid, scores, -jnp.inf)  # padding rows never win
    block_scores, pos = lax.top_k(scores, min(k, block.shape[0]))  # [B, kb], lower index first on ties
    cand_scores = jnp.concatenate([run_scores, block_scores], axis=1)
    cand_idx = jnp.concatenate([run_idx, col[pos]], axis=1)
    # sort by (score descending, index ascending): the tie rule holds across blocks too
    neg, idx = lax.sort((-cand_scores, cand_idx), dimension=1, num_keys=2)
    return -neg[:, :k], idx[:, :k]


@functools.lru_cache(maxsize=16)
def _compiled_merge(mesh, k: int, normalize: bool):
    rep = sharding.replicated(mesh)
    rows = sharding.batch_sharding(mesh, 2)
    fn = functools.partial(_merge_block, k=k, normalize=normalize)
    return jax.jit(fn, in_shardings=(rep, rows, rep, rep, rep, rep), out_shardings=(rep, rep))


def top_k(queries: np.ndarray, corpus: np.ndarray, k: int, *, query_batch: int = QUERY_BATCH,
          corpus_block: int = CORPUS_BLOCK, mesh=None, normalize: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The k most cosine-similar corpus rows for every query.

    Args:
      queries: [Q, D] embeddings. corpus: [N, D] embeddings, any array-like that slices into
        NumPy (an np.memmap is read one block at a time).
      k: neighbours per query (capped at N).
      query_batch: queries scored per step. corpus_block: corpus rows per step (rounded up to
        a multiple of the device count); together they bound the memory used.
      mesh: devices the corpus block is sharded over (default: all devices, one 'data' axis).
      normalize: L2-normalise both sides (cosine); False scores raw dot products.
    Returns:
      (scores [Q, k] float32, indices [Q, k] int64), best first; equal scores keep the lower
      index first.
    """
    if queries.ndim != 2 or corpus.ndim != 2 or queries.shape[1] != corpus.shape[1]:
        raise ValueError(f"queries {queries.shape} and corpus {corpus.shape} must be [Q, D] and [N, D]")
    if k < 1:
        raise ValueError(f"k={k} must be >= 1")
    if query_batch < 1 or corpus_block < 1:
        raise ValueError(f"query_batch={query_batch} and corpus_block={corpus_block} must be >= 1")
    n, dim = corpus.shape
    n_q = queries.shape[0]
    k = min(k, n)
    if n_q == 0 or n == 0:
        return np.zeros((n_q, k), np.float32), np.zeros((n_q, k), np.int64)
    if n >= 2**31 - corpus_block:
        raise ValueError(f"corpus of {n} rows exceeds the int32 index range")
    mesh = mesh if mesh is not None else sharding.make_mesh(data=-1)
    n_dev = mesh.devices.size
    # one block shape for the whole corpus (one compilation), no larger than the corpus needs
    block = -(-min(corpus_block, n) // n_dev) * n_dev
    q_rows = min(query_batch, n_q)
    merge = _compiled_merge(mesh, k, normalize)
    q_all = l2_normalize(queries) if normalize else np.asarray(queries, np.float32)

    # corpus blocks outside, query batches inside: each corpus row is read once (a memmap is
    # streamed from disk once); the running top-k of every batch stays on the devices
    starts = range(0, n_q, q_rows)
    running = [(jnp.full((q_rows, k), -jnp.inf, jnp.float32), jnp.full((q_rows, k), np.iinfo(np.int32).max,
                                                                       jnp.int32)) for _ in starts]
    q_batches = []
    for qs in starts:
        q = np.zeros((q_rows, dim), np.float32)
        q[:min(q_rows, n_q - qs)] = q_all[qs:qs + q_rows]
        q_batches.append(q)
    in_flight = collections.deque()
    for cs in range(0, n, block):
        c = np.zeros((block, dim), np.float32)
        c[:min(block, n - cs)] = corpus[cs:cs + block]  # the only corpus rows in host memory
        for b, q in enumerate(q_batches):
            running[b] = merge(q, c, np.int32(cs), np.int32(n), *running[b])
            in_flight.append(running[b])
            if len(in_flight) > MAX_IN_FLIGHT:
                jax.block_until_ready(in_flight.popleft())
    out_scores = np.empty((n_q, k), np.float32)
    out_idx = np.empty((n_q, k), np.int64)
    for qs, (scores, idx) in zip(starts, running):
        m = min(q_rows, n_q - qs)
        out_scores[qs:qs + m] = np.asarray(scores)[:m]
        out_idx[qs:qs + m] = np.asarray(idx)[:m]
    return out_scores, out_idx
