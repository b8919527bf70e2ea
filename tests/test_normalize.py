"""The shared L2 normalisation and Matryoshka truncation against NumPy written out by hand."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gemini_embed.normalize import l2_normalize, mrl_truncate


def _reference(x):
    x = np.asarray(x, np.float64)
    n = np.sqrt((x ** 2).sum(-1, keepdims=True))
    return np.where(n > 0, x / np.where(n > 0, n, 1), 0.0)


def test_numpy_and_jax_inputs_match_the_reference():
    x = np.random.default_rng(0).standard_normal((5, 3, 7)).astype(np.float32)
    x[0, 1] = 0.0  # a zero row stays zero
    for got in (l2_normalize(x), np.asarray(l2_normalize(jnp.asarray(x))), np.asarray(jax.jit(l2_normalize)(x))):
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, _reference(x), rtol=1e-6, atol=1e-7)
    assert isinstance(l2_normalize(x), np.ndarray) and isinstance(l2_normalize(jnp.asarray(x)), jax.Array)
    assert l2_normalize(jnp.asarray(x, jnp.bfloat16)).dtype == jnp.float32  # bf16 is promoted


def test_gradient_at_a_zero_row_is_finite():
    g = jax.grad(lambda v: jnp.sum(l2_normalize(v) * jnp.arange(4.0)))(jnp.zeros((2, 4)))
    assert np.isfinite(np.asarray(g)).all()


def test_matryoshka_prefix_is_renormalised():
    x = np.random.default_rng(1).standard_normal((4, 16)).astype(np.float32)
    np.testing.assert_allclose(mrl_truncate(x, 8), _reference(x[:, :8]), rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="dim=32 exceeds the embedding size 16"):
        mrl_truncate(x, 32)
