"""Linen ``Highway`` and ``GatedResidual``: the NNX modules of the same names as Linen
dataclasses (input sizes inferred from the inputs). Checks, params table and apply functions
are in :mod:`hadamard_jax._layers.residual`."""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax.typing import Dtype, Initializer, PrecisionLike

from hadamard_jax._layers import docstrings, options
from hadamard_jax._layers import residual as R
from hadamard_jax.linen import _common as L
from hadamard_jax.linen._glu import GLU

__all__ = ["GatedResidual", "Highway"]


@docstrings.fill(args=R.HIGHWAY_ARGS)
class Highway(L.Checked):
    """A highway layer (Srivastava et al. 2015): ``y = T(x) * H(x) + (1 - T(x)) * x``.

    ``H(x) = activation(x W_H + b_H)`` (params ``kernel``, ``bias``) and the transform gate
    ``T(x) = sigmoid(x W_T + b_T)`` (``gate_kernel``, ``gate_bias``), combined by
    :func:`hadamard_jax.highway`. The Linen counterpart of :class:`hadamard_jax.nnx.Highway`.

    Attributes:
      {{args}}

    Example::

      >>> import jax, jax.numpy as jnp
      >>> from hadamard_jax.linen import Highway
      >>> variables = Highway(4).init(jax.random.key(0), jnp.ones((2, 4)))
      >>> float(variables["params"]["gate_bias"][0])
      -2.0
    """

    features: int
    activation: Callable[[jax.Array], jax.Array] = jax.nn.relu
    use_bias: bool = True
    gate_bias_init: Initializer = options.default_gate_bias_init
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    precision: PrecisionLike = None
    kernel_init: Initializer = options.default_kernel_init
    bias_init: Initializer = options.default_bias_init

    _options = R.HighwayOptions

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """``[..., features] -> [..., features]``."""
        return self.options.apply(x, L.build(self, self.options.specs(), self.param_dtype))


@docstrings.fill(args=R.GATED_RESIDUAL_ARGS)
class GatedResidual(L.Checked):
    r"""The gated residual network of the Temporal Fusion Transformer (Lim et al. 2021).

    ``GRN(a, c) = LayerNorm(skip(a) + GLU(W_1 ELU(W_2 a + W_3 c + b_2) + b_1))`` with dropout
    before the GLU (``activation="glu"``, two kernels) and ``skip(a) = a`` when the output size
    equals the input size (a projection otherwise). The Linen counterpart of
    :class:`hadamard_jax.nnx.GatedResidual`; submodules ``hidden`` (W_2), ``context`` (W_3),
    ``output`` (W_1), ``dropout``, ``glu``, ``skip``, ``norm``.

    Attributes:
      hidden_features: size of the hidden layers.
      out_features: output size (default: the input size).
      {{args}}

    Example::

      >>> import jax, jax.numpy as jnp
      >>> from hadamard_jax.linen import GatedResidual
      >>> grn = GatedResidual(16, 6)
      >>> a, c = jnp.ones((2, 4)), jnp.ones((2, 3))
      >>> variables = grn.init(jax.random.key(0), a, c)
      >>> grn.apply(variables, a, c).shape
      (2, 6)
    """

    hidden_features: int
    out_features: int | None = None
    context_features: int | None = None
    dropout_rate: float = 0.0
    deterministic: bool | None = None
    use_bias: bool = True
    epsilon: float = 1e-6
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    precision: PrecisionLike = None
    kernel_init: Initializer = options.default_kernel_init
    bias_init: Initializer = options.default_bias_init

    _options = R.GatedResidualOptions

    @nn.compact
    def __call__(
        self, a: jax.Array, context: jax.Array | None = None, *, deterministic: bool | None = None
    ) -> jax.Array:
        """``a: [..., in]``, ``context: [..., context_features]`` -> ``[..., out]``."""
        d, h = jnp.shape(a)[-1], self.hidden_features
        o = options.first(self.out_features, d)
        common: dict[str, Any] = options.pick(
            self, ("dtype", "param_dtype", "precision", "kernel_init")
        )
        dense: dict[str, Any] = dict(use_bias=self.use_bias, bias_init=self.bias_init, **common)
        layers = types.SimpleNamespace(
            hidden=nn.Dense(h, name="hidden", **dense),
            context=nn.Dense(h, use_bias=False, name="context", **common),
            output=nn.Dense(h, name="output", **dense),
            glu=GLU(o, activation="glu", fused_kernel=False, name="glu", **dense),
            skip=nn.Dense(o, name="skip", **dense) if d != o else None,
            norm=nn.LayerNorm(
                epsilon=self.epsilon, dtype=self.dtype, param_dtype=self.param_dtype, name="norm"
            ),
        )
        deterministic = options.deterministic_of(deterministic, self.deterministic, "GatedResidual")
        dropout = nn.Dropout(self.dropout_rate, deterministic=deterministic, name="dropout")
        return R.gated_residual(a, context, layers, dropout, self.context_features)
