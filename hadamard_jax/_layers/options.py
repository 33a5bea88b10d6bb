"""Argument checks, defaults and constants of the Flax modules, shared by NNX and Linen.

One check per kind of argument, used by each family's frozen options dataclass (in its
``_layers/<family>.py``; :class:`TableOptions` checks its fields with a table of these), which
both front ends build once, at construction (NNX ``__init__``, Linen ``__post_init__``), so that
they judge every argument the same way, with the checks of :mod:`hadamard_jax._src.checks`: a bad
argument is a ``TypeError`` (wrong kind: a string for a number, a float for a size, a non-bool
flag) or a ``ValueError`` (out of range), naming the module and the argument. Sizes that the
Linen modules infer from their inputs (``in_features``) are checked where they are given.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any, ClassVar

import jax
import numpy as np

from hadamard_jax._layers import params as P
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
MASKS = P.MASKS
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


def first(*args: Any) -> Any:
    """The first argument that is not ``None``."""
    for a in args:
        if a is not None:
            return a
    return None


def pick(obj: Any, names: tuple[str, ...]) -> dict[str, Any]:
    """``{name: obj.name}``: the options a module hands to its family's pure apply function."""
    return {name: getattr(obj, name) for name in names}


# --- a family's arguments as a table: {argument: check(value, name, op)} ------------------------


def anything(value: Any, name: str, op: str) -> Any:
    """Not checked here (``precision`` goes to ``lax`` as is; a pair checked together)."""
    return value


def optional_function(value: Any, name: str, op: str) -> None:
    """``None`` or a callable."""
    function(value, name, op, optional=True)


def deterministic(value: Any, name: str, op: str) -> bool | None:
    """``deterministic=``: ``None`` or a static bool."""
    return optional_flag(value, op)


def dtype(value: Any, name: str, op: str) -> None:
    """``None`` (inferred) or a dtype."""
    checks.check_dtype_arg(value, name, op)


def param_dtype(value: Any, name: str, op: str) -> None:
    """A dtype (``None`` refused)."""
    dtypes(None, value, op)


def positive(value: Any, name: str, op: str) -> float:
    """A static real number > 0."""
    return checks.static_real(value, name, op, lambda v: v > 0, "a number > 0")


#: The arguments every projection has (as ``nnx.Linear``/``nn.Dense``).
DENSE = {
    "use_bias": flag,
    "dtype": dtype,
    "param_dtype": param_dtype,
    "precision": anything,
    "kernel_init": function,
    "bias_init": function,
}


def check_args(op: str, args: dict[str, Any], table: dict[str, Any]) -> None:
    """Checks each argument in ``args`` with its row of ``table``; an argument without a row is
    a ``TypeError`` (a front end passing what its family does not declare)."""
    for name, value in args.items():
        if name not in table:
            raise TypeError(f"{op}: unexpected argument {name!r}.")
        table[name](value, name, op)


class TableOptions(P.Options):
    """A family's options checked by a table: :attr:`CHECKS` maps each field to its check
    ``check(value, name, op)`` (:func:`check_args`); :meth:`check` adds the checks of several
    fields together. A subclass is a frozen dataclass naming its module as :attr:`op`."""

    op: ClassVar[str] = ""
    CHECKS: ClassVar[dict[str, Any]] = {}

    def __post_init__(self) -> None:
        check_args(self.op, self.items(), self.CHECKS)
        self.check()

    def check(self) -> None:
        """The checks of several fields together (none by default)."""

    def pick(self, names: tuple[str, ...]) -> dict[str, Any]:
        """``{name: value}`` of the fields ``names`` (what the apply function takes)."""
        return pick(self, names)


@dataclasses.dataclass(frozen=True)
class DenseOptions(TableOptions):
    """The fields every projection has (as ``nnx.Linear``/``nn.Dense``; checks: :data:`DENSE`);
    a family with projections adds its own fields."""

    use_bias: bool
    dtype: Any
    param_dtype: Any
    precision: Any
    kernel_init: Any
    bias_init: Any
