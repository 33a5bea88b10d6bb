"""Hadamard adapters as Linen modules, with the names and arguments of the NNX ones.

Each module owns its frozen base ``kernel`` and ``bias`` in ``"params"`` (as ``nn.Dense``, the
input size inferred), or wraps an existing base layer given as ``base_module=`` (an
``nn.Dense`` or a :class:`~hadamard_jax.linen.MaskedLinear`, as NNX's ``base_module=``; its
variables then live under ``"base_module"`` in each collection, a ``MaskedLinear``'s mask
applied to the kernel the adapter sees), and keeps its adapter parameters in the
``"adapters"`` collection (:data:`ADAPTERS`): differentiate ``variables["adapters"]`` only to
train the adapters. :func:`merge_adapter` returns the variables of a plain ``nn.Dense`` with
equal outputs. The math lives in :mod:`hadamard_jax._layers.adapters`, shared with
:mod:`hadamard_jax.nnx`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax.core import meta
from flax.typing import Dtype, Initializer, PrecisionLike

from hadamard_jax._layers import adapters as A
from hadamard_jax._layers import functional as F
from hadamard_jax._layers import options
from hadamard_jax._layers.adapters import ADAPTERS
from hadamard_jax._layers.options import MASKS
from hadamard_jax._src.hadamard import hadamard
from hadamard_jax.linen._masks import MaskedLinear


def _base_out_features(op: str, base: nn.Module | None, out_features: Any) -> int:
    """The output size: ``out_features`` and/or the wrapped base's (which must agree)."""
    if base is None:
        if out_features is None:
            raise ValueError(f"{op}: give out_features, or a base_module to wrap.")
        A.check_common(op, None, out_features, None, None)
        return out_features
    if isinstance(base, MaskedLinear) and base.mask_type in ("fixed", "ste"):
        have = base.out_features
    elif isinstance(base, nn.Dense):
        have = base.features
    else:
        kind = getattr(base, "mask_type", None)
        raise TypeError(
            f"{op}: base_module must be an nn.Dense or a MaskedLinear with mask_type 'fixed' or "
            f"'ste', got {type(base).__name__}" + (f" with mask_type={kind!r}." if kind else ".")
        )
    if out_features is not None and out_features != have:
        raise ValueError(
            f"{op}: out_features={out_features} differs from the base_module's {have}."
        )
    return have


def _base_kernel_bias(base: nn.Module, variables: Any) -> tuple[jax.Array, jax.Array | None]:
    """A wrapped base layer's kernel (its mask applied, as its own forward applies it) and
    bias, from its variables (``{"params": ..., "masks": ...}``)."""
    params = meta.unbox(variables["params"])
    kernel, bias = params["kernel"], params.get("bias")
    if getattr(base, "mask_type", None) == "fixed":
        mask = meta.unbox(variables[MASKS])["mask"]
        kernel = F.masked_kernel(kernel, mask)
    elif getattr(base, "mask_type", None) == "ste":
        mask = F.ste_scores_mask(
            params["scores"],
            sparsity=getattr(base, "sparsity", None),
            threshold=getattr(base, "threshold", None),
        )
        kernel = F.masked_kernel(kernel, mask)
    return kernel, bias


