"""Tests of the GLU family: values, dtypes, errors, numerics and every transform."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import hadamard_jax as hj
from hadamard_jax import (
    bilinear,
    geglu,
    geglu_packed,
    glu,
    glu_packed,
    swiglu,
)
from hadamard_jax._src.gates import GATES
from hadamard_jax._src.gates import PLAIN as GATE_PLAIN
from hadamard_jax.bench import ffn_stack
from tests.utils import (
    assert_tree_allclose,
    check_grads,
    normal,
    only_arguments_saved,
    saved_residuals,
)

CLAMPED = {name for name, gate in GATES.items() if gate.clamps_value}
# The plain jax.nn composition of every gate of the gate table (and of its approximate form,
# as "<name>_tanh"), written independently of the library's activations: the rows' ``plain``
# fields (hadamard_jax._src.gates.PLAIN), the benchmarks' reference too. The output is
# PLAIN[name](gate) * value, or * PLAIN_VALUE[name](value) for the gates that transform their
# value (gpt-oss: clip(v, -7, 7) + 1).
PLAIN = {name: act for name, (act, _) in GATE_PLAIN.items()}
PLAIN_VALUE = {name: value for name, (_, value) in GATE_PLAIN.items() if name in CLAMPED}
# Gates whose derivative is infinite at gate = +inf (the math's value there).
UNBOUNDED_GRAD = {"squared_reglu"}


def _ops():
    """name -> (our two-input op, our packed op, the plain activation), from the gate table."""
    ops = {}
    for name, gate in GATES.items():
        ops[name] = (getattr(hj, name), getattr(hj, f"{name}_packed"), PLAIN[name])
        if gate.approximate is not None:
            ops[f"{name}_tanh"] = (
                functools.partial(getattr(hj, name), approximate=True),
                functools.partial(getattr(hj, f"{name}_packed"), approximate=True),
                PLAIN[f"{name}_tanh"],
            )
    return ops


OPS = _ops()
NAMES = list(OPS)
# Where the plain composition loses accuracy (1 + tanh(u) cancels for gate <= -3), the op is
# compared with a float64 reference instead.
INACCURATE_PLAIN = {"geglu_tanh"}


def test_every_gate_is_exported_and_has_a_reference():
    for name in GATES:
        assert name in hj.__all__ and f"{name}_packed" in hj.__all__, name
    assert set(NAMES) == set(PLAIN)


def test_every_gate_docstring_is_filled_in():
    # Each public function's docstring is filled from its row (glu.documented): the layout's
    # Args/Returns/Raises and an example of the function itself, no placeholder left.
    for name in GATES:
        for fn in (getattr(hj, name), getattr(hj, f"{name}_packed")):
            doc = fn.__doc__
            assert "Args:" in doc and "Returns:" in doc and "Raises:" in doc, fn.__name__
            assert f">>> from hadamard_jax import {fn.__name__}\n" in doc, fn.__name__
            assert "{{" not in doc and "}}" not in doc, fn.__name__


def _ours(name):
    return OPS[name][0]


def _packed(name):
    return OPS[name][1]


def _plain(name):
    act, value = OPS[name][2], PLAIN_VALUE.get(name, lambda v: v)
    return lambda g, v: act(g) * value(v)


def _plain_packed(name, axis=-1):
    def f(x):
        value, gate = jnp.split(x, 2, axis)
        return _plain(name)(gate, value)

    return f


def _rand(shape, dtype=jnp.float32, seed=0, scale=1.0):
    return normal(seed, shape, dtype, scale)


def _pair(shape=(3, 4), dtype=jnp.float32, shape_v=None):
    return _rand(shape, dtype, 1, 2.0), _rand(shape_v or shape, dtype, 2)


# --- values ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_values_match_plain_composition(name):
    g, v = _pair()
    out = jax.jit(_ours(name))(g, v)
    assert out.dtype == jnp.float32 and out.shape == (3, 4)
    x = _rand((3, 8), seed=5, scale=2.0)
    with jax.enable_x64(True):
        exact = np.asarray(_plain(name)(jnp.asarray(g, jnp.float64), jnp.asarray(v, jnp.float64)))
        exact_packed = np.asarray(_plain_packed(name)(jnp.asarray(x, jnp.float64)))
    # Every gate is accurate to float32 rounding against a float64 evaluation.
    np.testing.assert_allclose(out, exact, rtol=1e-6, atol=1e-30)
    np.testing.assert_allclose(jax.jit(_packed(name))(x), exact_packed, rtol=1e-6, atol=1e-30)
    if name not in INACCURATE_PLAIN:
        np.testing.assert_allclose(out, jax.jit(_plain(name))(g, v), rtol=2e-7, atol=1e-7)
        np.testing.assert_allclose(
            jax.jit(_packed(name))(x), jax.jit(_plain_packed(name))(x), rtol=2e-7, atol=1e-7
        )


def test_tanh_geglu_value_does_not_cancel():
    # 0.5 g (1 + tanh u) cancels to -0.0 at g = -5 in float32; the exact value is -2.29e-7.
    g = jnp.array([-5.0, -8.0, -3.0], jnp.float32)
    x = np.asarray(g, np.float64)
    u = math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)
    exact = x / (1.0 + np.exp(-2.0 * u))  # 0.5 x (1 + tanh u), without the cancellation
    out = geglu(g, jnp.ones_like(g), approximate=True)
    assert float(out[0]) < 0
    np.testing.assert_allclose(out, exact, rtol=1e-5)
    # d/dvalue is the activation itself, bit for bit.
    dv = jax.grad(lambda v: jnp.sum(geglu(g, v, approximate=True)))(jnp.ones_like(g))
    np.testing.assert_array_equal(dv, out)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_glu_packed_equals_jax_nn_glu_exactly(x64, dtype, axis):
    x = _rand((4, 6, 2), dtype, scale=3.0)
    out, ref = glu_packed(x, axis), jax.nn.glu(x, axis)
    assert out.dtype == ref.dtype and out.shape == ref.shape
    np.testing.assert_array_equal(out, ref)
    gout = jax.grad(lambda x: jnp.sum(jnp.sin(glu_packed(x, axis))))(x)
    gref = jax.grad(lambda x: jnp.sum(jnp.sin(jax.nn.glu(x, axis))))(x)
    # Gradients to rounding: ours uses sigmoid(x) sigmoid(-x), jax.nn's autodiff s (1 - s).
    np.testing.assert_allclose(gout, gref, rtol=1e-12 if dtype == jnp.float64 else 1e-5, atol=1e-7)


def test_packed_is_the_two_input_form_on_the_halves():
    x = _rand((2, 6, 5), scale=2.0)
    for name in NAMES:
        value, gate = jnp.split(x, 2, 1)
        np.testing.assert_array_equal(_packed(name)(x, axis=1), _ours(name)(gate, value))


def test_dtypes():
    g, v = _pair(dtype=jnp.bfloat16)
    for name in NAMES:
        assert _ours(name)(g, v).dtype == jnp.bfloat16
        assert _packed(name)(g).dtype == jnp.bfloat16
        assert _ours(name)(g.astype(jnp.float16), v.astype(jnp.float16)).dtype == jnp.float16
        assert _ours(name)(g, v.astype(jnp.float32)).dtype == jnp.float32
        # A Python scalar is weakly typed, as in jnp.
        assert _ours(name)(g, 2.0, broadcast=True).dtype == jnp.bfloat16


def test_integer_and_bool_inputs_promote_to_float():
    i = jnp.array([[-2, 0, 3]], jnp.int32)
    b = jnp.array([[True, False, True]])
    f = i.astype(jnp.float32)
    with jax.enable_x64(True):
        # The float64 composition: a float32 one rounds in the cancellation of
        # 1 + tanh(...) at gate -2 (tanh-GELU), by more than ours does.
        exact = {n: np.asarray(_plain(n)(jnp.asarray(i, jnp.float64), b)) for n in NAMES}
    for name in NAMES:
        out = _ours(name)(i, b)
        assert out.dtype == jnp.float32
        np.testing.assert_allclose(out, exact[name], rtol=1e-6)
        assert _packed(name)(jnp.arange(4, dtype=jnp.int8)).dtype == jnp.float32
    # The gradient of a float input next to an integer one; float0 for the integer.
    x = _rand((1, 3))
    out, vjp = jax.vjp(swiglu, x, i)
    ct_x, ct_i = vjp(jnp.ones_like(out))
    assert ct_i.dtype == jax.dtypes.float0
    np.testing.assert_allclose(ct_x, jax.grad(lambda x: jnp.sum(jax.nn.silu(x) * f))(x), rtol=1e-6)
    assert swiglu(2, 3.0) == jax.nn.silu(2.0) * 3.0


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_shape_mismatch(name):
    match = r"gate\.shape=\(2, 3\).*value\.shape=\(3,\).*broadcast=True"
    with pytest.raises(ValueError, match=match):
        _ours(name)(jnp.ones((2, 3)), jnp.ones((3,)))
    with pytest.raises(ValueError, match=r"do not broadcast.*\(2, 3\).*\(4,\)"):
        _ours(name)(jnp.ones((2, 3)), jnp.ones((4,)), broadcast=True)
    with pytest.raises(ValueError, match="equal shapes"):  # at trace time, under jit
        jax.jit(_ours(name)).lower(jnp.ones(2), jnp.ones(3))


@pytest.mark.parametrize("name", NAMES)
def test_packed_errors(name):
    op = _packed(name)
    with pytest.raises(ValueError, match=r"axis=-1.*odd|odd.*axis=-1") as e:
        op(jnp.ones((2, 5)))
    assert "5" in str(e.value)
    with pytest.raises(ValueError, match=r"axis=0.*odd") as e:
        op(jnp.ones((3, 4)), axis=0)
    assert "3" in str(e.value)
    with pytest.raises(ValueError, match="axis=2 is out of range"):
        op(jnp.ones((2, 4)), axis=2)
    with pytest.raises(TypeError, match="axis must be an int"):
        op(jnp.ones((2, 4)), axis=1.0)
    with pytest.raises(ValueError, match="scalar"):
        op(jnp.float32(1.0))
    with pytest.raises(TypeError, match="argument 'x'"):
        op(None)


@pytest.mark.parametrize(
    "bad", [None, "abc", object(), {"a": 1}], ids=["None", "str", "object", "dict"]
)
def test_bad_argument_types(bad):
    for name in NAMES:
        op = name.removesuffix("_tanh")
        with pytest.raises(TypeError, match=f"{op}: argument 'value'"):
            _ours(name)(jnp.ones(2), bad)
        with pytest.raises(TypeError, match="argument 'gate'"):
            _ours(name)(bad, jnp.ones(2))


def test_complex_and_flag_errors():
    c = jnp.ones(2, jnp.complex64)
    with pytest.raises(TypeError, match="swiglu: argument 'gate' has complex dtype complex64"):
        swiglu(c, jnp.ones(2))
    with pytest.raises(TypeError, match="argument 'value' has complex dtype"):
        bilinear(jnp.ones(2), c)
    with pytest.raises(TypeError, match="glu_packed: argument 'x' has complex dtype"):
        glu_packed(jnp.ones(4, jnp.complex64))
    with pytest.raises(TypeError, match="approximate must be a static bool"):
        geglu(jnp.ones(2), jnp.ones(2), approximate="tanh")
    with pytest.raises(TypeError, match="approximate must be a static bool"):
        geglu_packed(jnp.ones(4), approximate=None)
    with pytest.raises(TypeError, match="broadcast must be a static bool"):
        glu(jnp.ones(2), jnp.ones(2), broadcast=1)


# --- derivatives -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_check_grads(x64, name):
    g, v = _pair((2, 3), jnp.float64)
    if name == "reglu":  # keep away from the kink, where finite differences are meaningless
        g = jnp.where(jnp.abs(g) < 0.1, 0.5, g)
    check_grads(_ours(name), (g, v), order=2, modes=["fwd", "rev"])
    # The layouts share the core above: check them on two activations (fast tests).
    if name == "glu":
        bcast = functools.partial(_ours(name), broadcast=True)
        check_grads(bcast, (g[:1], v), order=2, modes=["fwd", "rev"])
    if name in ("glu", "geglu_tanh"):
        x = jnp.concatenate([v, g], axis=0)
        check_grads(lambda x: _packed(name)(x, axis=0), (x,), order=2, modes=["fwd", "rev"])


TRANSFORMS = {
    "jit": lambda f: f,
    "grad": lambda f: jax.grad(lambda g, v: jnp.sum(jnp.sin(f(g, v))), argnums=(0, 1)),
    "value_and_grad": lambda f: jax.value_and_grad(
        lambda g, v: jnp.sum(f(g, v) ** 2), argnums=(0, 1)
    ),
    "jvp": lambda f: lambda g, v: jax.jvp(f, (g, v), (jnp.cos(g), jnp.sin(v))),
    "jacfwd": lambda f: jax.jacfwd(f, argnums=(0, 1)),
    "jacrev": lambda f: jax.jacrev(f, argnums=(0, 1)),
    "hessian": lambda f: jax.hessian(lambda g, v: jnp.sum(jnp.sin(f(g, v))), argnums=(0, 1)),
    "hvp_fwd_over_rev": lambda f: (
        lambda g, v: jax.jvp(
            jax.grad(lambda g, v: jnp.sum(jnp.tanh(f(g, v))), argnums=(0, 1)), (g, v), (v, g)
        )
    ),
    "checkpoint": lambda f: jax.grad(
        lambda g, v: jnp.sum(jax.checkpoint(f)(g, v) ** 2), argnums=(0, 1)
    ),
    "vmap": lambda f: jax.vmap(f),
    "vmap_in_axes_single": lambda f: lambda g, v: jax.vmap(f, in_axes=(None, 0))(g[0], v),
    "vmap_of_grad": lambda f: jax.vmap(jax.grad(lambda g, v: jnp.sum(f(g, v)), argnums=(0, 1))),
    "scan": lambda f: (
        lambda g, v: jax.grad(
            lambda c, v: jnp.sum(
                jax.lax.scan(lambda c, _: (jnp.tanh(f(c, v)), None), c, None, length=3)[0]
            ),
            argnums=(0, 1),
        )(g, v)
    ),
}


# Every op shares one rule (check_grads above covers each activation); the transforms are run
# on two of them to keep the tests fast.
TRANSFORM_OPS = ("swiglu", "geglu")


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_transforms_agree_with_plain_composition(transform):
    g, v = _pair((2, 3))
    for name in TRANSFORM_OPS:
        ours = jax.jit(TRANSFORMS[transform](_ours(name)))(g, v)
        plain = jax.jit(TRANSFORMS[transform](_plain(name)))(g, v)
        assert_tree_allclose(ours, plain, rtol=2e-5, atol=1e-5)


PACKED_TRANSFORMS = {
    "grad": lambda f: jax.grad(lambda x: jnp.sum(jnp.sin(f(x)))),
    "jvp": lambda f: lambda x: jax.jvp(f, (x,), (jnp.cos(x),)),
    "jacfwd": jax.jacfwd,
    "hessian": lambda f: jax.hessian(lambda x: jnp.sum(jnp.sin(f(x)))),
    "hvp_fwd_over_rev": lambda f: (
        lambda x: jax.jvp(jax.grad(lambda x: jnp.sum(jnp.tanh(f(x)))), (x,), (x,))
    ),
    "vmap_checkpoint": lambda f: jax.vmap(jax.grad(lambda x: jnp.sum(jax.checkpoint(f)(x) ** 2))),
    "scan": lambda f: jax.grad(
        lambda x: jnp.sum(
            jax.lax.scan(
                lambda c, _: (jnp.concatenate([jnp.tanh(f(c)), c[:, 3:]], axis=1), None),
                x,
                None,
                length=3,
            )[0]
        )
    ),
}


@pytest.mark.parametrize("transform", PACKED_TRANSFORMS)
def test_packed_transforms_agree_with_plain_composition(transform):
    x = _rand((2, 6), scale=2.0)
    for name in ("glu", "geglu_tanh"):
        ours = jax.jit(PACKED_TRANSFORMS[transform](_packed(name)))(x)
        plain = jax.jit(PACKED_TRANSFORMS[transform](_plain_packed(name)))(x)
        assert_tree_allclose(ours, plain, rtol=2e-5, atol=1e-5)


def test_broadcast_gradients_come_back_in_input_shapes():
    g, v = _rand((4, 1, 3), scale=2.0), _rand((5, 1), seed=3)
    for name in ("bilinear", "swiglu"):
        loss = lambda f: lambda g, v: jnp.sum(jnp.sin(f(g, v)))  # noqa: E731
        ours = jax.grad(loss(functools.partial(_ours(name), broadcast=True)), argnums=(0, 1))(g, v)
        with jax.numpy_rank_promotion("allow"):  # the reference broadcasts implicitly
            ref = jax.grad(loss(_plain(name)), argnums=(0, 1))(g, v)
        assert ours[0].shape == g.shape and ours[1].shape == v.shape
        assert_tree_allclose(ours, ref, rtol=1e-5, atol=1e-6)


# --- numerics: large |x|, bf16, inf --------------------------------------------------------------

LARGE = [-1e4, -300.0, -40.0, -8.0, -1.0, 0.5, 8.0, 40.0, 300.0, 1e4]


def _np_sigmoid_and_grad(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)), e / (1.0 + e) ** 2


def _np_gelu_and_grad(x):
    cdf = 0.5 * np.vectorize(math.erfc)(-x / math.sqrt(2.0))
    return x * cdf, cdf + x * np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def _np_gelu_tanh_and_grad(x):
    u = math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)
    du = math.sqrt(2.0 / math.pi) * (1.0 + 3 * 0.044715 * x**2)
    s, ds = _np_sigmoid_and_grad(2.0 * u)  # 0.5 (1 + tanh u) = sigmoid(2u)
    return x * s, s + x * 2.0 * ds * du


def _np_quick_gelu_and_grad(x):
    s, ds = _np_sigmoid_and_grad(1.702 * x)
    return x * s, s + 1.702 * x * ds


def _np_clamped_silu_and_grad(x):
    g = np.minimum(x, 7.0)
    value, grad = _np_quick_gelu_and_grad(g)
    return value, grad * np.where(x > 7.0, 0.0, np.where(x == 7.0, 0.5, 1.0))


def _np_silu_and_grad(x):
    s, ds = _np_sigmoid_and_grad(x)
    return x * s, s + x * ds


# name -> x -> (act(x), act'(x)) in float64 NumPy, written independently of activations.py.
NP_ACTS = {
    "glu": _np_sigmoid_and_grad,
    "bilinear": lambda x: (x, np.ones_like(x)),
    "reglu": lambda x: (np.maximum(x, 0.0), (x > 0).astype(np.float64)),
    "geglu": _np_gelu_and_grad,
    "geglu_tanh": _np_gelu_tanh_and_grad,
    "swiglu": _np_silu_and_grad,
    "quick_geglu": _np_quick_gelu_and_grad,
    "squared_reglu": lambda x: (np.maximum(x, 0.0) ** 2, 2.0 * np.maximum(x, 0.0)),
    "clamped_swiglu": _np_clamped_silu_and_grad,
}


def _np_value(name, v):
    """The value as it enters the gate, and its derivative (float64 NumPy)."""
    if name in PLAIN_VALUE:
        return np.clip(v, -7.0, 7.0) + 1.0, np.where(np.abs(v) > 7, 0.0, 1.0)
    return v, np.ones_like(v)


def _np_reference(name, g, v, w):
    """Value and the gradients of ``sum(w * act(g) * value(v))`` in float64 NumPy."""
    g, v, w = (np.asarray(a, np.float64) for a in (g, v, w))
    act, dact = NP_ACTS[name](g)
    value, dvalue = _np_value(name, v)
    return act * value, dact * value * w, act * dvalue * w


@pytest.mark.parametrize("name", NAMES)
def test_gradients_at_large_gate_values(name):
    g = jnp.array(LARGE, jnp.float32)
    v = jnp.linspace(-2.0, 2.0, len(LARGE), dtype=jnp.float32)
    w = jnp.arange(len(LARGE), dtype=jnp.float32)
    loss = lambda g, v: jnp.sum(_ours(name)(g, v) * w)  # noqa: E731
    dg, dv = jax.grad(loss, argnums=(0, 1))(g, v)
    _, ref_dg, ref_dv = _np_reference(name, g, v, w)
    assert np.isfinite(dg).all() and np.isfinite(dv).all(), (dg, dv)
    np.testing.assert_allclose(dg, ref_dg, rtol=1e-5, atol=1e-35)
    # d/dvalue = act(gate) is the forward factor, computed as jax.nn computes it (jax.nn.gelu's
    # tanh form cancels to 0 for gate << 0), hence the absolute tolerance.
    np.testing.assert_allclose(dv, ref_dv, rtol=1e-5, atol=1e-6)
    # Second derivatives finite too.
    h = jax.grad(lambda g: jnp.sum(jax.grad(loss)(g, v)))(g)
    assert np.isfinite(h).all(), h


@pytest.mark.parametrize("name", NAMES)
def test_bf16_gradients(name):
    g = jnp.array(LARGE[1:-1] + [6.5, 7.0, -3.0, 2.0], jnp.bfloat16)
    v = jnp.linspace(-2.0, 2.0, g.shape[0]).astype(jnp.bfloat16)
    w = jnp.ones_like(v)  # the cotangent of a bf16 -> f32 cast of a sum
    out = _ours(name)(g, v)
    dg, dv = jax.grad(lambda g, v: jnp.sum(_ours(name)(g, v).astype(jnp.float32)), argnums=(0, 1))(
        g, v
    )
    ref = _np_reference(name, g, v, w)
    # One rounding to bfloat16 of a float32 computation: relative error <= 2^-8 (and an
    # absolute 1e-6 for the forward factor, as in test_gradients_at_large_gate_values).
    for o, r, atol in zip((out, dg, dv), ref, (1e-6, 1e-35, 1e-6)):
        assert o.dtype == jnp.bfloat16
        np.testing.assert_allclose(np.asarray(o, np.float32), r, rtol=2**-8, atol=atol)
    x = jnp.concatenate([v, g])
    dx = jax.grad(lambda x: jnp.sum(_packed(name)(x).astype(jnp.float32)))(x)
    assert dx.dtype == jnp.bfloat16
    np.testing.assert_array_equal(dx, jnp.concatenate([dv, dg]))


def test_bf16_sigmoid_gradient_does_not_vanish():
    # s * (1 - s) is exactly 0 in bfloat16 for g >= 6.25; sigmoid(g) * sigmoid(-g) is not.
    g = jnp.array([6.5, 8.0, 12.0], jnp.bfloat16)
    dg = jax.grad(lambda g: jnp.sum(glu(g, jnp.ones_like(g)).astype(jnp.float32)))(g)
    expected = jax.nn.sigmoid(g.astype(jnp.float32)) * jax.nn.sigmoid(-g.astype(jnp.float32))
    assert (np.asarray(dg, np.float32) > 0).all()
    np.testing.assert_allclose(np.asarray(dg, np.float32), expected, rtol=2**-8)


def test_bf16_gradients_in_input_dtype_inside_scan():
    g, v = _pair((4,), jnp.bfloat16)

    def loss(g, v):
        def body(c, _):
            return swiglu(c, v), None

        return jax.lax.scan(body, g, None, length=2)[0].astype(jnp.float32).sum()

    grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(g, v)
    assert all(x.dtype == jnp.bfloat16 for x in grads)


@pytest.mark.parametrize("name", NAMES)
def test_infinite_gates(name):
    g = jnp.array([-jnp.inf, jnp.inf, -jnp.inf, jnp.inf, 1.0], jnp.float32)
    v = jnp.array([1.5, 1.5, -2.0, -2.0, 3.0], jnp.float32)
    # The forward pass is the limit where the plain composition evaluates inf * 0 = nan
    # (silu and gelu at -inf: 0), and the plain value everywhere else.
    plain = np.asarray(_plain(name)(g, v))
    out = np.asarray(_ours(name)(g, v))
    np.testing.assert_array_equal(out, np.where(np.isnan(plain), 0.0, plain))
    assert not np.isnan(out).any()
    dg, dv = jax.grad(lambda g, v: jnp.sum(_ours(name)(g, v)), argnums=(0, 1))(g, v)
    # d/dgate = act'(gate) * value has a limit at +-inf (0 or 1 for most activations; the
    # clamped gate is flat above its limit; relu(g)^2 has slope 2g, infinite at +inf).
    assert np.isfinite(dg).all() or name in UNBOUNDED_GRAD, dg
    act_grad_limit = {
        "bilinear": [1, 1, 1, 1],
        "glu": [0, 0, 0, 0],
        "clamped_swiglu": [0, 0, 0, 0],
        "squared_reglu": [0, np.inf, 0, np.inf],
    }.get(name, [0, 1, 0, 1])
    value_factor = np.asarray(PLAIN_VALUE.get(name, lambda v: v)(v[:4]))
    np.testing.assert_array_equal(dg[:4], np.asarray(act_grad_limit, np.float32) * value_factor)
    # d/dvalue = act(gate), the forward factor, taking its limit where the plain composition
    # evaluates inf * 0 (silu and gelu at -inf: the limit is 0, not nan).
    act = np.asarray(OPS[name][2](g))
    expected = np.where(np.isnan(act) & (np.asarray(g) == -np.inf), 0.0, act)
    np.testing.assert_allclose(dv, expected, rtol=1e-6)
    # The value, d/dvalue and d/dgate are one function: d/dvalue equals the forward
    # activation (the value at a v whose transformed value is 1) bit for bit.
    unit = jnp.zeros_like(v) if name in PLAIN_VALUE else jnp.ones_like(v)
    np.testing.assert_array_equal(dv, np.asarray(_ours(name)(g, unit)))
    d2 = jax.grad(lambda g: jnp.sum(jax.grad(lambda g: jnp.sum(_ours(name)(g, v)))(g)))(g)
    assert np.isfinite(d2).all(), d2


# --- saved residuals ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_saved_residuals_are_the_inputs(capsys, name):
    g, v = _pair((16,))
    lines = saved_residuals(capsys, lambda g, v: jnp.sum(_ours(name)(g, v)), g, v)
    assert only_arguments_saved(lines) and len(lines) == 2, lines
    x = jnp.concatenate([v, g])
    lines = saved_residuals(capsys, lambda x: jnp.sum(_packed(name)(x)), x)
    assert only_arguments_saved(lines) and len(lines) == 1, lines
    lines = saved_residuals(
        capsys,
        lambda g, v: jnp.sum(_ours(name)(g, v, broadcast=True)),
        g[:1],
        v.astype(jnp.bfloat16),
    )
    assert only_arguments_saved(lines) and len(lines) == 2, lines
    if name in ("swiglu", "geglu", "geglu_tanh"):
        plain = saved_residuals(capsys, lambda g, v: jnp.sum(_plain(name)(g, v)), g, v)
        assert len(plain) > 2 and not only_arguments_saved(plain), plain


def test_saved_residuals_under_scan(capsys):
    g, v = _pair((8,))

    def loss(f):
        return lambda g, v: jax.lax.scan(lambda c, _: (f(c, v), None), g, None, length=4)[0].sum()

    ours = saved_residuals(capsys, loss(swiglu), g, v)
    plain = saved_residuals(capsys, loss(_plain("swiglu")), g, v)
    assert len(ours) < len(plain), (ours, plain)


def test_ffn_stack_memory_ratio_small():
    # The compiled temp memory of a scanned gated-FFN training step (deterministic).
    size = dict(batch=256, d=64, h=256, layers=8)
    for gate in ffn_stack.GATES:
        assert ffn_stack.memory_ratio(gate, **size) <= 0.6, gate


# --- properties --------------------------------------------------------------------------------


_shapes = st.lists(st.integers(0, 4), min_size=0, max_size=3).map(tuple)
_floats = st.floats(-20, 20, width=32)


def _draw_array(data, shape):
    size = int(np.prod(shape))
    values = data.draw(st.lists(_floats, min_size=size, max_size=size))
    return np.asarray(values, np.float32).reshape(shape)


@given(shape=_shapes, data=st.data())
def test_swiglu_matches_numpy(shape, data):
    g = _draw_array(data, shape)
    v = _draw_array(data, shape)
    out = swiglu(g, v)
    assert out.shape == shape and out.dtype == jnp.float32
    silu, dsilu = _np_silu_and_grad(g.astype(np.float64))
    np.testing.assert_allclose(out, silu * v, rtol=1e-5, atol=1e-6)
    dg, dv = jax.grad(lambda g, v: jnp.sum(swiglu(g, v)), argnums=(0, 1))(g, v)
    np.testing.assert_allclose(dg, dsilu * v, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dv, silu, rtol=1e-5, atol=1e-6)


@given(shape=st.lists(st.integers(0, 3), min_size=1, max_size=3).map(tuple), data=st.data())
def test_glu_packed_matches_numpy(shape, data):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    full = list(shape)
    full[axis] *= 2
    x = _draw_array(data, tuple(full))
    out = glu_packed(x, axis)
    value, gate = np.split(x.astype(np.float64), 2, axis)
    expected = value / (1.0 + np.exp(-gate))
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out, jax.nn.glu(x, axis))


# --- new gates: layouts and gpt-oss's clamped SwiGLU --------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_interleaved_layout_is_the_two_input_op(name):
    x = _rand((3, 10), seed=7, scale=3.0)
    packed = functools.partial(_packed(name), layout="interleaved")
    np.testing.assert_array_equal(packed(x), _ours(name)(x[:, ::2], x[:, 1::2]))
    dx = jax.grad(lambda x: jnp.sum(jnp.sin(packed(x))))(x)
    dg, dv = jax.grad(lambda g, v: jnp.sum(jnp.sin(_ours(name)(g, v))), argnums=(0, 1))(
        x[:, ::2], x[:, 1::2]
    )
    np.testing.assert_allclose(dx[:, ::2], dg, rtol=1e-6)
    np.testing.assert_allclose(dx[:, 1::2], dv, rtol=1e-6)
    with pytest.raises(ValueError, match="unknown layout 'pairs'"):
        _packed(name)(x, layout="pairs")


def test_clamped_swiglu_matches_plain_at_and_beyond_the_limits():
    hj_limit, alpha = 3.0, 1.5
    g = jnp.array([-9.0, -3.0, 0.5, 3.0, 3.0, 4.0, 9.0], jnp.float32)
    v = jnp.array([-9.0, -3.0, 0.5, 3.0, -3.0, 4.0, 2.0], jnp.float32)

    def plain(g, v):
        gc = jnp.minimum(g, hj_limit)
        return gc * jax.nn.sigmoid(alpha * gc) * (jnp.clip(v, -hj_limit, hj_limit) + 1)

    def ours(g, v):
        return hj.clamped_swiglu(g, v, alpha=alpha, limit=hj_limit)

    np.testing.assert_allclose(ours(g, v), plain(g, v), rtol=1e-6)
    grads = jax.grad(lambda g, v: jnp.sum(ours(g, v)), argnums=(0, 1))(g, v)
    ref = jax.grad(lambda g, v: jnp.sum(plain(g, v)), argnums=(0, 1))(g, v)
    # Zero beyond the limits, one half at them (JAX's tie rule), as the plain composition.
    for a, b in zip(grads, ref):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert float(grads[0][-1]) == 0.0 and float(grads[1][0]) == 0.0


def test_clamped_swiglu_parameters_are_checked():
    x = jnp.ones(4)
    with pytest.raises(ValueError, match="limit must be a number > 0"):
        hj.clamped_swiglu(x, x, limit=-1.0)
    with pytest.raises(TypeError, match="alpha must be a static Python number"):
        hj.clamped_swiglu(x, x, alpha=jnp.array(1.0))
    from hadamard_jax._src import glu as glu_module

    with pytest.raises(ValueError, match=r"takes parameters \['alpha', 'limit'\], not \['beta'\]"):
        glu_module.gated("clamped_swiglu", x, x, beta=1.0)
    with pytest.raises(ValueError, match=r"takes parameters \[\], not \['alpha'\]"):
        glu_module.gated("swiglu", x, x, alpha=1.0)
