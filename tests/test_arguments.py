"""Arguments checked once, with errors that name them, across the ops and modules (issue 22,
item 9, and issue 24): rates out of ``[0, 1)`` at construction of every module that takes one,
inputs that are not numbers (``Fraction``, ``Decimal``, typed PRNG keys) in every op, and eager
calls that run their Python checks once per trace (jit's cache), not on every call.

(Moved out of ``test_hardening_gates.py``, whose gate tests are now in ``test_gates.py``; these
belong with ``test_checks.py``.)
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
from hadamard_jax._src.gates import GATES

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
