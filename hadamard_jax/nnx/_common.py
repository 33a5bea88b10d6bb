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
