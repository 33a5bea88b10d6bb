"""``Mask``: a fixed mask held as a non-trainable variable and applied to the input."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from flax.typing import Initializer

import hadamard_jax as hj
from hadamard_jax._layers import masks, options
from hadamard_jax.nnx import _common as C


class Mask(nnx.Module):
    r"""A fixed mask applied to the input: ``where(mask, x, fill)``.

    The mask is a boolean :class:`MaskVar` (not an ``nnx.Param``: optimizers and ``nnx.grad``
    over params leave it alone), applied with :func:`hadamard_jax.apply_mask` (select
    semantics: masked entries are exactly ``fill``, their gradient exactly zero). Its shape
    broadcasts against the input (e.g. ``(features,)`` masks features of ``[..., features]``).

    Args:
      shape: the mask's shape.
      mask_init: ``(key, shape, dtype) -> mask``; default all ones (keep everything). Use
        ``nnx.initializers.constant(m)`` for a given mask ``m``, and ``nnx.with_partitioning``
        to shard it.
      fill: the value of masked entries.
      rngs: optional ``nnx.Rngs`` for a random ``mask_init``.

    Example::

      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from hadamard_jax.nnx import Mask
      >>> m = Mask((3,), mask_init=nnx.initializers.constant(jnp.array([True, False, True])))
      >>> m(jnp.ones((2, 3)))
      Array([[1., 0., 1.],
             [1., 0., 1.]], dtype=float32)
    """

    mask: C.MaskVar  # created from masks.mask_params

    def __init__(
        self,
        shape: tuple[int, ...],
        *,
        mask_init: Initializer = options.default_mask_init,
        fill: float = 0.0,
        rngs: nnx.Rngs | None = None,
    ):
        self.shape = masks.check_mask(shape=shape, mask_init=mask_init, fill=fill)
        self.fill = fill
        specs = masks.mask_params(self.shape, mask_init, draws_key=rngs is not None)
        C.build(self, specs, rngs, jnp.bool_)  # type: ignore[arg-type]  # no key drawn without rngs

    def __call__(self, x: jax.Array) -> jax.Array:
        """``x`` with masked entries replaced by ``fill``; same shape and dtype."""
        return hj.apply_mask(x, self.mask[...], fill=self.fill)
