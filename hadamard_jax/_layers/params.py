"""A layer family's variables, declared once: the table both front ends build from.

A family (``GatedMLP``, ``RGLRU``, ...) writes one function ``<family>_params(...)`` that returns
a tuple of :class:`Spec`: the name, shape, initialiser and collection of every variable the
layer can hold, in creation order. :func:`hadamard_jax.nnx._common.build` turns the table into
``nnx.Param``/:class:`~hadamard_jax.nnx.MaskVar`/:class:`~hadamard_jax.nnx.AdapterParam`
attributes; :func:`hadamard_jax.linen._common.build` into ``self.param``/``self.variable`` calls.
Names, shapes and initialisers are therefore written once, and both front ends hand the same
``{name: array or None}`` dict to the family's pure apply function.

Example::

  >>> import jax
  >>> from hadamard_jax._layers import params as P
  >>> specs = P.dense("gate", 4, 8, use_bias=False, kernel_init=jax.nn.initializers.zeros,
  ...                 bias_init=jax.nn.initializers.zeros)
  >>> [(s.name, s.shape, s.present) for s in specs]
  [('gate_kernel', (4, 8), True), ('gate_bias', (8,), False)]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

import jax.numpy as jnp

#: The collection of trainable parameters (NNX: ``nnx.Param``).
PARAMS = "params"
#: The collection of fixed boolean masks (NNX: ``MaskVar``).
MASKS = "masks"
#: The collection of adapter parameters (NNX: ``AdapterParam``).
ADAPTERS = "adapters"
COLLECTIONS = (PARAMS, MASKS, ADAPTERS)


@dataclasses.dataclass(frozen=True)
class Spec:
    """One variable of a layer.

    Attributes:
      name: the attribute (NNX) and variable (Linen) name, e.g. ``"gate_kernel"``.
      shape: its shape.
      init: a JAX initialiser ``init(key, shape, dtype)``.
      collection: :data:`PARAMS`, :data:`MASKS` or :data:`ADAPTERS`.
      dtype: its dtype; ``None`` means the module's ``param_dtype`` (masks: ``bool``).
      present: ``False`` for an optional variable the options leave out (``use_bias=False``):
        NNX stores ``None`` under the name, Linen creates nothing, and the apply function
        receives ``None``.
      like: for a mask, the kernel whose partitioning metadata it copies.
      draws_key: whether NNX draws a fresh key from ``rngs.params()`` for ``init`` (default:
        yes, except for masks, which get a fixed key). Kept so that a table reproduces the
        creation order, hence the initial values, of the module it replaced.
    """

    name: str
    shape: tuple[int, ...]
    init: Callable[..., Any]
    collection: str = PARAMS
    dtype: Any = None
    present: bool = True
    like: str | None = None
    draws_key: bool | None = None

    def __post_init__(self) -> None:
        if self.collection not in COLLECTIONS:
            raise ValueError(f"Spec {self.name!r}: collection must be one of {COLLECTIONS}.")

    @property
    def needs_key(self) -> bool:
        """Whether NNX draws ``rngs.params()`` for this variable."""
        return self.collection != MASKS if self.draws_key is None else self.draws_key

    def dtype_of(self, param_dtype: Any) -> Any:
        """The dtype this variable is created with."""
        if self.dtype is not None:
            return self.dtype
        return jnp.bool_ if self.collection == MASKS else param_dtype


def dense(
    prefix: str,
    n_in: int,
    n_out: int,
    *,
    use_bias: bool,
    kernel_init: Callable[..., Any],
    bias_init: Callable[..., Any],
) -> tuple[Spec, Spec]:
    """``<prefix>_kernel [n_in, n_out]`` and ``<prefix>_bias [n_out]`` (present if ``use_bias``).

    An empty ``prefix`` gives ``kernel`` and ``bias``.
    """
    join = f"{prefix}_" if prefix else ""
    return (
        Spec(f"{join}kernel", (n_in, n_out), kernel_init),
        Spec(f"{join}bias", (n_out,), bias_init, present=use_bias),
    )


def masks_of(
    specs: Iterable[Spec], kernels: Iterable[str], init: Callable[..., Any], *, present: bool
) -> tuple[Spec, ...]:
    """A boolean mask ``<name>_mask`` per kernel named in ``kernels`` (``kernel`` -> ``mask``).

    Each mask has its kernel's shape and copies its partitioning.
    """
    by_name = {s.name: s for s in specs}
    out = []
    for kernel in kernels:
        name = "mask" if kernel == "kernel" else kernel.removesuffix("_kernel") + "_mask"
        shape = by_name[kernel].shape
        out.append(Spec(name, shape, init, MASKS, present=present, like=kernel))
    return tuple(out)


def names(specs: Iterable[Spec], collection: str | None = None) -> tuple[str, ...]:
    """The names in ``specs`` (of one ``collection`` if given), present or not."""
    return tuple(s.name for s in specs if collection is None or s.collection == collection)


class Options:
    """Base of a family's frozen options dataclass, checked once in its ``__post_init__``.

    A front end builds one from its constructor's arguments (NNX: ``Options.of(locals())``) or
    its own fields (Linen: ``Options.of(self)``), so the option names are written once, in the
    dataclass; :meth:`items` lists them back (NNX stores them as attributes).
    """

    @classmethod
    def values_of(cls, source: Any) -> dict[str, Any]:
        """``{name: value}`` of ``cls``'s init fields found in a dict or an object (a name it
        lacks is left out: the field's default applies)."""
        fields = [f.name for f in dataclasses.fields(cls) if f.init]  # type: ignore[arg-type]
        if isinstance(source, dict):
            return {n: source[n] for n in fields if n in source}
        return {n: getattr(source, n) for n in fields if hasattr(source, n)}

    @classmethod
    def of(cls, source: Any):
        """The options named by ``cls``'s init fields, read from a dict or an object (a name
        it lacks takes the field's default)."""
        return cls(**cls.values_of(source))

    def items(self) -> dict[str, Any]:
        """``{name: value}`` of the init fields (as checked and normalised)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}  # type: ignore[arg-type]

    def set(self, **values: Any) -> None:
        """Normalise fields in ``__post_init__`` (the dataclass is frozen)."""
        for name, value in values.items():
            object.__setattr__(self, name, value)
