"""Train state, optimizer and their shardings.

TrainState (a pytree):
  step      int32 []   updates applied so far (= the optimizer's schedule count; a skipped
                       non-finite batch does not advance it)
  skipped   int32 []   batches skipped because their loss or gradient was NaN/Inf
  params    {"model": <variables for model.apply, i.e. {"params": ...}>,
             "log_temperature": float32 []}   everything the optimizer updates
  opt_state the optax state of `make_optimizer` over `params`

`log_temperature` is always in the tree (fixed structure for checkpoints and shardings). With
`LossConfig.learn_temperature` it is trained; otherwise the step uses `LossConfig.temperature`
and the leaf gets a zero gradient, so Adam leaves it exactly where it was initialised.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Literal, Sequence

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from gemini_embed import sharding

# Param-path substrings (any path key, case-insensitive) whose leaves get no weight decay:
# RMSNorm/LayerNorm scales and biases, every bias, token/position embeddings, the temperature.
NO_DECAY = ("norm", "bias", "embed", "temperature")


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    lr: float = 1e-4
    warmup_steps: int = 1000
    total_steps: int = 100_000
    decay: Literal["cosine", "linear"] = "cosine"
    end_lr_ratio: float = 0.0  # final lr = lr * end_lr_ratio
    weight_decay: float = 0.01
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    clip_norm: float = 1.0  # global-norm gradient clipping; 0 = off
    no_decay: tuple[str, ...] = NO_DECAY
    # Param-path substrings whose leaves are not trained: no gradient, no update, no Adam moments
    # (e.g. ("embedder",) freezes Gemma's 262k x 640 token table, 63% of the 270M model).
    frozen: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class LossConfig:
    temperature: float = 0.05  # initial value when learnt
    learn_temperature: bool = False
    mrl_dims: tuple[int, ...] = ()  # () = the model config's mrl_dims
    mrl_weights: tuple[float, ...] | None = None  # None = 1 per dim
    hard_negative_alpha: float | None = None  # EmbeddingGemma: 5.0
    spread_out_weight: float = 0.0
    cosent_temperature: float = 0.05  # CoSENT's tau on scored batches (its usual scale 20 = 1 / 0.05)
    # Embedding distillation (losses.distill_loss): weight > 0 adds it to every batch; the teacher
    # is a registered model or a model directory, embedding each batch's raw texts on the host.
    distill_weight: float = 0.0
    distill_teacher: str = "all-minilm-l6-v2"
    distill_temperature: float = 0.05  # the teacher's tau (the student's is `temperature`)


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 []
    skipped: jax.Array  # int32 []
    params: Any  # {"model": {"params": ...}, "log_temperature": f32 []}
    opt_state: Any

    @property
    def model_params(self) -> Any:
        """The variables `EmbeddingModel.apply` takes."""
        return self.params["model"]


def make_schedule(cfg: OptimConfig) -> optax.Schedule:
    """Linear warmup 0 -> lr over warmup_steps, then cosine or linear decay to lr * end_lr_ratio
    at total_steps."""
    end = cfg.lr * cfg.end_lr_ratio
    if cfg.decay == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, cfg.lr, cfg.warmup_steps, cfg.total_steps, end)
    if cfg.decay == "linear":
        return optax.join_schedules(
            [optax.linear_schedule(0.0, cfg.lr, cfg.warmup_steps),
             optax.linear_schedule(cfg.lr, end, max(cfg.total_steps - cfg.warmup_steps, 1))],
            [cfg.warmup_steps])
    raise ValueError(f"decay must be 'cosine' or 'linear', got {cfg.decay!r}")


def _path_has(path, substrings: Sequence[str]) -> bool:
    keys = [str(getattr(k, "key", getattr(k, "name", k))).lower() for k in path]
    return any(s.lower() in k for s in substrings for k in keys)


def weight_decay_mask(params: Any, no_decay: Sequence[str] = NO_DECAY) -> Any:
    """Bool tree: True where weight decay applies (no path key contains a `no_decay` substring)."""
    return jax.tree_util.tree_map_with_path(lambda path, _: not _path_has(path, no_decay), params)


def frozen_mask(params: Any, frozen: Sequence[str]) -> Any:
    """Bool tree: True where a leaf is frozen (a path key contains a `frozen` substring). A substring
    that matches no leaf, or freezing every leaf, is a ValueError (a typo would train everything)."""
    mask = jax.tree_util.tree_map_with_path(lambda path, _: _path_has(path, frozen), params)
    paths = [path for path, _ in jax.tree_util.tree_leaves_with_path(params)]
    for s in frozen:
        if not any(_path_has(path, (s,)) for path in paths):
            raise ValueError(f"optim.frozen: {s!r} matches no parameter path")
    if frozen and all(jax.tree.leaves(mask)):
        raise ValueError(f"optim.frozen: {', '.join(frozen)} freezes every parameter")
    return mask


def make_optimizer(cfg: OptimConfig, params: Any = None) -> optax.GradientTransformation:
    """AdamW (decoupled decay, scaled by the lr) with warmup + decay and global-norm clipping.

    Weight decay is masked off by param path (`cfg.no_decay`); leaves matching `cfg.frozen` get a
    zero update and no optimizer state. With `params` the masks are computed now (static bool trees,
    so a mismatch fails early); without, from the params at init.
    The current lr lives in the state: `current_learning_rate(opt_state)`.
    """
    mask = (lambda p: weight_decay_mask(p, cfg.no_decay)) if params is None else weight_decay_mask(
        params, cfg.no_decay)
    adamw = optax.chain(
        optax.clip_by_global_norm(cfg.clip_norm) if cfg.clip_norm > 0 else optax.identity(),
        optax.scale_by_adam(b1=cfg.b1, b2=cfg.b2, eps=cfg.eps),
        optax.add_decayed_weights(cfg.weight_decay, mask=mask),
        optax.inject_hyperparams(optax.scale_by_learning_rate)(learning_rate=make_schedule(cfg)),
    )
    if not cfg.frozen:
        return adamw
    labels = lambda p: jax.tree.map(lambda f: "frozen" if f else "trained", frozen_mask(p, cfg.frozen))  # noqa: E731
    return optax.multi_transform({"trained": adamw, "frozen": optax.set_to_zero()},
                                 labels if params is None else labels(params))


def current_learning_rate(opt_state: Any) -> jax.Array:
    """The lr the last update used (schedule(0) before the first), from the injected hyperparams."""
    return optax.tree_utils.tree_get(opt_state, "learning_rate",
                                     filtering=lambda _, v: hasattr(v, "dtype"))


def _example_inputs(example_shape: tuple[int, int]):
    return jnp.zeros(example_shape, jnp.int32), jnp.ones(example_shape, bool)


def init_train_state(model: nn.Module, optim_cfg: OptimConfig, loss_cfg: LossConfig, rng: jax.Array, *,
                     params: Any = None, example_shape: tuple[int, int] = (1, 8),
                     shardings: TrainState | None = None) -> TrainState:
    """A fresh TrainState. `params`: model variables ({"params": ...}, unboxed) to start from
    (pretrained weights); None = random init from `rng`. With `shardings` (from
    `train_state_shardings`) everything is created already sharded, never whole on one device."""
    tokens, mask = _example_inputs(example_shape)

    def init(rng, params):
        if params is None:
            params = nn.meta.unbox(model.init(rng, tokens, mask))
        trainable = {"model": params, "log_temperature": jnp.log(jnp.float32(loss_cfg.temperature))}
        return TrainState(step=jnp.zeros((), jnp.int32), skipped=jnp.zeros((), jnp.int32), params=trainable,
                          opt_state=make_optimizer(optim_cfg).init(trainable))

    if shardings is None:
        return jax.jit(init)(rng, params)
    if params is not None:
        params = jax.device_put(params, shardings.params["model"])
    return jax.jit(init, out_shardings=shardings)(rng, params)


def abstract_train_state(model: nn.Module, optim_cfg: OptimConfig, loss_cfg: LossConfig, *,
                         example_shape: tuple[int, int] = (1, 8)) -> TrainState:
    """The TrainState as ShapeDtypeStructs (jax.eval_shape: nothing is allocated)."""
    return jax.eval_shape(lambda rng: init_train_state(model, optim_cfg, loss_cfg, rng,
                                                       example_shape=example_shape), jax.random.key(0))


def train_state_shardings(model: nn.Module, optim_cfg: OptimConfig, loss_cfg: LossConfig, mesh: Mesh, *,
                          example_shape: tuple[int, int] = (1, 8)) -> TrainState:
    """NamedShardings for every TrainState leaf: model params by the logical-axis rules, optimizer
    moments like their params, scalars (step, counts, temperature, lr) replicated."""
    tokens, mask = _example_inputs(example_shape)
    boxed = jax.eval_shape(model.init, jax.random.key(0), tokens, mask)
    replicated = NamedSharding(mesh, P())
    param_sh = {"model": sharding.param_shardings(boxed, mesh), "log_temperature": replicated}
    abstract = abstract_train_state(model, optim_cfg, loss_cfg, example_shape=example_shape)
    # A moment's path ends with its param's path (...mu['model']['params'][...]), also under
    # multi_transform, whose masked trees hide the frozen leaves (optax.tree_map_params cannot see them).
    by_path = {tuple(path): s for path, s in jax.tree_util.tree_leaves_with_path(param_sh)}

    def opt_leaf(path, _):
        return next((by_path[path[i:]] for i in range(len(path)) if path[i:] in by_path), replicated)

    opt_sh = jax.tree_util.tree_map_with_path(opt_leaf, abstract.opt_state)
    return TrainState(step=replicated, skipped=replicated, params=param_sh, opt_state=opt_sh)


def with_shardings(abstract: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs carrying shardings (inputs for ahead-of-time lowering)."""
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
