"""``linear_scan`` and ``log_linear_scan``: values, derivatives of every order, residuals, memory,
dtypes, errors, transforms, Variables, the sequence-sharded path on 8 CPU devices, mixed
shardings under Explicit mesh axes (with the RGLRU and MinGRU layers), an empty time axis and the
algorithm table."""

from __future__ import annotations

import functools
import textwrap

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
    run_on_8_cpu_devices,
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


# --- sequence sharding: one subprocess, 8 CPU devices -------------------------------------------

_MESH_SCRIPT = textwrap.dedent(
    """
    import re
    import numpy as np, jax, jax.numpy as jnp
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
    import hadamard_jax as hj

    T, D, N_SEQ, N_MODEL = 64, 16, 4, 2
    k = jax.random.split(jax.random.key(0), 4)
    a = jax.random.uniform(k[0], (T, D), minval=-1.2, maxval=1.2)
    b = jax.random.normal(k[1], (T, D))
    h0 = jax.random.normal(k[2], (D,))
    w = jax.random.normal(k[3], (T, D))
    la, lb = jnp.log(jnp.abs(a) + 0.1), b

    def run(h0_arg=True, axis=0, **kw):
        def f(a, b, h0, w):
            if axis:
                a, b, w = a.T, b.T, w.T
            h = hj.linear_scan(a, b, h0=h0 if h0_arg else None, axis=axis, **kw)
            lh = hj.log_linear_scan(jnp.log(jnp.abs(a) + 0.1), b, axis=axis, **kw)
            return jnp.sum(h * w) + jnp.sum(jnp.sin(lh) * w)
        return jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2)))

    def fwd(**kw):
        return jax.jit(lambda a, b, h0: hj.linear_scan(a, b, h0=h0, **kw))

    refs = {}
    for rev in (False, True):  # one device
        refs[rev] = fwd(reverse=rev)(a, b, h0), run(reverse=rev)(a, b, h0, w)
    ref_axis1 = run(axis=1)(a, b, h0, w)

    local_block = (T // N_SEQ) * (D // N_MODEL)
    carries = N_SEQ * (D // N_MODEL)

    def compiled(fn, *args, what):
        # fn compiled for args, after checking its collectives.
        exe = fn.lower(*args).compile()
        text = exe.as_text()
        found = 0
        for line in text.splitlines():
            m = re.search(r"= (.+?) (all-gather|all-reduce|reduce-scatter|all-to-all"
                          r"|collective-permute)(-start)?\\(", line)
            if not m:
                continue
            found += 1
            assert m.group(2) == "all-reduce", (what, line)
            for dims in re.findall(r"\\[([\\d,]*)\\]", m.group(1)):
                size = int(np.prod([int(s) for s in dims.split(",") if s]))
                assert size <= carries < local_block, (what, size, line)
        assert found, what  # the carries do move
        return exe

    for kind in ("explicit", "auto"):
        types = (AxisType.Explicit if kind == "explicit" else AxisType.Auto,) * 2
        mesh = jax.make_mesh((N_SEQ, N_MODEL), ("seq", "model"), axis_types=types)
        kw = {} if kind == "explicit" else {"mesh_axis": "seq"}
        with jax.set_mesh(mesh):
            s2 = NamedSharding(mesh, P("seq", "model"))
            A, B, W = (jax.device_put(x, s2) for x in (a, b, w))
            H0 = jax.device_put(h0, NamedSharding(mesh, P("model")))
            for rev in (False, True) if kind == "explicit" else (False,):
                f = compiled(fwd(reverse=rev, **kw), A, B, H0, what=(kind, rev, "fwd"))
                g = compiled(run(reverse=rev, **kw), A, B, H0, W, what=(kind, rev, "grad"))
                h = f(A, B, H0)
                np.testing.assert_allclose(h, refs[rev][0], rtol=2e-5, atol=2e-5)
                assert h.sharding.spec == P("seq", "model"), h.sharding
                value, grads = g(A, B, H0, W)
                np.testing.assert_allclose(value, refs[rev][1][0], rtol=2e-5)
                for x, y in zip(grads, refs[rev][1][1]):
                    np.testing.assert_allclose(x, y, rtol=2e-5, atol=2e-5)
            if kind == "auto":  # the rest once, under Explicit axes
                print(kind, "OK")
                continue
            # The time axis second (a transposed layout), and no h0.
            g1 = run(axis=1, **kw)
            value, grads = g1(A, B, H0, W)
            np.testing.assert_allclose(value, ref_axis1[0], rtol=2e-5)
            for x, y in zip(grads, ref_axis1[1]):
                np.testing.assert_allclose(x, y, rtol=2e-5, atol=2e-5)
            out = fwd(**kw)(A, B, None)
            np.testing.assert_allclose(out, fwd()(a, b, None), rtol=2e-5, atol=2e-5)
            # Forward mode on the sharded path.
            jvp = lambda a, b, h0: jax.jvp(
                lambda a: hj.linear_scan(a, b, h0=h0, **kw), (a,), (b,))
            _, t = jax.jit(jvp)(A, B, H0)
            _, t_ref = jax.jvp(lambda a: hj.linear_scan(a, b, h0=h0), (a,), (b,))
            np.testing.assert_allclose(t, t_ref, rtol=2e-5, atol=2e-5)
            # A time-invariant decay (not sharded along time) on the sharded path.
            dec = jax.device_put(a[0], NamedSharding(mesh, P("model")))
            f = jax.jit(lambda d, b: hj.linear_scan(d, b, broadcast=True))
            np.testing.assert_allclose(f(dec, B), f(a[0], b), rtol=2e-5, atol=2e-5)
            # Only the state axis sharded: the one-device algorithm, no carries to move.
            s_state = NamedSharding(mesh, P(None, "model"))
            A2, B2 = jax.device_put(a, s_state), jax.device_put(b, s_state)
            value, grads = run()(A2, B2, H0, jax.device_put(w, s_state))
            np.testing.assert_allclose(value, refs[False][1][0], rtol=2e-5)
            print(kind, "OK")
    print("MESH OK")
    """
)


