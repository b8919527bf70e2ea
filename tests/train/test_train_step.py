"""The train step: sharded runs equal the single-device run, the loss equals an independent path,
non-finite batches are skipped, weight decay masks, abstract state and shardings.

A tiny Gemma 3 (vocab 512, 1 layer, d_model 64) with a 32-dim projection and MRL dims (16, 32);
batches with duplicate query/target ids and hard negatives, some absent. Steps are compiled with
LLVM optimisation level 0 (`FAST`): half the compile time on this 2-core machine; both sides of
every comparison are compiled the same way and fp semantics are unchanged (no fast-math).
"""
from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gemini_embed import losses, sharding
from gemini_embed.model.bert import BertConfig
from gemini_embed.model.embedding_model import EmbeddingModel, EmbeddingModelConfig
from gemini_embed.model.gemma3 import GEMMA3_PRESETS, stack_layers
from gemini_embed.train.step import make_loss_fn
from gemini_embed.train import (LossConfig, OptimConfig, abstract_train_state, init_train_state, make_optimizer,
                                make_schedule, make_train_step, train_state_shardings, weight_decay_mask,
                                with_shardings)

FAST = {"xla_backend_optimization_level": 0}
VOCAB, B, K, LQ, LP, LN, STEPS = 512, 32, 2, 8, 12, 12, 5
ENCODER = dataclasses.replace(GEMMA3_PRESETS["gemma3-tiny"], vocab_size=VOCAB, num_layers=1, global_every=1)
MODEL = EmbeddingModel(EmbeddingModelConfig(ENCODER, projection=(32,), mrl_dims=(16, 32)))
# Adam's eps is 1e-6, not 1e-8: |d update / d grad| <= lr / eps, and float32 summation order (which
# sharding changes) leaves ~1e-8 absolute error on gradients that cancel to ~1e-7. With eps = 1e-8
# an embedding entry whose clipped gradient is ~5e-8 (~eps) moved 3e-6 apart in one step (0.25% of
# lr; seen here: 1.1e-5 after 5 steps). eps = 1e-6 bounds that below 1.5e-6 per step: the runs are
# compared at 1e-5 with the optimizer well-conditioned, not with a looser tolerance.
OPTIM = OptimConfig(lr=3e-3, warmup_steps=2, total_steps=10, weight_decay=0.1, clip_norm=1.0, eps=1e-6)
LOSS = LossConfig(temperature=0.05, learn_temperature=True, mrl_weights=(0.5, 1.0), hard_negative_alpha=5.0,
                  spread_out_weight=0.1)


def make_batch(seed: int) -> dict[str, np.ndarray]:
    """Right-padded random tokens; duplicate queries share ids and tokens, as do duplicate targets."""
    rng = np.random.default_rng(seed)

    def seqs(n, length):
        tokens = rng.integers(1, VOCAB, (n, length), dtype=np.int32)
        mask = np.arange(length)[None] < rng.integers(2, length + 1, n)[:, None]
        return np.where(mask, tokens, 0), mask

    query_ids = rng.integers(0, B - 6, B).astype(np.int32)  # ~6 duplicate queries
    positive_ids = np.arange(B, dtype=np.int32)
    positive_ids[1::8] = positive_ids[0::8]  # pairs of rows with the same target
    q_tok, q_mask = seqs(B, LQ)
    p_tok, p_mask = seqs(B, LP)
    first_q = {int(i): r for r, i in reversed(list(enumerate(query_ids)))}
    first_p = {int(i): r for r, i in reversed(list(enumerate(positive_ids)))}
    for r in range(B):
        q_tok[r], q_mask[r] = q_tok[first_q[int(query_ids[r])]], q_mask[first_q[int(query_ids[r])]]
        p_tok[r], p_mask[r] = p_tok[first_p[int(positive_ids[r])]], p_mask[first_p[int(positive_ids[r])]]
    n_tok, n_mask = seqs(B * K, LN)
    present = rng.random((B, K)) < 0.6
    present[:, 0] |= rng.random(B) < 0.5
    return {"query_tokens": q_tok, "query_mask": q_mask, "positive_tokens": p_tok, "positive_mask": p_mask,
            "negative_tokens": n_tok.reshape(B, K, LN), "negative_mask": n_mask.reshape(B, K, LN),
            "negative_present": present, "query_ids": query_ids, "positive_ids": positive_ids}


