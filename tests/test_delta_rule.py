"""gated_delta_rule and gated_delta_rule_step: values, derivatives, residuals, dtypes, errors.

References: a token-by-token ``lax.scan`` in float64 (differentiated by JAX's autodiff), and
flash-linear-attention's ``naive_recurrent_gated_delta_rule`` ported to NumPy float64 (its loop:
decay the state, ``delta = beta (v - S^T k)``, ``S += k delta^T``, ``o = (scale q)^T S``).
"""

from __future__ import annotations

import contextlib
import io
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from hadamard_jax import gated_delta_rule, gated_delta_rule_step
from tests.utils import check_grads

NAMES = ("q", "k", "v", "log_alpha", "beta", "initial_state")


def _inputs(seed, b, t, h, kd, vd, *, edges=False, dtype=np.float64):
    """NumPy inputs with L2-normalised keys; ``edges`` puts -inf/0 gates and 0/1 betas in."""
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((b, t, h, kd))
    k = rng.standard_normal((b, t, h, kd))
    k /= np.linalg.norm(k, axis=-1, keepdims=True)
    v = rng.standard_normal((b, t, h, vd))
    log_alpha = -rng.uniform(0.0, 1.0, (b, t, h))
    beta = rng.uniform(0.0, 1.0, (b, t, h))
    s0 = rng.standard_normal((b, h, kd, vd))
    if edges and t > 5:
        log_alpha[0, 3, 0] = -np.inf  # a reset in the middle of a chunk
        log_alpha[-1, t - 1, :] = -np.inf  # at the last token
        log_alpha[:, 1, :] = 0.0
        beta[:, 2, :] = 0.0
        beta[0, 4, :] = 1.0
    return [x.astype(dtype) for x in (q, k, v, log_alpha, beta, s0)]


def _scan_reference(q, k, v, log_alpha, beta, s0, scale):
    """Token by token, in the inputs' dtype: ``(o, final_state)``."""

    def step(s, x):
        q_t, k_t, v_t, la_t, b_t = x
        s = jnp.exp(la_t)[..., None, None] * s
        s = (
            s
            - b_t[..., None, None]
            * k_t[..., :, None]
            * jnp.einsum("bhk,bhkv->bhv", k_t, s)[..., None, :]
        )
        s = s + b_t[..., None, None] * k_t[..., :, None] * v_t[..., None, :]
        return s, scale * jnp.einsum("bhk,bhkv->bhv", q_t, s)

    xs = tuple(jnp.moveaxis(x, 1, 0) for x in (q, k, v, log_alpha, beta))
    s, o = lax.scan(step, s0, xs)
    return jnp.moveaxis(o, 0, 1), s


def _fla_naive(q, k, v, beta, g, scale, initial_state):
    """fla's ``naive_recurrent_gated_delta_rule`` in NumPy float64 (its argument order)."""
    q, k, v, beta, g = (np.swapaxes(np.asarray(x, np.float64), 1, 2) for x in (q, k, v, beta, g))
    b, h, t, kd = k.shape
    o = np.zeros((b, h, t, v.shape[-1]))
    s = np.array(initial_state, np.float64)
    q = q * scale
    for i in range(t):
        s = s * np.exp(g[:, :, i])[..., None, None]
        delta = beta[:, :, i, None] * (v[:, :, i] - (s * k[:, :, i][..., None]).sum(-2))
        s = s + k[:, :, i][..., :, None] * delta[..., None, :]
        o[:, :, i] = np.einsum("bhk,bhkv->bhv", q[:, :, i], s)
    return np.swapaxes(o, 1, 2), s


def _loss(f, wo, ws):
    def loss(*args):
        o, s = f(*args)
        return jnp.sum(o * wo) + jnp.sum(s * ws)

    return loss


