"""Gated skip connections: ``Highway`` (``T * H(x) + (1 - T) * x``) and ``GatedResidual`` (the
Temporal Fusion Transformer's ``LayerNorm(skip(a) + GLU(...))``), for both front ends.

Kept together because both gate what is added to a carried input. Per layer: the options dataclass
(checked once, at construction, NNX and Linen alike), the pure apply function and the argument
descriptions the two docstrings share; ``Highway`` also has its params table (:mod:`.params`).
``GatedResidual`` is built from Flax's own ``Linear``/``Dense``, ``LayerNorm`` and ``Dropout``
and a ``GLU``, whose parameters those modules declare: :func:`gated_residual` is the one
composition both front ends call with their submodules.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import jax
from flax.typing import Dtype, PrecisionLike

import hadamard_jax as hj
from hadamard_jax._layers import functional as F
from hadamard_jax._layers import options
from hadamard_jax._layers import params as P
from hadamard_jax._layers.glu import DENSE_ARGS
from hadamard_jax._src import checks

# --- Highway ------------------------------------------------------------------------------------

#: The options ``Highway`` hands to :func:`highway`.
HIGHWAY_APPLY = ("activation", "dtype", "precision")

#: ``Highway``'s arguments (NNX ``Args`` and Linen ``Attributes``).
HIGHWAY_ARGS = f"""\
features: input and output size.
activation: the transform's activation (default ``jax.nn.relu``).
use_bias: bias ``b_H`` on the transform (the gate always has its bias).
gate_bias_init: initializer of ``b_T`` (default ``constant(-2.0)``: the layer starts close to
  the identity).
{DENSE_ARGS}"""


#: ``Highway``'s arguments, each with its check.
HIGHWAY_CHECKS = {
    "features": options.size,
    "activation": options.function,
    "gate_bias_init": options.function,
    **options.DENSE,
}


@dataclasses.dataclass(frozen=True)
class HighwayOptions(options.DenseOptions):
    """``Highway``'s options, checked once (:data:`HIGHWAY_CHECKS`)."""

    op: ClassVar[str] = "Highway"
    CHECKS: ClassVar[dict[str, Any]] = HIGHWAY_CHECKS

    features: int
    activation: Callable[[jax.Array], jax.Array]
    gate_bias_init: Any

    def specs(self) -> tuple[P.Spec, ...]:
        """``kernel``, ``bias`` (``H``), ``gate_kernel``, ``gate_bias`` (``T``), in NNX creation
        order."""
        f, init = self.features, self.kernel_init
        kernel, bias = P.dense(
            "", f, f, use_bias=self.use_bias, kernel_init=init, bias_init=self.bias_init
        )
        gate = P.dense("gate", f, f, use_bias=True, kernel_init=init, bias_init=self.gate_bias_init)
        return (kernel, bias, *gate)

    def apply(self, x: Any, params: Mapping[str, Any]) -> jax.Array:
        """:func:`highway` with these options (``x [..., features]`` checked)."""
        F.check_features(self.op, x, self.features)
        return highway(x, params, **self.pick(HIGHWAY_APPLY))


def highway(
    x: Any,
    params: Mapping[str, Any],
    *,
    activation: Callable[[jax.Array], jax.Array],
    dtype: Dtype | None,
    precision: PrecisionLike,
) -> jax.Array:
    """The ``Highway`` layer ``T * H + (1 - T) * x`` with ``H = act(x W_H + b_H)`` and the
    transform gate ``T = sigmoid(x W_T + b_T)``."""
    names = ("kernel", "bias", "gate_kernel", "gate_bias")
    x, kh, bh, kt, bt = F.promote((x, *(params.get(k) for k in names)), dtype)
    h = activation(F.dense(x, kh, bh, precision))
    t = jax.nn.sigmoid(F.dense(x, kt, bt, precision))
    return hj.highway(h, t, x)


# --- GatedResidual ------------------------------------------------------------------------------

#: ``GatedResidual``'s arguments after ``out_features`` (NNX ``Args``, Linen ``Attributes``).
GATED_RESIDUAL_ARGS = f"""\
context_features: size of the optional context ``c`` (``None``: no context in NNX; Linen
  creates ``context`` when a context is given and checks its size if this is set).
dropout_rate: dropout on ``η_1``, before the GLU (rng stream ``"dropout"``).
deterministic: disable dropout (``model.eval()`` sets it in NNX; ``None``: decided by the call
  argument, else ``False``).
use_bias: biases on the projections.
epsilon: LayerNorm epsilon.
{DENSE_ARGS}"""


def _epsilon(value: Any, name: str, op: str) -> float:
    return checks.static_real(value, name, op, lambda v: v > 0, "a finite number > 0")


#: ``GatedResidual``'s arguments, each with its check (``in_features``: NNX only).
GATED_RESIDUAL_CHECKS = {
    "in_features": options.optional_size,
    "hidden_features": options.size,
    "out_features": options.optional_size,
    "context_features": options.optional_size,
    "dropout_rate": options.rate,
    "deterministic": options.deterministic,
    "epsilon": _epsilon,
    **options.DENSE,
}


@dataclasses.dataclass(frozen=True)
class GatedResidualOptions(options.DenseOptions):
    """``GatedResidual``'s options, checked once (:data:`GATED_RESIDUAL_CHECKS`);
    ``in_features``: NNX only (Linen infers it), and given, it is the default ``out_features``."""

    op: ClassVar[str] = "GatedResidual"
    CHECKS: ClassVar[dict[str, Any]] = GATED_RESIDUAL_CHECKS

    hidden_features: int
    out_features: int | None
    context_features: int | None
    dropout_rate: float
    deterministic: bool | None
    epsilon: float
    in_features: int | None = None

    def check(self) -> None:
        self.set(out_features=options.first(self.out_features, self.in_features))


def gated_residual(
    a: Any,
    context: Any,
    layers: Any,
    dropout: Callable[[jax.Array], jax.Array],
    context_features: int | None,
) -> jax.Array:
    """``LayerNorm(skip(a) + GLU(W_1 ELU(W_2 a + W_3 c + b_2) + b_1))`` from the submodules
    ``layers.hidden`` (W_2), ``context`` (W_3; ``None``: no context accepted), ``output``
    (W_1), ``glu``, ``skip`` (``None``: the identity) and ``norm``; ``dropout`` acts on
    ``η_1``."""
    eta = layers.hidden(a)
    if context is not None:
        if layers.context is None:
            raise ValueError("GatedResidual: a context was given but context_features is None.")
        F.check_features("GatedResidual (context)", context, context_features)
        eta = eta + layers.context(context)
    eta = dropout(layers.output(jax.nn.elu(eta)))
    skip = a if layers.skip is None else layers.skip(a)
    return layers.norm(skip + layers.glu(eta))
