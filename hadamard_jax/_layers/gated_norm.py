"""``GatedRMSNorm``, RMS normalisation with a multiplicative gate (flash-linear-attention's fused
gated norm, Mamba2's ``RMSNormGated``), for both front ends: the argument check (once, at
construction), the params table (:mod:`.params`), the pure apply function and the argument
descriptions both docstrings share."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
from flax.typing import Dtype

import hadamard_jax as hj
from hadamard_jax._layers import docstrings, options
from hadamard_jax._layers import functional as F
from hadamard_jax._layers import params as P
from hadamard_jax._src import gates

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


def _plain_gate(value: Any, name: str, op: str) -> None:
    gates.plain_spec_of(value, op)


#: ``GatedRMSNorm``'s arguments, each with its check (``num_features``: NNX only).
GATED_RMS_NORM_CHECKS = {
    "num_features": options.optional_size,
    "eps": options.positive,
    "activation": _plain_gate,
    "norm_before_gate": options.flag,
    "dtype": options.dtype,
    "param_dtype": options.param_dtype,
    "scale_init": options.function,
}


@dataclasses.dataclass(frozen=True)
class GatedRMSNormOptions(options.TableOptions):
    """``GatedRMSNorm``'s options, checked once (:data:`GATED_RMS_NORM_CHECKS`);
    ``num_features``: NNX only (Linen infers it)."""

    op: ClassVar[str] = "GatedRMSNorm"
    CHECKS: ClassVar[dict[str, Any]] = GATED_RMS_NORM_CHECKS

    eps: float
    activation: str
    norm_before_gate: bool
    dtype: Any
    param_dtype: Any
    scale_init: Any
    num_features: int | None = None

    def specs(self, num_features: int) -> tuple[P.Spec, ...]:
        """The one variable, ``scale`` ``[num_features]``."""
        return (P.Spec("scale", (num_features,), self.scale_init),)

    def apply(self, x: Any, gate: Any, scale: Any) -> jax.Array:
        """:func:`gated_rms_norm` with these options (``x [..., num_features]`` checked)."""
        F.check_features(self.op, x, self.num_features)
        return gated_rms_norm(x, gate, scale, **self.pick(GATED_RMS_NORM_APPLY))


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
