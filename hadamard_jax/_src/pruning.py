"""Pruning masks: magnitude (per array and global), random, N:M structured and top-k.

Every mask is a boolean array of the input's shape, ``True`` = kept, ``False`` = pruned, and
deterministic given its inputs. Counts are exact (no thresholding, which miscounts with ties):
entries are ranked with a stable two-key sort.

**Ranking and ties.** Entries are ranked by their score (``|x|`` for the magnitude masks, the
value for :func:`topk_mask`), larger first; among equal scores the entry with the *smaller flat
index ranks higher*, i.e. it is kept first (and the later one pruned first). ``-0.0`` equals
``0.0``, and NaN ranks above ``+inf`` (it is kept first: pruning never hides a NaN).

**Static arguments.** ``sparsity``, ``k``, ``n``, ``m`` and ``axis`` fix the shape of the
computation, so they must be static Python numbers (not traced values); under ``jit`` pass them
through ``static_argnums`` or a closure. A bad value is a ``ValueError`` at trace time.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from hadamard_jax._src import checks
from hadamard_jax._src.checks import Shape, count_of, static_fraction, static_int

# --- ranking ------------------------------------------------------------------------------------


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


def keep_largest(key: jax.Array, k: int) -> jax.Array:
    """Bool mask keeping the ``k`` largest entries of ``key`` along its last axis.

    Ties: the smaller index is kept first. Exact count ``k`` in every row.
    """
    length = key.shape[-1]
    if k <= 0:
        return jnp.zeros(key.shape, jnp.bool_)
    if k >= length:
        return jnp.ones(key.shape, jnp.bool_)
    dim = key.ndim - 1
    index = lax.broadcasted_iota(jnp.int32, key.shape, dim)
    # Ascending by (key, reversed index): the last k positions are the k largest keys, the
    # smaller original index winning ties.
    _, _, order = lax.sort((key, length - 1 - index, index), dimension=dim, num_keys=2)
    kept_sorted = (index >= length - k).astype(jnp.uint8)
    # Scatter back to the original positions by sorting on the original index.
    _, kept = lax.sort((order, kept_sorted), dimension=dim, num_keys=1)
    return kept.astype(jnp.bool_)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _keep_largest_flat(x: jax.Array, k: int, magnitude: bool) -> jax.Array:
    key = rank_key(x, magnitude=magnitude)
    return keep_largest(key.reshape(-1), k).reshape(x.shape)


# --- public masks -------------------------------------------------------------------------------


def magnitude_mask(x: ArrayLike, sparsity: float) -> jax.Array:
    r"""Prunes exactly ``round(sparsity * x.size)`` entries of smallest magnitude.

    .. math::
      m_i = [\,\mathrm{rank}(|x_i|) < \mathrm{size} - \mathrm{round}(s \cdot \mathrm{size})\,]

    Ties in ``|x|`` are broken by position: the entry with the smaller flat (row-major) index
    is kept first. NaN counts as larger than ``inf``.

    Args:
      x: array of any shape and real, complex, integer or boolean dtype.
      sparsity: the fraction to prune, a static Python number in ``[0, 1]``.

    Returns:
      A bool mask of ``x``'s shape with exactly ``x.size - round(sparsity * x.size)`` ``True``
      entries (``True`` = kept).

    Raises:
      ValueError: ``sparsity`` outside ``[0, 1]``.
      TypeError: ``sparsity`` is not a static number; ``x`` is not an array.

    Examples:
      >>> import jax.numpy as jnp
      >>> from hadamard_jax import magnitude_mask
      >>> magnitude_mask(jnp.array([0.5, -3., 1., 1., 0.1]), 0.4)
      Array([False,  True,  True,  True, False], dtype=bool)
      >>> magnitude_mask(jnp.array([0.5, -3., 1., 1., 0.1]), 0.6)
      Array([False,  True,  True, False, False], dtype=bool)
    """
    op = "magnitude_mask"
    x = jnp.asarray(checks.as_array(x, "x", op))
    sparsity = static_fraction(sparsity, "sparsity", op)
    return _keep_largest_flat(x, x.size - count_of(sparsity, x.size), True)


def global_magnitude_masks(tree: Any, sparsity: float) -> Any:
    r"""Magnitude pruning across all leaves of a pytree jointly (global pruning).

    Exactly ``round(sparsity * N)`` entries of smallest ``|x|`` are pruned, where ``N`` is the
    total number of entries over all array leaves; some leaves may end up denser than others.
    ``None`` leaves are left as ``None``. Ties are broken by position in the concatenation of
    the flattened leaves in ``jax.tree.leaves`` order: earlier entries are kept first.
    Magnitudes of leaves of different dtypes are compared after promotion to a common dtype
    (``jnp.result_type``).

    Args:
      tree: a pytree of arrays (and ``None``).
      sparsity: the fraction to prune, a static Python number in ``[0, 1]``.

    Returns:
      A pytree of the same structure with a bool mask of each leaf's shape.

    Raises:
      ValueError: ``sparsity`` outside ``[0, 1]``.
      TypeError: ``sparsity`` not a static number; a leaf is not an array.

    Examples:
      >>> import jax.numpy as jnp
      >>> from hadamard_jax import global_magnitude_masks
      >>> params = {"w": jnp.array([3., -1., 2.]), "b": jnp.array([0.5]), "skip": None}
      >>> masks = global_magnitude_masks(params, 0.5)
      >>> masks["w"], masks["b"], masks["skip"]
      (Array([ True, False,  True], dtype=bool), Array([False], dtype=bool), None)
    """
    op = "global_magnitude_masks"
    sparsity = static_fraction(sparsity, "sparsity", op)
    leaves, treedef = jax.tree.flatten(tree)
    leaves = [jnp.asarray(checks.as_array(leaf, f"leaf {i}", op)) for i, leaf in enumerate(leaves)]
    if not leaves:
        return tree
    total = sum(leaf.size for leaf in leaves)
    masks = _global_masks(tuple(leaves), total - count_of(sparsity, total))
    return jax.tree.unflatten(treedef, list(masks))


@functools.partial(jax.jit, static_argnums=(1,))
def _global_masks(leaves: tuple[jax.Array, ...], k: int):
    keys = [rank_key(leaf, magnitude=True) for leaf in leaves]
    shapes = [leaf.shape for leaf in leaves]
    common = jnp.result_type(*keys)
    flat = jnp.concatenate([key.reshape(-1).astype(common) for key in keys])
    kept = keep_largest(flat, k)
    out, start = [], 0
    for shape in shapes:
        size = math.prod(shape)
        out.append(kept[start : start + size].reshape(shape))
        start += size
    return tuple(out)


def random_mask(key: jax.Array, shape: Any, sparsity: float) -> jax.Array:
    r"""A uniformly random mask pruning exactly ``round(sparsity * size)`` entries.

    Every subset of that size is equally likely; the result is a deterministic function of
    ``key`` (a random permutation of the flat indices: its first entries are pruned).

    Args:
      key: a PRNG key (``jax.random.key`` or a legacy ``jax.random.PRNGKey``).
      shape: the mask's shape, a static tuple of ints (or an int).
      sparsity: the fraction to prune, a static Python number in ``[0, 1]``.

    Returns:
      A bool mask of ``shape`` with exactly ``size - round(sparsity * size)`` ``True`` entries.

    Raises:
      ValueError: ``sparsity`` outside ``[0, 1]``; a negative dimension.
      TypeError: ``sparsity`` not a static number; ``shape`` not a tuple of ints.

    Examples:
      >>> import jax
      >>> from hadamard_jax import random_mask
      >>> int(random_mask(jax.random.key(0), (4, 5), 0.25).sum())
      15
    """
    op = "random_mask"
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        shape = (shape,)
    if not isinstance(shape, (tuple, list)):
        raise TypeError(f"{op}: shape must be a tuple of ints, got {type(shape).__name__}.")
    shape = tuple(static_int(d, f"shape[{i}]", op, 0) for i, d in enumerate(shape))
    sparsity = static_fraction(sparsity, "sparsity", op)
    size = math.prod(shape)
    return _random_mask(key, shape, count_of(sparsity, size))


@functools.partial(jax.jit, static_argnums=(1, 2))
def _random_mask(key: jax.Array, shape: Shape, n_prune: int) -> jax.Array:
    size = math.prod(shape)
    if n_prune == 0 or size == 0:
        return jnp.ones(shape, jnp.bool_)
    pruned = jax.random.permutation(key, size)[:n_prune]
    return jnp.ones((size,), jnp.bool_).at[pruned].set(False).reshape(shape)


def nm_mask(x: ArrayLike, n: int, m: int, axis: int = -1) -> jax.Array:
    r"""N:M structured sparsity: in every group of ``m`` consecutive entries along ``axis``,
    keep the ``n`` of largest magnitude (2:4 for sparse tensor cores: ``n=2, m=4``).

    Groups are ``x[..., g*m:(g+1)*m, ...]`` along ``axis``. Ties within a group are broken by
    position: the earlier entry is kept first.

    Args:
      x: array of any real, complex, integer or boolean dtype.
      n: entries kept per group, a static int in ``[0, m]``.
      m: group size, a static int >= 1 that divides ``x.shape[axis]``.
      axis: the grouped axis (static int).

    Returns:
      A bool mask of ``x``'s shape with exactly ``n`` ``True`` entries in every group.

    Raises:
      ValueError: ``n > m`` or negative, ``m < 1``, ``m`` not dividing the axis length, an
        out-of-range ``axis``.
      TypeError: ``n``, ``m`` or ``axis`` not a static int.

    Examples:
      >>> import jax.numpy as jnp
      >>> from hadamard_jax import nm_mask
      >>> nm_mask(jnp.array([0.1, -2., 0.3, 1., 5., 0., 0., 4.]), 2, 4)
      Array([False,  True, False,  True,  True, False, False,  True], dtype=bool)
    """
    op = "nm_mask"
    x = jnp.asarray(checks.as_array(x, "x", op))
    m = static_int(m, "m", op, 1)
    n = static_int(n, "n", op, 0)
    if n > m:
        raise ValueError(f"{op}: n must be <= m, got n={n} and m={m}.")
    if x.ndim == 0:
        raise ValueError(f"{op}: x must have at least one axis, got a scalar.")
    axis = checks.check_axis(axis, x.ndim, "axis", op)
    length = x.shape[axis]
    if length % m:
        raise ValueError(
            f"{op}: m={m} must divide the length of axis {axis}, got x.shape={x.shape} "
            f"(length {length})."
        )
    return _nm_mask(x, n, m, axis)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _nm_mask(x: jax.Array, n: int, m: int, axis: int) -> jax.Array:
    key = rank_key(x, magnitude=True)
    moved = jnp.moveaxis(key, axis, -1)
    grouped = moved.reshape(moved.shape[:-1] + (moved.shape[-1] // m, m))
    kept = keep_largest(grouped, n).reshape(moved.shape)
    return jnp.moveaxis(kept, -1, axis)


def topk_mask(scores: ArrayLike, k: int, *, axis: int | None = None) -> jax.Array:
    r"""Keeps the ``k`` largest scores (by value, not magnitude).

    Ties are broken by position: the smaller (flat, or along ``axis``) index is kept first, as
    in ``jax.lax.top_k`` (which, unlike this function, also orders ``-0.0`` below ``0.0``).
    NaN ranks above ``inf``. For magnitudes pass ``jnp.abs(scores)``.

    Args:
      scores: a real (float, integer or boolean) array.
      k: how many to keep, a static int in ``[0, size]`` (``[0, scores.shape[axis]]`` with
        ``axis``).
      axis: ``None`` ranks all entries together; an int keeps ``k`` per slice along that axis
        (like ``lax.top_k`` on that axis).

    Returns:
      A bool mask of ``scores``' shape with exactly ``k`` ``True`` entries (per slice with
      ``axis``).

    Raises:
      ValueError: ``k`` outside its range; an out-of-range ``axis``.
      TypeError: ``k`` or ``axis`` not a static int; complex scores.

    Examples:
      >>> import jax.numpy as jnp
      >>> from hadamard_jax import topk_mask
      >>> topk_mask(jnp.array([0.5, -3., 1., 1.]), 2)
      Array([False, False,  True,  True], dtype=bool)
      >>> topk_mask(jnp.array([[1, 2], [4, 3]]), 1, axis=1)
      Array([[False,  True],
             [ True, False]], dtype=bool)
    """
    op = "topk_mask"
    scores = jnp.asarray(checks.as_array(scores, "scores", op))
    if jnp.issubdtype(scores.dtype, jnp.complexfloating):
        raise TypeError(f"{op}: scores must be real to be ranked, got dtype {scores.dtype}.")
    if axis is None:
        k = static_int(k, "k", op, 0, scores.size)
        return _keep_largest_flat(scores, k, False)
    if scores.ndim == 0:
        raise ValueError(f"{op}: axis={axis} given for a scalar.")
    axis = checks.check_axis(axis, scores.ndim, "axis", op)
    k = static_int(k, "k", op, 0, scores.shape[axis])
    return _topk_along(scores, k, axis)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _topk_along(scores: jax.Array, k: int, axis: int) -> jax.Array:
    key = rank_key(scores, magnitude=False)
    return jnp.moveaxis(keep_largest(jnp.moveaxis(key, axis, -1), k), -1, axis)
