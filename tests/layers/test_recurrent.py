"""RGLRU and MinGRU (NNX and Linen): values and gradients against a plain ``lax.scan`` of the
same equations, the decode step against the parallel form, NNX == Linen, transforms, argument
errors, the initialisation of ``a_param``, the bounded square-root derivative, a mesh, an empty
time axis (the last state is the initial one, as ``lax.scan`` returns its carry), RG-LRU against a
port of recurrentgemma's ``RGLRU`` (``recurrentgemma/jax/layers.py``; its sampling mode included)
with recurrentgemma-shaped arrays loaded as they are, and minGRU's initial state (the paper's
parallel form from ``g(h_0)`` is ``initial_state=g(h_0)``)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx

from hadamard_jax import linen as hl
from hadamard_jax import nnx as hn
from hadamard_jax._layers import recurrent as R
from tests.utils import assert_tree_allclose, normal, run_on_8_cpu_devices, uniform

B, T, D, N = 2, 7, 4, 5
TOL = dict(rtol=2e-5, atol=2e-5)


def _x(shape=(B, T, D), seed=0):
    return normal(seed, shape)


def _params(module, names=None):
    """The module's parameters as a plain nested dict (recurrentgemma's tree for RGLRU)."""
    return nnx.to_pure_dict(nnx.state(module, nnx.Param))


# --- plain references: the equations, one lax.scan step at a time ------------------------------


def ref_rglru(params, x, h0, c=8.0):
    # One head: the block-diagonal gates are dense layers (w[0], b[0]).
    def dense(gate, x_t):
        return x_t @ params[gate]["w"][0] + params[gate]["b"][0][None]

    def step(h, x_t):
        r = jax.nn.sigmoid(dense("a_gate", x_t))
        i = jax.nn.sigmoid(dense("input_gate", x_t))
        a = jnp.exp(-c * jax.nn.softplus(params["a_param"])[None] * r)
        h = a * h + jnp.sqrt(1 - a**2) * (i * x_t)
        return h, h

    last, h = jax.lax.scan(step, h0, jnp.swapaxes(x, 0, 1))
    return jnp.swapaxes(h, 0, 1), last


def ref_min_gru(params, x, h0):
    def step(h, x_t):
        z = jax.nn.sigmoid(x_t @ params["gate_kernel"] + params["gate_bias"][None])
        cand = x_t @ params["candidate_kernel"] + params["candidate_bias"][None]
        g = jnp.where(cand >= 0, cand + 0.5, jax.nn.sigmoid(cand))
        h = (1 - z) * h + z * g
        return h, h

    last, h = jax.lax.scan(step, h0, jnp.swapaxes(x, 0, 1))
    return jnp.swapaxes(h, 0, 1), last


def _rglru():
    layer = hn.RGLRU(D, rngs=nnx.Rngs(0))
    # Non-zero biases, so that every parameter matters.
    layer.a_gate.b[...] = 0.1 * _x((1, D), 5)
    layer.input_gate.b[...] = 0.1 * _x((1, D), 6)
    return layer


def _min_gru():
    layer = hn.MinGRU(D, N, rngs=nnx.Rngs(1))
    layer.gate_bias[...] = 0.1 * _x((N,), 7)
    layer.candidate_bias[...] = 0.1 * _x((N,), 8)
    return layer


CASES = {
    "rglru": (_rglru, R.RGLRU_PARAMS, ref_rglru, D),
    "min_gru": (_min_gru, R.MIN_GRU_PARAMS, ref_min_gru, N),
}


def _everything(fn):
    """One jitted function: states from ``h0`` and from zeros, gradients, a forward tangent."""

    def loss(params, x, h0):
        h, last = fn(params, x, h0)
        w = jnp.cos(jnp.arange(h.size, dtype=h.dtype)).reshape(h.shape)
        return jnp.sum(h * w) + jnp.sum(last**2), (h, last)

    @jax.jit
    def run(params, x, h0):
        (_, outs), grads = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(params, x, h0)
        tangent = jax.tree.map(jnp.ones_like, params)
        jvp = jax.jvp(lambda p: fn(p, x, h0)[0], (params,), (tangent,))[1]
        return outs, fn(params, x, None), grads, jvp

    return run


@pytest.mark.parametrize("name", sorted(CASES))
def test_values_and_gradients_match_plain_scan(name):
    make, names, ref, n = CASES[name]
    layer = make()
    params = _params(layer, names)
    x = _x()
    h0 = _x((B, n), 3).at[0, 0].set(0.0)  # zero and negative entries: exact gradients
    graphdef = nnx.graphdef(layer)

    def ours(params, x, h0):
        return nnx.merge(graphdef, nnx.State(jax.tree.map(nnx.Param, params)))(x, h0)

    def plain(params, x, h0):
        return ref(params, x, jnp.zeros((B, n)) if h0 is None else h0)

    got, want = _everything(ours)(params, x, h0), _everything(plain)(params, x, h0)
    assert_tree_allclose(got[:2], want[:2], **TOL)  # values, from h0 and from zeros
    assert_tree_allclose(got[2:], want[2:], rtol=1e-4, atol=1e-5)  # grads, jvp


@pytest.mark.parametrize("name", sorted(CASES))
def test_decode_step_equals_parallel_form(name):
    make, _, _, n = CASES[name]
    layer = make()
    x = _x()
    for h0 in (None, _x((B, n), 4)):
        h, last = layer(x, h0)
        state = h0
        for t in range(T):
            state, y = layer.step(state, x[:, t])
            np.testing.assert_allclose(y, h[:, t], **TOL)
            np.testing.assert_array_equal(y, state)
        np.testing.assert_allclose(state, last, **TOL)
    if name != "rglru":
        return
    # Under jit, as a decoder runs it.
    step = nnx.jit(lambda m, s, x_t: m.step(s, x_t))
    state = jnp.zeros((B, n))
    for t in range(3):
        state, _ = step(layer, state, x[:, t])
    np.testing.assert_allclose(state, layer(x[:, :3])[1], **TOL)


def test_transforms_nnx():
    x = _x()

    # jit, grad, vmap (over the batch: the layer sees [T, d]), remat.
    for layer in (_rglru(), _min_gru()):
        per_example = nnx.vmap(lambda m, x: m(x)[0], in_axes=(None, 0))(layer, x)
        np.testing.assert_allclose(per_example, layer(x)[0], **TOL)

    @nnx.jit
    def grads(m):
        plain = nnx.grad(lambda m: jnp.sum(m(x)[0] ** 2))(m)
        remat = nnx.grad(lambda m: jnp.sum(nnx.remat(lambda m, x: m(x)[0])(m, x) ** 2))(m)
        return plain, remat

    plain, remat = grads(_rglru())  # the jit and grad of MinGRU: the test against lax.scan
    assert_tree_allclose(remat, plain, rtol=1e-5, atol=1e-6)

    # A stack of layers under nnx.scan (and vmap to create it).
    @nnx.split_rngs(splits=3)
    @nnx.vmap(in_axes=(0,), out_axes=0)
    def make(rngs):
        return hn.RGLRU(D, rngs=rngs)

    stack = make(nnx.Rngs(0))
    assert stack.a_param.shape == (3, D)

    def run(stack, x):
        @nnx.scan(in_axes=(0, nnx.Carry), out_axes=nnx.Carry)
        def body(layer, x):
            return x + layer(x)[0]

        return body(stack, x)

    @nnx.jit
    def loss_and_grads(stack):
        return nnx.value_and_grad(lambda s: jnp.sum(run(s, x) ** 2))(stack)

    loss, grads = loss_and_grads(stack)
    want = x
    for i in range(3):
        layer = nnx.merge(nnx.graphdef(stack), jax.tree.map(lambda v, i=i: v[i], nnx.state(stack)))
        want = want + layer(want)[0]
    np.testing.assert_allclose(loss, jnp.sum(want**2), rtol=1e-5)
    assert grads["a_param"].shape == (3, D) and bool(jnp.all(jnp.isfinite(grads["a_param"][...])))


def test_transforms_linen():
    x = _x()

    class Stack(nn.Module):
        @nn.compact
        def __call__(self, x):
            def body(cell, carry, _):
                return carry + cell(carry)[0], None

            scan = nn.scan(
                nn.remat(body),
                variable_axes={"params": 0},
                split_rngs={"params": True},
                length=3,
            )
            x, _ = scan(hl.MinGRU(D, name="gru"), x, None)
            return x

    model = Stack()
    variables = model.init(jax.random.key(0), x)
    assert variables["params"]["gru"]["gate_kernel"].shape == (3, D, D)
    out = jax.jit(model.apply)(variables, x)
    want = x
    for i in range(3):
        p = jax.tree.map(lambda v, i=i: v[i], variables)["params"]["gru"]
        want = want + hl.MinGRU(D).apply({"params": p}, want)[0]
    np.testing.assert_allclose(out, want, **TOL)
    grads = jax.jit(jax.grad(lambda v: jnp.sum(model.apply(v, x) ** 2)))(variables)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
    # nn.vmap over the batch.
    layer = hl.RGLRU(D)
    v = layer.init(jax.random.key(1), x)
    vm = nn.vmap(hl.RGLRU, variable_axes={"params": None}, split_rngs={"params": False}, in_axes=0)(
        D
    )
    np.testing.assert_allclose(vm.apply(v, x)[0], layer.apply(v, x)[0], **TOL)


def test_argument_errors_name_the_argument():
    rngs = nnx.Rngs(0)
    bad = [
        (dict(features=0), ValueError, "features"),
        (dict(features=2.0), TypeError, "features"),
        (dict(features=2, c=0.0), ValueError, "c"),
        (dict(features=2, c="8"), TypeError, "c"),
        (dict(features=2, min_rad=0.99, max_rad=0.9), ValueError, "min_rad"),
        (dict(features=2, max_rad=1.0), ValueError, "max_rad"),
        (dict(features=2, dtype="nope"), TypeError, "dtype"),
        (dict(features=2, param_dtype=None), TypeError, "param_dtype"),
        (dict(features=2, kernel_init=3), TypeError, "kernel_init"),
        (dict(features=2, mesh_axis=3), TypeError, "mesh_axis"),
    ]
    for kwargs, error, name in bad:
        features = kwargs.pop("features")
        with pytest.raises(error, match=rf"RGLRU: {name}"):
            hn.RGLRU(features, rngs=rngs, **kwargs)
        with pytest.raises(error, match=rf"RGLRU: {name}"):
            hl.RGLRU(features, **kwargs)
    for kwargs, error, name in [
        (dict(hidden_features=0), ValueError, "hidden_features"),
        (dict(use_bias=1), TypeError, "use_bias"),
        (dict(bias_init=None), TypeError, "bias_init"),
    ]:
        with pytest.raises(error, match=rf"MinGRU: {name}"):
            hn.MinGRU(**{"in_features": 2, "hidden_features": 3, **kwargs}, rngs=rngs)
        with pytest.raises(error, match=rf"MinGRU: {name}"):
            hl.MinGRU(**{"hidden_features": 3, **kwargs})
    with pytest.raises(ValueError, match="MinGRU: in_features"):
        hn.MinGRU(0, 3, rngs=rngs)
    # Shapes at call time.
    layer = hn.RGLRU(D, rngs=rngs)
    with pytest.raises(ValueError, match=r"rank >= 2"):
        layer(jnp.ones((D,)))
    with pytest.raises(ValueError, match=r"in_features"):
        layer(jnp.ones((B, T, D + 1)))
    with pytest.raises(ValueError, match=r"initial_state.shape=\(2, 3\)"):
        layer(jnp.ones((B, T, D)), jnp.ones((2, 3)))
    with pytest.raises(ValueError, match=r"state.shape=\(3, 4\)"):
        hn.MinGRU(D, 4, rngs=rngs).step(jnp.ones((3, 4)), jnp.ones((B, D)))
    with pytest.raises(ValueError, match=r"initial_state.shape"):
        hl.MinGRU(4).init(jax.random.key(0), jnp.ones((B, T, D)), jnp.ones((B, 5)))


def test_a_param_init_range():
    def base_decay(a_param):  # a = sigmoid(Lambda) = exp(-softplus(a_param))
        return np.exp(-np.asarray(jax.nn.softplus(a_param), np.float64))

    a = base_decay(R.rglru_a_param_init()(jax.random.key(0), (4096,)))
    assert a.min() >= 0.9 - 1e-6 and a.max() <= 0.999 + 1e-6
    # a^2 uniform on [0.81, 0.998]: mean 0.904, and both ends populated.
    assert abs(np.mean(a**2) - (0.81 + 0.998) / 2) < 0.01
    assert np.mean(a < 0.91) > 0.03 and np.mean(a > 0.99) > 0.03
    # The modules use it, with their min_rad/max_rad, in NNX and Linen alike.
    a = base_decay(hn.RGLRU(16, min_rad=0.5, max_rad=0.6, rngs=nnx.Rngs(1)).a_param[...])
    assert a.min() >= 0.5 - 1e-6 and a.max() <= 0.6 + 1e-6
    v = hl.RGLRU(8).init(jax.random.key(0), jnp.ones((1, 2, 8)))
    a = base_decay(v["params"]["a_param"])
    assert a.min() >= 0.9 - 1e-6 and a.max() <= 0.999 + 1e-6


def test_sqrt_derivative_is_bounded_near_one():
    f = lambda x: R.sqrt_bound_derivative(x, 1000.0)
    grad = jax.vmap(jax.grad(f))(jnp.array([0.0, 1e-9, 2.5e-7, 0.25, 1.0]))
    np.testing.assert_allclose(grad, [1000.0, 1000.0, 1000.0, 1.0, 0.5], rtol=1e-5)
    assert float(jax.jvp(f, (0.0,), (1.0,))[1]) == pytest.approx(1000.0)
    np.testing.assert_allclose(f(jnp.array([0.0, 0.25])), [0.0, 0.5])
    # An RG-LRU whose decay is 1 to float32 precision: finite gradients (plain sqrt: inf/NaN).
    layer = _rglru()
    layer.a_param[...] = jnp.full((D,), -40.0)  # softplus(-40) ~ 4e-18: a_t = 1
    x = _x((B, 3, D))
    grads = nnx.grad(lambda m: jnp.sum(m(x)[0]))(layer)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
    params = _params(layer, R.RGLRU_PARAMS)
    plain = jax.grad(lambda p: jnp.sum(ref_rglru(p, x, jnp.zeros((B, D)))[0]))(params)
    assert not all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(plain))


def test_dtypes():
    x = _x().astype(jnp.bfloat16)
    layer = hn.RGLRU(D, param_dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    h, last = layer(x)
    assert h.dtype == last.dtype == jnp.bfloat16
    h, last = hn.MinGRU(D, N, dtype=jnp.float32, rngs=nnx.Rngs(0))(x)
    assert h.dtype == jnp.float32 and h.shape == (B, T, N)


MESH_SCRIPT = r"""
import jax, jax.numpy as jnp, numpy as np
from flax import nnx
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
from hadamard_jax import nnx as hn

