"""Argument checks and dtype helpers shared by every op and module.

Every check runs in Python at trace time, so a bad call fails when a function is traced (under
``jit`` too) with a ``TypeError`` or ``ValueError`` that names the op, the argument and the
offending shape or value -- never with a silent broadcast, a wrapped integer or a NaN. One
function per kind of argument, so the same argument is judged the same way by every op and
every Flax module:

* arrays: :func:`as_array` (``__jax_array__`` objects such as ``nnx.Variable`` are unwrapped),
  :func:`real_arrays`, :func:`result_shape`, :func:`result_type` (JAX's promotion, weak types
  kept) and :func:`cast`;
* static Python values: :func:`check_bool`, :func:`static_int`, :func:`static_fraction`,
  :func:`static_real`, :func:`check_choice`, :func:`check_axis`, :func:`check_dtype_arg`;
* the one rounding rule from a fraction to a count: :func:`count_of`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.core import Tracer

#: A static array shape.
Shape = tuple[int, ...]

try:  # JAX's own conversion that can produce a weakly typed result (as jnp.multiply does).
    from jax._src.lax.lax import _convert_element_type as _convert
except ImportError:  # pragma: no cover - a JAX without it: results are strongly typed.
    _convert = None


#: The Python scalars JAX converts (subclasses included: ``IntEnum``, NumPy's ``float64``).
_SCALARS = (bool, int, float, complex)

# --- arrays -------------------------------------------------------------------------------------


def as_array(x: Any, name: str, op: str) -> Any:
    """Returns ``x`` as something ``jnp`` accepts, or raises ``TypeError`` naming ``name``.

    Arrays (``jax.Array``, tracers, NumPy arrays and scalars) and Python numbers pass through
    unchanged, so the weak type of a Python scalar is kept as in ``jnp.multiply``. Objects with
    ``__jax_array__`` (``nnx.Variable``/``nnx.Param``, equinox-style wrappers) are unwrapped
    into the array they hold, as ``jnp.multiply`` does. Lists and tuples are converted with
    ``jnp.asarray``. ``None``, strings, typed PRNG keys (an array of dtype ``key<...>``),
    numbers JAX cannot hold (``fractions.Fraction``, ``decimal.Decimal``) and other objects are
    a ``TypeError``.
    """
    if not isinstance(x, jax.Array) and hasattr(x, "__jax_array__"):
        x = x.__jax_array__()
    if isinstance(x, jax.Array):
        if jnp.issubdtype(x.dtype, jax.dtypes.extended):
            raise TypeError(
                f"{op}: argument {name!r} must be a numeric or boolean array, got an array of "
                f"dtype {x.dtype} (a typed PRNG key: pass jax.random.key_data(key) for its "
                "bits, or draw numbers from it with jax.random)."
            )
        return x
    if isinstance(x, (np.ndarray, np.generic)):
        if x.dtype.kind not in "biufc":
            raise TypeError(
                f"{op}: argument {name!r} must be a numeric or boolean array, got a NumPy array "
                f"of dtype {x.dtype}."
            )
        return x
    if isinstance(x, _SCALARS):
        return x
    if isinstance(x, (list, tuple)):
        try:
            return jnp.asarray(x)
        except (TypeError, ValueError) as e:
            raise TypeError(
                f"{op}: argument {name!r} is a {type(x).__name__} that is not a rectangular "
                f"nested sequence of numbers: {e}"
            ) from None
    raise TypeError(
        f"{op}: argument {name!r} must be an array or a number (bool, int, float, complex), got "
        f"{type(x).__name__} ({x!r:.60})."
    )


def real_arrays(arrays: Sequence[Any], names: Sequence[str], op: str) -> list[Any]:
    """:func:`as_array` of each argument, refusing complex dtypes (for real activations)."""
    out = []
    for x, name in zip(arrays, names):
        x = as_array(x, name, op)
        dtype = jnp.result_type(x)
        if jnp.issubdtype(dtype, jnp.complexfloating):
            raise TypeError(
                f"{op}: argument {name!r} has complex dtype {dtype}; gating ops are defined for "
                "real inputs only (activations such as sigmoid, relu and gelu are real functions)."
            )
        out.append(x)
    return out


def result_shape(shapes: Sequence[Shape], names: Sequence[str], op: str, broadcast: bool) -> Shape:
    """The common shape of ``shapes``: equal shapes, or NumPy broadcasting if ``broadcast``.

    Raises:
      ValueError: shapes differ and ``broadcast`` is False, or they do not broadcast.
    """
    shapes = [tuple(s) for s in shapes]
    if not broadcast:
        for name, shape in zip(names[1:], shapes[1:]):
            if shape != shapes[0]:
                raise ValueError(
                    f"{op}: the Hadamard product needs equal shapes, got {names[0]}.shape="
                    f"{shapes[0]} and {name}.shape={shape}. Pass broadcast=True to broadcast "
                    "them NumPy-style."
                )
        return shapes[0]
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        listed = ", ".join(f"{n}.shape={s}" for n, s in zip(names, shapes))
        raise ValueError(f"{op}: shapes do not broadcast together: {listed}.") from None


def result_type(arrays: Sequence[Any], *, floating: bool = False) -> tuple[np.dtype, bool]:
    """``(dtype, weak)``: the dtype ``jnp.multiply`` would give ``arrays`` and whether it is weak.

    A result is weakly typed when every input is (Python scalars, or arrays made from them), so
    ``hadamard(2.0, 3.0)`` stays weak like ``jnp.multiply(2.0, 3.0)`` and a later bfloat16
    computation is not silently upcast. With ``floating=True`` integers and booleans promote to
    the default float dtype (as ``jax.nn.gelu`` does; ``1.0`` is a weak float, so it never
    widens a floating result).
    """
    extra = (1.0,) if floating else ()
    dtype, weak = jax.dtypes.result_type(*arrays, *extra, return_weak_type_flag=True)
    return jnp.dtype(dtype), bool(weak)


def cast(x: Any, dtype: Any, weak: bool = False) -> jax.Array:
    """``x`` converted to ``dtype``; weakly typed if ``weak`` (the result type of an op)."""
    dtype = jnp.dtype(dtype)
    if weak and _convert is not None:
        return jnp.asarray(_convert(x, dtype, weak_type=True))
    return jnp.asarray(x).astype(dtype)


def broadcast_cast(x: Any, shape: Shape, dtype: Any) -> jax.Array:
    """``x`` converted to ``dtype`` and broadcast (explicitly) to ``shape``."""
    return jnp.broadcast_to(jnp.asarray(x).astype(dtype), shape)


def is_differentiable(dtype: Any) -> bool:
    """Whether values of ``dtype`` carry tangents (floating or complex)."""
    return jnp.issubdtype(dtype, jnp.inexact)


# --- checks once per trace -----------------------------------------------------------------------

#: Static values a jit cache key can hold as they are: immutable, hashable, equal by value.
_SIMPLE_STATICS = frozenset({bool, int, float, str, type(None)})


def _is_concrete(x: Any) -> bool:
    return isinstance(x, jax.Array) and not isinstance(x, Tracer)


def checked_once(impl: Callable[..., jax.Array]) -> Callable[..., jax.Array]:
    """``call(arrays, statics)``: ``impl(*arrays, *statics)`` with its checks run once per trace.

    ``impl`` checks every argument (the functions of this module) and computes the op. An eager
    call whose arrays are all concrete ``jax.Array`` s and whose static values are all plain
    ``bool``/``int``/``float``/``str``/``None`` goes through ``jax.jit(impl)``: the checks run
    when jit traces, once per shapes, dtypes and static values (jit's cache), and a repeated
    call costs what a jitted ``jnp`` call costs (measured: ``hadamard`` on a 32x32 float32
    array 1.0x ``jnp.multiply``, against 2x with the checks in Python on every call;
    :func:`hadamard_jax.bench.gating.eager_overhead`). Errors are the same, raised at trace time.
    Anything else (tracers, NumPy arrays, Python numbers, lists, ``nnx.Variable``, a static of
    another type) runs ``impl`` directly, checks included, as before.

    The jit cache key holds each static as ``(type, value)``, so ``True`` and ``1`` (equal and of
    equal hash) are traced, and checked, apart.
    """

    def keyed(key: tuple[tuple[type, Any], ...], *arrays: Any) -> jax.Array:
        return impl(*arrays, *[value for _, value in key])

    keyed.__name__ = keyed.__qualname__ = getattr(impl, "__name__", "checked_once")
    jitted = jax.jit(keyed, static_argnums=0)

    def call(arrays: Sequence[Any], statics: Sequence[Any]) -> jax.Array:
        for s in statics:
            if type(s) not in _SIMPLE_STATICS:
                return impl(*arrays, *statics)
        for x in arrays:
            if not _is_concrete(x):
                return impl(*arrays, *statics)
        return jitted(tuple([(type(s), s) for s in statics]), *arrays)

    return call


# --- static arguments ---------------------------------------------------------------------------


def _describe(value: Any) -> str:
    return f"{type(value).__name__} ({value!r:.60})"


def _is_static_number(value: Any) -> bool:
    return isinstance(value, (numbers.Real, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )


def check_bool(value: Any, name: str, op: str) -> bool:
    """``value`` as a Python bool (``np.bool_`` accepted), or a ``TypeError`` naming it.

    Truthiness is not enough: ``0``, ``"yes"`` and arrays are refused.
    """
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{op}: {name} must be a static bool, got {_describe(value)}.")
    return bool(value)


def static_int(value: Any, name: str, op: str, lo: int | None = None, hi: int | None = None) -> int:
    """``value`` as a Python int in ``[lo, hi]``, or a ``TypeError``/``ValueError`` naming it."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(
            f"{op}: {name} must be a static Python int, got {_describe(value)}; traced values "
            "are not allowed."
        )
    value = int(value)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        if lo is not None and hi is not None:
            bounds = f"in [{lo}, {hi}]"
        else:
            bounds = f">= {lo}" if lo is not None else f"<= {hi}"
        raise ValueError(f"{op}: {name} must be {bounds}, got {name}={value}.")
    return value


