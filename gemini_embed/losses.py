"""Contrastive losses: NCE with in-batch negatives, its Matryoshka (MRL) sum, a spread-out
regulariser, CoSENT for pairs with graded similarity scores, and distillation of a teacher's
in-batch similarities.

Axes: B = global batch, K = hard negatives per row, D = embedding dim, C = B + K candidates per row.

Pure functions over full (global) arrays. Under `jit` with batch-sharded inputs, `q @ p.T` scores
the *global* batch: XLA inserts the all-gather, so nothing here is device-specific.

The NCE loss of the Gemini Embedding paper (arXiv 2503.07891), with cosine similarity s and
temperature tau:

    L_i = -log( e^{s(q_i,p_i)/tau} /
                ( sum_k present_ik w_ik e^{s(q_i,n_ik)/tau} + sum_j m_ij e^{s(q_i,p_j)/tau} ) )

- j = i stays in the denominator (the positive itself); m_ij = 0 for j != i when query_ids or
  positive_ids of i and j match (duplicate query or same target: a false negative), else 1.
- Only row i's own hard negatives n_ik enter its denominator; absent ones (negatives_mask False)
  drop out. No query-query or target-target terms.
- w_ik = 1 unless `hard_negative_alpha` is set; then w_ik = exp(alpha * stop_gradient(s(q_i,n_ik)))
  (EmbeddingGemma, arXiv 2509.20354, alpha = 5): the weight multiplies the hard negative's term in
  the *denominator* only, so harder negatives push harder; in-batch negatives are not weighted.
  In log space it is an additive, gradient-free offset alpha * s on that logit.
"""
from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp

from gemini_embed.normalize import l2_normalize

Array = Any

# Similarities are divided by tau ~ 0.02: a bf16/TF32 matmul pass (the TPU/GPU default for f32)
# would put ~1e-3 * 50 errors on the logits. The B x B x D product is cheap next to the encoder.
_PRECISION = jax.lax.Precision.HIGHEST


def _check(query, positive, negatives, query_ids, positive_ids, negatives_mask) -> None:
    """Static shape checks: a wrong shape should be a message, not a silently broadcast loss."""
    if query.ndim != 2 or query.shape != positive.shape:
        raise ValueError(f"query and positive must both be [B, D], got {query.shape} and {positive.shape}")
    b, d = query.shape
    if negatives is not None and (negatives.ndim != 3 or negatives.shape[0] != b
                                  or negatives.shape[2] != d or negatives.shape[1] < 1):
        raise ValueError(f"negatives must be [B={b}, K>=1, D={d}], got {negatives.shape}")
    if negatives_mask is not None:
        if negatives is None:
            raise ValueError("negatives_mask given without negatives")
        if negatives_mask.shape != negatives.shape[:2]:
            raise ValueError(f"negatives_mask must be [B, K]={negatives.shape[:2]}, got {negatives_mask.shape}")
    for name, ids in (("query_ids", query_ids), ("positive_ids", positive_ids)):
        if ids is not None and ids.shape != (b,):
            raise ValueError(f"{name} must be [B={b}], got {ids.shape}")


