"""The GLU family: ``GLU`` (a projection to a gated output) and ``GatedMLP`` (the gated
feed-forward block, a GLU followed by a down projection), for both front ends.

Per layer: the options dataclass, checked once at construction (NNX ``__init__``, Linen
``__post_init__``), with the params table (:mod:`.params`: names, shapes, initialisers, in NNX
creation order), the pure apply function, and the argument descriptions both docstrings share.
Kept together because ``GatedMLP`` is a ``GLU`` with a down projection: the same gate table
(``activation=``), the same checks and the same docs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax.typing import Dtype, PrecisionLike

import hadamard_jax as hj
from hadamard_jax._layers import docstrings, options
from hadamard_jax._layers import functional as F
from hadamard_jax._layers import params as P
from hadamard_jax._src import glu as _glu

Params = Mapping[str, Any]

# --- GLU ----------------------------------------------------------------------------------------

#: The options ``GLU`` hands to :func:`glu`.
GLU_APPLY = ("activation", "approximate", "dtype", "precision")

#: What ``activation=``/``approximate=`` mean, for every layer with a gate of the gate table.
GATE_ARGS = f"""\
activation: the gate ``act(g) * v``, one of the gate table's names: {docstrings.GATES}
  (default ``"swiglu"``).
approximate: tanh-approximate GELU (gates with an approximate form, e.g. ``"geglu"``).
"""

#: The arguments that every projection has, as Flax's ``Linear``/``Dense``.
DENSE_ARGS = """\
dtype: computation dtype (default: inferred from inputs and params).
param_dtype: parameter dtype.
precision: ``jax.lax.Precision`` of the matmuls.
kernel_init, bias_init: initializers (wrap with ``with_partitioning`` to shard).
"""

#: ``GLU``'s arguments after ``out_features`` (NNX ``Args`` and Linen ``Attributes``).
GLU_ARGS = f"""\
{GATE_ARGS}fused_kernel: one ``kernel`` ``[in, 2 out]`` (value columns, then gate columns: the
  ``jax.nn.glu`` layout) and ``bias`` ``[2 out]`` (default), or ``gate_kernel`` and
  ``value_kernel`` ``[in, out]`` with ``gate_bias``/``value_bias`` ``[out]``.
use_bias: add biases to the projections.
{DENSE_ARGS}"""


#: ``GLU``'s arguments, each with its check (``in_features``: NNX only).
GLU_CHECKS = {
    "in_features": options.optional_size,
    "out_features": options.size,
    "activation": options.anything,  # with approximate, in GLUOptions.check
    "approximate": options.anything,
    "fused_kernel": options.flag,
    **options.DENSE,
}


@dataclasses.dataclass(frozen=True)
class GatedDenseOptions(options.DenseOptions):
    """Projections with a gate of the gate table: ``activation`` and ``approximate``, checked
    together by :func:`.options.gate`."""

    activation: str
    approximate: bool

    def check(self) -> None:
        options.gate(self.activation, self.approximate, self.op)


@dataclasses.dataclass(frozen=True)
class GLUOptions(GatedDenseOptions):
    """``GLU``'s options, checked once (:data:`GLU_CHECKS`; the gate by :func:`.options.gate`);
    ``in_features``: NNX only (Linen infers it)."""

    op: ClassVar[str] = "GLU"
    CHECKS: ClassVar[dict[str, Any]] = GLU_CHECKS

    out_features: int
    fused_kernel: bool
    in_features: int | None = None

    def specs(self, in_features: int) -> tuple[P.Spec, ...]:
        """``GLU``'s variables for input size ``in_features``, in NNX creation order."""
        d, n = in_features, self.out_features
        inits: dict[str, Any] = dict(
            use_bias=self.use_bias, kernel_init=self.kernel_init, bias_init=self.bias_init
        )
        if self.fused_kernel:
            return P.dense("", d, 2 * n, **inits)
        gate_kernel, gate_bias = P.dense("gate", d, n, **inits)
        value_kernel, value_bias = P.dense("value", d, n, **inits)
        return (gate_kernel, value_kernel, gate_bias, value_bias)

    def apply(self, x: Any, params: Params) -> jax.Array:
        """:func:`glu` with these options."""
        return glu(x, params, **self.pick(GLU_APPLY))


