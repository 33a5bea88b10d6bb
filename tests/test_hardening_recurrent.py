"""Regression tests for the recurrences (issue 22, items 6 and 7, and the fidelity items).

* Explicit mesh axes with mixed shardings: a replicated initial state with batch- and
  time-sharded inputs, only one of ``a``, ``b`` sharded along time, a replicated time-invariant
  ``a``: ``linear_scan``, ``log_linear_scan``, ``RGLRU``, ``MinGRU`` (NNX and Linen) equal
  their one-device values, gradients and tangents.
* An empty time axis: empty results of the right shape and dtype, zero gradients, and the
  layers' last state is the initial one, as ``lax.scan`` returns its carry.
* RG-LRU as recurrentgemma runs it: recurrentgemma-shaped arrays (random) load into the NNX and
  Linen modules as they are, and values and gradients equal a port of recurrentgemma's
  ``RGLRU`` (``recurrentgemma/jax/layers.py``: ``BlockDiagonalLinear``, ``rnn_scan``,
  ``sqrt_bound_derivative``), its sampling mode (one token per call) included.
* minGRU's initial state: the state itself; the paper's parallel form from ``g(h_0)`` is
  ``initial_state=g(h_0)``; decode step, parallel form and a sequence cut in two agree.
* ``linear_scan.ALGORITHMS`` and ``algorithm=``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hadamard_jax import linen as hl
from hadamard_jax import nnx as hn
from tests.utils import assert_tree_allclose, normal, uniform

TOL = dict(rtol=2e-5, atol=2e-5)

# --- item 6: Explicit mesh axes with mixed shardings --------------------------------------------


# --- item 7: an empty time axis -----------------------------------------------------------------


def test_empty_time_axis_layers():
    x = jnp.zeros((2, 0, 4))
    h0 = normal(0, (2, 4))
    nnx_layers = [hn.RGLRU(4, num_heads=2, rngs=nnx.Rngs(0)), hn.MinGRU(4, 4, rngs=nnx.Rngs(0))]
    linen_layers = [hl.RGLRU(4, num_heads=2), hl.MinGRU(4)]
    for layer, linen in zip(nnx_layers, linen_layers):
        variables = linen.init(jax.random.key(0), x)
        for start in (None, h0):
            for h, last in (layer(x, start), linen.apply(variables, x, start)):
                assert h.shape == (2, 0, 4) and h.dtype == jnp.float32
                want = jnp.zeros((2, 4)) if start is None else start
                np.testing.assert_array_equal(last, want)  # lax.scan's carry: the start
        # Gradients: the last state is the initial one.
        g = jax.grad(lambda h0, layer=layer: jnp.sum(layer(x, h0)[1] * h0))(h0)
        np.testing.assert_allclose(g, 2 * h0)
    # With segment positions (none there to reset).
    h, last = nnx_layers[0](x, h0, segment_pos=jnp.zeros((2, 0), jnp.int32))
    assert h.shape == (2, 0, 4)
    np.testing.assert_array_equal(last, h0)


# --- RG-LRU: a port of recurrentgemma's RGLRU (recurrentgemma/jax/layers.py) --------------------


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def rg_sqrt_bound_derivative(x, max_gradient):
    return jnp.sqrt(x)


def _rg_sqrt_fwd(x, max_gradient):
    return jnp.sqrt(x), (x,)


def _rg_sqrt_bwd(max_gradient, res, g):
    (x,) = res
    x_pre = jnp.maximum(x, 1 / (4 * max_gradient**2))
    return jax.vjp(jnp.sqrt, x_pre)[1](g)


rg_sqrt_bound_derivative.defvjp(_rg_sqrt_fwd, _rg_sqrt_bwd)


def rg_block_diagonal_linear(params, x):
    """``BlockDiagonalLinear.__call__``: ``... (h i) -> ... h i``, einsum, + b, flatten."""
    w, b = params["w"], params["b"]
    heads = w.shape[0]
    x = x.reshape(*x.shape[:-1], heads, x.shape[-1] // heads)
    y = jnp.einsum("... h i, h i j -> ... h j", x, w) + b
    return y.reshape(*y.shape[:-2], -1)


def rg_rnn_scan(x, a, reset, h0):
    """``rnn_scan`` with ``LINEAR_NATIVE`` (``lru_linear_scan``), accumulating in float32."""
    a = a * (1 - reset)[..., None]
    if x.shape[1] == 1:  # sampling mode
        if h0 is None:
            return x, x[:, 0].astype(jnp.float32)
        y = a.astype(jnp.float32) * h0[:, None] + x.astype(jnp.float32)
        return y.astype(x.dtype), y[:, -1]

    def body_fn(h_prev, current_inputs):
        x_t, a_t = current_inputs
        h_t = a_t.astype(jnp.float32) * h_prev + x_t.astype(jnp.float32)
        return h_t, h_t.astype(x.dtype)

    def one(x, h0, a):
        init = jnp.zeros(x.shape[1:], jnp.float32) if h0 is None else h0
        h_last, y = jax.lax.scan(body_fn, init=init, xs=(x, a))
        return y, h_last

    return jax.vmap(one, in_axes=(0, None if h0 is None else 0, 0))(x, h0, a)


@jax.numpy_rank_promotion("allow")  # as recurrentgemma runs it (the suite raises)
def rg_rglru(params, x, segment_pos, cache=None):
    """``RGLRU.__call__`` (recurrentgemma), ``x [B, T, width]``, ``segment_pos [B, T]``."""
    reset = segment_pos == 0
    gate_x = jax.nn.sigmoid(rg_block_diagonal_linear(params["input_gate"], x))
    gate_a = jax.nn.sigmoid(rg_block_diagonal_linear(params["a_gate"], x))
    log_a = -8.0 * gate_a * jax.nn.softplus(params["a_param"])
    a = jnp.exp(log_a)
    a_squared = jnp.exp(2 * log_a)
    gated_x = x * gate_x
    multiplier = rg_sqrt_bound_derivative(1 - a_squared, 1000)
    multiplier = reset[..., None] + (1 - reset)[..., None] * multiplier
    normalized_x = gated_x * multiplier.astype(x.dtype)
    return rg_rnn_scan(normalized_x, a, reset, cache)


def rg_params(width, heads, seed=0):
    """Random arrays with the names and shapes of a recurrentgemma ``RGLRU`` checkpoint."""
    block = width // heads

    def gate(s):
        return {
            "w": normal(s, (heads, block, block), scale=block**-0.5),
            "b": normal(s + 1, (heads, block), scale=0.3),
        }

    # a_param as rnn_param_init puts it: the base decay exp(-softplus(a_param)) in [0.9, 0.999].
    a = uniform(seed, (width,), 0.9, 0.999)
    a_param = jnp.log(jnp.expm1(-jnp.log(a)))
    return {"a_param": a_param, "input_gate": gate(seed + 10), "a_gate": gate(seed + 20)}


B, T, W = 2, 6, 8
# Row 0: recurrentgemma's usual arange(T); row 1: a continuation, then a new document at t=2.
SEGMENT_POS = jnp.array([[0, 1, 2, 3, 4, 5], [3, 4, 0, 1, 2, 3]], jnp.int32)


def _loaded(params, heads):
    """The NNX layer with ``params`` loaded as they are, and the Linen layer and variables."""
    layer = hn.RGLRU(W, num_heads=heads, rngs=nnx.Rngs(0))
    want_shapes = jax.tree.map(jnp.shape, params)
    assert jax.tree.map(jnp.shape, nnx.to_pure_dict(nnx.state(layer, nnx.Param))) == want_shapes
    nnx.update(layer, params)
    linen = hl.RGLRU(W, num_heads=heads)
    x = jnp.zeros((B, T, W))
    assert jax.tree.map(jnp.shape, linen.init(jax.random.key(0), x)["params"]) == want_shapes
    return layer, linen


def test_rglru_equals_recurrentgemma():
    heads = 2
    params = rg_params(W, heads, seed=heads)
    layer, linen = _loaded(params, heads)
    x = normal(1, (B, T, W))
    cache = normal(2, (B, W))
    graphdef = nnx.graphdef(layer)

    def nnx_apply(p, x, cache, pos):
        return nnx.merge(graphdef, nnx.State(jax.tree.map(nnx.Param, p)))(x, cache, segment_pos=pos)

    def linen_apply(p, x, cache, pos):
        return linen.apply({"params": p}, x, cache, segment_pos=pos)

    def ref_apply(p, x, cache, pos):
        return rg_rglru(p, x, pos, cache)

    def run(apply):
        def loss(p, x, cache):
            y, last = apply(p, x, cache, SEGMENT_POS)
            return jnp.sum(y * jnp.sin(y)) + jnp.sum(last * cache), (y, last)

        @jax.jit
        def go(p, x, cache):
            (_, out), grads = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(p, x, cache)
            # From no cache, and with no resets but position 0 (the first output too).
            first = apply(p, x, None, jnp.broadcast_to(jnp.arange(T), (B, T)))
            return out, grads, first

        return go(params, x, cache)

    want = run(ref_apply)
    for apply in (nnx_apply, linen_apply):
        got = run(apply)
        assert_tree_allclose(got[0], want[0], **TOL)
        assert_tree_allclose(got[2], want[2], **TOL)
        assert_tree_allclose(got[1], want[1], rtol=1e-4, atol=1e-5)
    # The reset ignores the cache: row 0 starts at position 0.
    y0 = layer(x, cache, segment_pos=SEGMENT_POS)[0]
    np.testing.assert_array_equal(y0[0], layer(x, None, segment_pos=SEGMENT_POS)[0][0])
    # Without segment_pos: no resets, every input scaled (a continuation).
    np.testing.assert_allclose(
        layer(x, cache)[0], ref_apply(params, x, cache, jnp.ones((B, T), jnp.int32))[0], **TOL
    )


def test_rglru_decode_equals_recurrentgemma_sampler():
    """recurrentgemma's sampler: the prompt in one call, then one token per call (T = 1)."""
    heads, prompt = 2, 3
    params = rg_params(W, heads, seed=5)
    layer, linen = _loaded(params, heads)
    variables = {"params": params}
    x = normal(3, (B, T, W))
    pos = jnp.broadcast_to(jnp.arange(T), (B, T))
    # A new document at the decode step t = 4 in row 1.
    pos = pos.at[1, 4:].set(jnp.array([0, 1]))
    y_ref, cache = rg_rglru(params, x[:, :prompt], pos[:, :prompt])
    y_nnx, state = layer(x[:, :prompt], segment_pos=pos[:, :prompt])
    np.testing.assert_allclose(y_nnx, y_ref, **TOL)
    lin_state = state
    step = nnx.jit(lambda m, s, x_t, p: m.step(s, x_t, segment_pos=p))
    for t in range(prompt, T):
        y_t, cache = rg_rglru(params, x[:, t : t + 1], pos[:, t : t + 1], cache)
        state, out = step(layer, state, x[:, t], pos[:, t])
        lin_state, _ = linen.apply(
            variables, lin_state, x[:, t], segment_pos=pos[:, t], method="step"
        )
        np.testing.assert_allclose(out, y_t[:, 0], **TOL)
        np.testing.assert_allclose(state, cache, **TOL)
        np.testing.assert_allclose(lin_state, cache, **TOL)
    # The parallel form over the whole sequence gives the same last state.
    np.testing.assert_allclose(layer(x, segment_pos=pos)[1], state, **TOL)
    # The sampler's first token from no cache: the input, unscaled at position 0.
    y1, _ = rg_rglru(params, x[:, :1], jnp.zeros((B, 1), jnp.int32))
    first, _ = layer.step(None, x[:, 0], segment_pos=jnp.zeros((B,), jnp.int32))
    np.testing.assert_allclose(first, y1[:, 0], **TOL)


