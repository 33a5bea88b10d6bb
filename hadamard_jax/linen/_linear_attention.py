"""The Linen ``GatedDeltaNet`` and ``GatedLinearAttention``: :mod:`hadamard_jax.nnx`'s mixers as
dataclasses.

Same names, arguments and parameter names as the NNX modules, the same options and parameter
table (:mod:`hadamard_jax._layers.linear_attention`, checked in ``__post_init__``) and the same pure
functions, so equal parameters give equal outputs. ``__call__`` and ``step`` share one compact
method, so either may create the parameters (``init(..., method="step")`` works).
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from flax import linen as nn
from flax.typing import Dtype, Initializer, PrecisionLike

from hadamard_jax._layers import linear_attention as L
from hadamard_jax._layers import options
from hadamard_jax._src import docstrings
from hadamard_jax.linen import _common as LC

__all__ = ["GatedDeltaNet", "GatedLinearAttention"]


class _Mixer(L.MixerCalls, LC.Checked):
    """What both mixers do: check the options once, build the table, check and run a call."""

    @nn.compact
    def _run(self, x: Any, cache: Any, decode: bool) -> Any:
        opts = self.options
        params = LC.build(self, opts.specs(), opts.param_dtype)
        return opts.step(cache, x, params) if decode else opts.apply(x, params, cache)

    # Flax wraps the methods a Linen class defines itself (scopes, intercepts, intermediates).
    init_cache = L.MixerCalls.init_cache
    __call__ = L.MixerCalls.__call__
    step = L.MixerCalls.step


@docstrings.fill(args=L.GDN_ARGS)
class GatedDeltaNet(_Mixer):
    r"""The Gated DeltaNet block (Yang et al. 2025), as in Qwen3-Next and flash-linear-attention.

    The Linen counterpart of :class:`hadamard_jax.nnx.GatedDeltaNet` (see there for the math,
    the parameters and their mapping to fla's weights): short causal convolutions with SiLU,
    L2-normalised ``q, k``, ``beta = sigmoid(x W_b)``,
    ``log_alpha = -exp(A_log) softplus(x W_a + dt_bias)``,
    :func:`hadamard_jax.gated_delta_rule`, a gated RMS norm per value head, ``o_proj``.
    ``__call__(x, cache=None) -> (y, cache)``; ``step(cache, x_t) -> (cache, y_t)``.

    Attributes:
      {{args}}

    Example::

      >>> import jax, jax.numpy as jnp
      >>> from hadamard_jax.linen import GatedDeltaNet
      >>> layer = GatedDeltaNet(16, num_heads=2, head_dim=8)
      >>> x = jnp.ones((2, 5, 16))
      >>> variables = layer.init(jax.random.key(0), x)
      >>> y, cache = layer.apply(variables, x)
      >>> cache, y_t = layer.apply(variables, cache, x[:, 0], method="step")
      >>> y.shape, y_t.shape
      ((2, 5, 16), (2, 16))
    """

    hidden_size: int
    num_heads: int = 6
    head_dim: int = 256
    expand_v: float = 2.0
    num_v_heads: int | None = None
    use_short_conv: bool = True
    conv_size: int = 4
    allow_neg_eigval: bool = False
    norm_eps: float = 1e-5
    chunk_size: int = 64
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    precision: PrecisionLike = None
    kernel_init: Initializer = options.default_kernel_init
    mesh_axis: str | None = None

    _options = L.GDNOptions


@docstrings.fill(args=L.GLA_ARGS)
class GatedLinearAttention(_Mixer):
    r"""The Gated Linear Attention block (Yang et al. 2024), as flash-linear-attention's layer.

    The Linen counterpart of :class:`hadamard_jax.nnx.GatedLinearAttention` (see there for the
    math, the parameters and their mapping to fla's weights): ``q, k, v`` projections (short
    convolutions optional), a low-rank gate ``log g = logsigmoid(x W_1 W_2 + b) / 16``,
    :func:`hadamard_jax.gated_linear_attention`, a gated RMS norm per head, ``o_proj``.
    ``__call__(x, cache=None) -> (y, cache)``; ``step(cache, x_t) -> (cache, y_t)``.

    Attributes:
      {{args}}

    Example::

      >>> import jax, jax.numpy as jnp
      >>> from hadamard_jax.linen import GatedLinearAttention
      >>> layer, x = GatedLinearAttention(16, num_heads=2), jnp.ones((2, 6, 16))
      >>> variables = layer.init(jax.random.key(0), x)
      >>> y, cache = layer.apply(variables, x[:, :5], layer.init_cache(2))
      >>> cache, y_t = layer.apply(variables, cache, x[:, 5], method="step")  # the sixth token
      >>> y_all, _ = layer.apply(variables, x)
      >>> bool(jnp.allclose(y_t, y_all[:, 5], atol=1e-5))
      True
    """

    hidden_size: int
    num_heads: int = 4
    expand_k: float = 0.5
    expand_v: float = 1.0
    use_short_conv: bool = False
    conv_size: int = 4
    gate_logit_normalizer: float = 16.0
    gate_low_rank_dim: int = 16
    clamp_min: float | None = None
    norm_eps: float = 1e-5
    chunk_size: int = 64
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    precision: PrecisionLike = None
    kernel_init: Initializer = options.default_kernel_init
    bias_init: Initializer = options.default_bias_init
    mesh_axis: str | None = None

    _options = L.GLAOptions
