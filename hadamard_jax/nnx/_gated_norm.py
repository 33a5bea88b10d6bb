"""NNX ``GatedRMSNorm``: check, params table and apply function are in
:mod:`hadamard_jax._layers.gated_norm`."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from flax.typing import Dtype, Initializer

from hadamard_jax._layers import docstrings
from hadamard_jax._layers import gated_norm as N
from hadamard_jax.nnx import _common as C

__all__ = ["GatedRMSNorm"]


@docstrings.fill(args=N.GATED_RMS_NORM_ARGS)
class GatedRMSNorm(C.Stored):
    r"""RMS normalisation over the last axis, gated: :func:`hadamard_jax.gated_rms_norm`.

    .. math::
      y = \mathrm{rms}(x) \odot s \odot \mathrm{act}(g) \quad\text{or}\quad
      y = \mathrm{rms}(x \odot \mathrm{act}(g)) \odot s

    ``norm_before_gate=True`` is flash-linear-attention's fused gated norm, ``False`` Mamba2's
    ``RMSNormGated``. The op's rule keeps ``x``, ``gate``, ``scale`` and one reciprocal RMS per
    row for the backward pass.

    Args:
      num_features: size ``d`` of the normalised last axis.
      {{args}}
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

    num_features: int
    scale: nnx.Param

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
        C.store(self, N.GatedRMSNormOptions.of(locals()))
        C.build(self, self.options.specs(num_features), rngs, param_dtype)

    def __call__(self, x: jax.Array, gate: jax.Array) -> jax.Array:
        """``x``, ``gate``: ``[..., num_features]`` -> ``[..., num_features]``."""
        return self.options.apply(x, gate, self.scale[...])
