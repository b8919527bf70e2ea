"""L2 normalisation and Matryoshka truncation: the one implementation the model, the loss, the
search and the evaluators share.

NumPy in gives NumPy out (host-side evaluation); a jax array or tracer gives jax (inside jit).
Computed in at least float32 (bf16 is promoted). A zero row stays zero, and its gradient is 0,
not NaN: the norm is taken as sqrt(max(|x|^2, eps^2)), whose max has a zero gradient there.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def l2_normalize(x, eps: float = 1e-12):
    """Rows of `x` (last axis) scaled to unit length."""
    xp = np if isinstance(x, (np.ndarray, list, tuple, np.generic)) else jnp
    x = xp.asarray(x)
    x = x.astype(xp.promote_types(x.dtype, xp.float32))
    return x / xp.sqrt(xp.maximum(xp.sum(x * x, axis=-1, keepdims=True), eps * eps))


def mrl_truncate(x, dim: int):
    """The Matryoshka prefix: the first `dim` dims of each row, re-normalised."""
    if dim > x.shape[-1]:
        raise ValueError(f"dim={dim} exceeds the embedding size {x.shape[-1]}")
    return l2_normalize(x[..., :dim])
