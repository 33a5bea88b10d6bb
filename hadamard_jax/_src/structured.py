"""Structured and gradient-informed pruning masks: whole blocks, whole channels, saliency.

The same conventions as :mod:`hadamard_jax._src.pruning`: a bool mask of the input's shape
(``True`` = kept), exact counts by the one rounding rule (a sparsity ``s`` of ``n`` units prunes
``round(s * n)``, half to even), ties broken by position (the unit with the smaller flat index
is kept first), NaN scores rank above ``inf``, static ``sparsity``/shape arguments, and leading
``batch_dims`` axes ranked as separate layers.

A *unit* is what is pruned whole: one block of :func:`block_mask`, one slice of
:func:`channel_mask`, one entry of :func:`saliency_mask`. The helpers :func:`unit_scores` and
:func:`expand_units` are shared with :mod:`hadamard_jax.sparse`, whose counts come from a
schedule inside a jitted step (a traced count, see :func:`~hadamard_jax._src.pruning.keep_largest`).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from hadamard_jax._src import checks
from hadamard_jax._src.checks import Shape, count_of, static_fraction
from hadamard_jax._src.pruning import check_batch_dims, keep_largest, layer_size, rank_key

POOLS = ("mean", "max")
NORMS = (1, 2)


def _float_key(x: jax.Array) -> jax.Array:
    """``|x|`` as a float (float32 at least) for pooling; NaN kept."""
    key = rank_key(x, magnitude=True)
    dtype = jnp.promote_types(key.dtype, jnp.float32)
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.float32
    return key.astype(dtype)


def check_block_shape(block_shape: Any, shape: Shape, batch_dims: int, op: str) -> Shape:
    """``block_shape`` as a tuple with one positive int per layer axis dividing that axis."""
    if isinstance(block_shape, int) and not isinstance(block_shape, bool):
        block_shape = (block_shape,)
    if not isinstance(block_shape, (tuple, list)):
        raise TypeError(
            f"{op}: block_shape must be a tuple of ints, got {type(block_shape).__name__}."
        )
    block_shape = tuple(
        checks.static_int(b, f"block_shape[{i}]", op, 1) for i, b in enumerate(block_shape)
    )
    layer = shape[batch_dims:]
    if len(block_shape) != len(layer):
        raise ValueError(
            f"{op}: block_shape={block_shape} needs one entry per layer axis of x.shape={shape} "
            f"(batch_dims={batch_dims}: layer shape {layer})."
        )
    if any(d % b for d, b in zip(layer, block_shape)):
        raise ValueError(
            f"{op}: x.shape={shape} is not divisible by block_shape={block_shape} "
            f"(layer shape {layer}, batch_dims={batch_dims})."
        )
    return block_shape


def check_pattern_args(
    kind: str, shape: Shape, batch_dims: int, op: str, **kw: Any
) -> dict[str, Any]:
    """Validated static arguments of a unit pattern (``"unstructured"``, ``"block"``,
    ``"channel"``) for an array of ``shape``."""
    if kind == "block":
        return {
            "block_shape": check_block_shape(kw["block_shape"], shape, batch_dims, op),
            "pool": checks.check_choice(kw.get("pool", "mean"), "pool", op, POOLS),
        }
    if kind == "channel":
        if len(shape) == batch_dims:
            raise ValueError(f"{op}: x.shape={shape} has no layer axis (batch_dims={batch_dims}).")
        axis = checks.check_axis(kw.get("axis", -1), len(shape), "axis", op)
        if axis < batch_dims:
            raise ValueError(
                f"{op}: axis={kw.get('axis', -1)} is one of the batch_dims={batch_dims} leading "
                f"(layer) axes of x.shape={shape}."
            )
        norm = kw.get("norm", 1)
        if norm not in NORMS or isinstance(norm, bool):
            raise ValueError(f"{op}: norm must be 1 or 2, got norm={norm!r}.")
        return {"axis": axis - batch_dims, "norm": int(norm)}
    return {}


def n_units(kind: str, shape: Shape, batch_dims: int, args: dict[str, Any]) -> int:
    """How many units one layer of an array of ``shape`` has."""
    layer = shape[batch_dims:]
    if kind == "block":
        return math.prod(d // b for d, b in zip(layer, args["block_shape"]))
    if kind == "channel":
        return layer[args["axis"]]
    return math.prod(layer)


def unit_scores(score: jax.Array, kind: str, batch_dims: int, args: dict[str, Any]) -> jax.Array:
    """Pooled float scores of the units, shape ``(n_layers, n_units)``, from ``|score|``.

    ``"unstructured"``: ``|score|`` itself; ``"block"``: the mean or max of ``|score|`` over each
    block; ``"channel"``: the L1 or L2 norm of each slice along the layer axis ``args["axis"]``.
    """
    rows = math.prod(score.shape[:batch_dims])
    layer = score.shape[batch_dims:]
    if kind == "unstructured":
        return rank_key(score, magnitude=True).reshape(rows, -1)
    key = _float_key(score).reshape((rows, *layer))
    if kind == "block":
        split = []
        for d, b in zip(layer, args["block_shape"]):
            split += [d // b, b]
        key = key.reshape((rows, *split))
        inner = tuple(range(2, 2 * len(layer) + 1, 2))
        pooled = key.mean(axis=inner) if args["pool"] == "mean" else key.max(axis=inner)
        return pooled.reshape(rows, -1)
    # channel
    key = jnp.moveaxis(key, 1 + args["axis"], 1).reshape(rows, layer[args["axis"]], -1)
    if args["norm"] == 1:
        return key.sum(axis=-1)
    return jnp.sqrt(jnp.square(key).sum(axis=-1))


def expand_units(
    kept: jax.Array, shape: Shape, kind: str, batch_dims: int, args: dict[str, Any]
) -> jax.Array:
    """The inverse of :func:`unit_scores` for masks: ``(n_layers, n_units)`` -> ``shape``."""
    layer = shape[batch_dims:]
    rows = kept.shape[0]
    if kind == "unstructured":
        return kept.reshape(shape)
    if kind == "block":
        grid = tuple(d // b for d, b in zip(layer, args["block_shape"]))
        full = kept.reshape((rows, *grid))
        for i, b in enumerate(args["block_shape"]):
            full = jnp.repeat(full, b, axis=1 + i)
        return full.reshape(shape)
    axis = args["axis"]
    moved = (layer[axis], *layer[:axis], *layer[axis + 1 :])
    full = jnp.broadcast_to(
        kept.reshape((rows, layer[axis]) + (1,) * (len(layer) - 1)), (rows, *moved)
    )
    return jnp.moveaxis(full, 1, 1 + axis).reshape(shape)


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _unit_mask(score: jax.Array, k: int, kind: str, batch_dims: int, items: tuple) -> jax.Array:
    args = dict(items)
    kept = keep_largest(unit_scores(score, kind, batch_dims, args), k)
    return expand_units(kept, score.shape, kind, batch_dims, args)


def _freeze(args: dict[str, Any]) -> tuple:
    return tuple(sorted(args.items()))


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
      :func:`channel_mask`, :func:`magnitude_mask`, :func:`nm_mask`.
    """
    op = "block_mask"
    x = jnp.asarray(checks.as_array(x, "x", op))
    sparsity = static_fraction(sparsity, "sparsity", op)
    batch_dims = check_batch_dims(batch_dims, x.ndim, op)
    args = check_pattern_args("block", x.shape, batch_dims, op, block_shape=block_shape, pool=pool)
    units = n_units("block", x.shape, batch_dims, args)
    return _unit_mask(x, units - count_of(sparsity, units), "block", batch_dims, _freeze(args))


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
      :func:`block_mask`, :func:`magnitude_mask`.
    """
    op = "channel_mask"
    x = jnp.asarray(checks.as_array(x, "x", op))
    sparsity = static_fraction(sparsity, "sparsity", op)
    batch_dims = check_batch_dims(batch_dims, x.ndim, op)
    args = check_pattern_args("channel", x.shape, batch_dims, op, axis=axis, norm=norm)
    units = n_units("channel", x.shape, batch_dims, args)
    return _unit_mask(x, units - count_of(sparsity, units), "channel", batch_dims, _freeze(args))


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
    score = x.astype(dtype) * grad.astype(dtype)
    return _unit_mask(score, k, "unstructured", batch_dims, ())
