"""Hadamard adapters as NNX modules: ``LoHaLinear``, ``HiRALinear``, ``DoRALinear``, (IA)^3.

Each layer wraps a frozen base linear layer (``base_module=``: an ``nnx.Linear`` or a
:class:`~hadamard_jax.nnx.MaskedLinear`, or a new ``nnx.Linear`` built from ``in_features`` and
``out_features``), like ``nnx.LoRA``. The adapter parameters are :class:`AdapterParam`
variables, so ``nnx.Optimizer(model, tx, wrt=AdapterParam)`` trains only them; ``merge()`` folds
the update into the base kernel and returns a plain ``nnx.Linear`` with equal outputs.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from flax.typing import Dtype, Initializer, PrecisionLike

from hadamard_jax._layers import adapters as A
from hadamard_jax._layers import options
from hadamard_jax._src.hadamard import hadamard
from hadamard_jax.nnx._common import AdapterParam


def _base(
    op: str,
    base_module: Any,
    in_features: int | None,
    out_features: int | None,
    use_bias: bool,
    dtype,
    param_dtype,
    precision,
    kernel_init,
    bias_init,
    rngs: nnx.Rngs,
):
    """The wrapped base layer and its ``(in, out)``: ``base_module`` or a new ``nnx.Linear``."""
    if base_module is None:
        if in_features is None or out_features is None:
            raise ValueError(f"{op}: give base_module, or in_features and out_features.")
        A.check_common(op, in_features, out_features, None, None)
        base = nnx.Linear(
            in_features,
            out_features,
            use_bias=use_bias,
            dtype=dtype,
            param_dtype=param_dtype,
            precision=precision,
            kernel_init=kernel_init,
            bias_init=bias_init,
            rngs=rngs,
        )
        return base, in_features, out_features
    kernel = _kernel_of(op, base_module)
    n_in, n_out = kernel.shape
    for name, given, have in (
        ("in_features", in_features, n_in),
        ("out_features", out_features, n_out),
    ):
        if given is not None and given != have:
            raise ValueError(
                f"{op}: {name}={given} differs from the base kernel shape {kernel.shape}."
            )
    return base_module, n_in, n_out


def _kernel_of(op: str, base: Any) -> jax.Array:
    """The base layer's (masked) kernel ``[in, out]``."""
    if hasattr(base, "masked_kernel"):
        return base.masked_kernel()
    kernel = getattr(base, "kernel", None)
    if kernel is None or jnp.ndim(kernel) != 2:
        raise TypeError(
            f"{op}: base_module must be an nnx.Linear or a MaskedLinear (a module with a 2-D "
            f"'kernel'), got {type(base).__name__}."
        )
    return kernel[...]


def _bias_of(base: Any) -> jax.Array | None:
    bias = getattr(base, "bias", None)
    return None if bias is None else bias[...]


def _linear(kernel: jax.Array, bias: jax.Array | None, base: Any) -> nnx.Linear:
    """A plain ``nnx.Linear`` holding ``kernel`` and ``bias`` (dtype/precision of ``base``)."""
    n_in, n_out = kernel.shape
    layer = nnx.Linear(
        n_in,
        n_out,
        use_bias=bias is not None,
        dtype=getattr(base, "dtype", None),
        param_dtype=kernel.dtype,
        precision=getattr(base, "precision", None),
        kernel_init=lambda *_: kernel,
        bias_init=(lambda *_: bias) if bias is not None else options.default_bias_init,
        rngs=nnx.Rngs(0),
    )
    return layer


class _Adapter(nnx.Module):
    """Shared parts: the base layer, its kernel and bias, and the trainable-parameter count."""

    base_module: Any
    in_features: int
    out_features: int
    op: str = ""

    def base_kernel(self) -> jax.Array:
        """The frozen (masked) base kernel ``[in, out]``."""
        return _kernel_of(self.op, self.base_module)

    def base_bias(self) -> jax.Array | None:
        return _bias_of(self.base_module)

    def num_adapter_params(self) -> int:
        """The number of trainable adapter parameters."""
        return A.count(nnx.state(self, AdapterParam))

    def _check(self, x: Any) -> None:
        A.check_features(self.op, x, self.in_features)


