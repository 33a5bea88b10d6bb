"""The argument checks every op shares (``hadamard_jax._src.checks``), as tables over the ops:
every op takes ``__jax_array__`` objects (``nnx.Param``) under every transform, keeps weak types
as JAX does, and every bad static argument is a clear error naming it; NumPy bools are static
bools. (The gate ops are rows of these tables; each op's own checks are in its test module.)"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import hadamard_jax as hj
from hadamard_jax._src.gates import GATES

X = jnp.linspace(-2.0, 2.0, 6, dtype=jnp.float32)
W = jnp.linspace(0.5, 1.5, 6, dtype=jnp.float32)


def _gate_ops():
    ops = {}
    for name, gate in GATES.items():
        ops[name] = lambda a, b, f=getattr(hj, name): f(a, b)
        if gate.approximate is not None:
            ops[f"{name}_tanh"] = lambda a, b, f=getattr(hj, name): f(a, b, approximate=True)
    return ops


# Two-argument forms of every op, f(x, w), all elementwise in x for a fixed w.
OPS = {
    "hadamard": hj.hadamard,
    "hadamard_n": lambda a, b: hj.hadamard_n(a, b, b),
    **_gate_ops(),
    "glu_packed": lambda a, b: hj.glu_packed(jnp.concatenate([a, b])),
    "highway": lambda a, b: hj.highway(a, b, b),
    "apply_mask": lambda a, b: hj.apply_mask(a, b),
    "gated_mlp": lambda a, b: hj.gated_mlp(
        a[None], jnp.outer(b, b), jnp.outer(b, b) / 4, jnp.outer(b, b) / 8
    )[0],
}


@pytest.mark.parametrize("name", list(OPS))
def test_variables_are_accepted_under_every_transform(name):
    op = OPS[name]
    w = nnx.Param(W)
    loss = lambda x, w: jnp.sum(jnp.sin(op(x, w)))  # noqa: E731
    ref = lambda x: jnp.sum(jnp.sin(op(x, W)))  # noqa: E731
    np.testing.assert_allclose(op(X, w), op(X, W), rtol=1e-6)
    np.testing.assert_allclose(jax.grad(loss)(X, w), jax.grad(ref)(X), rtol=1e-6)
    out, tangent = jax.jvp(lambda x: op(x, w), (X,), (jnp.ones_like(X),))
    _, tangent_ref = jax.jvp(lambda x: op(x, W), (X,), (jnp.ones_like(X),))
    np.testing.assert_allclose(tangent, tangent_ref, rtol=1e-6)
    np.testing.assert_allclose(jax.hessian(loss)(X, w), jax.hessian(ref)(X), rtol=1e-5, atol=1e-6)
    # The Variable as the differentiated argument, as nnx.grad differentiates a module.
    if name != "apply_mask":  # the mask argument carries no gradient

        class Module(nnx.Module):
            def __init__(self):
                self.w = nnx.Param(W)

            def __call__(self, x):
                return op(x, self.w)

        grads = nnx.grad(lambda m: jnp.sum(jnp.sin(m(X))))(Module())
        expected = jax.grad(lambda w: jnp.sum(jnp.sin(op(X, w))))(W)
        np.testing.assert_allclose(grads["w"][...], expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    "call, plain",
    [
        (lambda: hj.hadamard(2.0, 3.0), lambda: jnp.multiply(2.0, 3.0)),
        (
            lambda: hj.hadamard(jnp.arange(3), 0.5, broadcast=True),
            lambda: jnp.multiply(jnp.arange(3), 0.5),
        ),
        (lambda: hj.hadamard_n(2.0, 3.0, 4.0), lambda: jnp.multiply(jnp.multiply(2.0, 3.0), 4.0)),
        (lambda: hj.swiglu(2.0, 3.0), lambda: jax.nn.silu(2.0) * 3.0),
        # jax.nn.gelu returns a strong float for a Python float; the library's rule is the same
        # for every op: the result is weak exactly when every input is (as jnp.multiply).
        (lambda: hj.geglu(2.0, 3.0), lambda: jax.nn.silu(2.0) * 3.0),
        (lambda: hj.glu(2.0, 3.0), lambda: jax.nn.sigmoid(2.0) * 3.0),
        (lambda: hj.highway(1.0, 0.5, 2.0), lambda: 0.5 * 1.0 + 0.5 * 2.0),
        (lambda: hj.apply_mask(2.0, True), lambda: jnp.where(True, 2.0, 0.0)),
    ],
)
def test_weak_types_kept_as_jax_does(call, plain):
    out, ref = call(), jnp.asarray(plain())
    assert out.dtype == ref.dtype and out.weak_type == ref.weak_type, (out, ref)
    # A weak result does not upcast a later bfloat16 computation.
    assert (out * jnp.ones(out.shape, jnp.bfloat16)).dtype == (
        ref * jnp.ones(ref.shape, jnp.bfloat16)
    ).dtype


def test_weak_result_gradients_and_forward_mode():
    assert float(jax.grad(lambda a: hj.hadamard(a, 3.0))(2.0)) == 3.0
    _, t = jax.jvp(lambda a: hj.swiglu(a, 3.0), (2.0,), (1.0,))
    np.testing.assert_allclose(t, jax.grad(lambda a: jax.nn.silu(a) * 3.0)(2.0), rtol=1e-6)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: hj.gated_mlp(*_mlp(), activation=["swiglu"]), TypeError, "activation must be"),
        (lambda: hj.gated_mlp(*_mlp(), activation="swish"), ValueError, "unknown activation"),
        (lambda: hj.gated_mlp(*_mlp(), approximate="yes"), TypeError, "approximate must be"),
        (lambda: hj.geglu(X, X, approximate="yes"), TypeError, "approximate must be"),
        (lambda: hj.swiglu(X, X, approximate=True), TypeError, "approximate"),
        (lambda: hj.magnitude_mask(X, "0.5"), TypeError, "sparsity must be a static"),
        (lambda: hj.magnitude_mask(X, True), TypeError, "sparsity must be a static"),
        (lambda: hj.magnitude_mask(X, float("nan")), ValueError, "sparsity must be in"),
        (lambda: hj.nm_mask(X, 2, 0), ValueError, "m must be >= 1"),
        (lambda: hj.nm_mask(X, 2.0, 4), TypeError, "n must be a static Python int"),
        (lambda: hj.causal_mask(-1), ValueError, "length must be >= 0"),
        (lambda: hj.padding_mask(jnp.array([1]), 3.0), TypeError, "max_length must be a static"),
        (lambda: hj.hard_concrete(None, X, beta=-1.0, deterministic=True), ValueError, "beta"),
        (lambda: hj.hard_concrete(None, X, gamma=float("inf")), ValueError, "gamma"),
        (lambda: hj.hard_concrete(None, X, deterministic=1), TypeError, "deterministic"),
        (lambda: hj.l0_penalty(X, zeta="1.1"), TypeError, "zeta must be a static"),
        (lambda: hj.ste_mask(X, sparsity="0.5"), TypeError, "sparsity must be a static"),
        (lambda: hj.hadamard(X, X, broadcast=np.array(True)), TypeError, "broadcast must be"),
    ],
)
def test_bad_static_arguments_name_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


def _mlp():
    x = jnp.ones((2, 4))
    return x, jnp.ones((4, 8)), jnp.ones((4, 8)), jnp.ones((8, 4))


def test_numpy_bools_are_static_bools():
    out = hj.hard_concrete(None, X, deterministic=np.True_)
    np.testing.assert_array_equal(out, hj.hard_concrete(None, X, deterministic=True))
    np.testing.assert_array_equal(
        hj.geglu(X, W, approximate=np.True_), hj.geglu(X, W, approximate=True)
    )
    np.testing.assert_array_equal(hj.hadamard(X, W[:1], broadcast=np.True_), X * W[:1])
