"""``linear_scan`` and ``log_linear_scan``: values, derivatives of every order, residuals, memory,
dtypes, errors, transforms, Variables, the sequence-sharded path on 8 CPU devices, mixed
shardings under Explicit mesh axes (with the RGLRU and MinGRU layers), an empty time axis and the
algorithm table."""

from __future__ import annotations

import functools

import hypothesis.extra.numpy as hnp
import jax
import jax.ad_checkpoint
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given
from hypothesis import strategies as st
from jax import lax

import hadamard_jax as hj
from hadamard_jax._src import linear_scan as ls
from hadamard_jax.bench import recurrence
from tests.utils import (
    assert_tree_allclose,
    check_grads,
    normal,
    saved_residuals,
    uniform,
)

# --- references ---------------------------------------------------------------------------------


def numpy_scan(a, b, h0=None, axis=0, reverse=False):
    """``h_t = a_t h_{t-1} + b_t`` by a Python loop, in float64/complex128."""
    a, b = np.broadcast_arrays(np.asarray(a), np.asarray(b))
    a, b = np.moveaxis(a, axis, 0), np.moveaxis(b, axis, 0)
    dtype = np.result_type(a, b, np.float64)
    h = (
        np.zeros(a.shape[1:], dtype)
        if h0 is None
        else np.broadcast_to(h0, a.shape[1:]).astype(dtype)
    )
    out = np.zeros(a.shape, dtype)
    for t in range(a.shape[0])[::-1] if reverse else range(a.shape[0]):
        h = a[t] * h + b[t]
        out[t] = h
    return np.moveaxis(out, 0, axis)


def lax_scan(a, b, h0=None, reverse=False):
    """The plain ``lax.scan`` recurrence over axis 0, differentiated by JAX (the reference)."""
    a, b = jnp.broadcast_arrays(a, b)
    h0 = jnp.zeros(b.shape[1:], b.dtype) if h0 is None else h0

    def step(h, x):
        h = x[0] * h + x[1]
        return h, h

    return lax.scan(step, h0, (a, b), reverse=reverse)[1]


def lax_log_scan(la, lb, lh0):
    def step(h, x):
        h = jnp.logaddexp(x[0] + h, x[1])
        return h, h

    return lax.scan(step, lh0, (la, lb))[1]


def _inputs(shape, seed=0, dtype=jnp.float32, lo=-1.2, hi=1.2):
    a = uniform(10 * seed, shape, lo, hi, dtype)
    return a, normal(10 * seed + 1, shape, dtype), normal(10 * seed + 2, shape[1:], dtype)


def _close(actual, expected, rtol=1e-6, atol=1e-6):
    for x, y in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
        assert np.shape(x) == np.shape(y) and x.dtype == y.dtype, (x.shape, y.shape, x.dtype)
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


# --- values -------------------------------------------------------------------------------------


@st.composite
def _cases(draw):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=5))
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    elements = st.floats(-1.5, 1.5, width=32)
    a = draw(hnp.arrays(np.float32, shape, elements=elements))
    b = draw(hnp.arrays(np.float32, shape, elements=elements))
    state = tuple(int(n) for i, n in enumerate(shape) if i != axis % len(shape))
    h0 = draw(st.none() | hnp.arrays(np.float32, state, elements=elements))
    return a, b, h0, axis, draw(st.booleans())


@given(_cases())
def test_values_against_a_numpy_loop(case):
    a, b, h0, axis, reverse = case
    out = hj.linear_scan(a, b, h0=h0, axis=axis, reverse=reverse)
    expected = numpy_scan(a, b, h0, axis % a.ndim, reverse)
    assert out.shape == a.shape and out.dtype == jnp.float32
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_empty_time_axis():
    a, b, h0 = jnp.ones((0, 3)), jnp.ones((0, 3)), jnp.ones(3)
    assert hj.linear_scan(a, b, h0=h0).shape == (0, 3)
    grads = jax.grad(lambda a, b, h0: jnp.sum(hj.linear_scan(a, b, h0=h0)), (0, 1, 2))(a, b, h0)
    assert [g.shape for g in grads] == [(0, 3), (0, 3), (3,)]


