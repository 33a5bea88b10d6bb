"""Linen mask layers: ``Mask``, ``HardConcreteGate``, ``MaskedLinear``; the counterparts of
the NNX modules of the same names, built from the params tables of
:mod:`hadamard_jax._layers.masks`."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax.core import meta
from flax.typing import Dtype, Initializer, PrecisionLike

import hadamard_jax as hj
from hadamard_jax._layers import functional as F
from hadamard_jax._layers import masks, options
from hadamard_jax._layers import params as P
from hadamard_jax._src.sparsity.patterns import Pattern
from hadamard_jax.linen import _common as L

__all__ = ["HardConcreteGate", "Mask", "MaskedLinear"]


class Mask(L.Checked):
    """A fixed mask applied to the input, ``where(mask, x, fill)`` (select semantics: masked
    entries exactly ``fill``, their gradient exactly zero).

    The mask is the boolean variable ``masks/.../mask`` (the ``"masks"`` collection, not
    ``"params"``); its shape broadcasts against the input. The Linen counterpart of
    :class:`hadamard_jax.nnx.Mask`.

    Attributes:
      shape: the mask's shape.
      mask_init: ``(key, shape, dtype) -> mask``; default all ones (keep everything).
      fill: the value of masked entries.

    Example::

      >>> import jax, jax.numpy as jnp
      >>> from hadamard_jax.linen import Mask
      >>> m = Mask((3,), mask_init=jax.nn.initializers.constant(jnp.array([1, 0, 1], bool)))
      >>> variables = m.init(jax.random.key(0), jnp.ones((2, 3)))
      >>> m.apply(variables, jnp.ones((2, 3)))
      Array([[1., 0., 1.],
             [1., 0., 1.]], dtype=float32)
    """

    shape: tuple[int, ...]
    mask_init: Initializer = options.default_mask_init
    fill: float = 0.0

    _options = masks.MaskOptions

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """``x`` with masked entries replaced by ``fill``."""
        specs = self.options.specs(draws_key=True)
        return hj.apply_mask(x, L.build(self, specs, jnp.bool_)["mask"], fill=self.fill)


def _fixed_mask(
    module: nn.Module, name: str, kernel_name: str, init: Initializer, shape: tuple[int, ...]
) -> jax.Array:
    """The boolean mask variable ``masks/name`` of a kernel, with the kernel's partitioning
    (for ``GatedMLP(masked=True)``; the mask layers build theirs from their params table)."""
    spec = P.Spec(name, shape, init, P.MASKS, like=kernel_name)
    return L.build(module, (spec,), jnp.bool_)[name]


class HardConcreteGate(L.Checked):
    """A learned gate ``z`` in ``[0, 1]`` per entry of ``shape``, applied as ``x * z``
    (Louizos et al. 2018).

    Training (not ``deterministic``) samples ``z`` from the ``rng_collection``
    (``"hard_concrete"``) rng of ``apply``; evaluation uses the deterministic gate. The
    parameter is ``log_alpha`` of ``shape``. The Linen counterpart of
    :class:`hadamard_jax.nnx.HardConcreteGate`.

    Every use of the gate in an ``apply`` with the ``"intermediates"`` collection mutable sows
    its own L0 penalty (with its own ``beta``/``gamma``/``zeta``) as
    ``intermediates/.../l0_penalty``; :func:`hadamard_jax.linen.l0_penalty` sums them.

    Attributes:
      shape: the gate's shape; it broadcasts against the input.
      beta, gamma, zeta: temperature (> 0) and stretch bounds (< 0, > 1); the defaults are
        Louizos et al.'s, as in :func:`hadamard_jax.hard_concrete`.
      log_alpha_init: initializer of ``log_alpha`` (default ``constant(3.0)``: all open).
      deterministic: use the test-time gate (``None``: decided by the call, else ``False``).
      param_dtype: dtype of ``log_alpha``.
      rng_collection: the rng of ``apply`` for sampling.

    Example::

      >>> import jax, jax.numpy as jnp
      >>> from hadamard_jax.linen import HardConcreteGate
      >>> gate = HardConcreteGate((4,), deterministic=True)
      >>> variables = gate.init(jax.random.key(0), jnp.ones((2, 4)))
      >>> round(float(gate.apply(variables, method="l0_penalty")), 3)
      3.96
    """

    shape: tuple[int, ...]
    beta: float = options.BETA
    gamma: float = options.GAMMA
    zeta: float = options.ZETA
    log_alpha_init: Initializer = options.default_log_alpha_init
    deterministic: bool | None = None
    param_dtype: Dtype = jnp.float32
    rng_collection: str = "hard_concrete"

    _options = masks.HardConcreteGateOptions

    def setup(self):
        self.log_alpha = L.build(self, self.options.specs(), self.param_dtype)["log_alpha"]

    def gate(self, *, deterministic: bool | None = None) -> jax.Array:
        """The gate values ``z``, of ``shape``."""
        op = "HardConcreteGate"
        deterministic = options.deterministic_of(deterministic, self.deterministic, op)
        key = None if deterministic else self.make_rng(self.rng_collection)
        if self.is_mutable_collection(options.PENALTIES):
            # The gate's own L0 penalty, for hadamard_jax.linen.l0_penalty: Linen variables do
            # not hold beta/gamma/zeta. Overwritten, not appended: once per gate per apply.
            self.sow(
                options.PENALTIES,
                options.L0_PENALTY,
                self.l0_penalty(),
                init_fn=lambda: jnp.zeros((), jnp.float32),
                reduce_fn=lambda _, new: new,
            )
        return masks.gate_values(self, key, deterministic)

    def __call__(self, x: jax.Array, *, deterministic: bool | None = None) -> jax.Array:
        """``x * z`` (``z`` broadcast against ``x``), with the dtype of ``x * z``."""
        return F.gated_input(x, self.gate(deterministic=deterministic))

    def l0_penalty(self) -> jax.Array:
        """The expected number of non-zero gates (with this gate's ``beta``/``gamma``/``zeta``)."""
        return masks.gate_penalty(self)


class MaskedLinear(L.Checked):
    """A linear layer ``x @ (kernel * mask) + bias`` with a fixed, pruned or learned mask.

    The Linen counterpart of :class:`hadamard_jax.nnx.MaskedLinear` (the input size is
    inferred). ``mask_type`` chooses the mask (a fixed mask lives in the ``"masks"``
    collection, ``masks/.../mask``; it takes the kernel's ``nn.with_partitioning`` names):

    {{MASK_TYPES}}

    {{PATTERNS}}

    Attributes:
      out_features: output size.
      mask_type: ``"fixed"``, ``"ste"`` or ``"hard_concrete"``.
      sparsity, threshold: the ``"ste"`` selection rule (exactly one): ``sparsity`` prunes
        the ``round(sparsity * size)`` lowest scores (units of a pattern other than
        unstructured; implied by N:M), ``threshold`` keeps scores above it; ``sparsity``
        also starts a fixed mask magnitude-pruned.
      use_bias, dtype, param_dtype, precision, kernel_init, bias_init: as ``nn.Dense``.
      mask_init: initializer of the fixed mask (default ones).
      scores_init: initializer of the ``"ste"`` scores (default: ``|kernel|``).
      beta, gamma, zeta, log_alpha_init: the hard-concrete gate's parameters.
      deterministic: hard-concrete test-time gate (``None``: decided by the call).
      rng_collection: the rng of ``apply`` for hard-concrete sampling.
      pattern: a :class:`~hadamard_jax.Pattern` or its name (default ``"unstructured"``:
        single weights); checked against the kernel when the input size is known (``init``).

    Raises:
      ValueError: a pattern with ``mask_type="hard_concrete"`` or ``threshold`` (at
        construction); a pattern that does not fit the kernel (at ``init``).

    Example::

      >>> import jax, jax.numpy as jnp
      >>> from hadamard_jax.linen import MaskedLinear, prune, mask_sparsity
      >>> layer = MaskedLinear(4)
      >>> variables = prune(layer.init(jax.random.key(0), jnp.ones((2, 8))), 0.75)
      >>> mask_sparsity(variables), layer.apply(variables, jnp.ones((2, 8))).shape
      (0.75, (2, 4))
    """

    out_features: int
    mask_type: str = "fixed"
    sparsity: float | None = None
    threshold: float | None = None
    use_bias: bool = True
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    precision: PrecisionLike = None
    kernel_init: Initializer = options.default_kernel_init
    bias_init: Initializer = options.default_bias_init
    mask_init: Initializer = options.default_mask_init
    scores_init: Initializer | None = None
    beta: float = options.BETA
    gamma: float = options.GAMMA
    zeta: float = options.ZETA
    log_alpha_init: Initializer = options.default_log_alpha_init
    deterministic: bool | None = None
    rng_collection: str = "hard_concrete"
    pattern: Pattern | str = "unstructured"

    _options = masks.MaskedLinearOptions

    @nn.compact
    def __call__(self, x: jax.Array, *, deterministic: bool | None = None) -> jax.Array:
        """``[..., in] -> [..., out_features]``."""
        n_in = jnp.shape(x)[-1]
        kernel = lambda: meta.unbox(self.get_variable("params", "kernel"))  # noqa: E731
        values = L.build(self, self.options.specs(n_in, kernel), self.param_dtype)

        def hard_concrete() -> jax.Array:
            gate_args = self.options.gate_args()
            gate = HardConcreteGate((n_in, self.out_features), **gate_args, name="gate")
            return gate.gate(deterministic=deterministic)

        mask = self.options.mask(values, hard_concrete)
        return masks.masked_linear(x, values, mask, dtype=self.dtype, precision=self.precision)


masks.document(MaskedLinear)
