"""``GatedRMSNorm``, RMS normalisation with a multiplicative gate (flash-linear-attention's fused
gated norm, Mamba2's ``RMSNormGated``), for both front ends: the argument check (once, at
construction), the params table (:mod:`.params`), the pure apply function and the argument
descriptions both docstrings share."""

from __future__ import annotations

from typing import Any

import jax
from flax.typing import Dtype

import hadamard_jax as hj
from hadamard_jax._layers import docstrings, options
from hadamard_jax._layers import functional as F
from hadamard_jax._layers import params as P
from hadamard_jax._src import checks, gates

#: The options ``GatedRMSNorm`` hands to :func:`gated_rms_norm`.
GATED_RMS_NORM_APPLY = ("eps", "activation", "norm_before_gate", "dtype")

#: ``GatedRMSNorm``'s arguments after ``num_features`` (NNX ``Args``, Linen ``Attributes``).
GATED_RMS_NORM_ARGS = f"""\
eps: added to the mean square (static number > 0).
activation: the gate's activation, one of the gate table's plain gates (the value enters as
  is): {docstrings.PLAIN_GATES} (default ``"swiglu"``: SiLU; ``"glu"``: sigmoid).
norm_before_gate: ``rms(x) * scale * act(gate)`` (True, flash-linear-attention) or
  ``rms(x * act(gate)) * scale`` (False, Mamba2's ``RMSNormGated``).
dtype: computation dtype (default: inferred from inputs and params).
param_dtype: dtype of ``scale``.
scale_init: initializer of ``scale`` ``[d]`` (default ones).
"""


def check_gated_rms_norm(
    *,
    eps: Any,
    activation: Any,
    norm_before_gate: Any,
    dtype: Any,
    param_dtype: Any,
    scale_init: Any,
    num_features: Any = None,
) -> None:
    """``GatedRMSNorm``'s arguments (``num_features``: NNX only)."""
    op = "GatedRMSNorm"
    if num_features is not None:
        options.size(num_features, "num_features", op)
    checks.static_real(eps, "eps", op, lambda v: v > 0, "a number > 0")
    gates.plain_spec_of(activation, op)
    options.flag(norm_before_gate, "norm_before_gate", op)
    options.dtypes(dtype, param_dtype, op)
    options.function(scale_init, "scale_init", op)


def gated_rms_norm_params(num_features: int, o: Any) -> tuple[P.Spec, ...]:
    """``GatedRMSNorm``'s one variable, ``scale`` ``[num_features]``."""
    return (P.Spec("scale", (num_features,), o.scale_init),)


def gated_rms_norm(
    x: Any,
    gate: Any,
    scale: Any,
    *,
    eps: float,
    activation: str,
    norm_before_gate: bool,
    dtype: Dtype | None,
) -> jax.Array:
    """The ``GatedRMSNorm`` layer: Flax's dtype promotion, then
    :func:`hadamard_jax.gated_rms_norm` over the last axis."""
    x, gate, scale = F.promote((x, gate, scale), dtype)
    return hj.gated_rms_norm(
        x, gate, scale, eps=eps, activation=activation, norm_before_gate=norm_before_gate
    )
