"""The Linen modules: the :mod:`hadamard_jax.nnx` modules as Linen dataclasses.

Same names, arguments and parameter names as the NNX modules, except that input sizes
(``in_features``, the context size) are inferred from the inputs, as in ``nn.Dense``, and
``rngs`` are given to ``init``/``apply``. Both compute through the same pure functions
(:mod:`hadamard_jax.nnx._functional`), so equal parameters give equal outputs. Masks live in
the ``"masks"`` collection, not in ``"params"``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax.core import meta

import hadamard_jax as hj
from hadamard_jax.nnx import _common as C
from hadamard_jax.nnx import _functional as F
from hadamard_jax.nnx._masked_linear import check_mask_options, ste_mask

default_kernel_init = nn.initializers.lecun_normal()
default_bias_init = nn.initializers.zeros_init()
default_gate_bias_init = nn.initializers.constant(-2.0)
default_log_alpha_init = nn.initializers.constant(3.0)

MASKS = "masks"


class GLU(nn.Module):
    """A linear projection to a gated output; see :class:`hadamard_jax.nnx.GLU`.

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
    dtype: Any = None
    param_dtype: Any = jnp.float32
    precision: Any = None
    kernel_init: Callable = default_kernel_init
    bias_init: Callable = default_bias_init

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """``[..., in] -> [..., out_features]``."""
        F.check_gate("GLU", self.activation, self.approximate)
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
    """The gated feed-forward block on the fused op; see :class:`hadamard_jax.nnx.GatedMLP`.

    Dropout draws from the ``rng_collection`` (``"dropout"``) rng of ``apply``.

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
    dtype: Any = None
    param_dtype: Any = jnp.float32
    precision: Any = None
    kernel_init: Callable = default_kernel_init
    bias_init: Callable = default_bias_init
    down_kernel_init: Callable | None = None
    rng_collection: str = "dropout"

    @nn.compact
    def __call__(self, x: jax.Array, *, deterministic: bool | None = None) -> jax.Array:
        """``[..., in] -> [..., out_features or in]``."""
        F.check_gate("GatedMLP", self.activation, self.approximate)
        F.check_rate("GatedMLP", "dropout_rate", self.dropout_rate)
        d, h, pd = jnp.shape(x)[-1], self.hidden_features, self.param_dtype
        o = d if self.out_features is None else self.out_features
        params = {
            "gate_kernel": self.param("gate_kernel", self.kernel_init, (d, h), pd),
            "up_kernel": self.param("up_kernel", self.kernel_init, (d, h), pd),
            "down_kernel": self.param(
                "down_kernel", self.down_kernel_init or self.kernel_init, (h, o), pd
            ),
        }
        if self.use_bias:
            params["gate_bias"] = self.param("gate_bias", self.bias_init, (h,), pd)
            params["up_bias"] = self.param("up_bias", self.bias_init, (h,), pd)
            params["down_bias"] = self.param("down_bias", self.bias_init, (o,), pd)
        if self.masked:
            for name in ("gate", "up", "down"):
                mask = _fixed_mask(
                    self,
                    f"{name}_mask",
                    f"{name}_kernel",
                    nn.initializers.ones_init(),
                    params[f"{name}_kernel"].shape,
                )
                params[f"{name}_kernel"] = F.masked_kernel(params[f"{name}_kernel"], mask)
        deterministic = C.first(deterministic, self.deterministic, False)
        keep_mask, keep = None, 1.0
        if self.dropout_rate > 0 and not deterministic:
            keep = 1.0 - self.dropout_rate
            shape = tuple(x.shape[:-1]) + (h,)
            keep_mask = F.dropout_keep_mask(
                self.make_rng(self.rng_collection), self.dropout_rate, shape
            )
        return F.gated_mlp(
            x,
            params,
            activation=self.activation,
            approximate=self.approximate,
            dtype=self.dtype,
            precision=self.precision,
            keep_mask=keep_mask,
            keep_prob=keep,
        )


class Highway(nn.Module):
    """A highway layer; see :class:`hadamard_jax.nnx.Highway`.

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
    gate_bias_init: Callable = default_gate_bias_init
    dtype: Any = None
    param_dtype: Any = jnp.float32
    precision: Any = None
    kernel_init: Callable = default_kernel_init
    bias_init: Callable = default_bias_init

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
    """The TFT gated residual network; see :class:`hadamard_jax.nnx.GatedResidual`.

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
    dtype: Any = None
    param_dtype: Any = jnp.float32
    precision: Any = None
    kernel_init: Callable = default_kernel_init
    bias_init: Callable = default_bias_init

    @nn.compact
    def __call__(
        self, a: jax.Array, context: jax.Array | None = None, *, deterministic: bool | None = None
    ) -> jax.Array:
        """``a: [..., in]``, ``context: [..., context_features]`` -> ``[..., out]``."""
        F.check_rate("GatedResidual", "dropout_rate", self.dropout_rate)
        d = jnp.shape(a)[-1]
        o = d if self.out_features is None else self.out_features
        common = dict(
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            precision=self.precision,
            kernel_init=self.kernel_init,
        )
        dense = dict(use_bias=self.use_bias, bias_init=self.bias_init, **common)
        eta = nn.Dense(self.hidden_features, name="hidden", **dense)(a)
        if context is not None:
            if self.context_features is not None:
                F.check_features("GatedResidual (context)", context, self.context_features)
            eta = eta + nn.Dense(self.hidden_features, use_bias=False, name="context", **common)(
                context
            )
        eta = nn.Dense(self.hidden_features, name="output", **dense)(jax.nn.elu(eta))
        deterministic = C.first(deterministic, self.deterministic, False)
        eta = nn.Dropout(self.dropout_rate, name="dropout")(eta, deterministic=deterministic)
        gated = GLU(o, activation="glu", fused_kernel=False, name="glu", **dense)(eta)
        skip = a if d == o else nn.Dense(o, name="skip", **dense)(a)
        norm = nn.LayerNorm(
            epsilon=self.epsilon, dtype=self.dtype, param_dtype=self.param_dtype, name="norm"
        )
        return norm(skip + gated)


class Mask(nn.Module):
    """A fixed mask in the ``"masks"`` collection; see :class:`hadamard_jax.nnx.Mask`.

    Example::

      >>> import jax, jax.numpy as jnp
      >>> from hadamard_jax.linen import Mask
      >>> m = Mask((3,), mask_init=jax.nn.initializers.constant(jnp.array([1, 0, 1], bool)))
      >>> variables = m.init(jax.random.key(0), jnp.ones((2, 3)))
      >>> m.apply(variables, jnp.ones((2, 3)))
      Array([[1., 0., 1.],
             [1., 0., 1.]], dtype=float32)
    """

    shape: tuple[int, ...]
    mask_init: Callable = nn.initializers.ones_init()
    fill: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """``x`` with masked entries replaced by ``fill``."""
        mask = self.variable(
            MASKS, "mask", lambda: self.mask_init(_init_key(self), tuple(self.shape), jnp.bool_)
        ).value
        return hj.apply_mask(x, mask, fill=self.fill)


def _fixed_mask(
    module: nn.Module, name: str, kernel_name: str, init: Callable, shape: tuple[int, ...]
) -> jax.Array:
    """The boolean mask variable ``masks/name`` of a kernel, with the kernel's partitioning."""
    boxed = module.get_variable("params", kernel_name)

    def init_mask():
        mask = init(_init_key(module), shape, jnp.bool_)
        if isinstance(boxed, meta.AxisMetadata) and not isinstance(mask, meta.AxisMetadata):
            mask = boxed.replace_boxed(mask)
        return mask

    return module.variable(MASKS, name, init_mask).value


