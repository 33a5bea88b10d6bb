"""``GatedMLP``: the transformer feed-forward block on the fused :func:`hadamard_jax.gated_mlp`."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from flax.typing import Dtype, Initializer, PrecisionLike

from hadamard_jax._layers import functional as F
from hadamard_jax._layers import options
from hadamard_jax.nnx import _common as C
from hadamard_jax.nnx._adapters import AdapterParam
from hadamard_jax.nnx._common import MaskVar


class GatedMLP(nnx.Module):
    r"""The gated feed-forward block ``down(act(x W_gate) * (x W_up))`` (SwiGLU, GeGLU, ...).

    Runs on the fused :func:`hadamard_jax.gated_mlp` op, whose derivative rule keeps only
    ``x``, ``x W_gate`` and ``x W_up`` for the backward pass: in a scan over layers it uses
    less memory than the same block built from ``nnx.Linear`` and no more than
    ``jax.checkpoint(policy=dots_saveable)``.

    Dropout (``dropout_rate > 0`` and not ``deterministic``) is applied to the hidden layer
    ``act(g) * u`` as a boolean keep-mask passed into the fused op (scaled by ``1 / keep``); the
    key comes from the ``rng_collection`` stream (``"dropout"``) as in ``nnx.Dropout``.

    Args:
      in_features: size of the last input axis ``d``.
      hidden_features: hidden size ``h``.
      out_features: output size (default ``in_features``).
      activation: ``"swiglu"`` (default), ``"geglu"``, ``"reglu"``, ``"glu"``, ``"bilinear"``.
      approximate: tanh-approximate GELU (``activation="geglu"`` only).
      use_bias: biases on the three projections.
      dropout_rate: dropout probability on the hidden layer.
      deterministic: disable dropout (``model.eval()`` sets it; the call argument wins).
      masked: give each kernel a fixed boolean mask (``gate_mask``, ``up_mask``,
        ``down_mask``, :class:`MaskVar`, all ones at first) that :func:`prune` sets; masked
        weights are exactly zero (select semantics) and get zero gradient.
      ia3: add (IA)^3's learned scale of the hidden layer (Liu et al. 2022; peft's
        ``tuners/ia3`` with ``is_feedforward=True`` on the down projection): ``ia3_l``
        ``[hidden]``, an :class:`~hadamard_jax.nnx.AdapterParam` initialised to ones (the block
        is unchanged at init), so ``nnx.Optimizer(mlp, tx, wrt=AdapterParam)`` trains it
        alone; ``h = act(g) * u * l``, fused into the op (its rule keeps no more residuals).
      dtype, param_dtype, precision, kernel_init, bias_init: as ``nnx.Linear``.
      down_kernel_init: initializer of ``down_kernel`` (default ``kernel_init``), e.g. with the
        transposed partitioning of the gate/up kernels (``("model", None)`` vs
        ``(None, "model")``) for tensor parallelism.
      rng_collection: the rng stream for dropout.
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
        options.check_gated_mlp(
            in_features=in_features,
            hidden_features=hidden_features,
            out_features=out_features,
            activation=activation,
            approximate=approximate,
            use_bias=use_bias,
            dropout_rate=dropout_rate,
            deterministic=deterministic,
            masked=masked,
            ia3=ia3,
            dtype=dtype,
            param_dtype=param_dtype,
            kernel_init=kernel_init,
            bias_init=bias_init,
            down_kernel_init=down_kernel_init,
            rng_collection=rng_collection,
        )
        out_features = in_features if out_features is None else out_features
        self.in_features, self.hidden_features = in_features, hidden_features
        self.out_features = out_features
        self.activation, self.approximate, self.use_bias = activation, approximate, use_bias
        self.dropout_rate, self.deterministic = dropout_rate, deterministic
        self.dtype, self.param_dtype, self.precision = dtype, param_dtype, precision
        self.rng_collection = rng_collection
        d, h, o = in_features, hidden_features, out_features
        self.gate_kernel = C.param(kernel_init, rngs.params(), (d, h), param_dtype)
        self.up_kernel = C.param(kernel_init, rngs.params(), (d, h), param_dtype)
        self.down_kernel = C.param(
            options.first(down_kernel_init, kernel_init), rngs.params(), (h, o), param_dtype
        )
        if use_bias:
            self.gate_bias = C.param(bias_init, rngs.params(), (h,), param_dtype)
            self.up_bias = C.param(bias_init, rngs.params(), (h,), param_dtype)
            self.down_bias = C.param(bias_init, rngs.params(), (o,), param_dtype)
        else:
            self.gate_bias = self.up_bias = self.down_bias = nnx.data(None)
        self.rngs = C.rng_stream(rngs, rng_collection) if dropout_rate > 0 else nnx.data(None)
        self.ia3 = ia3
        self.ia3_l = AdapterParam(jnp.ones((h,), param_dtype)) if ia3 else nnx.data(None)
        self.masked = masked
        if masked:
            for name in ("gate", "up", "down"):
                kernel = getattr(self, f"{name}_kernel")
                setattr(
                    self,
                    f"{name}_mask",
                    MaskVar(jnp.ones(kernel.shape, jnp.bool_), **C.sharding_metadata(kernel)),
                )

    def __call__(
        self, x: jax.Array, *, deterministic: bool | None = None, rngs: Any = None
    ) -> jax.Array:
        """``[..., in_features] -> [..., out_features]``."""
        F.check_features("GatedMLP", x, self.in_features)
        names = ("gate_kernel", "up_kernel", "down_kernel", "gate_bias", "up_bias", "down_bias")
        params = {k: C.value(getattr(self, k)) for k in (*names, "ia3_l")}
        masks = None
        if self.masked:
            masks = {k: getattr(self, k)[...] for k in ("gate_mask", "up_mask", "down_mask")}
        deterministic = options.deterministic_of(deterministic, self.deterministic, "GatedMLP")
        key = None
        if self.dropout_rate > 0 and not deterministic:
            key = C.draw_key("GatedMLP", rngs, self.rngs, self.rng_collection)
        return F.gated_mlp(
            x,
            params,
            masks,
            activation=self.activation,
            approximate=self.approximate,
            dtype=self.dtype,
            precision=self.precision,
            dropout_rate=self.dropout_rate,
            dropout_key=key,
        )
