"""``GatedMultiHeadAttention``: Flax's multi-head attention with an output gate."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from flax.typing import Dtype, Initializer, PrecisionLike

from hadamard_jax._layers import docstrings, options
from hadamard_jax._layers import gated_attention as attention

__all__ = ["GatedMultiHeadAttention"]


@docstrings.fill(gate=attention.GATE_ARG)
class GatedMultiHeadAttention(nnx.MultiHeadAttention):
    r"""``nnx.MultiHeadAttention`` with the output gate of Qiu et al. (2025), as in Qwen3-Next.

    .. math::
      o = \mathrm{sdpa}(q, k, v) \odot \sigma(x W_g), \qquad y = o W_o

    The gate multiplies each head's attention output before the output projection,
    element-wise (``gate="elementwise"``: ``W_g`` ``[in, heads, head_dim]``) or one value per
    head (``gate="headwise"``: ``[in, heads, 1]``), through :func:`hadamard_jax.glu`. As in
    Qwen3-Next, the query and the gate come from one projection: ``query.kernel`` is
    ``[in, heads, head_dim + g]``, the first ``head_dim`` features of each head the query and
    the last ``g`` the gate. ``gate=None`` is exactly ``nnx.MultiHeadAttention`` (same
    parameters, same outputs). Everything else is Flax's: the arguments (``num_heads``,
    ``in_features``, ``qkv_features``, ``out_features``, dropout, ``decode`` with
    ``init_cache``, ...), and ``mask=`` (e.g. :func:`hadamard_jax.causal_mask`,
    :func:`hadamard_jax.attention_mask`, :func:`hadamard_jax.combine_masks`).

    Args:
      num_heads, in_features, qkv_features, out_features: as ``nnx.MultiHeadAttention``.
      {{gate}}
      attention_fn: the attention before the gate (default ``nnx.dot_product_attention``).
      normalize_qk: Flax's QK layer norm; only with ``gate=None`` (the fused projection holds
        the gate too).
      dtype, param_dtype, precision, kernel_init, bias_init, use_bias: as Flax's.
      rngs: ``nnx.Rngs``.
      **kwargs: the other arguments of ``nnx.MultiHeadAttention`` (``dropout_rate``,
        ``deterministic``, ``decode``, ``broadcast_dropout``, ``num_kv_heads``, ...).

    Example::

      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from hadamard_jax import causal_mask
      >>> from hadamard_jax.nnx import GatedMultiHeadAttention
      >>> layer = GatedMultiHeadAttention(2, 8, decode=False, rngs=nnx.Rngs(0))
      >>> layer.query.kernel.shape  # [in, heads, head_dim (query) + head_dim (gate)]
      (8, 2, 8)
      >>> layer(jnp.ones((3, 5, 8)), mask=causal_mask(5)).shape
      (3, 5, 8)
    """

    def __init__(
        self,
        num_heads: int,
        in_features: int,
        qkv_features: int | None = None,
        out_features: int | None = None,
        *,
        gate: str | None = "elementwise",
        attention_fn: Callable[..., jax.Array] = nnx.dot_product_attention,
        normalize_qk: bool = False,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        precision: PrecisionLike = None,
        kernel_init: Initializer = options.default_kernel_init,
        bias_init: Initializer = options.default_bias_init,
        use_bias: bool = True,
        rngs: nnx.Rngs,
        **kwargs: Any,
    ):
        opts = attention.GatedAttentionOptions.of({**kwargs, **locals()})
        num_heads, head_dim = opts.num_heads, opts.head_dim(in_features)
        fn = attention_fn if gate is None else attention.SplitQueryAttention(head_dim, attention_fn)
        super().__init__(
            num_heads,
            in_features,
            qkv_features,
            out_features,
            attention_fn=fn,
            normalize_qk=normalize_qk,
            dtype=dtype,
            param_dtype=param_dtype,
            precision=precision,
            kernel_init=kernel_init,
            bias_init=bias_init,
            use_bias=use_bias,
            rngs=rngs,
            **kwargs,
        )
        self.options, self.gate = opts, gate
        if gate is not None:
            # The fused query-and-gate projection replaces Flax's query projection.
            self.query = nnx.LinearGeneral(
                in_features,
                (num_heads, head_dim + opts.gate_features(head_dim)),
                dtype=dtype,
                param_dtype=param_dtype,
                kernel_init=kernel_init,
                bias_init=bias_init,
                use_bias=use_bias,
                precision=precision,
                rngs=rngs,
            )
