"""Hadamard adapters as Linen modules, with the names and arguments of the NNX ones.

Each module owns its frozen base ``kernel`` and ``bias`` in ``"params"`` (as ``nn.Dense``, the
input size inferred) and its adapter parameters in the ``"adapters"`` collection
(:data:`ADAPTERS`): differentiate ``variables["adapters"]`` only to train the adapters.
:func:`merge_adapter` returns the variables of a plain ``nn.Dense`` with equal outputs. The math
lives in :mod:`hadamard_jax._layers.adapters`, shared with :mod:`hadamard_jax.nnx`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax.typing import Dtype, Initializer, PrecisionLike

from hadamard_jax._layers import adapters as A
from hadamard_jax._layers import options
from hadamard_jax._layers.adapters import ADAPTERS
from hadamard_jax._src.hadamard import hadamard


class _Dense(nn.Module):
    """The shared fields and the base ``kernel``/``bias`` of the adapter layers."""

    out_features: int
    use_bias: bool = True
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    precision: PrecisionLike = None
    kernel_init: Initializer = options.default_kernel_init
    bias_init: Initializer = options.default_bias_init

    def _base(self, x) -> tuple[jax.Array, jax.Array | None]:
        n_in = jnp.shape(x)[-1]
        kernel = self.param("kernel", self.kernel_init, (n_in, self.out_features), self.param_dtype)
        bias = (
            self.param("bias", self.bias_init, (self.out_features,), self.param_dtype)
            if self.use_bias
            else None
        )
        return kernel, bias

    def _adapters(self, make) -> dict:
        """The adapter variables, created by ``make() -> dict`` at init."""
        names = self._names
        if not all(self.has_variable(ADAPTERS, n) for n in names):
            made = make()
            return {n: self.variable(ADAPTERS, n, lambda n=n: made[n]).value for n in names}
        return {n: self.variable(ADAPTERS, n).value for n in names}

    _names: ClassVar[tuple[str, ...]] = ()

    def _linear(self, x, kernel, bias):
        return A.linear(x, kernel, bias, dtype=self.dtype, precision=self.precision)


class LoHaLinear(_Dense):
    """Linen :class:`hadamard_jax.nnx.LoHaLinear`: ``x W + b + s x ((A1 B1) * (A2 B2))``.

    Attributes:
      out_features, rank, alpha, rank2, init_weights, abba_scaling, use_bias, dtype,
        param_dtype, precision, kernel_init, bias_init: as the NNX layer.

    Example::

      >>> import jax, jax.numpy as jnp
      >>> from hadamard_jax.linen import LoHaLinear
      >>> variables = LoHaLinear(4, rank=2).init(jax.random.key(0), jnp.ones((3, 8)))
      >>> sorted(variables["adapters"]), variables["adapters"]["a2"].shape
      (['a1', 'a2', 'b1', 'b2'], (8, 2))
    """

    rank: int = 8
    alpha: float | None = None
    rank2: int | None = None
    init_weights: bool | str = True
    abba_scaling: bool | None = None
    _names = ("a1", "b1", "a2", "b2")

    def __post_init__(self) -> None:
        A.check_common("LoHaLinear", None, self.out_features, self.rank, self.alpha)
        A.check_common("LoHaLinear", None, 1, self.rank2, None)
        A.check_init("LoHaLinear", "init_weights", self.init_weights, A.LOHA_INITS)
        super().__post_init__()

    @property
    def scale(self) -> float:
        r2 = self.rank if self.rank2 is None else self.rank2
        abba = self.init_weights == "abba" if self.abba_scaling is None else self.abba_scaling
        return A.loha_scale(self.alpha, self.rank, r2, bool(abba))

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel, bias = self._base(x)
        r2 = self.rank if self.rank2 is None else self.rank2
        p = self._adapters(
            lambda: A.loha_params(
                self.make_rng("params"),
                kernel,
                self.rank,
                r2,
                self.init_weights,
                self.param_dtype,
            )  # fmt: skip
        )
        update = A.loha_update(x, p, self.scale, dtype=self.dtype, precision=self.precision)
        return self._linear(x, kernel, bias) + update


class HiRALinear(_Dense):
    """Linen :class:`hadamard_jax.nnx.HiRALinear`: ``x W + b + s x (W * (A B))``.

    Attributes:
      out_features, rank, alpha, init_hira_weights, use_bias, dtype, param_dtype, precision,
        kernel_init, bias_init: as the NNX layer.

    Example::

      >>> import jax, jax.numpy as jnp
      >>> from hadamard_jax.linen import HiRALinear
      >>> layer = HiRALinear(4, rank=2)
      >>> variables = layer.init(jax.random.key(0), jnp.ones((3, 8)))
      >>> layer.apply(variables, jnp.ones((3, 8))).shape
      (3, 4)
    """

    rank: int = 8
    alpha: float | None = None
    init_hira_weights: bool | str = True
    _names = ("a", "b")

    def __post_init__(self) -> None:
        A.check_common("HiRALinear", None, self.out_features, self.rank, self.alpha)
        A.check_init(
            "HiRALinear", "init_hira_weights", self.init_hira_weights, (True, False, "gaussian")
        )
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel, bias = self._base(x)
        p = self._adapters(
            lambda: A.low_rank_params(
                self.make_rng("params"),
                kernel.shape[0],
                self.out_features,
                self.rank,
                self.init_hira_weights,
                self.param_dtype,
            )  # fmt: skip
        )
        scale = A.lora_scale(self.alpha, self.rank)
        update = A.hira_update(x, kernel, p, scale, dtype=self.dtype, precision=self.precision)
        return self._linear(x, kernel, bias) + update


class DoRALinear(_Dense):
    """Linen :class:`hadamard_jax.nnx.DoRALinear`: ``x (m * V / ||V||_col) + b``.

    Attributes:
      out_features, rank, alpha, use_rslora, init_lora_weights, detach_norm, use_bias, dtype,
        param_dtype, precision, kernel_init, bias_init: as the NNX layer.

    Example::

      >>> import jax, jax.numpy as jnp
      >>> from hadamard_jax.linen import DoRALinear
      >>> variables = DoRALinear(4, rank=2).init(jax.random.key(0), jnp.ones((3, 8)))
      >>> sorted(variables["adapters"])
      ['lora_a', 'lora_b', 'magnitude']
    """

    rank: int = 8
    alpha: float | None = None
    use_rslora: bool = False
    init_lora_weights: bool | str = True
    detach_norm: bool = True
    _names = ("lora_a", "lora_b", "magnitude")

    def __post_init__(self) -> None:
        A.check_common("DoRALinear", None, self.out_features, self.rank, self.alpha)
        A.check_init(
            "DoRALinear", "init_lora_weights", self.init_lora_weights, (True, False, "gaussian")
        )
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel, bias = self._base(x)
        scale = A.lora_scale(self.alpha, self.rank, bool(self.use_rslora))

        def make():
            p = A.low_rank_params(
                self.make_rng("params"), kernel.shape[0], self.out_features, self.rank,
                self.init_lora_weights, self.param_dtype,
            )  # fmt: skip
            m = A.dora_magnitude(kernel, p, scale).astype(self.param_dtype)
            return {"lora_a": p["a"], "lora_b": p["b"], "magnitude": m}

        v = self._adapters(make)
        p = {"a": v["lora_a"], "b": v["lora_b"], "magnitude": v["magnitude"]}
        return A.dora(
            x, kernel, bias, p, scale, bool(self.detach_norm), dtype=self.dtype,
            precision=self.precision,
        )  # fmt: skip


class IA3(nn.Module):
    """Linen :class:`hadamard_jax.nnx.IA3`: ``x * l``, ``l`` (``ia3_l``, ones) in ``"adapters"``.

    Attributes:
      num_features: the size of the last axis.
      param_dtype: dtype of ``l``.

    Example::

      >>> import jax, jax.numpy as jnp
      >>> from hadamard_jax.linen import IA3
      >>> IA3(3).init(jax.random.key(0), jnp.ones((2, 3)))["adapters"]["ia3_l"]
      Array([1., 1., 1.], dtype=float32)
    """

    num_features: int
    param_dtype: Dtype = jnp.float32

    def __post_init__(self) -> None:
        A.check_common("IA3", None, self.num_features, None, None)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        A.check_features("IA3", x, self.num_features)
        l = self.variable(
            ADAPTERS, "ia3_l", lambda: jnp.ones((self.num_features,), self.param_dtype)
        ).value
        return hadamard(x, l, broadcast=True)


class IA3Linear(_Dense):
    """Linen :class:`hadamard_jax.nnx.IA3Linear`: ``(x W + b) * l`` or ``(x * l) W + b``.

    Attributes:
      out_features, feedforward, use_bias, dtype, param_dtype, precision, kernel_init,
        bias_init: as the NNX layer.

    Example::

      >>> import jax, jax.numpy as jnp
      >>> from hadamard_jax.linen import IA3Linear
      >>> v = IA3Linear(4, feedforward=True).init(jax.random.key(0), jnp.ones((3, 8)))
      >>> v["adapters"]["ia3_l"].shape
      (8,)
    """

    feedforward: bool = False
    _names = ("ia3_l",)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel, bias = self._base(x)
        size = kernel.shape[0] if self.feedforward else self.out_features
        l = self._adapters(lambda: {"ia3_l": jnp.ones((size,), self.param_dtype)})["ia3_l"]
        if self.feedforward:
            return self._linear(hadamard(x, l, broadcast=True), kernel, bias)
        return hadamard(self._linear(x, kernel, bias), l, broadcast=True)


def merge_adapter(module: nn.Module, variables: Any) -> dict:
    """The variables of a plain ``nn.Dense`` equal to an adapter layer (the update folded in).

    Args:
      module: a :class:`LoHaLinear`, :class:`HiRALinear`, :class:`DoRALinear` or
        :class:`IA3Linear`.
      variables: its variables (``{"params": {kernel, bias}, "adapters": {...}}``).

    Returns:
      ``{"params": {"kernel": ..., "bias": ...}}`` for ``nn.Dense(module.out_features,
      use_bias=module.use_bias)``.

    Example::

      >>> import jax, jax.numpy as jnp
      >>> from flax import linen as nn
      >>> from hadamard_jax.linen import LoHaLinear, merge_adapter
      >>> layer, x = LoHaLinear(4, rank=2, init_weights=False), jnp.ones((3, 8))
      >>> variables = layer.init(jax.random.key(0), x)
      >>> dense = nn.Dense(4).apply(merge_adapter(layer, variables), x)
      >>> bool(jnp.allclose(dense, layer.apply(variables, x), atol=1e-5))
      True
    """
    if not isinstance(module, (LoHaLinear, HiRALinear, DoRALinear, IA3Linear)):
        raise TypeError(
            f"merge_adapter: module must be an adapter layer, got {type(module).__name__}."
        )
    params, adapters = variables["params"], variables[ADAPTERS]
    kernel, bias = params["kernel"], params.get("bias")
    if isinstance(module, LoHaLinear):
        kernel = A.loha_merged(kernel, adapters, module.scale)
    elif isinstance(module, HiRALinear):
        kernel = A.hira_merged(kernel, adapters, A.lora_scale(module.alpha, module.rank))
    elif isinstance(module, DoRALinear):
        p = {"a": adapters["lora_a"], "b": adapters["lora_b"], "magnitude": adapters["magnitude"]}
        scale = A.lora_scale(module.alpha, module.rank, bool(module.use_rslora))
        kernel = A.dora_merged(kernel, p, scale)
    else:
        kernel, bias = A.ia3_merged(kernel, bias, adapters["ia3_l"], module.feedforward)
    out = {"kernel": kernel}
    if bias is not None:
        out["bias"] = bias
    return {"params": out}
