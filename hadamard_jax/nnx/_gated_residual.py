"""``GatedResidual``: the gated residual network (GRN) of the Temporal Fusion Transformer."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from flax.typing import Dtype, Initializer, PrecisionLike

from hadamard_jax._layers import functional as F
from hadamard_jax._layers import options
from hadamard_jax.nnx._glu import GLU


class GatedResidual(nnx.Module):
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
      context_features: size of the optional context ``c`` (``None``: no context).
      dropout_rate: dropout on ``η_1``.
      deterministic: disable dropout (``model.eval()`` sets it).
      use_bias: biases on the projections.
      epsilon: LayerNorm epsilon.
      dtype, param_dtype, precision, kernel_init, bias_init: as ``nnx.Linear``.
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
        options.check_gated_residual(
            in_features=in_features,
            hidden_features=hidden_features,
            out_features=out_features,
            context_features=context_features,
            dropout_rate=dropout_rate,
            deterministic=deterministic,
            use_bias=use_bias,
            epsilon=epsilon,
            dtype=dtype,
            param_dtype=param_dtype,
            kernel_init=kernel_init,
            bias_init=bias_init,
        )
        out_features = in_features if out_features is None else out_features
        self.in_features, self.out_features = in_features, out_features
        self.context_features = context_features
        common: dict[str, Any] = dict(
            dtype=dtype,
            param_dtype=param_dtype,
            precision=precision,
            kernel_init=kernel_init,
            rngs=rngs,
        )
        self.hidden = nnx.Linear(
            in_features, hidden_features, use_bias=use_bias, bias_init=bias_init, **common
        )
        self.context = (
            nnx.Linear(context_features, hidden_features, use_bias=False, **common)
            if context_features is not None
            else nnx.data(None)
        )
        self.output = nnx.Linear(
            hidden_features, hidden_features, use_bias=use_bias, bias_init=bias_init, **common
        )
        self.dropout = nnx.Dropout(dropout_rate, deterministic=deterministic, rngs=rngs)
        self.glu = GLU(
            hidden_features,
            out_features,
            activation="glu",
            fused_kernel=False,
            use_bias=use_bias,
            bias_init=bias_init,
            **common,
        )
        self.skip = (
            nnx.Linear(in_features, out_features, use_bias=use_bias, bias_init=bias_init, **common)
            if in_features != out_features
            else nnx.data(None)
        )
        self.norm = nnx.LayerNorm(
            out_features, epsilon=epsilon, dtype=dtype, param_dtype=param_dtype, rngs=rngs
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
        eta = self.hidden(a)
        if context is not None:
            if self.context is None:
                raise ValueError("GatedResidual: a context was given but context_features is None.")
            F.check_features("GatedResidual (context)", context, self.context_features)
            eta = eta + self.context(context)
        eta = self.output(jax.nn.elu(eta))
        eta = self.dropout(eta, deterministic=deterministic, rngs=rngs)
        skip = a if self.skip is None else self.skip(a)
        return self.norm(skip + self.glu(eta))
