"""Linen-only helpers: building a family's variables from its table (:mod:`.._layers.params`)."""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import jax
from flax import linen as nn
from flax.core import meta

from hadamard_jax._layers import params as P


def init_key(module: nn.Module) -> jax.Array:
    """The ``"params"`` rng when the module is initialised, else a fixed key (never used)."""
    return module.make_rng("params") if module.has_rng("params") else jax.random.key(0)


def _mask(module: nn.Module, spec: P.Spec) -> Any:
    """The boolean mask ``masks/<name>``, with the partitioning of its ``like`` kernel."""
    boxed = module.get_variable(P.PARAMS, spec.like) if spec.like else None

    def init():
        mask = spec.init(init_key(module), spec.shape, spec.dtype_of(None))
        if isinstance(boxed, meta.AxisMetadata) and not isinstance(mask, meta.AxisMetadata):
            mask = boxed.replace_boxed(mask)
        return mask

    return meta.unbox(module.variable(P.MASKS, spec.name, init).value)


def _one(module: nn.Module, spec: P.Spec, param_dtype: Any) -> Any:
    if spec.collection == P.PARAMS:
        return module.param(spec.name, spec.init, spec.shape, spec.dtype_of(param_dtype))
    if spec.collection == P.MASKS:
        return _mask(module, spec)
    init = lambda: spec.init(init_key(module), spec.shape, spec.dtype_of(param_dtype))  # noqa: E731
    return meta.unbox(module.variable(P.ADAPTERS, spec.name, init).value)


def build(module: nn.Module, specs: tuple[P.Spec, ...], param_dtype: Any) -> dict[str, Any]:
    """``{name: array or None}``: each present spec as ``self.param`` (params) or
    ``self.variable`` (``"masks"``, ``"adapters"``); absent specs map to ``None``.

    Call it inside ``@nn.compact``. Linen derives each variable's init key from its name, so the
    table order does not change the values.
    """
    return {s.name: _one(module, s, param_dtype) if s.present else None for s in specs}


#: How many checked options :class:`Checked` keeps (least recently used dropped first).
CHECKED_CACHE_SIZE = 256


def _typed(value: Any) -> Any:
    """``value`` with its type (inside tuples too), so that equal values of other types (``1``,
    ``1.0``, ``True``) make different keys: each is checked on its own."""
    if isinstance(value, tuple):
        return (type(value), tuple(_typed(v) for v in value))
    return (type(value), value)


class _Fields:
    """A module's option fields as a cache key: equal when the values are equal and of the
    same types. Hashing raises ``TypeError`` when a value is unhashable."""

    def __init__(self, cls: type[P.Options], values: dict[str, Any]):
        self.cls, self.values = cls, values
        self.key = (cls, tuple((name, _typed(v)) for name, v in values.items()))
        self.hash = hash(self.key)

    def __hash__(self) -> int:
        return self.hash

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Fields) and self.key == other.key


@functools.lru_cache(maxsize=CHECKED_CACHE_SIZE)
def _checked(fields: _Fields) -> P.Options:
    """The checked options of ``fields`` (a failed check raises and is not cached)."""
    return fields.cls.of(fields.values)


def checked_options(cls: type[P.Options], module: Any) -> P.Options:
    """``cls.of(module)``, checked once per distinct set of field values.

    Flax runs ``__post_init__`` again on every clone of a module (each un-jitted ``apply``), so
    the options built from equal fields are kept (an LRU cache of :data:`CHECKED_CACHE_SIZE`);
    fields with an unhashable value (an initialiser object without ``__hash__``) are checked
    each time.
    """
    values = cls.values_of(module)
    try:
        fields = _Fields(cls, values)
    except TypeError:
        return cls.of(values)
    return _checked(fields)


class Checked(nn.Module):
    """A Linen module whose fields are checked once, at construction, into a family's options.

    A subclass names the family's :class:`~hadamard_jax._layers.params.Options` dataclass as
    ``_options``; ``self.options`` is the checked instance built from the module's fields
    (:func:`checked_options`: a clone with the same fields reuses it).
    """

    _options: ClassVar[type[P.Options]]

    def __post_init__(self) -> None:
        object.__setattr__(self, "_checked", checked_options(self._options, self))
        super().__post_init__()

    @property
    def options(self) -> Any:
        """The checked options (a ``_layers`` family dataclass)."""
        return self._checked  # type: ignore[attr-defined]