BATCHES = [make_batch(s) for s in range(STEPS)]


def mesh_of(shape: tuple[int, int, int]):
    return sharding.make_mesh(*shape, devices=jax.devices()[:int(np.prod(shape))])


@functools.cache
def initial_params():
    """Host copy of one random init, shared by every run."""
    tokens = jnp.zeros((1, 8), jnp.int32)
    return jax.device_get(nn.meta.unbox(jax.jit(MODEL.init)(jax.random.key(0), tokens, tokens > -1)))


@functools.cache
def initial_state():
    """Host copy of the TrainState built from `initial_params` (built once)."""
    return jax.device_get(init_train_state(MODEL, OPTIM, LOSS, jax.random.key(1), params=initial_params()))


@functools.cache
def compiled_step(mesh_shape, chunk=0):
    """(compiled step, fresh-state factory) on a mesh of that shape (compiled once per arguments)."""
    mesh = mesh_of(mesh_shape)
    shardings = train_state_shardings(MODEL, OPTIM, LOSS, mesh)
    step = make_train_step(MODEL, make_optimizer(OPTIM), LOSS, mesh, shardings, grad_cache_chunk_size=chunk)

    def fresh(params=None):  # the initial state, with other model params if given, on the mesh
        state = initial_state()
        if params is not None:
            state = state.replace(params={**state.params, "model": params})
        return jax.device_put(state, shardings)

    batch = jax.device_put(BATCHES[0], sharding.batch_sharding(mesh, 1))
    return step.lower(fresh(), batch).compile(FAST), fresh


@functools.cache
def run(mesh_shape: tuple[int, int, int], chunk: int = 0):
    """STEPS steps from `initial_params`: (metrics per step, final state on the host)."""
    mesh = mesh_of(mesh_shape)
    step, fresh = compiled_step(mesh_shape, chunk)
    state, history = fresh(), []
    for batch in BATCHES:
        state, metrics = step(state, jax.device_put(batch, sharding.batch_sharding(mesh, 1)))
        history.append(jax.device_get(metrics))
    return history, jax.device_get(state)


def assert_runs_close(got, want, atol=1e-5):
    (got_m, got_s), (want_m, want_s) = got, want
    np.testing.assert_allclose([m["loss"] for m in got_m], [m["loss"] for m in want_m], rtol=0, atol=atol)
    for (path, g), w in zip(jax.tree_util.tree_leaves_with_path(got_s.params), jax.tree.leaves(want_s.params)):
        np.testing.assert_allclose(g, w, rtol=0, atol=atol, err_msg=jax.tree_util.keystr(path))
    assert int(got_s.step) == int(want_s.step) == STEPS


SINGLE = (1, 1, 1)


@pytest.mark.parametrize("mesh_shape", [
    (2, 2, 2),  # data, fsdp and tensor at once; the others are marked slow (20 s each here)
    pytest.param((8, 1, 1), marks=pytest.mark.slow),
    pytest.param((2, 4, 1), marks=pytest.mark.slow),
    pytest.param((1, 8, 1), marks=pytest.mark.slow),
])
def test_sharded_steps_equal_single_device(mesh_shape):
    single, sharded = run(SINGLE), run(mesh_shape)
    assert_runs_close(sharded, single)
    losses_ = [m["loss"] for m in single[0]]
    assert losses_[-1] < losses_[0]  # it trains (warmup: step 0 has lr 0)
    assert not any(m["skipped"] for m in single[0])


def test_metrics_and_schedule():
    history, state = run(SINGLE)
    schedule = make_schedule(OPTIM)
    for i, m in enumerate(history):
        np.testing.assert_allclose(m["learning_rate"], schedule(i), rtol=1e-6)
        assert 0.0 <= m["in_batch_accuracy"] <= 1.0 and np.isfinite(m["grad_norm"]) and m["grad_norm"] > 0
        assert {"loss@16", "loss@32", "spread_out_loss", "hard_negative_similarity"} <= set(m)
    # learnt temperature: moved from its init, reported as exp(log_temperature) before the update
    np.testing.assert_allclose(history[0]["temperature"], LOSS.temperature, rtol=1e-6)
    assert float(np.exp(state.params["log_temperature"])) != pytest.approx(LOSS.temperature, rel=1e-6)


