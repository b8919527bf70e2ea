"""Gradient caching equals the plain step (same losses and params after several steps), with the
batch sharded over 8 devices, and its chunks keep every device busy.

Runs and helpers come from test_train_step (tests/train is on sys.path under pytest's default
import mode): the plain single-device run is computed once for both files.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from gemini_embed import sharding
from gemini_embed.train.grad_cache import check_chunking, from_chunks, grad_cached_value_and_grad, to_chunks
from test_train_step import SINGLE, assert_runs_close, mesh_of, run


@pytest.mark.parametrize("mesh_shape, chunk", [
    ((2, 2, 2), 8),  # 4 chunks, 2 rows per device each; partial grads per 'data' index; fsdp + tensor params
    pytest.param((8, 1, 1), 8, marks=pytest.mark.slow),  # 4 chunks, 1 row per device each
    pytest.param(SINGLE, 4, marks=pytest.mark.slow),  # 8 chunks on one device
])
def test_grad_cache_equals_plain_step(mesh_shape, chunk):
    """Five steps with hard negatives, duplicate ids, MRL, spread-out and a learnt temperature:
    losses and all params (model and temperature) equal the plain single-device run."""
    cached = run(mesh_shape, chunk)
    assert_runs_close(cached, run(SINGLE))
    for got, want in zip(cached[0], run(SINGLE)[0]):
        np.testing.assert_allclose(got["grad_norm"], want["grad_norm"], rtol=1e-5)


def test_chunks_take_rows_from_every_device():
    mesh = mesh_of((8, 1, 1))
    rows = jax.device_put(jnp.arange(64), NamedSharding(mesh, P(sharding.BATCH_AXES)))
    chunks = jax.jit(lambda x: to_chunks(x, 16, mesh))(rows)  # 4 chunks of 16 = 2 rows per device
    want = np.arange(64).reshape(8, 4, 2).transpose(1, 0, 2).reshape(4, 16)  # device s holds rows 8s..8s+7
    np.testing.assert_array_equal(chunks, want)
    for shard in chunks.addressable_shards:  # each device holds 2 rows of every chunk: its own rows
        dev = mesh.devices.ravel().tolist().index(shard.device)
        assert shard.data.shape == (4, 2) and set(np.asarray(shard.data).ravel()) <= set(range(8 * dev, 8 * dev + 8))
    np.testing.assert_array_equal(jax.jit(lambda c: from_chunks(c, mesh))(chunks), np.arange(64))


def test_chunking_is_checked():
    mesh = mesh_of((8, 1, 1))
    assert check_chunking(64, 16, mesh) == 4
    for bad in (0, 12, 4, 48):  # 12 and 48 do not divide 64; 4 is not a multiple of 8 shards
        with pytest.raises(ValueError, match="chunk size"):
            check_chunking(64, bad, mesh)


def test_generic_grad_cache_matches_value_and_grad():
    """The function itself on a toy row-wise embedder (no model): loss, param and loss-arg grads."""
    mesh = mesh_of(SINGLE)
    rng = np.random.default_rng(0)
    w = rng.normal(size=(6, 5)).astype(np.float32)
    x = {"a": rng.normal(size=(12, 6)).astype(np.float32), "b": rng.normal(size=(12, 3, 6)).astype(np.float32)}
    embed = lambda w, x: jax.tree.map(lambda v: jnp.tanh(v @ w), x)  # noqa: E731

    def loss(e, t):
        s = e["a"] @ e["a"].T / t + jnp.einsum("id,ikd->ik", e["a"], e["b"]).sum()
        return jnp.mean(jax.nn.logsumexp(s, axis=1)), {"s": s.sum()}

    cached = jax.jit(lambda w, x, t: grad_cached_value_and_grad(embed, loss, w, x, t, chunk_size=3, mesh=mesh))
    (got_l, got_aux), (got_gw, got_gt) = cached(w, x, 0.5)
    (want_l, want_aux), (want_gw, want_gt) = jax.jit(jax.value_and_grad(
        lambda w, t: loss(embed(w, x), t), argnums=(0, 1), has_aux=True))(w, 0.5)
    np.testing.assert_allclose(got_l, want_l, rtol=1e-6)
    np.testing.assert_allclose(got_aux["s"], want_aux["s"], rtol=1e-6)
    np.testing.assert_allclose(got_gw, want_gw, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_gt, want_gt, rtol=1e-5)
