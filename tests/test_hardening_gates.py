"""Regressions of issue 22 (items 8 and 9) for the gates, the gated ops and their Flax modules.

* Every gate of the gate table, in float32, bfloat16 and float16, through the two-input ops, the
  packed ops, ``gated_mlp`` and ``gated_rms_norm``: value and both derivatives are never NaN for
  a finite gate up to ``finfo.max`` and equal a float64 NumPy reference (``inf`` of the right
  sign where the mathematical value is beyond the dtype's range), and at ``+-inf`` they are the
  limits.
* Bad arguments are errors naming them: rates out of ``[0, 1)`` at construction of every module
  that takes one, and inputs that are not numbers (``Fraction``, typed PRNG keys) in every op.
"""

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
from hadamard_jax._src import glu as glu_lib
from hadamard_jax._src.gates import GATES

# --- item 8: every gate finite up to finfo.max -------------------------------------------------

DTYPES = (jnp.float32, jnp.bfloat16, jnp.float16)
#: relative tolerance against the float64 reference, per dtype (results are rounded once).
RTOL = {jnp.float32: 2e-6, jnp.bfloat16: 1e-2, jnp.float16: 1e-3}
ALPHA, LIMIT = 1.702, 7.0


def _sig(x):
    """A sigmoid in float64 that neither overflows nor warns."""
    return np.exp(-np.logaddexp(0.0, -x))


def _phi_cdf(x):
    return np.array([0.5 * math.erfc(-t / math.sqrt(2.0)) for t in np.ravel(x)]).reshape(x.shape)


def _gelu_tanh(x):
    # Beyond |x| = 1e4, 1 + tanh(u) and sech(u)^2 are 2 and 0 to float64 precision: the
    # formula at the clipped point gives the same value, and no inf * 0 from x^3.
    c = math.sqrt(2.0 / math.pi)
    xc = np.clip(x, -1e4, 1e4)
    u = c * (xc + 0.044715 * xc**3)
    du = c * (1.0 + 3.0 * 0.044715 * xc**2)
    sech2 = 4.0 * _sig(2.0 * u) * _sig(-2.0 * u)
    return x * _sig(2.0 * u), _sig(2.0 * u) + 0.5 * xc * sech2 * du


def _quick(x, alpha=ALPHA):
    s, s_neg = _sig(alpha * x), _sig(-alpha * x)
    return x * s, s + alpha * x * s * s_neg


#: ``act(g) -> (act, act')`` in float64, written from the formulas, not from the library.
REFERENCE = {
    "glu": lambda g: (_sig(g), _sig(g) * _sig(-g)),
    "bilinear": lambda g: (g, np.ones_like(g)),
    "reglu": lambda g: (np.maximum(g, 0.0), (g > 0).astype(float)),
    "geglu": lambda g: (
        g * _phi_cdf(g),
        _phi_cdf(g) + g * np.exp(-0.5 * g * g) / math.sqrt(2 * math.pi),
    ),
    "geglu_tanh": _gelu_tanh,
    "swiglu": lambda g: _quick(g, 1.0),
    "quick_geglu": _quick,
    "squared_reglu": lambda g: (np.maximum(g, 0.0) ** 2, 2.0 * np.maximum(g, 0.0)),
    "clamped_swiglu": lambda g: (
        _quick(np.minimum(g, LIMIT))[0],
        _quick(np.minimum(g, LIMIT))[1] * np.where(g < LIMIT, 1.0, np.where(g == LIMIT, 0.5, 0.0)),
    ),
}
CASES = [(name, False) for name in GATES] + [
    (name, True) for name, gate in GATES.items() if gate.approximate is not None
]


def _reference(name: str, approx: bool, g, v):
    """``(h, dh/dg, dh/dv)`` in float64; +-inf gates stand for +-1e300 (every part is then its
    limit at +-inf rounded to any of the dtypes: beyond the range, or exactly the bound)."""
    g = np.where(np.isinf(g), np.sign(g) * 1e300, g)
    with np.errstate(over="ignore", under="ignore"):  # float64 overflow: beyond every dtype
        act, dact = REFERENCE[f"{name}_tanh" if approx else name](g)
        if not GATES[name].clamps_value:
            return act * v, dact * v, act
        clipped = np.clip(v, -LIMIT, LIMIT) + 1.0
        inside = np.where(np.abs(v) < LIMIT, 1.0, np.where(np.abs(v) == LIMIT, 0.5, 0.0))
        return act * clipped, dact * clipped, act * inside