def _init_key(module: nn.Module) -> jax.Array:
    return module.make_rng("params") if module.has_rng("params") else jax.random.key(0)


class HardConcreteGate(nn.Module):
    """Learned hard-concrete gates; see :class:`hadamard_jax.nnx.HardConcreteGate`.

    Sampling draws from the ``rng_collection`` (``"hard_concrete"``) rng of ``apply``.

    Example::

      >>> import jax, jax.numpy as jnp
      >>> from hadamard_jax.linen import HardConcreteGate
      >>> gate = HardConcreteGate((4,), deterministic=True)
      >>> variables = gate.init(jax.random.key(0), jnp.ones((2, 4)))
      >>> round(float(gate.apply(variables, method="l0_penalty")), 3)
      3.96
    """

    shape: tuple[int, ...]
    beta: float = 2.0 / 3.0
    gamma: float = -0.1
    zeta: float = 1.1
    log_alpha_init: Callable = default_log_alpha_init
    deterministic: bool | None = None
    param_dtype: Any = jnp.float32
    rng_collection: str = "hard_concrete"

    def setup(self):
        self.log_alpha = self.param(
            "log_alpha", self.log_alpha_init, tuple(self.shape), self.param_dtype
        )

    def gate(self, *, deterministic: bool | None = None) -> jax.Array:
        """The gate values ``z``, of ``shape``."""
        deterministic = bool(C.first(deterministic, self.deterministic, False))
        key = None if deterministic else self.make_rng(self.rng_collection)
        return hj.hard_concrete(
            key,
            self.log_alpha,
            beta=self.beta,
            gamma=self.gamma,
            zeta=self.zeta,
            deterministic=deterministic,
        )

    def __call__(self, x: jax.Array, *, deterministic: bool | None = None) -> jax.Array:
        """``x * z`` (``z`` broadcast to ``x``'s shape)."""
        z = self.gate(deterministic=deterministic)
        x = jnp.asarray(x)
        return hj.hadamard(x, z.astype(x.dtype), broadcast=True)

    def l0_penalty(self) -> jax.Array:
        """The expected number of non-zero gates."""
        return hj.l0_penalty(self.log_alpha, beta=self.beta, gamma=self.gamma, zeta=self.zeta)