def test_step_loss_equals_reference_nce():
    """The step's first loss against losses.nce_loss / spread_out_loss on model.apply embeddings."""
    params, batch = initial_params(), BATCHES[0]

    @jax.jit
    def embed(params, b):
        n = MODEL.apply(params, b["negative_tokens"].reshape(B * K, LN), b["negative_mask"].reshape(B * K, LN))
        return (MODEL.apply(params, b["query_tokens"], b["query_mask"]),
                MODEL.apply(params, b["positive_tokens"], b["positive_mask"]), n.reshape(B, K, -1))

    q, p, n = embed(params, batch)
    nce = jax.jit(losses.nce_loss, static_argnames=("temperature", "hard_negative_alpha"))
    want = LOSS.spread_out_weight * jax.jit(losses.spread_out_loss)(q, p)
    for dim, w in zip((16, 32), LOSS.mrl_weights):
        want += w * nce(q[:, :dim], p[:, :dim], n[..., :dim], temperature=LOSS.temperature,
                        query_ids=batch["query_ids"], positive_ids=batch["positive_ids"],
                        negatives_mask=batch["negative_present"], hard_negative_alpha=LOSS.hard_negative_alpha)
    history, _ = run(SINGLE)
    np.testing.assert_allclose(history[0]["loss"], want, rtol=0, atol=1e-5)


def test_nonfinite_batch_is_skipped_and_counted():
    mesh = mesh_of(SINGLE)
    step, fresh = compiled_step(SINGLE, 0)  # the compiled step of run(SINGLE)
    good = jax.device_get(initial_params())
    bad = jax.tree.map(np.copy, good)
    bad["params"]["projection"]["dense_0"]["kernel"][0, 0] = np.nan
    batch = jax.device_put(BATCHES[0], sharding.batch_sharding(mesh, 1))

    before = jax.device_get(fresh(bad))
    after, metrics = step(fresh(bad), batch)
    after = jax.tree.map(np.array, jax.device_get(after))  # writable host copies
    assert int(metrics["skipped"]) == 1 and int(metrics["skipped_total"]) == 1 and not np.isfinite(metrics["loss"])
    assert int(after.step) == 0 and int(after.skipped) == 1
    for a, b in zip(jax.tree.leaves((after.params, after.opt_state)), jax.tree.leaves((before.params, before.opt_state))):
        np.testing.assert_array_equal(a, b)  # bit for bit (NaN == NaN here)

    # Repair the param and go on: the same update as a run that never saw the bad batch.
    after.params["model"]["params"]["projection"]["dense_0"]["kernel"][0, 0] = good["params"]["projection"][
        "dense_0"]["kernel"][0, 0]
    shardings = train_state_shardings(MODEL, OPTIM, LOSS, mesh)
    resumed, metrics = step(jax.device_put(after, shardings), batch)
    ref, ref_metrics = step(fresh(), batch)
    assert int(metrics["skipped"]) == 0 and int(resumed.skipped) == 1 and int(resumed.step) == 1
    np.testing.assert_array_equal(metrics["loss"], ref_metrics["loss"])
    for a, b in zip(jax.tree.leaves(resumed.params), jax.tree.leaves(ref.params)):
        np.testing.assert_array_equal(a, b)


