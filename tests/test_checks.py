"""The argument checks every op shares (``hadamard_jax._src.checks``), as tables over the ops:
every op takes ``__jax_array__`` objects (``nnx.Param``) under every transform, keeps weak types
as JAX does, and every bad static argument is a clear error naming it; NumPy bools are static
bools. (The gate ops are rows of these tables; each op's own checks are in its test module.)"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import hadamard_jax as hj
from hadamard_jax import linen as hj_linen
from hadamard_jax import nnx as hj_nnx
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


# --- arguments checked once (was test_arguments.py) --------------------------------------------
# Arguments checked once, with errors that name them, across the ops and modules (issue 22,
# item 9, and issue 24): rates out of ``[0, 1)`` at construction of every module that takes one,
# inputs that are not numbers (``Fraction``, ``Decimal``, typed PRNG keys) in every op, and eager
# calls that run their Python checks once per trace (jit's cache), not on every call.
#


# --- rates at construction, non-numbers in every op (issue 22, item 9) ---------------------------


def _nnx(cls, *args, **kwargs):
    return lambda rate: getattr(hj_nnx, cls)(*args, dropout_rate=rate, rngs=nnx.Rngs(0), **kwargs)


def _linen(cls, *args):
    return lambda rate: getattr(hj_linen, cls)(*args, dropout_rate=rate)


#: Every module that takes a rate, NNX and Linen (a test below keeps this list complete).
RATED = {
    "nnx.GatedMultiHeadAttention": _nnx("GatedMultiHeadAttention", 2, 8, decode=False),
    "nnx.GatedMLP": _nnx("GatedMLP", 8, 16),
    "nnx.GatedResidual": _nnx("GatedResidual", 8, 16),
    "linen.GatedMultiHeadAttention": _linen("GatedMultiHeadAttention", 2),
    "linen.GatedMLP": _linen("GatedMLP", 16),
    "linen.GatedResidual": _linen("GatedResidual", 16),
}


def test_every_module_with_a_rate_is_listed():
    import dataclasses
    import inspect

    found = set()
    for front, package in (("nnx", hj_nnx), ("linen", hj_linen)):
        for name in package.__all__:
            cls = getattr(package, name)
            if not isinstance(cls, type):
                continue
            if front == "nnx":
                params = inspect.signature(cls.__init__).parameters
                # Flax's own arguments reach GatedMultiHeadAttention through **kwargs.
                takes = "dropout_rate" in params or (
                    "kwargs" in params and issubclass(cls, nnx.MultiHeadAttention)
                )
            else:
                takes = any(f.name == "dropout_rate" for f in dataclasses.fields(cls))
            if takes:
                found.add(f"{front}.{name}")
    assert found == set(RATED)


@pytest.mark.parametrize("module", list(RATED))
@pytest.mark.parametrize(
    "rate, error",
    [
        (2.0, ValueError),
        (-0.5, ValueError),
        (1.0, ValueError),
        (math.nan, ValueError),
        ("0.1", TypeError),
        (True, TypeError),
    ],
)
def test_rates_are_checked_at_construction(module, rate, error):
    """One shared check (``options.rate``), so NNX and Linen say the same thing."""
    with pytest.raises(error, match=r"dropout_rate"):
        RATED[module](rate)


V = jnp.linspace(-1.0, 1.0, 4)

#: Every op that takes arrays, with its argument names; ``bad`` replaces one at a time.
ARRAY_OPS = {
    "hadamard": (lambda a, b: hj.hadamard(a, b, broadcast=True), ("a", "b")),
    "hadamard_n": (lambda a, b: hj.hadamard_n(a, b, broadcast=True), ("arrays[0]", "arrays[1]")),
    **{
        name: (lambda a, b, f=getattr(hj, name): f(a, b, broadcast=True), ("gate", "value"))
        for name in GATES
    },
    "glu_packed": (lambda a, b: hj.glu_packed(a), ("x",)),
    "highway": (lambda a, b: hj.highway(a, b, V, broadcast=True), ("transform", "gate")),
    "gated_mlp": (
        lambda a, b: hj.gated_mlp(a, b, jnp.ones((1, 2)), jnp.ones((2, 1))),
        ("x", "w_gate"),
    ),
    "gated_rms_norm": (lambda a, b: hj.gated_rms_norm(a, b, jnp.ones(4)), ("x", "gate")),
    "apply_mask": (lambda a, b: hj.apply_mask(a, b), ("x", "mask")),
}


@pytest.mark.parametrize("name", list(ARRAY_OPS))
@pytest.mark.parametrize(
    "bad, shown",
    [
        (Fraction(1, 2), r"Fraction"),
        (Decimal("0.5"), r"Decimal"),
        (jax.random.key(0), r"key<fry>"),
    ],
    ids=["fraction", "decimal", "typed_key"],
)
@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_non_numbers_are_type_errors_naming_the_argument(name, bad, shown, jit):
    op, names = ARRAY_OPS[name]
    for i, arg in enumerate(names):
        args = [V, V]
        args[i] = bad
        with pytest.raises(TypeError, match=rf"{name}: argument '{re.escape(arg)}'.*{shown}"):
            if jit:
                jax.jit(lambda: op(*args))()  # noqa: B023 - called at once
            else:
                op(*args)


# --- issue 24: eager calls check their arguments once per trace ---------------------------------


EAGER_OPS = {
    "hadamard": lambda a, b, **kw: hj.hadamard(a, b, **kw),
    "hadamard_n": lambda a, b, **kw: hj.hadamard_n(a, b, **kw),
    "swiglu": lambda a, b, **kw: hj.swiglu(a, b, **kw),
    "clamped_swiglu": lambda a, b, **kw: hj.clamped_swiglu(a, b, alpha=1.5, **kw),
    "geglu_packed": lambda a, b, **kw: hj.geglu_packed(jnp.concatenate([a, b]), **kw),
    "highway": lambda a, b, **kw: hj.highway(a, b, a, **kw),
    "gated_rms_norm": lambda a, b, **kw: hj.gated_rms_norm(a, b, a, **kw),
    "gated_mlp": lambda a, b, **kw: hj.gated_mlp(
        a[None], jnp.outer(a, b), jnp.outer(b, a), jnp.outer(a, a), b_up=b, **kw
    ),
}
#: The flag each op takes (a static bool that a cached ``True`` must not let ``1`` through).
FLAGS = {
    "geglu_packed": "approximate",
    "gated_rms_norm": "norm_before_gate",
    "gated_mlp": "approximate",
}


@pytest.mark.parametrize("name", list(EAGER_OPS))
def test_eager_calls_check_once_per_trace(name, monkeypatch):
    """A repeated eager call with the same shapes, dtypes and options runs no Python check
    (jit's cache), a new shape checks again, and a flag given as ``1`` after ``True`` is still
    refused (the cache tells ``True`` from ``1``)."""
    from hadamard_jax._src import checks

    op, flag = EAGER_OPS[name], FLAGS.get(name, "broadcast")
    jax.clear_caches()  # another test of this module may have traced the op at these shapes
    calls = []
    original = checks.check_bool
    monkeypatch.setattr(checks, "check_bool", lambda *a: calls.append(a) or original(*a))
    a, b = jnp.arange(1.0, 5.0), jnp.arange(2.0, 6.0)
    value = True if flag != "approximate" else False
    first = op(a, b, **{flag: value})
    assert calls, "the first call checks its arguments"
    calls.clear()
    second = op(a, b, **{flag: value})
    assert not calls, "a repeated eager call runs its checks again"
    np.testing.assert_array_equal(first, second)
    op(a[:2], b[:2], **{flag: value})
    assert calls, "a new shape is checked"
    with pytest.raises(TypeError, match=rf"{flag} must be a static bool, got int"):
        op(a, b, **{flag: int(value)})


def test_eager_fast_path_keeps_jnp_results():
    """Weak types, dtypes and values as ``jnp.multiply``'s for concrete (fast-path) arrays."""
    for a, b in [
        (jnp.asarray(2.0), jnp.asarray(3.0)),  # both weak
        (jnp.asarray(2.0), jnp.ones(3, jnp.bfloat16)),
        (jnp.arange(3, dtype=jnp.int8), jnp.asarray(3)),
    ]:
        got, want = hj.hadamard(a, b, broadcast=True), jnp.multiply(a, b)
        assert got.dtype == want.dtype and got.weak_type == want.weak_type
        np.testing.assert_array_equal(got, want)
    got, want = hj.swiglu(jnp.asarray(2.0), jnp.asarray(3.0)), jax.nn.silu(2.0) * 3.0
    assert got.dtype == want.dtype and got.weak_type == want.weak_type
