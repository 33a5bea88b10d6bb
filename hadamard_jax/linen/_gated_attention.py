"""Linen ``GatedMultiHeadAttention``: the NNX module of the same name as a Linen dataclass (the
input size inferred). Check and gate are in :mod:`hadamard_jax._layers.gated_attention`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax.typing import Dtype, Initializer, PrecisionLike

from hadamard_jax._layers import docstrings, options
from hadamard_jax._layers import gated_attention as attention
from hadamard_jax.linen import _common as L

__all__ = ["GatedMultiHeadAttention"]

#: The projection options both Flax layers take from the module.
_DENSE = ("dtype", "param_dtype", "precision", "kernel_init", "bias_init", "use_bias")


@docstrings.fill(gate=attention.GATE_ARG)
class GatedMultiHeadAttention(L.Checked):
    r"""``nn.MultiHeadDotProductAttention`` with the output gate of Qiu et al. (2025).

    The Linen counterpart of :class:`hadamard_jax.nnx.GatedMultiHeadAttention`:
    ``o = sdpa(q, k, v) * sigmoid(x W_g)`` before the output projection. Flax's attention is
    the submodule ``attention`` (its ``query``/``key``/``value``/``out`` parameters and
    ``cache``), and the gate projection the ``DenseGeneral`` ``gate`` ``[in, heads, g]``
    (``g = head_dim`` element-wise, 1 head-wise): the NNX module's fused ``query`` kernel is the
    concatenation of ``attention/query`` and ``gate`` along the last axis. With ``gate=None``
    the output is ``nn.MultiHeadDotProductAttention``'s for the ``attention`` parameters.

    Attributes:
      num_heads, qkv_features, out_features: as ``nn.MultiHeadDotProductAttention``.
      {{gate}}
      attention_fn: the attention before the gate (default ``nn.dot_product_attention``).
      dropout_rate, broadcast_dropout, deterministic, decode, normalize_qk: as Flax's
        (``normalize_qk`` only with ``gate=None``, as in NNX).
      dtype, param_dtype, precision, kernel_init, bias_init, use_bias: as Flax's.

    Example::

      >>> import jax, jax.numpy as jnp
      >>> from hadamard_jax import causal_mask
      >>> from hadamard_jax.linen import GatedMultiHeadAttention
      >>> layer = GatedMultiHeadAttention(2, gate="headwise")
      >>> x = jnp.ones((3, 5, 8))
      >>> variables = layer.init(jax.random.key(0), x)
      >>> variables["params"]["gate"]["kernel"].shape
      (8, 2, 1)
      >>> layer.apply(variables, x, mask=causal_mask(5)).shape
      (3, 5, 8)
    """

    num_heads: int
    qkv_features: int | None = None
    out_features: int | None = None
    gate: str | None = "elementwise"
    attention_fn: Callable[..., jax.Array] = nn.dot_product_attention
    dropout_rate: float = 0.0
    broadcast_dropout: bool = True
    deterministic: bool | None = None
    decode: bool = False
    normalize_qk: bool = False
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    precision: PrecisionLike = None
    kernel_init: Initializer = options.default_kernel_init
    bias_init: Initializer = options.default_bias_init
    use_bias: bool = True

    _options = attention.GatedAttentionOptions

    @nn.compact
    def __call__(
        self,
        inputs_q: jax.Array,
        inputs_k: jax.Array | None = None,
        inputs_v: jax.Array | None = None,
        *,
        mask: jax.Array | None = None,
        deterministic: bool | None = None,
        dropout_rng: jax.Array | None = None,
        sow_weights: bool = False,
    ) -> Any:
        """As ``nn.MultiHeadDotProductAttention``: ``[..., length, in] -> [..., length, out]``."""
        head_dim = self.options.head_dim(jnp.shape(inputs_q)[-1])
        attention_fn = self.attention_fn
        dense = options.pick(self, _DENSE)
        if self.gate is not None:
            pre = nn.DenseGeneral(
                (self.num_heads, self.options.gate_features(head_dim)), name="gate", **dense
            )(inputs_q)
            attention_fn = attention.gate_attention_fn(pre, attention_fn)
        return nn.MultiHeadDotProductAttention(
            num_heads=self.num_heads,
            qkv_features=self.qkv_features,
            out_features=self.out_features,
            attention_fn=attention_fn,
            dropout_rate=self.dropout_rate,
            broadcast_dropout=self.broadcast_dropout,
            deterministic=self.deterministic,
            decode=self.decode,
            normalize_qk=self.normalize_qk,
            name="attention",
            **dense,
        )(
            inputs_q,
            inputs_k,
            inputs_v,
            mask=mask,
            deterministic=deterministic,
            dropout_rng=dropout_rng,
            sow_weights=sow_weights,
        )