class LoHaLinear(_Adapter):
    r"""A linear layer with a LoHa (FedPara) or ABBA adapter: ``base(x) + s x ((A1 B1) * (A2 B2))``.

    The update :math:`\Delta W = s (A_1 B_1) \odot (A_2 B_2)` has rank up to ``r1 r2`` from
    ``(in + out)(r1 + r2)`` parameters, and is never formed in the forward or backward pass
    when the Khatri-Rao path is cheaper (:func:`hadamard_jax.loha_matmul`).

    peft names and defaults (``tuners/loha``): ``rank`` (``r``), ``alpha``, ``init_weights``
    (``True``: ``a2 = 0``, a zero update; ``False``: random; ``"abba"``: ABBA's SVD
    initialisation from the base kernel, arXiv 2505.14238, whose initial update is not zero, as
    in peft), ``rank2`` (peft's ``r2``, default ``rank``). The scale is ``alpha / rank``, or
    ABBA's ``alpha^2 / sqrt(rank rank2)`` with ``abba_scaling=True`` (default: when
    ``init_weights="abba"``, peft's ``use_khatri_rao="auto"``). Parameters ``a1 [in, r1]``,
    ``b1 [r1, out]``, ``a2 [in, r2]``, ``b2 [r2, out]`` (peft ``hada_w1_b.T``, ``hada_w1_a.T``,
    ``hada_w2_b.T``, ``hada_w2_a.T``).

    Args:
      in_features, out_features: the kernel shape (taken from ``base_module`` if given).
      rank: ``r1``.
      alpha: the scale numerator (default ``rank``: scale 1).
      rank2: ``r2`` (default ``rank``).
      init_weights: ``True``, ``False`` or ``"abba"``.
      abba_scaling: use ABBA's scale (default: ``init_weights == "abba"``).
      base_module: the frozen base layer (``nnx.Linear`` or ``MaskedLinear``); default a new
        ``nnx.Linear`` with ``use_bias``, ``kernel_init``, ``bias_init``.
      use_bias, dtype, param_dtype, precision, kernel_init, bias_init: as ``nnx.Linear``.
      rngs: ``nnx.Rngs``.

    Example::

      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from hadamard_jax.nnx import LoHaLinear
      >>> layer = LoHaLinear(8, 4, rank=2, rngs=nnx.Rngs(0))
      >>> x = jnp.ones((3, 8))
      >>> bool(jnp.allclose(layer(x), layer.base_module(x)))  # zero update at init
      True
      >>> layer.merge()(x).shape, layer.num_adapter_params()
      ((3, 4), 48)
    """

    op = "LoHaLinear"

    def __init__(
        self,
        in_features: int | None = None,
        out_features: int | None = None,
        *,
        rank: int = 8,
        alpha: float | None = None,
        rank2: int | None = None,
        init_weights: bool | str = True,
        abba_scaling: bool | None = None,
        base_module: Any = None,
        use_bias: bool = True,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        precision: PrecisionLike = None,
        kernel_init: Initializer = options.default_kernel_init,
        bias_init: Initializer = options.default_bias_init,
        rngs: nnx.Rngs,
    ):
        A.check_common(self.op, in_features, out_features or 1, rank, alpha)
        rank2 = rank if rank2 is None else rank2
        A.check_common(self.op, None, 1, rank2, None)
        A.check_init(self.op, "init_weights", init_weights, A.LOHA_INITS)
        abba = init_weights == "abba" if abba_scaling is None else abba_scaling
        self.base_module, self.in_features, self.out_features = _base(
            self.op, base_module, in_features, out_features, use_bias, dtype, param_dtype,
            precision, kernel_init, bias_init, rngs,
        )  # fmt: skip
        self.rank, self.rank2, self.alpha = rank, rank2, alpha
        self.dtype, self.precision = dtype, precision
        self.scale = A.loha_scale(alpha, rank, rank2, bool(abba))
        params = A.loha_params(
            rngs.params(), self.base_kernel(), rank, rank2, init_weights, param_dtype
        )
        self.a1, self.b1 = AdapterParam(params["a1"]), AdapterParam(params["b1"])
        self.a2, self.b2 = AdapterParam(params["a2"]), AdapterParam(params["b2"])

    def _params(self) -> dict:
        return {k: getattr(self, k)[...] for k in ("a1", "b1", "a2", "b2")}

    def __call__(self, x: jax.Array) -> jax.Array:
        """``[..., in] -> [..., out]``."""
        self._check(x)
        update = A.loha_update(
            x, self._params(), self.scale, dtype=self.dtype, precision=self.precision
        )
        return self.base_module(x) + update

    def delta(self) -> jax.Array:
        """The update ``s (A1 B1) * (A2 B2)``, ``[in, out]``."""
        p = self._params()
        return A.ops.loha_delta(p["a1"], p["b1"], p["a2"], p["b2"], scale=self.scale)

    def merge(self) -> nnx.Linear:
        """A plain ``nnx.Linear`` with kernel ``W + s (A1 B1) * (A2 B2)`` (equal outputs)."""
        merged = A.loha_merged(self.base_kernel(), self._params(), self.scale)
        return _linear(merged, self.base_bias(), self.base_module)


