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
import jax.numpy as jnp

from hadamard_jax._layers import functional as F
from hadamard_jax._layers import options
from hadamard_jax._layers import params as P
from hadamard_jax._src import checks, docstrings
from hadamard_jax._src.checks import Shape
from hadamard_jax._src.learned_masks import ste_mask
from hadamard_jax._src.sparsity.patterns import Pattern, Unstructured, as_pattern, table

#: The ``mask_type=`` values of ``MaskedLinear``, with what each one holds (read by the
#: docstrings of both front ends).
MASK_TYPES: dict[str, str] = {
    "fixed": (
        "a boolean mask ``mask`` (all ones at first, by ``mask_init``; it takes the kernel's "
        "partitioning), applied with select semantics: masked weights are exactly zero and get "
        "exactly zero gradient. ``prune`` sets it (magnitude, global magnitude, random, N:M, "
        "block and channel patterns). With ``sparsity=s`` (or an :class:`~hadamard_jax.NM` "
        "``pattern``, which implies it) the mask starts magnitude-pruned in ``pattern``: "
        "``pattern.mask(kernel, s)`` of the initial kernel, instead of ``mask_init``."
    ),
    "ste": (
        "learned ``scores`` (a param, by default ``|kernel|`` at init) give a hard 0/1 mask "
        "through :func:`hadamard_jax.ste_mask` with a straight-through gradient (edge-popup / "
        "movement pruning): ``sparsity=s`` prunes the ``round(s * in * out)`` lowest scores "
        "(Python's ``round``, half to even: the one rounding rule of the library, the same "
        "count as ``prune(layer, s)``; 5 weights at ``s = 0.5`` keep 3), ``threshold=`` keeps "
        "scores above it. A ``pattern`` other than unstructured prunes the ``round(s * units)`` "
        "units of lowest pooled score *value* (:meth:`hadamard_jax.Pattern.top`; an N:M "
        "pattern implies ``s``, so ``sparsity`` may be left out); it takes no ``threshold``."
    ),
    "hard_concrete": (
        "a ``HardConcreteGate`` ``gate`` over the kernel (L0 regularisation, Louizos et al. "
        "2018); add its ``l0_penalty`` to the loss. Its gates are single weights, one "
        "``log_alpha`` each, so it takes no ``pattern`` (a structured gate would be a different "
        "parameter, one ``log_alpha`` per unit): any pattern but unstructured is a "
        "``ValueError``."
    ),
}


def mask_types_doc() -> str:
    """The bullet list of :data:`MASK_TYPES` for a docstring."""
    return "\n".join(f"* ``{name!r}``: {text}" for name, text in MASK_TYPES.items())


def patterns_doc() -> str:
    """What ``pattern=`` does, and the pattern table, for a docstring."""
    return (
        '``pattern`` is what the ``"ste"`` mask and a magnitude-initialised fixed mask keep '
        "whole\n(the same objects and defaults as ``prune``, "
        ":func:`hadamard_jax.sparse.sparsify` and the\nmask makers; a pattern's axes are axes "
        f"of the kernel ``[in, out]``):\n\n{table()}"
    )


def document(obj: Any) -> None:
    """Fills ``{{MASK_TYPES}}`` (:func:`mask_types_doc`) and ``{{PATTERNS}}``
    (:func:`patterns_doc`) in ``obj``'s docstring."""
    docstrings.fill_in(obj, MASK_TYPES=mask_types_doc(), PATTERNS=patterns_doc())


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
    """``"ste"`` needs exactly one of ``sparsity``/``threshold``, ``"fixed"`` takes an
    optional ``sparsity`` (a magnitude-initialised mask), ``"hard_concrete"`` neither."""
    if mask_type == "ste" and (sparsity is None) == (threshold is None):
        raise ValueError(
            f"{op}: mask_type='ste' needs exactly one of sparsity= (prune the lowest scores) or "
            "threshold= (keep scores > threshold)."
        )
    if (threshold is not None and mask_type != "ste") or (
        sparsity is not None and mask_type == "hard_concrete"
    ):
        raise ValueError(
            f"{op}: sparsity/threshold apply to mask_type='ste' (sparsity also to 'fixed', a "
            f"magnitude-initialised mask), not {mask_type!r}; use prune() to set a fixed mask."
        )
    if sparsity is not None:
        options.fraction(sparsity, "sparsity", op)
    if threshold is not None:
        checks.static_real(threshold, "threshold", op)


