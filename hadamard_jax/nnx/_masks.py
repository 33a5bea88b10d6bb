"""The mask family in NNX: ``Mask`` (a fixed mask on the input), ``HardConcreteGate`` (learned
hard-concrete gates with an L0 penalty, Louizos et al. 2018) and ``MaskedLinear`` (a linear layer
whose kernel is masked by a fixed, pruned or learned mask). Checks, params tables and apply
functions: :mod:`hadamard_jax._layers.masks`; Linen: :mod:`hadamard_jax.linen._masks`."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from flax.typing import Dtype, Initializer, PrecisionLike

import hadamard_jax as hj
from hadamard_jax._layers import functional as F
from hadamard_jax._layers import masks, options
from hadamard_jax._layers import params as P
from hadamard_jax._src.sparsity.patterns import Pattern
from hadamard_jax.nnx import _common as C

__all__ = ["HardConcreteGate", "Mask", "MaskedLinear"]


class Mask(C.Stored):
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
    shape: tuple[int, ...]
    fill: float

    def __init__(
        self,
        shape: tuple[int, ...],
        *,
        mask_init: Initializer = options.default_mask_init,
        fill: float = 0.0,
        rngs: nnx.Rngs | None = None,
    ):
        C.store(self, masks.MaskOptions.of(locals()))
        specs = self.options.specs(draws_key=rngs is not None)
        C.build(self, specs, rngs, jnp.bool_)  # type: ignore[arg-type]  # no key drawn without rngs

    def __call__(self, x: jax.Array) -> jax.Array:
        """``x`` with masked entries replaced by ``fill``; same shape and dtype."""
        return hj.apply_mask(x, self.mask[...], fill=self.fill)


class HardConcreteGate(C.Stored):
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
    deterministic: bool | None
    rng_collection: str

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
        C.store(self, masks.HardConcreteGateOptions.of(locals()))
        C.build(self, self.options.specs(), rngs, param_dtype)
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


class MaskedLinear(C.Stored):
    r"""A linear layer ``x @ (kernel * mask) + bias`` with a fixed, pruned or learned mask.

    ``mask_type`` chooses the mask (a fixed mask is a :class:`MaskVar`, scores an
    ``nnx.Param``):

    {{MASK_TYPES}}

    {{PATTERNS}}

    Args:
      in_features, out_features: kernel shape ``[in, out]``.
      mask_type: ``"fixed"``, ``"ste"`` or ``"hard_concrete"``.
      sparsity, threshold: the ``"ste"`` selection rule (exactly one; a pattern other than
        unstructured takes ``sparsity``, implied by N:M); ``sparsity`` also starts a fixed
        mask magnitude-pruned.
      use_bias, dtype, param_dtype, precision, kernel_init, bias_init: as ``nnx.Linear``.
      mask_init: initializer of the fixed mask (default ones). By default the mask takes the
        kernel's partitioning metadata (``nnx.with_partitioning``).
      scores_init: initializer of the ``"ste"`` scores (default: ``|kernel|``).
      beta, gamma, zeta, log_alpha_init: the hard-concrete gate's parameters.
      deterministic: hard-concrete test-time gate (``model.eval()`` sets it).
      rng_collection: rng stream for hard-concrete sampling.
      pattern: a :class:`~hadamard_jax.Pattern` or its name (default ``"unstructured"``: single
        weights); checked against the kernel at construction.
      rngs: ``nnx.Rngs``.

    Raises:
      ValueError: a pattern with ``mask_type="hard_concrete"`` or ``threshold``; a pattern
        that does not fit the kernel (``NM.m`` not dividing ``in_features``, ...).

    Example::

      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from hadamard_jax import NM
      >>> from hadamard_jax.nnx import MaskedLinear, prune
      >>> layer = MaskedLinear(8, 4, rngs=nnx.Rngs(0))
      >>> _ = prune(layer, 0.75)
      >>> int((layer.masked_kernel() == 0).sum()), layer(jnp.ones((2, 8))).shape
      (24, (2, 4))
      >>> ste = MaskedLinear(8, 4, mask_type="ste", pattern=NM(2, 4), rngs=nnx.Rngs(0))
      >>> ste.current_mask().reshape(2, 4, 4).sum(axis=1)  # 2 of every 4 inputs
      Array([[2., 2., 2., 2.],
             [2., 2., 2., 2.]], dtype=float32)
    """

    kernel: nnx.Param  # and bias, mask or scores: created from masks.masked_linear_params
    in_features: int
    out_features: int
    mask_type: str
    sparsity: float | None
    threshold: float | None
    dtype: Any
    precision: Any
    pattern: Pattern

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        mask_type: str = "fixed",
        sparsity: float | None = None,
        threshold: float | None = None,
        use_bias: bool = True,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        precision: PrecisionLike = None,
        kernel_init: Initializer = options.default_kernel_init,
        bias_init: Initializer = options.default_bias_init,
        mask_init: Initializer = options.default_mask_init,
        scores_init: Initializer | None = None,
        beta: float = options.BETA,
        gamma: float = options.GAMMA,
        zeta: float = options.ZETA,
        log_alpha_init: Initializer = options.default_log_alpha_init,
        deterministic: bool | None = False,
        rng_collection: str = "hard_concrete",
        pattern: Pattern | str = "unstructured",
        rngs: nnx.Rngs,
    ):
        C.store(self, masks.MaskedLinearOptions.of(locals()))
        specs = self.options.specs(in_features, lambda: self.kernel[...])
        C.build(self, specs, rngs, param_dtype)
        self._names = P.names(specs)
        if mask_type == "hard_concrete":
            gate_args = self.options.gate_args()
            self.gate = HardConcreteGate((in_features, out_features), **gate_args, rngs=rngs)

    def _values(self) -> dict[str, Any]:
        return {n: C.value(getattr(self, n)) for n in self._names}

    def current_mask(self, *, deterministic: bool | None = None, rngs: Any = None) -> jax.Array:
        """The mask ``[in, out]``: bool (fixed), 0/1 float (ste) or gate values (hard concrete)."""
        gate = lambda: self.gate.gate(deterministic=deterministic, rngs=rngs)  # noqa: E731
        return self.options.mask(self._values(), gate)

    def masked_kernel(self, *, deterministic: bool | None = None, rngs: Any = None) -> jax.Array:
        """``kernel * mask`` (masked entries exactly zero), ``[in, out]``."""
        mask = self.current_mask(deterministic=deterministic, rngs=rngs)
        return F.masked_kernel(self.kernel, mask)

    def __call__(
        self, x: jax.Array, *, deterministic: bool | None = None, rngs: Any = None
    ) -> jax.Array:
        """``[..., in_features] -> [..., out_features]``."""
        F.check_features("MaskedLinear", x, self.in_features)
        mask = self.current_mask(deterministic=deterministic, rngs=rngs)
        return masks.masked_linear(
            x, self._values(), mask, dtype=self.dtype, precision=self.precision
        )

    def l0_penalty(self) -> jax.Array:
        """The expected number of non-zero weights (``mask_type="hard_concrete"`` only)."""
        if self.mask_type != "hard_concrete":
            raise ValueError(
                f"MaskedLinear: l0_penalty() needs mask_type='hard_concrete', not "
                f"{self.mask_type!r}."
            )
        return self.gate.l0_penalty()


masks.document(MaskedLinear)
