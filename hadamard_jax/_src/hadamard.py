"""The Hadamard (element-wise) product of two or more arrays, with its own derivative rule."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from hadamard_jax._src import checks, rules
from hadamard_jax._src.checks import Shape, broadcast_cast

#: ``(dtype, weak)``: the result dtype and whether the result is weakly typed.
ResultType = tuple[np.dtype, bool]


def _chain(xs: Sequence[Any], shape: Shape, result: ResultType, compute_dtype: np.dtype):
    """``x0 * x1 * ... * x{n-1}`` in ``compute_dtype``, cast to the result type."""
    out = broadcast_cast(xs[0], shape, compute_dtype)
    for x in xs[1:]:
        out = out * broadcast_cast(x, shape, compute_dtype)
    return checks.cast(out, *result)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1, 2))
def _product(shape: Shape, result: ResultType, compute_dtype: np.dtype, *xs: Any) -> jax.Array:
    return _chain(xs, shape, result, compute_dtype)


@functools.partial(_product.defjvp, symbolic_zeros=True)
def _product_jvp(shape, result, compute_dtype, primals, tangents):
    out = _product(shape, result, compute_dtype, *primals)

    def tangent_fn(xs, ts):
        # Forward accumulation along the chain, O(n) multiplies and no division:
        #   p_k = p_{k-1} x_k,   dp_k = dp_{k-1} x_k + p_{k-1} t_k.
        # Reverse mode transposes this into the prefix/suffix-product form, recomputing
        # the partial products from the inputs (the only residuals kept).
        p = dp = None
        for x, t in zip(xs, ts):
            x = broadcast_cast(x, shape, compute_dtype)
            t = None if t is None else broadcast_cast(t, shape, compute_dtype)
            if p is None:
                p, dp = x, t
                continue
            dp = rules.sum_terms([None if dp is None else dp * x, None if t is None else p * t])
            p = p * x
        return checks.cast(rules.tangent_sum([dp]), *result)

    return out, rules.checkpointed_tangent(tangent_fn, primals, tangents, out)


_product_jit = jax.jit(_product, static_argnums=(0, 1, 2))


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _product_nondiff(
    shape: Shape, result: ResultType, compute_dtype: np.dtype, *xs: Any
) -> jax.Array:
    return _chain(xs, shape, result, compute_dtype)


def _hadamard_impl(
    op: str, arrays: Sequence[Any], names: Sequence[str], broadcast: bool, compute_dtype: Any
) -> jax.Array:
    broadcast = checks.check_bool(broadcast, "broadcast", op)
    arrays = [checks.as_array(x, name, op) for x, name in zip(arrays, names)]
    shape = checks.result_shape([jnp.shape(x) for x in arrays], names, op, broadcast)
    dtype, weak = checks.result_type(arrays)
    compute = checks.check_dtype_arg(compute_dtype, "compute_dtype", op)
    if compute is None:
        compute = dtype
    elif not checks.is_differentiable(dtype) or not checks.is_differentiable(compute):
        raise ValueError(
            f"{op}: compute_dtype={compute} is for floating or complex products; the "
            f"inputs give {dtype} and compute_dtype must be floating or complex too."
        )
    elif jnp.issubdtype(dtype, jnp.complexfloating) != jnp.issubdtype(compute, jnp.complexfloating):
        raise ValueError(
            f"{op}: compute_dtype={compute} cannot hold a product of dtype {dtype} (one is "
            "complex and the other is not)."
        )
    if checks.is_differentiable(dtype):
        return _product_jit(shape, (dtype, weak), compute, *arrays)
    return _product_nondiff(shape, (dtype, weak), compute, *arrays)


def _hadamard_two(a: Any, b: Any, broadcast: Any) -> jax.Array:
    """:func:`hadamard`'s checks and product."""
    return _hadamard_impl("hadamard", (a, b), ("a", "b"), broadcast, None)


_hadamard_checked = checks.checked_once(_hadamard_two)


def _hadamard_n_impl(*args: Any) -> jax.Array:
    """``hadamard_n``'s checks and product: ``args = (*arrays, broadcast, compute_dtype)``."""
    arrays = args[:-2]
    names = [f"arrays[{i}]" for i in range(len(arrays))]
    return _hadamard_impl("hadamard_n", arrays, names, args[-2], args[-1])