def _check_pattern(mask_type: str, pattern: Any, sparsity: Any, threshold: Any, op: str) -> Pattern:
    """``pattern`` as an object (strings via ``as_pattern``), checked against the mask type
    and the ``sparsity``/``threshold`` rule; then the rule itself (:func:`_check_ste_rule`)."""
    pattern = as_pattern(pattern, "pattern", op).validate(op)
    if isinstance(pattern, Unstructured):
        _check_ste_rule(mask_type, sparsity, threshold, op)
        return pattern
    if mask_type == "hard_concrete":
        raise ValueError(
            f"{op}: pattern={pattern} does not apply to mask_type='hard_concrete' (one gate per "
            "weight); use mask_type='ste' or 'fixed' with a pattern."
        )
    if threshold is not None:
        raise ValueError(
            f"{op}: threshold= keeps single scores; pattern={pattern} keeps whole units by "
            "sparsity=."
        )
    implied = pattern.sparsity()
    if sparsity is None and implied is None:
        raise ValueError(
            f"{op}: pattern={pattern} needs sparsity= (the fraction of its units pruned) with "
            f"mask_type={mask_type!r}."
        )
    _check_ste_rule(mask_type, implied if sparsity is None else sparsity, None, op)
    if sparsity is not None and implied is not None:
        pattern.kept(options.fraction(sparsity, "sparsity", op), 1, op)  # contradiction: raises
    return pattern


#: The name in ``MaskedLinear``'s messages.
OP = "MaskedLinear"


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
    pattern: Any = "unstructured",
    **gate: Any,
) -> Pattern:
    """``MaskedLinear``'s arguments (``in_features``: NNX only; ``gate``: the gate fields,
    checked as ``HardConcreteGate``'s); returns the pattern as an object, checked against the
    kernel ``[in_features, out_features]`` when ``in_features`` is given.

    ``mask_type="ste"`` needs exactly one of ``sparsity`` (a number in ``[0, 1]``) and
    ``threshold`` (a real number); ``"fixed"`` takes an optional ``sparsity`` (then not a
    ``mask_init`` of its own); ``"hard_concrete"`` neither. A ``pattern`` other than
    unstructured takes ``sparsity`` (implied by :class:`~hadamard_jax.NM`), no ``threshold``,
    and no ``"hard_concrete"``.
    """
    op = OP
    if in_features is not None:
        options.size(in_features, "in_features", op)
    options.size(out_features, "out_features", op)
    checks.check_choice(mask_type, "mask_type", op, tuple(MASK_TYPES))
    pattern = _check_pattern(mask_type, pattern, sparsity, threshold, op)
    if magnitude_init(mask_type, sparsity, pattern) and mask_init is not options.default_mask_init:
        raise ValueError(
            f"{op}: mask_init and sparsity={sparsity!r}/pattern={pattern} both set the fixed "
            "mask; give one of them."
        )
    if in_features is not None:
        pattern = pattern.check((in_features, out_features), 0, op, array="kernel")
    options.flag(use_bias, "use_bias", op)
    options.dtypes(dtype, gate["param_dtype"], op)
    for name, fn in (("kernel_init", kernel_init), ("bias_init", bias_init)):
        options.function(fn, name, op)
    options.function(mask_init, "mask_init", op)
    options.function(scores_init, "scores_init", op, optional=True)
    check_hard_concrete_gate(shape=(), op=op, **gate)
    return pattern


