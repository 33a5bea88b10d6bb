"""The public pruning masks: magnitude (per array and global), random, top-k, and the pattern
masks (N:M, blocks, channels, saliency), each a thin call of a :mod:`.patterns` object.

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
:func:`nm_mask`, the pattern object :class:`~hadamard_jax.NM` (which ``sparsify`` and ``prune``
take as ``pattern=``) and ``prune(method="nm")`` (NNX and Linen) share this default, so the same
``n``, ``m`` give the same mask of the same kernel.

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
from jax.typing import ArrayLike

from hadamard_jax._src import checks
from hadamard_jax._src.checks import Shape, count_of, static_fraction, static_int
from hadamard_jax._src.sparsity.patterns import NM, Block, Channel, Unstructured, select
from hadamard_jax._src.sparsity.ranking import (
    check_batch_dims,
    keep_largest,
    layer_size,
    rank_key,
)


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
    return Unstructured().mask(x, sparsity, batch_dims=batch_dims, op="magnitude_mask")


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
    sparse tensor cores want; ``-1`` for a 1-D layer. :class:`hadamard_jax.NM`
    (``sparsify`` and ``prune`` take it as ``pattern=``) and ``prune(method="nm")``
    (:func:`hadamard_jax.nnx.prune`,
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
    if x.ndim == 0:
        raise ValueError(f"{op}: x must have at least one axis, got a scalar.")
    batch_dims = check_batch_dims(batch_dims, x.ndim, op)
    pattern = NM(n, m, _layer_axis_of(axis, x.shape, batch_dims, op))
    return pattern.mask(x, batch_dims=batch_dims, op=op, names=_NM_NAMES)


_NM_NAMES = {"n": "n", "m": "m", "axis": "axis"}


def _layer_axis_of(axis: Any, shape: Shape, batch_dims: int, op: str) -> int | None:
    """An axis of ``x`` (``None`` stays ``None``) as an axis of its layer; not a batch axis."""
    if axis is None:
        return None
    full = checks.check_axis(axis, len(shape), "axis", op)
    if full < batch_dims:
        raise ValueError(
            f"{op}: axis={full} is one of the batch_dims={batch_dims} leading (layer) axes of "
            f"x.shape={shape}; group along a layer axis."
        )
    return full - batch_dims


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
        return _topk_flat(scores, k)
    if scores.ndim == 0:
        raise ValueError(f"{op}: axis={axis} given for a scalar.")
    axis = checks.check_axis(axis, scores.ndim, "axis", op)
    k = static_int(k, "k", op, 0, scores.shape[axis])
    return _topk_along(scores, k, axis)


@functools.partial(jax.jit, static_argnums=(1,))
def _topk_flat(scores: jax.Array, k: int) -> jax.Array:
    key = rank_key(scores, magnitude=False)
    return keep_largest(key.reshape(1, -1), k).reshape(scores.shape)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _topk_along(scores: jax.Array, k: int, axis: int) -> jax.Array:
    key = rank_key(scores, magnitude=False)
    return jnp.moveaxis(keep_largest(jnp.moveaxis(key, axis, -1), k), -1, axis)


def block_mask(
    x: ArrayLike,
    sparsity: float,
    block_shape: Any,
    *,
    pool: str = "mean",
    batch_dims: int = 0,
) -> jax.Array:
    r"""Prunes whole blocks: the ``round(sparsity * n_blocks)`` blocks of smallest pooled ``|x|``.

    A layer of shape ``(d_1, ..., d_k)`` is tiled by blocks ``(b_1, ..., b_k)``, giving
    ``n_blocks = prod(d_i / b_i)`` blocks; each is scored by

    .. math::
      \mathrm{score}(B) = \mathrm{mean}_{i \in B} |x_i| \quad\text{or}\quad
      \max_{i \in B} |x_i|

    and the lowest-scored blocks are pruned whole, so exactly
    ``round(sparsity * n_blocks) * prod(b_i)`` entries per layer are ``False``. Ties: the block
    with the smaller (row-major) block index is kept first.

    Args:
      x: array ``[*stack, d_1, ..., d_k]`` of a real, integer or boolean dtype (complex: by
        modulus).
      sparsity: fraction of blocks to prune, a static number in ``[0, 1]``.
      block_shape: ``(b_1, ..., b_k)``, one static positive int per layer axis, each dividing
        its axis.
      pool: ``"mean"`` or ``"max"`` of ``|x|`` over a block.
      batch_dims: leading ``stack`` axes ranked as separate layers.

    Returns:
      A bool mask of ``x``'s shape, constant on every block.

    Raises:
      ValueError: ``x.shape`` not divisible by ``block_shape`` (the message names both), a
        ``block_shape`` of the wrong length, ``sparsity`` outside ``[0, 1]``, unknown ``pool``.
      TypeError: non-static ``sparsity``, ``block_shape`` or ``batch_dims``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from hadamard_jax import block_mask
      >>> x = jnp.array([[1., 1., 5., 5.], [1., 1., 5., 5.], [9., 0., 2., 2.], [0., 0., 2., 2.]])
      >>> block_mask(x, 0.5, (2, 2)).astype(int)
      Array([[0, 0, 1, 1],
             [0, 0, 1, 1],
             [1, 1, 0, 0],
             [1, 1, 0, 0]], dtype=int32)
      >>> block_mask(x, 0.5, (2, 2), pool="max")[2:, :].astype(int)  # max 9 beats mean 5
      Array([[1, 1, 0, 0],
             [1, 1, 0, 0]], dtype=int32)

    See also:
      :func:`channel_mask`, :func:`magnitude_mask`, :func:`nm_mask`; the pattern object
      :class:`hadamard_jax.Block` (``Block(block_shape, pool).mask(x, sparsity)``).
    """
    names = {"shape": "block_shape", "pool": "pool"}
    pattern = Block(block_shape, pool)
    return pattern.mask(x, sparsity, batch_dims=batch_dims, op="block_mask", names=names)


def channel_mask(
    x: ArrayLike, sparsity: float, *, axis: int = -1, norm: int = 1, batch_dims: int = 0
) -> jax.Array:
    r"""Prunes whole slices along ``axis``: ``round(sparsity * x.shape[axis])`` of smallest norm.

    Slice ``c`` is ``x[..., c, ...]`` (index ``c`` on ``axis``, everything else of the layer);
    its score is :math:`\|x_{:,c,:}\|_p` with ``p = norm``. For a Dense kernel ``(in, out)``,
    ``axis=-1`` prunes output units, ``axis=-2`` input features. Ties: the smaller channel
    index is kept first.

    Args:
      x: array ``[*stack, *layer]``, real, integer or boolean (complex: by modulus).
      sparsity: fraction of channels to prune, a static number in ``[0, 1]``.
      axis: the channel axis, a layer axis (not one of the ``batch_dims`` leading ones).
      norm: ``1`` (sum of ``|x|``) or ``2`` (Euclidean norm).
      batch_dims: leading ``stack`` axes ranked as separate layers.

    Returns:
      A bool mask of ``x``'s shape, constant on every slice: exactly
      ``x.shape[axis] - round(sparsity * x.shape[axis])`` slices kept per layer.

    Raises:
      ValueError: ``sparsity`` outside ``[0, 1]``, ``norm`` not 1 or 2, ``axis`` out of range or
        a batch axis.
      TypeError: non-static ``sparsity``, ``axis`` or ``batch_dims``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from hadamard_jax import channel_mask
      >>> w = jnp.array([[1., -4., 0.], [2., 1., 0.5]])  # column norms 3, 5, 0.5
      >>> channel_mask(w, 1 / 3).astype(int)
      Array([[1, 1, 0],
             [1, 1, 0]], dtype=int32)
      >>> channel_mask(w, 0.5, axis=0).astype(int)  # row norms 5, 3.5
      Array([[1, 1, 1],
             [0, 0, 0]], dtype=int32)

    See also:
      :func:`block_mask`, :func:`magnitude_mask`; the pattern object
      :class:`hadamard_jax.Channel` (whose ``axis`` is an axis of the layer).
    """
    op = "channel_mask"
    x = jnp.asarray(checks.as_array(x, "x", op))
    batch_dims = check_batch_dims(batch_dims, x.ndim, op)
    if x.ndim == batch_dims:
        raise ValueError(
            f"{op}: batch_dims={batch_dims} leaves no layer axis of x.shape={x.shape}."
        )
    pattern = Channel(_layer_axis_of(axis, x.shape, batch_dims, op), norm)  # type: ignore[arg-type]
    names = {"axis": "axis", "norm": "norm"}
    return pattern.mask(x, sparsity, batch_dims=batch_dims, op=op, names=names)


def saliency_mask(
    x: ArrayLike, grad: ArrayLike, sparsity: float, *, batch_dims: int = 0
) -> jax.Array:
    r"""Prunes the ``round(sparsity * n)`` entries of smallest first-order saliency ``|x * grad|``.

    The first-order Taylor estimate of the loss change when :math:`x_i` is set to zero is
    :math:`|\Delta L_i| \approx |x_i \, \partial L / \partial x_i|`; entries with the smallest
    estimate are pruned. Ties (e.g. several zero gradients) are broken by position: the smaller
    flat index is kept first.

    Args:
      x: the parameters ``[*stack, *layer]``, real.
      grad: the loss gradient, the same shape as ``x``.
      sparsity: the fraction to prune, a static number in ``[0, 1]``.
      batch_dims: leading ``stack`` axes ranked as separate layers.

    Returns:
      A bool mask of ``x``'s shape with exactly ``n - round(sparsity * n)`` ``True`` entries per
      layer of ``n`` entries.

    Raises:
      ValueError: ``x`` and ``grad`` of different shapes (the message names both),
        ``sparsity`` outside ``[0, 1]``.
      TypeError: non-static ``sparsity`` or ``batch_dims``; complex inputs.

    Examples:
      >>> import jax.numpy as jnp
      >>> from hadamard_jax import saliency_mask
      >>> x = jnp.array([3., 1., -2., 0.5])
      >>> g = jnp.array([0.1, 2., 1., 0.])  # |x * g| = 0.3, 2, 2, 0
      >>> saliency_mask(x, g, 0.5)
      Array([False,  True,  True, False], dtype=bool)

    See also:
      :func:`magnitude_mask`.
    """
    op = "saliency_mask"
    x, grad = checks.real_arrays((x, grad), ("x", "grad"), op)
    x, grad = jnp.asarray(x), jnp.asarray(grad)
    if x.shape != grad.shape:
        raise ValueError(
            f"{op}: x and grad need equal shapes, got x.shape={x.shape} and "
            f"grad.shape={grad.shape}."
        )
    sparsity = static_fraction(sparsity, "sparsity", op)
    batch_dims = check_batch_dims(batch_dims, x.ndim, op)
    n = layer_size(x.shape, batch_dims)
    return _saliency(x, grad, n - count_of(sparsity, n), batch_dims)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _saliency(x: jax.Array, grad: jax.Array, k: int, batch_dims: int) -> jax.Array:
    dtype = jnp.result_type(x, grad)
    return select(x.astype(dtype) * grad.astype(dtype), Unstructured(), k, batch_dims)