def _gate_values(dtype):
    """Finite gates from 1 to finfo.max and +-inf, each with values 1.5, -0.75 and 0 (not 0
    for an infinite gate: ``inf * 0`` is NaN in IEEE arithmetic, as ``jnp.multiply``'s)."""
    big = float(jnp.finfo(dtype).max)
    finite = [big, big / 2, min(1e30, big / 3), 1e4, 1.0]
    finite = finite + [-x for x in finite]
    g = [x for x in finite for _ in range(3)] + [math.inf] * 2 + [-math.inf] * 2
    v = [1.5, -0.75, 0.0] * len(finite) + [1.5, -0.75] * 2
    return np.asarray(jnp.asarray(g, dtype), np.float64), np.asarray(
        jnp.asarray(v, dtype), np.float64
    )


def _assert_matches(got, want, dtype, what):
    got = np.asarray(jnp.asarray(got, jnp.float32), np.float64)
    big = float(jnp.finfo(dtype).max)
    assert not np.isnan(got).any(), f"{what}: NaN at {np.flatnonzero(np.isnan(got))}"
    assert not np.isnan(want).any(), f"{what}: NaN in the reference"
    over = np.abs(want) > big * (1 + RTOL[dtype])
    # Beyond the dtype's range: inf of the right sign (the honest float result).
    np.testing.assert_array_equal(got[over], np.sign(want[over]) * np.inf, err_msg=what)
    # Within the range (or within rounding of its bound, where inf is the rounded result).
    near = np.clip(got[~over], -big, big)
    np.testing.assert_allclose(near, want[~over], rtol=RTOL[dtype], atol=1e-30, err_msg=what)


def _check(name, approx, dtype, fn):
    """``fn(g, v) -> (h, dh/dg, dh/dv)`` against the reference over :func:`_gate_values`."""
    g, v = _gate_values(dtype)
    h, dg, dv = fn(jnp.asarray(g, dtype), jnp.asarray(v, dtype))
    want = _reference(name, approx, g, v)
    for got, ref, what in zip((h, dg, dv), want, ("value", "d/dgate", "d/dvalue")):
        _assert_matches(got, ref, dtype, f"{name} approx={approx} {jnp.dtype(dtype)} {what}")


def _vjp(f, *args):
    out, pull = jax.vjp(f, *args)
    return out, *pull(jnp.ones_like(out))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: jnp.dtype(d).name)
@pytest.mark.parametrize("name,approx", CASES)
def test_gates_finite_up_to_max(name, approx, dtype):
    """Two-input and packed forms: the issue's NaN (quick_geglu, clamped_swiglu at -2e38)."""

    def pair(g, v):
        return _vjp(lambda g, v: glu_lib.gated(name, g, v, approximate=approx), g, v)

    def packed(g, v):
        f = lambda x: glu_lib.gated_packed(name, x, approximate=approx)  # noqa: E731
        h, dx = _vjp(f, jnp.concatenate([v, g]))
        dv, dg = jnp.split(dx, 2)
        return h, dg, dv

    _check(name, approx, dtype, pair)
    _check(name, approx, dtype, packed)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: jnp.dtype(d).name)
def test_gated_mlp_and_norm_finite_up_to_max(dtype):
    """``gated_mlp`` (hidden ``g = x W_g = g``, ``u = v``, ``y = h``) and ``gated_rms_norm``
    (``norm_before_gate=True``, ``x`` one element of 1, so ``y = act(g) v``), finite gates."""
    one = jnp.ones((1, 1), dtype)

    def mlp_case(name, approx):
        def f(g, v):
            y = hj.gated_mlp(
                one, g.reshape(1, 1), v.reshape(1, 1), one, activation=name, approximate=approx
            )
            return y[0, 0]

        return jax.jit(lambda g, v: _vjp(jax.vmap(f), g, v))

    def norm_case(name):
        def f(g, v):
            return hj.gated_rms_norm(one, g.reshape(1, 1), v.reshape(1), activation=name)[0, 0]

        return jax.jit(lambda g, v: _vjp(jax.vmap(f), g, v))

    for name, approx in CASES:
        g, v = _gate_values(dtype)
        finite = np.isfinite(g)
        g, v = jnp.asarray(g[finite], dtype), jnp.asarray(v[finite], dtype)
        g64, v64 = np.asarray(g, np.float64), np.asarray(v, np.float64)
        want = _reference(name, approx, g64, v64)
        what = f"gated_mlp {name} approx={approx} {jnp.dtype(dtype)}"
        for got, ref in zip(mlp_case(name, approx)(g, v), want):
            _assert_matches(got, ref, dtype, what)
        if approx or GATES[name].clamps_value:
            continue
        # rms(1) = 1 / sqrt(1 + eps): y = act(g) v (1 - 5e-7), within every dtype's tolerance.
        h, dg, _ = norm_case(name)(g, v)
        what = f"gated_rms_norm {name} {jnp.dtype(dtype)}"
        _assert_matches(h, want[0], dtype, what)
        _assert_matches(dg, want[1], dtype, what)


# --- item 9: rates at construction, non-numbers in every op ------------------------------------


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