def _close(actual, desired, rtol):
    actual, desired = np.asarray(actual, np.float64), np.asarray(desired, np.float64)
    assert np.all(np.isfinite(actual))
    scale = max(np.max(np.abs(desired)), 1e-30) if desired.size else 1.0
    np.testing.assert_allclose(actual, desired, rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize(
    "t, chunk, edges",
    [(13, 4, True), (16, 8, False), (1, 64, False), (7, 64, True)],
    ids=["T13-C4-edges", "T16-C8", "T1", "T7-C64-edges"],
)
def test_values_and_gradients_match_float64_scan(x64, t, chunk, edges):
    """float32 values and gradients of every argument equal a float64 token scan to 1e-5."""
    b, h, kd, vd = 2, 2, 4, 3
    args64 = [jnp.asarray(x) for x in _inputs(t, b, t, h, kd, vd, edges=edges)]
    args32 = [x.astype(jnp.float32) for x in args64]
    rng = np.random.default_rng(1)
    wo, ws = rng.standard_normal((b, t, h, vd)), rng.standard_normal((b, h, kd, vd))
    scale = kd**-0.5

    def op(*a):
        return gated_delta_rule(*a[:5], initial_state=a[5], chunk_size=chunk)

    o, s = jax.jit(op)(*args32)
    assert o.dtype == s.dtype == jnp.float32
    ro, rs = _scan_reference(*args64, scale)
    _close(o, ro, 1e-5)
    _close(s, rs, 1e-5)
    fo, fs = _fla_naive(*args64[:3], args64[4], args64[3], scale, args64[5])
    _close(o, fo, 1e-5)
    _close(s, fs, 1e-5)

    grads = jax.jit(jax.grad(_loss(op, wo.astype(np.float32), ws.astype(np.float32)), range(6)))(
        *args32
    )
    ref = jax.grad(_loss(lambda *a: _scan_reference(*a, scale), wo, ws), range(6))(*args64)
    for name, g, r in zip(NAMES, grads, ref):
        assert g.dtype == jnp.float32, name
        _close(g, r, 1e-5)


def test_reset_cuts_the_past():
    """log_alpha = -inf at t: outputs from t on have exactly zero gradient wrt earlier inputs."""
    q, k, v, la, beta, s0 = (jnp.asarray(x, jnp.float32) for x in _inputs(3, 1, 9, 1, 3, 2))
    la = la.at[0, 5, 0].set(-jnp.inf)

    def later(v, s0):
        o, s = gated_delta_rule(q, k, v, la, beta, initial_state=s0, chunk_size=4)
        return jnp.sum(o[:, 5:]) + jnp.sum(s)

    dv, ds0 = jax.grad(later, (0, 1))(v, s0)
    assert np.all(np.asarray(dv[:, :5]) == 0.0) and np.all(np.asarray(ds0) == 0.0)
    assert np.all(np.isfinite(np.asarray(dv))) and np.any(np.asarray(dv[:, 5:]) != 0.0)


def test_check_grads_order_two(x64):
    """jvp/vjp up to order 2 against finite differences, every argument."""
    q, k, v, la, beta, s0 = (jnp.asarray(x) for x in _inputs(5, 1, 3, 1, 2, 2))
    la = la.at[0, 1, 0].set(0.0)  # T = 3, C = 2: two chunks, the second padded

    def f(q, k, v, la, beta, s0):
        o, s = gated_delta_rule(q, k, v, la, beta, initial_state=s0, chunk_size=2)
        return jnp.sum(jnp.sin(o)) + jnp.sum(s * s)

    check_grads(f, (q, k, v, la, beta, s0), order=2, modes=["fwd", "rev"], eps=1e-4)


def test_forward_mode_and_hessian_match_reference(x64):
    """jacfwd, hessian and forward-over-reverse equal the reference's (jitted, in float64)."""
    q, k, v, la, beta, s0 = (jnp.asarray(x) for x in _inputs(6, 1, 6, 1, 2, 2, edges=True))
    scale = 2**-0.5

    def make(f):
        def loss(la, beta):
            o, s = f(q, k, v, la, beta, s0)
            return jnp.sum(jnp.tanh(o)) + jnp.sum(s**2)

        return loss

    ours = make(lambda *a: gated_delta_rule(*a[:5], initial_state=a[5], chunk_size=4))
    ref = make(lambda *a: _scan_reference(*a, scale))
    _close(jax.jit(jax.hessian(ours))(la, beta), jax.hessian(ref)(la, beta), 1e-9)
    jac = jax.jit(jax.jacfwd(lambda la: gated_delta_rule(q, k, v, la, beta, chunk_size=4)[0]))
    jac_ref = jax.jacfwd(lambda la: _scan_reference(q, k, v, la, beta, 0 * s0, scale)[0])
    _close(jac(la), jac_ref(la), 1e-9)

    def hvp(loss, t):  # forward-over-reverse: d/d(beta) of the gradient wrt beta, along t
        return jax.jvp(lambda b: jax.grad(loss, argnums=1)(la, b), (beta,), (t,))[1]

    ones = jnp.ones_like(beta)
    _close(jax.jit(lambda t: hvp(ours, t))(ones), hvp(ref, ones), 1e-9)


def test_saved_residuals_are_inputs_and_chunk_states():
    """Reverse mode keeps the (chunked) inputs and [N, B, H, K, V] boundary states, nothing else.

    B=1, T=12, H=2, K=3, V=5, C=4 (N=3): a per-token state would be [3, 1, 2, 4, 3, 5], a
    per-chunk [C, C] matrix [3, 1, 2, 4, 4].
    """
    q, k, v, la, beta, s0 = (jnp.asarray(x, jnp.float32) for x in _inputs(7, 1, 12, 2, 3, 5))

    def loss(q, k, v, la, beta, s0):
        o, s = gated_delta_rule(q, k, v, la, beta, initial_state=s0, chunk_size=4)
        return jnp.sum(o) + jnp.sum(s)

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        jax.ad_checkpoint.print_saved_residuals(loss, q, k, v, la, beta, s0)
    shapes = re.findall(r"^(\w+)\[([\d,]*)\]", buf.getvalue(), flags=re.M)
    floats = sorted(
        tuple(int(d) for d in dims.split(",") if d) for dt, dims in shapes if dt.startswith("f")
    )
    assert (3, 1, 2, 3, 5) in floats  # the chunk-boundary states
    allowed = {
        (),  # scalars
        (3, 1, 2, 4, 3),  # q, k chunked: [N, B, H, C, K]
        (3, 1, 2, 4, 5),  # v
        (3, 1, 2, 4),  # log_alpha, beta
        (3, 1, 2, 3, 5),  # the states entering each chunk
    }
    assert set(floats) <= allowed, floats
    state_like = [s for s in floats if s == (3, 1, 2, 3, 5)]
    assert len(state_like) == 1, floats
    big = sum(int(np.prod(s)) for s in floats)
    assert big <= 2 * 12 * 2 * 3 + 12 * 2 * 5 + 2 * 12 * 2 + 3 * 2 * 3 * 5 + 8, floats


def test_bfloat16_in_bfloat16_out():
    """16-bit inputs give 16-bit outputs, close to the float32 result."""
    args = [jnp.asarray(x, jnp.float32) for x in _inputs(8, 1, 10, 2, 4, 4)]
    o32, s32 = gated_delta_rule(*args[:5], initial_state=args[5], chunk_size=4)
    bf = [x.astype(jnp.bfloat16) for x in args]
    o16, s16 = gated_delta_rule(*bf[:5], initial_state=bf[5], chunk_size=4)
    assert o16.dtype == s16.dtype == jnp.bfloat16
    _close(o16, o32, 3e-2)
    _close(s16, s32, 3e-2)
    g = jax.grad(lambda v: jnp.sum(gated_delta_rule(*bf[:2], v, *bf[3:5])[0]))(bf[2])
    assert g.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(g)))