def _nce_rows(query, positive, negatives, temperature, query_ids, positive_ids, negatives_mask,
              hard_negative_alpha):
    """Per-row NCE losses plus what the metrics need.

    Returns (row_loss [B], sims [B, C] cosine similarities, others [B, C] bool: the unmasked
    candidates other than the row's positive). Columns are the B in-batch positives, then the K
    hard negatives; row i's own positive is column i.
    """
    query, positive = jnp.asarray(query), jnp.asarray(positive)
    negatives = None if negatives is None else jnp.asarray(negatives)
    query_ids = None if query_ids is None else jnp.asarray(query_ids)
    positive_ids = None if positive_ids is None else jnp.asarray(positive_ids)
    negatives_mask = None if negatives_mask is None else jnp.asarray(negatives_mask, bool)
    _check(query, positive, negatives, query_ids, positive_ids, negatives_mask)
    if hard_negative_alpha is not None and negatives is None:
        raise ValueError("hard_negative_alpha needs negatives")
    b = query.shape[0]
    q, p = l2_normalize(query), l2_normalize(positive)                          # [B, D]
    sims = jnp.einsum("id,jd->ij", q, p, precision=_PRECISION)             # [B, B]

    # m_ij: drop false negatives (same query / same target) but never the row's own positive.
    eye = jnp.eye(b, dtype=bool)                                           # [B, B]
    false_neg = jnp.zeros((b, b), bool)
    for ids in (query_ids, positive_ids):
        if ids is not None:
            false_neg |= ids[:, None] == ids[None, :]
    valid = eye | ~false_neg                                               # [B, B]
    offset = jnp.zeros_like(sims)                                          # [B, C] log-weights

    if negatives is not None:
        n = l2_normalize(negatives)                                          # [B, K, D]
        neg_sims = jnp.einsum("id,ikd->ik", q, n, precision=_PRECISION)    # [B, K]
        neg_valid = (jnp.ones(neg_sims.shape, bool) if negatives_mask is None
                     else negatives_mask)                                  # [B, K]
        neg_offset = jnp.zeros_like(neg_sims)
        if hard_negative_alpha is not None:
            # log w_ik = alpha * sg(s_ik): a constant per step, it rescales the term's gradient only.
            neg_offset = hard_negative_alpha * jax.lax.stop_gradient(neg_sims)
        sims = jnp.concatenate([sims, neg_sims], axis=1)                   # [B, C]
        valid = jnp.concatenate([valid, neg_valid], axis=1)                # [B, C]
        offset = jnp.concatenate([offset, neg_offset], axis=1)             # [B, C]

    # L_i = log(1 + sum_{c != i} e^{r_ic}) with r_ic = (s_ic - s_ii) / tau + log w_ic: logits taken
    # relative to the positive, so a small L_i is not the difference of two ~1/tau numbers (an f32
    # logsumexp(l) - l_ii loses ~ulp(50) = 4e-6 absolute), and log1p keeps log(1 + tiny) exact.
    # A python float temperature is weakly typed: sims' dtype (f32, or f64 under x64) wins.
    pos = jnp.diagonal(sims[:, :b])                                        # [B]
    others = valid & ~jnp.eye(b, sims.shape[1], dtype=bool)                # [B, C]
    rel = jnp.where(others, (sims - pos[:, None]) / temperature + offset, -jnp.inf)  # [B, C]
    # Shift by the row max (>= 0, the positive's r_ii): 1/tau = 100 would overflow exp in f32.
    # -inf (not a where after exp) keeps masked entries' gradients 0 instead of 0 * inf = NaN.
    m = jax.lax.stop_gradient(jnp.maximum(jnp.max(rel, axis=1), 0.0))      # [B]
    tail = jnp.sum(jnp.exp(rel - m[:, None]), axis=1)                      # [B]
    row_loss = m + jnp.log1p(tail + jnp.expm1(-m))                         # [B] log(e^-m + tail)
    return row_loss, sims, others


def nce_loss(query: Array, positive: Array, negatives: Array | None = None, *, temperature: float | Array,
             query_ids: Array | None = None, positive_ids: Array | None = None,
             negatives_mask: Array | None = None, hard_negative_alpha: float | None = None) -> Array:
    """Mean NCE loss over the batch (see the module docstring for the formula).

    query, positive: [B, D]; negatives: [B, K, D] or None; negatives_mask: [B, K] bool, False =
    absent; query_ids / positive_ids: [B] ints, equal ids mark duplicate queries / identical
    targets. Inputs are L2-normalised here. `temperature` may be a traced scalar (learnable).
    """
    rows, _, _ = _nce_rows(query, positive, negatives, temperature, query_ids, positive_ids,
                           negatives_mask, hard_negative_alpha)
    return jnp.mean(rows)


def nce_loss_and_metrics(query: Array, positive: Array, negatives: Array | None = None, *,
                         temperature: float | Array, query_ids: Array | None = None,
                         positive_ids: Array | None = None, negatives_mask: Array | None = None,
                         hard_negative_alpha: float | None = None) -> tuple[Array, dict[str, Array]]:
    """`nce_loss` plus scalar metrics from the same similarities (under jit, unused ones cost nothing):

    in_batch_accuracy: fraction of rows whose positive has the highest similarity among the row's
      unmasked candidates (in-batch and present hard negatives; ties count as hits).
    positive_similarity: mean s(q_i, p_i).
    negative_similarity: mean s over all unmasked non-positive candidates (a collapse watch).
    hard_negative_similarity (only with negatives): mean s(q_i, n_ik) over present negatives.
    """
    rows, sims, others = _nce_rows(query, positive, negatives, temperature, query_ids, positive_ids,
                                   negatives_mask, hard_negative_alpha)
    b = rows.shape[0]
    pos = jnp.diagonal(sims[:, :b])                                        # [B]
    best_other = jnp.max(jnp.where(others, sims, -jnp.inf), axis=1)        # [B]; -inf if none
    metrics = {
        "in_batch_accuracy": jnp.mean((pos >= best_other).astype(jnp.float32)),
        "positive_similarity": jnp.mean(pos),
        "negative_similarity": _masked_mean(sims, others),
    }
    if negatives is not None:
        metrics["hard_negative_similarity"] = _masked_mean(sims[:, b:], others[:, b:])
    return jnp.mean(rows), metrics


