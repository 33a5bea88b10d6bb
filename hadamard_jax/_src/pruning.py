"""Pruning masks: magnitude (per array and global), random, N:M structured and top-k.

Every mask is a boolean array of the input's shape, ``True`` = kept, ``False`` = pruned, and
deterministic given its inputs. Counts are exact (no thresholding, which miscounts with ties):
entries are ranked with a stable two-key sort.

**Ranking and ties.** Entries are ranked by their score (``|x|`` for the magnitude masks, the
value for :func:`topk_mask`), larger first; among equal scores the entry with the *smaller flat
index ranks higher*, i.e. it is kept first (and the later one pruned first). ``-0.0`` equals
``0.0``, and NaN ranks above ``+inf`` (it is kept first: pruning never hides a NaN).

**Stacked layers.** ``batch_dims`` (default 0) is the number of leading axes that index
separate layers, e.g. a kernel ``[*stack, in, out]`` made by ``nnx.scan``/``nnx.vmap`` has
``batch_dims = ndim - 2``: every layer ``x[i]`` (``i`` over the leading ``batch_dims`` axes) is
ranked on its own and gets exactly the count of a layer, ``round(sparsity * n)`` pruned of its
``n = prod(x.shape[batch_dims:])`` entries (the one rounding rule,
:func:`hadamard_jax._src.checks.count_of`); ties by flat index *within* the layer.

**N:M groups (the library's one convention).** An N:M mask keeps ``n`` of every ``m``
consecutive entries along one axis. Unless told otherwise every entry point groups along the
layer's *input* axis: ``-2`` for a layer of rank >= 2 (the ``in`` of a kernel ``[in, out]``, the
reduction axis of ``x @ W`` that 2:4 sparse tensor cores want), ``-1`` for a rank-1 layer.
:func:`nm_mask`, :class:`hadamard_jax.sparse.NM` (``sparsify``) and ``prune(method="nm")``
(NNX and Linen) share this default, so the same ``n``, ``m`` give the same mask of the same
kernel.

**Static arguments.** ``sparsity``, ``k``, ``n``, ``m``, ``axis`` and ``batch_dims`` fix the
shape of the computation, so they must be static Python numbers (not traced values); under
``jit`` pass them through ``static_argnums`` or a closure. A bad value is a ``ValueError`` at
trace time.
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


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _keep_largest_flat(x: jax.Array, k: int, magnitude: bool, batch_dims: int = 0) -> jax.Array:
    key = rank_key(x, magnitude=magnitude)
    rows = math.prod(x.shape[:batch_dims])
    return keep_largest(key.reshape(rows, -1), k).reshape(x.shape)


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


# --- public masks -------------------------------------------------------------------------------


def magnitude_mask(x: ArrayLike, sparsity: float, *, batch_dims: int = 0) -> jax.Array:
    r"""Prunes exactly ``round(sparsity * x.size)`` entries of smallest magnitude (per layer
    with ``batch_dims``).

    .. math::
      m_i = [\,\mathrm{rank}(|x_i|) < \mathrm{size} - \mathrm{round}(s \cdot \mathrm{size})\,]

    Ties in ``|x|`` are broken by position: the entry with the smaller flat (row-major) index
    is kept first. NaN counts as larger than ``inf``.

    Args:
      x: array of any shape ``[*stack, *layer]`` and real, complex, integer or boolean dtype.
      sparsity: the fraction to prune, a static Python number in ``[0, 1]``.
      batch_dims: the number of leading (``stack``) axes whose slices are ranked separately.

    Returns:
      A bool mask of ``x``'s shape with exactly ``n - round(sparsity * n)`` ``True`` entries
      (``True`` = kept) in every layer, ``n = prod(layer)`` (``x.size`` when ``batch_dims=0``).

    Raises:
      ValueError: ``sparsity`` outside ``[0, 1]``; ``batch_dims`` outside ``[0, x.ndim]``.
      TypeError: ``sparsity`` or ``batch_dims`` is not static; ``x`` is not an array.

    Examples:
      >>> import jax.numpy as jnp
      >>> from hadamard_jax import magnitude_mask
      >>> magnitude_mask(jnp.array([0.5, -3., 1., 1., 0.1]), 0.4)
      Array([False,  True,  True,  True, False], dtype=bool)
      >>> magnitude_mask(jnp.array([0.5, -3., 1., 1., 0.1]), 0.6)
      Array([False,  True,  True, False, False], dtype=bool)
      >>> magnitude_mask(jnp.array([[1., 2.], [4., 3.]]), 0.5, batch_dims=1)  # one per row
      Array([[False,  True],
             [ True, False]], dtype=bool)
    """
    op = "magnitude_mask"
    x = jnp.asarray(checks.as_array(x, "x", op))
    sparsity = static_fraction(sparsity, "sparsity", op)
    batch_dims = check_batch_dims(batch_dims, x.ndim, op)
    n = layer_size(x.shape, batch_dims)
    return _keep_largest_flat(x, n - count_of(sparsity, n), True, batch_dims)


def global_magnitude_masks(tree: Any, sparsity: float, *, batch_dims: int = 0) -> Any:
    r"""Magnitude pruning across all leaves of a pytree jointly (global pruning).

    Exactly ``round(sparsity * N)`` entries of smallest ``|x|`` are pruned, where ``N`` is the
    total number of entries over all array leaves; some leaves may end up denser than others.
    ``None`` leaves are left as ``None``. Ties are broken by position in the concatenation of
    the flattened leaves in ``jax.tree.leaves`` order: earlier entries are kept first.
    Magnitudes of leaves of different dtypes are compared after promotion to a common dtype
    (``jnp.result_type``). With ``batch_dims > 0`` every leaf has the same leading ``stack``
    shape and each stack index ``i`` is pruned globally over the leaves' slices ``leaf[i]``
    (``N`` is then the entries of one slice of every leaf).

    Args:
      tree: a pytree of arrays (and ``None``).
      sparsity: the fraction to prune, a static Python number in ``[0, 1]``.
      batch_dims: leading axes, shared by every leaf, whose slices are pruned separately.

    Returns:
      A pytree of the same structure with a bool mask of each leaf's shape.

    Raises:
      ValueError: ``sparsity`` outside ``[0, 1]``; leaves with different leading ``stack``
        shapes.
      TypeError: ``sparsity`` or ``batch_dims`` not static; a leaf is not an array.

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
    batch_dims = check_batch_dims(batch_dims, min(leaf.ndim for leaf in leaves), op)
    stack = leaves[0].shape[:batch_dims]
    for i, leaf in enumerate(leaves):
        if leaf.shape[:batch_dims] != stack:
            raise ValueError(
                f"{op}: with batch_dims={batch_dims} every leaf needs the same leading shape; "
                f"leaf 0 has shape {leaves[0].shape} and leaf {i} has shape {leaf.shape}."
            )
    total = sum(layer_size(leaf.shape, batch_dims) for leaf in leaves)
    masks = _global_masks(tuple(leaves), total - count_of(sparsity, total), batch_dims)
    return jax.tree.unflatten(treedef, list(masks))