@given(_cases())
def test_log_values_against_a_numpy_loop(case):
    a, b, h0, axis, reverse = case
    a, b = np.abs(a) + 0.1, np.abs(b) + 0.1
    h0 = None if h0 is None else np.abs(h0) + 0.1
    log_h0 = None if h0 is None else np.log(h0)
    out = hj.log_linear_scan(np.log(a), np.log(b), log_h0=log_h0, axis=axis, reverse=reverse)
    expected = np.log(numpy_scan(a, b, h0, axis % a.ndim, reverse))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_time_invariant_decay_broadcasts_and_returns_its_own_gradient_shape():
    a, b, h0 = _inputs((9, 4))
    decay = a[0]
    out = hj.linear_scan(decay, b, h0=h0, broadcast=True)
    np.testing.assert_allclose(out, numpy_scan(decay, b, h0), rtol=1e-5, atol=1e-6)
    grads = jax.jit(
        jax.grad(lambda d, b: jnp.sum(jnp.sin(hj.linear_scan(d, b, broadcast=True))), (0, 1))
    )
    ref = jax.jit(jax.grad(lambda d, b: jnp.sum(jnp.sin(lax_scan(d, b))), (0, 1)))
    _close(grads(decay, b), ref(decay, b), rtol=1e-5)
    # A scalar decay and a broadcast h0 too.
    out = hj.linear_scan(0.5, b, h0=1.0, broadcast=True)
    np.testing.assert_allclose(out, numpy_scan(0.5, b, 1.0), rtol=1e-6, atol=1e-6)


def test_resets_and_large_decays_are_exact():
    a, b, h0 = _inputs((12, 3), lo=1.5, hi=3.0)  # |a| > 1: no logarithm of a is taken
    a = a.at[5].set(0.0)  # a reset
    np.testing.assert_allclose(
        hj.linear_scan(a, b, h0=h0), numpy_scan(a, b, h0), rtol=1e-5, atol=1e-6
    )
    loss = lambda f: lambda a, b, h0: jnp.sum(f(a, b, h0) ** 2)  # noqa: E731
    ours = jax.jit(jax.grad(loss(lambda a, b, h0: hj.linear_scan(a, b, h0=h0)), (0, 1, 2)))
    ours = ours(a, b, h0)
    ref = jax.jit(jax.grad(loss(lax_scan), (0, 1, 2)))(a, b, h0)
    _close(ours, ref, rtol=1e-6)
    # After a reset the states do not depend on anything before it: exactly zero gradients.
    late = jax.grad(lambda a, b, h0: jnp.sum(hj.linear_scan(a, b, h0=h0)[5:]), (0, 1, 2))(a, b, h0)
    assert np.all(np.asarray(late[0][:5]) == 0) and np.all(np.asarray(late[1][:5]) == 0)
    assert np.all(np.asarray(late[2]) == 0)


def test_complex_follows_jax_transpose_convention():
    a = jax.device_put(
        (np.random.default_rng(3).uniform(0.5, 0.9, (10, 3)) * np.exp(1j * 0.3)).astype(
            np.complex64
        )
    )
    b = normal(4, (10, 3), jnp.complex64)
    np.testing.assert_allclose(hj.linear_scan(a, b), numpy_scan(a, b), rtol=1e-5, atol=1e-6)
    f = lambda a, b: hj.linear_scan(a, b)  # noqa: E731
    out, vjp = jax.vjp(f, a, b)
    ref_out, ref_vjp = jax.vjp(lax_scan, a, b)
    ct = jnp.conj(b) + 1j
    _close(vjp(ct), ref_vjp(ct), rtol=1e-5, atol=1e-6)
    _close(jax.jvp(f, (a, b), (b, a))[1], jax.jvp(lax_scan, (a, b), (b, a))[1], rtol=1e-5)
    real_loss = lambda f: lambda a, b: jnp.sum(jnp.abs(f(a, b)) ** 2)  # noqa: E731
    _close(jax.grad(real_loss(f))(a, b), jax.grad(real_loss(lax_scan))(a, b), rtol=1e-5)


def test_bfloat16_accumulates_in_float32():
    a, b, h0 = (x.astype(jnp.bfloat16) for x in _inputs((300, 4), lo=0.9, hi=1.0))
    out = hj.linear_scan(a, b, h0=h0)
    f32 = hj.linear_scan(*(x.astype(jnp.float32) for x in (a, b)), h0=h0.astype(jnp.float32))
    assert out.dtype == jnp.bfloat16
    assert np.array_equal(np.asarray(out), np.asarray(f32.astype(jnp.bfloat16)))
    grads = jax.grad(lambda a, b: jnp.sum(hj.linear_scan(a, b).astype(jnp.float32)), (0, 1))(a, b)
    assert all(g.dtype == jnp.bfloat16 for g in grads)
    log_out = hj.log_linear_scan(jnp.log(jnp.abs(a)), b)
    assert log_out.dtype == jnp.bfloat16


