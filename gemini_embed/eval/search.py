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

from gemini_embed import quantize, sharding
from gemini_embed.normalize import l2_normalize

QUERY_BATCH = 256
CORPUS_BLOCK = 32768  # rows per block: 32768 x 768 float32 = 96 MiB on the host
# Merges allowed in flight before the host waits. Each merge all-gathers across the mesh; on a
# CPU host with few cores a deep queue of them starves XLA's thread pool (the participants
# that arrived first hold every thread while the last device's backlog waits for one), and
# XLA aborts the process when the rendezvous times out.
MAX_IN_FLIGHT = 4


def cosine_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two [N, D] arrays -> [N] float64.

    dot / (|a| |b|) in float64: for integer-valued vectors (quantised levels, +-1 bits) equal
    cosines come out exactly equal, so rank statistics see the true ties."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    norms = np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-24)
    return np.sum(a * b, axis=-1) / norms


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


class _Signs:
    """A packed-bit corpus that `top_k` reads block by block as +-1 float rows: only one block is
    ever unpacked in memory, so the corpus stays at D/8 bytes per vector."""

    def __init__(self, packed: np.ndarray, precision: str, dim: int):
        self.packed, self.precision, self.dim = packed, precision, dim
        self.shape, self.ndim = (packed.shape[0], dim), 2

    def __getitem__(self, rows):
        return quantize.as_float(self.packed[rows], self.precision, self.dim)


def binary_search(queries: np.ndarray, corpus_bits: np.ndarray, k: int, *, dim: int, precision: str = "ubinary",
                  rescore_queries: np.ndarray | None = None, rescore_multiplier: int = 4, mesh=None):
    """Top-k corpus rows by Hamming distance to binary `queries` (same precision as the corpus).

    With `rescore_queries` (the float32 query embeddings), the best k * rescore_multiplier by
    Hamming distance are re-ranked by float query . (+-1 document) dot products, the usual
    recovery of most of the float quality at 1/32 of the memory.
    Returns (scores [Q, k], indices [Q, k]): scores are cosines of the +-1 vectors
    (1 - 2 * hamming / dim), or the rescoring dot products.
    """
    if precision not in ("binary", "ubinary"):
        raise ValueError(f"binary_search needs precision 'binary' or 'ubinary', got {precision!r}")
    if rescore_multiplier < 1:
        raise ValueError(f"rescore_multiplier must be >= 1, got {rescore_multiplier}")
    corpus = _Signs(corpus_bits, precision, dim)
    q = quantize.as_float(queries, precision, dim)
    # raw +-1 dot products (dim - 2 * hamming) are integers, exact in float32: equal distances
    # tie exactly and keep the lower index first, which normalised cosines would not guarantee
    if rescore_queries is None:
        scores, idx = top_k(q, corpus, k, mesh=mesh, normalize=False)
        return scores / dim, idx
    rescore_queries = np.asarray(rescore_queries, np.float32)
    if rescore_queries.shape != (q.shape[0], dim):
        raise ValueError(f"rescore_queries must be [{q.shape[0]}, {dim}], got shape {rescore_queries.shape}")
    _, cand = top_k(q, corpus, k * rescore_multiplier, mesh=mesh, normalize=False)  # [Q, k*m]
    k = min(k, cand.shape[1])
    rows = np.unique(cand)  # each candidate document unpacked once
    scores = rescore_queries @ corpus[rows].T  # [Q, U]
    scores = np.take_along_axis(scores, np.searchsorted(rows, cand), -1)  # [Q, k*m]
    order = np.lexsort((cand, -scores), axis=-1)[:, :k]  # score descending, lower index first on ties
    return np.take_along_axis(scores, order, -1), np.take_along_axis(cand, order, -1)


def semantic_search(queries: np.ndarray, corpus: np.ndarray, k: int = 10, *, precision: str = "float32",
                    dim: int | None = None, rescore_queries: np.ndarray | None = None,
                    rescore_multiplier: int = 4, mesh=None) -> list[list[dict]]:
    """For each query, its k best corpus rows as [{"corpus_id": row, "score": cosine}], best first.

    float32 / int8 / uint8 embeddings are scored by cosine; binary / ubinary (packed bits from
    `embed(precision=...)`, `dim` = the unpacked size) by Hamming distance, re-ranked by float
    dot products when `rescore_queries` (the float32 query embeddings) is given.
    """
    quantize.check_precision(precision)
    if precision in ("binary", "ubinary"):
        if dim is None:
            raise ValueError("binary embeddings need dim= (the embedding size before packing)")
        scores, idx = binary_search(queries, corpus, k, dim=dim, precision=precision, mesh=mesh,
                                    rescore_queries=rescore_queries, rescore_multiplier=rescore_multiplier)
    else:
        scores, idx = top_k(np.asarray(queries, np.float32), corpus, k, mesh=mesh)  # corpus: any array-like
    return [[{"corpus_id": int(i), "score": float(s)} for s, i in zip(row_s, row_i)] for row_s, row_i in zip(scores, idx)]
