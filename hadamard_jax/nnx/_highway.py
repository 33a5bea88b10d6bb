"""``Highway``: the highway layer of Srivastava et al. (2015)."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx
from flax.typing import Dtype, Initializer, PrecisionLike

from hadamard_jax._layers import functional as F
from hadamard_jax._layers import options
from hadamard_jax.nnx import _common as C


class Highway(nnx.Module):
    r"""A highway layer: ``y = T(x) * H(x) + (1 - T(x)) * x``.

    ``H(x) = activation(x W_H + b_H)`` and the transform gate ``T(x) = sigmoid(x W_T + b_T)``,
    combined by the :func:`hadamard_jax.highway` op. The gate bias starts negative (default
    ``-2``, Srivastava et al. 2015 suggest ``-1`` to ``-3``) so the layer starts close to the
    identity (carry) and deep stacks train.

    Args:
      features: input and output size.
      activation: the transform's activation (default ``jax.nn.relu``).
      use_bias: bias ``b_H`` on the transform (the gate always has its bias).
      gate_bias_init: initializer of ``b_T`` (default ``constant(-2.0)``).
      dtype, param_dtype, precision, kernel_init, bias_init: as ``nnx.Linear``.
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
        options.check_highway(
            features=features,
            activation=activation,
            use_bias=use_bias,
            gate_bias_init=gate_bias_init,
            dtype=dtype,
            param_dtype=param_dtype,
            kernel_init=kernel_init,
            bias_init=bias_init,
        )
        self.features, self.activation, self.use_bias = features, activation, use_bias
        self.dtype, self.param_dtype, self.precision = dtype, param_dtype, precision
        f = features
        self.kernel = C.param(kernel_init, rngs.params(), (f, f), param_dtype)
        self.bias = (
            C.param(bias_init, rngs.params(), (f,), param_dtype) if use_bias else nnx.data(None)
        )
        self.gate_kernel = C.param(kernel_init, rngs.params(), (f, f), param_dtype)
        self.gate_bias = C.param(gate_bias_init, rngs.params(), (f,), param_dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        """``[..., features] -> [..., features]``."""
        F.check_features("Highway", x, self.features)
        names = ("kernel", "bias", "gate_kernel", "gate_bias")
        params = {k: C.value(getattr(self, k)) for k in names}
        return F.highway(
            x, params, activation=self.activation, dtype=self.dtype, precision=self.precision
        )