class HiRALinear(_Adapter):
    r"""A linear layer with a HiRA adapter: ``base(x) + s x (W * (A B))`` (Huang et al. 2025).

    The Hadamard product with the frozen kernel ``W`` gives a high-rank update from ``r (in +
    out)`` parameters (:func:`hadamard_jax.hira_matmul`). peft names (``tuners/hira``):
    ``rank`` (``r``), ``init_hira_weights`` (``True``: ``a`` ``kaiming_uniform(a=sqrt(5))``,
    ``b = 0``; ``"gaussian"``: ``a ~ N(0, 1/r^2)``; ``False``: both random). peft has no scale:
    ``alpha=None`` (default) gives ``s = 1``, else ``s = alpha / rank``. ``a [in, r]`` is
    peft's ``hira_A.T``, ``b [r, out]`` its ``hira_B.T``.

    Args:
      in_features, out_features, rank, alpha: as above.
      init_hira_weights: ``True``, ``False`` or ``"gaussian"``.
      base_module, use_bias, dtype, param_dtype, precision, kernel_init, bias_init, rngs: as
        :class:`LoHaLinear`.

    Example::

      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from hadamard_jax.nnx import HiRALinear
      >>> layer = HiRALinear(8, 4, rank=2, rngs=nnx.Rngs(0))
      >>> layer(jnp.ones((3, 8))).shape, layer.num_adapter_params()
      ((3, 4), 24)
    """

    op = "HiRALinear"

    def __init__(
        self,
        in_features: int | None = None,
        out_features: int | None = None,
        *,
        rank: int = 8,
        alpha: float | None = None,
        init_hira_weights: bool | str = True,
        base_module: Any = None,
        use_bias: bool = True,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        precision: PrecisionLike = None,
        kernel_init: Initializer = options.default_kernel_init,
        bias_init: Initializer = options.default_bias_init,
        rngs: nnx.Rngs,
    ):
        A.check_common(self.op, in_features, out_features or 1, rank, alpha)
        A.check_init(self.op, "init_hira_weights", init_hira_weights, (True, False, "gaussian"))
        self.base_module, self.in_features, self.out_features = _base(
            self.op, base_module, in_features, out_features, use_bias, dtype, param_dtype,
            precision, kernel_init, bias_init, rngs,
        )  # fmt: skip
        self.rank, self.alpha, self.dtype, self.precision = rank, alpha, dtype, precision
        self.scale = A.lora_scale(alpha, rank)
        p = A.low_rank_params(
            rngs.params(), self.in_features, self.out_features, rank, init_hira_weights,
            param_dtype,
        )  # fmt: skip
        self.a, self.b = AdapterParam(p["a"]), AdapterParam(p["b"])

    def _params(self) -> dict:
        return {"a": self.a[...], "b": self.b[...]}

    def __call__(self, x: jax.Array) -> jax.Array:
        """``[..., in] -> [..., out]``."""
        self._check(x)
        update = A.hira_update(
            x, self.base_kernel(), self._params(), self.scale, dtype=self.dtype,
            precision=self.precision,
        )  # fmt: skip
        return self.base_module(x) + update

    def merge(self) -> nnx.Linear:
        """A plain ``nnx.Linear`` with kernel ``W * (1 + s A B)`` (equal outputs)."""
        merged = A.hira_merged(self.base_kernel(), self._params(), self.scale)
        return _linear(merged, self.base_bias(), self.base_module)