class MaskedLinear(nn.Module):
    """A linear layer with a fixed, pruned or learned mask; see
    :class:`hadamard_jax.nnx.MaskedLinear`. The fixed mask is ``masks/.../mask`` (it takes the
    kernel's ``nn.with_partitioning`` names); :func:`prune` sets it.

    Example::

      >>> import jax, jax.numpy as jnp
      >>> from hadamard_jax.linen import MaskedLinear, prune, mask_sparsity
      >>> layer = MaskedLinear(4)
      >>> variables = prune(layer.init(jax.random.key(0), jnp.ones((2, 8))), 0.75)
      >>> mask_sparsity(variables), layer.apply(variables, jnp.ones((2, 8))).shape
      (0.75, (2, 4))
    """

    out_features: int
    mask_type: str = "fixed"
    sparsity: float | None = None
    threshold: float | None = None
    use_bias: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32
    precision: Any = None
    kernel_init: Callable = default_kernel_init
    bias_init: Callable = default_bias_init
    mask_init: Callable = nn.initializers.ones_init()
    scores_init: Callable | None = None
    beta: float = 2.0 / 3.0
    gamma: float = -0.1
    zeta: float = 1.1
    log_alpha_init: Callable = default_log_alpha_init
    deterministic: bool | None = None
    rng_collection: str = "hard_concrete"

    @nn.compact
    def __call__(self, x: jax.Array, *, deterministic: bool | None = None) -> jax.Array:
        """``[..., in] -> [..., out_features]``."""
        check_mask_options(self.mask_type, self.sparsity, self.threshold)
        shape, pd = (jnp.shape(x)[-1], self.out_features), self.param_dtype
        kernel = self.param("kernel", self.kernel_init, shape, pd)
        bias = (
            self.param("bias", self.bias_init, (self.out_features,), pd) if self.use_bias else None
        )
        if self.mask_type == "fixed":
            mask = _fixed_mask(self, "mask", "kernel", self.mask_init, shape)
        elif self.mask_type == "ste":
            init = self.scores_init or (lambda key, shape, dtype: jnp.abs(kernel).astype(dtype))
            mask = ste_mask(self.param("scores", init, shape, pd), self.sparsity, self.threshold)
        else:
            gate = HardConcreteGate(
                shape,
                beta=self.beta,
                gamma=self.gamma,
                zeta=self.zeta,
                log_alpha_init=self.log_alpha_init,
                deterministic=self.deterministic,
                param_dtype=pd,
                rng_collection=self.rng_collection,
                name="gate",
            )
            mask = gate.gate(deterministic=deterministic)
        x, kernel, bias = F.promote((x, F.masked_kernel(kernel, mask), bias), self.dtype)
        return F.dense(x, kernel, bias, self.precision)
