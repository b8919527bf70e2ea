"""BERT encoder (post-LayerNorm, absolute positions), as in all-MiniLM-L6-v2.

A pure-functional Flax Linen module: params are plain pytrees passed to `apply`, every one
annotated with logical axis names (see `LOGICAL_AXES`) that `sharding.py` maps to mesh axes.

Axis legend:
  B: batch            L: sequence length (queries)   M: sequence length (keys, = L)
  D: d_model          H: attention heads             K: head_dim (D = H * K)
  F: mlp (intermediate) width                        V: vocabulary    P: max positions

Param tree (`{"params": ...}` after `nn.meta.unbox`):
  embed/{word [V,D], position [P,D], token_type [T,D], norm/{scale, bias} [D]}
  layer_{i}/attn/{query, key, value}/{kernel [D,H,K], bias [H,K]}
  layer_{i}/attn/out/{kernel [H,K,D], bias [D]}
  layer_{i}/attn_norm/{scale, bias} [D]
  layer_{i}/mlp/{wi/{kernel [D,F], bias [F]}, wo/{kernel [F,D], bias [D]}}
  layer_{i}/mlp_norm/{scale, bias} [D]
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

# Every logical axis name this module uses; dims not listed are unsharded (None).
LOGICAL_AXES = ("vocab", "embed", "heads", "head_dim", "mlp", "position")

_init = nn.initializers.normal(stddev=0.02)  # BERT's initializer_range
_zeros = nn.initializers.zeros_init()
_ones = nn.initializers.ones_init()


@dataclasses.dataclass(frozen=True)
class BertConfig:
    vocab_size: int
    d_model: int
    num_layers: int
    num_heads: int
    mlp_dim: int
    max_position: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    dtype: Any = jnp.float32  # compute dtype; params and the returned hidden states are float32

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    def __post_init__(self):
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by num_heads={self.num_heads}")

    @classmethod
    def from_hf_config(cls, hf: Mapping[str, Any], dtype: Any = jnp.float32) -> "BertConfig":
        """Build from a HF `config.json` dict; raises ValueError for BERT variants not implemented."""
        if hf.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"hidden_act={hf['hidden_act']!r} is not supported (only exact 'gelu')")
        if hf.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"position_embedding_type={hf['position_embedding_type']!r} is not supported")
        return cls(
            vocab_size=hf["vocab_size"],
            d_model=hf["hidden_size"],
            num_layers=hf["num_hidden_layers"],
            num_heads=hf["num_attention_heads"],
            mlp_dim=hf["intermediate_size"],
            max_position=hf.get("max_position_embeddings", 512),
            type_vocab_size=hf.get("type_vocab_size", 2),
            layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
            dtype=dtype,
        )

    @classmethod
    def minilm_l6(cls) -> "BertConfig":
        """sentence-transformers/all-MiniLM-L6-v2 (22.7M params)."""
        return cls(vocab_size=30522, d_model=384, num_layers=6, num_heads=12, mlp_dim=1536)


def _layer_norm(cfg: BertConfig, name: str) -> nn.LayerNorm:
    # Two-pass variance (E[(x - mean)^2]) as torch.nn.LayerNorm, not E[x^2] - mean^2.
    return nn.LayerNorm(
        epsilon=cfg.layer_norm_eps, dtype=cfg.dtype, use_fast_variance=False, name=name,
        scale_init=nn.with_logical_partitioning(_ones, ("embed",)),
        bias_init=nn.with_logical_partitioning(_zeros, ("embed",)))


class Embeddings(nn.Module):
    config: BertConfig

    @nn.compact
    def __call__(self, tokens: jax.Array) -> jax.Array:  # [B, L] int32 -> [B, L, D]
        cfg = self.config
        length = tokens.shape[1]
        if length > cfg.max_position:
            raise ValueError(f"sequence length {length} exceeds max_position={cfg.max_position}")
        param = lambda name, shape, axes: self.param(  # noqa: E731
            name, nn.with_logical_partitioning(_init, axes), shape, jnp.float32)
        word = param("word", (cfg.vocab_size, cfg.d_model), ("vocab", "embed"))
        position = param("position", (cfg.max_position, cfg.d_model), ("position", "embed"))
        token_type = param("token_type", (cfg.type_vocab_size, cfg.d_model), (None, "embed"))
        # token_type ids are all 0 (single-segment inputs).
        x = jnp.take(word, tokens, axis=0) + position[None, :length] + token_type[0]  # [B, L, D]
        return _layer_norm(cfg, "norm")(x.astype(cfg.dtype))


class SelfAttention(nn.Module):
    config: BertConfig

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:  # [B, L, D], [B, L] -> [B, L, D]
        cfg = self.config
        hk = (cfg.num_heads, cfg.head_dim)
        proj = lambda name: nn.DenseGeneral(  # noqa: E731
            hk, dtype=cfg.dtype, name=name,
            kernel_init=nn.with_logical_partitioning(_init, ("embed", "heads", "head_dim")),
            bias_init=nn.with_logical_partitioning(_zeros, ("heads", "head_dim")))
        # Heads-major [B, H, L, K] for both attention matmuls: XLA's CPU dot runs the batch dims
        # leading; with H between L and K it spent 3x longer (MiniLM on 64 x 256 tokens).
        q, k, v = (proj(n)(x).transpose(0, 2, 1, 3) for n in ("query", "key", "value"))
        logits = jnp.einsum("BHLK,BHMK->BHLM", q, k) * cfg.head_dim ** -0.5
        logits = logits.astype(jnp.float32)
        # Padded keys get the most negative float: exp() underflows to exactly 0.
        logits = jnp.where(mask[:, None, None, :], logits, jnp.finfo(jnp.float32).min)  # [B, H, L, M]
        probs = jax.nn.softmax(logits, axis=-1).astype(cfg.dtype)
        out = jnp.einsum("BHLM,BHMK->BHLK", probs, v).transpose(0, 2, 1, 3)  # [B, L, H, K]
        return nn.DenseGeneral(
            cfg.d_model, axis=(-2, -1), dtype=cfg.dtype, name="out",
            kernel_init=nn.with_logical_partitioning(_init, ("heads", "head_dim", "embed")),
            bias_init=nn.with_logical_partitioning(_zeros, ("embed",)))(out)  # [B, L, D]


class Mlp(nn.Module):
    config: BertConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:  # [B, L, D] -> [B, L, D]
        cfg = self.config
        dense = lambda features, axes, name: nn.Dense(  # noqa: E731
            features, dtype=cfg.dtype, name=name,
            kernel_init=nn.with_logical_partitioning(_init, axes),
            bias_init=nn.with_logical_partitioning(_zeros, axes[1:]))
        h = dense(cfg.mlp_dim, ("embed", "mlp"), "wi")(x)  # [B, L, F]
        h = jax.nn.gelu(h, approximate=False)  # exact erf GELU, as HF "gelu"
        return dense(cfg.d_model, ("mlp", "embed"), "wo")(h)  # [B, L, D]


class Layer(nn.Module):
    """Post-LN block: x = LN(x + attn(x)); x = LN(x + mlp(x))."""
    config: BertConfig

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:  # [B, L, D] -> [B, L, D]
        cfg = self.config
        x = _layer_norm(cfg, "attn_norm")(x + SelfAttention(cfg, name="attn")(x, mask))
        return _layer_norm(cfg, "mlp_norm")(x + Mlp(cfg, name="mlp")(x))


class BertEncoder(nn.Module):
    """tokens [B, L] int32 and mask [B, L] bool (True = real token) -> last hidden states [B, L, D] f32.

    No pooler and no dropout: this is the encoder that sentence-transformers mean-pools.
    Hidden states at padded positions are computed but meaningless; pool with `mask`.
    """
    config: BertConfig

    @nn.compact
    def __call__(self, tokens: jax.Array, mask: jax.Array) -> jax.Array:
        cfg = self.config
        mask = mask.astype(bool)
        x = Embeddings(cfg, name="embed")(tokens)  # [B, L, D]
        for i in range(cfg.num_layers):
            x = Layer(cfg, name=f"layer_{i}")(x, mask)
        return x.astype(jnp.float32)


def abstract_params(config: BertConfig) -> Any:
    """Unboxed `{"params": ...}` tree of ShapeDtypeStructs, without allocating anything."""
    tokens = jax.ShapeDtypeStruct((1, 1), jnp.int32)
    boxed = jax.eval_shape(BertEncoder(config).init, jax.random.key(0), tokens, tokens.update(dtype=bool))
    return nn.meta.unbox(boxed)