class _Dense(nn.Module):
    """The shared fields and the base ``kernel``/``bias`` of the adapter layers."""

    out_features: int | None = None
    use_bias: bool = True
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    precision: PrecisionLike = None
    kernel_init: Initializer = options.default_kernel_init
    bias_init: Initializer = options.default_bias_init
    base_module: nn.Module | None = None

    @property
    def features(self) -> int:
        """The output size (``out_features``, or the wrapped base's)."""
        return _base_out_features(type(self).__name__, self.base_module, self.out_features)

    def _base_params(self, x) -> tuple[jax.Array, jax.Array | None]:
        """``(kernel, bias)`` of the base layer: the module's own params, or the wrapped
        ``base_module``'s (called at init to create its variables, and its mask applied)."""
        if self.base_module is not None:
            if self.is_initializing():
                self.base_module(x)
            return _base_kernel_bias(self.base_module, self.base_module.variables)
        n_in, n_out = jnp.shape(x)[-1], self.features
        kernel = self.param("kernel", self.kernel_init, (n_in, n_out), self.param_dtype)
        bias = (
            self.param("bias", self.bias_init, (n_out,), self.param_dtype)
            if self.use_bias
            else None
        )
        return kernel, bias

    def _base(self, x) -> tuple[jax.Array, jax.Array]:
        """``(kernel, base(x))``: the wrapped ``base_module``'s own forward, or ``x W + b``."""
        if self.base_module is not None:
            y = self.base_module(x)
            return _base_kernel_bias(self.base_module, self.base_module.variables)[0], y
        kernel, bias = self._base_params(x)
        return kernel, self._linear(x, kernel, bias)

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
      base_module: an ``nn.Dense`` or a ``MaskedLinear`` to wrap (``out_features`` then
        optional; ``use_bias``, ``kernel_init``, ``bias_init`` are the base's own).

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
        _base_out_features("LoHaLinear", self.base_module, self.out_features)
        A.check_common("LoHaLinear", None, 1, self.rank, self.alpha)
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
        kernel, y = self._base(x)
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
        return y + update


class HiRALinear(_Dense):
    """Linen :class:`hadamard_jax.nnx.HiRALinear`: ``x W + b + s x (W * (A B))``.

    Attributes:
      out_features, rank, alpha, init_hira_weights, use_bias, dtype, param_dtype, precision,
        kernel_init, bias_init: as the NNX layer.
      base_module: a base layer to wrap, as :class:`LoHaLinear`.

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
        _base_out_features("HiRALinear", self.base_module, self.out_features)
        A.check_common("HiRALinear", None, 1, self.rank, self.alpha)
        A.check_init(
            "HiRALinear", "init_hira_weights", self.init_hira_weights, (True, False, "gaussian")
        )
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel, y = self._base(x)
        p = self._adapters(
            lambda: A.low_rank_params(
                self.make_rng("params"),
                kernel.shape[0],
                kernel.shape[1],
                self.rank,
                self.init_hira_weights,
                self.param_dtype,
            )  # fmt: skip
        )
        scale = A.lora_scale(self.alpha, self.rank)
        update = A.hira_update(x, kernel, p, scale, dtype=self.dtype, precision=self.precision)
        return y + update


class DoRALinear(_Dense):
    """Linen :class:`hadamard_jax.nnx.DoRALinear`: ``x (m * V / ||V||_col) + b``.

    Attributes:
      out_features, rank, alpha, use_rslora, init_lora_weights, detach_norm, use_bias, dtype,
        param_dtype, precision, kernel_init, bias_init: as the NNX layer.
      base_module: a base layer to wrap, as :class:`LoHaLinear`.

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
        _base_out_features("DoRALinear", self.base_module, self.out_features)
        A.check_common("DoRALinear", None, 1, self.rank, self.alpha)
        A.check_init(
            "DoRALinear", "init_lora_weights", self.init_lora_weights, (True, False, "gaussian")
        )
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel, bias = self._base_params(x)
        scale = A.lora_scale(self.alpha, self.rank, bool(self.use_rslora))

        def make():
            p = A.low_rank_params(
                self.make_rng("params"), kernel.shape[0], kernel.shape[1], self.rank,
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
      base_module: a base layer to wrap, as :class:`LoHaLinear`.

    Example::

      >>> import jax, jax.numpy as jnp
      >>> from hadamard_jax.linen import IA3Linear
      >>> v = IA3Linear(4, feedforward=True).init(jax.random.key(0), jnp.ones((3, 8)))
      >>> v["adapters"]["ia3_l"].shape
      (8,)
    """

    feedforward: bool = False
    _names = ("ia3_l",)

    def __post_init__(self) -> None:
        _base_out_features("IA3Linear", self.base_module, self.out_features)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        size = jnp.shape(x)[-1] if self.feedforward else self.features
        l = self._adapters(lambda: {"ia3_l": jnp.ones((size,), self.param_dtype)})["ia3_l"]
        if self.feedforward:
            return self._base(hadamard(x, l, broadcast=True))[1]
        return hadamard(self._base(x)[1], l, broadcast=True)


def merge_adapter(module: nn.Module, variables: Any) -> dict:
    """The variables of a plain ``nn.Dense`` equal to an adapter layer (the update folded in).

    Args:
      module: a :class:`LoHaLinear`, :class:`HiRALinear`, :class:`DoRALinear` or
        :class:`IA3Linear`.
      variables: its variables (``{"params": {kernel, bias}, "adapters": {...}}``).

    Returns:
      ``{"params": {"kernel": ..., "bias": ...}}`` for ``nn.Dense(module.features,
      use_bias=...)`` (the base's bias, if any; a wrapped ``MaskedLinear``'s mask is applied
      to the kernel first).

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
    adapters = variables[ADAPTERS]
    if module.base_module is not None:
        base = {k: v["base_module"] for k, v in variables.items() if "base_module" in v}
        kernel, bias = _base_kernel_bias(module.base_module, base)
    else:
        params = meta.unbox(variables["params"])
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