def test_integer_and_boolean_inputs_promote_to_float():
    out = hj.linear_scan(jnp.array([1, 0, 1]), jnp.array([1, 2, 3]))
    assert out.dtype == jnp.float32
    np.testing.assert_array_equal(out, [1.0, 2.0, 5.0])
    keep = jnp.array([True, False, True])  # a reset mask as the decay
    np.testing.assert_array_equal(hj.linear_scan(keep, jnp.ones(3)), [1.0, 1.0, 2.0])
    _, t = jax.jvp(lambda b: hj.linear_scan(keep, b), (jnp.ones(3),), (jnp.ones(3),))
    np.testing.assert_array_equal(t, [1.0, 1.0, 2.0])


# --- derivatives --------------------------------------------------------------------------------


def test_check_grads(x64):
    a, b, h0 = _inputs((5, 2), dtype=jnp.float64)
    la = jnp.log(jnp.abs(a) + 0.1)
    kw = dict(modes=["fwd", "rev"])
    check_grads(lambda a, b, h0: hj.linear_scan(a, b, h0=h0), (a, b, h0), order=2, **kw)
    log_scan = lambda la, lb, l0: hj.log_linear_scan(la, lb, log_h0=l0)  # noqa: E731
    check_grads(log_scan, (la, b, h0), order=2, **kw)
    check_grads(lambda a, b: hj.linear_scan(a.T, b.T, axis=1, reverse=True), (a, b), order=1, **kw)
    check_grads(lambda d, b: hj.linear_scan(d, b, broadcast=True), (a[0], b), order=1, **kw)
    check_grads(lambda la, lb: hj.log_linear_scan(la, lb, reverse=True), (la, b), order=1, **kw)


def test_check_grads_complex(x64):
    a, b, h0 = _inputs((5, 2), dtype=jnp.float64)
    ac = (a * jnp.exp(0.5j)).astype(jnp.complex128)
    check_grads(lambda a, b: hj.linear_scan(a, b), (ac, b + 1j * a), order=1, modes=["fwd", "rev"])


@pytest.mark.parametrize("shape", [(64, 8), (7, 2, 3)])
def test_gradients_equal_lax_scan_autodiff(shape):
    a, b, h0 = _inputs(shape, lo=0.3, hi=1.0)
    w = normal(9, shape)
    loss = lambda f: lambda a, b, h0: jnp.sum(f(a, b, h0) * w)  # noqa: E731
    for rev in (False, True):
        ours = jax.value_and_grad(
            loss(lambda a, b, h0, rev=rev: hj.linear_scan(a, b, h0=h0, reverse=rev)), (0, 1, 2)
        )
        ref = jax.value_and_grad(
            loss(lambda a, b, h0, rev=rev: lax_scan(a, b, h0, reverse=rev)), (0, 1, 2)
        )
        _close(jax.jit(ours)(a, b, h0), jax.jit(ref)(a, b, h0), rtol=1e-6, atol=1e-6)


def test_forward_mode_hessian_and_forward_over_reverse():
    a, b, h0 = _inputs((5, 2))
    f = lambda a, b: jnp.sum(jnp.sin(hj.linear_scan(a, b, h0=h0)))  # noqa: E731
    g = lambda a, b: jnp.sum(jnp.sin(lax_scan(a, b, h0)))  # noqa: E731
    _close(jax.jit(jax.jacfwd(f))(a, b), jax.jit(jax.jacfwd(g))(a, b), rtol=1e-5)
    _close(jax.jit(jax.hessian(f))(a, b), jax.jit(jax.hessian(g))(a, b), rtol=1e-4, atol=1e-5)
    hvp = lambda f: jax.jit(lambda a, b: jax.jvp(jax.grad(f), (a, b), (b, a))[1])(a, b)  # noqa: E731
    _close(hvp(f), hvp(g), rtol=1e-4, atol=1e-5)
    la, lb = jnp.log(jnp.abs(a) + 0.1), b
    lf = lambda la, lb: jnp.sum(jnp.sin(hj.log_linear_scan(la, lb, log_h0=h0)))  # noqa: E731
    lg = lambda la, lb: jnp.sum(jnp.sin(lax_log_scan(la, lb, h0)))  # noqa: E731
    _close(jax.jit(jax.hessian(lf))(la, lb), jax.jit(jax.hessian(lg))(la, lb), rtol=1e-4, atol=1e-5)
    _close(jax.grad(lf, (0, 1))(la, lb), jax.grad(lg, (0, 1))(la, lb), rtol=1e-5, atol=1e-6)