def test_empty_sequence():
    """T = 0: an empty output and the initial state (zeros without one), differentiable."""
    q, k, v, la, beta, s0 = (jnp.asarray(x, jnp.float32) for x in _inputs(9, 2, 0, 3, 4, 2))
    o, s = gated_delta_rule(q, k, v, la, beta, initial_state=s0)
    assert o.shape == (2, 0, 3, 2) and s.shape == (2, 3, 4, 2)
    np.testing.assert_array_equal(s, s0)
    _, s = gated_delta_rule(q, k, v, la, beta)
    np.testing.assert_array_equal(s, np.zeros((2, 3, 4, 2)))
    g = jax.grad(lambda s0: jnp.sum(gated_delta_rule(q, k, v, la, beta, initial_state=s0)[1]))(s0)
    np.testing.assert_array_equal(g, np.ones_like(s0))


def test_step_equals_parallel_form():
    """Stepping token by token (jitted step) gives the chunked outputs and final state."""
    q, k, v, la, beta, s0 = (
        jnp.asarray(x, jnp.float32) for x in _inputs(10, 2, 7, 2, 4, 3, edges=True)
    )
    o, s = gated_delta_rule(q, k, v, la, beta, initial_state=s0, chunk_size=3, scale=0.7)
    step = jax.jit(lambda *a: gated_delta_rule_step(*a, scale=0.7))
    state, outs = s0, []
    for t in range(7):
        o_t, state = step(q[:, t], k[:, t], v[:, t], la[:, t], beta[:, t], state)
        outs.append(o_t)
    _close(jnp.stack(outs, axis=1), o, 1e-5)
    _close(state, s, 1e-5)
    o1, s1 = gated_delta_rule(q[:, :1], k[:, :1], v[:, :1], la[:, :1], beta[:, :1])
    o_t, s_t = gated_delta_rule_step(q[:, 0], k[:, 0], v[:, 0], la[:, 0], beta[:, 0], 0 * s0)
    _close(o_t, o1[:, 0], 1e-6)
    _close(s_t, s1, 1e-6)
    q_b, k_b, v_b, s0_b = (x.astype(jnp.bfloat16) for x in (q[:, 0], k[:, 0], v[:, 0], s0))
    o_b, s_b = gated_delta_rule_step(q_b, k_b, v_b, la[:, 0], beta[:, 0], s0_b)
    assert o_b.dtype == jnp.float32  # promoted with the float32 gates, as jnp would
    assert s_b.dtype == jnp.float32


def _zeros(*shape, dtype=np.float32):
    return np.zeros(shape, dtype)


