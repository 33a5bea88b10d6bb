"""What the NNX and Linen adapter layers share: checks, initialisers, scales, forward and merge.

The adapters (:class:`~hadamard_jax.nnx.LoHaLinear`, ``HiRALinear``, ``DoRALinear``,
``IA3Linear``, ``IA3``) wrap a frozen base kernel ``W`` ``[in, out]`` (and bias). Their
parameters, their initialisers and their scales follow HF peft (``tuners/loha``,
``tuners/hira``, ``tuners/lora/dora.py``, ``tuners/ia3``) in JAX's ``[in, out]`` layout:

=========  ==========================================  ==========================================
adapter    output                                      merged kernel
=========  ==========================================  ==========================================
LoHa       ``x W + b + s x ((A1 B1) * (A2 B2))``       ``W + s (A1 B1) * (A2 B2)``
HiRA       ``x W + b + s x (W * (A B))``               ``W * (1 + s A B)``
DoRA       ``x (m * V / ||V||_col) + b``, ``V = W +    ``m * V / ||V||_col``
           s A B``
(IA)^3     ``(x W + b) * l`` or ``(x * l) W + b``      ``W * l`` (output or input axis)
=========  ==========================================  ==========================================

Every function here is pure (arrays in, arrays out), so equal parameters give equal outputs in
both front ends.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hadamard_jax._src import adapters as ops
from hadamard_jax._src import checks

#: The Linen collection of the adapter parameters (NNX: the ``AdapterParam`` variable type).
ADAPTERS = "adapters"

#: torch's ``kaiming_uniform_(w, a=sqrt(5))`` (the ``nn.Linear`` default that peft uses for its
#: adapter matrices) in JAX's layout: uniform on ``+-1/sqrt(fan_in)`` with ``fan_in`` the
#: second-to-last axis (``[in, r]``: ``in``; ``[r, out]``: ``r``), as torch's ``[r, in]`` and
#: ``[out, r]`` give.
kaiming_uniform_sqrt5 = jax.nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")

LOHA_INITS = (True, False, "abba")


# --- checks -------------------------------------------------------------------------------------


def check_common(op: str, in_features: Any, out_features: Any, rank: Any, alpha: Any) -> None:
    """Sizes are positive ints, ``rank >= 1``, ``alpha`` a finite number or ``None``."""
    if in_features is not None:
        checks.static_int(in_features, "in_features", op, lo=1)
    checks.static_int(out_features, "out_features", op, lo=1)
    if rank is not None:
        checks.static_int(rank, "rank", op, lo=1)
    if alpha is not None:
        checks.static_real(alpha, "alpha", op)


def check_init(op: str, name: str, value: Any, choices: tuple) -> None:
    """``value`` is one of ``choices`` (``True``/``False``/strings), as peft's ``init_*``."""
    if not any(value is c if isinstance(c, bool) else value == c for c in choices):
        raise ValueError(f"{op}: {name} must be one of {list(choices)}, got {value!r}.")


def check_features(op: str, x: Any, n_in: int) -> None:
    shape = jnp.shape(x)
    if len(shape) < 1 or shape[-1] != n_in:
        raise ValueError(f"{op}: the last axis of x.shape={shape} must be in_features={n_in}.")


# --- scales ---------------------------------------------------------------------------------------


def loha_scale(alpha: float | None, r1: int, r2: int, abba: bool) -> float:
    """peft's LoHa scale ``alpha / r`` or, for ABBA, ``(alpha / sqrt(r1)) (alpha / sqrt(r2))``.

    ``alpha=None`` means ``alpha = r`` (scale 1 for LoHa).
    """
    alpha = float(r1 if alpha is None else alpha)
    if abba:
        return (alpha / math.sqrt(r1)) * (alpha / math.sqrt(r2))
    return alpha / r1


def lora_scale(alpha: float | None, rank: int, use_rslora: bool = False) -> float:
    """peft's LoRA/DoRA scale ``lora_alpha / r`` (``/ sqrt(r)`` with rsLoRA)."""
    alpha = float(rank if alpha is None else alpha)
    return alpha / math.sqrt(rank) if use_rslora else alpha / rank


# --- initialisers ------------------------------------------------------------------------------


def loha_params(key, kernel: Any, r1: int, r2: int, init_weights: Any, dtype) -> dict:
    """``{a1, b1, a2, b2}`` as peft's LoHa ``init_weights`` makes them.

    ``True``: ``a2 = 0`` (peft's ``hada_w2_b``), the others ``kaiming_uniform_sqrt5``: zero
    update. ``False``: all random. ``"abba"``: from the SVD of ``kernel`` (peft's
    ``reset_adapter_parameters_abba``): singular values ``1..r1`` go to the first pair and
    ``r1+1..r1+r2`` (or again ``1..r2`` if there are too few) to the second, each factor taking
    the fourth root of its singular values. ABBA's initial update is not zero (as in peft).
    """
    n_in, n_out = jnp.shape(kernel)
    if init_weights == "abba":
        u, sv, vh = jnp.linalg.svd(jnp.asarray(kernel, jnp.float32), full_matrices=False)
        total = min(r1 + r2, sv.shape[0])
        k1, k2 = min(r1, total), min(r2, total)
        lo = k1 if k1 + k2 <= sv.shape[0] else 0
        if k1 < r1 or k2 < r2:
            raise ValueError(
                f"init_weights='abba' needs rank <= min(in, out) = {sv.shape[0]}, got ranks "
                f"{r1} and {r2}."
            )

        def pair(start, r):
            root = sv[start : start + r] ** 0.25
            return u[:, start : start + r] * root[None, :], root[:, None] * vh[start : start + r]

        a1, b1 = pair(0, r1)
        a2, b2 = pair(lo, r2)
        return {k: v.astype(dtype) for k, v in dict(a1=a1, b1=b1, a2=a2, b2=b2).items()}
    keys = jax.random.split(key, 4)
    init = kaiming_uniform_sqrt5
    a2 = jnp.zeros((n_in, r2), dtype) if init_weights is True else init(keys[2], (n_in, r2), dtype)
    return {
        "a1": init(keys[0], (n_in, r1), dtype),
        "b1": init(keys[1], (r1, n_out), dtype),
        "a2": a2,
        "b2": init(keys[3], (r2, n_out), dtype),
    }


