"""NNX ``GLU`` and ``GatedMLP``: options, checks, params table and apply function are in
:mod:`hadamard_jax._layers.glu`; this module stores them and holds the variables."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from flax.typing import Dtype, Initializer, PrecisionLike

from hadamard_jax._layers import docstrings, options
from hadamard_jax._layers import functional as F
from hadamard_jax._layers import glu as G
from hadamard_jax.nnx import _common as C

__all__ = ["GLU", "GatedMLP"]


@docstrings.fill(args=G.GLU_ARGS)
class GLU(C.Table):
    r"""A linear projection to a gated output, ``act(x W_g + b_g) * (x W_v + b_v)``.

    With ``fused_kernel=True`` (default) the packed gate op splits one projection; with
    ``fused_kernel=False`` two kernels. The gate op keeps only its two inputs for the backward
    pass.

    Args:
      in_features: size of the last input axis.
      out_features: size of the gated output.
      {{args}}
      rngs: ``nnx.Rngs`` for the initializers.

    Example::

      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from hadamard_jax.nnx import GLU
      >>> layer = GLU(4, 3, activation="swiglu", rngs=nnx.Rngs(0))
      >>> layer.kernel.shape, layer(jnp.ones((2, 4))).shape
      ((4, 6), (2, 3))
    """

    in_features: int

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
        C.store(self, G.GLUOptions.of(locals()))
        self._build_table(self.options.specs(in_features), rngs, param_dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        """``[..., in_features] -> [..., out_features]``."""
        F.check_features("GLU", x, self.in_features)
        return self.options.apply(x, self._params())


@docstrings.fill(args=G.GATED_MLP_ARGS)
class GatedMLP(C.Table):
    r"""The gated feed-forward block ``down(act(x W_gate) * (x W_up))`` (SwiGLU, GeGLU, ...).

    Runs on the fused :func:`hadamard_jax.gated_mlp` op, whose derivative rule keeps only
    ``x``, ``x W_gate`` and ``x W_up`` for the backward pass: in a scan over layers it uses
    less memory than the same block built from ``nnx.Linear`` and no more than
    ``jax.checkpoint(policy=dots_saveable)``. Dropout draws its key from the
    ``rng_collection`` stream as ``nnx.Dropout`` does.

    Args:
      in_features: size of the last input axis ``d``.
      hidden_features: hidden size ``h``.
      out_features: output size (default ``in_features``).
      {{args}}
      rngs: ``nnx.Rngs``.

    Parameters: ``gate_kernel``/``up_kernel`` ``[d, h]``, ``down_kernel`` ``[h, out]`` and,
    with ``use_bias``, ``gate_bias``, ``up_bias`` ``[h]``, ``down_bias`` ``[out]``.

    Example::

      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from hadamard_jax.nnx import GatedMLP
      >>> mlp = GatedMLP(8, 32, rngs=nnx.Rngs(0))
      >>> mlp(jnp.ones((4, 8))).shape
      (4, 8)
    """

    in_features: int
    deterministic: bool | None
    dropout_rate: float
    rng_collection: str

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        out_features: int | None = None,
        *,
        activation: str = "swiglu",
        approximate: bool = False,
        use_bias: bool = True,
        dropout_rate: float = 0.0,
        deterministic: bool | None = False,
        masked: bool = False,
        ia3: bool = False,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        precision: PrecisionLike = None,
        kernel_init: Initializer = options.default_kernel_init,
        bias_init: Initializer = options.default_bias_init,
        down_kernel_init: Initializer | None = None,
        rng_collection: str = "dropout",
        rngs: nnx.Rngs,
    ):
        C.store(self, G.GatedMLPOptions.of(locals()))
        self._build_table(self.options.specs(in_features), rngs, param_dtype)
        self.rngs = C.rng_stream(rngs, rng_collection) if dropout_rate > 0 else nnx.data(None)

    def __call__(
        self, x: jax.Array, *, deterministic: bool | None = None, rngs: Any = None
    ) -> jax.Array:
        """``[..., in_features] -> [..., out_features]``."""
        F.check_features("GatedMLP", x, self.in_features)
        params = self._params()
        deterministic = options.deterministic_of(deterministic, self.deterministic, "GatedMLP")
        key = None
        if self.dropout_rate > 0 and not deterministic:
            key = C.draw_key("GatedMLP", rngs, self.rngs, self.rng_collection)
        return self.options.apply(x, params, dropout_key=key)