def test_log_scan_minus_infinity_is_zero_without_nan_gradients():
    la = jnp.log(jnp.array([0.5, 0.0, 0.5, 0.5, 0.5]))  # log a = -inf: a reset
    lb = jnp.log(jnp.array([0.0, 0.0, 2.0, 0.0, 1.0]))  # log b = -inf: b = 0
    out = hj.log_linear_scan(la, lb)
    np.testing.assert_allclose(jnp.exp(out), [0.0, 0.0, 2.0, 1.0, 1.5], rtol=1e-6)
    for argnums in (0, 1):
        g = jax.grad(lambda la, lb: jnp.sum(jnp.exp(hj.log_linear_scan(la, lb))), argnums)(la, lb)
        assert np.all(np.isfinite(g)), g
    # d h / d log b_t = b_t dh/db_t: zero where b = 0, the linear-space gradient elsewhere.
    g_lb = jax.grad(lambda lb: jnp.sum(jnp.exp(hj.log_linear_scan(la, lb))))(lb)
    g_b = jax.grad(lambda b: jnp.sum(lax_scan(jnp.exp(la), b)))(jnp.exp(lb))
    np.testing.assert_allclose(g_lb, g_b * jnp.exp(lb), rtol=1e-6, atol=1e-7)
    h = jax.hessian(lambda lb: jnp.sum(jnp.exp(hj.log_linear_scan(la, lb))))(lb)
    assert np.all(np.isfinite(h))


def test_chunked_algorithm_values_and_derivatives(x64, monkeypatch):
    monkeypatch.setitem(ls.ALGORITHMS, jax.default_backend(), "chunked")
    a, b, h0 = _inputs((12, 3), dtype=jnp.float64)
    for reverse in (False, True):
        out = hj.linear_scan(a, b, h0=h0, reverse=reverse)
        np.testing.assert_allclose(out, numpy_scan(a, b, h0, 0, reverse), rtol=1e-12)
    check_grads(
        lambda a, b, h0: hj.linear_scan(a, b, h0=h0, reverse=True),
        (a, b, h0),
        order=1,
        modes=["fwd", "rev"],
    )
    la = jnp.log(jnp.abs(a) + 0.1)
    np.testing.assert_allclose(
        hj.log_linear_scan(la, b), np.log(numpy_scan(np.exp(la), np.exp(b))), rtol=1e-12
    )


def test_algorithm_table():
    assert ls.choose_algorithm("cpu") == "sequential"
    assert set(ls.ALGORITHMS.values()) <= set(ls._LOCAL)
    assert ls.choose_algorithm("an unknown backend") == "sequential"


# --- what reverse mode keeps --------------------------------------------------------------------


def test_saved_residuals_are_inputs_and_states_only(capsys):
    a, b, h0 = _inputs((16, 4))
    lines = saved_residuals(capsys, lambda a, b, h0: hj.linear_scan(a, b, h0=h0), a, b, h0)
    assert sorted(line.split(" from")[0] for line in lines if "argument" in line) == [
        "f32[16,4]",
        "f32[4]",
    ], lines  # a and h0: b is not needed
    others = [line for line in lines if "argument" not in line]
    assert len(others) == 1 and others[0].startswith("f32[16,4] output of jitted function"), lines
    lines = saved_residuals(capsys, lambda a, b: hj.log_linear_scan(a, b), a, b)
    assert sum("argument" in line for line in lines) == 2 and len(lines) == 3, lines


