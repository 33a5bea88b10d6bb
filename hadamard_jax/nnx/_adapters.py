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
from hadamard_jax._layers import functional as F
from hadamard_jax._layers import options
from hadamard_jax._src import docstrings
from hadamard_jax._src.hadamard import hadamard
from hadamard_jax.nnx import _common as C
from hadamard_jax.nnx._common import AdapterParam

__all__ = ["AdapterParam", "DoRALinear", "HiRALinear", "IA3", "IA3Linear", "LoHaLinear"]


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


_BASE_ARGS = (
    "base_module", "in_features", "out_features", "use_bias", "dtype", "param_dtype",
    "precision", "kernel_init", "bias_init", "rngs",
)  # fmt: skip


class _Adapter(C.Table):
    """Shared parts: the base layer, its kernel and bias, the adapter variables built from the
    family's table, the forward, the merge and the trainable-parameter count."""

    base_module: Any
    in_features: int
    out_features: int
    op: str = ""
    options: A.AdapterOptions
    scale: float

    def _setup(self, cls: type[A.AdapterOptions], args: dict[str, Any]) -> None:
        """Check ``args`` (the constructor's), wrap or build the base layer, then create the
        adapter variables from ``cls``'s table."""
        A.check_common(self.op, args["in_features"], args["out_features"] or 1, None, None)
        C.store(self, cls.of(args))
        scale = getattr(self.options, "scale", None)
        if scale is not None:
            self.scale = scale
        base = _base(self.op, *(args[k] for k in _BASE_ARGS))
        self.base_module, self.in_features, self.out_features = base
        self.dtype, self.precision = args["dtype"], args["precision"]
        specs = self.options.specs(self.base_kernel(), self.in_features, self.out_features)
        self._build_table(specs, args["rngs"], args["param_dtype"])

    def base_kernel(self) -> jax.Array:
        """The frozen (masked) base kernel ``[in, out]``."""
        return _kernel_of(self.op, self.base_module)

    def base_bias(self) -> jax.Array | None:
        return _bias_of(self.base_module)

    def base_forward(self, x: jax.Array) -> jax.Array:
        """The base layer's output ``base_module(x)``."""
        return self.base_module(x)

    def num_adapter_params(self) -> int:
        """The number of trainable adapter parameters."""
        return A.count(nnx.state(self, AdapterParam))

    def __call__(self, x: jax.Array) -> jax.Array:
        """``[..., in] -> [..., out]``."""
        F.check_features(self.op, x, self.in_features)
        return self.options.apply(x, self, self._params(), self.dtype, self.precision)

    def merge(self) -> nnx.Linear:
        """A plain ``nnx.Linear`` with the update folded into the kernel (and, for (IA)^3's
        output scaling, the bias): equal outputs."""
        merged = self.options.merged(self.base_kernel(), self.base_bias(), self._params())
        return _linear(*merged, self.base_module)


@docstrings.fill(LOHA_INITS=A.LOHA_INITS_DOC)
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
      init_weights: {{LOHA_INITS}}.
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

    op = A.LoHaOptions.op

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
        self._setup(A.LoHaOptions, locals())

    def delta(self) -> jax.Array:
        """The update ``s (A1 B1) * (A2 B2)``, ``[in, out]``."""
        p = self._params()
        return A.ops.loha_delta(p["a1"], p["b1"], p["a2"], p["b2"], scale=self.scale)


@docstrings.fill(LOW_RANK_INITS=A.LOW_RANK_INITS_DOC)
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
      init_hira_weights: {{LOW_RANK_INITS}}.
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

    op = A.HiRAOptions.op

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
        self._setup(A.HiRAOptions, locals())


@docstrings.fill(LOW_RANK_INITS=A.LOW_RANK_INITS_DOC)
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
      init_lora_weights: {{LOW_RANK_INITS}}.
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

    op = A.DoRAOptions.op

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
        self._setup(A.DoRAOptions, locals())


class IA3(C.Table):
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

    ia3_l: AdapterParam

    def __init__(self, num_features: int, *, param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
        A.check_common("IA3", None, num_features, None, None)
        self.num_features = num_features
        self._build_table(A.ia3_specs(num_features), rngs, param_dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        """``[..., num_features] -> [..., num_features]``."""
        F.check_features("IA3", x, self.num_features)
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

    op = A.IA3Options.op

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
        self._setup(A.IA3Options, locals())
