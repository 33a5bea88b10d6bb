"""``HardConcreteGate``: learned hard-concrete gates with an L0 penalty (Louizos et al. 2018)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from flax.typing import Dtype, Initializer

from hadamard_jax._layers import functional as F
from hadamard_jax._layers import masks, options
from hadamard_jax.nnx import _common as C


class HardConcreteGate(nnx.Module):
    r"""A learned gate ``z`` in ``[0, 1]`` per entry of ``shape``, applied as ``x * z``.

    Training (``deterministic=False``) samples ``z = hard_concrete(key, log_alpha)``; evaluation
    uses the deterministic gate. ``l0_penalty()`` is the expected number of non-zero gates, to
    add (scaled) to the loss.

    Args:
      shape: the gate's shape; it broadcasts against the input.
      beta, gamma, zeta: temperature and stretch bounds (Louizos et al. defaults).
      log_alpha_init: initializer of ``log_alpha`` (default ``constant(3.0)``: all open).
      deterministic: use the test-time gate (``model.eval()`` sets it).
      param_dtype: dtype of ``log_alpha``.
      rng_collection: rng stream for sampling (default ``"hard_concrete"``).
      rngs: ``nnx.Rngs``.

    Example::

      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from hadamard_jax.nnx import HardConcreteGate
      >>> gate = HardConcreteGate((4,), deterministic=True, rngs=nnx.Rngs(0))
      >>> gate(jnp.full((2, 4), 2.0))
      Array([[2., 2., 2., 2.],
             [2., 2., 2., 2.]], dtype=float32)
      >>> round(float(gate.l0_penalty()), 3)
      3.96
    """

    log_alpha: nnx.Param  # created from masks.hard_concrete_params

    def __init__(
        self,
        shape: tuple[int, ...],
        *,
        beta: float = options.BETA,
        gamma: float = options.GAMMA,
        zeta: float = options.ZETA,
        log_alpha_init: Initializer = options.default_log_alpha_init,
        deterministic: bool | None = False,
        param_dtype: Dtype = jnp.float32,
        rng_collection: str = "hard_concrete",
        rngs: nnx.Rngs,
    ):
        self.shape = masks.check_hard_concrete_gate(
            shape=shape,
            beta=beta,
            gamma=gamma,
            zeta=zeta,
            log_alpha_init=log_alpha_init,
            deterministic=deterministic,
            param_dtype=param_dtype,
            rng_collection=rng_collection,
        )
        self.beta, self.gamma, self.zeta = beta, gamma, zeta
        self.deterministic, self.rng_collection = deterministic, rng_collection
        C.build(self, masks.hard_concrete_params(self.shape, log_alpha_init), rngs, param_dtype)
        self.rngs = C.rng_stream(rngs, rng_collection)

    def gate(self, *, deterministic: bool | None = None, rngs: Any = None) -> jax.Array:
        """The gate values ``z``, of ``shape``."""
        op = "HardConcreteGate"
        deterministic = options.deterministic_of(deterministic, self.deterministic, op)
        key = None if deterministic else C.draw_key(op, rngs, self.rngs, self.rng_collection)
        return masks.gate_values(self, key, deterministic)

    def __call__(
        self, x: jax.Array, *, deterministic: bool | None = None, rngs: Any = None
    ) -> jax.Array:
        """``x * z`` (``z`` broadcast against ``x``), with the dtype of ``x * z``."""
        return F.gated_input(x, self.gate(deterministic=deterministic, rngs=rngs))

    def l0_penalty(self) -> jax.Array:
        """The expected number of non-zero gates, a differentiable scalar."""
        return masks.gate_penalty(self)
