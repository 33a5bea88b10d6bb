"""Argument checks, defaults and constants of the Flax modules, shared by NNX and Linen.

One check function per module (:func:`check_glu`, :func:`check_gated_mlp`, ...), called by the
NNX ``__init__`` and the Linen ``__post_init__``, so that both front ends judge every argument
at construction time, the same way, with the checks of :mod:`hadamard_jax._src.checks`: a bad
argument is a ``TypeError`` (wrong kind: a string for a number, a float for a size, a non-bool
flag) or a ``ValueError`` (out of range), naming the module and the argument. Sizes that the
Linen modules infer from their inputs (``in_features``) are checked where they are given.
"""

from __future__ import annotations

import numbers
from typing import Any

import jax
import numpy as np

from hadamard_jax._src import checks, gates, learned_masks
from hadamard_jax._src.checks import Shape

# --- defaults and constants ---------------------------------------------------------------------

#: Default kernel initialiser (as ``nnx.Linear``/``nn.Dense``).
default_kernel_init = jax.nn.initializers.lecun_normal()
#: Default bias initialiser.
default_bias_init = jax.nn.initializers.zeros
#: Default fixed-mask initialiser: all ones, nothing masked.
default_mask_init = jax.nn.initializers.ones
#: Default ``Highway`` gate bias: the layer starts close to the identity (Srivastava et al.).
GATE_BIAS = -2.0
default_gate_bias_init = jax.nn.initializers.constant(GATE_BIAS)
#: Default initial ``log_alpha`` of a hard-concrete gate: 3 opens every gate deterministically
#: (``z = 1``) and samples ``z = 1`` most of the time, so training starts from the dense model.
LOG_ALPHA = 3.0
default_log_alpha_init = jax.nn.initializers.constant(LOG_ALPHA)
#: The hard-concrete temperature and stretch bounds of Louizos et al. (2018).
BETA, GAMMA, ZETA = 2.0 / 3.0, -0.1, 1.1

#: The Linen collection of the masks (NNX: the ``MaskVar`` variable type).
MASKS = "masks"
#: The Linen collection where each hard-concrete gate sows its own L0 penalty.
PENALTIES = "intermediates"
#: The name under which a gate sows its penalty.
L0_PENALTY = "l0_penalty"
#: The ``activation=`` values of ``GLU`` and ``GatedMLP``: the gate table's names.
ACTIVATIONS = gates.NAMES


# --- one kind of argument each ------------------------------------------------------------------


def size(value: Any, name: str, op: str) -> int:
    """A layer size: a static int >= 1."""
    return checks.static_int(value, name, op, lo=1)


def optional_size(value: Any, name: str, op: str) -> int | None:
    """``None`` or a layer size."""
    return None if value is None else size(value, name, op)