def magnitude_init(mask_type: str, sparsity: float | None, pattern: Pattern) -> bool:
    """Whether a fixed mask starts magnitude-pruned (``sparsity`` given or implied)."""
    return mask_type == "fixed" and (sparsity is not None or pattern.sparsity() is not None)


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
class GateOptions(P.Options):
    """The hard-concrete options that ``HardConcreteGate`` and ``MaskedLinear`` share."""

    beta: Any
    gamma: Any
    zeta: Any
    log_alpha_init: Any
    deterministic: Any
    param_dtype: Any
    rng_collection: Any

    def gate_args(self) -> dict[str, Any]:
        """These fields, as a ``HardConcreteGate`` takes them."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(GateOptions)}


@dataclasses.dataclass(frozen=True)
class HardConcreteGateOptions(GateOptions):
    """``HardConcreteGate``'s options, checked once (:func:`check_hard_concrete_gate`;
    ``shape`` made a tuple)."""

    shape: Shape

    def __post_init__(self) -> None:
        self.set(shape=check_hard_concrete_gate(**self.items()))

    def specs(self) -> tuple:
        """:func:`hard_concrete_params` of these options."""
        return hard_concrete_params(self.shape, self.log_alpha_init)


@dataclasses.dataclass(frozen=True)
class MaskedLinearOptions(GateOptions):
    """``MaskedLinear``'s options, checked once (:func:`check_masked_linear`; ``pattern`` made
    an object, resolved for the kernel where ``in_features`` is known); ``in_features``: NNX
    only (Linen infers it)."""

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
    in_features: Any = None
    pattern: Any = "unstructured"

    def __post_init__(self) -> None:
        args = {k: v for k, v in self.items().items() if k != "precision"}
        self.set(pattern=check_masked_linear(**args))

    def specs(self, in_features: int, kernel: Callable[[], Any]) -> tuple:
        """:func:`masked_linear_params` of these options (``kernel()``: the kernel's value,
        for the ``|kernel|`` scores and a magnitude-initialised mask); checks the pattern
        against the kernel (Linen: the input size is known now, at trace time)."""
        pattern = self.pattern.check((in_features, self.out_features), 0, OP, array="kernel")
        mask_init = self.mask_init
        if magnitude_init(self.mask_type, self.sparsity, pattern):
            mask_init = _pattern_init(kernel, pattern, self.sparsity)
        passed = ("use_bias", "kernel_init", "bias_init", "mask_type", "scores_init")
        return masked_linear_params(
            in_features,
            self.out_features,
            mask_init=mask_init,
            kernel=kernel,
            **fields(self, passed),
        )

    def mask(self, values: dict[str, Any], gate: Callable[[], jax.Array]) -> jax.Array:
        """The layer's mask ``[in, out]`` from its variables ``values``: the fixed ``mask``,
        the ``"ste"`` mask of ``scores`` (in a pattern: :func:`ste_units`), or the
        hard-concrete gate values (``gate()``)."""
        if self.mask_type == "fixed":
            return values["mask"]
        if self.mask_type == "ste" and not isinstance(self.pattern, Unstructured):
            return ste_units(values["scores"], self.sparsity, self.pattern)
        if self.mask_type == "ste":
            rule = {"sparsity": self.sparsity, "threshold": self.threshold}
            return F.ste_scores_mask(values["scores"], **rule)
        return gate()


def _pattern_init(kernel: Callable[[], Any], pattern: Pattern, sparsity: float | None) -> Any:
    """The initialiser of a magnitude-initialised fixed mask: ``pattern.mask(kernel, s)``."""

    def init(key: jax.Array, shape: Shape, dtype: Any) -> jax.Array:
        return pattern.mask(kernel(), sparsity, op=OP, array="kernel")

    return init


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
    kernel: Callable[[], Any],
    **dense: Any,
) -> tuple:
    """``MaskedLinear``: ``kernel``, ``bias`` (``dense``: ``use_bias``, ``kernel_init``,
    ``bias_init`` of :func:`~hadamard_jax._layers.params.dense`), then the mask of its type:
    the fixed ``mask`` (drawing a key, as the NNX module always has) or the ``"ste"``
    ``scores`` (``|kernel()|``, ``kernel`` the front end's reader of the kernel's value, unless
    ``scores_init``). The hard-concrete gate is a child module, not a variable."""
    shape = (in_features, out_features)
    specs = P.dense("", in_features, out_features, **dense)
    if mask_type == "fixed":
        return (*specs, P.Spec("mask", shape, mask_init, P.MASKS, like="kernel", draws_key=True))
    if mask_type == "ste":
        if scores_init is None:

            def abs_kernel(key: jax.Array, shape: Shape, dtype: Any) -> jax.Array:
                return jnp.abs(kernel()).astype(dtype)

            return (*specs, P.Spec("scores", shape, abs_kernel, like="kernel", draws_key=False))
        return (*specs, P.Spec("scores", shape, scores_init))
    return specs


# --- pure functions -----------------------------------------------------------------------------


def ste_units(scores: Any, sparsity: float | None, pattern: Pattern) -> jax.Array:
    """The straight-through mask of ``scores`` that keeps whole units of ``pattern``
    (:func:`hadamard_jax.ste_mask` with ``pattern=``), ranked over the whole kernel: under
    Explicit mesh axes the scores are gathered and the mask goes back to their sharding."""
    scores = jnp.asarray(checks.as_array(scores, "scores", OP))
    gathered = F.unsharded(scores)
    mask = ste_mask(gathered, sparsity=sparsity, pattern=pattern)
    if gathered is scores:
        return mask
    return jax.sharding.reshard(mask, jax.typeof(scores).sharding)


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
