"""Linen ``GatedRMSNorm`` (``num_features`` inferred from the input): check, params table and
apply function are in :mod:`hadamard_jax._layers.gated_norm`."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax.typing import Dtype, Initializer

from hadamard_jax._layers import docstrings
from hadamard_jax._layers import gated_norm as N
from hadamard_jax.linen import _common as L

__all__ = ["GatedRMSNorm"]


@docstrings.fill(args=N.GATED_RMS_NORM_ARGS)
class GatedRMSNorm(L.Checked):
    r"""RMS normalisation over the last axis, gated: :func:`hadamard_jax.gated_rms_norm`.

    The Linen counterpart of :class:`hadamard_jax.nnx.GatedRMSNorm` (``num_features`` is
    inferred from the input).

    Attributes:
      {{args}}

    Example::

      >>> import jax, jax.numpy as jnp
      >>> from hadamard_jax.linen import GatedRMSNorm
      >>> norm = GatedRMSNorm(activation="glu")
      >>> x, gate = jnp.ones((2, 4)), jnp.full((2, 4), 100.0)  # sigmoid(100) = 1
      >>> variables = norm.init(jax.random.key(0), x, gate)
      >>> norm.apply(variables, x, gate)[0]
      Array([0.9999995, 0.9999995, 0.9999995, 0.9999995], dtype=float32)
    """

    eps: float = 1e-6
    activation: str = "swiglu"
    norm_before_gate: bool = True
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    scale_init: Initializer = nn.initializers.ones_init()

    _options = N.GatedRMSNormOptions

    @nn.compact
    def __call__(self, x: jax.Array, gate: jax.Array) -> jax.Array:
        """``x``, ``gate``: ``[..., d]`` -> ``[..., d]``."""
        specs = self.options.specs(jnp.shape(x)[-1])
        return self.options.apply(x, gate, L.build(self, specs, self.param_dtype)["scale"])