class DoRALinear(_Adapter):
    r"""A linear layer with DoRA: ``x (m * V / ||V||_col) + b``, ``V = W + s A B``.

    Weight-decomposed LoRA (Liu et al. 2024) through :func:`hadamard_jax.dora_matmul`: no
    ``[in, out]`` array besides ``W`` in the forward or backward pass. peft names
    (``tuners/lora`` with ``use_dora=True``): ``rank`` (``r``), ``alpha`` (``lora_alpha``,
    default ``rank``), ``use_rslora``, ``init_lora_weights`` (``True``/``"gaussian"``/
    ``False``); the magnitude ``m`` starts at ``||W + s A B||_col`` (``= ||W||_col``: the
    output is the base layer's at init). ``detach_norm=True`` treats the norm as a constant in
    the backward pass (the paper's section 4.3; peft does). Parameters ``lora_a [in, r]``,
    ``lora_b [r, out]`` (as ``nnx.LoRA``; peft ``lora_A.weight.T``, ``lora_B.weight.T``) and
    ``magnitude [out]``.

    Args:
      in_features, out_features, rank, alpha: as above.
      use_rslora: scale ``alpha / sqrt(rank)``.
      init_lora_weights: ``True``, ``False`` or ``"gaussian"``.
      detach_norm: treat the column norm as a constant in the derivative.
      base_module, use_bias, dtype, param_dtype, precision, kernel_init, bias_init, rngs: as
        :class:`LoHaLinear`.

    Example::

      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from hadamard_jax.nnx import DoRALinear
      >>> layer = DoRALinear(8, 4, rank=2, rngs=nnx.Rngs(0))
      >>> x = jnp.ones((3, 8))
      >>> bool(jnp.allclose(layer(x), layer.base_module(x), atol=1e-6))
      True
    """

    op = "DoRALinear"

    def __init__(
        self,
        in_features: int | None = None,
        out_features: int | None = None,
        *,
        rank: int = 8,
        alpha: float | None = None,
        use_rslora: bool = False,
        init_lora_weights: bool | str = True,
        detach_norm: bool = True,
        base_module: Any = None,
        use_bias: bool = True,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        precision: PrecisionLike = None,
        kernel_init: Initializer = options.default_kernel_init,
        bias_init: Initializer = options.default_bias_init,
        rngs: nnx.Rngs,
    ):
        A.check_common(self.op, in_features, out_features or 1, rank, alpha)
        A.check_init(self.op, "init_lora_weights", init_lora_weights, (True, False, "gaussian"))
        self.base_module, self.in_features, self.out_features = _base(
            self.op, base_module, in_features, out_features, use_bias, dtype, param_dtype,
            precision, kernel_init, bias_init, rngs,
        )  # fmt: skip
        self.rank, self.alpha, self.dtype, self.precision = rank, alpha, dtype, precision
        self.detach_norm = bool(detach_norm)
        self.scale = A.lora_scale(alpha, rank, bool(use_rslora))
        p = A.low_rank_params(
            rngs.params(), self.in_features, self.out_features, rank, init_lora_weights,
            param_dtype,
        )  # fmt: skip
        self.lora_a, self.lora_b = AdapterParam(p["a"]), AdapterParam(p["b"])
        m = A.dora_magnitude(self.base_kernel(), p, self.scale).astype(param_dtype)
        self.magnitude = AdapterParam(m)

    def _params(self) -> dict:
        return {"a": self.lora_a[...], "b": self.lora_b[...], "magnitude": self.magnitude[...]}

    def __call__(self, x: jax.Array) -> jax.Array:
        """``[..., in] -> [..., out]``."""
        self._check(x)
        return A.dora(
            x, self.base_kernel(), self.base_bias(), self._params(), self.scale,
            self.detach_norm, dtype=self.dtype, precision=self.precision,
        )  # fmt: skip

    def merge(self) -> nnx.Linear:
        """A plain ``nnx.Linear`` with kernel ``m * V / ||V||_col`` (equal outputs)."""
        merged = A.dora_merged(self.base_kernel(), self._params(), self.scale)
        return _linear(merged, self.base_bias(), self.base_module)