@functools.partial(jax.jit, static_argnums=(1, 2))
def _global_masks(leaves: tuple[jax.Array, ...], k: int, batch_dims: int = 0):
    keys = [rank_key(leaf, magnitude=True) for leaf in leaves]
    shapes = [leaf.shape for leaf in leaves]
    rows = math.prod(shapes[0][:batch_dims])
    common = jnp.result_type(*keys)
    flat = jnp.concatenate([key.reshape(rows, -1).astype(common) for key in keys], axis=1)
    kept = keep_largest(flat, k)
    out, start = [], 0
    for shape in shapes:
        size = layer_size(shape, batch_dims)
        out.append(kept[:, start : start + size].reshape(shape))
        start += size
    return tuple(out)


def random_mask(key: jax.Array, shape: Any, sparsity: float, *, batch_dims: int = 0) -> jax.Array:
    r"""A uniformly random mask pruning exactly ``round(sparsity * size)`` entries.

    Every subset of that size is equally likely; the result is a deterministic function of
    ``key`` (a random permutation of the flat indices: its first entries are pruned). With
    ``batch_dims > 0`` every layer (slice over the leading axes) gets its own permutation,
    from ``jax.random.split(key, n_layers)``, and the count of a layer.

    Args:
      key: a PRNG key (``jax.random.key`` or a legacy ``jax.random.PRNGKey``).
      shape: the mask's shape, a static tuple of ints (or an int).
      sparsity: the fraction to prune, a static Python number in ``[0, 1]``.
      batch_dims: the number of leading axes whose slices are separate layers.

    Returns:
      A bool mask of ``shape`` with exactly ``n - round(sparsity * n)`` ``True`` entries per
      layer, ``n = prod(shape[batch_dims:])``.

    Raises:
      ValueError: ``sparsity`` outside ``[0, 1]``; a negative dimension; ``batch_dims`` out of
        range.
      TypeError: ``sparsity`` or ``batch_dims`` not static; ``shape`` not a tuple of ints.

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
    batch_dims = check_batch_dims(batch_dims, len(shape), op)
    if batch_dims == 0:
        return _random_mask(key, shape, count_of(sparsity, math.prod(shape)))
    n = layer_size(shape, batch_dims)
    return _random_layers(key, shape, count_of(sparsity, n), batch_dims)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _random_layers(key: jax.Array, shape: Shape, n_prune: int, batch_dims: int) -> jax.Array:
    rows = math.prod(shape[:batch_dims])
    keys = jax.random.split(key, rows)
    layers = jax.vmap(lambda k: _random_mask(k, shape[batch_dims:], n_prune))(keys)
    return layers.reshape(shape)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _random_mask(key: jax.Array, shape: Shape, n_prune: int) -> jax.Array:
    size = math.prod(shape)
    if n_prune == 0 or size == 0:
        return jnp.ones(shape, jnp.bool_)
    pruned = jax.random.permutation(key, size)[:n_prune]
    return jnp.ones((size,), jnp.bool_).at[pruned].set(False).reshape(shape)


def input_axis(layer_rank: int) -> int:
    """The default N:M group axis of a layer of rank ``layer_rank``: its input axis.

    ``-2`` for rank >= 2 (the ``in`` of a kernel ``[in, out]``), ``-1`` for rank 1: the one
    N:M convention of the library (see the module docstring, "N:M groups").
    """
    return -2 if layer_rank >= 2 else -1


def nm_mask(
    x: ArrayLike, n: int, m: int, axis: int | None = None, *, batch_dims: int = 0
) -> jax.Array:
    r"""N:M structured sparsity: in every group of ``m`` consecutive entries along ``axis``,
    keep the ``n`` of largest magnitude (2:4 for sparse tensor cores: ``n=2, m=4``).

    Groups are ``x[..., g*m:(g+1)*m, ...]`` along ``axis``. Ties within a group are broken by
    position: the earlier entry is kept first.

    **The N:M convention.** By default (``axis=None``) the groups run along the layer's
    *input* axis: ``-2`` when the layer (``x`` without its ``batch_dims`` leading axes) has rank
    >= 2, so for a kernel ``[in, out]`` (or ``[*stack, in, out]``) each group is ``m``
    consecutive input features of one output unit, the reduction axis of ``x @ W`` that 2:4
    sparse tensor cores want; ``-1`` for a 1-D layer. :class:`hadamard_jax.sparse.NM`
    (``sparsify``) and ``prune(method="nm")`` (:func:`hadamard_jax.nnx.prune`,
    :func:`hadamard_jax.linen.prune`) use the same default, so the same words give the same
    mask. *Changed:* the default used to be ``axis=-1`` for every rank; pass ``axis=-1`` for
    the old grouping of a kernel along its output axis (1-D arrays are unchanged).

    Args:
      x: array of any real, complex, integer or boolean dtype.
      n: entries kept per group, a static int in ``[0, m]``.
      m: group size, a static int >= 1 that divides ``x.shape[axis]``.
      axis: the grouped axis (static int); ``None``: the input axis (above).
      batch_dims: leading axes that index separate layers; groups never span layers anyway,
        so this only checks that ``axis`` is not one of them.

    Returns:
      A bool mask of ``x``'s shape with exactly ``n`` ``True`` entries in every group.

    Raises:
      ValueError: ``n > m`` or negative, ``m < 1``, ``m`` not dividing the axis length, an
        out-of-range ``axis``, ``axis`` among the ``batch_dims`` leading axes.
      TypeError: ``n``, ``m``, ``axis`` or ``batch_dims`` not a static int.

    Examples:
      >>> import jax.numpy as jnp
      >>> from hadamard_jax import nm_mask
      >>> nm_mask(jnp.array([0.1, -2., 0.3, 1., 5., 0., 0., 4.]), 2, 4)
      Array([False,  True, False,  True,  True, False, False,  True], dtype=bool)
      >>> w = jnp.array([[4., 1.], [3., 2.], [1., 5.], [2., 6.]])  # a kernel [in=4, out=2]
      >>> nm_mask(w, 2, 4).astype(int)  # 2 of the 4 inputs of each output unit
      Array([[1, 0],
             [1, 0],
             [0, 1],
             [0, 1]], dtype=int32)
    """
    op = "nm_mask"
    x = jnp.asarray(checks.as_array(x, "x", op))
    m = static_int(m, "m", op, 1)
    n = static_int(n, "n", op, 0)
    if n > m:
        raise ValueError(f"{op}: n must be <= m, got n={n} and m={m}.")
    if x.ndim == 0:
        raise ValueError(f"{op}: x must have at least one axis, got a scalar.")
    batch_dims = check_batch_dims(batch_dims, x.ndim, op)
    if axis is None:
        if x.ndim == batch_dims:
            raise ValueError(
                f"{op}: batch_dims={batch_dims} leaves no layer axis of x.shape={x.shape}."
            )
        axis = input_axis(x.ndim - batch_dims)
    axis = checks.check_axis(axis, x.ndim, "axis", op)
    if axis < batch_dims:
        raise ValueError(
            f"{op}: axis={axis} is one of the batch_dims={batch_dims} leading (layer) axes of "
            f"x.shape={x.shape}; group along a layer axis."
        )
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
