"""Gradient caching (Gao et al. 2021): the full-batch contrastive gradient at one chunk's memory.

1. Embed the global batch chunk by chunk with no gradient tape (`lax.map`, activations dropped).
2. Loss and its gradient w.r.t. the [B, E] embeddings (and the temperature): cheap, global.
3. Re-embed chunk by chunk under `jax.vjp` and pull each chunk's slice of the embedding gradient
   back to the params, summed over chunks (`lax.scan`, the accumulator is the carry).

The sum of the chunks' vector-Jacobian products is the full-batch param gradient exactly (up to
float summation order). The encoder runs twice (forward-only, then forward+backward per chunk).
The two forward passes must see the same function: our models have no dropout or other
randomness, so there is no RNG to replay between them.

How a chunk maps onto devices: the batch dim is sharded in contiguous blocks over the S =
data x fsdp devices. Chunk j takes chunk_size / S rows *from every device's block* (rows
s * B/S + j * chunk/S + r), so every chunk keeps all devices busy and the re-layout
[B] -> [S, n_chunks, chunk/S] -> [n_chunks, S, chunk/S] -> [n_chunks, chunk] moves no data
between devices (the sharded dim only ever stays major). Embeddings are put back in the
original row order before the loss, so the loss sees exactly the plain step's batch.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from gemini_embed.sharding import BATCH_AXES, batch_sharded_activations


def num_batch_shards(mesh: Mesh) -> int:
    return mesh.shape["data"] * mesh.shape["fsdp"]


def check_chunking(global_batch: int, chunk_size: int, mesh: Mesh) -> int:
    """Number of chunks; raises unless chunk_size divides the batch and the batch shards divide it."""
    shards = num_batch_shards(mesh)
    if chunk_size <= 0 or global_batch % chunk_size or chunk_size % shards:
        raise ValueError(f"grad cache chunk size {chunk_size} must divide the global batch {global_batch} "
                         f"and be a multiple of the {shards} batch shards (data x fsdp)")
    return global_batch // chunk_size


def to_chunks(x: jax.Array, chunk_size: int, mesh: Mesh) -> jax.Array:
    """[B, ...] -> [n_chunks, chunk, ...]; chunk j = chunk/S rows from each device's block."""
    shards = num_batch_shards(mesh)
    n = check_chunking(x.shape[0], chunk_size, mesh)
    rest = x.shape[1:]
    x = x.reshape(shards, n, chunk_size // shards, *rest)  # [S, n, c/S, ...]
    x = jnp.swapaxes(x, 0, 1).reshape(n, chunk_size, *rest)  # [n, c, ...]
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, P(None, BATCH_AXES)))


def from_chunks(x: jax.Array, mesh: Mesh) -> jax.Array:
    """Inverse of `to_chunks`: [n_chunks, chunk, ...] -> [B, ...] in the original row order."""
    shards = num_batch_shards(mesh)
    n, c, rest = x.shape[0], x.shape[1], x.shape[2:]
    x = x.reshape(n, shards, c // shards, *rest)  # [n, S, c/S, ...]
    x = jnp.swapaxes(x, 0, 1).reshape(n * c, *rest)  # [B, ...]
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, P(BATCH_AXES)))


def grad_cached_value_and_grad(embed_fn: Callable[[Any, Any], Any], loss_fn: Callable[..., Any], params: Any,
                               inputs: Any, loss_args: Any, *, chunk_size: int, mesh: Mesh,
                               param_shardings: Any = None):
    """Same result as `jax.value_and_grad(lambda p, a: loss_fn(embed_fn(p, inputs), a),
    argnums=(0, 1), has_aux=True)(params, loss_args)`, at one chunk's activation memory.

    embed_fn(params, inputs) -> embeddings: both pytrees whose leaves are [B, ...] per row
    (row-independent: row i of the output depends only on row i of the inputs).
    loss_fn(embeddings, loss_args) -> (loss, aux); loss_args are differentiated too (temperature).
    Returns ((loss, aux), (param_grads, loss_args_grads)).
    """
    chunks = jax.tree.map(lambda x: to_chunks(x, chunk_size, mesh), inputs)  # leaves [n, c, ...]

    # 1. Embeddings without a tape: lax.map keeps no residuals; stop_gradient makes it explicit.
    emb_chunks = jax.lax.map(lambda c: embed_fn(jax.lax.stop_gradient(params), c), chunks)
    embeddings = jax.tree.map(lambda e: from_chunks(e, mesh), emb_chunks)  # leaves [B, ...]

    # 2. The loss over the whole (global) batch, and its gradient w.r.t. embeddings and loss_args.
    (loss, aux), (emb_grads, arg_grads) = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(
        embeddings, loss_args)
    emb_grad_chunks = jax.tree.map(lambda g: to_chunks(g, chunk_size, mesh), emb_grads)

    # 3. Per chunk: recompute the forward under vjp, pull back its slice of the embedding gradient.
    # The accumulator holds one partial sum per 'data' index ([n_data, *param], sharded over
    # 'data'): each data-parallel group sums its own rows' gradients locally, and the all-reduce
    # over 'data' happens once after the loop instead of once per chunk. Within a group the
    # partial sums follow the params' own sharding (fsdp / tensor), as in the plain step.
    n_data = mesh.shape["data"]
    split = lambda x: jax.lax.with_sharding_constraint(  # noqa: E731  [c, ...] -> [n_data, c/n_data, ...]
        x.reshape(n_data, x.shape[0] // n_data, *x.shape[1:]), NamedSharding(mesh, P("data", "fsdp")))
    stacked = None if param_shardings is None else jax.tree.map(
        lambda s: NamedSharding(mesh, P("data", *s.spec)), param_shardings)

    def constrain(tree, shardings):
        return tree if shardings is None else jax.lax.with_sharding_constraint(tree, shardings)

    def chunk_grads(p, chunk, cotangent):
        _, vjp = jax.vjp(lambda q: embed_fn(q, chunk), p)
        return vjp(cotangent)[0]

    def body(acc, xs):
        chunk, cotangent = jax.tree.map(split, xs)
        # Rows within a data group are sharded over 'fsdp' (the vmapped group dim over 'data').
        with batch_sharded_activations(mesh, ("fsdp",)):
            g = jax.vmap(chunk_grads, in_axes=(None, 0, 0), spmd_axis_name="data")(params, chunk, cotangent)
        return constrain(jax.tree.map(jnp.add, acc, g), stacked), None

    zeros = constrain(jax.tree.map(lambda p: jnp.zeros((n_data, *p.shape), p.dtype), params), stacked)
    partial, _ = jax.lax.scan(body, zeros, (chunks, emb_grad_chunks))
    param_grads = constrain(jax.tree.map(lambda g: jnp.sum(g, axis=0), partial), param_shardings)
    return (loss, aux), (param_grads, arg_grads)
