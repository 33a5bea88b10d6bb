"""Linen ``GLU`` and ``GatedMLP``: the NNX modules of the same names as Linen dataclasses (the
input size inferred from the input). Checks, params table and apply function are in
:mod:`hadamard_jax._layers.glu`."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax.typing import Dtype, Initializer, PrecisionLike

from hadamard_jax._layers import docstrings, options
from hadamard_jax._layers import glu as G
from hadamard_jax.linen import _common as L

__all__ = ["GLU", "GatedMLP"]


@docstrings.fill(args=G.GLU_ARGS)
class GLU(L.Checked):
    """A linear projection to a gated output, ``act(x W_g + b_g) * (x W_v + b_v)``.

    The Linen counterpart of :class:`hadamard_jax.nnx.GLU` (the input size is inferred).

    Attributes:
      out_features: size of the gated output.
      {{args}}

    Example::

      >>> import jax, jax.numpy as jnp
      >>> from hadamard_jax.linen import GLU
      >>> layer = GLU(3, activation="geglu")
      >>> variables = layer.init(jax.random.key(0), jnp.ones((2, 4)))
      >>> variables["params"]["kernel"].shape, layer.apply(variables, jnp.ones((2, 4))).shape
      ((4, 6), (2, 3))
    """

    out_features: int
    activation: str = "swiglu"
    approximate: bool = False
    fused_kernel: bool = True
    use_bias: bool = True
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    precision: PrecisionLike = None
    kernel_init: Initializer = options.default_kernel_init
    bias_init: Initializer = options.default_bias_init

    _options = G.GLUOptions

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """``[..., in] -> [..., out_features]``."""
        params = L.build(self, self.options.specs(jnp.shape(x)[-1]), self.param_dtype)
        return self.options.apply(x, params)


@docstrings.fill(args=G.GATED_MLP_ARGS)
class GatedMLP(L.Checked):
    """The gated feed-forward block ``down(act(x W_gate) * (x W_up))`` on the fused
    :func:`hadamard_jax.gated_mlp` op (SwiGLU, GeGLU, ...).

    The Linen counterpart of :class:`hadamard_jax.nnx.GatedMLP` (the input size ``d`` is
    inferred; ``deterministic=None`` leaves dropout to the call argument, else it is on).
    Parameters: ``gate_kernel``/``up_kernel`` ``[d, h]``, ``down_kernel`` ``[h, out]`` and,
    with ``use_bias``, ``gate_bias``, ``up_bias`` ``[h]``, ``down_bias`` ``[out]``.

    Attributes:
      hidden_features: hidden size ``h``.
      out_features: output size (default: the input size ``d``).
      {{args}}

    Example::

      >>> import jax, jax.numpy as jnp
      >>> from hadamard_jax.linen import GatedMLP
      >>> mlp = GatedMLP(32)
      >>> variables = mlp.init(jax.random.key(0), jnp.ones((4, 8)))
      >>> mlp.apply(variables, jnp.ones((4, 8))).shape
      (4, 8)
    """

    hidden_features: int
    out_features: int | None = None
    activation: str = "swiglu"
    approximate: bool = False
    use_bias: bool = True
    dropout_rate: float = 0.0
    deterministic: bool | None = None
    masked: bool = False
    ia3: bool = False
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    precision: PrecisionLike = None
    kernel_init: Initializer = options.default_kernel_init
    bias_init: Initializer = options.default_bias_init
    down_kernel_init: Initializer | None = None
    rng_collection: str = "dropout"

    _options = G.GatedMLPOptions

    @nn.compact
    def __call__(self, x: jax.Array, *, deterministic: bool | None = None) -> jax.Array:
        """``[..., in] -> [..., out_features or in]``."""
        params = L.build(self, self.options.specs(jnp.shape(x)[-1]), self.param_dtype)
        deterministic = options.deterministic_of(deterministic, self.deterministic, "GatedMLP")
        key = None
        if self.dropout_rate > 0 and not deterministic:
            key = self.make_rng(self.rng_collection)
        return self.options.apply(x, params, dropout_key=key)
