"""One way to build a training run from a config: used by the train loop and by compile-only.

`build(config, model_config, mesh)` gives the typed configs, the train-state shardings and
abstract state, the jitted step and the abstract batch it is compiled for. The loop then fills
the state with real params and feeds real batches; compile-only lowers the same program for a
TPU topology. Both call this, so compile-only proves the step that trains
(`tests/train/test_compile_only.py` compares the two programs).
"""
from __future__ import annotations

import dataclasses
import hashlib
import pathlib
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from gemini_embed.data import builders, pipeline
from gemini_embed.model.embedding_model import EmbeddingModel, EmbeddingModelConfig
from gemini_embed.pretrained import architecture, resolve
from gemini_embed.train import state as state_lib
from gemini_embed.train.step import batch_spec, make_train_step


@dataclasses.dataclass(frozen=True)
class Run:
    model: EmbeddingModel
    optim: state_lib.OptimConfig
    loss: state_lib.LossConfig
    mesh: Mesh
    shardings: state_lib.TrainState  # of the train state, leaf by leaf
    abstract_state: state_lib.TrainState  # ShapeDtypeStructs with those shardings: nothing allocated
    step_fn: Any  # jitted (state, batch) -> (state, metrics)
    batch: dict  # the global batch's ShapeDtypeStructs, sharded over the batch axes
    num_negatives: int
    scored: bool  # the batch has a pair_score column (a graded source is in the mixture)
    teacher_dim: int = 0  # the batch has the distillation teacher's embeddings (loss.distill_weight > 0)

    def lower(self):
        """The train step lowered for the abstract state and batch (nothing allocated)."""
        return self.step_fn.lower(self.abstract_state, self.batch)


def fingerprint(lowered) -> str:
    """Hash of a lowered program's StableHLO: equal hashes, the same program."""
    return hashlib.sha256(lowered.as_text().encode()).hexdigest()[:16]


def typed_configs(c) -> tuple[state_lib.OptimConfig, state_lib.LossConfig]:
    """The config's optim and loss blocks as dataclasses. Warmup is capped below the step count,
    so a short run still decays."""
    warmup = min(c.optim.warmup_steps, max(c.train.steps - 1, 0))
    frozen = c.optim.get("frozen", ())  # the command line gives ('a,b',) for --config.optim.frozen=a,b
    frozen = tuple(p for s in frozen for p in s.split(",") if p)
    optim = state_lib.OptimConfig(**{**c.optim.to_dict(), "warmup_steps": warmup, "total_steps": c.train.steps,
                                     "frozen": frozen})
    loss = state_lib.LossConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in c.loss.to_dict().items()})
    return optim, loss


def build(c, model_config: EmbeddingModelConfig, mesh: Mesh) -> Run:
    """Everything the train step needs, built from config `c` for `model_config` on `mesh`."""
    rows = mesh.shape["data"] * mesh.shape["fsdp"]
    if c.train.global_batch_size % rows:
        raise ValueError(f"train.global_batch_size must be divisible by the {rows} data-parallel devices "
                         f"(mesh.data x mesh.fsdp), got {c.train.global_batch_size}")
    model = EmbeddingModel(model_config)
    optim, loss = typed_configs(c)
    shardings = state_lib.train_state_shardings(model, optim, loss, mesh)
    abstract = state_lib.with_shardings(state_lib.abstract_train_state(model, optim, loss), shardings)
    step_fn = make_train_step(model, state_lib.make_optimizer(optim), loss, mesh, shardings,
                              c.train.grad_cache_chunk_size, frozen=optim.frozen)
    k = int(c.data.get("num_negatives") or 0)
    scored = any(builders.is_graded(n, c.data.get("root") or None) for n in pipeline.source_names(c.data))
    dt = teacher_dim(loss.distill_teacher) if loss.distill_weight else 0
    spec = batch_spec(mesh, c.train.global_batch_size, c.data.query_len, c.data.positive_len,
                      num_negatives=k, negative_len=c.data.positive_len, scores=scored, teacher_dim=dt)
    return Run(model, optim, loss, mesh, shardings, abstract, step_fn, spec, k, scored, dt)


def teacher_dim(name: str) -> int:
    """The output dim of a distillation teacher: a registered name (no weights read) or a model dir."""
    if pathlib.Path(name).is_dir():
        return resolve(name).config.output_dim
    return architecture(name).output_dim


def model_flops_per_step(model_cfg, sequences: int, seq_len: int) -> float:
    """Useful FLOPs of one step (the MFU numerator): 6 x matmul params x tokens (forward and
    backward; the projection once per sequence) plus attention scores and mixing, 12 x layers x L
    x heads x head_dim per token. Remat and the gradient cache's first pass are not counted."""
    enc = model_cfg.encoder
    abstract = nn.meta.unbox(jax.eval_shape(EmbeddingModel(model_cfg).init, jax.random.key(0),
                                            jnp.zeros((1, 8), jnp.int32), jnp.ones((1, 8), bool)))
    per_token = per_sequence = 0
    for path, x in jax.tree_util.tree_leaves_with_path(abstract):
        name = jax.tree_util.keystr(path)
        if "kernel" in name:  # dense weights (stacked ones too); embeddings are a lookup, norms no matmul
            n = int(np.prod(x.shape))
            per_sequence, per_token = (per_sequence + n, per_token) if "projection" in name else (per_sequence,
                                                                                                    per_token + n)
    attn = 12 * getattr(enc, "num_layers", 0) * seq_len * getattr(enc, "num_heads", 0) * getattr(enc, "head_dim", 0)
    tokens = sequences * seq_len
    return float(6 * per_token * tokens + attn * tokens + 6 * per_sequence * sequences)
