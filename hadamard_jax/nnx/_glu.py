"""``GLU``: a projection to a gated output."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from flax.typing import Dtype, Initializer, PrecisionLike

from hadamard_jax._layers import functional as F
from hadamard_jax._layers import options
from hadamard_jax.nnx import _common as C


class GLU(nnx.Module):
    r"""A linear projection to a gated output, ``act(x W_g + b_g) * (x W_v + b_v)``.

    With ``fused_kernel=True`` (default) one kernel ``[in, 2 out]`` holds the value columns
    then the gate columns (the ``jax.nn.glu`` layout) and the packed gate op splits the
    projection; with ``fused_kernel=False`` two kernels ``gate_kernel``/``value_kernel``
    ``[in, out]``. The gate op keeps only its two inputs for the backward pass.

    Args:
      in_features: size of the last input axis.
      out_features: size of the gated output.
      activation: ``"swiglu"``, ``"geglu"``, ``"reglu"``, ``"glu"`` (sigmoid) or
        ``"bilinear"``.
      approximate: tanh-approximate GELU (``activation="geglu"`` only).
      fused_kernel: one ``[in, 2 out]`` kernel (default) or two ``[in, out]`` kernels.
      use_bias: add biases to the projections.
      dtype: computation dtype (default: inferred from inputs and params).
      param_dtype: parameter dtype.
      precision: ``jax.lax.Precision`` of the matmul.
      kernel_init, bias_init: initializers (wrap with ``nnx.with_partitioning`` to shard).
      rngs: ``nnx.Rngs`` for the initializers.

    Example::

      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from hadamard_jax.nnx import GLU
      >>> layer = GLU(4, 3, activation="swiglu", rngs=nnx.Rngs(0))
      >>> layer.kernel.shape, layer(jnp.ones((2, 4))).shape
      ((4, 6), (2, 3))
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        activation: str = "swiglu",
        approximate: bool = False,
        fused_kernel: bool = True,
        use_bias: bool = True,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        precision: PrecisionLike = None,
        kernel_init: Initializer = options.default_kernel_init,
        bias_init: Initializer = options.default_bias_init,
        rngs: nnx.Rngs,
    ):
        options.check_glu(
            in_features=in_features,
            out_features=out_features,
            activation=activation,
            approximate=approximate,
            fused_kernel=fused_kernel,
            use_bias=use_bias,
            dtype=dtype,
            param_dtype=param_dtype,
            kernel_init=kernel_init,
            bias_init=bias_init,
        )
        self.in_features, self.out_features = in_features, out_features
        self.activation, self.approximate = activation, approximate
        self.fused_kernel, self.use_bias = fused_kernel, use_bias
        self.dtype, self.param_dtype, self.precision = dtype, param_dtype, precision
        d, n = in_features, out_features
        if fused_kernel:
            self.kernel = C.param(kernel_init, rngs.params(), (d, 2 * n), param_dtype)
            self.bias = (
                C.param(bias_init, rngs.params(), (2 * n,), param_dtype)
                if use_bias
                else nnx.data(None)
            )
        else:
            self.gate_kernel = C.param(kernel_init, rngs.params(), (d, n), param_dtype)
            self.value_kernel = C.param(kernel_init, rngs.params(), (d, n), param_dtype)
            if use_bias:
                self.gate_bias = C.param(bias_init, rngs.params(), (n,), param_dtype)
                self.value_bias = C.param(bias_init, rngs.params(), (n,), param_dtype)
            else:
                self.gate_bias = self.value_bias = nnx.data(None)

    def __call__(self, x: jax.Array) -> jax.Array:
        """``[..., in_features] -> [..., out_features]``."""
        F.check_features("GLU", x, self.in_features)
        if self.fused_kernel:
            params = {"kernel": C.value(self.kernel), "bias": C.value(self.bias)}
        else:
            params = {
                k: C.value(getattr(self, k))
                for k in ("gate_kernel", "value_kernel", "gate_bias", "value_bias")
            }
        return F.glu(
            x,
            params,
            activation=self.activation,
            approximate=self.approximate,
            dtype=self.dtype,
            precision=self.precision,
        )
