"""The jitted train step: embed the global batch, MRL NCE (+ spread-out) loss, AdamW update.

Batch (a dict of global arrays, leading dim B sharded over ('data', 'fsdp')):
  query_tokens     [B, Lq] int32    query_mask     [B, Lq] bool
  positive_tokens  [B, Lp] int32    positive_mask  [B, Lp] bool
  negative_tokens  [B, K, Ln] int32 negative_mask  [B, K, Ln] bool   (optional: hard negatives)
  negative_present [B, K] bool      (optional; absent negatives drop out of the denominator)
  query_ids        [B] int32        positive_ids   [B] int32   (optional; equal ids = false negatives)
  pair_score       [B] float32      (optional: graded gold similarity; NaN = none)
  teacher_query    [B, Dt] float32  teacher_positive [B, Dt]  teacher_negative [B, K, Dt]
                   (optional: a teacher's embeddings of the same texts, for LossConfig.distill_weight)

A batch whose pair_score is finite in every row (a scored source such as `stsb-scored-train`) is
trained with the MRL CoSENT loss instead of NCE: its low-scored pairs are not positives. The
choice is made inside the step, so scored and unscored sources share one compiled program.

Under jit with that sharding, `q @ p.T` inside the loss scores the *global* batch: XLA inserts
the all-gather. A batch whose loss or gradient norm is NaN/Inf is skipped: params and opt_state
are returned unchanged, `step` does not advance (it stays equal to the optimizer's schedule count),
`skipped` counts it, and metrics["skipped"] is 1.
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from gemini_embed import losses
from gemini_embed.sharding import BATCH_AXES, batch_sharded_activations
from gemini_embed.train.grad_cache import check_chunking, grad_cached_value_and_grad
from gemini_embed.train.state import LossConfig, TrainState, current_learning_rate, frozen_mask

log = logging.getLogger(__name__)

REQUIRED_KEYS = ("query_tokens", "query_mask", "positive_tokens", "positive_mask")
OPTIONAL_KEYS = ("negative_tokens", "negative_mask", "negative_present", "query_ids", "positive_ids",
                 "pair_score", "teacher_query", "teacher_positive", "teacher_negative")


def _check_batch(batch: dict[str, Any]) -> None:
    """Static checks on shapes: a malformed batch should be a message, not a broadcast."""
    missing = [k for k in REQUIRED_KEYS if k not in batch]
    unknown = [k for k in batch if k not in REQUIRED_KEYS + OPTIONAL_KEYS]
    if missing or unknown:
        raise ValueError(f"batch is missing {missing} / has unknown keys {unknown}")
    b = batch["query_tokens"].shape[0]
    want = {"query_mask": batch["query_tokens"].shape, "positive_mask": batch["positive_tokens"].shape,
            "positive_tokens": (b, batch["positive_tokens"].shape[1]), "query_ids": (b,), "positive_ids": (b,),
            "pair_score": (b,)}
    if "negative_tokens" in batch:
        nt = batch["negative_tokens"].shape
        if len(nt) != 3 or nt[0] != b or "negative_mask" not in batch:
            raise ValueError(f"negative_tokens must be [B={b}, K, Ln] with a negative_mask, got {nt}")
        want |= {"negative_mask": nt, "negative_present": nt[:2]}
    elif "negative_mask" in batch or "negative_present" in batch:
        raise ValueError("negative_mask / negative_present given without negative_tokens")
    if "teacher_query" in batch:
        dt = batch["teacher_query"].shape[-1]
        want |= {"teacher_query": (b, dt), "teacher_positive": (b, dt)}
        if "negative_tokens" in batch:
            want["teacher_negative"] = (*batch["negative_tokens"].shape[:2], dt)
        if ("teacher_negative" in batch) != ("negative_tokens" in batch):
            raise ValueError("teacher_negative must come with negative_tokens, and only with them")
    for k, shape in want.items():
        if k in batch and tuple(batch[k].shape) != tuple(shape):
            raise ValueError(f"batch[{k!r}] must have shape {tuple(shape)}, got {tuple(batch[k].shape)}")


def _tower_inputs(batch: dict[str, Any]) -> dict[str, tuple[jax.Array, jax.Array]]:
    """The sequences to embed, per tower, as (tokens, mask) with rows along dim 0."""
    out = {"query": (batch["query_tokens"], batch["query_mask"]),
           "positive": (batch["positive_tokens"], batch["positive_mask"])}
    if "negative_tokens" in batch:
        out["negative"] = (batch["negative_tokens"], batch["negative_mask"])
    return out


def make_tower_embed_fn(model: nn.Module):
    """(model variables, tower inputs) -> {"query": [B, E], "positive": [B, E], "negative": [B, K, E]}.

    Towers of equal sequence length run through the encoder as one batch: one pass, so one FSDP
    all-gather of each weight and one gradient reduction, not one per tower (on a pod this halves
    the collective bytes of a step). They are stacked along a new axis 1, so each device keeps
    its own rows (the sharded batch dim stays major) and rows stay independent: the same
    embeddings as one pass per tower.
    """
    def embed(variables, inputs):
        groups: dict[int, list[str]] = {}
        for name, (tokens, _) in inputs.items():
            groups.setdefault(tokens.shape[-1], []).append(name)
        out = {}
        for length, names in groups.items():
            per_row = [inputs[n][0].shape[1] if inputs[n][0].ndim == 3 else 1 for n in names]
            tokens = jnp.concatenate([inputs[n][0].reshape(-1, k, length) for n, k in zip(names, per_row)], axis=1)
            mask = jnp.concatenate([inputs[n][1].reshape(-1, k, length) for n, k in zip(names, per_row)], axis=1)
            b, rows = tokens.shape[:2]
            e = model.apply(variables, tokens.reshape(b * rows, length), mask.reshape(b * rows, length))
            e = e.reshape(b, rows, -1)
            start = 0
            for n, k in zip(names, per_row):  # [B, K, E] for hard negatives, [B, E] otherwise
                out[n] = e[:, start:start + k] if inputs[n][0].ndim == 3 else e[:, start]
                start += k
        return out

    return embed


def make_loss_fn(model: nn.Module, loss_cfg: LossConfig, batch: dict[str, Any]):
    """(embeddings, log_temperature) -> (loss, metrics) over the global batch."""
    dims = tuple(loss_cfg.mrl_dims) or tuple(model.config.mrl_dims)

    def loss_fn(emb, log_temperature):
        if loss_cfg.learn_temperature:
            temperature = jnp.exp(log_temperature)
        else:  # fixed: the config's value; the state's leaf gets a zero gradient and never moves
            temperature = jnp.float32(loss_cfg.temperature)
        nce, m = losses.mrl_nce_loss_and_metrics(
            emb["query"], emb["positive"], emb.get("negative"), dims=dims, weights=loss_cfg.mrl_weights,
            temperature=temperature, query_ids=batch.get("query_ids"), positive_ids=batch.get("positive_ids"),
            negatives_mask=batch.get("negative_present") if "negative" in emb else None,
            hard_negative_alpha=loss_cfg.hard_negative_alpha)
        full = max(dims)
        metrics = {"nce_loss": nce, "temperature": temperature,
                   **{k.split("@")[0]: v for k, v in m.items() if k.endswith(f"@{full}") and not k.startswith("loss@")},
                   **{k: v for k, v in m.items() if k.startswith("loss@")}}
        loss = nce
        if loss_cfg.spread_out_weight:
            spread = losses.spread_out_loss(emb["query"], emb["positive"])
            metrics["spread_out_loss"] = spread
            loss = loss + loss_cfg.spread_out_weight * spread
        if "pair_score" in batch:
            scores = batch["pair_score"]
            # Finite scores mean a scored batch; NaNs become 0 first, so the unused branch of the
            # select stays finite and its zero cotangent cannot turn into 0 * NaN.
            scored = jnp.all(jnp.isfinite(scores))
            cosent = losses.mrl_cosent_loss(emb["query"], emb["positive"], jnp.where(scored, scores, 0.0),
                                            dims=dims, weights=loss_cfg.mrl_weights,
                                            temperature=loss_cfg.cosent_temperature)
            metrics["cosent_loss"] = cosent
            loss = jnp.where(scored, cosent, loss)
        if loss_cfg.distill_weight:
            if "teacher_query" not in batch:
                raise ValueError("loss.distill_weight > 0 needs the teacher's embeddings in the batch "
                                 "(teacher_query, teacher_positive[, teacher_negative])")
            distill = losses.mrl_distill_loss(
                emb["query"], emb["positive"], emb.get("negative"), batch["teacher_query"], batch["teacher_positive"],
                batch.get("teacher_negative"), dims=dims, weights=loss_cfg.mrl_weights, temperature=temperature,
                teacher_temperature=loss_cfg.distill_temperature,
                negatives_mask=batch.get("negative_present") if "negative" in emb else None)
            metrics["distill_loss"] = distill
            loss = loss + loss_cfg.distill_weight * distill
        return loss, metrics

    return loss_fn


def make_train_step(model: nn.Module, optimizer: optax.GradientTransformation, loss_cfg: LossConfig, mesh: Mesh,
                    state_shardings: TrainState, grad_cache_chunk_size: int = 0, frozen: Sequence[str] = ()):
    """The jitted `(state, batch) -> (state, metrics)`; the state is donated.

    frozen: param-path substrings (`OptimConfig.frozen`, whose optimizer leaves them in place): their
    gradients are replaced by zeros before clipping and the norm, so XLA never computes them.

    grad_cache_chunk_size > 0: gradient caching with that many examples (rows of the global batch)
    per chunk; it must divide the global batch and be a multiple of data x fsdp.
    Metrics (replicated f32 scalars): loss, nce_loss, in_batch_accuracy, positive_similarity,
    negative_similarity, [hard_negative_similarity], loss@<dim>, [spread_out_loss], [cosent_loss],
    [distill_loss], temperature,
    grad_norm, learning_rate (the lr this update used), skipped (1 if the update was skipped), and
    skipped_total (the state's count).
    """
    embed_fn = make_tower_embed_fn(model)
    param_shardings = state_shardings.params["model"]

    def train_step(state: TrainState, batch: dict[str, Any]):
        _check_batch(batch)
        loss_fn = make_loss_fn(model, loss_cfg, batch)
        inputs = _tower_inputs(batch)
        model_params, log_t = state.params["model"], state.params["log_temperature"]
        with batch_sharded_activations(mesh):  # FSDP gathers weights, not the batch's activations
            if grad_cache_chunk_size:
                check_chunking(batch["query_tokens"].shape[0], grad_cache_chunk_size, mesh)
                (loss, metrics), (g_model, g_t) = grad_cached_value_and_grad(
                    embed_fn, loss_fn, model_params, inputs, log_t, chunk_size=grad_cache_chunk_size, mesh=mesh,
                    param_shardings=param_shardings)
            else:
                (loss, metrics), (g_model, g_t) = jax.value_and_grad(
                    lambda p, t: loss_fn(embed_fn(p, inputs), t), argnums=(0, 1), has_aux=True)(model_params, log_t)
        grads = {"model": g_model, "log_temperature": g_t}
        if frozen:  # a static mask over paths: the dropped gradients are dead code for XLA
            grads = jax.tree.map(lambda g, f: jnp.zeros_like(g) if f else g, grads, frozen_mask(grads, frozen))
        grad_norm = optax.tree.norm(grads)
        ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        keep = lambda new, old: jnp.where(ok, new, old)  # noqa: E731  (non-finite: nothing moves)
        new_state = TrainState(step=state.step + ok.astype(jnp.int32),
                               skipped=state.skipped + (~ok).astype(jnp.int32),
                               params=jax.tree.map(keep, params, state.params),
                               opt_state=jax.tree.map(keep, opt_state, state.opt_state))
        metrics = {**metrics, "loss": loss, "grad_norm": grad_norm,
                   "learning_rate": current_learning_rate(opt_state),
                   "skipped": (~ok).astype(jnp.int32), "skipped_total": new_state.skipped}
        return new_state, metrics

    batch_sh = NamedSharding(mesh, P(BATCH_AXES))  # a prefix: every batch leaf's dim 0
    return jax.jit(train_step, in_shardings=(state_shardings, batch_sh),
                   out_shardings=(state_shardings, NamedSharding(mesh, P())), donate_argnums=0)


def batch_spec(mesh: Mesh, global_batch: int, query_len: int, positive_len: int, *, num_negatives: int = 0,
               negative_len: int = 0, ids: bool = True, scores: bool = False,
               teacher_dim: int = 0) -> dict[str, jax.ShapeDtypeStruct]:
    """ShapeDtypeStructs (sharded over ('data', 'fsdp')) of a batch, for ahead-of-time lowering."""
    sh = NamedSharding(mesh, P(BATCH_AXES))
    s = lambda shape, dtype: jax.ShapeDtypeStruct(shape, dtype, sharding=sh)  # noqa: E731
    b = global_batch
    spec = {"query_tokens": s((b, query_len), jnp.int32), "query_mask": s((b, query_len), bool),
            "positive_tokens": s((b, positive_len), jnp.int32), "positive_mask": s((b, positive_len), bool)}
    if num_negatives:
        spec |= {"negative_tokens": s((b, num_negatives, negative_len), jnp.int32),
                 "negative_mask": s((b, num_negatives, negative_len), bool),
                 "negative_present": s((b, num_negatives), bool)}
    if ids:
        spec |= {"query_ids": s((b,), jnp.int32), "positive_ids": s((b,), jnp.int32)}
    if scores:
        spec["pair_score"] = s((b,), jnp.float32)
    if teacher_dim:
        spec |= {name: s((b, teacher_dim), jnp.float32) for name in ("teacher_query", "teacher_positive")}
        if num_negatives:
            spec["teacher_negative"] = s((b, num_negatives, teacher_dim), jnp.float32)
    return spec


def compile_train_step(lowered):
    """Compile a lowered train step (`Run.lower()`, train/setup.py) ahead of time and log the
    compiled memory use. Returns (compiled, memory report dict in bytes)."""
    compiled = lowered.compile()
    report = memory_report(compiled)
    log.info("train step compiled: %s", ", ".join(f"{k}={v / 2**20:.1f} MiB" for k, v in report.items()))
    return compiled, report


def memory_report(compiled) -> dict[str, int]:
    """Bytes per device from `compiled.memory_analysis()` (temp = activations and scratch)."""
    m = compiled.memory_analysis()
    names = ("temp", "argument", "output", "alias", "generated_code")
    return {k: int(getattr(m, f"{k}_size_in_bytes", 0) or 0) for k in names}
