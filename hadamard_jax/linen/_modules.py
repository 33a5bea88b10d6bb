"""The Linen modules: the :mod:`hadamard_jax.nnx` modules as Linen dataclasses.

Same names, arguments and parameter names as the NNX modules, except that input sizes
(``in_features``, the context size) are inferred from the inputs, as in ``nn.Dense``, and
``rngs`` are given to ``init``/``apply``. Both front ends check their arguments with the same
functions (:mod:`hadamard_jax._layers.options`; Linen in ``__post_init__``, i.e. when the module
is constructed) and compute through the same pure functions
(:mod:`hadamard_jax._layers.functional`), so equal parameters give equal outputs. Masks live in
the ``"masks"`` collection, not in ``"params"``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax.typing import Dtype, Initializer, PrecisionLike

from hadamard_jax._layers import functional as F
from hadamard_jax._layers import options
from hadamard_jax._layers.adapters import ADAPTERS
from hadamard_jax.linen._masks import _fixed_mask


class GLU(nn.Module):
    """A linear projection to a gated output, ``act(x W_g + b_g) * (x W_v + b_v)``.

    The Linen counterpart of :class:`hadamard_jax.nnx.GLU` (the input size is inferred).

    Attributes:
      out_features: size of the gated output ``n``.
      activation: the gate: ``"swiglu"`` (default), ``"geglu"``, ``"reglu"``, ``"glu"``
        (sigmoid) or ``"bilinear"``.
      approximate: tanh-approximate GELU (``activation="geglu"`` only).
      fused_kernel: one ``kernel`` ``[in, 2n]`` (value columns, then gate columns: the
        ``jax.nn.glu`` layout) and ``bias`` ``[2n]`` (default), or ``gate_kernel`` and
        ``value_kernel`` ``[in, n]`` with ``gate_bias``/``value_bias`` ``[n]``.
      use_bias: add biases to the projections.
      dtype: computation dtype (default: inferred from inputs and params).
      param_dtype: parameter dtype.
      precision: ``jax.lax.Precision`` of the matmul.
      kernel_init, bias_init: initializers (wrap with ``nn.with_partitioning`` to shard).

    Example::

      >>> import jax, jax.numpy as jnp
      >>> from hadamard_jax.linen import GLU
      >>> layer = GLU(3, activation="geglu")
      >>> variables = layer.init(jax.random.key(0), jnp.ones((2, 4)))
      >>> variables["params"]["kernel"].shape, layer.apply(variables, jnp.ones((2, 4))).shape
      ((4, 6), (2, 3))
    """

    out_features: int
    activation: str = "swiglu"
    approximate: bool = False
    fused_kernel: bool = True
    use_bias: bool = True
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    precision: PrecisionLike = None
    kernel_init: Initializer = options.default_kernel_init
    bias_init: Initializer = options.default_bias_init

    def __post_init__(self) -> None:
        options.check_glu(
            out_features=self.out_features,
            activation=self.activation,
            approximate=self.approximate,
            fused_kernel=self.fused_kernel,
            use_bias=self.use_bias,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=self.kernel_init,
            bias_init=self.bias_init,
        )
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """``[..., in] -> [..., out_features]``."""
        d, n, pd = jnp.shape(x)[-1], self.out_features, self.param_dtype
        if self.fused_kernel:
            params = {
                "kernel": self.param("kernel", self.kernel_init, (d, 2 * n), pd),
                "bias": self.param("bias", self.bias_init, (2 * n,), pd) if self.use_bias else None,
            }
        else:
            params = {
                "gate_kernel": self.param("gate_kernel", self.kernel_init, (d, n), pd),
                "value_kernel": self.param("value_kernel", self.kernel_init, (d, n), pd),
            }
            if self.use_bias:
                params["gate_bias"] = self.param("gate_bias", self.bias_init, (n,), pd)
                params["value_bias"] = self.param("value_bias", self.bias_init, (n,), pd)
        return F.glu(
            x,
            params,
            activation=self.activation,
            approximate=self.approximate,
            dtype=self.dtype,
            precision=self.precision,
        )


class GatedMLP(nn.Module):
    """The gated feed-forward block ``down(act(x W_gate) * (x W_up))`` on the fused
    :func:`hadamard_jax.gated_mlp` op (SwiGLU, GeGLU, ...).

    The Linen counterpart of :class:`hadamard_jax.nnx.GatedMLP` (the input size ``d`` is
    inferred). Parameters: ``gate_kernel``/``up_kernel`` ``[d, h]``, ``down_kernel``
    ``[h, out]`` and, with ``use_bias``, ``gate_bias``, ``up_bias`` ``[h]``, ``down_bias``
    ``[out]``.

    Attributes:
      hidden_features: hidden size ``h``.
      out_features: output size (default: the input size ``d``).
      activation: ``"swiglu"`` (default), ``"geglu"``, ``"reglu"``, ``"glu"``, ``"bilinear"``.
      approximate: tanh-approximate GELU (``activation="geglu"`` only).
      use_bias: biases on the three projections.
      dropout_rate: dropout probability on the hidden layer ``act(g) * u`` (a boolean
        keep-mask passed into the fused op, scaled by ``1 / (1 - rate)``).
      deterministic: disable dropout (``None``: decided by the call argument, else ``False``).
      masked: give each kernel a fixed boolean mask (``masks/gate_mask``, ``up_mask``,
        ``down_mask``, all ones at first, with the kernel's partitioning) that :func:`prune`
        sets; masked weights are exactly zero and get zero gradient.
      ia3: add (IA)^3's learned scale of the hidden layer, ``ia3_l`` ``[hidden]`` (ones at
        init) in the ``"adapters"`` collection as the adapter layers keep theirs
        (:class:`hadamard_jax.nnx.GatedMLP`).
      dtype, param_dtype, precision, kernel_init, bias_init: as ``nn.Dense``.
      down_kernel_init: initializer of ``down_kernel`` (default ``kernel_init``), e.g. with
        the transposed partitioning for tensor parallelism.
      rng_collection: the rng of ``apply`` that dropout draws from (``"dropout"``).

    Example::

      >>> import jax, jax.numpy as jnp
      >>> from hadamard_jax.linen import GatedMLP
      >>> mlp = GatedMLP(32)
      >>> variables = mlp.init(jax.random.key(0), jnp.ones((4, 8)))
      >>> mlp.apply(variables, jnp.ones((4, 8))).shape
      (4, 8)
    """

    hidden_features: int
    out_features: int | None = None
    activation: str = "swiglu"
    approximate: bool = False
    use_bias: bool = True
    dropout_rate: float = 0.0
    deterministic: bool | None = None
    masked: bool = False
    ia3: bool = False
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    precision: PrecisionLike = None
    kernel_init: Initializer = options.default_kernel_init
    bias_init: Initializer = options.default_bias_init
    down_kernel_init: Initializer | None = None
    rng_collection: str = "dropout"

    def __post_init__(self) -> None:
        options.check_gated_mlp(
            hidden_features=self.hidden_features,
            out_features=self.out_features,
            activation=self.activation,
            approximate=self.approximate,
            use_bias=self.use_bias,
            dropout_rate=self.dropout_rate,
            deterministic=self.deterministic,
            masked=self.masked,
            ia3=self.ia3,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=self.kernel_init,
            bias_init=self.bias_init,
            down_kernel_init=self.down_kernel_init,
            rng_collection=self.rng_collection,
        )
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, *, deterministic: bool | None = None) -> jax.Array:
        """``[..., in] -> [..., out_features or in]``."""
        d, h, pd = jnp.shape(x)[-1], self.hidden_features, self.param_dtype
        o = d if self.out_features is None else self.out_features
        down_init = options.first(self.down_kernel_init, self.kernel_init)
        params = {
            "gate_kernel": self.param("gate_kernel", self.kernel_init, (d, h), pd),
            "up_kernel": self.param("up_kernel", self.kernel_init, (d, h), pd),
            "down_kernel": self.param("down_kernel", down_init, (h, o), pd),
        }
        if self.use_bias:
            params["gate_bias"] = self.param("gate_bias", self.bias_init, (h,), pd)
            params["up_bias"] = self.param("up_bias", self.bias_init, (h,), pd)
            params["down_bias"] = self.param("down_bias", self.bias_init, (o,), pd)
        if self.ia3:
            params["ia3_l"] = self.variable(ADAPTERS, "ia3_l", jnp.ones, (h,), pd).value
        masks = None
        if self.masked:
            masks = {
                f"{name}_mask": _fixed_mask(
                    self,
                    f"{name}_mask",
                    f"{name}_kernel",
                    options.default_mask_init,
                    params[f"{name}_kernel"].shape,
                )
                for name in ("gate", "up", "down")
            }
        deterministic = options.deterministic_of(deterministic, self.deterministic, "GatedMLP")
        key = None
        if self.dropout_rate > 0 and not deterministic:
            key = self.make_rng(self.rng_collection)
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


class Highway(nn.Module):
    """A highway layer (Srivastava et al. 2015): ``y = T(x) * H(x) + (1 - T(x)) * x``.

    ``H(x) = activation(x W_H + b_H)`` (params ``kernel``, ``bias``) and the transform gate
    ``T(x) = sigmoid(x W_T + b_T)`` (``gate_kernel``, ``gate_bias``), combined by
    :func:`hadamard_jax.highway`. The Linen counterpart of :class:`hadamard_jax.nnx.Highway`.

    Attributes:
      features: input and output size.
      activation: the transform's activation (default ``jax.nn.relu``).
      use_bias: bias ``b_H`` on the transform (the gate always has its bias).
      gate_bias_init: initializer of ``b_T`` (default ``constant(-2.0)``: the layer starts
        close to the identity).
      dtype, param_dtype, precision, kernel_init, bias_init: as ``nn.Dense``.

    Example::

      >>> import jax, jax.numpy as jnp
      >>> from hadamard_jax.linen import Highway
      >>> variables = Highway(4).init(jax.random.key(0), jnp.ones((2, 4)))
      >>> float(variables["params"]["gate_bias"][0])
      -2.0
    """

    features: int
    activation: Callable[[jax.Array], jax.Array] = jax.nn.relu
    use_bias: bool = True
    gate_bias_init: Initializer = options.default_gate_bias_init
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    precision: PrecisionLike = None
    kernel_init: Initializer = options.default_kernel_init
    bias_init: Initializer = options.default_bias_init

    def __post_init__(self) -> None:
        options.check_highway(
            features=self.features,
            activation=self.activation,
            use_bias=self.use_bias,
            gate_bias_init=self.gate_bias_init,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=self.kernel_init,
            bias_init=self.bias_init,
        )
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """``[..., features] -> [..., features]``."""
        F.check_features("Highway", x, self.features)
        f, pd = self.features, self.param_dtype
        params = {
            "kernel": self.param("kernel", self.kernel_init, (f, f), pd),
            "bias": self.param("bias", self.bias_init, (f,), pd) if self.use_bias else None,
            "gate_kernel": self.param("gate_kernel", self.kernel_init, (f, f), pd),
            "gate_bias": self.param("gate_bias", self.gate_bias_init, (f,), pd),
        }
        return F.highway(
            x, params, activation=self.activation, dtype=self.dtype, precision=self.precision
        )


class GatedResidual(nn.Module):
    r"""The gated residual network of the Temporal Fusion Transformer (Lim et al. 2021).

    ``GRN(a, c) = LayerNorm(skip(a) + GLU(W_1 ELU(W_2 a + W_3 c + b_2) + b_1))`` with dropout
    before the GLU (``activation="glu"``, two kernels) and ``skip(a) = a`` when the output size
    equals the input size (a projection otherwise). The Linen counterpart of
    :class:`hadamard_jax.nnx.GatedResidual`; submodules ``hidden`` (W_2), ``context`` (W_3),
    ``output`` (W_1), ``dropout``, ``glu``, ``skip``, ``norm``.

    Attributes:
      hidden_features: size of the hidden layers.
      out_features: output size (default: the input size).
      context_features: size of the optional context ``c`` (checked when given).
      dropout_rate: dropout before the GLU (rng ``"dropout"``).
      deterministic: disable dropout (``None``: decided by the call argument, else ``False``).
      use_bias: biases on the projections.
      epsilon: LayerNorm epsilon.
      dtype, param_dtype, precision, kernel_init, bias_init: as ``nn.Dense``.

    Example::

      >>> import jax, jax.numpy as jnp
      >>> from hadamard_jax.linen import GatedResidual
      >>> grn = GatedResidual(16, 6)
      >>> a, c = jnp.ones((2, 4)), jnp.ones((2, 3))
      >>> variables = grn.init(jax.random.key(0), a, c)
      >>> grn.apply(variables, a, c).shape
      (2, 6)
    """

    hidden_features: int
    out_features: int | None = None
    context_features: int | None = None
    dropout_rate: float = 0.0
    deterministic: bool | None = None
    use_bias: bool = True
    epsilon: float = 1e-6
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    precision: PrecisionLike = None
    kernel_init: Initializer = options.default_kernel_init
    bias_init: Initializer = options.default_bias_init

    def __post_init__(self) -> None:
        options.check_gated_residual(
            hidden_features=self.hidden_features,
            out_features=self.out_features,
            context_features=self.context_features,
            dropout_rate=self.dropout_rate,
            deterministic=self.deterministic,
            use_bias=self.use_bias,
            epsilon=self.epsilon,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=self.kernel_init,
            bias_init=self.bias_init,
        )
        super().__post_init__()

    @nn.compact
    def __call__(
        self, a: jax.Array, context: jax.Array | None = None, *, deterministic: bool | None = None
    ) -> jax.Array:
        """``a: [..., in]``, ``context: [..., context_features]`` -> ``[..., out]``."""
        d = jnp.shape(a)[-1]
        o = d if self.out_features is None else self.out_features
        common: dict[str, Any] = dict(
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            precision=self.precision,
            kernel_init=self.kernel_init,
        )
        dense: dict[str, Any] = dict(use_bias=self.use_bias, bias_init=self.bias_init, **common)
        eta = nn.Dense(self.hidden_features, name="hidden", **dense)(a)
        if context is not None:
            F.check_features("GatedResidual (context)", context, self.context_features)
            eta = eta + nn.Dense(self.hidden_features, use_bias=False, name="context", **common)(
                context
            )
        eta = nn.Dense(self.hidden_features, name="output", **dense)(jax.nn.elu(eta))
        deterministic = options.deterministic_of(deterministic, self.deterministic, "GatedResidual")
        eta = nn.Dropout(self.dropout_rate, name="dropout")(eta, deterministic=deterministic)
        gated = GLU(o, activation="glu", fused_kernel=False, name="glu", **dense)(eta)
        skip = a if d == o else nn.Dense(o, name="skip", **dense)(a)
        norm = nn.LayerNorm(
            epsilon=self.epsilon, dtype=self.dtype, param_dtype=self.param_dtype, name="norm"
        )
        return norm(skip + gated)
