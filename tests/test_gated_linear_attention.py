"""``gated_linear_attention`` and its step: values and gradients against a float64 token-by-token
scan and flash-linear-attention's naive loop, derivatives of every order, residuals, dtypes,
resets, the decode step, and bad input."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import hadamard_jax as hj
from hadamard_jax._src import gated_linear_attention as gla
from tests.utils import check_grads, normal, saved_residuals, uniform

# --- references ---------------------------------------------------------------------------------


def scan_reference(q, k, v, log_g, h0, scale):
    """The recurrence token by token (``lax.scan``), differentiated by JAX: the reference."""
    scalar = log_g.ndim == 3

    def step(s, x):
        qt, kt, vt, gt = x
        decay = jnp.exp(gt)[..., None, None] if scalar else jnp.exp(gt)[..., None]
        s = decay * s + kt[..., :, None] * vt[..., None, :]
        return s, scale * jnp.einsum("bhk,bhkv->bhv", qt, s)

    xs = tuple(jnp.moveaxis(x, 1, 0) for x in (q, k, v, log_g))
    last, o = lax.scan(step, h0, xs)
    return jnp.moveaxis(o, 0, 1), last


def fla_naive(q, k, v, gk, initial_state=None):
    """flash-linear-attention's ``naive_recurrent_gla`` (``fla/ops/gla/naive.py``) in NumPy.

    Ported line by line: ``[B, T, H, K]`` inputs transposed to ``[B, H, T, K]``, float64 state,
    ``scale = K ** -0.5``, ``h = h * exp(gk_i)[..., None] + k_i v_i^T``, ``o_i = sum(q_i h)``.
    """
    q, k, v, gk = (np.asarray(x, np.float64).transpose(0, 2, 1, 3) for x in (q, k, v, gk))
    b, h, t, kd = q.shape
    o = np.zeros_like(v)
    scale = kd**-0.5
    state = np.zeros((b, h, kd, v.shape[-1]))
    if initial_state is not None:
        state += np.asarray(initial_state, np.float64)
    for i in range(t):
        q_i = q[:, :, i] * scale
        kv_i = k[:, :, i][..., None] * v[:, :, i][..., None, :]
        state = state * np.exp(gk[:, :, i])[..., None] + kv_i
        o[:, :, i] = (q_i[..., None] * state).sum(-2)
    return o.transpose(0, 2, 1, 3), state


def _inputs(b, t, h, kd, vd, *, scalar=False, lo=-1.0, seed=0, dtype=np.float32):
    g_shape = (b, t, h) if scalar else (b, t, h, kd)
    return (
        normal(seed, (b, t, h, kd), dtype),
        normal(seed + 1, (b, t, h, kd), dtype),
        normal(seed + 2, (b, t, h, vd), dtype),
        uniform(seed + 3, g_shape, lo, 0.0, dtype),
        normal(seed + 4, (b, h, kd, vd), dtype),
    )


def _loss(fn):
    """A scalar of both outputs with non-trivial cotangents."""

    def loss(q, k, v, g, h0):
        o, s = fn(q, k, v, g, h0)
        return jnp.sum(jnp.sin(o)) + jnp.sum(jnp.cos(s))

    return loss


def _ours(chunk):
    return lambda q, k, v, g, h0: hj.gated_linear_attention(
        q, k, v, g, initial_state=h0, chunk_size=chunk
    )


def _rel(actual, expected):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.max(np.abs(actual - expected)) / max(np.max(np.abs(expected)), 1e-30))


def _against_float64(args, chunk, tol=1e-5):
    """Values and gradients (every argument) of ours in float32 against the float64 scan."""
    kd = args[0].shape[-1]
    ours = jax.jit(_ours(chunk))(*args)
    grads = jax.jit(jax.grad(_loss(_ours(chunk)), argnums=range(5)))(*args)
    with jax.enable_x64(True):
        args64 = [jnp.asarray(np.asarray(x), jnp.float64) for x in args]
        ref = scan_reference(*args64, kd**-0.5)
        ref_grads = jax.grad(_loss(lambda *a: scan_reference(*a, kd**-0.5)), argnums=range(5))(
            *args64
        )
    for got, want in zip((*ours, *grads), (*ref, *ref_grads)):
        assert got.shape == want.shape and got.dtype == jnp.float32
        assert np.all(np.isfinite(np.asarray(got)))
        assert _rel(got, want) < tol, _rel(got, want)


# --- values and gradients -----------------------------------------------------------------------


@pytest.mark.parametrize("scalar", [False, True])
@pytest.mark.parametrize("t, chunk", [(37, 8), (1, 64), (16, 16)])
def test_values_and_gradients_against_float64_scan(scalar, t, chunk):
    _against_float64(_inputs(2, t, 2, 8, 4, scalar=scalar), chunk)


@pytest.mark.parametrize("scalar", [False, True])
def test_resets_and_unit_gates(scalar):
    # -inf (a full reset), 0 (no decay) and a gate below the float32 reset floor, inside chunks.
    q, k, v, g, h0 = _inputs(1, 21, 2, 4, 3, scalar=scalar, seed=5)
    g = g.at[:, 0].set(0.0).at[:, 3].set(-jnp.inf).at[:, 4].set(0.0).at[:, 9].set(-200.0)
    g = g.at[:, 10:14].set(-jnp.inf).at[:, 20].set(-jnp.inf)
    _against_float64((q, k, v, g, h0), 8)


def test_reset_in_one_key_dimension_only():
    q, k, v, g, h0 = _inputs(1, 12, 1, 4, 2, seed=7)
    _against_float64((q, k, v, g.at[0, 5, 0, 1].set(-jnp.inf), h0), 8)


def test_large_log_decay_span_takes_the_exact_path():
    # Gates of -9 per token span more than 43 inside a chunk of 8: the pairwise fallback.
    q, k, v, g, h0 = _inputs(1, 19, 2, 4, 3, lo=-9.0, seed=9)
    _against_float64((q, k, v, g - 4.0, h0), 8)


def test_factorised_and_pairwise_diagonals_agree():
    q, k, v, g, _ = _inputs(3, 16, 2, 8, 1, seed=11)
    blocks = [x.reshape(3, 2, 8, 2, x.shape[-1]) for x in (q, k, g)]
    fast = gla._diagonal_factorised(*blocks)
    exact = gla._diagonal_pairwise(*blocks, gla._reset_floor(np.float32), False)
    np.testing.assert_allclose(fast, exact, rtol=2e-5, atol=2e-5)


def test_matches_flash_linear_attention_naive_reference():
    q, k, v, g, h0 = _inputs(2, 23, 3, 8, 5, lo=-0.5, seed=13)
    o, s = hj.gated_linear_attention(q, k, v, g, initial_state=h0, chunk_size=16)
    o_ref, s_ref = fla_naive(q, k, v, g, h0)
    assert _rel(o, o_ref) < 1e-5 and _rel(s, s_ref) < 1e-5


def test_scalar_gate_is_the_broadcast_vector_gate():
    q, k, v, g, h0 = _inputs(1, 13, 2, 4, 3, scalar=True, seed=15)
    wide = jnp.broadcast_to(g[..., None], q.shape)
    a = hj.gated_linear_attention(q, k, v, g, initial_state=h0, chunk_size=4)
    b = hj.gated_linear_attention(q, k, v, wide, initial_state=h0, chunk_size=4)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=2e-5, atol=2e-5)


def test_default_scale_no_state_and_chunk_size_independence():
    q, k, v, g, _ = _inputs(1, 10, 1, 4, 2, seed=17)
    o, s = hj.gated_linear_attention(q, k, v, g)
    o2, s2 = hj.gated_linear_attention(q, k, v, g, scale=0.5, chunk_size=3)
    np.testing.assert_allclose(o2, o * (0.5 / 4**-0.5), rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(s2, s, rtol=2e-5, atol=2e-6)


def test_empty_time_axis():
    q, k, v, g, h0 = _inputs(1, 0, 2, 4, 3)
    o, s = hj.gated_linear_attention(q, k, v, g, initial_state=h0)
    assert o.shape == (1, 0, 2, 3) and o.dtype == jnp.float32
    np.testing.assert_array_equal(s, h0)
    o, s = hj.gated_linear_attention(q, k, v, g)
    assert s.shape == (1, 2, 4, 3) and not np.any(s)


# --- derivatives of every order and residuals ---------------------------------------------------


def test_check_grads_order_2(x64):
    # One gate per head at order 2; a gate per key dimension (a lax.cond of two diagonals, each
    # compiled) at order 1 here, its second derivatives against the scan's in the next test.
    args = _inputs(1, 5, 1, 2, 2, scalar=True, lo=-0.8, seed=19, dtype=np.float64)
    check_grads(_loss(_ours(2)), args, order=2, modes=["fwd", "rev"])
    args = _inputs(1, 3, 1, 2, 2, lo=-0.8, seed=19, dtype=np.float64)
    check_grads(_loss(_ours(2)), args, order=1, modes=["fwd", "rev"])


def test_jvp_hessian_and_forward_over_reverse_match_the_scan():
    args = _inputs(1, 6, 1, 2, 2, seed=21)
    kd = 2
    ref = _loss(lambda *a: scan_reference(*a, kd**-0.5))
    ours = _loss(_ours(4))
    tangents = _inputs(1, 6, 1, 2, 2, seed=31)
    np.testing.assert_allclose(
        jax.jvp(ours, args, tangents)[1], jax.jvp(ref, args, tangents)[1], rtol=1e-4
    )
    hess = jax.jit(jax.hessian(ours, argnums=3))(*args)
    hess_ref = jax.hessian(ref, argnums=3)(*args)
    np.testing.assert_allclose(hess, hess_ref, rtol=1e-4, atol=1e-4)

    def hvp(f):
        return jax.jvp(jax.grad(f, argnums=0), args, tangents)[1]

    np.testing.assert_allclose(hvp(ours), hvp(ref), rtol=1e-4, atol=1e-4)


def test_no_nan_in_derivatives_at_resets():
    q, k, v, g, h0 = _inputs(1, 9, 1, 3, 2, seed=23)
    g = g.at[:, 2].set(-jnp.inf).at[:, 3].set(-jnp.inf)
    grads = jax.grad(_loss(_ours(4)), argnums=range(5))(q, k, v, g, h0)
    hess = jax.hessian(_loss(_ours(4)), argnums=0)(q, k, v, g, h0)
    for x in (*grads, hess):
        assert np.all(np.isfinite(np.asarray(x)))
    assert not np.any(grads[3][:, 2:4])  # the reset gates themselves get no gradient


@pytest.mark.parametrize("scalar", [False, True])
def test_saved_residuals_are_inputs_and_chunk_boundary_states(capsys, scalar):
    b, t, h, kd, vd, chunk = 2, 20, 3, 4, 5, 8
    args = _inputs(b, t, h, kd, vd, scalar=scalar)

    def loss(q, k, v, g, h0):  # linear in the outputs: the loss itself saves nothing
        o, s = _ours(chunk)(q, k, v, g, h0)
        return jnp.sum(o) + jnp.sum(s)

    lines = saved_residuals(capsys, loss, *args)
    args_lines = [line for line in lines if "from the argument" in line]
    others = [line for line in lines if "from the argument" not in line]
    # q, k, v, log_g (initial_state enters the tangent only through the states).
    assert [line.split()[-1] for line in args_lines] == ["q", "k", "v", "g"], lines
    # The states before each of the 3 chunks, [T/C, B, H, K, V], and nothing per token.
    assert len(others) == 1 and others[0].startswith("f32[3,2,3,4,5] "), lines


def test_memory_is_linear_in_time_and_below_the_token_scan():
    def temp(fn, t):
        shapes = [(1, t, 2, 32), (1, t, 2, 32), (1, t, 2, 32), (1, t, 2, 32), (1, 2, 32, 32)]
        specs = [jax.ShapeDtypeStruct(s, jnp.float32) for s in shapes]
        compiled = jax.jit(jax.grad(_loss(fn), argnums=range(5))).lower(*specs).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    ours = [temp(_ours(32), t) for t in (256, 1024)]
    token = temp(lambda *a: scan_reference(*a, 0.25), 1024)
    assert ours[1] <= 4.2 * ours[0], ours
    # At this small K = V = 32 the chunks' own buffers weigh: 0.5x. At the benchmark's shape
    # (python -m hadamard_jax.bench.linear_attention) it is 0.16x.
    assert ours[1] <= 0.6 * token, (ours, token)


# --- dtypes -------------------------------------------------------------------------------------


def test_bfloat16_in_bfloat16_out_float32_state():
    args = _inputs(1, 19, 2, 8, 4, seed=25)
    o32, s32 = hj.gated_linear_attention(*args[:4], chunk_size=8)
    o, s = hj.gated_linear_attention(*(x.astype(jnp.bfloat16) for x in args[:4]), chunk_size=8)
    assert o.dtype == jnp.bfloat16 and s.dtype == jnp.float32
    assert _rel(o, o32) < 3e-2 and _rel(s, s32) < 3e-2
    grads = jax.grad(
        lambda q: jnp.sum(hj.gated_linear_attention(q, *args[1:4], chunk_size=8)[0]).astype(
            jnp.float32
        )
    )(args[0].astype(jnp.bfloat16))
    assert grads.dtype == jnp.bfloat16


def test_integer_gates_and_variables_are_accepted():
    from flax import nnx

    q, k, v, g, h0 = _inputs(1, 4, 1, 2, 2)
    o, _ = hj.gated_linear_attention(nnx.Param(q), k, v, jnp.zeros((1, 4, 1), jnp.int32))
    o_ref, _ = hj.gated_linear_attention(q, k, v, jnp.zeros((1, 4, 1)))
    np.testing.assert_allclose(o, o_ref)


# --- the decode step ----------------------------------------------------------------------------


@pytest.mark.parametrize("scalar", [False, True])
def test_step_equals_the_parallel_form(scalar):
    q, k, v, g, h0 = _inputs(2, 7, 2, 4, 3, scalar=scalar, seed=27)
    g = g.at[:, 2].set(-jnp.inf)
    o, s = hj.gated_linear_attention(q, k, v, g, initial_state=h0, chunk_size=4, scale=0.7)
    state, outs = h0, []
    for t in range(7):
        o_t, state = hj.gated_linear_attention_step(
            q[:, t], k[:, t], v[:, t], g[:, t], state, scale=0.7
        )
        outs.append(o_t)
    np.testing.assert_allclose(jnp.stack(outs, axis=1), o, rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(state, s, rtol=2e-5, atol=2e-5)


def test_step_gradients_have_no_nan_at_a_reset():
    q, k, v, g = (x[:, 0] for x in _inputs(1, 1, 1, 2, 2)[:4])
    state = jnp.ones((1, 1, 2, 2))
    grads = jax.grad(
        lambda g, s: jnp.sum(hj.gated_linear_attention_step(q, k, v, g, s)[0]), argnums=(0, 1)
    )(g.at[0, 0, 0].set(-jnp.inf), state)
    assert all(np.all(np.isfinite(np.asarray(x))) for x in grads)


# --- bad input ----------------------------------------------------------------------------------

_Q = np.zeros((1, 4, 2, 3), np.float32)
_V = np.zeros((1, 4, 2, 5), np.float32)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(q=_Q[0]), ValueError, r"q must have rank 4.*q.shape=\(4, 2, 3\)"),
        (dict(k=_Q[:, :3]), ValueError, r"k must have q's shape.*k.shape=\(1, 3, 2, 3\)"),
        (dict(v=_V[:, :, :1]), ValueError, r"v must be .*v.shape=\(1, 4, 1, 5\)"),
        (dict(log_g=_Q[..., :2]), ValueError, r"log_g must be q's shape.*\(1, 4, 2, 2\)"),
        (
            dict(initial_state=np.zeros((1, 2, 3, 4))),
            ValueError,
            r"initial_state must be \[B, H, K, V\] = \(1, 2, 3, 5\)",
        ),
        (dict(chunk_size=0), ValueError, r"chunk_size must be >= 1"),
        (dict(chunk_size=8.0), TypeError, r"chunk_size must be a static Python int"),
        (dict(scale=float("nan")), ValueError, r"scale must be"),
        (dict(q=_Q.astype(np.complex64)), TypeError, r"'q' has complex dtype"),
        (dict(log_g="x"), TypeError, r"'log_g' must be an array"),
    ],
)
def test_bad_input(kwargs, error, match):
    args = dict(q=_Q, k=_Q, v=_V, log_g=_Q, initial_state=None, chunk_size=2, scale=None)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        hj.gated_linear_attention(
            args.pop("q"), args.pop("k"), args.pop("v"), args.pop("log_g"), **args
        )


def test_step_bad_input():
    with pytest.raises(ValueError, match=r"state must be \[B, H, K, V\]"):
        hj.gated_linear_attention_step(_Q[:, 0], _Q[:, 0], _V[:, 0], _Q[:, 0], np.zeros((1, 2)))
    with pytest.raises(ValueError, match=r"q must have rank 3"):
        hj.gated_linear_attention_step(_Q, _Q, _V, _Q, np.zeros((1, 2, 3, 5)))
