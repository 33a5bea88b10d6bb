"""Bit-packing of boolean masks: 1 bit per entry, for storing large pruning masks."""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from hadamard_jax._src import checks
from hadamard_jax._src.checks import Shape


@jax.jit
def pack_bits(mask: jax.Array) -> jax.Array:
    return jnp.packbits(mask.reshape(-1) != 0)


@functools.partial(jax.jit, static_argnums=(1,))
def unpack_bits(packed: jax.Array, shape: Shape) -> jax.Array:
    size = math.prod(shape)
    return jnp.unpackbits(packed, count=size).reshape(shape).astype(jnp.bool_)


def pack_mask(mask: ArrayLike) -> jax.Array:
    r"""Packs a mask into bits: 8 entries per byte, an 8x (bool) to 32x (float32) saving.

    The mask is flattened in row-major order and read as a boolean (``mask != 0``); bits are
    packed big-endian within each byte, exactly as ``np.packbits(mask.ravel() != 0)``. The
    shape is not stored: keep it to :func:`unpack_mask`.

    Args:
      mask: bool, integer or float array of any shape ``S``.

    Returns:
      A ``uint8`` array of shape ``(ceil(prod(S) / 8),)``.

    Raises:
      TypeError: ``mask`` is not an array.

    Examples:
      >>> import jax.numpy as jnp
      >>> from hadamard_jax import pack_mask, unpack_mask
      >>> m = jnp.array([[True, False, True], [True, True, False]])
      >>> packed = pack_mask(m)
      >>> packed
      Array([184], dtype=uint8)
      >>> bool((unpack_mask(packed, m.shape) == m).all())
      True
    """
    mask = jnp.asarray(checks.as_array(mask, "mask", "pack_mask"))
    return pack_bits(mask)


def unpack_mask(packed: ArrayLike, shape: Any) -> jax.Array:
    r"""Unpacks a mask packed by :func:`pack_mask` (exact round trip).

    Args:
      packed: ``uint8`` array of shape ``(ceil(prod(shape) / 8),)``.
      shape: the mask's shape, a static tuple of ints (or an int).

    Returns:
      A bool array of ``shape``; padding bits of the last byte are ignored.

    Raises:
      TypeError: ``packed`` is not ``uint8``; ``shape`` is not a tuple of static ints.
      ValueError: ``packed`` has the wrong shape for ``shape``; a negative dimension.

    Examples:
      >>> import jax.numpy as jnp
      >>> from hadamard_jax import unpack_mask
      >>> unpack_mask(jnp.array([0b10100000], jnp.uint8), (3,))
      Array([ True, False,  True], dtype=bool)
    """
    op = "unpack_mask"
    packed = jnp.asarray(checks.as_array(packed, "packed", op))
    if packed.dtype != jnp.uint8:
        raise TypeError(f"{op}: packed must be uint8 (from pack_mask), got dtype {packed.dtype}.")
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        shape = (shape,)
    if not isinstance(shape, (tuple, list)) or any(
        isinstance(d, bool) or not isinstance(d, (int, np.integer)) for d in shape
    ):
        raise TypeError(f"{op}: shape must be a tuple of static ints, got {shape!r:.60}.")
    shape = tuple(int(d) for d in shape)
    if any(d < 0 for d in shape):
        raise ValueError(f"{op}: shape={shape} has a negative dimension.")
    nbytes = -(-math.prod(shape) // 8)
    if packed.shape != (nbytes,):
        raise ValueError(
            f"{op}: a mask of shape {shape} packs into shape ({nbytes},), got "
            f"packed.shape={packed.shape}."
        )
    return unpack_bits(packed, shape)
