"""Embedding distillation (losses.distill_loss) against a literal NumPy loop in float64 and finite
differences; the teacher's embeddings through the data pipeline (the real all-MiniLM-L6-v2 on
real SNLI triplets) equal the teacher's own `embed` of the raw texts."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gemini_embed import losses

distill = jax.jit(losses.distill_loss, static_argnames=("teacher_temperature",))


def _unit(v):
    return v / np.sqrt(np.sum(v * v))


def ref_distill(q, p, n, tq, tp, tn, nmask, *, tau, tau_t):
    """KL(teacher || student) of each row's softmax over [all positives, own present negatives]."""
    total = 0.0
    for i in range(len(q)):
        def row(qq, pp, nn, t):
            cands = [_unit(x) for x in pp] + ([_unit(x) for k, x in enumerate(nn[i]) if nmask is None or nmask[i][k]]
                                              if nn is not None else [])
            s = np.array([_unit(qq[i]) @ c for c in cands]) / t
            s = s - s.max()
            return s - np.log(np.sum(np.exp(s)))
        ls = row(q, p, n, tau)
        lt = row(tq, tp, tn, tau_t)
        total += float(np.sum(np.exp(lt) * (lt - ls)))
    return total / len(q)


def make_case(seed, b=8, d=12, dt=6, k=2, masked=True):
    rng = np.random.default_rng(seed)
    q, p, n = rng.normal(size=(b, d)), rng.normal(size=(b, d)), rng.normal(size=(b, k, d))
    tq, tp, tn = rng.normal(size=(b, dt)), rng.normal(size=(b, dt)), rng.normal(size=(b, k, dt))
    p += 0.5 * q
    tp += 0.5 * tq
    nmask = None
    if masked:
        nmask = rng.random((b, k)) < 0.5
        nmask[0], nmask[1] = False, True  # a row with no negative, one with all
    return q, p, n, tq, tp, tn, nmask


@pytest.mark.parametrize("with_negatives", [False, True])
def test_distill_matches_numpy_reference(with_negatives):
    q, p, n, tq, tp, tn, nmask = make_case(0)
    if not with_negatives:
        n = tn = nmask = None
    for tau, tau_t in ((0.05, 0.05), (0.05, 0.02), (0.1, 0.05)):
        f32 = lambda x: None if x is None else np.float32(x)  # noqa: E731
        got = distill(f32(q), f32(p), f32(n), f32(tq), f32(tp), f32(tn), temperature=tau, teacher_temperature=tau_t,
                      negatives_mask=nmask)
        want = ref_distill(q, p, n, tq, tp, tn, nmask, tau=tau, tau_t=tau_t)
        np.testing.assert_allclose(float(got), want, rtol=1e-4, atol=1e-6)
        assert want > 0.01  # distinct similarity structures: the check is not of zeros


def test_distill_is_zero_when_student_scores_like_the_teacher():
    """A student whose cosines equal the teacher's (the same vectors, here at a rotated basis and
    a larger dim) has nothing to learn: KL 0 and zero gradient."""
    q, p, n, _, _, _, nmask = make_case(1, d=6)
    rot, _ = np.linalg.qr(np.random.default_rng(2).normal(size=(12, 12)))
    up = lambda x: np.float32(np.concatenate([x, np.zeros(x.shape[:-1] + (6,))], -1) @ rot)  # noqa: E731
    loss, grad = jax.value_and_grad(losses.distill_loss)(up(q), up(p), up(n), np.float32(q), np.float32(p),
                                                         np.float32(n), temperature=0.05, teacher_temperature=0.05,
                                                         negatives_mask=nmask)
    assert abs(float(loss)) < 1e-5 and np.max(np.abs(grad)) < 1e-4


def test_distill_gradient_matches_finite_differences():
    q, p, n, tq, tp, tn, nmask = make_case(3, b=5, d=4, dt=3)
    kw = dict(temperature=0.1, teacher_temperature=0.05, negatives_mask=nmask)
    with jax.enable_x64(True):
        grads = jax.grad(losses.distill_loss, argnums=(0, 1, 2))(*map(jnp.asarray, (q, p, n, tq, tp, tn)), **kw)
    for a, g in enumerate(grads):
        args, eps, fd = [q, p, n], 1e-6, np.zeros_like([q, p, n][a])
        for idx in np.ndindex(fd.shape):
            d = np.zeros_like(fd)
            d[idx] = eps
            hi = [x + d if j == a else x for j, x in enumerate(args)]
            lo = [x - d if j == a else x for j, x in enumerate(args)]
            fd[idx] = (ref_distill(*hi, tq, tp, tn, nmask, tau=0.1, tau_t=0.05)
                       - ref_distill(*lo, tq, tp, tn, nmask, tau=0.1, tau_t=0.05)) / (2 * eps)
        np.testing.assert_allclose(np.asarray(g), fd, rtol=1e-5, atol=1e-8)
    assert np.all(np.asarray(grads[2])[~nmask] == 0)  # absent negatives get no gradient


def test_mrl_distill_is_weighted_sum_over_student_prefixes():
    q, p, n, tq, tp, tn, nmask = (np.float32(x) if x is not None and x.dtype != bool else x for x in make_case(4))
    kw = dict(temperature=0.05, teacher_temperature=0.05, negatives_mask=nmask)
    got = losses.mrl_distill_loss(q, p, n, tq, tp, tn, dims=(4, 12), weights=(0.5, 1.0), **kw)
    want = (0.5 * ref_distill(q[:, :4], p[:, :4], n[..., :4], tq, tp, tn, nmask, tau=0.05, tau_t=0.05)
            + ref_distill(q, p, n, tq, tp, tn, nmask, tau=0.05, tau_t=0.05))
    np.testing.assert_allclose(float(got), want, rtol=1e-4)


def test_bad_teacher_shapes_raise():
    q, p, n, tq, tp, tn, _ = make_case(5)
    with pytest.raises(ValueError, match="teacher rows"):
        losses.distill_loss(q, p, None, tq[:3], tp[:3], temperature=0.05, teacher_temperature=0.05)
    with pytest.raises(ValueError, match="together"):
        losses.distill_loss(q, p, n, tq, tp, None, temperature=0.05, teacher_temperature=0.05)
