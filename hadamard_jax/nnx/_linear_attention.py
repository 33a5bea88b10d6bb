"""Matrix-state mixers: ``GatedDeltaNet`` (Gated DeltaNet, the linear layers of Qwen3-Next)."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from flax import nnx
from flax.typing import Dtype, Initializer, PrecisionLike

from hadamard_jax._layers import linear_attention as L
from hadamard_jax._layers import options
from hadamard_jax._src import docstrings
from hadamard_jax.nnx import _common as C

__all__ = ["GatedDeltaNet", "GatedLinearAttention"]


class _Mixer(L.MixerCalls, C.Table):
    """What both mixers do: store the options, build the table, check and run a call."""

    def _build(self, opts: L.MixerOptions, rngs: nnx.Rngs) -> None:
        C.store(self, opts)
        self.sizes = opts.sizes
        self._build_table(opts.specs(), rngs, opts.param_dtype)

    def _run(self, x: Any, cache: Any, decode: bool) -> Any:
        opts, params = self.options, self._params()
        return opts.step(cache, x, params) if decode else opts.apply(x, params, cache)


@docstrings.fill(args=L.GDN_ARGS)
class GatedDeltaNet(_Mixer):
    r"""The Gated DeltaNet block (Yang et al. 2025), as in Qwen3-Next and flash-linear-attention.

    For inputs ``x`` ``[B, T, hidden_size]``, with ``H`` key heads of size ``K = head_dim`` and
    ``Hv`` value heads of size ``V = head_dim * expand_v``:

    .. math::
      q, k, v = \mathrm{silu}(\mathrm{conv}(x W_q)), \ldots \quad
      \hat q = q / \lVert q \rVert, \ \hat k = k / \lVert k \rVert, \\
      \beta_t = \sigma(x_t W_b), \quad
      \log\alpha_t = -e^{A_{\log}} \operatorname{softplus}(x_t W_a + b_{dt}), \\
      S_t = \alpha_t (I - \beta_t \hat k_t \hat k_t^\top) S_{t-1} + \beta_t \hat k_t v_t^\top,
      \quad o_t = K^{-1/2} S_t^\top \hat q_t, \\
      y_t = \mathrm{rms}(o_t) \odot w \odot \mathrm{silu}(x_t W_g) \ \text{(per value head)},
      \ \text{then}\ W_o,

    ``conv`` a causal depthwise convolution of ``conv_size`` taps per channel (fla's
    ``ShortConvolution``); the recurrence is :func:`hadamard_jax.gated_delta_rule` (chunkwise,
    with its own derivative rule), the output norm :func:`hadamard_jax.gated_rms_norm`. With
    ``num_v_heads > num_heads`` each key head serves ``num_v_heads // num_heads`` consecutive
    value heads (Qwen3-Next's grouped values).

    Parameter names and shapes follow flash-linear-attention's ``fla.layers.GatedDeltaNet``
    (chosen over Hugging Face's ``Qwen3NextGatedDeltaNet``, which fuses ``q, k, v, z`` into one
    interleaved ``in_proj_qkvz`` and ``b, a`` into ``in_proj_ba``; its ``z`` is fla's ``g_proj``,
    its ``norm``/``out_proj`` fla's ``o_norm``/``o_proj``). Kernels are ``[in, out]``:
    fla's ``name.weight.T``; the convolutions ``[conv_size, D]``: ``weight[:, 0, :].T``
    (:func:`hadamard_jax._layers.linear_attention.gdn_params_from_fla` converts a state dict).
    The decode cache's ``"state"`` is ``[B, Hv, K, V]`` (fla's newest kernels keep
    ``[B, Hv, V, K]``, ``state_v_first``: transpose the last two axes).

    Args:
      {{args}}
      rngs: ``nnx.Rngs``.

    Parameters: ``q_proj``, ``k_proj`` ``[d, H K]``; ``v_proj``, ``g_proj`` ``[d, Hv V]``;
    ``a_proj``, ``b_proj`` ``[d, Hv]``; ``A_log``, ``dt_bias`` ``[Hv]`` (fla's initialisers);
    ``q_conv1d``, ``k_conv1d`` ``[W, H K]``, ``v_conv1d`` ``[W, Hv V]``; ``o_norm`` ``[V]``;
    ``o_proj`` ``[Hv V, d]``.

    Example::

      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from hadamard_jax.nnx import GatedDeltaNet
      >>> layer = GatedDeltaNet(16, num_heads=2, head_dim=8, rngs=nnx.Rngs(0))
      >>> y, cache = layer(jnp.ones((2, 5, 16)))  # [batch, time, hidden_size]
      >>> y.shape, cache["state"].shape
      ((2, 5, 16), (2, 2, 8, 16))
      >>> cache, y_t = layer.step(cache, jnp.ones((2, 16)))  # the next token
      >>> y_t.shape
      (2, 16)
    """

    def __init__(
        self,
        hidden_size: int,
        *,
        num_heads: int = 6,
        head_dim: int = 256,
        expand_v: float = 2.0,
        num_v_heads: int | None = None,
        use_short_conv: bool = True,
        conv_size: int = 4,
        allow_neg_eigval: bool = False,
        norm_eps: float = 1e-5,
        chunk_size: int = 64,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        precision: PrecisionLike = None,
        kernel_init: Initializer = options.default_kernel_init,
        mesh_axis: str | None = None,
        rngs: nnx.Rngs,
    ):
        self._build(L.GDNOptions.of(locals()), rngs)


@docstrings.fill(args=L.GLA_ARGS)
class GatedLinearAttention(_Mixer):
    r"""The Gated Linear Attention block (Yang et al. 2024), as flash-linear-attention's layer.

    For inputs ``x`` ``[B, T, hidden_size]``, ``H = num_heads`` heads of key size
    ``K = hidden_size * expand_k / H`` and value size ``V = hidden_size * expand_v / H``:

    .. math::
      q, k, v = x W_q, x W_k, x W_v \ \text{(or}\ \mathrm{silu}(\mathrm{conv}(\cdot))\text{)},
      \quad \log g_t = \log\sigma(x_t W_{g1} W_{g2} + b_g) / 16, \\
      S_t = \operatorname{diag}(e^{\log g_t}) S_{t-1} + k_t v_t^\top, \quad
      o_t = K^{-1/2} S_t^\top q_t, \\
      y_t = \mathrm{rms}(o_t) \odot w \odot \mathrm{silu}(x_t W_g) \ \text{(per head)},
      \ \text{then}\ W_o,

    the gate a low-rank projection (rank ``gate_low_rank_dim``) with a per-key-dimension gate,
    ``16`` being ``gate_logit_normalizer``; the recurrence is
    :func:`hadamard_jax.gated_linear_attention`, the output norm
    :func:`hadamard_jax.gated_rms_norm`. fla's defaults: no short convolution, output gate
    with a fused gated RMS norm; ``num_kv_heads`` and ``feature_map`` are not supported.

    Parameter names follow fla's ``fla.layers.GatedLinearAttention``, the ``nn.Sequential``
    gate projection flattened: ``gk_proj.0.weight`` -> ``gk_proj_0``, ``gk_proj.1.weight`` ->
    ``gk_proj_1``, ``gk_proj.1.bias`` -> ``gk_proj_1_bias``; kernels ``[in, out]`` (fla's
    ``weight.T``), convolutions ``[conv_size, D]``
    (:func:`hadamard_jax._layers.linear_attention.gla_params_from_fla` converts a state dict).

    Args:
      {{args}}
      rngs: ``nnx.Rngs``.

    Example::

      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from hadamard_jax.nnx import GatedLinearAttention
      >>> x = jnp.ones((2, 6, 16))  # [batch, time, hidden_size]
      >>> layer = GatedLinearAttention(16, num_heads=2, rngs=nnx.Rngs(0))
      >>> cache = layer.init_cache(2)
      >>> cache["state"].shape  # [B, H, K, V]: K = 16 * 0.5 / 2, V = 16 / 2
      (2, 2, 4, 8)
      >>> y, cache = layer(x[:, :5], cache)
      >>> cache, y_t = layer.step(cache, x[:, 5])  # the sixth token continues the five
      >>> y_all, _ = layer(x)
      >>> bool(jnp.allclose(y_t, y_all[:, 5], atol=1e-5))
      True
    """

    def __init__(
        self,
        hidden_size: int,
        *,
        num_heads: int = 4,
        expand_k: float = 0.5,
        expand_v: float = 1.0,
        use_short_conv: bool = False,
        conv_size: int = 4,
        gate_logit_normalizer: float = 16.0,
        gate_low_rank_dim: int = 16,
        clamp_min: float | None = None,
        norm_eps: float = 1e-5,
        chunk_size: int = 64,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        precision: PrecisionLike = None,
        kernel_init: Initializer = options.default_kernel_init,
        bias_init: Initializer = options.default_bias_init,
        mesh_axis: str | None = None,
        rngs: nnx.Rngs,
    ):
        self._build(L.GLAOptions.of(locals()), rngs)