def test_scored_batches_train_cosent_and_the_rest_nce():
    """A batch with finite pair_score gets the MRL CoSENT loss (against NumPy); a NaN pair_score
    column (an unscored source's batch in a run with a scored one) leaves NCE and its gradient
    exactly as without the column."""
    rng = np.random.default_rng(3)
    emb = {"query": jnp.asarray(rng.normal(size=(B, 32)), jnp.float32),
           "positive": jnp.asarray(rng.normal(size=(B, 32)), jnp.float32),
           "negative": jnp.asarray(rng.normal(size=(B, K, 32)), jnp.float32)}
    log_t = jnp.float32(np.log(LOSS.temperature))
    scores = rng.uniform(0, 5, B).round(1).astype(np.float32)

    def value_and_grad(batch):
        return jax.jit(jax.value_and_grad(make_loss_fn(MODEL, LOSS, batch), has_aux=True))(emb, log_t)

    (scored, m), g_scored = value_and_grad({**BATCHES[0], "pair_score": scores})
    q, p = np.asarray(emb["query"], np.float64), np.asarray(emb["positive"], np.float64)
    want = 0.0
    for dim, w in zip((16, 32), LOSS.mrl_weights):
        c = np.sum(q[:, :dim] * p[:, :dim], 1) / np.linalg.norm(q[:, :dim], axis=1) / np.linalg.norm(p[:, :dim], axis=1)
        ordered = scores[:, None] > scores[None, :]
        want += w * np.log1p(np.sum(np.exp((c[None, :] - c[:, None])[ordered] / LOSS.cosent_temperature)))
    np.testing.assert_allclose(float(scored), want, rtol=1e-5)
    np.testing.assert_allclose(float(m["cosent_loss"]), want, rtol=1e-5)
    assert not np.any(np.asarray(g_scored["negative"]))  # CoSENT uses no negatives

    (plain, _), g_plain = value_and_grad(BATCHES[0])
    (unscored, _), g_unscored = value_and_grad({**BATCHES[0], "pair_score": np.full(B, np.nan, np.float32)})
    assert float(unscored) == float(plain) != float(scored)
    for a, b in zip(jax.tree.leaves(g_unscored), jax.tree.leaves(g_plain)):
        np.testing.assert_array_equal(a, b)


def test_distillation_adds_its_weighted_mrl_term():
    """loss.distill_weight: the step's loss is NCE (+ spread-out) plus w x MRL distillation of the
    teacher's arrays in the batch (its own reference: tests/test_distill.py); without them, a message."""
    rng = np.random.default_rng(4)
    emb = {"query": jnp.asarray(rng.normal(size=(B, 32)), jnp.float32),
           "positive": jnp.asarray(rng.normal(size=(B, 32)), jnp.float32),
           "negative": jnp.asarray(rng.normal(size=(B, K, 32)), jnp.float32)}
    teacher = {"teacher_query": rng.normal(size=(B, 8)).astype(np.float32),
               "teacher_positive": rng.normal(size=(B, 8)).astype(np.float32),
               "teacher_negative": rng.normal(size=(B, K, 8)).astype(np.float32)}
    log_t = jnp.float32(np.log(LOSS.temperature))
    with_distill = dataclasses.replace(LOSS, distill_weight=0.7, distill_temperature=0.02)
    batch = {**BATCHES[0], **teacher}
    (loss, m), grads = jax.jit(jax.value_and_grad(make_loss_fn(MODEL, with_distill, batch), has_aux=True))(emb, log_t)
    (plain, _), _ = jax.jit(jax.value_and_grad(make_loss_fn(MODEL, LOSS, BATCHES[0]), has_aux=True))(emb, log_t)
    want = losses.mrl_distill_loss(emb["query"], emb["positive"], emb["negative"], *teacher.values(), dims=(16, 32),
                                   weights=LOSS.mrl_weights, temperature=LOSS.temperature, teacher_temperature=0.02,
                                   negatives_mask=batch["negative_present"])
    np.testing.assert_allclose(float(m["distill_loss"]), float(want), rtol=1e-6)
    np.testing.assert_allclose(float(loss), float(plain) + 0.7 * float(want), rtol=1e-6)
    assert np.all(np.isfinite(np.asarray(grads["negative"])))
    with pytest.raises(ValueError, match="teacher"):
        make_loss_fn(MODEL, with_distill, BATCHES[0])(emb, log_t)


