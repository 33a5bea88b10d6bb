"""NNX ``Highway`` and ``GatedResidual``: checks, params table and apply functions are in
:mod:`hadamard_jax._layers.residual`; this module stores the options and holds the variables."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from flax.typing import Dtype, Initializer, PrecisionLike

from hadamard_jax._layers import docstrings, options
from hadamard_jax._layers import functional as F
from hadamard_jax._layers import residual as R
from hadamard_jax.nnx import _common as C
from hadamard_jax.nnx._glu import GLU

__all__ = ["GatedResidual", "Highway"]


@docstrings.fill(args=R.HIGHWAY_ARGS)
class Highway(C.Table):
    r"""A highway layer (Srivastava et al. 2015): ``y = T(x) * H(x) + (1 - T(x)) * x``.

    ``H(x) = activation(x W_H + b_H)`` and the transform gate ``T(x) = sigmoid(x W_T + b_T)``,
    combined by the :func:`hadamard_jax.highway` op. The gate bias starts negative (default
    ``-2``, Srivastava et al. suggest ``-1`` to ``-3``) so the layer starts close to the
    identity (carry) and deep stacks train.

    Args:
      {{args}}
      rngs: ``nnx.Rngs``.

    Parameters: ``kernel``, ``bias`` (``H``) and ``gate_kernel``, ``gate_bias`` (``T``).

    Example::

      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from hadamard_jax.nnx import Highway
      >>> layer = Highway(4, rngs=nnx.Rngs(0))
      >>> float(layer.gate_bias[0]), layer(jnp.ones((2, 4))).shape
      (-2.0, (2, 4))
    """

    features: int

    def __init__(
        self,
        features: int,
        *,
        activation: Callable[[jax.Array], jax.Array] = jax.nn.relu,
        use_bias: bool = True,
        gate_bias_init: Initializer = options.default_gate_bias_init,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        precision: PrecisionLike = None,
        kernel_init: Initializer = options.default_kernel_init,
        bias_init: Initializer = options.default_bias_init,
        rngs: nnx.Rngs,
    ):
        C.store(self, R.HighwayOptions.of(locals()))
        self._build_table(self.options.specs(), rngs, param_dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        """``[..., features] -> [..., features]``."""
        return self.options.apply(x, self._params())


@docstrings.fill(args=R.GATED_RESIDUAL_ARGS)
class GatedResidual(C.Stored):
    r"""The gated residual network of the Temporal Fusion Transformer (Lim et al. 2021).

    .. math::
      \eta_2 = \mathrm{ELU}(W_2 a + W_3 c + b_2), \quad \eta_1 = W_1 \eta_2 + b_1, \quad
      \mathrm{GRN}(a, c) = \mathrm{LayerNorm}(\mathrm{skip}(a) + \mathrm{GLU}(\eta_1))

    with ``GLU(γ) = sigmoid(W_4 γ + b_4) * (W_5 γ + b_5)`` (a :class:`GLU` with
    ``activation="glu"``, two kernels), dropout on ``η_1`` before the GLU, ``skip(a) = a`` when
    ``in_features == out_features`` and a linear projection otherwise, and an optional context
    ``c`` (``context_features``) entering through ``W_3`` (no bias).

    Args:
      in_features: size of ``a``.
      hidden_features: size of ``η_1``, ``η_2``.
      out_features: output size (default ``in_features``).
      {{args}}
      rngs: ``nnx.Rngs`` (stream ``"dropout"`` for dropout).

    Submodules: ``hidden`` (W_2), ``context`` (W_3), ``output`` (W_1), ``glu``, ``skip``,
    ``norm``, ``dropout``.

    Example::

      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from hadamard_jax.nnx import GatedResidual
      >>> grn = GatedResidual(4, 16, 6, context_features=3, rngs=nnx.Rngs(0))
      >>> grn(jnp.ones((2, 4)), context=jnp.ones((2, 3))).shape
      (2, 6)
    """

    in_features: int
    out_features: int
    context_features: int | None

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        out_features: int | None = None,
        *,
        context_features: int | None = None,
        dropout_rate: float = 0.0,
        deterministic: bool | None = False,
        use_bias: bool = True,
        epsilon: float = 1e-6,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        precision: PrecisionLike = None,
        kernel_init: Initializer = options.default_kernel_init,
        bias_init: Initializer = options.default_bias_init,
        rngs: nnx.Rngs,
    ):
        C.store(self, R.GatedResidualOptions.of(locals()))
        d, h, o = in_features, hidden_features, self.out_features
        common: dict[str, Any] = dict(
            dtype=dtype, param_dtype=param_dtype, precision=precision, kernel_init=kernel_init
        )
        dense: dict[str, Any] = dict(use_bias=use_bias, bias_init=bias_init, rngs=rngs, **common)
        self.hidden = nnx.Linear(d, h, **dense)
        self.context = (
            nnx.Linear(context_features, h, use_bias=False, rngs=rngs, **common)
            if context_features is not None
            else nnx.data(None)
        )
        self.output = nnx.Linear(h, h, **dense)
        self.dropout = nnx.Dropout(dropout_rate, deterministic=deterministic, rngs=rngs)
        self.glu = GLU(h, o, activation="glu", fused_kernel=False, **dense)
        self.skip = nnx.Linear(d, o, **dense) if d != o else nnx.data(None)
        self.norm = nnx.LayerNorm(
            o, epsilon=epsilon, dtype=dtype, param_dtype=param_dtype, rngs=rngs
        )

    def __call__(
        self,
        a: jax.Array,
        context: jax.Array | None = None,
        *,
        deterministic: bool | None = None,
        rngs: Any = None,
    ) -> jax.Array:
        """``a: [..., in]``, ``context: [..., context_features]`` -> ``[..., out]``."""
        F.check_features("GatedResidual", a, self.in_features)
        dropout = functools.partial(self.dropout, deterministic=deterministic, rngs=rngs)
        return R.gated_residual(a, context, self, dropout, self.context_features)
