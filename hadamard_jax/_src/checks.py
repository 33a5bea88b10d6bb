"""Argument checks shared by every op.

Every check runs in Python at trace time, so a bad call fails when a function is traced (under
``jit`` too) with a ``TypeError`` or ``ValueError`` that names the op, the argument and the
offending shape or value -- never with a silent broadcast or a NaN.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Shape = tuple[int, ...]


def as_array(x: Any, name: str, op: str) -> Any:
    """Returns ``x`` as something ``jnp`` accepts, or raises ``TypeError`` naming ``name``.

    Arrays (``jax.Array``, tracers, NumPy arrays and scalars) and Python numbers pass through
    unchanged, so weak typing of Python scalars is kept as in ``jnp.multiply``. Lists and tuples
    are converted with ``jnp.asarray``. ``None``, strings and other objects are a ``TypeError``.
    """
    if isinstance(x, (jax.Array, np.ndarray, np.generic)):
        if isinstance(x, (np.ndarray, np.generic)) and x.dtype.kind not in "biufc":
            raise TypeError(
                f"{op}: argument {name!r} must be a numeric or boolean array, got a NumPy array "
                f"of dtype {x.dtype}."
            )
        return x
    if isinstance(x, (bool, numbers.Number)) and not isinstance(x, (str, bytes)):
        return x
    if hasattr(x, "__jax_array__"):
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
        f"{op}: argument {name!r} must be an array or a number, got {type(x).__name__} ({x!r:.60})."
    )


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


def result_dtype(arrays: Sequence[Any]) -> np.dtype:
    """The dtype ``jnp.multiply`` would give for ``arrays`` (JAX's promotion rules)."""
    return jnp.result_type(*arrays)


def check_dtype_arg(dtype: Any, name: str, op: str) -> np.dtype | None:
    """Canonicalises an optional dtype argument, or raises ``TypeError`` naming it."""
    if dtype is None:
        return None
    try:
        return jnp.dtype(dtype)
    except TypeError:
        raise TypeError(f"{op}: {name}={dtype!r} is not a dtype.") from None


def check_bool(value: Any, name: str, op: str) -> bool:
    """Returns ``value`` as a Python bool, or raises ``TypeError`` naming it (no truthiness)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{op}: {name} must be a bool, got {type(value).__name__} ({value!r}).")
    return bool(value)


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


def is_differentiable(dtype: Any) -> bool:
    """Whether values of ``dtype`` carry tangents (floating or complex)."""
    return jnp.issubdtype(dtype, jnp.inexact)


def check_axis(axis: Any, ndim: int, name: str, op: str) -> int:
    """Normalises an integer axis into ``[0, ndim)``, or raises naming it."""
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"{op}: {name} must be an int, got {type(axis).__name__} ({axis!r}).")
    if not -ndim <= axis < ndim:
        raise ValueError(f"{op}: {name}={axis} is out of range for an array of rank {ndim}.")
    return int(axis) % ndim
