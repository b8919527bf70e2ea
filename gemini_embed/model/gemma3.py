"""Gemma 3 transformer (Flax Linen), causal as the pretrained LLM or bidirectional as an encoder.

Axis legend:
  B batch, L sequence length, D d_model, N query heads, G kv heads (GQA),
  K head dim, F MLP hidden dim, V vocabulary.

Gemma 3 details that matter for loading real weights: RMSNorm applied as `1 + w`,
embeddings scaled by sqrt(D), GQA, q/k RMSNorm, GeGLU (tanh GELU), RoPE with base
1e6 on global layers and 1e4 on local sliding-window layers, one global layer every
`global_every` layers, tied input/output embedding.
"""
from __future__ import annotations

import dataclasses
from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gemini_embed.sharding import constrain_batch

Attention = Literal["causal", "bidirectional"]


@dataclasses.dataclass(frozen=True)
class Gemma3Config:
    vocab_size: int
    d_model: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    mlp_dim: int
    sliding_window: int = 512
    global_every: int = 6  # layers 5, 11, 17, ... use full attention
    query_pre_attn_scalar: float = 256.0
    rope_global_base: float = 1_000_000.0
    rope_local_base: float = 10_000.0
    rope_global_scale: float = 1.0  # linear RoPE scaling of global layers (4B and up: 8)
    norm_eps: float = 1e-6
    attention: Attention = "bidirectional"
    dtype: str = "float32"  # compute dtype; params stay float32
    remat: bool = False  # recompute each layer's activations in the backward pass
    # Run the layers as one lax.scan with params stacked under "layers" (leading dim = layer)
    # instead of num_layers unrolled "layer_<i>" blocks. Pod-scale configs use it: one compiled
    # layer instead of num_layers copies, and each layer's FSDP all-gathers and gradient
    # all-reduces stay inside the loop body, so one layer's full-size weights and weight
    # gradients are live per chip at a time, not the whole model's (docs/scaling.md).
    scan_layers: bool = False

    def __post_init__(self):
        if self.attention not in ("bidirectional", "causal"):
            raise ValueError(f"attention must be 'bidirectional' (the encoder) or 'causal' (the LLM), "
                             f"got {self.attention!r}")
        try:
            jnp.dtype(self.dtype)
        except TypeError:
            raise ValueError(f"dtype must be a JAX dtype name such as 'float32' or 'bfloat16', "
                             f"got {self.dtype!r}") from None

    def is_global(self, layer: int) -> bool:
        return (layer + 1) % self.global_every == 0

    @property
    def compute_dtype(self):
        return jnp.dtype(self.dtype)


# Published Gemma 3 text-model architectures. Checked by shape only (jax.eval_shape).
GEMMA3_PRESETS: dict[str, Gemma3Config] = {
    "gemma3-270m": Gemma3Config(vocab_size=262_144, d_model=640, num_layers=18, num_heads=4, num_kv_heads=1,
                                head_dim=256, mlp_dim=2048, sliding_window=512),
    "gemma3-1b": Gemma3Config(vocab_size=262_144, d_model=1152, num_layers=26, num_heads=4, num_kv_heads=1,
                              head_dim=256, mlp_dim=6912, sliding_window=512),
    "gemma3-4b": Gemma3Config(vocab_size=262_208, d_model=2560, num_layers=34, num_heads=8, num_kv_heads=4,
                              head_dim=256, mlp_dim=10_240, sliding_window=1024, rope_global_scale=8.0),
    "gemma3-12b": Gemma3Config(vocab_size=262_208, d_model=3840, num_layers=48, num_heads=16, num_kv_heads=8,
                               head_dim=256, mlp_dim=15_360, sliding_window=1024, rope_global_scale=8.0),
    "gemma3-27b": Gemma3Config(vocab_size=262_208, d_model=5376, num_layers=62, num_heads=32, num_kv_heads=16,
                               head_dim=128, mlp_dim=21_504, sliding_window=1024, rope_global_scale=8.0,
                               query_pre_attn_scalar=168.0),
    # Tiny random model with the real vocabulary, for tests and the tiny training config.
    "gemma3-tiny": Gemma3Config(vocab_size=262_144, d_model=64, num_layers=3, num_heads=2, num_kv_heads=1,
                                head_dim=32, mlp_dim=128, sliding_window=8, global_every=3,
                                query_pre_attn_scalar=32.0),
}


class RMSNorm(nn.Module):
    """Gemma RMSNorm: computed in float32, scaled by (1 + w) with w initialised to zero."""
    eps: float = 1e-6
    axis_name: str = "norm"

    @nn.compact
    def __call__(self, x):
        w = self.param("scale", nn.with_logical_partitioning(nn.initializers.zeros_init(), (self.axis_name,)),
                       (x.shape[-1],), jnp.float32)
        x32 = x.astype(_at_least_f32(x.dtype))
        y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return (y * (1.0 + w)).astype(x.dtype)


