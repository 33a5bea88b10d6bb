"""Tests of the learned masks: straight-through gradients, hard concrete and its L0 penalty."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hadamard_jax import bernoulli_ste, hard_concrete, l0_penalty, ste_mask, topk_mask
from tests.utils import (
    assert_tree_allclose,
    check_grads,
    normal,
    only_arguments_saved,
    saved_residuals,
)

KEY = jax.random.key(0)
BETA, GAMMA, ZETA = 2.0 / 3.0, -0.1, 1.1


def _sigmoid_grad(a):
    return jax.nn.sigmoid(a) * jax.nn.sigmoid(-a)


# --- ste_mask ------------------------------------------------------------------------------------


def test_ste_mask_forward_values():
    s = normal(0, (4, 5))
    for k in (0, 3, 20):
        out = ste_mask(s, k=k)
        assert out.dtype == s.dtype and out.shape == s.shape and int(out.sum()) == k
        np.testing.assert_array_equal(out, topk_mask(s, k).astype(jnp.float32))
    np.testing.assert_array_equal(ste_mask(s, fraction=0.25), topk_mask(s, 5))
    np.testing.assert_array_equal(ste_mask(s, threshold=0.1), np.asarray(s) > 0.1)
    np.testing.assert_array_equal(ste_mask(s, threshold=jnp.array(0.1)), np.asarray(s) > 0.1)
    sb = s.astype(jnp.bfloat16)
    assert ste_mask(sb, k=7).dtype == jnp.bfloat16 and int(ste_mask(sb, k=7).sum()) == 7
    ties = jnp.array([1.0, 2.0, 2.0, 2.0])
    np.testing.assert_array_equal(ste_mask(ties, k=2), [0, 1, 1, 0])


@pytest.mark.parametrize(
    "rule", [{"k": 6}, {"fraction": 0.5}, {"threshold": 0.0}], ids=lambda r: next(iter(r))
)
def test_ste_mask_gradient_is_straight_through(rule):
    s, w, g = normal(1, (3, 4)), normal(2, (3, 4)), normal(3, (3, 4))
    loss = lambda s: jnp.sum(g * (w * ste_mask(s, **rule)))  # noqa: E731
    # edge-popup / movement pruning: dL/ds = dL/d(w*m) * w.
    np.testing.assert_allclose(jax.grad(loss)(s), g * w, rtol=1e-6)
    t = normal(9, (3, 4))
    _, tangent = jax.jvp(lambda s: ste_mask(s, **rule), (s,), (t,))
    np.testing.assert_array_equal(tangent, t)
    jac = jax.jacrev(lambda s: ste_mask(s, **rule))(s)
    np.testing.assert_array_equal(jac.reshape(12, 12), np.eye(12))


def test_ste_mask_saves_nothing_bf16_and_threshold_no_grad(capsys):
    s = normal(0, (6,))
    assert saved_residuals(capsys, lambda s: jnp.sum(ste_mask(s, k=2)), s) == []
    sb = s.astype(jnp.bfloat16)
    g = jax.grad(lambda s: jnp.sum(ste_mask(s, k=2)).astype(jnp.float32))(sb)
    assert g.dtype == jnp.bfloat16
    gt = jax.grad(lambda t: jnp.sum(ste_mask(s, threshold=t)))(0.3)
    assert gt == 0.0


def test_ste_mask_jit_vmap():
    s = normal(0, (4, 6))
    out = jax.jit(jax.vmap(lambda s: ste_mask(s, k=2)))(s)
    np.testing.assert_array_equal(out, topk_mask(s, 2, axis=1))
    thr = jax.jit(jax.vmap(lambda s, t: ste_mask(s, threshold=t)))(s, jnp.arange(4.0) - 1)
    np.testing.assert_array_equal(thr, np.asarray(s) > (np.arange(4.0) - 1)[:, None])
    g = jax.vmap(jax.grad(lambda s: jnp.sum(jnp.arange(6.0) * ste_mask(s, fraction=0.5))))(s)
    np.testing.assert_array_equal(g, np.broadcast_to(np.arange(6.0), (4, 6)))


def test_ste_mask_errors():
    s = jnp.ones(8)
    with pytest.raises(
        ValueError, match=r"exactly one of k, fraction, sparsity or threshold.*k=None"
    ):
        ste_mask(s)
    with pytest.raises(ValueError, match=r"exactly one.*k=2, fraction=0.5"):
        ste_mask(s, k=2, fraction=0.5)
    with pytest.raises(ValueError, match=r"ste_mask: k must be in \[0, 8\], got k=9"):
        ste_mask(s, k=9)
    with pytest.raises(ValueError, match=r"fraction must be in \[0, 1\], got fraction=1.2"):
        ste_mask(s, fraction=1.2)
    with pytest.raises(ValueError, match="threshold must be a scalar"):
        ste_mask(s, threshold=jnp.zeros(2))
    with pytest.raises(TypeError, match="scores must be a real floating array"):
        ste_mask(jnp.ones(8, jnp.int32), k=1)
    with pytest.raises(TypeError, match="k must be a static"):
        jax.jit(lambda k: ste_mask(s, k=k))(2)


# --- bernoulli_ste -----------------------------------------------------------------------------


def test_bernoulli_ste_sample_and_gradient():
    logits = jnp.array([-jnp.inf, -1e4, -3.0, -0.5, 0.0, 0.7, 4.0, 1e4, jnp.inf])
    out = bernoulli_ste(KEY, logits)
    np.testing.assert_array_equal(out, jax.random.bernoulli(KEY, jax.nn.sigmoid(logits)))
    assert out[0] == 0 and out[1] == 0 and out[-2] == 1 and out[-1] == 1
    ct = jnp.arange(1.0, 10.0)
    g = jax.grad(lambda l: jnp.sum(ct * bernoulli_ste(KEY, l)))(logits)
    assert np.isfinite(np.asarray(g)).all()
    np.testing.assert_allclose(g, ct * _sigmoid_grad(logits), rtol=1e-6, atol=0)
    _, t = jax.jvp(lambda l: bernoulli_ste(KEY, l), (logits,), (ct,))
    np.testing.assert_allclose(t, ct * _sigmoid_grad(logits), rtol=1e-6)


def test_bernoulli_ste_mean_saves_logits_bf16(capsys):
    logits = jnp.array([-2.0, 0.0, 1.0, 3.0])
    keys = jax.random.split(jax.random.key(1), 4000)
    samples = jax.jit(jax.vmap(lambda k: bernoulli_ste(k, logits)))(keys)
    p = jax.nn.sigmoid(logits)
    assert (np.abs(samples.mean(0) - p) < 5 * np.sqrt(p * (1 - p) / 4000)).all()
    lines = saved_residuals(capsys, lambda l: jnp.sum(bernoulli_ste(KEY, l)), logits)
    assert lines == ["f32[4] from the argument l"], lines
    lb = logits.astype(jnp.bfloat16)
    g = jax.grad(lambda l: jnp.sum(bernoulli_ste(KEY, l)).astype(jnp.float32))(lb + 8)
    assert g.dtype == jnp.bfloat16 and (np.asarray(g, np.float32) > 0).all()  # not s*(1-s)
    with pytest.raises(TypeError, match="logits must be a real floating"):
        bernoulli_ste(KEY, jnp.ones(2, jnp.int32))


def test_bernoulli_ste_check_grads_of_surrogate(x64):
    # The rule is linear: check_grads on the straight-through surrogate's mean path.
    logits = normal(0, (5,), jnp.float64)

    def f(l):
        sig = jax.nn.sigmoid(l)
        return sig + jax.lax.stop_gradient(bernoulli_ste(KEY, l) - sig)

    g_ours = jax.jacrev(lambda l: bernoulli_ste(KEY, l))(logits)
    np.testing.assert_allclose(g_ours, jax.jacrev(f)(logits), rtol=1e-12)
    h = jax.hessian(lambda l: jnp.sum(bernoulli_ste(KEY, l)))(logits)
    h_ref = jax.hessian(lambda l: jnp.sum(f(l)))(logits)
    np.testing.assert_allclose(h, h_ref, rtol=1e-10, atol=1e-14)


# --- hard concrete -----------------------------------------------------------------------------


def _u(key, shape, dtype=jnp.float32):
    eps = float(jnp.finfo(dtype).eps)
    return jnp.clip(jax.random.uniform(key, shape, dtype), eps, 1 - eps)


def _hard_concrete_ref(key, log_alpha):
    u = _u(key, log_alpha.shape, log_alpha.dtype)
    s = jax.nn.sigmoid((jnp.log(u) - jnp.log1p(-u) + log_alpha) / BETA)
    return jnp.clip(s * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def test_hard_concrete_values_and_gradient_against_formula():
    la = jnp.linspace(-4.0, 4.0, 64)
    z = hard_concrete(KEY, la)
    assert z.dtype == la.dtype and ((z >= 0) & (z <= 1)).all()
    assert (z == 0).any() and (z == 1).any() and ((z > 0) & (z < 1)).any()
    np.testing.assert_allclose(z, _hard_concrete_ref(KEY, la), rtol=1e-6, atol=1e-7)
    ct = normal(2, (64,))
    g = jax.grad(lambda l: jnp.sum(ct * hard_concrete(KEY, l)))(la)
    g_ref = jax.grad(lambda l: jnp.sum(ct * _hard_concrete_ref(KEY, l)))(la)
    np.testing.assert_allclose(g, g_ref, rtol=1e-5, atol=1e-7)
    assert (np.asarray(g)[(np.asarray(z) == 0) | (np.asarray(z) == 1)] == 0).all()
    _, t = jax.jvp(lambda l: hard_concrete(KEY, l), (la,), (ct,))
    np.testing.assert_allclose(t, g, rtol=1e-6, atol=1e-8)  # diagonal Jacobian


def test_hard_concrete_deterministic():
    la = jnp.array([-jnp.inf, -5.0, -1.0, 0.0, 0.5, 2.0, 5.0, jnp.inf])
    expected = np.clip(jax.nn.sigmoid(la) * (ZETA - GAMMA) + GAMMA, 0, 1)
    np.testing.assert_allclose(hard_concrete(None, la, deterministic=True), expected, rtol=1e-6)
    np.testing.assert_allclose(hard_concrete(KEY, la, deterministic=True), expected, rtol=1e-6)
    g = jax.grad(lambda l: jnp.sum(hard_concrete(None, l, deterministic=True)))(la)
    inside = (expected > 0) & (expected < 1)
    expected_g = np.where(inside, (ZETA - GAMMA) * _sigmoid_grad(la), 0)
    np.testing.assert_allclose(g, expected_g, rtol=1e-6)


def test_hard_concrete_check_grads(x64):
    la = jnp.linspace(-2.0, 2.0, 7, dtype=jnp.float64)  # inside the clip for the test-time gate
    check_grads(
        lambda l: hard_concrete(None, l, deterministic=True), (la,), order=2, modes=["fwd", "rev"]
    )
    # Sampled gate with a fixed key: a fixed function of log_alpha (flat where clipped; no
    # point of this key lies within the finite-difference step of a kink).
    z = np.asarray(hard_concrete(KEY, la))
    assert ((z > 0) & (z < 1)).sum() >= 3
    check_grads(lambda l: hard_concrete(KEY, l), (la,), order=1, modes=["fwd", "rev"])


def test_hard_concrete_finite_gradients_at_extremes(monkeypatch):
    la = jnp.array([-1e4, -30.0, 0.0, 30.0, 1e4, -jnp.inf, jnp.inf])
    keys = jax.random.split(jax.random.key(3), 64)
    grad = jax.grad(lambda k, l: jnp.sum(hard_concrete(k, l)), argnums=1)
    g = jax.vmap(grad, (0, None))(keys, la)
    assert np.isfinite(np.asarray(g)).all()
    # u exactly 0 and exactly 1 from the RNG (traced eagerly, so the patch is seen). Unclipped,
    # log(0) + inf = nan at log_alpha = +inf (and -inf + log(1/0) at u = 1).
    la = jnp.array([-jnp.inf, -2.0, 0.0, 3.0, jnp.inf])
    eps = float(jnp.finfo(jnp.float32).eps)
    for value in (0.0, 1.0):
        u = np.clip(np.float32(value), eps, 1 - eps)
        pre = jax.nn.sigmoid((np.log(u) - np.log1p(-u) + la) / BETA) * (ZETA - GAMMA) + GAMMA
        expected = np.clip(np.asarray(pre), 0, 1)

        def fake_uniform(key, shape, dtype, v=value):
            return jnp.full(shape, v, dtype)

        monkeypatch.setattr(jax.random, "uniform", fake_uniform)
        with jax.disable_jit():
            z = hard_concrete(KEY, la)
            g = jax.grad(lambda l: jnp.sum(jnp.arange(5.0) * hard_concrete(KEY, l)))(la)
        monkeypatch.undo()
        np.testing.assert_array_equal(z, expected)
        assert np.isfinite(np.asarray(g)).all()


def test_hard_concrete_saves_key_and_log_alpha_bf16_jit_vmap(capsys):
    la = normal(0, (5,))
    f = jax.jit(lambda k, l: jnp.sum(hard_concrete(k, l) * 2.0))
    lines = saved_residuals(capsys, f, KEY, la)
    assert lines == ["key<fry>[] from the argument k", "f32[5] from the argument l"], lines
    assert only_arguments_saved(lines)
    lb = la.astype(jnp.bfloat16)
    z = hard_concrete(KEY, lb)
    g = jax.grad(lambda l: jnp.sum(hard_concrete(KEY, l)).astype(jnp.float32))(lb)
    assert z.dtype == g.dtype == jnp.bfloat16
    keys = jax.random.split(KEY, 3)
    batched = jax.jit(jax.vmap(lambda k: hard_concrete(k, la)))(keys)
    for i in range(3):
        ref = _hard_concrete_ref(keys[i], la)
        np.testing.assert_allclose(batched[i], ref, rtol=1e-6, atol=1e-7)
    vg = jax.jit(jax.vmap(jax.grad(lambda l, k: jnp.sum(hard_concrete(k, l))), (None, 0)))(la, keys)
    for i in range(3):
        ref = jax.grad(lambda l: jnp.sum(_hard_concrete_ref(keys[i], l)))(la)  # noqa: B023 (called in the loop)
        np.testing.assert_allclose(vg[i], ref, rtol=1e-5, atol=1e-7)
    det = jax.jit(jax.vmap(lambda l: hard_concrete(None, l, deterministic=True)))(la[:, None])
    np.testing.assert_allclose(det[:, 0], hard_concrete(None, la, deterministic=True))


# --- l0_penalty --------------------------------------------------------------------------------


def test_l0_penalty_matches_monte_carlo():
    la = jnp.array([-3.0, -1.0, 0.0, 1.5, 4.0])
    n = 20000
    z = jax.jit(lambda k: hard_concrete(k, jnp.broadcast_to(la, (n, 5))))(jax.random.key(7))
    freq = np.asarray((z > 0).mean(axis=0))
    p = np.asarray(jax.nn.sigmoid(la - BETA * math.log(-GAMMA / ZETA)))
    assert (np.abs(freq - p) < 5 * np.sqrt(p * (1 - p) / n) + 1e-3).all(), (freq, p)
    np.testing.assert_allclose(l0_penalty(la), p.sum(), rtol=1e-6)
    mc_total = float((z > 0).sum(axis=1).mean())
    assert abs(mc_total - float(l0_penalty(la))) < 0.03


def test_l0_penalty_gradients(x64, capsys):
    la = normal(0, (6,), jnp.float64)
    check_grads(l0_penalty, (la,), order=2, modes=["fwd", "rev"])
    plain = lambda l: jnp.sum(jax.nn.sigmoid(l - 1.5 * math.log(0.1 / 1.3)))  # noqa: E731
    ours = lambda l: l0_penalty(l, beta=1.5, gamma=-0.1, zeta=1.3)  # noqa: E731
    np.testing.assert_allclose(ours(la), plain(la), rtol=1e-12)
    assert_tree_allclose(jax.grad(ours)(la), jax.grad(plain)(la), rtol=1e-12, atol=1e-15)
    assert_tree_allclose(jax.hessian(ours)(la), jax.hessian(plain)(la), rtol=1e-10, atol=1e-15)
    lines = saved_residuals(capsys, jax.jit(lambda l: l0_penalty(l) * 2.0), la)
    assert lines == ["f64[6] from the argument l"], lines


def test_l0_penalty_bf16_extremes_jit_vmap():
    la = jnp.array([-1e4, 0.0, 20.0, 1e4], jnp.bfloat16)
    v, g = jax.value_and_grad(lambda l: l0_penalty(l).astype(jnp.float32))(la)
    assert g.dtype == jnp.bfloat16 and np.isfinite(np.asarray(g, np.float32)).all()
    assert float(g[2]) > 0  # sigmoid(x)sigmoid(-x), not s(1-s), which is 0 in bf16 here
    batch = normal(0, (3, 4))
    np.testing.assert_allclose(
        jax.jit(jax.vmap(l0_penalty))(batch), [float(l0_penalty(b)) for b in batch], rtol=1e-6
    )


def test_hard_concrete_and_l0_errors():
    la = jnp.zeros(3)
    for name, bad in (("beta", 0.0), ("gamma", 0.1), ("zeta", 1.0), ("beta", float("nan"))):
        with pytest.raises(ValueError, match=rf"hard_concrete: {name} must be .*got {name}="):
            hard_concrete(KEY, la, **{name: bad})
        with pytest.raises(ValueError, match=rf"l0_penalty: {name} must be"):
            l0_penalty(la, **{name: bad})
    with pytest.raises(TypeError, match="key is required"):
        hard_concrete(None, la)
    with pytest.raises(TypeError, match="deterministic must be a static bool"):
        hard_concrete(KEY, la, deterministic=jnp.array(True))
    with pytest.raises(TypeError, match="log_alpha must be a real floating"):
        l0_penalty(jnp.zeros(3, jnp.int32))
    with pytest.raises(TypeError, match="beta must be a static"):
        jax.jit(lambda b: l0_penalty(la, beta=b))(0.5)


# --- every rule under the other transforms -------------------------------------------------------

_OPS = {
    "ste_mask": lambda l: ste_mask(l, fraction=0.5),
    "bernoulli_ste": lambda l: bernoulli_ste(KEY, l),
    "hard_concrete": lambda l: hard_concrete(KEY, l),
    "hard_concrete_det": lambda l: hard_concrete(None, l, deterministic=True),
    "l0_penalty": lambda l: l0_penalty(l) * jnp.ones(1),
}


@pytest.mark.parametrize("name", _OPS)
def test_forward_reverse_checkpoint_scan_agree(name):
    op = _OPS[name]
    la = normal(4, (6,))
    fwd, rev = jax.jit(jax.jacfwd(op))(la), jax.jit(jax.jacrev(op))(la)
    np.testing.assert_allclose(fwd, rev, rtol=1e-6, atol=1e-7)
    loss = lambda l: jnp.sum(jnp.sin(op(l)))  # noqa: E731
    g = jax.grad(loss)(la)
    np.testing.assert_allclose(jax.grad(jax.checkpoint(loss))(la), g, rtol=1e-6, atol=1e-7)

    def scanned(l):
        out, _ = jax.lax.scan(lambda c, _: (c + jnp.sum(op(l)), None), 0.0, None, length=3)
        return out

    once = jax.grad(lambda l: jnp.sum(op(l)))(la)
    np.testing.assert_allclose(jax.jit(jax.grad(scanned))(la), 3 * once, rtol=1e-6, atol=1e-6)
