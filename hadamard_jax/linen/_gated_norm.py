"""Linen ``GatedRMSNorm`` (``num_features`` inferred from the input): check, params table and
apply function are in :mod:`hadamard_jax._layers.gated_norm`."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax.typing import Dtype, Initializer

from hadamard_jax._layers import docstrings, options
from hadamard_jax._layers import gated_norm as N
from hadamard_jax.linen import _common as L


@docstrings.fill(args=N.GATED_RMS_NORM_ARGS)
class GatedRMSNorm(nn.Module):
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

    def __post_init__(self) -> None:
        N.check_gated_rms_norm(**L.fields(self))
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, gate: jax.Array) -> jax.Array:
        """``x``, ``gate``: ``[..., d]`` -> ``[..., d]``."""
        specs = N.gated_rms_norm_params(jnp.shape(x)[-1], self)
        scale = L.build(self, specs, self.param_dtype)["scale"]
        return N.gated_rms_norm(x, gate, scale, **options.pick(self, N.GATED_RMS_NORM_APPLY))