def test_sequence_sharded_mesh():
    run_on_8_cpu_devices(_MESH_SCRIPT, "MESH OK")


# --- regressions: mixed shardings under Explicit axes, an empty time axis, the algorithms ----

TOL = dict(rtol=2e-5, atol=2e-5)

MIXED_SHARDINGS_SCRIPT = r"""
import functools
import jax, jax.numpy as jnp, numpy as np
from flax import nnx
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
import hadamard_jax as hj
from hadamard_jax import linen as hl, nnx as hn

mesh = jax.make_mesh((2, 4), ("data", "seq"), axis_types=(AxisType.Explicit,) * 2)
B, T, D = 4, 8, 3
rng = np.random.default_rng(0)
a = jnp.asarray(rng.uniform(0.5, 1.0, (B, T, D)), jnp.float32)
b = jnp.asarray(rng.standard_normal((B, T, D)), jnp.float32)
h0 = jnp.asarray(rng.standard_normal((B, D)), jnp.float32)
ct = jnp.asarray(rng.standard_normal((B, T, D)), jnp.float32)


def put(x, *spec):
    return jax.device_put(x, NamedSharding(mesh, P(*spec)))


def spec_of(x):
    spec = tuple(x.sharding.spec)
    return spec + (None,) * (x.ndim - len(spec))


def lin(a, b, h0):
    return hj.linear_scan(a, b, h0=h0, axis=1, broadcast=True)


def log(a, b, h0):
    return hj.log_linear_scan(jnp.log(a), b, log_h0=h0, axis=1, broadcast=True)


@functools.partial(jax.jit, static_argnums=3)
def everything(a, b, h0, fn):
    out, vjp = jax.vjp(lambda a, b, h0: fn(a, b, h0), a, b, h0)
    tangent = jax.jvp(lambda b, h0: fn(a, b, h0), (b, h0), (b, h0))[1]
    return out, vjp(ct), tangent

# (a, b, h0) placements: each mixes shardings that crashed inside JAX before. The start is the
# usual zeros((B, D)) (one unsharded reference per op and shape of a: fewer compiles).
zeros = jnp.zeros((B, D))
cases = {
    "replicated zeros h0": (("data", "seq"), ("data", "seq"), ()),
    "only a along time": (("data", "seq"), (), ()),
    "only b along time, h0 batch": ((None, "seq"), ("data", "seq"), ("data",)),
    "time-invariant a replicated": ("invariant", ("data", "seq"), ()),
}
with jax.set_mesh(mesh):
    for fn, names in ((lin, list(cases)), (log, list(cases)[:2])):
        for name in names:
            sa, sb, sh = cases[name]
            a_, h_ = a, zeros
            if sa == "invariant":
                a_, sa = a[:, :1], ()
            want = everything(a_, b, h_, fn)
            args = (put(a_, *sa), put(b, *sb), put(h_, *sh))
            got = everything(*args, fn)
            assert spec_of(got[0])[:2] == ("data", "seq"), (name, got[0].sharding.spec)
            for g, x in zip(got[1], args):  # each gradient has its argument's sharding
                assert spec_of(g) == spec_of(x), (name, g.sharding, x.sharding)
            for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
                np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5, err_msg=f"{fn} {name}")
            print(fn.__name__, name, "OK")

    # Time-major, reversed, a replicated h0 that conflicts with nothing; and mesh_axis named
    # for arrays whose types are not sharded along time (they are resharded to it).
    tm = lambda x: jnp.swapaxes(x, 0, 1)
    rev = jax.jit(
        jax.grad(
            lambda a, b, h0: jnp.sum(jnp.sin(hj.linear_scan(a, b, h0=h0, reverse=True))),
            argnums=(0, 1, 2),
        )
    )
    want = rev(tm(a), tm(b), h0)
    got = rev(put(tm(a), "seq"), put(tm(b), "seq", "data"), put(h0))
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)
    named = jax.jit(lambda a, b, h0: hj.linear_scan(a, b, h0=h0, axis=1, mesh_axis="seq"))
    out = named(a, put(b, "data"), h0)
    assert spec_of(out) == ("data", "seq", None), out.sharding
    np.testing.assert_allclose(out, lin(a, b, h0), rtol=1e-5, atol=1e-6)

    # The layers (Linen; NNX runs the same functions), from the usual replicated zeros((B, n))
    # start with batch- and time-sharded inputs.
    @functools.partial(jax.jit, static_argnums=3)
    def layer_loss(params, x, h0, apply):
        def loss(params, x, h0):
            h, last = apply(params, x, h0)
            return jnp.sum(h * jnp.cos(h)) + jnp.sum(last), (h, last)

        return jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(params, x, h0)

    for module, n in ((hl.RGLRU(D, num_heads=1), D), (hl.MinGRU(5), 5)):
        params = jax.jit(module.init)(jax.random.key(0), b)
        apply = lambda p, x, h0, m=module: m.apply(p, x, h0)
        want = layer_loss(params, b, jnp.zeros((B, n)), apply)
        got = layer_loss(params, put(b, "data", "seq"), put(jnp.zeros((B, n))), apply)
        for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)
        print(type(module).__name__, "OK")
    layer = hn.RGLRU(D, rngs=nnx.Rngs(0))
    h, last = nnx.jit(lambda m, x, h0: m(x, h0))(layer, put(b, "data", "seq"), jnp.zeros((B, D)))
    assert h.sharding.spec[:2] == ("data", "seq")
    np.testing.assert_allclose(h, layer(b)[0], rtol=1e-5, atol=1e-6)

# Auto axes: the compiler places the arguments; mesh_axis names the time's axis.
auto = jax.make_mesh((2, 4), ("data", "seq"), axis_types=(AxisType.Auto,) * 2)
with jax.set_mesh(auto):
    f = jax.jit(lambda a, b, h0: hj.linear_scan(a, b, h0=h0, axis=1, mesh_axis="seq"))
    bs = jax.device_put(b, NamedSharding(auto, P("data", "seq")))
    np.testing.assert_allclose(f(a, bs, h0), lin(a, b, h0), rtol=1e-5, atol=1e-6)
print("MIXED SHARDINGS OK")
"""


def test_mixed_shardings_under_explicit_mesh_axes():
    run_on_8_cpu_devices(MIXED_SHARDINGS_SCRIPT, "MIXED SHARDINGS OK")


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