_hadamard_n_checked = checks.checked_once(_hadamard_n_impl)


def hadamard(a: ArrayLike, b: ArrayLike, *, broadcast: bool = False) -> jax.Array:
    r"""The Hadamard (element-wise) product of two arrays of equal shape.

    .. math::
      (a \circ b)_{i} = a_{i} \, b_{i}

    Results, dtypes and gradients match ``jnp.multiply``: JAX's dtype promotion (weak types
    of Python scalars kept), ``__jax_array__`` objects such as ``nnx.Param``, complex
    inputs with JAX's convention (the VJP is a transpose, not an adjoint), ``float0``
    cotangents for integer and boolean inputs. The derivative rule is hand-written: it keeps
    only ``a`` and ``b`` for the backward pass and works under every JAX transform (``jit``,
    ``vmap``, ``grad``, ``jvp``, ``jacfwd``, ``jacrev``, ``hessian``, ``jax.checkpoint``,
    ``lax.scan``, sharded ``jit``).

    Args:
      a: array of shape ``S``.
      b: array of shape ``S``. With ``broadcast=True``, ``a`` and ``b`` may have any shapes
        that broadcast NumPy-style; gradients then come back in each input's own shape.
      broadcast: allow NumPy broadcasting. Off by default: the Hadamard product is defined for
        equal shapes, and a silent broadcast is a common bug.

    Returns:
      The product, of shape ``S`` (or the broadcast shape) and dtype
      ``jnp.result_type(a, b)``.

    Raises:
      ValueError: the shapes differ and ``broadcast`` is False, or they do not broadcast.
      TypeError: an argument is not an array or a number (``None``, a string, a
        ``fractions.Fraction``, a typed PRNG key such as ``jax.random.key(0)``, an object).

    Eager calls cost what ``jnp.multiply`` costs: the argument checks run when the op is traced,
    once per shapes, dtypes and options, not on every call.

    Examples:
      >>> import jax.numpy as jnp
      >>> from hadamard_jax import hadamard
      >>> hadamard(jnp.array([1., 2., 3.]), jnp.array([4., 5., 6.]))
      Array([ 4., 10., 18.], dtype=float32)
      >>> hadamard(jnp.ones((2, 3)), jnp.array([1., 2., 3.]), broadcast=True)
      Array([[1., 2., 3.],
             [1., 2., 3.]], dtype=float32)

    See also:
      :func:`hadamard_n` for the product of any number of arrays.
    """
    return _hadamard_checked((a, b), (broadcast,))


def hadamard_n(*arrays: ArrayLike, broadcast: bool = False, compute_dtype: Any = None) -> jax.Array:
    r"""The Hadamard product of one or more arrays of equal shape.

    .. math::
      \Big(\prod_{k} x^{(k)}\Big)_{i} = x^{(0)}_{i} \, x^{(1)}_{i} \cdots x^{(n-1)}_{i}

    The derivative rule divides by nothing, so inputs with exact zeros get exact gradients;
    it costs O(n) multiplies, and it keeps only the ``n`` inputs for the backward pass (a plain
    chain ``a * b * c * ...`` also keeps its ``n - 2`` partial products).

    Args:
      *arrays: one or more arrays, all of shape ``S`` (or broadcastable, with
        ``broadcast=True``).
      broadcast: allow NumPy broadcasting between the arrays.
      compute_dtype: form the product in this dtype and cast the result back, e.g.
        ``jnp.float32`` for bfloat16/float16 inputs, whose long products of large values
        overflow. Must be floating (complex for complex inputs). ``None`` computes in the
        result dtype.

    Returns:
      The product, of shape ``S`` and dtype ``jnp.result_type(*arrays)``.

    Raises:
      ValueError: no arrays; shapes differ without ``broadcast``; a ``compute_dtype`` that
        cannot hold the product.
      TypeError: an argument is not an array or a number.

    Examples:
      >>> import jax.numpy as jnp
      >>> from hadamard_jax import hadamard_n
      >>> hadamard_n(jnp.array([1., 2.]), jnp.array([3., 4.]), jnp.array([5., 6.]))
      Array([15., 48.], dtype=float32)
    """
    if not arrays:
        raise ValueError("hadamard_n: needs at least one array, got none.")
    return _hadamard_n_checked(arrays, (broadcast, compute_dtype))