_GOOD = dict(
    q=_zeros(1, 5, 2, 3),
    k=_zeros(1, 5, 2, 3),
    v=_zeros(1, 5, 2, 4),
    log_alpha=_zeros(1, 5, 2),
    beta=_zeros(1, 5, 2),
)


@pytest.mark.parametrize(
    "change, kwargs, error, match",
    [
        ({"q": _zeros(5, 2, 3)}, {}, ValueError, r"q must have rank 4.*\(5, 2, 3\)"),
        ({"k": _zeros(1, 5, 2, 4)}, {}, ValueError, r"k must have shape.*\(1, 5, 2, 4\)"),
        ({"v": _zeros(1, 4, 2, 4)}, {}, ValueError, r"v must have shape.*\(1, 4, 2, 4\)"),
        ({"log_alpha": _zeros(1, 5, 1)}, {}, ValueError, r"log_alpha must have shape"),
        ({"beta": _zeros(1, 5, 2, 1)}, {}, ValueError, r"beta must have shape"),
        ({}, {"initial_state": _zeros(1, 2, 4, 3)}, ValueError,
         r"initial_state must have shape \[B, H, K, V\] = \(1, 2, 3, 4\)"),
        ({}, {"chunk_size": 0}, ValueError, r"chunk_size must be >= 1"),
        ({}, {"chunk_size": 2.0}, TypeError, r"chunk_size must be a static Python int"),
        ({}, {"scale": float("nan")}, ValueError, r"scale must be a finite number"),
        ({"beta": _zeros(1, 5, 2, dtype=np.int32)}, {}, TypeError, r"'beta' must have a real"),
        ({"q": _zeros(1, 5, 2, 3, dtype=np.complex64)}, {}, TypeError, r"'q' must have a real"),
        ({"v": None}, {}, TypeError, r"'v' must be an array"),
    ],
)  # fmt: skip
def test_bad_input_errors(change, kwargs, error, match):
    args = {**_GOOD, **change}
    with pytest.raises(error, match=match):
        jax.jit(lambda: gated_delta_rule(**args, **kwargs)).trace()  # fails at trace time


@pytest.mark.parametrize(
    "change, error, match",
    [
        ({"state": None}, TypeError, r"'state' must be an array"),
        ({"state": np.zeros((1, 2, 3, 3), np.float32)}, ValueError, r"state must have shape"),
        ({"q": np.zeros((1, 2, 3, 1), np.float32)}, ValueError, r"q must have rank 3"),
        ({"log_alpha": np.zeros((1,), np.float32)}, ValueError, r"log_alpha must have shape"),
    ],
)
def test_step_bad_input_errors(change, error, match):
    args = {k: v[:, 0] for k, v in _GOOD.items()}
    args["state"] = np.zeros((1, 2, 3, 4), np.float32)
    with pytest.raises(error, match=match):
        gated_delta_rule_step(**{**args, **change})


def test_benchmark_rows(monkeypatch):
    """The benchmark's rows at a tiny shape: figures present, gradients agree, memory below."""
    from hadamard_jax.bench import delta_rule as bench

    monkeypatch.setattr(bench, "SHAPE", (1, 2, 8, 8))
    monkeypatch.setattr(bench, "CHUNK", 8)
    bench.compiled_temp_bytes.cache_clear()
    table = bench.rows(t=64, growth=(64,), rounds=1)
    bench.compiled_temp_bytes.cache_clear()
    memory, timed = table
    assert memory["kind"] == "memory" and timed["kind"] == "time"
    assert memory["hadamard_jax_mib"] < memory["plain_chunked_mib"] < memory["token_scan_mib"]
    assert timed["grad_rel_err"] < 1e-5
    assert all(timed[f"{impl}_ms"] > 0 for impl in bench.IMPLS)
    text = "\n".join(bench.markdown(table))
    assert "| 64 |" in text and "grad rel. err." in text


def test_jax_array_objects_and_vmap():
    """``nnx.Param`` inputs are unwrapped; ``vmap`` over an extra axis equals the batched call."""
    from flax import nnx

    args = [jnp.asarray(x, jnp.float32) for x in _inputs(11, 2, 6, 1, 3, 2)]
    o, s = gated_delta_rule(*args[:5], initial_state=args[5], chunk_size=4)
    params = [nnx.Param(x) for x in args]
    o_p, s_p = gated_delta_rule(*params[:5], initial_state=params[5], chunk_size=4)
    np.testing.assert_array_equal(o_p, o)
    np.testing.assert_array_equal(s_p, s)

    def one(q, k, v, la, beta, s0):  # one batch element, restored as a batch of 1
        o, s = gated_delta_rule(
            *(x[None] for x in (q, k, v, la, beta)), initial_state=s0[None], chunk_size=4
        )
        return o[0], s[0]

    o_v, s_v = jax.vmap(one)(*args)
    _close(o_v, o, 1e-6)
    _close(s_v, s, 1e-6)
