"""Pure functions behind the Flax modules, shared by :mod:`hadamard_jax.nnx` and
:mod:`hadamard_jax.linen` so that both compute exactly the same thing from the same parameters.

Each function takes the parameters as arrays and static options as keywords; the modules only
create parameters, promote dtypes and draw random keys.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax.nnx.nn import dtypes
from jax import lax

import hadamard_jax as hj
from hadamard_jax._src import gates
from hadamard_jax._src import glu as _glu

#: The ``activation=`` values of :class:`GLU` and :class:`GatedMLP`: the gate table's names.
GATES = gates.NAMES

MASK_TYPES = ("fixed", "ste", "hard_concrete")


def check_gate(module: str, activation: str, approximate: bool) -> None:
    """Raises naming ``module``: unknown gate, or a misplaced or non-bool ``approximate``."""
    gates.activation_of(activation, approximate, module)


def check_rate(module: str, name: str, rate: float) -> None:
    """Raises ``ValueError`` unless ``0 <= rate < 1``."""
    if not 0.0 <= float(rate) < 1.0:
        raise ValueError(f"{module}: {name} must be in [0, 1), got {rate!r}.")


def check_features(module: str, x: jax.Array, in_features: int) -> None:
    """Raises ``ValueError`` unless the last axis of ``x`` has ``in_features`` entries."""
    if jnp.ndim(x) < 1 or jnp.shape(x)[-1] != in_features:
        raise ValueError(
            f"{module}: expected inputs with last axis {in_features} (in_features), got "
            f"x.shape={jnp.shape(x)}."
        )


def promote(args: tuple, dtype: Any) -> tuple:
    """Flax's dtype promotion: all non-``None`` args to ``dtype`` (or their common dtype)."""
    return dtypes.promote_dtype(args, dtype=dtype)


def dense(x: jax.Array, kernel: jax.Array, bias: jax.Array | None, precision: Any) -> jax.Array:
    """``x @ kernel + bias`` over the last axis of ``x``: ``[..., d] -> [..., n]``."""
    y = lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())), precision=precision)
    if bias is not None:
        y = y + jnp.broadcast_to(bias, y.shape)
    return y


def pair_gate(activation: str, approximate: bool, gate: jax.Array, value: jax.Array) -> jax.Array:
    """``act(gate) * value`` with the library's gate op for ``activation``."""
    return _glu.gated(activation, gate, value, approximate=approximate)


def packed_gate(activation: str, approximate: bool, y: jax.Array) -> jax.Array:
    """The packed gate on ``y = [value | gate]`` along the last axis (``jax.nn.glu`` layout)."""
    return _glu.gated_packed(activation, y, axis=-1, approximate=approximate)


def glu(
    x: jax.Array,
    params: dict[str, jax.Array | None],
    *,
    activation: str,
    approximate: bool,
    dtype: Any,
    precision: Any,
) -> jax.Array:
    """The :class:`GLU` projection. ``params`` holds either ``kernel`` [d, 2n] (value columns
    first, then gate columns) and ``bias`` [2n], or ``gate_kernel``/``value_kernel`` [d, n] and
    ``gate_bias``/``value_bias`` [n]. Returns ``[..., n]``."""
    if "kernel" in params:
        x, k, b = promote((x, params["kernel"], params.get("bias")), dtype)
        return packed_gate(activation, approximate, dense(x, k, b, precision))
    x, kg, kv, bg, bv = promote(
        (
            x,
            params["gate_kernel"],
            params["value_kernel"],
            params.get("gate_bias"),
            params.get("value_bias"),
        ),
        dtype,
    )
    g, v = dense(x, kg, bg, precision), dense(x, kv, bv, precision)
    return pair_gate(activation, approximate, g, v)


def gated_mlp(
    x: jax.Array,
    params: dict[str, jax.Array | None],
    *,
    activation: str,
    approximate: bool,
    dtype: Any,
    precision: Any,
    keep_mask: jax.Array | None = None,
    keep_prob: float = 1.0,
) -> jax.Array:
    """The :class:`GatedMLP` block through the fused :func:`hadamard_jax.gated_mlp` op.

    ``keep_mask`` (bool, ``[..., hidden]``) and ``keep_prob`` implement inverted dropout on the
    hidden layer: ``h * keep_mask / keep_prob``.
    """
    x, kg, ku, kd, bg, bu, bd = promote(
        (
            x,
            params["gate_kernel"],
            params["up_kernel"],
            params["down_kernel"],
            params.get("gate_bias"),
            params.get("up_bias"),
            params.get("down_bias"),
        ),
        dtype,
    )
    return hj.gated_mlp(
        x,
        kg,
        ku,
        kd,
        activation=activation,
        approximate=approximate,
        b_gate=bg,
        b_up=bu,
        b_down=bd,
        hidden_mask=keep_mask,
        hidden_scale=1.0 / keep_prob,
        precision=precision,
    )


