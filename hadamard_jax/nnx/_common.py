"""NNX-only helpers: the mask variable type, parameter creation and rng streams.

Everything the Linen modules share (argument checks, defaults, the layer functions) lives in
:mod:`hadamard_jax._layers`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from flax.typing import Dtype, Initializer

from hadamard_jax._layers import params as P


class MaskVar(nnx.Variable):
    """A mask: a non-trainable variable type of its own, kept apart from ``nnx.Param``.

    ``nnx.state(model, MaskVar)`` selects every mask; ``nnx.grad``/``optax`` over ``nnx.Param``
    never touch them.
    """


def param(init: Initializer, key: jax.Array, shape: tuple[int, ...], dtype: Dtype) -> nnx.Param:
    """``nnx.Param(init(key, shape, dtype))``; metadata from ``nnx.with_partitioning`` kept."""
    return nnx.Param(init(key, shape, dtype))


def sharding_metadata(var: nnx.Variable) -> dict[str, Any]:
    """The partitioning metadata of ``var`` (to give a mask the sharding of its kernel)."""
    meta = var.get_metadata()
    return {k: meta[k] for k in ("out_sharding", "mesh", "sharding_rules") if meta.get(k)}


def value(var: Any) -> Any:
    """The array held by an ``nnx.Variable`` (``None`` stays ``None``)."""
    return None if var is None else var[...]


def rng_stream(rngs: nnx.Rngs | nnx.RngStream | None, collection: str) -> Any:
    """A forked stream ``collection`` of ``rngs`` to keep in a stochastic module (as Dropout)."""
    if isinstance(rngs, nnx.Rngs):
        return rngs[collection].fork()
    if isinstance(rngs, nnx.RngStream):
        return rngs.fork()
    if rngs is None:
        return nnx.data(None)
    raise TypeError(f"rngs must be nnx.Rngs, nnx.RngStream or None, got {type(rngs).__name__}.")


def draw_key(module: str, given: Any, stored: Any, collection: str) -> jax.Array:
    """A key from the call's ``rngs`` (Rngs, stream or key) or else the module's stream."""
    rngs = given if given is not None else stored
    if rngs is None:
        raise ValueError(
            f"{module}: deterministic is False but no rngs were given to the constructor or the "
            "call; pass rngs=nnx.Rngs(...) or set deterministic=True (model.eval())."
        )
    if isinstance(rngs, nnx.Rngs):
        return rngs[collection]()
    if isinstance(rngs, nnx.RngStream):
        return rngs()
    return jnp.asarray(rngs)


class AdapterParam(nnx.Param):
    """An adapter parameter: a trainable ``nnx.Param`` of its own type.

    ``nnx.Optimizer(model, tx, wrt=AdapterParam)`` and ``nnx.grad(..., argnums=nnx.DiffState(0,
    AdapterParam))`` train the adapters only, leaving the base kernel (an ``nnx.Param``)
    frozen.
    """


_VARIABLE_TYPES = {P.PARAMS: nnx.Param, P.MASKS: MaskVar, P.ADAPTERS: AdapterParam}


def build(module: nnx.Module, specs: tuple[P.Spec, ...], rngs: nnx.Rngs, param_dtype: Dtype):
    """Create the variables of ``specs`` as attributes of ``module``, in table order.

    A present spec becomes ``nnx.Param``/``MaskVar``/``AdapterParam`` (by collection; a mask
    takes the partitioning of its ``like`` kernel unless its initialiser boxes its own); an
    absent one is stored as ``None``.
    """
    for spec in specs:
        if not spec.present:
            setattr(module, spec.name, nnx.data(None))
            continue
        key = rngs.params() if spec.needs_key else jax.random.key(0)
        value = spec.init(key, spec.shape, spec.dtype_of(param_dtype))
        kind = _VARIABLE_TYPES[spec.collection]
        meta = {}
        if spec.like is not None and not isinstance(value, nnx.VariableMetadata):
            meta = sharding_metadata(getattr(module, spec.like))
        setattr(module, spec.name, kind(value, **meta))


def values(
    module: nnx.Module, specs: tuple[P.Spec, ...] | tuple[str, ...], collection: str | None = None
) -> dict:
    """``{name: array or None}`` of the variables of ``specs`` (of one collection if given).

    ``specs`` may be the names alone (``P.names(specs)``): that is what a module keeps, because a
    static attribute is part of its graph definition, and specs hold initialiser closures that
    differ between two modules built alike (a jit keyed on the graph would compile again).
    """
    names = [s for s in specs if isinstance(s, str)]
    if not names:
        names = P.names([s for s in specs if isinstance(s, P.Spec)], collection)
    elif collection is not None:
        raise ValueError("values: a collection needs the specs, not their names.")
    return {n: value(getattr(module, n)) for n in names}


def store(module: nnx.Module, options: P.Options) -> None:
    """Keep the checked ``options`` as ``module.options`` and each of its fields as an attribute
    of the same name (``layer.features``, ...)."""
    module.options = options  # type: ignore[attr-defined]
    for name, v in options.items().items():
        setattr(module, name, v)


class Stored(nnx.Module):
    """The base of a family's NNX module: ``options`` is its checked options (:func:`store`)."""

    options: Any


class Table(Stored):
    """A module whose variables come from a family's table: :meth:`_build_table` creates them
    and keeps their names (not the specs: see :func:`values`), :meth:`_params` reads them back
    as ``{name: array or None}``."""

    _names: tuple[str, ...]

    def _build_table(self, specs: tuple[P.Spec, ...], rngs: nnx.Rngs, param_dtype: Dtype) -> None:
        self._names = P.names(specs)
        build(self, specs, rngs, param_dtype)

    def _params(self) -> dict[str, Any]:
        return values(self, self._names)
