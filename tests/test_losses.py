"""NCE / MRL / spread-out / CoSENT losses against literal NumPy loops (float64), finite
differences, and the same loss jitted over a batch sharded on 8 CPU devices."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from gemini_embed import losses

# fp32 loss vs float64 reference. The agreement is limited by the f32 similarities (eps ~ 1e-7)
# amplified by 1/tau; the cases below keep 1/tau * eps * |L|^-1 well under this.
RTOL = 1e-6

# Jitted once per input structure and reused across tests: eager dispatch compiles every primitive
# on its own, which is slow on a shared 2-core machine. The temperature is traced, not static.
nce = jax.jit(losses.nce_loss, static_argnames=("hard_negative_alpha",))
nce_metrics = jax.jit(losses.nce_loss_and_metrics, static_argnames=("hard_negative_alpha",))
mrl = jax.jit(losses.mrl_nce_loss, static_argnames=("dims", "weights"))
spread = jax.jit(losses.spread_out_loss)
cosent = jax.jit(losses.cosent_loss)


# ---------------------------------------------------------------- NumPy reference (literal loops)

def _unit(v):
    return v / np.sqrt(np.sum(v * v))


def ref_nce(q, p, n=None, nmask=None, qid=None, pid=None, *, tau, alpha=None, hn_weights=None):
    """The recipe's formula, one term at a time. hn_weights [B, K] overrides the hard-negative
    weights (for finite differences, where stop_gradient means "weights held fixed")."""
    q, p = np.asarray(q, np.float64), np.asarray(p, np.float64)
    b = q.shape[0]
    total = 0.0
    for i in range(b):
        qi = _unit(q[i])
        num = np.exp(qi @ _unit(p[i]) / tau)
        den = 0.0
        for j in range(b):
            if j != i and ((qid is not None and qid[j] == qid[i]) or (pid is not None and pid[j] == pid[i])):
                continue
            den += np.exp(qi @ _unit(p[j]) / tau)
        if n is not None:
            for k in range(n.shape[1]):
                if nmask is not None and not nmask[i, k]:
                    continue
                s = qi @ _unit(np.asarray(n[i, k], np.float64))
                w = 1.0
                if hn_weights is not None:
                    w = hn_weights[i, k]
                elif alpha is not None:
                    w = np.exp(alpha * s)
                den += w * np.exp(s / tau)
        total += -np.log(num / den)
    return total / b


def ref_hn_weights(q, n, alpha):
    b, k = n.shape[:2]
    w = np.zeros((b, k))
    for i in range(b):
        for kk in range(k):
            w[i, kk] = np.exp(alpha * (_unit(q[i]) @ _unit(n[i, kk])))
    return w


def ref_spread_out(q, p):
    total = 0.0
    for x in (np.asarray(q, np.float64), np.asarray(p, np.float64)):
        b, acc = x.shape[0], 0.0
        for i in range(b):
            for j in range(b):
                if i != j:
                    acc += (_unit(x[i]) @ _unit(x[j])) ** 2
        total += acc / (b * (b - 1))
    return total


def ref_accuracy(q, p, n=None, nmask=None, qid=None, pid=None):
    b, hits = q.shape[0], 0
    for i in range(b):
        qi = _unit(q[i])
        pos = qi @ _unit(p[i])
        others = [qi @ _unit(p[j]) for j in range(b) if j != i and not (
            (qid is not None and qid[j] == qid[i]) or (pid is not None and pid[j] == pid[i]))]
        if n is not None:
            others += [qi @ _unit(n[i, k]) for k in range(n.shape[1]) if nmask is None or nmask[i, k]]
        hits += all(pos >= o for o in others)
    return hits / b


# ---------------------------------------------------------------- random cases

CASES = ["plain", "dup_queries", "same_targets", "dups_both", "k3_masked", "k1", "k3_all_present",
         "ids_without_equal_vectors"]


def make_case(name, seed, b=12, d=24, dtype=np.float32):
    """Batches with the structure the loss must handle; duplicate ids get identical vectors
    (except in 'ids_without_equal_vectors': the mask must follow the ids, not the vectors)."""
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(b, d))
    p = rng.normal(size=(b, d)) + 0.5 * q  # positives correlated with queries, as after training
    n = nmask = qid = pid = None
    if name in ("dup_queries", "dups_both", "k3_masked", "ids_without_equal_vectors"):
        qid = rng.integers(0, b // 3, size=b)
    if name in ("same_targets", "dups_both", "ids_without_equal_vectors"):
        pid = rng.integers(0, b // 3, size=b)
    if name != "ids_without_equal_vectors":
        for ids, x in ((qid, q), (pid, p)):
            if ids is not None:
                for i in range(b):
                    x[i] = x[int(np.argmax(ids == ids[i]))]
    if name.startswith("k"):
        k = int(name[1])
        n = rng.normal(size=(b, k, d)) + 0.3 * q[:, None, :]
        if name.endswith("masked"):
            nmask = rng.random((b, k)) < 0.5
            nmask[0] = False  # a row with every negative absent
            nmask[1] = True
    cast = lambda x: None if x is None else x.astype(dtype)
    return cast(q), cast(p), cast(n), nmask, qid, pid


def kwargs(nmask, qid, pid, **kw):
    for key, v in (("negatives_mask", nmask), ("query_ids", qid), ("positive_ids", pid)):
        if v is not None:
            kw[key] = v
    return kw


# ---------------------------------------------------------------- value

@pytest.mark.parametrize("name", CASES)
def test_nce_matches_numpy_reference(name):
    for tau in (0.02, 0.05):
        for seed in range(3):
            q, p, n, nmask, qid, pid = make_case(name, seed)
            got = nce(q, p, n, **kwargs(nmask, qid, pid, temperature=tau))
            assert got.dtype == jnp.float32 and got.shape == ()
            want = ref_nce(q, p, n, nmask, qid, pid, tau=tau)
            np.testing.assert_allclose(float(got), want, rtol=RTOL, err_msg=f"{name} tau {tau} seed {seed}")


@pytest.mark.parametrize("name", CASES)
def test_nce_matches_numpy_reference_exactly_in_float64(name):
    """The formula itself, free of float32 rounding: with x64 the same code runs in float64.
    (In float32 the similarities carry ~1e-7 from the D-term dot product, which 1/tau multiplies:
    that, not the formula, is what limits the float32 agreement above.)"""
    with jax.enable_x64(True):
        f64 = jax.jit(losses.nce_loss)
        for seed in range(5):
            q, p, n, nmask, qid, pid = make_case(name, seed, dtype=np.float64)
            got = f64(q, p, n, **kwargs(nmask, qid, pid, temperature=0.02))
            assert got.dtype == jnp.float64
            np.testing.assert_allclose(float(got), ref_nce(q, p, n, nmask, qid, pid, tau=0.02), rtol=1e-12)


def test_masks_and_negatives_matter():
    """Guards the reference comparison: each option really changes the value."""
    q, p, n, nmask, qid, pid = make_case("k3_masked", 0)
    _, _, _, _, _, pid = make_case("same_targets", 0)
    base = float(nce(q, p, temperature=0.05))
    for kw, extra in [({"query_ids": qid}, None), ({"positive_ids": pid}, None), ({}, n),
                      ({"negatives_mask": nmask}, n), ({"hard_negative_alpha": 5.0}, n)]:
        val = float(nce(q, p, extra, temperature=0.05, **kw))
        assert abs(val - base) > 1e-3, kw
    # All negatives absent == no negatives at all.
    none = np.zeros(n.shape[:2], bool)
    np.testing.assert_allclose(nce(q, p, n, temperature=0.05, negatives_mask=none), base, rtol=1e-7)


def test_tiny_loss_keeps_its_relative_precision():
    """Easy batch, loss ~1e-5: `logsumexp(l) - l_ii` in float32 cancels two ~20s and keeps only
    ~1e-2 of the value. Relative to the positive the loss is a log1p of a small sum, whose relative
    error is the error of the logit differences: 2 * max|ds| / tau = 2 * 2e-7 / 0.05 = 8e-6."""
    for seed in range(5):
        rng = np.random.default_rng(seed)
        q = rng.normal(size=(12, 24))
        p = (q + 0.3 * rng.normal(size=(12, 24))).astype(np.float32)
        q = q.astype(np.float32)
        want = ref_nce(q, p, tau=0.05)
        assert want < 2e-4
        np.testing.assert_allclose(float(nce(q, p, temperature=0.05)), want, rtol=1e-5)


def test_single_candidate_row_loss_is_zero():
    """B = 1, no negatives: the positive is the whole denominator, the loss is exactly 0."""
    x = np.random.default_rng(0).normal(size=(1, 8)).astype(np.float32)
    assert float(nce(x, 2 * x + 1, temperature=0.01)) == 0.0


def test_hard_negative_weight_matches_numpy():
    for seed in range(3):
        q, p, n, nmask, qid, pid = make_case("k3_masked", seed)
        got = nce(q, p, n, **kwargs(nmask, qid, pid, temperature=0.05, hard_negative_alpha=5.0))
        want = ref_nce(q, p, n, nmask, qid, pid, tau=0.05, alpha=5.0)
        np.testing.assert_allclose(float(got), want, rtol=RTOL)


def test_large_inverse_temperature_is_finite_and_exact():
    """tau = 0.01 with near-identical vectors: every logit ~ 100, exp(100) overflows float32."""
    rng = np.random.default_rng(0)
    base = rng.normal(size=(1, 16))
    q = (base + 1e-2 * rng.normal(size=(8, 16))).astype(np.float32)
    p = (base + 1e-2 * rng.normal(size=(8, 16))).astype(np.float32)
    n = (base + 1e-2 * rng.normal(size=(8, 2, 16))).astype(np.float32)
    assert np.exp(np.float32(1 / 0.01)) == np.inf  # the naive f32 formula would overflow
    fn = jax.jit(jax.value_and_grad(lambda q, p, n, tau: losses.nce_loss(
        q, p, n, temperature=tau, hard_negative_alpha=5.0), argnums=(0, 1, 2)))
    vals = {}
    for tau in (0.01, 1e-3):
        vals[tau], grads = fn(q, p, n, tau)
        assert np.isfinite(float(vals[tau])) and all(np.isfinite(np.asarray(g)).all() for g in grads)
    # Against the reference at tau = 0.01 (float64 still holds e^100; at 1e-3 it would not).
    want = ref_nce(q, p, n, tau=0.01, alpha=5.0)
    assert 0.5 < want < 10  # near-identical vectors: logits within a few units, loss ~ log(B + K)
    np.testing.assert_allclose(float(vals[0.01]), want, rtol=RTOL)


def test_bfloat16_inputs_are_computed_in_float32():
    q, p, n, *_ = make_case("k1", 0)
    bq, bp, bn = (jnp.asarray(x, jnp.bfloat16) for x in (q, p, n))
    got = nce(bq, bp, bn, temperature=0.05)
    assert got.dtype == jnp.float32
    up = lambda x: np.asarray(x.astype(jnp.float32))
    np.testing.assert_allclose(float(got), ref_nce(up(bq), up(bp), up(bn), tau=0.05), rtol=RTOL)


# ---------------------------------------------------------------- gradients

def _fd_grad(f, x, h=1e-6):
    """Central differences of a float64 scalar function, one coordinate at a time."""
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        g[idx] = (f(xp) - f(xm)) / (2 * h)
    return g


@pytest.mark.parametrize("alpha", [None, 5.0])
def test_gradient_matches_finite_differences_of_reference(alpha):
    """jax.grad in float64 (q, p, n and the temperature) vs central differences of the NumPy loop.
    With alpha the FD holds the hard-negative weights fixed at the base point: stop_gradient."""
    q, p, n, nmask, qid, pid = make_case("k3_masked", 1, b=6, d=5, dtype=np.float64)
    tau = 0.07
    w = None if alpha is None else ref_hn_weights(q, n, alpha)
    ref = lambda q, p, n, tau: ref_nce(q, p, n, nmask, qid, pid, tau=tau, hn_weights=w)
    with jax.enable_x64(True):
        fn = lambda q, p, n, tau: losses.nce_loss(q, p, n, **kwargs(nmask, qid, pid, temperature=tau,
                                                                    hard_negative_alpha=alpha))
        grads = jax.jit(jax.grad(fn, argnums=(0, 1, 2, 3)))(q, p, n, jnp.float64(tau))
        assert all(g.dtype == jnp.float64 for g in grads)
    want = (_fd_grad(lambda x: ref(x, p, n, tau), q), _fd_grad(lambda x: ref(q, x, n, tau), p),
            _fd_grad(lambda x: ref(q, p, x, tau), n), _fd_grad(lambda t: ref(q, p, n, float(t)), np.array(tau)))
    for name, g, fd in zip("q p n tau".split(), grads, want):
        scale = np.abs(fd).max()
        assert scale > 1e-2, name  # a non-trivial gradient
        np.testing.assert_allclose(np.asarray(g), fd, rtol=0, atol=1e-7 * scale, err_msg=name)
    # Absent negatives get no gradient; the row with all negatives absent has a zero n-gradient.
    assert np.all(np.asarray(grads[2])[~nmask] == 0)
    if alpha is not None:  # the stop_gradient matters: differentiating through w gives another answer
        through_w = _fd_grad(lambda x: ref_nce(q, p, x, nmask, qid, pid, tau=tau, alpha=alpha), n)
        assert np.abs(through_w - want[2]).max() > 1e-2 * np.abs(want[2]).max()


def test_float32_gradient_close_to_float64():
    q, p, n, nmask, qid, pid = make_case("k3_masked", 2, dtype=np.float64)
    fn = lambda q, p, n: losses.nce_loss(q, p, n, **kwargs(nmask, qid, pid, temperature=0.02))
    with jax.enable_x64(True):
        g64 = jax.jit(jax.grad(fn, argnums=(0, 1, 2)))(q, p, n)
    g32 = jax.jit(jax.grad(fn, argnums=(0, 1, 2)))(*(x.astype(np.float32) for x in (q, p, n)))
    for a, b in zip(g32, g64):
        assert a.dtype == jnp.float32
        # f32 similarities (eps 6e-8) times 1/tau = 50, on O(1)-scaled gradients.
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-5 * np.abs(b).max())


# ---------------------------------------------------------------- MRL, metrics, spread-out

def test_mrl_is_weighted_sum_of_truncated_renormalised_losses():
    q, p, n, nmask, qid, pid = make_case("k3_masked", 3)
    dims, weights = (4, 8, 16, 24), (0.5, 1.0, 2.0, 0.25)
    kw = kwargs(nmask, qid, pid, temperature=0.05)
    got = mrl(q, p, n, dims=dims, weights=weights, **kw)
    want = sum(w * ref_nce(q[:, :k], p[:, :k], n[..., :k], nmask, qid, pid, tau=0.05)
               for k, w in zip(dims, weights))
    np.testing.assert_allclose(float(got), want, rtol=RTOL)
    parts = [ref_nce(q[:, :k], p[:, :k], n[..., :k], nmask, qid, pid, tau=0.05) for k in dims]
    np.testing.assert_allclose(float(mrl(q, p, n, dims=dims, **kw)), sum(parts), rtol=RTOL)  # weights 1
    with pytest.raises(ValueError):
        losses.mrl_nce_loss(q, p, dims=(64,), temperature=0.05)
    with pytest.raises(ValueError):
        losses.mrl_nce_loss(q, p, dims=(4, 8), weights=(1.0,), temperature=0.05)


def test_metrics_share_the_loss_and_match_numpy():
    for name in ("k3_masked", "dups_both", "plain"):
        q, p, n, nmask, qid, pid = make_case(name, 4)
        kw = kwargs(nmask, qid, pid, temperature=0.05)
        loss, m = nce_metrics(q, p, n, **kw)
        assert float(loss) == float(nce(q, p, n, **kw))
        np.testing.assert_allclose(float(m["in_batch_accuracy"]), ref_accuracy(q, p, n, nmask, qid, pid), rtol=1e-7)
        unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
        np.testing.assert_allclose(float(m["positive_similarity"]), np.mean(np.sum(unit(q) * unit(p), -1)),
                                   rtol=1e-6)
        assert ("hard_negative_similarity" in m) == (n is not None)
    _, m = jax.jit(losses.mrl_nce_loss_and_metrics, static_argnames="dims")(q, p, dims=(8, 24), temperature=0.05)
    assert {"loss@8", "in_batch_accuracy@8", "in_batch_accuracy@24"} <= set(m)


def test_spread_out_matches_numpy():
    for seed in range(3):
        q, p, *_ = make_case("dup_queries", seed)
        np.testing.assert_allclose(float(spread(q, p)), ref_spread_out(q, p), rtol=RTOL)
    # Orthonormal rows have no off-diagonal similarity.
    eye = np.eye(6, 8, dtype=np.float32) * 3.0
    assert float(losses.spread_out_loss(eye, eye)) == 0.0
    with pytest.raises(ValueError):
        losses.spread_out_loss(eye[:1], eye[:1])


def test_bad_shapes_raise():
    q, p, n, nmask, *_ = make_case("k3_masked", 0)
    with pytest.raises(ValueError):
        losses.nce_loss(q, p[:-1], temperature=0.05)
    with pytest.raises(ValueError):
        losses.nce_loss(q, p, n[:, :, :-1], temperature=0.05)
    with pytest.raises(ValueError):
        losses.nce_loss(q, p, n[:, 0], temperature=0.05)  # [B, D]: K axis missing
    with pytest.raises(ValueError):
        losses.nce_loss(q, p, temperature=0.05, negatives_mask=nmask)
    with pytest.raises(ValueError):
        losses.nce_loss(q, p, n, temperature=0.05, query_ids=np.arange(3))
    with pytest.raises(ValueError):
        losses.nce_loss(q, p, temperature=0.05, hard_negative_alpha=5.0)


def ref_cosent(q, p, y, tau):
    """CoSENT one ordered pair at a time: log(1 + sum over y_i > y_j of e^{(c_j - c_i) / tau})."""
    c = [_unit(np.asarray(a, np.float64)) @ _unit(np.asarray(b, np.float64)) for a, b in zip(q, p)]
    total = 1.0
    for i in range(len(c)):
        for j in range(len(c)):
            if np.isfinite(y[i]) and np.isfinite(y[j]) and y[i] > y[j]:
                total += np.exp((c[j] - c[i]) / tau)
    return np.log(total)


def test_cosent_matches_numpy_reference():
    rng = np.random.default_rng(0)
    for tau in (0.05, 0.02):
        q, p = (rng.normal(size=(12, 16)).astype(np.float32) for _ in range(2))
        y = rng.integers(0, 6, 12).astype(np.float32)  # ties, as the 0-5 STS scale has
        y[3] = np.nan  # an unscored row drops out
        np.testing.assert_allclose(float(cosent(q, p, y, temperature=tau)), ref_cosent(q, p, y, tau), rtol=RTOL)
        got = jax.jit(losses.mrl_cosent_loss, static_argnames=("dims", "weights"))(
            q, p, y, dims=(4, 16), weights=(0.5, 1.0), temperature=tau)
        want = 0.5 * ref_cosent(q[:, :4], p[:, :4], y, tau) + ref_cosent(q, p, y, tau)
        np.testing.assert_allclose(float(got), want, rtol=RTOL)
    # Equal scores order nothing: the loss is exactly 0 and so is its gradient.
    loss, grad = jax.value_and_grad(losses.cosent_loss)(q, p, np.full(12, 2.0, np.float32), temperature=0.05)
    assert float(loss) == 0.0 and not np.any(grad)
    # A perfect, well-separated order costs almost nothing; the reversed one costs a lot.
    x = np.eye(4, 8, dtype=np.float32)
    far = np.stack([np.cos(a) * x[i] + np.sin(a) * x[(i + 1) % 4] for i, a in enumerate((0.1, 0.6, 1.1, 1.5))])
    y = np.array([3.0, 2.0, 1.0, 0.0], np.float32)
    assert float(cosent(x, far, y, temperature=0.05)) < 0.05 < 10 < float(cosent(x, far, y[::-1], temperature=0.05))
    with pytest.raises(ValueError, match="scores"):
        losses.cosent_loss(q, p, y, temperature=0.05)


def test_cosent_gradient_matches_finite_differences():
    rng = np.random.default_rng(1)
    q, p = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
    y = np.array([0.0, 1.5, 3.0, 3.0, 4.2, 5.0])
    with jax.enable_x64(True):
        g = np.asarray(jax.grad(losses.cosent_loss)(jnp.asarray(q), jnp.asarray(p), jnp.asarray(y), temperature=0.1))
    eps, fd = 1e-6, np.zeros_like(q)
    for idx in np.ndindex(q.shape):
        d = np.zeros_like(q)
        d[idx] = eps
        fd[idx] = (ref_cosent(q + d, p, y, 0.1) - ref_cosent(q - d, p, y, 0.1)) / (2 * eps)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-9)


# ---------------------------------------------------------------- sharded global batch

def test_jit_over_sharded_batch_equals_unsharded():
    """Batch over a 1-D mesh of the 8 CPU devices: each device holds 2 rows, yet every row's
    denominator must see all 16 positives (XLA gathers them), so the value equals the global loss.
    The temperature is a traced argument, as a learnable one would be."""
    devices = jax.devices()
    assert len(devices) == 8
    mesh = Mesh(np.asarray(devices), ("data",))
    q, p, n, nmask, qid, pid = make_case("k3_masked", 5, b=16, d=24)
    _, _, _, _, _, pid = make_case("same_targets", 5, b=16, d=24)
    rows = lambda nd: NamedSharding(mesh, P("data", *([None] * (nd - 1))))
    args = (q, p, n, nmask, qid, pid)
    sharded = [jax.device_put(x, rows(x.ndim)) for x in args]
    assert sharded[0].sharding.spec == P("data", None)
    assert len(sharded[0].addressable_shards) == 8 and sharded[0].addressable_shards[0].data.shape == (2, 24)

    def fn(q, p, n, nmask, qid, pid, tau):
        return losses.nce_loss_and_metrics(q, p, n, temperature=tau, query_ids=qid, positive_ids=pid,
                                           negatives_mask=nmask, hard_negative_alpha=5.0)

    tau = jnp.float32(0.05)
    # One program per placement: value, metrics and gradients (q, p, n and the temperature).
    grad_fn = jax.jit(jax.value_and_grad(fn, argnums=(0, 1, 2, 6), has_aux=True))
    (loss_s, m_s), g_s = grad_fn(*sharded, tau)
    (loss_u, m_u), g_u = grad_fn(*jax.device_put(args, jax.devices()[0]), tau)  # same, one device
    assert not g_s[0].sharding.is_fully_replicated
    np.testing.assert_allclose(float(loss_s), float(loss_u), rtol=1e-6)
    np.testing.assert_allclose(float(loss_s), ref_nce(q, p, n, nmask, qid, pid, tau=0.05, alpha=5.0), rtol=RTOL)
    for key in m_u:
        np.testing.assert_allclose(float(m_s[key]), float(m_u[key]), rtol=1e-6, err_msg=key)
    for a, b in zip(g_s, g_u):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-6 * np.abs(b).max())
    # A per-shard loss (each device's 2 rows as the whole batch) would be much smaller.
    local = np.mean([ref_nce(q[i:i + 2], p[i:i + 2], n[i:i + 2], nmask[i:i + 2], qid[i:i + 2], pid[i:i + 2],
                             tau=0.05, alpha=5.0) for i in range(0, 16, 2)])
    assert float(loss_s) > local + 0.5