def dropout_keep_mask(key: jax.Array, rate: float, shape: tuple[int, ...]) -> jax.Array:
    """A boolean keep-mask of ``shape``: each entry True with probability ``1 - rate``."""
    return jax.random.bernoulli(key, 1.0 - rate, shape)


def highway(
    x: jax.Array,
    params: dict[str, jax.Array | None],
    *,
    activation: Any,
    dtype: Any,
    precision: Any,
) -> jax.Array:
    """The :class:`Highway` layer ``T * H + (1 - T) * x`` with ``H = act(x W_H + b_H)`` and the
    transform gate ``T = sigmoid(x W_T + b_T)``."""
    x, kh, bh, kt, bt = promote(
        (x, params["kernel"], params.get("bias"), params["gate_kernel"], params["gate_bias"]),
        dtype,
    )
    h = activation(dense(x, kh, bh, precision))
    t = jax.nn.sigmoid(dense(x, kt, bt, precision))
    return hj.highway(h, t, x)


def masked_kernel(kernel: jax.Array, mask: jax.Array) -> jax.Array:
    """``kernel`` with its masked entries exactly zero (select semantics, zero gradient there).

    A boolean/0-1 mask selects (``apply_mask``); a floating mask in ``[0, 1]`` (a hard-concrete
    gate) multiplies.
    """
    if jnp.issubdtype(jnp.asarray(mask).dtype, jnp.floating):
        return hj.hadamard(kernel, mask.astype(kernel.dtype))
    return hj.apply_mask(kernel, mask)


PRUNE_METHODS = ("magnitude", "global_magnitude", "random", "nm")


def check_prune(sparsity: Any, method: str, key: Any, n: Any, m: Any) -> float | None:
    """Validates :func:`prune`'s arguments; returns the sparsity (``1 - n/m`` for N:M)."""
    if method not in PRUNE_METHODS:
        raise ValueError(f"prune: unknown method {method!r}; expected one of {PRUNE_METHODS}.")
    if method == "nm":
        if n is None or m is None:
            raise ValueError("prune: method='nm' needs n= and m= (keep n of every m).")
        implied = 1.0 - n / m
        if sparsity is not None and abs(float(sparsity) - implied) > 1e-12:
            raise ValueError(
                f"prune: sparsity={sparsity!r} contradicts n={n}, m={m} (sparsity {implied})."
            )
        return implied
    if sparsity is None or not 0.0 <= float(sparsity) <= 1.0:
        raise ValueError(f"prune: sparsity must be a number in [0, 1], got {sparsity!r}.")
    if method == "random" and key is None:
        raise ValueError("prune: method='random' needs key= (a jax.random key).")
    return float(sparsity)


def _replicated(x: jax.Array) -> jax.Array:
    """``x`` unsharded if it is sharded over an explicit mesh axis (the mask makers sort)."""
    spec = getattr(jax.typeof(x).sharding, "spec", ())
    if any(p is not None for p in spec):
        return jax.sharding.reshard(x, jax.sharding.PartitionSpec())
    return x


def prune_masks(
    kernels: dict[Any, jax.Array],
    masks: dict[Any, jax.Array],
    sparsity: float,
    *,
    method: str,
    key: Any = None,
    n: int | None = None,
    m: int | None = None,
    axis: int = 0,
) -> dict[Any, jax.Array]:
    """New boolean masks for the kernels ``{name: [in, out]}`` given their current masks.

    Scores are the magnitudes of the *masked* kernels, so weights pruned before rank lowest,
    and every new mask is ANDed with the old one: pruning again never revives a weight.
    """
    effective = {
        k: _replicated(jnp.where(masks[k], kernels[k], jnp.zeros((), kernels[k].dtype)))
        for k in kernels
    }
    if method == "magnitude":
        new = {k: hj.magnitude_mask(w, sparsity) for k, w in effective.items()}
    elif method == "global_magnitude":
        new = hj.global_magnitude_masks(effective, sparsity)
    elif method == "random":
        keys = jax.random.split(key, max(1, len(effective)))
        new = {
            k: hj.random_mask(kk, w.shape, sparsity) for kk, (k, w) in zip(keys, effective.items())
        }
    else:
        new = {k: hj.nm_mask(w, n, m, axis=axis) for k, w in effective.items()}
    return {k: jnp.logical_and(new[k].astype(bool), masks[k].astype(bool)) for k in kernels}
