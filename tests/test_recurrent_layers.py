"""RGLRU and MinGRU (NNX and Linen): values and gradients against a plain ``lax.scan`` of the
same equations, the decode step against the parallel form, NNX == Linen, transforms, argument
errors, the initialisation of ``a_param``, the bounded square-root derivative, a mesh."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx

from hadamard_jax import linen as hl
from hadamard_jax import nnx as hn
from hadamard_jax._layers import recurrent as R
from tests.utils import assert_tree_allclose, normal, run_on_8_cpu_devices

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
