"""Ranking: exact top-k selection with a stable tie rule, shared by every mask maker.

Entries are ranked by a key (``|x|`` or ``x``), larger first; among equal keys the entry with
the smaller index ranks higher. ``-0.0`` equals ``0.0`` and NaN ranks above ``+inf``. Counts are
exact (a radix select, no thresholding that miscounts with ties).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from hadamard_jax._src.checks import Shape


def rank_key(x: jax.Array, *, magnitude: bool) -> jax.Array:
    """The sort key of ``x``: ``|x|`` (exact, also for the most negative integer) or ``x``."""
    x = lax.stop_gradient(x)
    dtype = x.dtype
    if dtype == jnp.bool_:
        return x.astype(jnp.uint8)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        if not magnitude:
            raise TypeError(f"scores must be real to be ranked, got dtype {dtype}.")
        return jnp.abs(x)
    if not magnitude or jnp.issubdtype(dtype, jnp.unsignedinteger):
        return x
    if jnp.issubdtype(dtype, jnp.signedinteger):
        # |INT_MIN| wraps to INT_MIN; read as unsigned it is the right magnitude.
        return jnp.abs(x).astype(jnp.dtype(f"uint{dtype.itemsize * 8}"))
    return jnp.abs(x)


def ordered_bits(key: jax.Array) -> jax.Array:
    """Unsigned integers in the order of ``key``: ``a < b`` iff ``bits(a) < bits(b)``.

    Floats map through their bit pattern (negative values reversed), after ``-0.0`` becomes
    ``0.0`` and every NaN the one NaN that ranks above ``+inf``; subnormals keep their order
    (they rank above ``0.0`` although XLA's CPU arithmetic flushes them to zero); signed
    integers flip their sign bit; unsigned integers and booleans are their own order.
    """
    dtype = key.dtype
    if dtype == jnp.bool_:
        return key.astype(jnp.uint8)
    if jnp.issubdtype(dtype, jnp.unsignedinteger):
        return key
    unsigned = jnp.dtype(f"uint{dtype.itemsize * 8}")
    sign = np.array(1 << (dtype.itemsize * 8 - 1)).astype(unsigned)
    if jnp.issubdtype(dtype, jnp.signedinteger):
        return lax.bitcast_convert_type(key, unsigned) ^ sign
    # -0.0 -> 0.0 on the bit pattern, not by a float compare: XLA on CPU treats subnormals as
    # zero in ``key == 0`` (denormals-are-zero), which would tie 1e-45 with 0.0; and under jit
    # it folds the IEEE idiom ``key + 0.0`` to ``key``.
    canonical = jnp.where(jnp.isnan(key), jnp.array(jnp.nan, dtype), key)
    bits = lax.bitcast_convert_type(canonical, unsigned)
    bits = jnp.where(bits == sign, jnp.zeros((), unsigned), bits)
    return jnp.where((bits & sign) != 0, ~bits, bits | sign)


def keep_largest(key: jax.Array, k: int | jax.Array) -> jax.Array:
    """Bool mask keeping the ``k`` largest entries of ``key`` along its last axis.

    Ties: the smaller index is kept first. Exact count ``k`` in every row (clipped to
    ``[0, length]``). ``k`` may be a static int or a traced integer array that broadcasts
    against ``key.shape[:-1] + (1,)`` (one count per row, e.g. a count from a schedule inside
    a jitted training step: no recompilation when it changes).

    No sort: a radix select finds each row's ``k``-th largest value ``t`` bit by bit from the
    top (one counting pass per bit of the key's width), then every entry above ``t`` is kept,
    and of the entries equal to ``t`` the first ones in index order (a cumulative count), as
    many as are still needed. ``O(bits * length)`` work, vectorised over rows.
    """
    length = key.shape[-1]
    if not isinstance(k, jax.Array):
        if k <= 0:
            return jnp.zeros(key.shape, jnp.bool_)
        if k >= length:
            return jnp.ones(key.shape, jnp.bool_)
    bits = ordered_bits(key)
    width = bits.dtype.itemsize * 8
    k = jnp.broadcast_to(jnp.clip(jnp.asarray(k, jnp.int32), 0, length), key.shape[:-1] + (1,))
    one = jnp.ones((), bits.dtype)

    def select_bit(i, threshold):
        # The largest t with count(bits >= t) >= k, built from the most significant bit down.
        candidate = threshold | lax.shift_left(one, (width - 1 - i).astype(bits.dtype))
        count = jnp.sum(bits >= candidate, axis=-1, keepdims=True, dtype=jnp.int32)
        return jnp.where(count >= k, candidate, threshold)

    threshold = lax.fori_loop(0, width, select_bit, jnp.zeros(k.shape, bits.dtype))
    above = bits > threshold
    still_needed = k - jnp.sum(above, axis=-1, keepdims=True, dtype=jnp.int32)
    equal = bits == threshold
    return above | (equal & (jnp.cumsum(equal, axis=-1, dtype=jnp.int32) <= still_needed))


def check_batch_dims(batch_dims: Any, ndim: int, op: str) -> int:
    """``batch_dims`` as an int in ``[0, ndim]`` (the leading axes that index separate layers)."""
    if isinstance(batch_dims, (bool, np.bool_)) or not isinstance(batch_dims, (int, np.integer)):
        raise TypeError(
            f"{op}: batch_dims must be a static Python int, got {type(batch_dims).__name__} "
            f"({batch_dims!r:.60})."
        )
    if not 0 <= batch_dims <= ndim:
        raise ValueError(
            f"{op}: batch_dims must be in [0, {ndim}] for an array of rank {ndim}, got "
            f"batch_dims={batch_dims}."
        )
    return int(batch_dims)


def layer_size(shape: Shape, batch_dims: int) -> int:
    """Entries per layer: ``prod(shape[batch_dims:])``."""
    return math.prod(shape[batch_dims:])