def _masked_mean(x: Array, mask: Array) -> Array:
    return jnp.sum(jnp.where(mask, x, 0.0)) / jnp.maximum(jnp.sum(mask), 1)


def mrl_nce_loss(query: Array, positive: Array, negatives: Array | None = None, *, dims: Sequence[int],
                 weights: Sequence[float] | None = None, **kw) -> Array:
    """Matryoshka NCE: sum_k weights[k] * nce_loss on the first dims[k] coordinates.

    Truncation happens before normalisation, so each prefix is re-normalised inside nce_loss (the
    recipe's "truncate, then re-normalise"). `kw` goes to nce_loss; weights default to 1.
    """
    return mrl_nce_loss_and_metrics(query, positive, negatives, dims=dims, weights=weights, **kw)[0]


def mrl_nce_loss_and_metrics(query: Array, positive: Array, negatives: Array | None = None, *,
                             dims: Sequence[int], weights: Sequence[float] | None = None,
                             **kw) -> tuple[Array, dict[str, Array]]:
    """`mrl_nce_loss` plus the nce metrics of every prefix, keyed "name@dim", and "loss@dim"."""
    d = query.shape[-1]
    dims = [int(k) for k in dims]
    weights = [1.0] * len(dims) if weights is None else [float(w) for w in weights]
    if not dims or len(weights) != len(dims) or any(not 1 <= k <= d for k in dims):
        raise ValueError(f"need 1 <= dims <= {d} and one weight per dim, got dims={dims} weights={weights}")
    total, metrics = 0.0, {}
    for k, w in zip(dims, weights):
        neg = None if negatives is None else negatives[..., :k]
        loss, m = nce_loss_and_metrics(query[..., :k], positive[..., :k], neg, **kw)
        total = total + w * loss
        metrics[f"loss@{k}"] = loss
        metrics.update({f"{name}@{k}": v for name, v in m.items()})
    return total, metrics


def spread_out_loss(query: Array, positive: Array) -> Array:
    """EmbeddingGemma's spread-out regulariser (the second-moment term of the global orthogonal
    regulariser, Zhang et al. 2017):

        L_S = mean_{i != j} (q_i . q_j)^2 + mean_{i != j} (p_i . p_j)^2

    on L2-normalised [B, D] inputs: one mean per side, summed, as in the EmbeddingGemma paper.
    Random unit vectors give 1/D per side, so this pushes embeddings to spread over the sphere
    (robust to quantisation and ANN search). A pair of identical rows adds a constant (cosine 1)
    with zero gradient: normalisation removes the radial direction.
    """
    if query.ndim != 2 or query.shape != positive.shape or query.shape[0] < 2:
        raise ValueError(f"query and positive must both be [B>=2, D], got {query.shape} and {positive.shape}")
    b = query.shape[0]
    off = ~jnp.eye(b, dtype=bool)                                          # [B, B]

    def side(x):
        x = l2_normalize(jnp.asarray(x))                                     # [B, D]
        gram = jnp.einsum("id,jd->ij", x, x, precision=_PRECISION)         # [B, B]
        return jnp.sum(jnp.where(off, gram * gram, 0.0)) / (b * (b - 1))

    return side(query) + side(positive)


def cosent_loss(query: Array, positive: Array, scores: Array, *, temperature: float | Array) -> Array:
    """CoSENT (Su 2022): a ranking loss over the pairs' cosines that follows graded gold scores.

        L = log( 1 + sum_{(i, j): y_i > y_j} e^{(c_j - c_i) / tau} ),   c_i = cos(q_i, p_i)

    over every ordered pair of rows of the (global) batch: a pair scored higher must have the higher
    cosine. query, positive: [B, D] (L2-normalised here); scores: [B] gold similarities. Unlike NCE
    it uses low-scored pairs too (STS Benchmark's 0-5 scale), and only the order of the scores
    matters, as for the Spearman correlation STS is measured by. Rows with a non-finite score drop
    out. A batch with no ordered pair gives 0 with a zero gradient.
    """
    query, positive, scores = jnp.asarray(query), jnp.asarray(positive), jnp.asarray(scores)
    if query.ndim != 2 or query.shape != positive.shape or scores.shape != query.shape[:1]:
        raise ValueError(f"need query, positive [B, D] and scores [B], got {query.shape}, {positive.shape}, "
                         f"{scores.shape}")
    cos = jnp.sum(l2_normalize(query) * l2_normalize(positive), axis=-1)   # [B]
    ok = jnp.isfinite(scores)
    y = jnp.where(ok, scores, 0.0)
    ordered = (y[:, None] > y[None, :]) & ok[:, None] & ok[None, :]      # [B, B]: y_i > y_j
    rel = jnp.where(ordered, (cos[None, :] - cos[:, None]) / temperature, -jnp.inf)
    # log(1 + sum e^rel) shifted by m = max(0, max rel), as in _nce_rows: no overflow at 1/tau = 20+.
    m = jax.lax.stop_gradient(jnp.maximum(jnp.max(rel), 0.0))
    return m + jnp.log(jnp.exp(-m) + jnp.sum(jnp.exp(rel - m)))


