"""The gate table (``hadamard_jax/_src/gates.py``): every gate, in every layout and fused op, is
finite and right up to the dtype's largest value, and a new gate is one row plus its functions.

* Every gate of the table, in float32, bfloat16 and float16, through the two-input ops, the
  packed ops, ``gated_mlp`` and ``gated_rms_norm``: value and both derivatives are never NaN for
  a finite gate up to ``finfo.max`` and equal a float64 reference (``inf`` of the right sign
  where the mathematical value is beyond the dtype's range), and at ``+-inf`` they are the
  limits (issue 22, item 8). The reference is each row's plain ``jax.nn`` composition
  (``gates.PLAIN``) and its ``jax.grad`` in float64; a NumPy check from the formulas keeps the
  references themselves honest.
* Adding a gate: a row built here, and its two functions written as ``glu.py`` writes them, are
  picked up by the ops, ``gated_mlp``, the NNX and Linen modules, the error messages, the
  docstrings (their example runs) and the docs' generated blocks.
"""

from __future__ import annotations

import doctest
import functools
import importlib.util
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import hadamard_jax as hj
from hadamard_jax import linen as hj_linen
from hadamard_jax import nnx as hj_nnx
from hadamard_jax._src import gates
from hadamard_jax._src import glu as glu_lib
from hadamard_jax._src.gates import GATES

# --- every gate finite up to finfo.max (issue 22, item 8) -------------------------------------

DTYPES = (jnp.float32, jnp.bfloat16, jnp.float16)
#: relative tolerance against the float64 reference, per dtype (results are rounded once).
RTOL = {jnp.float32: 2e-6, jnp.bfloat16: 1e-2, jnp.float16: 1e-3}
#: What stands for a gate of +-inf in the float64 reference: beyond every tested dtype's range
#: (so each part is its limit at +-inf rounded to the dtype), with a cube still finite in float64
#: (the tanh GELU's polynomial; at 1e300 its derivative would be inf * 0).
INF_STANDIN = 1e100
CASES = [(name, False) for name in GATES] + [
    (name, True) for name, gate in GATES.items() if gate.approximate is not None
]


@functools.cache
def _float64_parts(key: str):
    """``g, v -> (act, act', value, value')`` in float64 from the row's plain composition
    (``gates.PLAIN[key]``), the derivatives by ``jax.grad``; jitted once per gate."""
    act, value = gates.PLAIN[key]
    both = jax.vmap(lambda g, v: (*jax.value_and_grad(act)(g), *jax.value_and_grad(value)(v)))
    return jax.jit(both)


def _reference(name: str, approx: bool, g, v):
    """``(h, dh/dg, dh/dv)`` in float64 (NumPy arrays); +-inf gates stand for +-INF_STANDIN."""
    g = np.where(np.isinf(g), np.sign(g) * INF_STANDIN, g)
    with jax.enable_x64(True):
        parts = _float64_parts(f"{name}_tanh" if approx else name)(g, v)
        act, dact, val, dval = (np.asarray(part, np.float64) for part in parts)
    with np.errstate(over="ignore", invalid="ignore"):  # beyond float64: beyond every dtype
        return act * val, dact * val, act * dval


def _sig(x):
    """A sigmoid in float64 that neither overflows nor warns."""
    return np.exp(-np.logaddexp(0.0, -x))


def _phi_cdf(x):
    return np.array([0.5 * math.erfc(-t / math.sqrt(2.0)) for t in np.ravel(x)]).reshape(x.shape)


def test_float64_references_match_the_formulas():
    """The references come from the rows; three are checked here against NumPy/``math`` written
    from the formulas (a wrong ``plain`` in a row fails here, not only against itself)."""
    g = np.array([-1e30, -30.0, -1.0, 0.0, 0.5, 7.0, 8.0, 1e30])
    v = np.array([1.5, -0.75, 7.0, -7.0, 8.0, 0.5, -9.0, 2.0])
    limit, alpha = 7.0, 1.702
    sig = _sig(g)
    clamped_g = np.minimum(g, limit)
    s = _sig(alpha * clamped_g)
    clamped_act = clamped_g * s
    # jnp.minimum and jnp.clip differentiate a tie as one half.
    dclamp_g = np.where(g < limit, 1.0, np.where(g == limit, 0.5, 0.0))
    dclamp_v = np.where(np.abs(v) < limit, 1.0, np.where(np.abs(v) == limit, 0.5, 0.0))
    clamped_v = np.clip(v, -limit, limit) + 1.0
    dclamped_act = (s + alpha * clamped_g * s * _sig(-alpha * clamped_g)) * dclamp_g
    formulas = {
        "glu": (sig * v, sig * _sig(-g) * v, sig),
        "geglu": (
            g * _phi_cdf(g) * v,
            (_phi_cdf(g) + g * np.exp(-0.5 * g * g) / math.sqrt(2 * math.pi)) * v,
            g * _phi_cdf(g),
        ),
        "clamped_swiglu": (
            clamped_act * clamped_v,
            dclamped_act * clamped_v,
            clamped_act * dclamp_v,
        ),
    }
    for name, want in formulas.items():
        got = _reference(name, False, g, v)
        for part, (x, y) in enumerate(zip(got, want)):
            np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-300, err_msg=f"{name} {part}")


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