def test_rglru_num_heads_and_segment_pos_errors():
    with pytest.raises(ValueError, match=r"RGLRU: num_heads=3 must divide features=8"):
        hn.RGLRU(8, num_heads=3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"RGLRU: num_heads"):
        hl.RGLRU(8, num_heads=0)
    layer = hn.RGLRU(4, num_heads=2, rngs=nnx.Rngs(0))
    x = jnp.ones((2, 3, 4))
    with pytest.raises(ValueError, match=r"RGLRU: segment_pos.shape=\(3,\) must be \(2, 3\)"):
        layer(x, segment_pos=jnp.arange(3))
    with pytest.raises(TypeError, match=r"RGLRU: segment_pos must be an integer array"):
        layer(x, segment_pos=jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"RGLRU: segment_pos.shape"):
        layer.step(None, x[:, 0], segment_pos=jnp.zeros((2, 3), jnp.int32))
    with pytest.raises(ValueError, match=r"RGLRU: segment_pos.shape"):
        hl.RGLRU(4).init(jax.random.key(0), x, segment_pos=jnp.zeros((3,), jnp.int32))


# --- minGRU: the initial state ------------------------------------------------------------------


@jax.numpy_rank_promotion("allow")
def paper_min_gru_parallel(params, x, h0_pre):
    """The paper's log-space parallel minGRU (Feng et al. 2024, appendix), from ``g(h_0)``.

    ``log_h_0 = log_g(h_0)``; ``parallel_scan_log(log_coeffs, cat([log_h_0, log_z +
    log_tilde_h]))`` with ``a_star = pad(cumsum(log_coeffs))``, ``log_h = a_star +
    logcumsumexp(log_values - a_star)``, ``exp(log_h)[:, 1:]``.
    """

    def log_g(v):
        return jnp.where(v >= 0, jnp.log(jax.nn.relu(v) + 0.5), -jax.nn.softplus(-v))

    k = x @ params["gate_kernel"] + params["gate_bias"]
    log_z, log_coeffs = -jax.nn.softplus(-k), -jax.nn.softplus(k)
    log_tilde_h = log_g(x @ params["candidate_kernel"] + params["candidate_bias"])
    log_values = jnp.concatenate([log_g(h0_pre)[:, None], log_z + log_tilde_h], axis=1)
    a_star = jnp.pad(jnp.cumsum(log_coeffs, axis=1), ((0, 0), (1, 0), (0, 0)))
    log_h = a_star + jax.lax.cumlogsumexp(log_values - a_star, axis=1)
    return jnp.exp(log_h)[:, 1:]


