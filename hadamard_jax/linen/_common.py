"""Linen-only helpers: building a family's variables from its table (:mod:`.._layers.params`)."""

from __future__ import annotations

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


class Checked(nn.Module):
    """A Linen module whose fields are checked once, at construction, into a family's options.

    A subclass names the family's :class:`~hadamard_jax._layers.params.Options` dataclass as
    ``_options``; ``self.options`` is the checked instance built from the module's fields.
    """

    _options: ClassVar[type[P.Options]]

    def __post_init__(self) -> None:
        object.__setattr__(self, "_checked", self._options.of(self))
        super().__post_init__()

    @property
    def options(self) -> Any:
        """The checked options (a ``_layers`` family dataclass)."""
        return self._checked  # type: ignore[attr-defined]