# --- a new gate: one row and two functions ------------------------------------------------------


def _docs_extension():
    path = pathlib.Path(__file__).resolve().parent.parent / "docs" / "_ext" / "gate_docs.py"
    spec = importlib.util.spec_from_file_location("gate_docs", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_new_gate_is_one_row_and_two_functions(monkeypatch):
    """Everything that offers a choice of gate reads the table: a row added (here by patching
    the table) and two functions written as in ``glu.py`` (with their export) are the whole
    change. The new gate applies the tanh GELU without a flag, so every result must equal
    ``geglu``'s with ``approximate=True`` (the same activation, parameters and weights)."""
    row = gates.Gate(
        "tanh_geglu", "gelu_tanh", None, "gelu_tanh(g)", plain=gates.PLAIN["geglu_tanh"][0]
    ).with_doc(
        math=r"\mathrm{tanh\_geglu}(g, v)_i = \mathrm{gelu}_{\tanh}(g_i)\, v_i",
        example=gates.Example((0.0, 100.0), (2.0, 3.0), "Array([  0., 300.], dtype=float32)"),
    )
    monkeypatch.setattr(gates, "GATES", {**gates.GATES, row.name: row})

    # The two functions and the export, as glu.py and hadamard_jax/__init__.py write them.
    @glu_lib.documented
    def tanh_geglu(gate, value, *, broadcast: bool = False) -> jax.Array:
        """Tanh GeGLU.

        {{gate_doc}}
        """
        return glu_lib.gated("tanh_geglu", gate, value, broadcast=broadcast)

    @glu_lib.documented
    def tanh_geglu_packed(x, axis: int = -1, *, layout: str = "halves") -> jax.Array:
        """Packed tanh GeGLU.

        {{gate_doc}}
        """
        return glu_lib.gated_packed("tanh_geglu", x, axis=axis, layout=layout)

    monkeypatch.setattr(hj, "tanh_geglu", tanh_geglu, raising=False)
    monkeypatch.setattr(hj, "tanh_geglu_packed", tanh_geglu_packed, raising=False)

    # The ops.
    g, v = jnp.linspace(-3.0, 3.0, 8).reshape(2, 4), jnp.linspace(0.5, 2.0, 8).reshape(2, 4)
    want = hj.geglu(g, v, approximate=True)
    np.testing.assert_array_equal(tanh_geglu(g, v), want)
    np.testing.assert_array_equal(tanh_geglu_packed(jnp.concatenate([v, g], -1)), want)
    # gated_mlp and the modules' activation=, NNX and Linen.
    x, w_gate, w_up, w_down = (
        jnp.full(s, c) for s, c in [((2, 4), 0.5), ((4, 6), 0.3), ((4, 6), -0.2), ((6, 3), 0.1)]
    )
    np.testing.assert_array_equal(
        hj.gated_mlp(x, w_gate, w_up, w_down, activation="tanh_geglu"),
        hj.gated_mlp(x, w_gate, w_up, w_down, activation="geglu", approximate=True),
    )
    for cls, args in [(hj_nnx.GLU, (4, 3)), (hj_nnx.GatedMLP, (4, 6))]:
        new = cls(*args, activation="tanh_geglu", rngs=nnx.Rngs(0))
        old = cls(*args, activation="geglu", approximate=True, rngs=nnx.Rngs(0))
        np.testing.assert_array_equal(new(x), old(x), err_msg=cls.__name__)
    for cls, arg in [(hj_linen.GLU, 3), (hj_linen.GatedMLP, 6)]:
        new, old = cls(arg, activation="tanh_geglu"), cls(arg, activation="geglu", approximate=True)
        params = old.init(jax.random.key(0), x)
        np.testing.assert_array_equal(new.apply(params, x), old.apply(params, x), cls.__name__)
    # The error messages list it among the choices (and not among the approximate forms).
    with pytest.raises(ValueError, match=r"expected one of \[.*'tanh_geglu'\]"):
        hj.gated_mlp(x, w_gate, w_up, w_down, activation="tanh_gelu")
    with pytest.raises(ValueError, match=r"applies to activation in \['geglu'\]"):
        hj_nnx.GLU(4, 3, activation="tanh_geglu", approximate=True, rngs=nnx.Rngs(0))
    # The docstrings: the row's math and example, the layouts' Args; the examples run.
    for fn in (tanh_geglu, tanh_geglu_packed):
        assert fn.__doc__ is not None and "{{" not in fn.__doc__
        assert "Args:" in fn.__doc__ and r"\mathrm{tanh\_geglu}" in tanh_geglu.__doc__
        tests = doctest.DocTestFinder().find(fn, fn.__name__, globs={})
        results = doctest.DocTestRunner().run(tests[0])
        assert results.attempted == 3 and results.failed == 0, fn.__name__
    # The docs: the guide's table row and the API entries generated at build time.
    assert "| `tanh_geglu` | `tanh_geglu(gate, value)`, `tanh_geglu_packed(x)` |" in (
        gates.markdown_table()
    )
    api = _docs_extension().fill("<!-- gate-functions -->\n<!-- /gate-functions -->")
    assert api.endswith(
        ".. autofunction:: hadamard_jax.tanh_geglu\n\n"
        ".. autofunction:: hadamard_jax.tanh_geglu_packed\n```\n<!-- /gate-functions -->"
    )
