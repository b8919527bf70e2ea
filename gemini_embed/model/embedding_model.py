"""The embedding model: encoder -> masked mean pooling -> dense projection -> L2 normalisation.

Axis legend: B batch, L sequence length, D encoder width, E output (embedding) dim.
"""
from __future__ import annotations

import dataclasses
from typing import Union

import flax.linen as nn
import jax.numpy as jnp

from gemini_embed.model.gemma3 import Gemma3, Gemma3Config
from gemini_embed.normalize import l2_normalize

EncoderConfig = Union[Gemma3Config, "BertConfig"]  # noqa: F821 (BertConfig imported lazily)


@dataclasses.dataclass(frozen=True)
class EmbeddingModelConfig:
    encoder: EncoderConfig
    # Output widths of bias-free dense layers after pooling (randomly initialised). () = no projection.
    projection: tuple[int, ...] = ()
    # Matryoshka prefix dims the model is trained for; the last is the full output dim.
    mrl_dims: tuple[int, ...] = ()

    @property
    def output_dim(self) -> int:
        return self.projection[-1] if self.projection else self.encoder.d_model

    def __post_init__(self):
        if not self.mrl_dims:
            object.__setattr__(self, "mrl_dims", (self.output_dim,))
        if max(self.mrl_dims) != self.output_dim or min(self.mrl_dims) < 1:
            raise ValueError(f"mrl_dims {self.mrl_dims} must lie in [1, {self.output_dim}] and end at the output dim")


def build_encoder(config: EncoderConfig) -> nn.Module:
    if isinstance(config, Gemma3Config):
        return Gemma3(config)
    from gemini_embed.model.bert import BertConfig, BertEncoder

    if isinstance(config, BertConfig):
        return BertEncoder(config)
    raise TypeError(f"unknown encoder config type {type(config).__name__}")


def mean_pool(hidden, mask):
    """Mean of hidden [B, L, D] over positions where mask [B, L] is True, in float32. -> [B, D]."""
    f = jnp.promote_types(hidden.dtype, jnp.float32)  # float32, or float64 under x64 tests
    m = mask.astype(f)[..., None]
    total = jnp.sum(hidden.astype(f) * m, axis=1)
    return total / jnp.maximum(jnp.sum(m, axis=1), 1.0)  # all-padding rows (batch filler) give 0, not NaN


class Projection(nn.Module):
    """A stack of bias-free dense layers (EmbeddingGemma: D -> 3072 -> 768; Gemini: D -> 3072)."""
    features: tuple[int, ...]

    @nn.compact
    def __call__(self, x):  # [B, D] -> [B, E]
        for i, f in enumerate(self.features):
            x = nn.Dense(f, use_bias=False, name=f"dense_{i}", kernel_init=nn.with_logical_partitioning(
                nn.initializers.lecun_normal(), ("embed" if i == 0 else "proj", "proj")))(x)
        return x


class EmbeddingModel(nn.Module):
    """tokens [B, L] int32, mask [B, L] bool -> L2-normalised embeddings [B, E] float32."""
    config: EmbeddingModelConfig

    def setup(self):
        self.encoder = build_encoder(self.config.encoder)
        self.projection = Projection(self.config.projection)

    def __call__(self, tokens, mask):
        pooled = mean_pool(self.encoder(tokens, mask), mask)  # [B, D]
        return l2_normalize(self.projection(pooled))  # [B, E]
