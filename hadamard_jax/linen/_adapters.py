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

from typing import Any

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
from hadamard_jax.linen import _common as LC
from hadamard_jax.linen._masks import MaskedLinear

__all__ = ["DoRALinear", "HiRALinear", "IA3", "IA3Linear", "LoHaLinear", "merge_adapter"]


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


class _BaseView:
    """The base layer as the adapters' ``apply`` sees it: ``base_forward(x)``,
    ``base_kernel()``, ``base_bias()`` (the kernel and bias read once, by
    :meth:`_Dense._base_params`)."""

    def __init__(self, module: _Dense, kernel: jax.Array, bias: jax.Array | None):
        self.module, self.kernel, self.bias = module, kernel, bias

    def base_forward(self, x: Any) -> jax.Array:
        m = self.module
        if m.base_module is not None:
            return m.base_module(x)
        return A.linear(x, self.kernel, self.bias, dtype=m.dtype, precision=m.precision)

    def base_kernel(self) -> jax.Array:
        return self.kernel

    def base_bias(self) -> jax.Array | None:
        return self.bias


class _Dense(LC.Checked):
    """The shared fields, the base ``kernel``/``bias`` and the forward of the adapter layers."""

    out_features: int | None = None
    use_bias: bool = True
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    precision: PrecisionLike = None
    kernel_init: Initializer = options.default_kernel_init
    bias_init: Initializer = options.default_bias_init
    base_module: nn.Module | None = None

    def __post_init__(self) -> None:
        _base_out_features(type(self).__name__, self.base_module, self.out_features)
        super().__post_init__()

    @property
    def features(self) -> int:
        """The output size (``out_features``, or the wrapped base's)."""
        return _base_out_features(type(self).__name__, self.base_module, self.out_features)

    @property
    def scale(self) -> float:
        """The adapter's scale (LoHa, HiRA, DoRA)."""
        return self.options.scale

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

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """``[..., in] -> [..., out]``."""
        kernel, bias = self._base_params(x)
        specs = self.options.specs(kernel, *jnp.shape(kernel))
        p = LC.build(self, specs, self.param_dtype)
        return self.options.apply(x, _BaseView(self, kernel, bias), p, self.dtype, self.precision)


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
    _options = A.LoHaOptions


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
    _options = A.HiRAOptions


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
    _options = A.DoRAOptions


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
        F.check_features("IA3", x, self.num_features)
        l = LC.build(self, A.ia3_specs(self.num_features), self.param_dtype)["ia3_l"]
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
    _options = A.IA3Options


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
    kernel, bias = module.options.merged(kernel, bias, adapters)
    out = {"kernel": kernel}
    if bias is not None:
        out["bias"] = bias
    return {"params": out}