def _at_least_f32(dtype):
    """Norms, RoPE and softmax run in float32 even under bf16 compute (float64 stays float64)."""
    return jnp.promote_types(dtype, jnp.float32)


def rope(x, positions, base, scale):
    """Rotary embedding, half-split layout (as the released checkpoints). x: [B, L, H, K].
    base and scale may be traced scalars (scanned layers pick them per layer)."""
    half = x.shape[-1] // 2
    f = _at_least_f32(x.dtype)
    inv_freq = 1.0 / (base ** (jnp.arange(half, dtype=f) * 2.0 / x.shape[-1])) / scale  # [K/2]
    angles = positions[:, :, None].astype(f) * inv_freq  # [B, L, K/2]
    sin, cos = jnp.sin(angles)[:, :, None, :], jnp.cos(angles)[:, :, None, :]
    x1, x2 = x[..., :half].astype(f), x[..., half:].astype(f)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


def attention_mask(mask, config: Gemma3Config, is_global, query_slots=None):
    """Boolean [B, 1, Lq, S] mask of the keys each query may see; mask [B, S] marks the real keys.

    Bidirectional local layers see |i - j| <= window // 2 (as EmbeddingGemma); causal local
    layers see the previous `window` positions including their own. is_global: a bool, or a
    traced bool scalar under the layer scan. query_slots [Lq]: the key slots the queries sit at
    (decoding with a KV cache); default every slot, the plain forward.
    """
    length = mask.shape[1]
    i = (jnp.arange(length) if query_slots is None else query_slots)[:, None]
    j = jnp.arange(length)[None, :]
    allowed = jnp.ones((i.shape[0], length), bool) if config.attention == "bidirectional" else j <= i
    if config.attention == "bidirectional":
        local = jnp.abs(i - j) <= config.sliding_window // 2
    else:
        local = i - j < config.sliding_window
    allowed &= local | is_global
    return allowed[None, None] & mask[:, None, None, :]


class Attention(nn.Module):
    config: Gemma3Config

    @nn.compact
    def __call__(self, x, mask, positions, is_global, cache=None):
        """cache: None, or (k, v, slot) for causal decoding: this layer's keys [B, G, K, S] and values
        [B, G, S, K] and the slot where x's first token goes; mask is then [B, S] over the cache's slots.
        Returns (output, the updated (k, v) or None)."""
        c = self.config
        dt = c.compute_dtype
        init = nn.initializers.normal(stddev=c.d_model ** -0.5)

        def proj(name, heads, axes):
            return nn.DenseGeneral((heads, c.head_dim), use_bias=False, dtype=dt, name=name,
                                   kernel_init=nn.with_logical_partitioning(init, axes))(x)

        q = proj("q", c.num_heads, ("embed", "heads", "head_dim"))  # [B, L, N, K]
        k = proj("k", c.num_kv_heads, ("embed", "kv_heads", "head_dim"))  # [B, L, G, K]
        v = proj("v", c.num_kv_heads, ("embed", "kv_heads", "head_dim"))  # [B, L, G, K]
        q = RMSNorm(c.norm_eps, "head_dim_norm", name="q_norm")(q)
        k = RMSNorm(c.norm_eps, "head_dim_norm", name="k_norm")(k)
        base = jnp.where(is_global, c.rope_global_base, c.rope_local_base)
        scale = jnp.where(is_global, c.rope_global_scale, 1.0)
        q, k = rope(q, positions, base, scale), rope(k, positions, base, scale)
        query_slots, new_cache, k_axes, v_axes = None, None, "bsgk", "bsgk"
        if cache is not None:
            # Keys [B, G, K, S] and values [B, G, S, K]: the layouts XLA's dots read in place (any
            # other makes it copy the whole cache of every layer at every step)
            k_cache, v_cache, slot = cache
            k = jax.lax.dynamic_update_slice(k_cache, k.transpose(0, 2, 3, 1).astype(k_cache.dtype), (0, 0, 0, slot))
            v = jax.lax.dynamic_update_slice(v_cache, v.transpose(0, 2, 1, 3).astype(v_cache.dtype), (0, 0, slot, 0))
            query_slots, new_cache, k_axes, v_axes = slot + jnp.arange(x.shape[1]), (k, v), "bgks", "bgsk"

        groups = c.num_heads // c.num_kv_heads
        q = q.reshape(*q.shape[:2], c.num_kv_heads, groups, c.head_dim)  # [B, L, G, N/G, K]
        f = _at_least_f32(dt)
        logits = jnp.einsum(f"bqgnk,{k_axes}->bgnqs", q, k, preferred_element_type=f)
        logits = logits * c.query_pre_attn_scalar ** -0.5
        allowed = attention_mask(mask, c, is_global, query_slots)[:, :, None]  # [B, 1, 1, L, S]
        logits = jnp.where(allowed, logits, jnp.finfo(f).min)
        probs = jax.nn.softmax(logits, axis=-1).astype(dt)
        out = jnp.einsum(f"bgnqs,{v_axes}->bqgnk", probs, v).reshape(*x.shape[:2], c.num_heads, c.head_dim)
        out = nn.DenseGeneral(c.d_model, axis=(-2, -1), use_bias=False, dtype=dt, name="o",
                              kernel_init=nn.with_logical_partitioning(init, ("heads", "head_dim", "embed")))(out)
        return out, new_cache


