"""``GatedRMSNorm``: RMS normalisation with a multiplicative gate (FLA, Mamba2)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from flax.typing import Dtype, Initializer

from hadamard_jax._layers import functional as F
from hadamard_jax._layers import options


class GatedRMSNorm(nnx.Module):
    r"""RMS normalisation over the last axis, gated: :func:`hadamard_jax.gated_rms_norm`.

    .. math::
      y = \mathrm{rms}(x) \odot s \odot \mathrm{act}(g) \quad\text{or}\quad
      y = \mathrm{rms}(x \odot \mathrm{act}(g)) \odot s

    ``norm_before_gate=True`` is flash-linear-attention's fused gated norm, ``False`` Mamba2's
    ``RMSNormGated``. The op's rule keeps ``x``, ``gate``, ``scale`` and one reciprocal RMS per
    row for the backward pass.

    Args:
      num_features: size ``d`` of the normalised last axis.
      eps: added to the mean square (static number > 0).
      activation: a plain gate of the gate table (``"swiglu"``: SiLU, default; ``"glu"``:
        sigmoid; ...).
      norm_before_gate: the order (see above).
      dtype: computation dtype (default: inferred from inputs and params).
      param_dtype: dtype of ``scale``.
      scale_init: initializer of ``scale`` ``[d]`` (default ones).
      rngs: ``nnx.Rngs``.

    Example::

      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from hadamard_jax.nnx import GatedRMSNorm
      >>> norm = GatedRMSNorm(4, rngs=nnx.Rngs(0))
      >>> norm(jnp.ones((2, 4)), jnp.zeros((2, 4)))  # silu(0) = 0
      Array([[0., 0., 0., 0.],
             [0., 0., 0., 0.]], dtype=float32)
    """

    def __init__(
        self,
        num_features: int,
        *,
        eps: float = 1e-6,
        activation: str = "swiglu",
        norm_before_gate: bool = True,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        scale_init: Initializer = nnx.initializers.ones_init(),
        rngs: nnx.Rngs,
    ):
        options.check_gated_rms_norm(
            num_features=num_features,
            eps=eps,
            activation=activation,
            norm_before_gate=norm_before_gate,
            dtype=dtype,
            param_dtype=param_dtype,
            scale_init=scale_init,
        )
        self.num_features, self.eps, self.activation = num_features, eps, activation
        self.norm_before_gate, self.dtype, self.param_dtype = norm_before_gate, dtype, param_dtype
        self.scale = nnx.Param(scale_init(rngs.params(), (num_features,), param_dtype))

    def __call__(self, x: jax.Array, gate: jax.Array) -> jax.Array:
        """``x``, ``gate``: ``[..., num_features]`` -> ``[..., num_features]``."""
        F.check_features("GatedRMSNorm", x, self.num_features)
        return F.gated_rms_norm(
            x,
            gate,
            self.scale[...],
            eps=self.eps,
            activation=self.activation,
            norm_before_gate=self.norm_before_gate,
            dtype=self.dtype,
        )
