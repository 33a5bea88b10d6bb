"""Tests of the fused gated MLP block: values, derivatives, residuals, dtypes and errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hadamard_jax import gated_mlp
from hadamard_jax._src.gates import GATES
from tests.test_glu import PLAIN, PLAIN_VALUE
from tests.utils import (
    assert_tree_allclose,
    bernoulli,
    check_grads,
    normal,
    only_arguments_saved,
    saved_residuals,
    uniform,
)


def _gate_fn(name):
    act, value = PLAIN[name], PLAIN_VALUE.get(name, lambda v: v)
    return lambda g, u: act(g) * value(u)


# Every gate of the gate table as the plain (g, u) -> h composition.
ACTS = {name: _gate_fn(name) for name in GATES}


def _args(d=4, h=6, o=3, batch=(2, 5), dtype=jnp.float32, seed=0):
    s = 10 * seed
    return (
        normal(s, (*batch, d), dtype),
        normal(s + 1, (d, h), dtype, 0.5),
        normal(s + 2, (d, h), dtype, 0.5),
        normal(s + 3, (h, o), dtype, 0.5),
        normal(s + 4, (h,), dtype),
        normal(s + 5, (h,), dtype),
        normal(s + 6, (o,), dtype),
    )


def _bias(b, ndim):
    return b.reshape((1,) * (ndim - 1) + b.shape)


def plain(x, wg, wu, wd, bg=None, bu=None, bd=None, *, act=ACTS["swiglu"], mask=None, scale=1.0):
    """The reference composition with jax.nn, no custom rules."""
    g, u = x @ wg, x @ wu
    if bg is not None:
        g, u = g + _bias(bg, g.ndim), u + _bias(bu, u.ndim)
    h = act(g, u)
    if mask is not None:
        h = h * mask.astype(h.dtype)
    h = h * scale
    y = h @ wd
    return y if bd is None else y + _bias(bd, y.ndim)


def fused(x, wg, wu, wd, bg=None, bu=None, bd=None, **kw):
    return gated_mlp(x, wg, wu, wd, b_gate=bg, b_up=bu, b_down=bd, **kw)


# --- values ------------------------------------------------------------------------------------


@pytest.mark.parametrize("activation", list(ACTS))
def test_matches_plain_composition(activation):
    args = _args()
    out = jax.jit(lambda *a: fused(*a, activation=activation))(*args)
    ref = plain(*args, act=ACTS[activation])
    assert out.shape == (2, 5, 3) and out.dtype == jnp.float32
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    # Without biases, and the tanh GELU.
    np.testing.assert_allclose(
        fused(*args[:4], activation=activation),
        plain(*args[:4], act=ACTS[activation]),
        rtol=1e-5,
        atol=1e-5,
    )
    approx = fused(*args, activation="geglu", approximate=True)
    np.testing.assert_allclose(
        approx, plain(*args, act=_gate_fn("geglu_tanh")), rtol=1e-5, atol=1e-5
    )


def test_hidden_mask_and_scale():
    args = _args()
    mask = bernoulli(3, 0.7, (2, 5, 6))
    out = fused(*args, hidden_mask=mask, hidden_scale=1 / 0.7)
    np.testing.assert_allclose(out, plain(*args, mask=mask, scale=1 / 0.7), rtol=1e-5, atol=1e-5)
    # A mask shared over an axis (size 1) broadcasts.
    shared = mask[:, :1]
    out = fused(*args, hidden_mask=shared)
    with jax.numpy_rank_promotion("allow"):
        ref = plain(*args, mask=jnp.broadcast_to(shared, mask.shape))
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    # No gradient through a boolean mask: float0 cotangent.
    g = jax.grad(lambda m: fused(*args, hidden_mask=m).sum(), allow_int=True)(mask)
    assert g.dtype == jax.dtypes.float0


# --- derivatives -------------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ["swiglu", "geglu", "glu", "quick_geglu", "clamped_swiglu"])
def test_check_grads_order_2(x64, activation):
    # Order 2 where it tests something order 1 does not: the fused rule's own second-order
    # structure (SwiGLU) and a clamped value (gpt-oss); each activation's second derivative is
    # checked at order 2 through the GLU rule (tests/test_glu.py), which shares gates.evaluate.
    order = 2 if activation in ("swiglu", "clamped_swiglu") else 1
    args = tuple(np.asarray(a, np.float64) for a in _args(d=3, h=4, o=2, batch=(2,)))
    check_grads(
        lambda *a: fused(*a, activation=activation), args, order=order, modes=["fwd", "rev"]
    )


def test_check_grads_float_mask(x64):
    args = tuple(np.asarray(a, np.float64) for a in _args(d=3, h=4, o=2, batch=(2,)))
    mask = np.asarray(uniform(5, (2, 4)), np.float64)
    check_grads(
        lambda m, *a: fused(*a, hidden_mask=m, hidden_scale=1.5),
        (mask, *args),
        order=2,
        modes=["fwd", "rev"],
    )


@pytest.mark.parametrize("activation", ["reglu", "bilinear", "geglu_tanh", "squared_reglu"])
def test_grads_match_plain_exactly(x64, activation):
    # relu has a kink, so compare with the plain composition rather than finite differences.
    args = tuple(np.asarray(a, np.float64) for a in _args(d=3, h=4, o=2, batch=(2,)))
    kw, act = {"activation": activation}, ACTS.get(activation)
    if activation == "geglu_tanh":
        kw, act = {"activation": "geglu", "approximate": True}, _gate_fn("geglu_tanh")
    f = lambda *a: jnp.sum(jnp.sin(fused(*a, **kw)))  # noqa: E731
    p = lambda *a: jnp.sum(jnp.sin(plain(*a, act=act)))  # noqa: E731
    with jax.numpy_rank_promotion("allow"):
        ref = jax.grad(p, argnums=tuple(range(7)))(*args)
    assert_tree_allclose(jax.grad(f, argnums=tuple(range(7)))(*args), ref, rtol=1e-12, atol=1e-12)


def _loss(fn):
    return lambda x, wg, wu, wd, bg, bu, bd: jnp.sum(jnp.tanh(fn(x, wg, wu, wd, bg, bu, bd)))


TRANSFORMS = {
    "grad": lambda f: jax.grad(_loss(f), argnums=tuple(range(7))),
    "jvp": lambda f: lambda *a: jax.jvp(f, a, tuple(jnp.cos(t) for t in a)),
    "jacfwd": lambda f: jax.jacfwd(lambda x, *r: f(x, *r).sum(-1), argnums=(0, 3)),
    "jacrev": lambda f: jax.jacrev(lambda x, *r: f(x, *r).sum(-1), argnums=(1, 6)),
    "hessian": lambda f: jax.hessian(lambda x, *r: _loss(f)(x, *r), argnums=0),
    "hvp_fwd_over_rev": lambda f: (
        lambda *a: jax.jvp(
            jax.grad(_loss(f), argnums=(0, 1)), a, tuple(jnp.ones_like(t) for t in a)
        )
    ),
    "checkpoint": lambda f: jax.grad(_loss(jax.checkpoint(f)), argnums=(0, 2)),
    "vmap": lambda f: jax.vmap(f, in_axes=(0, None, None, None, None, None, None)),
    "vmap_of_grad": lambda f: jax.vmap(
        jax.grad(_loss(f), argnums=(0, 1)), in_axes=(0, None, None, None, None, None, None)
    ),
    "scan": lambda f: jax.grad(
        lambda x, wg, wu, wd, bg, bu, bd: jnp.sum(
            jax.lax.scan(
                lambda c, _: (jnp.tanh(f(c, wg, wu, wd, bg, bu, bd)), None), x, None, length=3
            )[0]
        ),
        argnums=(0, 1, 3),
    ),
}


@pytest.mark.parametrize("name", TRANSFORMS)
def test_transforms_agree_with_plain_composition(name):
    args = _args(d=4, h=6, o=4, batch=(3,))
    ours = jax.jit(TRANSFORMS[name](fused))(*args)
    with jax.numpy_rank_promotion("allow"):
        ref = jax.jit(TRANSFORMS[name](plain))(*args)
    assert_tree_allclose(ours, ref, rtol=2e-5, atol=2e-5)


# --- what the backward pass keeps and recomputes --------------------------------------------


def test_saved_residuals_are_x_g_u(capsys):
    x, wg, wu, wd, bg, bu, bd = _args(d=8, h=16, o=8, batch=(4,))
    lines = saved_residuals(capsys, lambda *a: fused(*a).sum(), x, wg, wu, wd, bg, bu, bd)
    args = [line for line in lines if "from the argument" in line]
    others = [line for line in lines if "from the argument" not in line]
    # x and the three kernels; the biases are not needed for the backward pass.
    assert len(args) == 4, lines
    # g and u, both [4, 16]; nothing else (no act(g), no h).
    assert len(others) == 2 and all("f32[4,16]" in line for line in others), lines
    with jax.numpy_rank_promotion("allow"):
        plain_lines = saved_residuals(capsys, lambda *a: plain(*a).sum(), x, wg, wu, wd, bg, bu, bd)
    assert len(plain_lines) > len(lines), plain_lines
    # A boolean dropout mask is kept as it is (bool, not a float copy).
    mask = jnp.ones((4, 16), bool)
    lines = saved_residuals(capsys, lambda x, m: fused(x, wg, wu, wd, hidden_mask=m).sum(), x, mask)
    assert any("bool[4,16]" in line and "from the argument" in line for line in lines), lines
    assert not any("f32[4,16]" in line and "from the argument" in line for line in lines)
    # Without differentiating the weights only x, g, u (and the kernels x's cotangent needs).
    lines = saved_residuals(capsys, lambda x: fused(x, wg, wu, wd).sum(), x)
    assert only_arguments_saved([line for line in lines if "[4,8]" in line]), lines


def _count_dots(fn, *args):
    return str(jax.make_jaxpr(fn)(*args)).count("dot_general")


def test_no_matmul_recomputed():
    args = _args(d=8, h=16, o=8, batch=(4,))
    grad = lambda f: jax.grad(lambda *a: f(*a).sum(), argnums=tuple(range(7)))  # noqa: E731
    with jax.numpy_rank_promotion("allow"):
        n_plain = _count_dots(grad(plain), *args)
    # 3 forward matmuls + 6 in the backward pass, as the plain composition: the backward pass
    # recomputes h from g and u, not g and u from x.
    assert _count_dots(grad(fused), *args) == n_plain == 9


def test_scan_memory_below_plain():
    # Compiled temp memory of a scanned training step (deterministic for a given XLA).
    L, B, d, h = 4, 64, 32, 128
    P = (normal(0, (L, d, h)), normal(1, (L, d, h)), normal(2, (L, h, d)))
    x = normal(3, (B, d))

    def step(block):
        def loss(P, x):
            y, _ = jax.lax.scan(lambda x, p: (x + block(x, *p), None), x, P)
            return jnp.mean(y**2)

        return jax.jit(jax.value_and_grad(loss))

    def temp(block):
        return step(block).lower(P, x).compile().memory_analysis().temp_size_in_bytes

    ours = temp(lambda x, wg, wu, wd: fused(x, wg, wu, wd))
    ref = temp(lambda x, wg, wu, wd: plain(x, wg, wu, wd))
    remat = temp(
        jax.checkpoint(
            lambda x, wg, wu, wd: plain(x, wg, wu, wd), policy=jax.checkpoint_policies.dots_saveable
        )
    )
    assert ours < 0.6 * ref and ours <= remat, (ours, ref, remat)


# --- dtypes ------------------------------------------------------------------------------------


def test_bf16_outputs_and_cotangents_in_input_dtype():
    args32 = _args(d=8, h=16, o=8, batch=(4,))
    args = tuple(a.astype(jnp.bfloat16) for a in args32)
    out = fused(*args)
    assert out.dtype == jnp.bfloat16
    ref = plain(*(a.astype(jnp.float32) for a in args))
    np.testing.assert_allclose(np.asarray(out, np.float32), ref, rtol=5e-2, atol=5e-2)
    grads = jax.grad(lambda *a: fused(*a).astype(jnp.float32).sum(), argnums=tuple(range(7)))(*args)
    assert all(g.dtype == jnp.bfloat16 for g in grads)
    # Mixed: bf16 activations, f32 weights -> promoted to f32, cotangents in each input's dtype.
    mixed = (args[0],) + args32[1:]
    assert fused(*mixed).dtype == jnp.float32
    gx, gw = jax.grad(lambda x, w: fused(x, w, *mixed[2:]).sum(), argnums=(0, 1))(*mixed[:2])
    assert gx.dtype == jnp.bfloat16 and gw.dtype == jnp.float32
    # Inside scan (an f32 cotangent for a bf16 carry would fail here).
    x, wg, wu, wd = args[0], args[1], args[2], args[3]

    def loss(x):
        y, _ = jax.lax.scan(lambda c, _: (c + fused(c, wg, wu, wd), None), x, None, length=2)
        return y.astype(jnp.float32).sum()

    assert jax.jit(jax.grad(loss))(x).dtype == jnp.bfloat16


# --- errors ------------------------------------------------------------------------------------


def test_shape_errors():
    x, wg, wu, wd, bg, bu, bd = _args()
    with pytest.raises(ValueError, match=r"gated_mlp: w_gate.shape=\(5, 6\).*4 rows.*x.shape"):
        gated_mlp(x, jnp.ones((5, 6)), wu, wd)
    with pytest.raises(ValueError, match=r"w_up.shape=\(4, 7\) must equal w_gate.shape=\(4, 6\)"):
        gated_mlp(x, wg, jnp.ones((4, 7)), wd)
    with pytest.raises(ValueError, match=r"w_down.shape=\(5, 3\) must have 6 rows"):
        gated_mlp(x, wg, wu, jnp.ones((5, 3)))
    with pytest.raises(ValueError, match=r"w_gate must be a matrix"):
        gated_mlp(x, jnp.ones((4, 6, 1)), wu, wd)
    with pytest.raises(ValueError, match=r"b_gate.shape=\(5,\) must be \(6,\)"):
        gated_mlp(x, wg, wu, wd, b_gate=jnp.ones(5))
    with pytest.raises(ValueError, match=r"b_down.shape=\(6,\) must be \(3,\)"):
        gated_mlp(x, wg, wu, wd, b_down=jnp.ones(6))
    with pytest.raises(ValueError, match=r"hidden_mask.shape=\(6,\) must broadcast"):
        gated_mlp(x, wg, wu, wd, hidden_mask=jnp.ones(6, bool))
    with pytest.raises(ValueError, match="at least one axis"):
        gated_mlp(jnp.float32(1.0), wg, wu, wd)
    # At trace time, under jit.
    with pytest.raises(ValueError, match="w_up.shape"):
        jax.jit(gated_mlp).lower(x, wg, jnp.ones((4, 7)), wd)


def test_other_errors():
    x, wg, wu, wd, *_ = _args()
    with pytest.raises(ValueError, match="gated_mlp: unknown activation 'swish'"):
        gated_mlp(x, wg, wu, wd, activation="swish")
    with pytest.raises(ValueError, match=r"approximate=True applies to activation in \[.geglu.\]"):
        gated_mlp(x, wg, wu, wd, approximate=True)
    with pytest.raises(TypeError, match="floating-point"):
        gated_mlp(
            x.astype(jnp.int32), wg.astype(jnp.int32), wu.astype(jnp.int32), wd.astype(jnp.int32)
        )
    with pytest.raises(TypeError, match="argument 'w_down'"):
        gated_mlp(x, wg, wu, None)
    with pytest.raises(TypeError, match="hidden_scale must be a static Python number"):
        gated_mlp(x, wg, wu, wd, hidden_scale=jnp.float32(2.0))