class MLP(nn.Module):
    config: Gemma3Config

    @nn.compact
    def __call__(self, x):
        c = self.config
        init = nn.initializers.normal(stddev=c.d_model ** -0.5)

        def dense(name, features, axes, h):
            return nn.Dense(features, use_bias=False, dtype=c.compute_dtype, name=name,
                            kernel_init=nn.with_logical_partitioning(init, axes))(h)

        gate = dense("gate", c.mlp_dim, ("embed", "mlp"), x)  # [B, L, F]
        up = dense("up", c.mlp_dim, ("embed", "mlp"), x)
        return dense("down", c.d_model, ("mlp", "embed"), jax.nn.gelu(gate, approximate=True) * up)


class Block(nn.Module):
    """One transformer layer: (x, mask, positions, is_global) -> (x, None), the signature of a scan
    body; with a KV cache (Attention's) -> (x, the layer's updated (k, v))."""
    config: Gemma3Config

    @nn.compact
    def __call__(self, x, mask, positions, is_global, cache=None):
        c = self.config
        h, cache = Attention(c, name="attn")(RMSNorm(c.norm_eps, name="pre_attn_norm")(x), mask, positions,
                                             is_global, cache)
        x = x + RMSNorm(c.norm_eps, name="post_attn_norm")(h)
        h = MLP(c, name="mlp")(RMSNorm(c.norm_eps, name="pre_mlp_norm")(x))
        return constrain_batch(x + RMSNorm(c.norm_eps, name="post_mlp_norm")(h)), cache  # no-op outside a train step


def stack_layers(params: dict, num_layers: int) -> dict:
    """A Gemma3 param dict with unrolled "layer_<i>" entries -> the layer scan's layout: the same
    dict with one "layers" entry whose leaves are stacked along a new leading (layer) dim. On the
    host (numpy): the importer builds full-size checkpoints this way before anything is sharded."""
    params = dict(params)
    layers = [params.pop(f"layer_{i}") for i in range(num_layers)]
    return {**params, "layers": jax.tree.map(lambda *xs: np.stack(xs), *layers)}


class Gemma3(nn.Module):
    """tokens [B, L] int32, mask [B, L] bool (True = real token) -> hidden states [B, L, D] after the final norm."""
    config: Gemma3Config

    def setup(self):
        c = self.config
        self.embedder = nn.Embed(
            c.vocab_size, c.d_model, dtype=c.compute_dtype, name="embedder",
            embedding_init=nn.with_logical_partitioning(nn.initializers.normal(stddev=1.0), ("vocab", "embed")))
        block = nn.remat(Block, prevent_cse=not c.scan_layers) if c.remat else Block
        if c.scan_layers:
            self.layers = nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True},
                                  in_axes=(nn.broadcast, nn.broadcast, 0), length=c.num_layers,
                                  metadata_params={nn.PARTITION_NAME: "layers"})(c, name="layers")
        else:
            self.blocks = [block(c, name=f"layer_{i}") for i in range(c.num_layers)]
        self.final_norm = RMSNorm(c.norm_eps)

    def __call__(self, tokens, mask, positions=None, cache=None, slot=0):
        """Plain forward: mask [B, L]; right padding, so positions default to 0..L-1 in every row.

        Causal decoding with a KV cache (llm/decoding.py): cache holds each layer's keys
        [B, G, K, S] and values [B, G, S, K]; tokens [B, L] go into slots slot..slot+L-1 at their
        `positions` [B, L]; mask [B, S] marks the filled slots. Returns (hidden states, the updated cache) then.
        """
        c = self.config
        x = constrain_batch(self.embedder(tokens) * jnp.asarray(c.d_model ** 0.5, c.compute_dtype))  # [B, L, D]
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
        is_global = [c.is_global(i) for i in range(c.num_layers)]
        if cache is not None:
            if c.scan_layers or c.attention != "causal":
                raise ValueError("a KV cache needs the causal model with unrolled layers (scan_layers=False)")
            new_cache = []
            for block, g, (k, v) in zip(self.blocks, is_global, cache):
                x, kv = block(x, mask, positions, g, (k, v, slot))
                new_cache.append(kv)
            return self.final_norm(x), tuple(new_cache)
        if c.scan_layers:
            x, _ = self.layers(x, mask, positions, jnp.asarray(is_global))
        else:
            for block, g in zip(self.blocks, is_global):
                x, _ = block(x, mask, positions, g)
        return self.final_norm(x)

    def logits(self, hidden):
        """Next-token logits [B, L, V] from hidden states, through the tied embedding (causal LM use)."""
        return self.embedder.attend(hidden.astype(jnp.float32))