def mrl_cosent_loss(query: Array, positive: Array, scores: Array, *, dims: Sequence[int],
                    weights: Sequence[float] | None = None, temperature: float | Array) -> Array:
    """sum_k weights[k] * cosent_loss on the first dims[k] coordinates (re-normalised), as mrl_nce_loss."""
    weights = [1.0] * len(dims) if weights is None else list(weights)
    if len(weights) != len(dims):
        raise ValueError(f"one weight per dim: dims={list(dims)} weights={weights}")
    return sum(float(w) * cosent_loss(query[..., :k], positive[..., :k], scores, temperature=temperature)
               for k, w in zip(dims, weights))


def _score_rows(query, positive, negatives, negatives_mask, temperature):
    """[B, B + K] logits s(q_i, candidate) / tau over the in-batch positives then row i's own hard
    negatives (absent ones -inf), on L2-normalised inputs."""
    q, p = l2_normalize(jnp.asarray(query)), l2_normalize(jnp.asarray(positive))
    s = jnp.einsum("id,jd->ij", q, p, precision=_PRECISION)                # [B, B]
    if negatives is not None:
        n = l2_normalize(jnp.asarray(negatives))                           # [B, K, D]
        sn = jnp.einsum("id,ikd->ik", q, n, precision=_PRECISION)          # [B, K]
        if negatives_mask is not None:
            sn = jnp.where(jnp.asarray(negatives_mask, bool), sn, -jnp.inf)
        s = jnp.concatenate([s, sn], axis=1)
    return s / temperature


def distill_loss(query: Array, positive: Array, negatives: Array | None, teacher_query: Array,
                 teacher_positive: Array, teacher_negatives: Array | None = None, *, temperature: float | Array,
                 teacher_temperature: float, negatives_mask: Array | None = None) -> Array:
    """Embedding distillation through the in-batch similarity matrix (EmbeddingGemma distils a
    teacher's embeddings; where student and teacher dims differ, their similarities are what can
    be matched):

        L = 1/B sum_i KL( softmax_c(t_ic / tau_t) || softmax_c(s_ic / tau) )

    over row i's candidates c: every in-batch positive, then its own hard negatives (absent ones
    drop out of both distributions), s the student's cosines, t the teacher's. The teacher's graded
    similarities reach pairs that NCE only calls "negative". query, positive: [B, D]; negatives
    [B, K, D]; teacher_*: the same rows at the teacher's dim [.., Dt], held constant.
    """
    if teacher_query.shape[0] != query.shape[0] or teacher_positive.shape != teacher_query.shape:
        raise ValueError(f"teacher rows must match the batch: query {query.shape}, teacher query "
                         f"{teacher_query.shape}, teacher positive {teacher_positive.shape}")
    if (negatives is None) != (teacher_negatives is None):
        raise ValueError("negatives and teacher_negatives must be given together")
    _check(query, positive, negatives, None, None, negatives_mask)
    student = jax.nn.log_softmax(_score_rows(query, positive, negatives, negatives_mask, temperature), axis=1)
    teacher = jax.lax.stop_gradient(jax.nn.log_softmax(
        _score_rows(teacher_query, teacher_positive, teacher_negatives, negatives_mask, teacher_temperature), axis=1))
    live = jnp.isfinite(teacher)  # absent negatives: p_t = 0 contributes nothing (and no 0 * inf)
    kl = jnp.where(live, jnp.exp(teacher) * (teacher - jnp.where(live, student, 0.0)), 0.0)
    return jnp.mean(jnp.sum(kl, axis=1))


def mrl_distill_loss(query: Array, positive: Array, negatives: Array | None, teacher_query: Array,
                     teacher_positive: Array, teacher_negatives: Array | None = None, *, dims: Sequence[int],
                     weights: Sequence[float] | None = None, **kw) -> Array:
    """sum_k weights[k] * distill_loss of the student's first dims[k] coordinates (re-normalised)
    against the whole teacher embedding, as mrl_nce_loss."""
    weights = [1.0] * len(dims) if weights is None else list(weights)
    if len(weights) != len(dims):
        raise ValueError(f"one weight per dim: dims={list(dims)} weights={weights}")
    return sum(float(w) * distill_loss(query[..., :k], positive[..., :k],
                                       None if negatives is None else negatives[..., :k],
                                       teacher_query, teacher_positive, teacher_negatives, **kw)
               for k, w in zip(dims, weights))