def as_shape(value: Any, name: str, op: str) -> Shape:
    """A static shape: an int or a tuple/list of ints >= 0."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        value = (value,)
    if not isinstance(value, (tuple, list)):
        raise TypeError(f"{op}: {name} must be a tuple of ints, got {type(value).__name__}.")
    return tuple(checks.static_int(d, f"{name}[{i}]", op, lo=0) for i, d in enumerate(value))


def flag(value: Any, name: str, op: str) -> bool:
    """A static bool."""
    return checks.check_bool(value, name, op)


def optional_flag(value: Any, op: str) -> bool | None:
    """``deterministic``: ``None`` (decide later) or a static bool."""
    return None if value is None else checks.check_bool(value, "deterministic", op)


def deterministic_of(call: Any, attribute: Any, op: str) -> bool:
    """The ``deterministic`` that applies to a call: the call's argument, else the module's,
    else ``False`` (training)."""
    for value in (call, attribute):
        if value is not None:
            return checks.check_bool(value, "deterministic", op)
    return False


def rate(value: Any, name: str, op: str) -> float:
    """A dropout rate: a static number in ``[0, 1)``."""
    return checks.static_fraction(value, name, op, below_one=True)


def fraction(value: Any, name: str, op: str) -> float:
    """A sparsity: a static number in ``[0, 1]`` (``True``, strings and arrays refused)."""
    return checks.static_fraction(value, name, op)


def gate(activation: Any, approximate: Any, op: str) -> None:
    """``activation=`` (a gate of the gate table) and ``approximate=`` (a bool, ``geglu``
    only)."""
    gates.activation_of(activation, approximate, op)


def hard_concrete(beta: Any, gamma: Any, zeta: Any, op: str) -> tuple[float, float, float]:
    """The hard-concrete ``(beta, gamma, zeta)``: ``beta > 0``, ``gamma < 0``, ``zeta > 1``."""
    return learned_masks.check_params(beta, gamma, zeta, op)


def dtypes(dtype: Any, param_dtype: Any, op: str) -> None:
    """``dtype`` (``None``: inferred) and ``param_dtype`` (required)."""
    checks.check_dtype_arg(dtype, "dtype", op)
    if param_dtype is None:
        raise TypeError(f"{op}: param_dtype must be a dtype, got None.")
    checks.check_dtype_arg(param_dtype, "param_dtype", op)


def function(value: Any, name: str, op: str, *, optional: bool = False) -> None:
    """An initialiser or activation: a callable (or ``None`` if ``optional``)."""
    if (value is None and optional) or callable(value):
        return
    raise TypeError(f"{op}: {name} must be callable, got {type(value).__name__} ({value!r:.60}).")


def string(value: Any, name: str, op: str) -> str:
    """A name, such as an rng collection."""
    if not isinstance(value, str):
        raise TypeError(f"{op}: {name} must be a string, got {type(value).__name__}.")
    return value


def number(value: Any, name: str, op: str) -> None:
    """A static real number; infinities allowed (e.g. ``fill=-inf``)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, (numbers.Real, np.integer, np.floating)
    ):
        raise TypeError(f"{op}: {name} must be a real number, got {type(value).__name__}.")


def _linear(
    op: str,
    *,
    use_bias: Any,
    dtype: Any,
    param_dtype: Any,
    kernel_init: Any,
    bias_init: Any,
) -> None:
    """The arguments every projection has (as ``nnx.Linear``)."""
    flag(use_bias, "use_bias", op)
    dtypes(dtype, param_dtype, op)
    function(kernel_init, "kernel_init", op)
    function(bias_init, "bias_init", op)


# --- one function per module --------------------------------------------------------------------


def check_glu(
    *,
    out_features: Any,
    activation: Any,
    approximate: Any,
    fused_kernel: Any,
    use_bias: Any,
    dtype: Any,
    param_dtype: Any,
    kernel_init: Any,
    bias_init: Any,
    in_features: Any = None,
) -> None:
    """``GLU``'s arguments (``in_features``: NNX only)."""
    op = "GLU"
    if in_features is not None:
        size(in_features, "in_features", op)
    size(out_features, "out_features", op)
    gate(activation, approximate, op)
    flag(fused_kernel, "fused_kernel", op)
    _linear(
        op,
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=param_dtype,
        kernel_init=kernel_init,
        bias_init=bias_init,
    )


def check_gated_mlp(
    *,
    hidden_features: Any,
    out_features: Any,
    activation: Any,
    approximate: Any,
    use_bias: Any,
    dropout_rate: Any,
    deterministic: Any,
    masked: Any,
    dtype: Any,
    param_dtype: Any,
    kernel_init: Any,
    bias_init: Any,
    down_kernel_init: Any,
    rng_collection: Any,
    in_features: Any = None,
    ia3: Any = False,
) -> None:
    """``GatedMLP``'s arguments (``in_features``: NNX only)."""
    op = "GatedMLP"
    if in_features is not None:
        size(in_features, "in_features", op)
    size(hidden_features, "hidden_features", op)
    optional_size(out_features, "out_features", op)
    gate(activation, approximate, op)
    rate(dropout_rate, "dropout_rate", op)
    optional_flag(deterministic, op)
    flag(masked, "masked", op)
    flag(ia3, "ia3", op)
    _linear(
        op,
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=param_dtype,
        kernel_init=kernel_init,
        bias_init=bias_init,
    )
    function(down_kernel_init, "down_kernel_init", op, optional=True)
    string(rng_collection, "rng_collection", op)