def test_min_gru_initial_state_is_the_state():
    layer = hn.MinGRU(4, 5, rngs=nnx.Rngs(3))
    layer.gate_bias[...] = normal(4, (5,), scale=0.3)
    layer.candidate_bias[...] = normal(5, (5,), scale=0.3)
    params = nnx.to_pure_dict(nnx.state(layer, nnx.Param))
    x = normal(6, (2, 7, 4))
    h0_pre = normal(7, (2, 5))
    g_h0 = jnp.where(h0_pre >= 0, h0_pre + 0.5, jax.nn.sigmoid(h0_pre))
    # The paper's parallel form from g(h_0) is initial_state=g(h_0): the state itself.
    want = paper_min_gru_parallel(params, x, h0_pre)
    h, last = layer(x, g_h0)
    np.testing.assert_allclose(h, want, **TOL)
    linen_h = hl.MinGRU(5).apply({"params": params}, x, g_h0)[0]
    np.testing.assert_allclose(linen_h, want, **TOL)
    # ... and not g(initial_state): passing the pre-activation gives another sequence.
    assert not np.allclose(layer(x, h0_pre)[0], want, **TOL)
    # The decode step from the same state agrees, and so does a sequence cut in two.
    state, step = g_h0, nnx.jit(lambda m, s, x_t: m.step(s, x_t))
    for t in range(7):
        state, y = step(layer, state, x[:, t])
        np.testing.assert_allclose(y, h[:, t], **TOL)
    np.testing.assert_allclose(state, last, **TOL)
    head, mid = layer(x[:, :3], g_h0)
    tail, end = layer(x[:, 3:], mid)
    np.testing.assert_allclose(jnp.concatenate([head, tail], axis=1), h, **TOL)
    np.testing.assert_allclose(end, last, **TOL)


# --- the algorithms of linear_scan --------------------------------------------------------------