def low_rank_params(key, n_in: int, n_out: int, rank: int, init: Any, dtype) -> dict:
    """``{a [in, r], b [r, out]}`` as peft's LoRA/HiRA ``init_*_weights`` make them.

    ``True``: ``a`` ``kaiming_uniform_sqrt5``, ``b = 0``; ``"gaussian"``: ``a ~ N(0, 1/r^2)``,
    ``b = 0``; ``False``: both random (``a`` as ``True``, ``b`` ``kaiming_uniform_sqrt5``).
    """
    ka, kb = jax.random.split(key)
    if init == "gaussian":
        a = jax.random.normal(ka, (n_in, rank), dtype) / rank
    else:
        a = kaiming_uniform_sqrt5(ka, (n_in, rank), dtype)
    b = (
        kaiming_uniform_sqrt5(kb, (rank, n_out), dtype)
        if init is False
        else jnp.zeros((rank, n_out), dtype)
    )
    return {"a": a, "b": b}


# --- forward --------------------------------------------------------------------------------------


def _cast(arrays, dtype) -> list[Any]:
    if dtype is None:
        return [None if a is None else jnp.asarray(a) for a in arrays]
    return [None if a is None else jnp.asarray(a).astype(dtype) for a in arrays]


def linear(x, kernel, bias, *, dtype=None, precision=None) -> jax.Array:
    """``x @ kernel + bias`` (rank-strict bias broadcast)."""
    x, kernel, bias = _cast((x, kernel, bias), dtype)
    y = jax.lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())), precision=precision)
    return y if bias is None else y + jnp.broadcast_to(bias, y.shape)


def loha_update(x, p: dict, scale: float, *, dtype=None, precision=None) -> jax.Array:
    """``s x ((A1 B1) * (A2 B2))`` by :func:`hadamard_jax.loha_matmul`."""
    x, a1, b1, a2, b2 = _cast((x, p["a1"], p["b1"], p["a2"], p["b2"]), dtype)
    return ops.loha_matmul(x, a1, b1, a2, b2, scale=scale, precision=precision)


def hira_update(x, kernel, p: dict, scale: float, *, dtype=None, precision=None) -> jax.Array:
    """``s x (W * (A B))`` by :func:`hadamard_jax.hira_matmul`."""
    x, kernel, a, b = _cast((x, kernel, p["a"], p["b"]), dtype)
    return ops.hira_matmul(x, kernel, a, b, scale=scale, precision=precision)


def dora(x, kernel, bias, p: dict, scale: float, detach_norm: bool, *, dtype=None, precision=None):
    """``x (m * V / ||V||_col) + b`` by :func:`hadamard_jax.dora_matmul`."""
    x, kernel, bias, a, b, m = _cast((x, kernel, bias, p["a"], p["b"], p["magnitude"]), dtype)
    y = ops.dora_matmul(
        x, kernel, a, b, m, scale=scale, detach_norm=detach_norm, precision=precision
    )
    return y if bias is None else y + jnp.broadcast_to(bias, y.shape)


# --- merged kernels ----------------------------------------------------------------------------


def loha_merged(kernel, p: dict, scale: float):
    """``W + s (A1 B1) * (A2 B2)``."""
    delta = ops.loha_delta(p["a1"], p["b1"], p["a2"], p["b2"], scale=scale)
    return (jnp.asarray(kernel) + delta).astype(jnp.result_type(kernel))


def hira_merged(kernel, p: dict, scale: float):
    """``W * (1 + s A B)`` (peft's ``W *= 1 + B A``)."""
    kernel = jnp.asarray(kernel)
    return (kernel * (1 + scale * (jnp.asarray(p["a"]) @ jnp.asarray(p["b"])))).astype(kernel.dtype)


def dora_merged(kernel, p: dict, scale: float):
    """``m * V / ||V||_col`` with ``V = W + s A B``."""
    kernel = jnp.asarray(kernel)
    v = kernel + scale * (jnp.asarray(p["a"]) @ jnp.asarray(p["b"]))
    norm = ops.dora_norm(kernel, p["a"], p["b"], scale=scale)
    c = jnp.asarray(p["magnitude"]) / norm
    return (v * jnp.broadcast_to(c, v.shape)).astype(kernel.dtype)


def dora_magnitude(kernel, p: dict, scale: float):
    """DoRA's initial magnitude ``||W + s A B||_col`` (``||W||_col`` when ``B = 0``)."""
    return ops.dora_norm(kernel, p["a"], p["b"], scale=scale)


def ia3_merged(kernel, bias, l: Any, feedforward: bool):
    """``(W * l[:, None], b)`` (feedforward: the input axis) or ``(W * l, b * l)``."""
    kernel, l = jnp.asarray(kernel), jnp.asarray(l)
    if feedforward:
        return kernel * jnp.broadcast_to(l[:, None], kernel.shape), bias
    merged_bias = None if bias is None else jnp.asarray(bias) * l
    return kernel * jnp.broadcast_to(l, kernel.shape), merged_bias


def count(tree) -> int:
    """The number of elements of the arrays in ``tree``."""
    return int(sum(np.prod(jnp.shape(x)) for x in jax.tree.leaves(tree)))