def test_fixed_temperature_stays_fixed():
    """learn_temperature=False: the loss uses the config's temperature, the state's log_temperature
    gets an exactly zero gradient, so AdamW (decay masked off) leaves it where it was."""
    cfg = dataclasses.replace(LOSS, learn_temperature=False, temperature=0.03)
    rng = np.random.default_rng(0)
    emb = {"query": rng.normal(size=(B, 32)), "positive": rng.normal(size=(B, 32)),
           "negative": rng.normal(size=(B, K, 32))}
    batch = BATCHES[0]
    loss_fn = make_loss_fn(MODEL, cfg, batch)
    (_, metrics), g = jax.jit(jax.value_and_grad(loss_fn, argnums=1, has_aux=True))(emb, jnp.float32(np.log(0.5)))
    assert float(g) == 0.0 and float(metrics["temperature"]) == pytest.approx(0.03, rel=1e-7)
    (_, learnt), g = jax.jit(jax.value_and_grad(make_loss_fn(MODEL, LOSS, batch), argnums=1, has_aux=True))(
        emb, jnp.float32(np.log(0.5)))
    assert float(g) != 0.0 and float(learnt["temperature"]) == pytest.approx(0.5, rel=1e-6)

    params = {"model": {"w": jnp.ones((3, 4))}, "log_temperature": jnp.float32(np.log(0.03))}
    tx = make_optimizer(OPTIM)
    grads = jax.tree.map(jnp.ones_like, params) | {"log_temperature": jnp.float32(0.0)}

    @jax.jit
    def two_updates(p):
        o = tx.init(p)
        for _ in range(2):
            u, o = tx.update(grads, o, p)
            p = optax.apply_updates(p, u)
        return p

    assert float(two_updates(params)["log_temperature"]) == float(params["log_temperature"])


def _decay_paths(params):
    mask = weight_decay_mask({"model": params, "log_temperature": 0.0})
    return {jax.tree_util.keystr(p) for p, m in jax.tree_util.tree_leaves_with_path(mask) if m}


def _abstract_params(encoder):
    model = EmbeddingModel(EmbeddingModelConfig(encoder, projection=(32,)))
    tokens = jax.ShapeDtypeStruct((1, 8), jnp.int32)
    return nn.meta.unbox(jax.eval_shape(model.init, jax.random.key(0), tokens, tokens.update(dtype=bool)))


def test_weight_decay_mask_gemma3_and_bert():
    gemma = _decay_paths(_abstract_params(dataclasses.replace(ENCODER, num_layers=1)))
    pre = "['model']['params']"
    layer = f"{pre}['encoder']['layer_0']"
    assert gemma == {f"{layer}['attn']['{n}']['kernel']" for n in "qkvo"} | {
        f"{layer}['mlp']['{n}']['kernel']" for n in ("gate", "up", "down")} | {f"{pre}['projection']['dense_0']['kernel']"}

    bert = _decay_paths(_abstract_params(BertConfig(vocab_size=100, d_model=32, num_layers=1, num_heads=2, mlp_dim=64)))
    assert bert == {f"{layer}['attn']['{n}']['kernel']" for n in ("query", "key", "value", "out")} | {
        f"{layer}['mlp']['{n}']['kernel']" for n in ("wi", "wo")} | {f"{pre}['projection']['dense_0']['kernel']"}


def test_weight_decay_applies_only_to_masked_in_leaves():
    cfg = OptimConfig(lr=0.5, warmup_steps=0, total_steps=10, weight_decay=0.1, clip_norm=0.0)
    params = {"model": initial_params(), "log_temperature": jnp.float32(-3.0)}
    params = jax.tree.map(lambda x: x + 1.0, params)  # norms start at 0: make every leaf non-zero
    tx = make_optimizer(cfg, params)
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = jax.jit(lambda p: tx.update(zeros, tx.init(p), p))(params)  # zero grads: Adam adds nothing, only decay
    mask = weight_decay_mask(params)
    for (path, u), p, m in zip(jax.tree_util.tree_leaves_with_path(updates), jax.tree.leaves(params),
                               jax.tree.leaves(mask)):
        want = -cfg.lr * cfg.weight_decay * np.asarray(p) if m else np.zeros_like(p)
        np.testing.assert_allclose(u, want, rtol=1e-6, err_msg=jax.tree_util.keystr(path))


def test_abstract_state_allocates_nothing_and_matches():
    live = len(jax.live_arrays())
    big = EmbeddingModel(EmbeddingModelConfig(GEMMA3_PRESETS["gemma3-270m"], projection=(768,)))
    abstract = abstract_train_state(big, OPTIM, LOSS)
    assert len(jax.live_arrays()) == live
    assert all(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(abstract))
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract.params))
    assert 268_000_000 < n_params < 269_500_000  # 268.1M encoder + 0.5M projection + temperature

    mesh = mesh_of((2, 2, 2))
    shardings = train_state_shardings(big, OPTIM, LOSS, mesh)
    assert jax.tree.structure(shardings) == jax.tree.structure(abstract)
    emb = shardings.params["model"]["params"]["encoder"]["embedder"]["embedding"]
    assert emb.spec == jax.sharding.PartitionSpec("tensor", "fsdp")
    assert shardings.opt_state[1].mu["model"]["params"]["encoder"]["embedder"]["embedding"] == emb
    assert shardings.step.spec == jax.sharding.PartitionSpec()

    # Same shapes and dtypes as a real (tiny) state.
    real = initial_state()
    tiny = abstract_train_state(MODEL, OPTIM, LOSS)
    assert jax.tree.structure(real) == jax.tree.structure(tiny)
    for r, a in zip(jax.tree.leaves(real), jax.tree.leaves(tiny)):
        assert (r.shape, r.dtype) == (a.shape, a.dtype)


