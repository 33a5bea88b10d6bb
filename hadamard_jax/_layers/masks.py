"""The mask-layer family, shared by NNX and Linen: ``Mask``, ``HardConcreteGate``,
``MaskedLinear``.

For each module: a frozen options dataclass checked once, at construction (:class:`MaskOptions`,
:class:`HardConcreteGateOptions`, :class:`MaskedLinearOptions`), which gives its params table
(:mod:`hadamard_jax._layers.params`: names, shapes, initialisers, collections, in NNX creation
order), and the pure function that applies it. The front ends (``nnx/_masks.py``,
``linen/_masks.py``) build the options and the variables from the table and call the function.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax

from hadamard_jax._layers import functional as F
from hadamard_jax._layers import options
from hadamard_jax._layers import params as P
from hadamard_jax._src import checks, docstrings
from hadamard_jax._src.checks import Shape

#: The ``mask_type=`` values of ``MaskedLinear``, with what each one holds (read by the
#: docstrings of both front ends).
MASK_TYPES: dict[str, str] = {
    "fixed": (
        "a boolean mask ``mask`` (all ones at first, by ``mask_init``; it takes the kernel's "
        "partitioning), applied with select semantics: masked weights are exactly zero and get "
        "exactly zero gradient. ``prune`` sets it (magnitude, global magnitude, random, N:M, "
        "block and channel patterns)."
    ),
    "ste": (
        "learned ``scores`` (a param, by default ``|kernel|`` at init) give a hard 0/1 mask "
        "through :func:`hadamard_jax.ste_mask` with a straight-through gradient (edge-popup / "
        "movement pruning): ``sparsity=s`` prunes the ``round(s * in * out)`` lowest scores "
        "(Python's ``round``, half to even: the one rounding rule of the library, the same "
        "count as ``prune(layer, s)``; 5 weights at ``s = 0.5`` keep 3), ``threshold=`` keeps "
        "scores above it."
    ),
    "hard_concrete": (
        "a ``HardConcreteGate`` ``gate`` over the kernel (L0 regularisation, Louizos et al. "
        "2018); add its ``l0_penalty`` to the loss."
    ),
}


def mask_types_doc() -> str:
    """The bullet list of :data:`MASK_TYPES` for a docstring."""
    return "\n".join(f"* ``{name!r}``: {text}" for name, text in MASK_TYPES.items())


def document(obj: Any) -> None:
    """Fills ``{{MASK_TYPES}}`` in ``obj``'s docstring with :func:`mask_types_doc`."""
    docstrings.fill_in(obj, MASK_TYPES=mask_types_doc())


#: The hard-concrete arguments that ``HardConcreteGate`` and ``MaskedLinear`` share.
GATE_FIELDS = (
    "beta",
    "gamma",
    "zeta",
    "log_alpha_init",
    "deterministic",
    "param_dtype",
    "rng_collection",
)


def fields(module: Any, names: tuple[str, ...]) -> dict[str, Any]:
    """``{name: module.<name>}`` (a Linen module's fields, to check or pass on)."""
    return {name: getattr(module, name) for name in names}


# --- checks (construction time) -----------------------------------------------------------------


def check_mask(*, shape: Any, mask_init: Any, fill: Any) -> Shape:
    """``Mask``'s arguments; returns the shape as a tuple."""
    op = "Mask"
    options.function(mask_init, "mask_init", op)
    options.number(fill, "fill", op)
    return options.as_shape(shape, "shape", op)


def check_hard_concrete_gate(
    *,
    shape: Any,
    beta: Any,
    gamma: Any,
    zeta: Any,
    log_alpha_init: Any,
    deterministic: Any,
    param_dtype: Any,
    rng_collection: Any,
    op: str = "HardConcreteGate",
) -> Shape:
    """``HardConcreteGate``'s arguments; returns the shape as a tuple."""
    options.hard_concrete(beta, gamma, zeta, op)
    options.function(log_alpha_init, "log_alpha_init", op)
    options.optional_flag(deterministic, op)
    options.dtypes(None, param_dtype, op)
    options.string(rng_collection, "rng_collection", op)
    return options.as_shape(shape, "shape", op)