def static_real(
    value: Any, name: str, op: str, ok: Callable[[float], bool] | None = None, want: str = ""
) -> float:
    """``value`` as a finite Python float for which ``ok`` holds, or an error naming it.

    Args:
      value: the argument.
      name, op: for the message.
      ok: an extra condition (e.g. ``lambda v: v > 0``); NaN and +-inf are always refused.
      want: how the message describes the allowed values (e.g. ``"a number > 0"``).
    """
    if not _is_static_number(value):
        raise TypeError(
            f"{op}: {name} must be a static Python number, got {_describe(value)}; traced "
            "values are not allowed."
        )
    value = float(value)
    if not math.isfinite(value) or (ok is not None and not ok(value)):
        raise ValueError(f"{op}: {name} must be {want or 'a finite number'}, got {name}={value}.")
    return value


def static_fraction(value: Any, name: str, op: str, *, below_one: bool = False) -> float:
    """``value`` as a Python float in ``[0, 1]`` (``[0, 1)`` with ``below_one``), or an error."""
    if below_one:
        return static_real(value, name, op, lambda v: 0.0 <= v < 1.0, "in [0, 1)")
    return static_real(value, name, op, lambda v: 0.0 <= v <= 1.0, "in [0, 1]")


def count_of(fraction: float, size: int) -> int:
    """How many of ``size`` entries a ``fraction`` selects: the library's one rounding rule.

    ``round(fraction * size)`` with Python's ``round`` (half to even). A sparsity ``s`` prunes
    ``count_of(s, size)`` entries and keeps ``size - count_of(s, size)`` everywhere: the mask
    makers, ``prune`` and ``MaskedLinear(mask_type="ste", sparsity=s)`` (5 weights at
    ``s = 0.5``: 2 pruned, 3 kept).
    """
    return int(round(fraction * size))


def check_choice(value: Any, name: str, op: str, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices`` (strings), else a ``TypeError``/``ValueError``."""
    if not isinstance(value, str):
        raise TypeError(
            f"{op}: {name} must be a string, one of {list(choices)}, got {_describe(value)}."
        )
    if value not in choices:
        raise ValueError(f"{op}: unknown {name} {value!r}; expected one of {list(choices)}.")
    return value


def check_axis(axis: Any, ndim: int, name: str, op: str) -> int:
    """Normalises an integer axis into ``[0, ndim)``, or raises naming it."""
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"{op}: {name} must be an int, got {_describe(axis)}.")
    if not -ndim <= axis < ndim:
        raise ValueError(f"{op}: {name}={axis} is out of range for an array of rank {ndim}.")
    return int(axis) % ndim


def check_dtype_arg(dtype: Any, name: str, op: str) -> np.dtype | None:
    """Canonicalises an optional dtype argument, or raises ``TypeError`` naming it."""
    if dtype is None:
        return None
    try:
        return jnp.dtype(dtype)
    except TypeError:
        raise TypeError(f"{op}: {name}={dtype!r} is not a dtype.") from None
