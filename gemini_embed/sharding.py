"""Device mesh, logical-axis rules and data sharding.

Mesh axes: 'data' (pure data parallel), 'fsdp' (data parallel with sharded params),
'tensor' (model parallel). The batch is sharded over ('data', 'fsdp'); params are sharded
through one table mapping the logical names their modules declare to mesh axes.
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Iterator, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

# logical name -> mesh axis (None = replicated). One table for every model family.
LOGICAL_RULES: tuple[tuple[str, Any], ...] = (
    ("layers", None),  # the stacked dim of scanned layers
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("mlp", "tensor"),
    ("proj", "tensor"),
    ("position", None),
    ("norm", None),
    ("head_dim_norm", None),
)


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1, devices: Sequence[Any] | None = None) -> Mesh:
    """A ('data', 'fsdp', 'tensor') mesh; one size may be -1 meaning "the remaining devices"."""
    devices = list(jax.devices() if devices is None else devices)
    sizes = [data, fsdp, tensor]
    if sizes.count(-1) > 1:
        raise ValueError(f"at most one mesh axis may be -1, got data={data} fsdp={fsdp} tensor={tensor}")
    known = int(np.prod([s for s in sizes if s != -1]))
    if -1 in sizes:
        if len(devices) % known:
            raise ValueError(f"{len(devices)} devices cannot be split into data={data} fsdp={fsdp} tensor={tensor}")
        sizes[sizes.index(-1)] = len(devices) // known
    if int(np.prod(sizes)) != len(devices):
        raise ValueError(f"mesh data={sizes[0]} x fsdp={sizes[1]} x tensor={sizes[2]} needs "
                         f"{int(np.prod(sizes))} devices, have {len(devices)}")
    grid = np.asarray(devices, dtype=object).reshape(sizes)
    # Auto axes: the compiler propagates shardings and with_sharding_constraint works.
    return Mesh(grid, MESH_AXES, axis_types=(AxisType.Auto,) * 3)


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
    """Leading (batch) dim over ('data', 'fsdp'), the rest replicated."""
    return NamedSharding(mesh, P(BATCH_AXES, *([None] * (ndim - 1))))


# Set by `batch_sharded_activations` while a train step is traced: (mesh, mesh axes of the batch).
# Why a context and not a module attribute: the same model is traced under different batch axes
# (('data', 'fsdp') in the plain step and the embed function; 'fsdp' alone inside the gradient
# cache's vmap over data groups), and modules are built once from their config, in many places,
# before any mesh exists. Flax's own logical-constraint machinery (`nn.logical_axis_rules`) is a
# context too; this one is a few lines, and outside it the model is plain single-device code.
_ACTIVATIONS: contextvars.ContextVar[tuple[Mesh, tuple[str, ...]] | None] = contextvars.ContextVar(
    "activations", default=None)


@contextlib.contextmanager
def batch_sharded_activations(mesh: Mesh, axes: Sequence[str] = BATCH_AXES) -> Iterator[None]:
    """While tracing inside this context, `constrain_batch` pins activations to batch sharding.

    Without it XLA may shard a matmul like its FSDP-sharded weight (over 'embed') and all-gather
    the *activations* of the whole batch instead of the weight: at 512 tokens per row that moves
    far more bytes, and holds the gathered activations in memory. Outside the context (the
    Embedder, single-device use) `constrain_batch` does nothing."""
    token = _ACTIVATIONS.set((mesh, tuple(axes)))
    try:
        yield
    finally:
        _ACTIVATIONS.reset(token)


def constrain_batch(x: jax.Array) -> jax.Array:
    """x [B, ...] sharded over the batch axes of the enclosing `batch_sharded_activations`."""
    ctx = _ACTIVATIONS.get()
    if ctx is None:
        return x
    mesh, axes = ctx
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, P(axes)))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def _fit(spec: P, shape: tuple[int, ...], mesh: Mesh) -> P:
    """Drop mesh axes that do not divide their dim (e.g. 1 kv head over tensor=2): replicate instead."""
    out = []
    for axis, size in zip(spec, shape):
        names = axis if isinstance(axis, tuple) else (axis,) if axis else ()
        n = int(np.prod([mesh.shape[a] for a in names])) if names else 1
        out.append(axis if size % n == 0 else None)
    return P(*out)


def param_shardings(boxed_abstract_params: Any, mesh: Mesh) -> Any:
    """NamedShardings for a param tree whose leaves carry logical names (the output of
    `jax.eval_shape(model.init, ...)` before unboxing). Returns an unboxed tree of shardings."""
    specs = nn.get_partition_spec(boxed_abstract_params)
    specs = nn.logical_to_mesh(specs, LOGICAL_RULES)
    shapes = nn.meta.unbox(boxed_abstract_params)
    return jax.tree.map(lambda s, x: NamedSharding(mesh, _fit(s, x.shape, mesh)), specs, shapes,
                        is_leaf=lambda s: isinstance(s, P))