def glu(
    x: Any,
    params: Params,
    *,
    activation: str,
    approximate: bool,
    dtype: Dtype | None,
    precision: PrecisionLike,
) -> jax.Array:
    """The ``GLU`` projection. ``params`` holds either ``kernel`` [d, 2n] (value columns
    first, then gate columns) and ``bias`` [2n], or ``gate_kernel``/``value_kernel`` [d, n] and
    ``gate_bias``/``value_bias`` [n]. Returns ``[..., n]``."""
    if params.get("kernel") is not None:
        x, k, b = F.promote((x, params["kernel"], params.get("bias")), dtype)
        y = F.dense(x, k, b, precision)
        return _glu.gated_packed(activation, y, axis=-1, approximate=approximate, op="GLU")
    names = ("gate_kernel", "value_kernel", "gate_bias", "value_bias")
    x, kg, kv, bg, bv = F.promote((x, *(params.get(k) for k in names)), dtype)
    g, v = F.dense(x, kg, bg, precision), F.dense(x, kv, bv, precision)
    return _glu.gated(activation, g, v, approximate=approximate, op="GLU")


# --- GatedMLP -----------------------------------------------------------------------------------

#: The options ``GatedMLP`` hands to :func:`gated_mlp`.
GATED_MLP_APPLY = ("activation", "approximate", "dtype", "precision", "dropout_rate")
GATED_MLP_KERNELS = ("gate_kernel", "up_kernel", "down_kernel")

#: ``GatedMLP``'s arguments after ``out_features`` (NNX ``Args`` and Linen ``Attributes``).
GATED_MLP_ARGS = f"""\
{GATE_ARGS}use_bias: biases on the three projections.
dropout_rate: dropout probability on the hidden layer ``act(g) * u`` (a boolean keep-mask
  passed into the fused op, scaled by ``1 / (1 - rate)``).
deterministic: disable dropout (``model.eval()`` sets it in NNX; the call argument wins).
masked: give each kernel a fixed boolean mask (``gate_mask``, ``up_mask``, ``down_mask``; all
  ones at first, with the kernel's partitioning; NNX ``MaskVar``, Linen collection ``"masks"``)
  that ``prune`` sets; masked weights are exactly zero (select semantics) and get zero gradient.
ia3: add (IA)^3's learned scale of the hidden layer (Liu et al. 2022; peft's ``tuners/ia3``
  with ``is_feedforward=True`` on the down projection): ``ia3_l`` ``[hidden]``, ones at init
  (the block is unchanged), an adapter (NNX ``AdapterParam``, so ``nnx.Optimizer(mlp, tx,
  wrt=AdapterParam)`` trains it alone; Linen collection ``"adapters"``);
  ``h = act(g) * u * l``, fused into the op (its rule keeps no more residuals).
{DENSE_ARGS}down_kernel_init: initializer of ``down_kernel`` (default ``kernel_init``), e.g. with
  the transposed partitioning of the gate/up kernels (``("model", None)`` vs
  ``(None, "model")``) for tensor parallelism.
rng_collection: the rng stream that dropout draws from (``"dropout"``).
"""


#: ``GatedMLP``'s arguments, each with its check (``in_features``: NNX only).
GATED_MLP_CHECKS = {
    **GLU_CHECKS,
    "hidden_features": options.size,
    "out_features": options.optional_size,
    "dropout_rate": options.rate,
    "deterministic": options.deterministic,
    "masked": options.flag,
    "ia3": options.flag,
    "down_kernel_init": options.optional_function,
    "rng_collection": options.string,
}