def test_compiled_memory_against_lax_scan():
    # associative_scan's figure (0.16x of it at this size) is in the benchmark: its compile is slow.
    t, d = 512, 32
    ours = recurrence.compiled_temp_bytes("hadamard_jax", t, d)
    plain = recurrence.compiled_temp_bytes("lax_scan", t, d)
    assert ours <= 0.55 * plain, (ours, plain)
    assert ours <= 1.05 * t * d * 4, ours  # the states h, and next to nothing else
    # Linear in T.
    assert recurrence.compiled_temp_bytes("hadamard_jax", 4 * t, d) <= 4.05 * ours


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: hj.linear_scan(jnp.ones(3), jnp.ones(4)), ValueError, "a.shape=.*b.shape"),
        (lambda: hj.linear_scan(jnp.ones(3), jnp.ones((2, 3))), ValueError, "broadcast=True"),
        (
            lambda: hj.linear_scan(jnp.ones((3, 2)), jnp.ones((3, 2)), h0=jnp.ones(3)),
            ValueError,
            "h0",
        ),
        (lambda: hj.linear_scan(jnp.ones(3), jnp.ones(3), axis=1), ValueError, "axis=1"),
        (lambda: hj.linear_scan(jnp.ones(3), jnp.ones(3), axis=0.0), TypeError, "axis"),
        (lambda: hj.linear_scan(jnp.ones(3), jnp.ones(3), reverse=1), TypeError, "reverse"),
        (lambda: hj.linear_scan(jnp.ones(3), jnp.ones(3), broadcast="no"), TypeError, "broadcast"),
        (lambda: hj.linear_scan(None, jnp.ones(3)), TypeError, "'a'"),
        (lambda: hj.linear_scan(jnp.ones(3), "b"), TypeError, "'b'"),
        (lambda: hj.linear_scan(jnp.ones(3), jnp.ones(3), h0=object()), TypeError, "'h0'"),
        (lambda: hj.linear_scan(1.0, 2.0), ValueError, "time axis"),
        (lambda: hj.linear_scan(jnp.ones(3), jnp.ones(3), mesh_axis=3), TypeError, "mesh_axis"),
        (lambda: hj.linear_scan(jnp.ones(3), jnp.ones(3), mesh_axis="x"), ValueError, "set_mesh"),
        (lambda: hj.log_linear_scan(jnp.ones(3, jnp.complex64), jnp.ones(3)), TypeError, "complex"),
        (lambda: hj.log_linear_scan(jnp.ones(3), jnp.ones(2)), ValueError, "log_a.shape"),
    ],
)
def test_errors_name_the_argument_at_trace_time(call, error, match):
    with pytest.raises(error, match=match):
        call()
    with pytest.raises(error, match=match):
        jax.jit(lambda: call())()


# --- transforms and Variables -------------------------------------------------------------------


def test_vmap_jit_checkpoint_and_scan_over_layers():
    a, b, _ = _inputs((4, 6, 3))  # a batch of 4 sequences of length 6
    h0 = b[:, 0] * 2
    out = jax.jit(jax.vmap(lambda a, b, h0: hj.linear_scan(a, b, h0=h0)))(a, b, h0)
    np.testing.assert_allclose(out, jax.vmap(lax_scan)(a, b, h0), rtol=1e-6, atol=1e-6)
    g = jax.jit(jax.vmap(jax.grad(lambda a, b: jnp.sum(hj.linear_scan(a, b) ** 2))))(a, b)
    g_ref = jax.jit(jax.vmap(jax.grad(lambda a, b: jnp.sum(lax_scan(a, b) ** 2))))(a, b)
    np.testing.assert_allclose(g, g_ref, rtol=1e-5)

    def layers(recur, remat):
        def layer(x, ab):
            y = recur(ab[0], ab[1] * x)
            return jnp.tanh(y), None

        layer = jax.checkpoint(layer) if remat else layer
        return lambda a, b, x: jnp.sum(lax.scan(layer, x, (a, b))[0])

    x = b[0]
    for remat in (False, True):
        ours = jax.jit(jax.grad(layers(lambda a, b: hj.linear_scan(a, b), remat), (0, 1, 2)))
        ref = jax.jit(jax.grad(layers(lax_scan, remat), (0, 1, 2)))
        ours, ref = ours(a, b, x), ref(a, b, x)
        _close(ours, ref, rtol=1e-5, atol=1e-6)