def check_highway(
    *,
    features: Any,
    activation: Any,
    use_bias: Any,
    gate_bias_init: Any,
    dtype: Any,
    param_dtype: Any,
    kernel_init: Any,
    bias_init: Any,
) -> None:
    """``Highway``'s arguments."""
    op = "Highway"
    size(features, "features", op)
    function(activation, "activation", op)
    function(gate_bias_init, "gate_bias_init", op)
    _linear(
        op,
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=param_dtype,
        kernel_init=kernel_init,
        bias_init=bias_init,
    )


def check_gated_residual(
    *,
    hidden_features: Any,
    out_features: Any,
    context_features: Any,
    dropout_rate: Any,
    deterministic: Any,
    use_bias: Any,
    epsilon: Any,
    dtype: Any,
    param_dtype: Any,
    kernel_init: Any,
    bias_init: Any,
    in_features: Any = None,
) -> None:
    """``GatedResidual``'s arguments (``in_features``: NNX only)."""
    op = "GatedResidual"
    if in_features is not None:
        size(in_features, "in_features", op)
    size(hidden_features, "hidden_features", op)
    optional_size(out_features, "out_features", op)
    optional_size(context_features, "context_features", op)
    rate(dropout_rate, "dropout_rate", op)
    optional_flag(deterministic, op)
    checks.static_real(epsilon, "epsilon", op, lambda v: v > 0, "a finite number > 0")
    _linear(
        op,
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=param_dtype,
        kernel_init=kernel_init,
        bias_init=bias_init,
    )


def first(*args: Any) -> Any:
    """The first argument that is not ``None``."""
    for a in args:
        if a is not None:
            return a
    return None


def check_gated_rms_norm(
    *,
    eps: Any,
    activation: Any,
    norm_before_gate: Any,
    dtype: Any,
    param_dtype: Any,
    scale_init: Any,
    num_features: Any = None,
) -> None:
    """``GatedRMSNorm``'s arguments (``num_features``: NNX only)."""
    op = "GatedRMSNorm"
    if num_features is not None:
        size(num_features, "num_features", op)
    checks.static_real(eps, "eps", op, lambda v: v > 0, "a number > 0")
    gates.plain_spec_of(activation, op)
    flag(norm_before_gate, "norm_before_gate", op)
    dtypes(dtype, param_dtype, op)
    function(scale_init, "scale_init", op)


#: The ``gate=`` choices of ``GatedMultiHeadAttention``: a gate per element of each head's
#: output, one per head, or none (Flax's ``MultiHeadAttention``).
ATTENTION_GATES = ("elementwise", "headwise")


def check_attention_gate(gate: Any, normalize_qk: Any, op: str = "GatedMultiHeadAttention") -> None:
    """``gate=`` (``"elementwise"``, ``"headwise"`` or ``None``); ``normalize_qk`` needs none."""
    if gate is None:
        return
    checks.check_choice(gate, "gate", op, ATTENTION_GATES)
    if flag(normalize_qk, "normalize_qk", op):
        raise ValueError(
            f"{op}: normalize_qk=True normalises the fused query and gate projection; use "
            "gate=None with normalize_qk, or normalize_qk=False with a gate."
        )


def check_gated_attention(
    *,
    gate: Any,
    normalize_qk: Any,
    num_heads: Any,
    qkv_features: Any,
    out_features: Any,
    dropout_rate: Any,
    op: str = "GatedMultiHeadAttention",
) -> int:
    """``GatedMultiHeadAttention``'s own arguments, NNX and Linen alike (construction time).

    ``gate`` and ``normalize_qk`` (:func:`check_attention_gate`), the sizes, and
    ``dropout_rate`` in ``[0, 1)`` (Flax's attention accepts any float: at 2.0 a training call
    returned zeros). Returns ``num_heads``."""
    check_attention_gate(gate, normalize_qk, op)
    heads = size(num_heads, "num_heads", op)
    optional_size(qkv_features, "qkv_features", op)
    optional_size(out_features, "out_features", op)
    rate(dropout_rate, "dropout_rate", op)
    return heads
