"""Element-wise masking: applying a mask with select semantics, and building attention masks.

A mask is read as a boolean: an entry is *kept* where the mask is true / non-zero and *masked*
where it is false / zero, whatever the mask's dtype (bool, integer or float).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from hadamard_jax._src import checks, rules
from hadamard_jax._src.checks import Shape

# --- apply_mask --------------------------------------------------------------------------------


def _keep(mask: jax.Array, shape: Shape) -> jax.Array:
    """``mask != 0`` broadcast (explicitly, so rank promotion never triggers) to ``shape``."""
    return jnp.broadcast_to(jnp.asarray(mask) != 0, shape)


def _select(x: jax.Array, mask: jax.Array, fill: jax.Array) -> jax.Array:
    # ``fill`` is a scalar: ``where`` broadcasts it, and the result takes the sharding of ``x`` and
    # the mask (a materialised ``broadcast_to(fill)`` would be unsharded and fail under a mesh
    # with Explicit axes).
    return jnp.where(_keep(mask, x.shape), x, fill)


@jax.custom_jvp
def _apply(x: jax.Array, mask: jax.Array, fill: jax.Array) -> jax.Array:
    return _select(x, mask, fill)


@functools.partial(_apply.defjvp, symbolic_zeros=True)
def _apply_jvp(primals, tangents):
    x, mask, fill = primals
    tx, _, tfill = tangents  # A (float) mask is fixed: its tangent is ignored.
    out = _apply(x, mask, fill)
    shape, dtype = x.shape, x.dtype

    def tangent_fn(prims, ts):
        (mask,) = prims
        tx, tfill = ts
        zero = jnp.zeros((), dtype)  # a scalar, broadcast by ``where`` (keeps the sharding)
        tx = zero if tx is None else tx
        tfill = zero if tfill is None else tfill
        # A select, not a product: masked entries get exactly 0 (or the fill's tangent),
        # never 0 * inf = nan.
        return jnp.where(_keep(mask, shape), tx, tfill)

    # Residual: the mask only.
    return out, rules.checkpointed_tangent(tangent_fn, [mask], [tx, tfill], out)


_apply_jit = jax.jit(_apply)
_select_jit = jax.jit(_select)


def _concrete(value: Any) -> np.ndarray | None:
    """``value`` as a NumPy scalar if it is known at trace time, else ``None`` (a tracer)."""
    try:
        return np.asarray(value)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def _check_fill(fill: Any, dtype: np.dtype, op: str) -> None:
    """Raises ``ValueError``/``TypeError`` unless ``fill`` converts to ``dtype`` exactly.

    A concrete fill is checked by value (an integer ``x`` takes integral fills within its range,
    a boolean ``x`` 0 or 1, a floating ``x`` any real value its range holds, +-inf and NaN
    included); a traced fill must have a dtype that converts to ``dtype`` without loss.
    """
    fill_dtype = jnp.result_type(fill)
    if jnp.issubdtype(fill_dtype, jnp.complexfloating) and not jnp.issubdtype(
        dtype, jnp.complexfloating
    ):
        raise ValueError(f"{op}: a complex fill={fill!r} for x of real dtype {dtype}.")
    value = _concrete(fill)
    if value is None:
        if jnp.result_type(fill, dtype) != dtype:
            raise TypeError(
                f"{op}: a traced fill of dtype {fill_dtype} may not be representable in x's "
                f"dtype {dtype}; cast it to {dtype} first."
            )
        return
    number = complex(value.item()) if value.dtype.kind == "c" else float(value.item())
    if jnp.issubdtype(dtype, jnp.inexact):
        limit = float(jnp.finfo(dtype).max)
        parts = (number.real, number.imag) if isinstance(number, complex) else (number,)
        if any(math.isfinite(p) and abs(p) > limit for p in parts):
            raise ValueError(
                f"{op}: fill={value.item()!r} overflows x's dtype {dtype} (max {limit:g})."
            )
        return
    assert isinstance(number, float)
    lo, hi = (0, 1) if dtype == jnp.bool_ else (jnp.iinfo(dtype).min, jnp.iinfo(dtype).max)
    if not (math.isfinite(number) and number.is_integer() and lo <= number <= hi):
        raise ValueError(
            f"{op}: fill={value.item()!r} cannot be represented in x's dtype {dtype} "
            f"(integers in [{lo}, {hi}])."
        )


def apply_mask(x: ArrayLike, mask: ArrayLike, *, fill: ArrayLike = 0) -> jax.Array:
    r"""Replaces the masked entries of ``x`` by ``fill``, with select (not product) semantics.

    .. math::
      \mathrm{out}_i = \begin{cases} x_i & m_i \neq 0 \\ \mathrm{fill} & m_i = 0 \end{cases}

    Unlike ``x * mask``, masked entries become exactly ``fill`` even where ``x`` is ``inf`` or
    NaN, and the gradient with respect to ``x`` is exactly zero there (never NaN). No gradient
    flows into the mask (it is piecewise constant in the mask; a float mask gets a zero
    gradient). The derivative rule keeps only the mask for the backward pass, and works in
    forward and reverse mode and under every JAX transform.

    Args:
      x: array of shape ``S``, any numeric or boolean dtype.
      mask: bool, integer or float array whose shape broadcasts to ``S`` NumPy-style (it may
        have lower rank or size-1 axes); an entry is kept where ``mask != 0``. A mask that
        would broadcast ``x`` to a larger shape is an error.
      fill: a scalar (Python number or 0-d array) that ``x``'s dtype represents exactly: an
        integer within range for integer ``x``, 0 or 1 for boolean ``x``, a value within range
        (or +-inf, NaN) for floating ``x``; a traced fill must have a dtype that converts to
        ``x``'s without loss. It is differentiable for floating ``x``: its gradient is the sum
        of the cotangent over masked entries.

    Returns:
      An array of shape ``S`` and ``x``'s dtype.

    Raises:
      ValueError: the mask does not broadcast to ``x.shape``; ``fill`` is not a scalar; a
        ``fill`` that ``x``'s dtype cannot represent (non-integral or out of range for integer
        or boolean ``x``, overflowing a floating ``x``, complex for real ``x``).
      TypeError: ``x``, ``mask`` or ``fill`` is not an array or a number; a traced ``fill``
        whose dtype does not convert to ``x``'s without loss.

    Examples:
      >>> import jax.numpy as jnp
      >>> from hadamard_jax import apply_mask
      >>> apply_mask(jnp.array([1., jnp.nan, 3.]), jnp.array([True, False, True]))
      Array([1., 0., 3.], dtype=float32)
      >>> apply_mask(jnp.ones((2, 2)), jnp.array([1, 0]), fill=-jnp.inf)
      Array([[  1., -inf],
             [  1., -inf]], dtype=float32)

    See also:
      :func:`combine_masks` to AND several masks together first.
    """
    op = "apply_mask"
    x = jnp.asarray(checks.as_array(x, "x", op))
    mask = jnp.asarray(checks.as_array(mask, "mask", op))
    fill_in = checks.as_array(fill, "fill", op)
    try:
        ok = tuple(np.broadcast_shapes(mask.shape, x.shape)) == x.shape
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(
            f"{op}: mask.shape={mask.shape} must broadcast to x.shape={x.shape} (the mask may "
            "broadcast against x, not x against the mask)."
        )
    if jnp.ndim(fill_in) != 0:
        raise ValueError(f"{op}: fill must be a scalar, got shape {jnp.shape(fill_in)}.")
    _check_fill(fill_in, x.dtype, op)
    fill_arr = checks.cast(fill_in, x.dtype, weak=x.weak_type)
    if checks.is_differentiable(x.dtype):
        return _apply_jit(x, mask, fill_arr)
    return _select_jit(x, mask, fill_arr)


# --- combining and building masks --------------------------------------------------------------


def combine_masks(*masks: ArrayLike | None, dtype: Any = jnp.float32) -> jax.Array | None:
    """Combines masks by logical AND (their product, for 0/1 masks); ``None`` entries skipped.

    The result equals ``flax.linen.combine_masks(*masks, dtype=dtype)`` for the same inputs,
    including its float32 default dtype and its behaviour for a single mask (returned cast to
    ``dtype``, as is). Masks of equal rank broadcast NumPy-style against each other.

    Args:
      *masks: arrays of equal rank, or ``None``.
      dtype: dtype of the result (float32 by default, as in Flax).

    Returns:
      The combined mask (of the broadcast shape), or ``None`` if every mask is ``None`` or
      none is given.

    Raises:
      ValueError: the masks have different ranks, or shapes that do not broadcast (the message
        lists the shapes).
      TypeError: a mask is not an array, a number or ``None``; ``dtype`` is not a dtype.

    Examples:
      >>> import jax.numpy as jnp
      >>> from hadamard_jax import combine_masks
      >>> combine_masks(jnp.array([1, 1, 0]), None, jnp.array([True, False, True]))
      Array([1., 0., 0.], dtype=float32)
      >>> combine_masks(None, None) is None
      True
    """
    op = "combine_masks"
    dtype = checks.check_dtype_arg(dtype, "dtype", op)
    present = [
        (f"masks[{i}]", jnp.asarray(checks.as_array(m, f"masks[{i}]", op)))
        for i, m in enumerate(masks)
        if m is not None
    ]
    if not present:
        return None
    listed = ", ".join(f"{name}.shape={m.shape}" for name, m in present)
    if len({m.ndim for _, m in present}) > 1:
        raise ValueError(f"{op}: masks must have the same rank, got {listed}.")
    try:
        np.broadcast_shapes(*(m.shape for _, m in present))
    except ValueError:
        raise ValueError(f"{op}: mask shapes do not broadcast together: {listed}.") from None
    return _combine(tuple(m for _, m in present), dtype)


@functools.partial(jax.jit, static_argnums=(1,))
def _combine(masks: tuple[jax.Array, ...], dtype: np.dtype) -> jax.Array:
    mask, *others = masks
    for other in others:
        mask = jnp.logical_and(mask, other)
    return mask.astype(dtype)


def _static_length(value: Any, name: str, op: str) -> int:
    return checks.static_int(value, name, op, lo=0)


def _static_batch_dims(value: Any, op: str) -> int:
    return _static_length(value, "extra_batch_dims", op)


def causal_mask(length: int, *, extra_batch_dims: int = 0, dtype: Any = jnp.float32) -> jax.Array:
    r"""A causal (lower-triangular) self-attention mask: query ``i`` sees keys ``j <= i``.

    Equals ``flax.linen.make_causal_mask(jnp.ones(length), extra_batch_dims=..., dtype=...)``:
    shape ``[1] * extra_batch_dims + [1, length, length]``, the leading 1 being the heads axis.
    With ``extra_batch_dims=1`` it combines (:func:`combine_masks`) with a ``[batch, 1, q, k]``
    mask from :func:`attention_mask`.

    Args:
      length: the sequence length, a static Python int >= 0.
      extra_batch_dims: number of leading singleton batch axes to add (static int >= 0).
      dtype: dtype of the result (float32 by default, as in Flax).

    Returns:
      The mask, of shape ``(1,) * extra_batch_dims + (1, length, length)``.

    Raises:
      TypeError: ``length``/``extra_batch_dims`` not a static int; ``dtype`` not a dtype.
      ValueError: a negative ``length`` or ``extra_batch_dims``.

    Examples:
      >>> from hadamard_jax import causal_mask
      >>> causal_mask(3, dtype=bool)[0].astype(int)
      Array([[1, 0, 0],
             [1, 1, 0],
             [1, 1, 1]], dtype=int32)
    """
    op = "causal_mask"
    length = _static_length(length, "length", op)
    extra = _static_batch_dims(extra_batch_dims, op)
    dtype = checks.check_dtype_arg(dtype, "dtype", op)
    return _causal(length, extra, dtype)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _causal(length: int, extra: int, dtype: np.dtype) -> jax.Array:
    idx = jnp.arange(length, dtype=jnp.int32)
    mask = idx[:, None] >= idx[None, :]
    return mask.reshape((1,) * (extra + 1) + mask.shape).astype(dtype)


def padding_mask(lengths: ArrayLike, max_length: int, *, dtype: Any = jnp.float32) -> jax.Array:
    r"""A padding mask from sequence lengths: position ``t`` of sequence ``b`` is kept iff
    ``t < lengths[b]``.

    Lengths are traced values (they may change between calls without recompiling); a length
    above ``max_length`` keeps every position and a negative length keeps none.

    Args:
      lengths: integer array of shape ``[...]`` (any batch shape, or a scalar).
      max_length: the padded length, a static Python int >= 0.
      dtype: dtype of the result (float32 by default, like Flax's mask makers).

    Returns:
      The mask, of shape ``[..., max_length]``. Feed it to :func:`attention_mask` as the
      query and key masks, or to :func:`apply_mask` (``mask[..., None]`` for ``[..., L, d]``).

    Raises:
      TypeError: ``lengths`` is not an integer array; ``max_length`` not a static int.
      ValueError: a negative ``max_length``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from hadamard_jax import padding_mask
      >>> padding_mask(jnp.array([1, 3]), 4)
      Array([[1., 0., 0., 0.],
             [1., 1., 1., 0.]], dtype=float32)
    """
    op = "padding_mask"
    lengths = jnp.asarray(checks.as_array(lengths, "lengths", op))
    if not jnp.issubdtype(lengths.dtype, jnp.integer):
        raise TypeError(f"{op}: lengths must be an integer array, got dtype {lengths.dtype}.")
    max_length = _static_length(max_length, "max_length", op)
    dtype = checks.check_dtype_arg(dtype, "dtype", op)
    return _padding(lengths, max_length, dtype)


def _position_dtype(lengths_dtype: np.dtype, max_length: int) -> np.dtype:
    """An integer dtype that holds ``max_length`` and every value of ``lengths_dtype``."""
    given = jnp.iinfo(lengths_dtype)
    for candidate in (lengths_dtype, jnp.dtype(jnp.int32), jnp.dtype(jnp.int64)):
        info = jnp.iinfo(candidate)
        if info.min <= given.min and info.max >= max(given.max, max_length):
            return jnp.dtype(candidate)
    raise ValueError(
        f"padding_mask: max_length={max_length} needs 64-bit integers (jax_enable_x64)."
    )


@functools.partial(jax.jit, static_argnums=(1, 2))
def _padding(lengths: jax.Array, max_length: int, dtype: np.dtype) -> jax.Array:
    # Count positions in a dtype that holds max_length (an int8 length would wrap at 127) and
    # every length (a uint32 length above 2**31 must not turn negative).
    shape = lengths.shape + (max_length,)
    pos_dtype = _position_dtype(lengths.dtype, max_length)
    positions = jax.lax.broadcasted_iota(pos_dtype, shape, len(shape) - 1)
    limits = jnp.broadcast_to(lengths[..., None].astype(pos_dtype), shape)
    return (positions < limits).astype(dtype)


def attention_mask(
    query_mask: ArrayLike,
    key_mask: ArrayLike,
    *,
    extra_batch_dims: int = 0,
    dtype: Any = jnp.float32,
) -> jax.Array:
    r"""A pairwise attention mask: query ``i`` may attend to key ``j`` iff both are kept.

    .. math::
      \mathrm{out}_{\dots, 0, i, j} = [q_{\dots, i} \neq 0] \wedge [k_{\dots, j} \neq 0]

    For 0/1 (or boolean) inputs this equals
    ``flax.linen.make_attention_mask(query_mask, key_mask, extra_batch_dims=..., dtype=...)``
    (whose default pairwise function multiplies; here the inputs are read as booleans, so
    non-0/1 values still give a 0/1 mask).

    Args:
      query_mask: array of shape ``[..., q]`` (e.g. from :func:`padding_mask`).
      key_mask: array of shape ``[..., k]``; its batch axes ``...`` must broadcast against
        the query's NumPy-style.
      extra_batch_dims: number of leading singleton batch axes to add (static int >= 0).
      dtype: dtype of the result (float32 by default, as in Flax).

    Returns:
      The mask, of shape ``(1,) * extra_batch_dims + [..., 1, q, k]`` (the 1 is the heads
      axis).

    Raises:
      ValueError: a 0-d input, or batch axes that do not broadcast.
      TypeError: an input is not an array; ``dtype`` is not a dtype.

    Examples:
      >>> import jax.numpy as jnp
      >>> from hadamard_jax import attention_mask
      >>> attention_mask(jnp.array([1, 1, 0]), jnp.array([1, 0]), dtype=jnp.int32)
      Array([[[1, 0],
              [1, 0],
              [0, 0]]], dtype=int32)
    """
    op = "attention_mask"
    q = jnp.asarray(checks.as_array(query_mask, "query_mask", op))
    k = jnp.asarray(checks.as_array(key_mask, "key_mask", op))
    extra = _static_batch_dims(extra_batch_dims, op)
    dtype = checks.check_dtype_arg(dtype, "dtype", op)
    if q.ndim == 0 or k.ndim == 0:
        raise ValueError(
            f"{op}: query_mask and key_mask need a length axis, got query_mask.shape={q.shape} "
            f"and key_mask.shape={k.shape}."
        )
    try:
        batch = tuple(np.broadcast_shapes(q.shape[:-1], k.shape[:-1]))
    except ValueError:
        raise ValueError(
            f"{op}: the batch axes of query_mask.shape={q.shape} and key_mask.shape={k.shape} "
            "do not broadcast."
        ) from None
    return _attention(q, k, batch + (q.shape[-1], k.shape[-1]), extra, dtype)


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _attention(q: jax.Array, k: jax.Array, shape: Shape, extra: int, dtype: np.dtype):
    qb = jnp.broadcast_to((q != 0)[..., :, None], shape)
    kb = jnp.broadcast_to((k != 0)[..., None, :], shape)
    mask = jnp.logical_and(qb, kb)[..., None, :, :]
    return mask.reshape((1,) * extra + mask.shape).astype(dtype)