mesh = jax.make_mesh((2, 4), ("data", "seq"), axis_types=(AxisType.Explicit,) * 2)
x = jax.random.normal(jax.random.key(0), (4, 16, 8))
spec = P("data", "seq", None)  # batch and time both sharded


@nnx.jit
def run(m, x, h0):
    def loss(m):
        h, last = m(x, h0)
        return jnp.sum(h**2) + jnp.sum(last), (h, last)

    (_, (h, last)), g = nnx.value_and_grad(loss, has_aux=True)(m)
    return h, last, g


for layer, n in ((hn.RGLRU(8, rngs=nnx.Rngs(0)), 8), (hn.MinGRU(8, 6, rngs=nnx.Rngs(1)), 6)):
    h0 = jax.random.normal(jax.random.key(1), (4, n))
    want = run(layer, x, h0)
    with jax.set_mesh(mesh):
        xs = jax.device_put(x, NamedSharding(mesh, spec))
        got = run(layer, xs, jax.device_put(h0, NamedSharding(mesh, P("data", None))))
        assert jax.typeof(got[0]).sharding.spec[:2] == spec[:2], jax.typeof(got[0])
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
print("RECURRENT MESH OK")
"""


def test_sharded_over_8_devices():
    run_on_8_cpu_devices(MESH_SCRIPT, "RECURRENT MESH OK")


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


# recurrentgemma-shaped arrays: batch, time, width
BATCH, TIME, WIDTH = 2, 6, 8


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


# Row 0: recurrentgemma's usual arange(T); row 1: a continuation, then a new document at t=2.
SEGMENT_POS = jnp.array([[0, 1, 2, 3, 4, 5], [3, 4, 0, 1, 2, 3]], jnp.int32)


def _loaded(params, heads):
    """The NNX layer with ``params`` loaded as they are, and the Linen layer and variables."""
    layer = hn.RGLRU(WIDTH, num_heads=heads, rngs=nnx.Rngs(0))
    want_shapes = jax.tree.map(jnp.shape, params)
    assert jax.tree.map(jnp.shape, nnx.to_pure_dict(nnx.state(layer, nnx.Param))) == want_shapes
    nnx.update(layer, params)
    linen = hl.RGLRU(WIDTH, num_heads=heads)
    x = jnp.zeros((BATCH, TIME, WIDTH))
    assert jax.tree.map(jnp.shape, linen.init(jax.random.key(0), x)["params"]) == want_shapes
    return layer, linen


def test_rglru_equals_recurrentgemma():
    heads = 2
    params = rg_params(WIDTH, heads, seed=heads)
    layer, linen = _loaded(params, heads)
    x = normal(1, (BATCH, TIME, WIDTH))
    cache = normal(2, (BATCH, WIDTH))
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
            first = apply(p, x, None, jnp.broadcast_to(jnp.arange(TIME), (BATCH, TIME)))
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
        layer(x, cache)[0],
        ref_apply(params, x, cache, jnp.ones((BATCH, TIME), jnp.int32))[0],
        **TOL,
    )


def test_rglru_decode_equals_recurrentgemma_sampler():
    """recurrentgemma's sampler: the prompt in one call, then one token per call (T = 1)."""
    heads, prompt = 2, 3
    params = rg_params(WIDTH, heads, seed=5)
    layer, linen = _loaded(params, heads)
    variables = {"params": params}
    x = normal(3, (BATCH, TIME, WIDTH))
    pos = jnp.broadcast_to(jnp.arange(TIME), (BATCH, TIME))
    # A new document at the decode step t = 4 in row 1.
    pos = pos.at[1, 4:].set(jnp.array([0, 1]))
    y_ref, cache = rg_rglru(params, x[:, :prompt], pos[:, :prompt])
    y_nnx, state = layer(x[:, :prompt], segment_pos=pos[:, :prompt])
    np.testing.assert_allclose(y_nnx, y_ref, **TOL)
    lin_state = state
    step = nnx.jit(lambda m, s, x_t, p: m.step(s, x_t, segment_pos=p))
    for t in range(prompt, TIME):
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
    y1, _ = rg_rglru(params, x[:, :1], jnp.zeros((BATCH, 1), jnp.int32))
    first, _ = layer.step(None, x[:, 0], segment_pos=jnp.zeros((BATCH,), jnp.int32))
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
