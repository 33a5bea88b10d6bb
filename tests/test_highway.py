"""Tests of the highway gate ``gate * transform + (1 - gate) * carry``."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hadamard_jax import highway
from tests.utils import (
    assert_tree_allclose,
    check_grads,
    normal,
    only_arguments_saved,
    saved_residuals,
    uniform,
)


def _plain(t, g, c):
    return g * t + (1 - g) * c


def _args(shape=(3, 4), dtype=jnp.float32, gate_shape=None):
    return (
        normal(1, shape, dtype),
        uniform(2, gate_shape or shape, dtype=dtype),
        normal(3, shape, dtype),
    )


def test_values_match_plain_composition():
    args = _args()
    out = jax.jit(highway)(*args)
    assert out.dtype == jnp.float32 and out.shape == (3, 4)
    np.testing.assert_array_equal(out, jax.jit(_plain)(*args))
    t, g, c = args
    np.testing.assert_array_equal(highway(t, jnp.ones_like(g), c), t)  # gate 1: the transform
    np.testing.assert_array_equal(highway(t, jnp.zeros_like(g), c), c)  # gate 0: the carry


def test_dtypes():
    t, g, c = _args(dtype=jnp.bfloat16)
    assert highway(t, g, c).dtype == jnp.bfloat16
    half = [x.astype(jnp.float16) for x in (t, g, c)]
    assert highway(*half).dtype == jnp.float16
    assert highway(t, g, c.astype(jnp.float32)).dtype == jnp.float32
    assert highway(t, 0.5, c, broadcast=True).dtype == jnp.bfloat16  # weakly typed scalar
    # Integers and booleans promote to float.
    i = jnp.array([1, 2, 3], jnp.int32)
    m = jnp.array([True, False, True])
    out = highway(i, m, -i)
    assert out.dtype == jnp.float32
    np.testing.assert_array_equal(out, np.array([1.0, -2.0, 3.0], np.float32))
    x = jnp.ones(3)
    _, vjp = jax.vjp(highway, x, m, i)
    ct_x, ct_m, ct_i = vjp(jnp.ones(3))
    assert ct_m.dtype == jax.dtypes.float0 and ct_i.dtype == jax.dtypes.float0
    np.testing.assert_array_equal(ct_x, m.astype(jnp.float32))


# --- errors ------------------------------------------------------------------------------------


def test_errors():
    match = r"transform\.shape=\(2, 3\).*gate\.shape=\(3,\).*broadcast=True"
    with pytest.raises(ValueError, match=match):
        highway(jnp.ones((2, 3)), jnp.ones((3,)), jnp.ones((2, 3)))
    with pytest.raises(ValueError, match=r"transform\.shape=\(2, 3\).*carry\.shape=\(3, 2\)"):
        highway(jnp.ones((2, 3)), jnp.ones((2, 3)), jnp.ones((3, 2)))
    with pytest.raises(ValueError, match=r"do not broadcast.*\(2, 3\).*\(4,\)"):
        highway(jnp.ones((2, 3)), jnp.ones((4,)), jnp.ones((2, 3)), broadcast=True)
    with pytest.raises(ValueError, match="equal shapes"):  # at trace time, under jit
        jax.jit(highway).lower(jnp.ones(2), jnp.ones(3), jnp.ones(2))
    for bad in (None, "abc", object()):
        with pytest.raises(TypeError, match="highway: argument 'carry'"):
            highway(jnp.ones(2), jnp.ones(2), bad)
    with pytest.raises(TypeError, match="argument 'gate' has complex dtype"):
        highway(jnp.ones(2), jnp.ones(2, jnp.complex64), jnp.ones(2))
    with pytest.raises(TypeError, match="broadcast must be a static bool"):
        highway(jnp.ones(2), jnp.ones(2), jnp.ones(2), broadcast="no")


# --- derivatives -------------------------------------------------------------------------------


def test_check_grads(x64):
    args = _args((2, 3), jnp.float64)
    check_grads(highway, args, order=2, modes=["fwd", "rev"])
    t, g, c = _args((2, 3), jnp.float64, gate_shape=(3,))
    check_grads(
        lambda t, g, c: highway(t, g, c, broadcast=True), (t, g, c), order=2, modes=["fwd", "rev"]
    )


TRANSFORMS = {
    "grad": lambda f: jax.grad(lambda *xs: jnp.sum(jnp.sin(f(*xs))), argnums=(0, 1, 2)),
    "value_and_grad": lambda f: jax.value_and_grad(lambda *xs: jnp.sum(f(*xs) ** 2), argnums=1),
    "jvp": lambda f: lambda *xs: jax.jvp(f, xs, tuple(jnp.cos(x) for x in xs)),
    "jacfwd": lambda f: jax.jacfwd(f, argnums=(0, 1, 2)),
    "jacrev": lambda f: jax.jacrev(f, argnums=(0, 1, 2)),
    "hessian": lambda f: jax.hessian(lambda *xs: jnp.sum(jnp.sin(f(*xs))), argnums=(0, 1, 2)),
    "hvp_fwd_over_rev": lambda f: (
        lambda *xs: jax.jvp(
            jax.grad(lambda *ys: jnp.sum(jnp.tanh(f(*ys))), argnums=(0, 1, 2)),
            xs,
            tuple(jnp.ones_like(x) for x in xs),
        )
    ),
    "checkpoint": lambda f: jax.grad(
        lambda *xs: jnp.sum(jax.checkpoint(f)(*xs) ** 2), argnums=(0, 1, 2)
    ),
    "vmap": lambda f: jax.vmap(f),
    "vmap_in_axes_single": lambda f: lambda t, g, c: jax.vmap(f, in_axes=(0, None, 0))(t, g[0], c),
    "vmap_of_grad": lambda f: jax.vmap(jax.grad(lambda *xs: jnp.sum(f(*xs)), argnums=(0, 1, 2))),
    "scan": lambda f: (
        lambda t, g, c: jax.grad(
            lambda c, g: jnp.sum(
                jax.lax.scan(lambda c, _: (f(jnp.tanh(c), g, c), None), c, None, length=3)[0]
            ),
            argnums=(0, 1),
        )(c, g)
    ),
}


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_transforms_agree_with_plain_composition(transform):
    args = _args((2, 3))
    ours = jax.jit(TRANSFORMS[transform](highway))(*args)
    plain = jax.jit(TRANSFORMS[transform](_plain))(*args)
    assert_tree_allclose(ours, plain, rtol=2e-6, atol=2e-6)


def test_broadcast_gradients_come_back_in_input_shapes():
    t, g, c = _args((4, 3), gate_shape=(3,))
    c = c[:1]
    loss = lambda f: lambda *xs: jnp.sum(jnp.sin(f(*xs)))  # noqa: E731
    ours = jax.grad(loss(lambda *xs: highway(*xs, broadcast=True)), argnums=(0, 1, 2))(t, g, c)
    with jax.numpy_rank_promotion("allow"):  # the reference broadcasts implicitly
        ref = jax.grad(loss(_plain), argnums=(0, 1, 2))(t, g, c)
    assert [x.shape for x in ours] == [(4, 3), (3,), (1, 3)]
    assert_tree_allclose(ours, ref, rtol=1e-5, atol=1e-6)


def test_large_values_and_bf16():
    t = jnp.array([1e4, -1e4, 3.0, 0.0], jnp.float32)
    g = jnp.array([0.0, 1.0, 0.25, 0.5], jnp.float32)
    c = jnp.array([-1e4, 1e4, -5.0, 2.0], jnp.float32)
    dt, dg, dc = jax.grad(lambda *xs: jnp.sum(highway(*xs)), argnums=(0, 1, 2))(t, g, c)
    np.testing.assert_array_equal(dt, g)
    np.testing.assert_array_equal(dg, t - c)
    np.testing.assert_array_equal(dc, 1 - g)
    # bf16 in, bf16 out and bf16 gradients, within one bf16 rounding of the float64 values.
    tb, gb, cb = (x.astype(jnp.bfloat16) for x in _args((16,)))
    out = highway(tb, gb, cb)
    loss = lambda *xs: jnp.sum(highway(*xs).astype(jnp.float32))  # noqa: E731
    grads = jax.grad(loss, argnums=(0, 1, 2))(tb, gb, cb)
    t64, g64, c64 = (np.asarray(x, np.float64) for x in (tb, gb, cb))
    for o, r in zip((out, *grads), (g64 * t64 + (1 - g64) * c64, g64, t64 - c64, 1 - g64)):
        assert o.dtype == jnp.bfloat16
        np.testing.assert_allclose(np.asarray(o, np.float32), r, rtol=2**-8, atol=1e-6)


def test_bf16_gradients_in_input_dtype_inside_scan():
    t, g, c = _args((4,), jnp.bfloat16)

    def loss(g, c):
        body = lambda c, _: (highway(jnp.tanh(c), g, c), None)  # noqa: E731
        return jax.lax.scan(body, c, None, length=2)[0].astype(jnp.float32).sum()

    grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(g, c)
    assert all(x.dtype == jnp.bfloat16 for x in grads)


# --- saved residuals ---------------------------------------------------------------------------


def test_saved_residuals_are_the_inputs(capsys):
    args = _args((16,))
    lines = saved_residuals(capsys, lambda *xs: jnp.sum(highway(*xs)), *args)
    assert only_arguments_saved(lines) and len(lines) == 3, lines
    plain = saved_residuals(capsys, lambda *xs: jnp.sum(_plain(*xs)), *args)
    assert len(plain) > 3 and not only_arguments_saved(plain), plain  # also keeps 1 - gate
    t, g, c = _args((16,), jnp.bfloat16, gate_shape=(1,))
    lines = saved_residuals(capsys, lambda *xs: jnp.sum(highway(*xs, broadcast=True)), t, g, c)
    assert only_arguments_saved(lines) and len(lines) == 3, lines
    assert all("bf16" in x for x in lines), lines


# --- properties --------------------------------------------------------------------------------


@given(
    shape=st.lists(st.integers(0, 4), min_size=0, max_size=3).map(tuple),
    ones=st.lists(st.booleans(), min_size=3, max_size=3),
    seed=st.integers(0, 2**16),
)
def test_highway_matches_numpy(shape, ones, seed):
    # The gate broadcasts over the axes flagged in `ones` (length 1 there).
    gate_shape = tuple(1 if flag else n for n, flag in zip(shape, ones))
    rng = np.random.default_rng(seed)
    t = rng.normal(size=shape).astype(np.float32)
    g = rng.uniform(size=gate_shape).astype(np.float32)
    c = rng.normal(size=shape).astype(np.float32)
    out = highway(t, g, c, broadcast=True)
    assert out.shape == shape
    t64, g64, c64 = t.astype(np.float64), g.astype(np.float64), c.astype(np.float64)
    np.testing.assert_allclose(out, g64 * t64 + (1 - g64) * c64, rtol=1e-5, atol=1e-6)
    dg = jax.grad(lambda g: jnp.sum(highway(t, g, c, broadcast=True)))(g)
    assert dg.shape == gate_shape
    axes = tuple(i for i, (a, b) in enumerate(zip(gate_shape, shape)) if a != b)
    expected = np.sum(t64 - c64, axis=axes, keepdims=True)
    np.testing.assert_allclose(dg, expected, rtol=1e-5, atol=1e-5)
