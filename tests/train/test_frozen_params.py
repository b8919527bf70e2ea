"""Frozen parameters (`OptimConfig.frozen`): the frozen leaves never move and hold no Adam moments;
every other leaf moves exactly as plain AdamW moves it on the full gradient with the frozen
leaves' part set to zero; XLA drops the frozen gradient (no scatter-add into the token table).
Same tiny Gemma 3 and batches as test_train_step (rootdir import mode)."""
from __future__ import annotations

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments import tiny
from gemini_embed import losses, sharding
from gemini_embed.train import (LossConfig, init_train_state, make_optimizer, make_train_step,
                                train_state_shardings)
from gemini_embed.train.setup import typed_configs
from gemini_embed.train.state import frozen_mask
from test_train_step import B, BATCHES, FAST, K, LN, MODEL, OPTIM, SINGLE, initial_params, mesh_of

LOSS = LossConfig(temperature=0.05, mrl_weights=(0.5, 1.0), hard_negative_alpha=5.0, spread_out_weight=0.1)
PLAIN = dataclasses.replace(OPTIM, warmup_steps=0)  # the first update moves (with warmup its lr is 0)
FROZEN = dataclasses.replace(PLAIN, frozen=("embedder",))


def reference_loss(params, b):
    """The step's loss written out from model.apply and the loss functions (fixed temperature)."""
    q = MODEL.apply(params, b["query_tokens"], b["query_mask"])
    p = MODEL.apply(params, b["positive_tokens"], b["positive_mask"])
    n = MODEL.apply(params, b["negative_tokens"].reshape(B * K, LN),
                    b["negative_mask"].reshape(B * K, LN)).reshape(B, K, -1)
    total = LOSS.spread_out_weight * losses.spread_out_loss(q, p)
    for dim, w in zip((16, 32), LOSS.mrl_weights):
        total += w * losses.nce_loss(q[:, :dim], p[:, :dim], n[..., :dim], temperature=LOSS.temperature,
                                     query_ids=b["query_ids"], positive_ids=b["positive_ids"],
                                     negatives_mask=b["negative_present"],
                                     hard_negative_alpha=LOSS.hard_negative_alpha)
    return total


def compile_step(optim):
    mesh = mesh_of(SINGLE)
    shardings = train_state_shardings(MODEL, optim, LOSS, mesh)
    step = make_train_step(MODEL, make_optimizer(optim), LOSS, mesh, shardings, frozen=optim.frozen)
    state = init_train_state(MODEL, optim, LOSS, jax.random.key(1), params=initial_params(), shardings=shardings)
    batch = jax.device_put(BATCHES[0], sharding.batch_sharding(mesh, 1))
    return step.lower(state, batch).compile(FAST), state, batch


def test_frozen_leaves_stay_and_the_rest_is_adamw_on_the_zeroed_gradient():
    params = initial_params()
    grads = jax.jit(jax.grad(reference_loss))(params, BATCHES[0])
    grads = {"model": grads, "log_temperature": jnp.float32(0.0)}
    mask = frozen_mask(grads, FROZEN.frozen)
    grads = jax.tree.map(lambda g, f: jnp.zeros_like(g) if f else g, grads, mask)
    full = {"model": params, "log_temperature": jnp.log(jnp.float32(LOSS.temperature))}
    tx = make_optimizer(PLAIN)
    updates, _ = jax.jit(lambda p, g: tx.update(g, tx.init(p), p))(full, grads)
    want = optax.apply_updates(full, updates)

    step, state, batch = compile_step(FROZEN)
    new, metrics = step(state, batch)
    np.testing.assert_allclose(metrics["loss"], reference_loss(params, BATCHES[0]), rtol=0, atol=1e-5)
    n_frozen = 0
    for (path, got), w, old, f in zip(jax.tree_util.tree_leaves_with_path(new.params), jax.tree.leaves(want),
                                      jax.tree.leaves(full), jax.tree.leaves(mask)):
        if f:
            np.testing.assert_array_equal(got, old, err_msg=jax.tree_util.keystr(path))
            n_frozen += 1
        else:
            np.testing.assert_allclose(got, w, rtol=0, atol=1e-5, err_msg=jax.tree_util.keystr(path))
    assert n_frozen == 1  # the token table
    assert not np.array_equal(new.params["model"]["params"]["projection"]["dense_0"]["kernel"],
                              full["model"]["params"]["projection"]["dense_0"]["kernel"])

    # Adam's moments cover the trained leaves only: the 512 x 64 table has none.
    moments = sum(x.size for x in jax.tree.leaves(new.opt_state) if x.ndim)
    trained = sum(x.size for x, f in zip(jax.tree.leaves(new.params), jax.tree.leaves(mask)) if not f and x.ndim)
    assert moments == 2 * trained


def test_the_frozen_gradient_is_never_computed():
    """The token table's gradient is a scatter-add of the token gradients; frozen, it is dead code."""
    table = "f32[{},{}]".format(*initial_params()["params"]["encoder"]["embedder"]["embedding"].shape)
    scatters = lambda optim: re.findall(r"= (f32\[[\d,]+\])\S* scatter\(", compile_step(optim)[0].as_text())  # noqa: E731
    assert table in scatters(PLAIN) and table not in scatters(FROZEN)


def test_a_frozen_pattern_that_matches_nothing_or_everything_is_an_error():
    params = {"model": initial_params(), "log_temperature": jnp.float32(0.0)}
    with pytest.raises(ValueError, match="optim.frozen: 'embeder' matches no parameter path"):
        frozen_mask(params, ("embeder",))
    with pytest.raises(ValueError, match="freezes every parameter"):
        frozen_mask(params, ("params", "temperature"))


def test_the_command_line_form_is_split_on_commas():
    """`--config.optim.frozen=embedder,norm` arrives as ('embedder,norm',)."""
    c = tiny.get_config()
    for given in (("embedder,norm",), ("embedder", "norm")):  # the config field is a tuple
        c.optim.frozen = given
        assert typed_configs(c)[0].frozen == ("embedder", "norm")
    c.optim.frozen = ()
    assert typed_configs(c)[0].frozen == ()