def _check_ste_rule(mask_type: str, sparsity: Any, threshold: Any, op: str) -> None:
    """``"ste"`` needs exactly one of ``sparsity``/``threshold``; other types take neither."""
    if mask_type == "ste" and (sparsity is None) == (threshold is None):
        raise ValueError(
            f"{op}: mask_type='ste' needs exactly one of sparsity= (prune the lowest scores) or "
            "threshold= (keep scores > threshold)."
        )
    if mask_type != "ste" and (sparsity is not None or threshold is not None):
        raise ValueError(
            f"{op}: sparsity/threshold apply to mask_type='ste', not {mask_type!r}; use prune() "
            "to set a fixed mask."
        )
    if sparsity is not None:
        options.fraction(sparsity, "sparsity", op)
    if threshold is not None:
        checks.static_real(threshold, "threshold", op)


def check_masked_linear(
    *,
    out_features: Any,
    mask_type: Any,
    sparsity: Any,
    threshold: Any,
    use_bias: Any,
    dtype: Any,
    kernel_init: Any,
    bias_init: Any,
    mask_init: Any,
    scores_init: Any,
    in_features: Any = None,
    **gate: Any,
) -> None:
    """``MaskedLinear``'s arguments (``in_features``: NNX only; ``gate``: the
    :data:`GATE_FIELDS`, checked as ``HardConcreteGate``'s).

    ``mask_type="ste"`` needs exactly one of ``sparsity`` (a number in ``[0, 1]``) and
    ``threshold`` (a real number); the other mask types take neither.
    """
    op = "MaskedLinear"
    if in_features is not None:
        options.size(in_features, "in_features", op)
    options.size(out_features, "out_features", op)
    checks.check_choice(mask_type, "mask_type", op, tuple(MASK_TYPES))
    _check_ste_rule(mask_type, sparsity, threshold, op)
    options.flag(use_bias, "use_bias", op)
    options.dtypes(dtype, gate["param_dtype"], op)
    for name, fn in (("kernel_init", kernel_init), ("bias_init", bias_init)):
        options.function(fn, name, op)
    options.function(mask_init, "mask_init", op)
    options.function(scores_init, "scores_init", op, optional=True)
    check_hard_concrete_gate(shape=(), op=op, **gate)


# --- options (checked once, at construction) ---------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MaskOptions(P.Options):
    """``Mask``'s options, checked once (:func:`check_mask`; ``shape`` made a tuple)."""

    shape: Shape
    mask_init: Any
    fill: Any

    def __post_init__(self) -> None:
        self.set(shape=check_mask(shape=self.shape, mask_init=self.mask_init, fill=self.fill))

    def specs(self, *, draws_key: bool) -> tuple:
        """:func:`mask_params` of these options."""
        return mask_params(self.shape, self.mask_init, draws_key=draws_key)


@dataclasses.dataclass(frozen=True)
class HardConcreteGateOptions(P.Options):
    """``HardConcreteGate``'s options, checked once (:func:`check_hard_concrete_gate`;
    ``shape`` made a tuple)."""

    shape: Shape
    beta: Any
    gamma: Any
    zeta: Any
    log_alpha_init: Any
    deterministic: Any
    param_dtype: Any
    rng_collection: Any

    def __post_init__(self) -> None:
        self.set(shape=check_hard_concrete_gate(**self.items()))

    def specs(self) -> tuple:
        """:func:`hard_concrete_params` of these options."""
        return hard_concrete_params(self.shape, self.log_alpha_init)


@dataclasses.dataclass(frozen=True)
class MaskedLinearOptions(P.Options):
    """``MaskedLinear``'s options, checked once (:func:`check_masked_linear`);
    ``in_features``: NNX only (Linen infers it)."""

    out_features: Any
    mask_type: Any
    sparsity: Any
    threshold: Any
    use_bias: Any
    dtype: Any
    precision: Any
    kernel_init: Any
    bias_init: Any
    mask_init: Any
    scores_init: Any
    beta: Any
    gamma: Any
    zeta: Any
    log_alpha_init: Any
    deterministic: Any
    param_dtype: Any
    rng_collection: Any
    in_features: Any = None

    def __post_init__(self) -> None:
        check_masked_linear(**{k: v for k, v in self.items().items() if k != "precision"})

    def gate_args(self) -> dict[str, Any]:
        """The :data:`GATE_FIELDS` its ``HardConcreteGate`` takes."""
        return fields(self, GATE_FIELDS)

    def specs(self, in_features: int, abs_kernel: Callable[..., Any]) -> tuple:
        """:func:`masked_linear_params` of these options (``abs_kernel``: ``|kernel|``)."""
        return masked_linear_params(
            in_features,
            self.out_features,
            mask_type=self.mask_type,
            use_bias=self.use_bias,
            kernel_init=self.kernel_init,
            bias_init=self.bias_init,
            mask_init=self.mask_init,
            scores_init=self.scores_init,
            abs_kernel=abs_kernel,
        )


