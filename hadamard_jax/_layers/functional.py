"""The pure layer functions behind the Flax modules, shared by :mod:`hadamard_jax.nnx` and
:mod:`hadamard_jax.linen` so that both compute exactly the same thing from the same parameters.

Each function takes the parameters as arrays (``nnx.Variable``s are unwrapped by the ops) and
static options as keywords; the modules only create parameters, hold state and draw keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax.nnx.nn import dtypes as flax_dtypes
from flax.typing import Dtype, PrecisionLike
from jax import lax

import hadamard_jax as hj
from hadamard_jax._src import checks

Params = Mapping[str, Any]


def check_features(op: str, x: Any, in_features: int | None) -> None:
    """Raises ``ValueError`` unless the last axis of ``x`` has ``in_features`` entries."""
    if in_features is None:
        return
    if jnp.ndim(x) < 1 or jnp.shape(x)[-1] != in_features:
        raise ValueError(
            f"{op}: expected inputs with last axis {in_features} (in_features={in_features}), got "
            f"x.shape={jnp.shape(x)}."
        )


def promote(args: tuple, dtype: Dtype | None) -> tuple:
    """Flax's dtype promotion: all non-``None`` args to ``dtype`` (or their common dtype)."""
    return flax_dtypes.promote_dtype(args, dtype=dtype)


def dense(
    x: jax.Array, kernel: jax.Array, bias: jax.Array | None, precision: PrecisionLike
) -> jax.Array:
    """``x @ kernel + bias`` over the last axis of ``x``: ``[..., d] -> [..., n]``."""
    y = lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())), precision=precision)
    if bias is not None:
        y = y + jnp.broadcast_to(bias, y.shape)
    return y


def masked_kernel(kernel: Any, mask: Any) -> jax.Array:
    """``kernel`` with its masked entries exactly zero.

    A boolean/0-1 integer mask selects (:func:`hadamard_jax.apply_mask`: zero gradient at masked
    entries); a floating mask (an STE mask, a hard-concrete gate) multiplies.
    """
    kernel, mask = jnp.asarray(kernel), jnp.asarray(mask)
    if jnp.issubdtype(mask.dtype, jnp.floating):
        return hj.hadamard(kernel, mask.astype(kernel.dtype))
    return hj.apply_mask(kernel, mask)


def masked_linear(
    x: Any,
    kernel: Any,
    bias: Any,
    mask: Any,
    *,
    dtype: Dtype | None,
    precision: PrecisionLike,
) -> jax.Array:
    """``MaskedLinear``: ``x @ masked_kernel(kernel, mask) + bias``."""
    x, k, b = promote((x, masked_kernel(kernel, mask), bias), dtype)
    return dense(x, k, b, precision)


def unsharded(x: jax.Array) -> jax.Array:
    """``x`` resharded to replicated if it is sharded over an Explicit mesh axis.

    For the computations that rank all entries of an array together (a global sort): under
    Explicit axes a sort must not be sharded along the sorted dimension. Under Auto axes (or
    no mesh) ``x`` is returned as is and the compiler places the gather.
    """
    sharding = jax.typeof(x).sharding
    if any(p is not None for p in getattr(sharding, "spec", ())):
        return jax.sharding.reshard(x, _like(sharding, jax.sharding.PartitionSpec()))
    return x


def _like(sharding: Any, spec: jax.sharding.PartitionSpec) -> jax.sharding.NamedSharding:
    """A ``NamedSharding`` over ``sharding``'s mesh with ``spec`` (no mesh context needed)."""
    return jax.sharding.NamedSharding(sharding.mesh, spec)


def ste_scores_mask(scores: Any, *, sparsity: float | None, threshold: float | None) -> jax.Array:
    """The straight-through mask of ``MaskedLinear(mask_type="ste")``, in ``scores``' dtype.

    ``sparsity``: prune the ``count_of(sparsity, size) = round(sparsity * size)`` lowest scores
    (:func:`hadamard_jax.ste_mask`'s ``sparsity=``: the rounding of ``prune``, 5 weights at
    0.5 keep 3); ``threshold``: keep ``scores > threshold``.
    """
    if threshold is not None:  # element-wise: stays sharded as the scores are
        return hj.ste_mask(scores, threshold=threshold)
    # An exact global top-k ranks all scores together, so it needs every score on every
    # device: under Explicit mesh axes the scores alone (not the kernel) are resharded to
    # replicated, explicitly, and the mask goes back to the scores' sharding, so that the
    # masked kernel stays sharded as the kernel is.
    scores = jnp.asarray(checks.as_array(scores, "scores", "MaskedLinear"))
    gathered = unsharded(scores)
    mask = hj.ste_mask(gathered, sparsity=sparsity)
    if gathered is scores:
        return mask
    sharding = jax.typeof(scores).sharding
    return jax.sharding.reshard(mask, _like(sharding, sharding.spec))


def hard_concrete_gate(
    key: jax.Array | None,
    log_alpha: Any,
    *,
    beta: float,
    gamma: float,
    zeta: float,
    deterministic: bool,
) -> jax.Array:
    """The gate values ``z`` of a ``HardConcreteGate`` (sampled unless ``deterministic``)."""
    return hj.hard_concrete(
        key, log_alpha, beta=beta, gamma=gamma, zeta=zeta, deterministic=deterministic
    )


def gated_input(x: Any, z: jax.Array) -> jax.Array:
    """``x * z`` (``z`` broadcast against ``x``), promoted as ``x * z`` is: integer or bool
    ``x`` times a float32 gate is float32 (a gate of 0.5 on ``[10, 10]`` gives ``[5., 5.]``),
    a bfloat16 ``x`` times a float32 gate float32 (give the gate ``param_dtype=jnp.bfloat16``
    to stay in bfloat16)."""
    return hj.hadamard(x, z, broadcast=True)


def l0_penalty(log_alpha: Any, *, beta: float, gamma: float, zeta: float) -> jax.Array:
    """The expected number of non-zero gates of one ``HardConcreteGate``."""
    return hj.l0_penalty(log_alpha, beta=beta, gamma=gamma, zeta=zeta)