class IA3(nnx.Module):
    r"""(IA)^3's learned scaling ``x * l`` of the last axis (Liu et al. 2022), ``l`` from ones.

    Scales keys, values or a feed-forward hidden activation element-wise, through
    :func:`hadamard_jax.hadamard` (``broadcast=True``); ``l`` is an :class:`AdapterParam`
    (peft's ``ia3_l``) initialised to ones, so the model is unchanged at init.

    Args:
      num_features: the size of the last axis.
      param_dtype: dtype of ``l``.
      rngs: unused (for a uniform signature).

    Example::

      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from hadamard_jax.nnx import IA3
      >>> IA3(3, rngs=nnx.Rngs(0))(jnp.ones((2, 3)))
      Array([[1., 1., 1.],
             [1., 1., 1.]], dtype=float32)
    """

    def __init__(self, num_features: int, *, param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
        A.check_common("IA3", None, num_features, None, None)
        del rngs
        self.num_features = num_features
        self.ia3_l = AdapterParam(jnp.ones((num_features,), param_dtype))

    def __call__(self, x: jax.Array) -> jax.Array:
        """``[..., num_features] -> [..., num_features]``."""
        A.check_features("IA3", x, self.num_features)
        return hadamard(x, self.ia3_l[...], broadcast=True)


class IA3Linear(_Adapter):
    r"""A linear layer with (IA)^3 scaling: ``base(x) * l`` or, ``feedforward``, ``base(x * l)``.

    peft's ``tuners/ia3`` on a linear layer: ``ia3_l`` (here ``ia3_l``, an :class:`AdapterParam`
    of ones) scales the output (``[out]``, keys and values) or, with ``feedforward=True``, the
    input (``[in]``, the FFN's down projection). ``merge()`` folds it into the kernel (and the
    bias, for output scaling), as peft does.

    Args:
      in_features, out_features: the kernel shape (from ``base_module`` if given).
      feedforward: scale the input instead of the output.
      base_module, use_bias, dtype, param_dtype, precision, kernel_init, bias_init, rngs: as
        :class:`LoHaLinear`.

    Example::

      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from hadamard_jax.nnx import IA3Linear
      >>> layer = IA3Linear(8, 4, rngs=nnx.Rngs(0))
      >>> layer.num_adapter_params(), layer(jnp.ones((3, 8))).shape
      (4, (3, 4))
    """

    op = "IA3Linear"

    def __init__(
        self,
        in_features: int | None = None,
        out_features: int | None = None,
        *,
        feedforward: bool = False,
        base_module: Any = None,
        use_bias: bool = True,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        precision: PrecisionLike = None,
        kernel_init: Initializer = options.default_kernel_init,
        bias_init: Initializer = options.default_bias_init,
        rngs: nnx.Rngs,
    ):
        A.check_common(self.op, in_features, out_features or 1, None, None)
        self.base_module, self.in_features, self.out_features = _base(
            self.op, base_module, in_features, out_features, use_bias, dtype, param_dtype,
            precision, kernel_init, bias_init, rngs,
        )  # fmt: skip
        self.feedforward = bool(feedforward)
        size = self.in_features if self.feedforward else self.out_features
        self.ia3_l = AdapterParam(jnp.ones((size,), param_dtype))

    def __call__(self, x: jax.Array) -> jax.Array:
        """``[..., in] -> [..., out]``."""
        self._check(x)
        if self.feedforward:
            return self.base_module(hadamard(x, self.ia3_l[...], broadcast=True))
        return hadamard(self.base_module(x), self.ia3_l[...], broadcast=True)

    def merge(self) -> nnx.Linear:
        """A plain ``nnx.Linear`` with ``l`` folded into the kernel (and bias): equal outputs."""
        kernel, bias = A.ia3_merged(
            self.base_kernel(), self.base_bias(), self.ia3_l[...], self.feedforward
        )
        return _linear(kernel, bias, self.base_module)