def test_init_from_pretrained_params_and_sharded():
    mesh = mesh_of((2, 2, 2))
    shardings = train_state_shardings(MODEL, OPTIM, LOSS, mesh)
    state = init_train_state(MODEL, OPTIM, LOSS, jax.random.key(5), params=initial_params(), shardings=shardings)
    for a, b in zip(jax.tree.leaves(state.params["model"]), jax.tree.leaves(initial_params())):
        np.testing.assert_array_equal(a, b)
    for x, s in zip(jax.tree.leaves(state), jax.tree.leaves(shardings)):
        assert x.sharding.is_equivalent_to(s, x.ndim)
    assert int(state.step) == 0 and float(state.params["log_temperature"]) == pytest.approx(np.log(LOSS.temperature))


def test_bad_batch_is_a_message():
    mesh = mesh_of(SINGLE)
    shardings = train_state_shardings(MODEL, OPTIM, LOSS, mesh)
    step = make_train_step(MODEL, make_optimizer(OPTIM), LOSS, mesh, shardings)
    state = with_shardings(abstract_train_state(MODEL, OPTIM, LOSS), shardings)
    batch = dict(BATCHES[0], query_mask=BATCHES[0]["query_mask"][:, :4])
    with pytest.raises(ValueError, match="query_mask"):
        step.lower(state, batch)
    with pytest.raises(ValueError, match="missing"):
        step.lower(state, {k: v for k, v in BATCHES[0].items() if k != "positive_tokens"})
    with pytest.raises(ValueError, match="chunk size"):
        make_train_step(MODEL, make_optimizer(OPTIM), LOSS, mesh, shardings, grad_cache_chunk_size=5).lower(
            state, BATCHES[0])


def test_scanned_layers_on_a_mesh_equal_unrolled_single_device():
    """The pod configs' layout: layers scanned over stacked params, remat, FSDP x tensor on 8
    devices with the gradient cache, vs the unrolled model on one device, for 3 steps."""
    enc = dataclasses.replace(ENCODER, num_layers=2, global_every=2, remat=True)
    unrolled, scanned = (EmbeddingModel(EmbeddingModelConfig(e, projection=(32,), mrl_dims=(16, 32)))
                         for e in (enc, dataclasses.replace(enc, scan_layers=True)))
    tokens = jnp.zeros((1, 8), jnp.int32)
    params = jax.device_get(nn.meta.unbox(unrolled.init(jax.random.key(0), tokens, tokens > -1)))
    stacked = {"params": {**params["params"], "encoder": stack_layers(params["params"]["encoder"], 2)}}

    def train(model, params, mesh_shape, chunk):
        mesh = mesh_of(mesh_shape)
        shardings = train_state_shardings(model, OPTIM, LOSS, mesh)
        step = make_train_step(model, make_optimizer(OPTIM), LOSS, mesh, shardings, grad_cache_chunk_size=chunk)
        state = jax.device_put(init_train_state(model, OPTIM, LOSS, jax.random.key(1), params=params), shardings)
        history = []
        for batch in BATCHES[:3]:
            state, metrics = step(state, jax.device_put(batch, sharding.batch_sharding(mesh, 1)))
            history.append(float(metrics["loss"]))
        return history, jax.device_get(state.params["model"]["params"]["encoder"])

    want_losses, want = train(unrolled, params, SINGLE, 0)
    got_losses, got = train(scanned, stacked, (1, 4, 2), 16)
    np.testing.assert_allclose(got_losses, want_losses, rtol=0, atol=1e-5)
    jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=0, atol=1e-5), got, stack_layers(want, 2))