def test_variables_are_accepted():
    a, b, h0 = _inputs((6, 3), lo=0.3, hi=0.9)

    class Decay(nnx.Module):
        def __init__(self):
            self.a = nnx.Param(a[0])
            self.h0 = nnx.Param(h0)

        def __call__(self, x):
            return hj.linear_scan(self.a, x, h0=self.h0, broadcast=True)

    m = Decay()
    np.testing.assert_allclose(m(b), lax_scan(a[0], b, h0), rtol=1e-6, atol=1e-6)
    grads = nnx.grad(lambda m: jnp.sum(jnp.sin(m(b))))(m)
    ref = jax.grad(lambda d, h: jnp.sum(jnp.sin(lax_scan(d, b, h))), (0, 1))(a[0], h0)
    np.testing.assert_allclose(grads["a"][...], ref[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grads["h0"][...], ref[1], rtol=1e-5, atol=1e-6)
    _, t = jax.jvp(lambda x: hj.log_linear_scan(nnx.Param(a), x), (b,), (b,))
    assert t.shape == b.shape


# --- regressions: an empty time axis, the algorithms ---------------------------------------------

TOL = dict(rtol=2e-5, atol=2e-5)


def _plain_scan(a, b, h0, axis, reverse=False):
    """``lax.scan`` of the recurrence: the reference of shapes and dtypes at ``T = 0``."""
    a, b = jnp.moveaxis(a, axis, 0), jnp.moveaxis(b, axis, 0)
    h = jax.lax.scan(lambda h, x: (x[0] * h + x[1],) * 2, h0, (a, b), reverse=reverse)[1]
    return jnp.moveaxis(h, 0, axis)


@pytest.mark.parametrize("reverse", [False, True])
def test_empty_time_axis_ops(reverse):
    z = jnp.zeros((2, 0, 3))
    h0 = jnp.ones((2, 3))
    want = _plain_scan(z, z, jnp.zeros((2, 3)), 1, reverse)
    for op, kw in ((hj.linear_scan, "h0"), (hj.log_linear_scan, "log_h0")):
        for kwargs in ({}, {kw: h0}):
            f = functools.partial(op, axis=1, reverse=reverse, **kwargs)
            out = f(z, z)
            assert out.shape == want.shape == (2, 0, 3) and out.dtype == want.dtype
            assert jax.jit(f)(z, z).shape == (2, 0, 3)
            grads = jax.grad(lambda a, b, f=f: jnp.sum(f(a, b)), argnums=(0, 1))(z, z)
            assert [g.shape for g in grads] == [(2, 0, 3)] * 2
            tangent = jax.jvp(f, (z, z), (z, z))[1]
            assert tangent.shape == (2, 0, 3)
        # A gradient with respect to the initial state: zero (no state depends on it).
        g = jax.grad(lambda h, op=op, kw=kw: jnp.sum(op(z, z, axis=1, **{kw: h})))(h0)
        np.testing.assert_array_equal(g, jnp.zeros((2, 3)))
    # Broadcast (time-invariant) a, the time axis elsewhere, dtypes as for T > 0.
    assert hj.linear_scan(jnp.ones(3), z, broadcast=True, axis=1).shape == (2, 0, 3)
    zt = jnp.zeros((0, 4), jnp.bfloat16)
    assert hj.linear_scan(zt, zt).dtype == jnp.bfloat16
    assert hj.log_linear_scan(jnp.zeros((0,), jnp.int32), jnp.zeros((0,))).dtype == jnp.float32


def test_algorithms_are_public():
    table = hj.linear_scan.ALGORITHMS
    assert set(table) >= {"cpu", "gpu", "tpu"} and hj.log_linear_scan.ALGORITHMS is table
    assert hj.linear_scan.choose_algorithm("cpu") == table["cpu"]
    a, b = uniform(0, (12, 3), 0.5, 1.0), normal(1, (12, 3))
    h0 = normal(2, (3,))

    def loss(a, b, h0, algorithm):
        return jnp.sum(jnp.sin(hj.linear_scan(a, b, h0=h0, algorithm=algorithm)))

    grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)), static_argnums=3)
    assert_tree_allclose(grad(a, b, h0, "chunked"), grad(a, b, h0, "sequential"), **TOL)
    log_seq = hj.log_linear_scan(jnp.log(a), b, algorithm="sequential")
    log_chunked = hj.log_linear_scan(jnp.log(a), b, algorithm="chunked")
    np.testing.assert_allclose(log_chunked, log_seq, **TOL)
    with pytest.raises(ValueError, match=r"linear_scan: algorithm must be None or one of"):
        hj.linear_scan(a, b, algorithm="pallas")
    with pytest.raises(ValueError, match=r"log_linear_scan: algorithm"):
        hj.log_linear_scan(a, b, algorithm=1)