@dataclasses.dataclass(frozen=True)
class GatedMLPOptions(GatedDenseOptions):
    """``GatedMLP``'s options, checked once (:data:`GATED_MLP_CHECKS`; the gate by
    :func:`.options.gate`); ``in_features``: NNX only (Linen infers it), and given, it is the
    default ``out_features``."""

    op: ClassVar[str] = "GatedMLP"
    CHECKS: ClassVar[dict[str, Any]] = GATED_MLP_CHECKS

    hidden_features: int
    out_features: int | None
    dropout_rate: float
    deterministic: bool | None
    masked: bool
    ia3: bool
    down_kernel_init: Any
    rng_collection: str
    in_features: int | None = None

    def check(self) -> None:
        super().check()
        self.set(out_features=options.first(self.out_features, self.in_features))

    def specs(self, in_features: int) -> tuple[P.Spec, ...]:
        """``GatedMLP``'s variables for input size ``in_features``: the kernels, the biases,
        ``ia3_l`` (adapter) and the masks, in NNX creation order."""
        d, h = in_features, self.hidden_features
        out = options.first(self.out_features, d)
        inits: dict[str, Any] = dict(use_bias=self.use_bias, bias_init=self.bias_init)
        gate_kernel, gate_bias = P.dense("gate", d, h, kernel_init=self.kernel_init, **inits)
        up_kernel, up_bias = P.dense("up", d, h, kernel_init=self.kernel_init, **inits)
        down_init = options.first(self.down_kernel_init, self.kernel_init)
        down_kernel, down_bias = P.dense("down", h, out, kernel_init=down_init, **inits)
        kernels = (gate_kernel, up_kernel, down_kernel)
        ia3 = P.Spec(
            "ia3_l", (h,), jax.nn.initializers.ones, P.ADAPTERS, present=self.ia3, draws_key=False
        )
        masks = P.masks_of(
            kernels, GATED_MLP_KERNELS, options.default_mask_init, present=self.masked
        )
        return (*kernels, gate_bias, up_bias, down_bias, ia3, *masks)

    def apply(self, x: Any, params: Params, dropout_key: jax.Array | None = None) -> jax.Array:
        """:func:`gated_mlp` with these options."""
        return gated_mlp(x, params, **self.pick(GATED_MLP_APPLY), dropout_key=dropout_key)


def gated_mlp(
    x: Any,
    params: Params,
    masks: Params | None = None,
    *,
    activation: str,
    approximate: bool,
    dtype: Dtype | None,
    precision: PrecisionLike,
    dropout_rate: float = 0.0,
    dropout_key: jax.Array | None = None,
) -> jax.Array:
    """The ``GatedMLP`` block through the fused :func:`hadamard_jax.gated_mlp` op.

    ``masks`` (``gate_mask``, ``up_mask``, ``down_mask``; ``GatedMLP(masked=True)``; default:
    those of ``params``, a mask that is absent or ``None`` selects nothing) select the kernels
    (masked weights exactly zero, zero gradient). With ``dropout_key`` (not deterministic and
    ``dropout_rate > 0``) the hidden layer ``act(g) * u`` gets inverted dropout: a boolean
    keep-mask passed into the fused op, scaled by ``1 / (1 - rate)``.

    ``params["ia3_l"]`` (``GatedMLP(ia3=True)``, shape ``[hidden]``) is (IA)^3's learned scale
    of the hidden layer, ``h = act(g) * u * l``. Without dropout it is the fused op's floating
    ``hidden_mask`` (shape ``[1, ..., 1, hidden]``), so the rule's residuals stay ``x``, ``g``,
    ``u`` and the weights (``l`` among them); with dropout the boolean keep-mask takes that
    slot and ``l`` scales the rows of the down kernel instead (``(h * l) W_d = h (l[:, None] *
    W_d)``, through :func:`hadamard_jax.hadamard`), a weight-sized ``[hidden, out]`` input in
    place of an activation-sized floating mask.
    """
    masks = params if masks is None else masks
    kernels = []
    for name in GATED_MLP_KERNELS:
        mask = masks.get(name.replace("kernel", "mask"))
        kernels.append(params[name] if mask is None else F.masked_kernel(params[name], mask))
    biases = (params.get("gate_bias"), params.get("up_bias"), params.get("down_bias"))
    x, kg, ku, kd, bg, bu, bd, ia3 = F.promote((x, *kernels, *biases, params.get("ia3_l")), dtype)
    hidden_mask, scale = None, 1.0
    if dropout_key is not None and dropout_rate > 0:
        shape = tuple(x.shape[:-1]) + (kg.shape[-1],)
        hidden_mask = jax.random.bernoulli(dropout_key, 1.0 - dropout_rate, shape)
        scale = 1.0 / (1.0 - dropout_rate)
    if ia3 is not None:
        if hidden_mask is None:  # the fused op's differentiable floating mask
            hidden_mask = jnp.reshape(ia3, (1,) * (x.ndim - 1) + (-1,))
        else:  # the keep-mask holds the slot: scale the down kernel's rows
            kd = hj.hadamard(kd, jnp.reshape(ia3, (-1, 1)), broadcast=True)
    return hj.gated_mlp(
        x,
        kg,
        ku,
        kd,
        activation=activation,
        approximate=approximate,
        b_gate=bg,
        b_up=bu,
        b_down=bd,
        hidden_mask=hidden_mask,
        hidden_scale=scale,
        precision=precision,
    )