# --- params tables ------------------------------------------------------------------------------


def mask_params(shape: Shape, mask_init: Callable[..., Any], *, draws_key: bool) -> tuple:
    """``Mask``: the boolean ``mask`` of ``shape`` (NNX draws a key only when given rngs)."""
    return (P.Spec("mask", shape, mask_init, P.MASKS, draws_key=draws_key),)


def hard_concrete_params(shape: Shape, log_alpha_init: Callable[..., Any]) -> tuple:
    """``HardConcreteGate``: ``log_alpha`` of ``shape``."""
    return (P.Spec("log_alpha", shape, log_alpha_init),)


def masked_linear_params(
    in_features: int,
    out_features: int,
    *,
    mask_type: str,
    mask_init: Callable[..., Any],
    scores_init: Callable[..., Any] | None,
    abs_kernel: Callable[..., Any],
    **dense: Any,
) -> tuple:
    """``MaskedLinear``: ``kernel``, ``bias`` (``dense``: ``use_bias``, ``kernel_init``,
    ``bias_init`` of :func:`~hadamard_jax._layers.params.dense`), then the mask of its type:
    the fixed ``mask`` (drawing a key, as the NNX module always has) or the ``"ste"``
    ``scores`` (``abs_kernel``, the front end's ``|kernel|`` initialiser, unless
    ``scores_init``). The hard-concrete gate is a child module, not a variable."""
    shape = (in_features, out_features)
    specs = P.dense("", in_features, out_features, **dense)
    if mask_type == "fixed":
        return (*specs, P.Spec("mask", shape, mask_init, P.MASKS, like="kernel", draws_key=True))
    if mask_type == "ste":
        if scores_init is None:
            return (*specs, P.Spec("scores", shape, abs_kernel, like="kernel", draws_key=False))
        return (*specs, P.Spec("scores", shape, scores_init))
    return specs


# --- pure functions -----------------------------------------------------------------------------


def layer_mask(
    mask_type: str,
    values: dict[str, Any],
    *,
    sparsity: float | None,
    threshold: float | None,
    gate: Callable[[], jax.Array],
) -> jax.Array:
    """``MaskedLinear``'s mask ``[in, out]``: the fixed ``mask``, the ``"ste"`` mask of
    ``scores``, or the hard-concrete gate values (``gate()``)."""
    if mask_type == "fixed":
        return values["mask"]
    if mask_type == "ste":
        return F.ste_scores_mask(values["scores"], sparsity=sparsity, threshold=threshold)
    return gate()


def gate_values(gate: Any, key: jax.Array | None, deterministic: bool) -> jax.Array:
    """The gate values ``z`` of a ``HardConcreteGate`` (its ``log_alpha``, ``beta``, ``gamma``,
    ``zeta``); sampled with ``key`` unless ``deterministic``."""
    params = fields(gate, ("beta", "gamma", "zeta"))
    return F.hard_concrete_gate(key, gate.log_alpha, deterministic=deterministic, **params)


def gate_penalty(gate: Any) -> jax.Array:
    """A ``HardConcreteGate``'s expected number of non-zero gates."""
    return F.l0_penalty(gate.log_alpha, **fields(gate, ("beta", "gamma", "zeta")))


def masked_linear(
    x: Any, values: dict[str, Any], mask: Any, *, dtype: Any, precision: Any
) -> jax.Array:
    """``x @ (kernel * mask) + bias`` (masked entries exactly zero)."""
    return F.masked_linear(
        x, values["kernel"], values["bias"], mask, dtype=dtype, precision=precision
    )
