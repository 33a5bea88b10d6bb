"""The Linen ``RGLRU`` and ``MinGRU``: :mod:`hadamard_jax.nnx`'s recurrences as dataclasses.

Same names, arguments and parameter names as the NNX modules (``MinGRU``'s input size is
inferred), the same options and parameter tables (:mod:`hadamard_jax._layers.recurrent`, checked in
``__post_init__``) and the same pure functions, so equal parameters give equal outputs.
``__call__`` and ``step`` share one compact method, so either may create the parameters
(``init(..., method="step")`` works).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax.typing import Dtype, Initializer, PrecisionLike

from hadamard_jax._layers import options
from hadamard_jax._layers import recurrent as R
from hadamard_jax.linen import _common as LC

__all__ = ["MinGRU", "RGLRU"]


class _BlockDiagonalGate(nn.Module):
    """One RG-LRU gate's parameters, ``w`` and ``b``: recurrentgemma's ``BlockDiagonalLinear``
    (as a submodule, so the parameter tree nests as theirs: ``{"input_gate": {"w", "b"}}``)."""

    options: R.RGLRUOptions

    @nn.compact
    def __call__(self) -> dict[str, jax.Array]:
        return LC.build(self, self.options.gate_specs(), self.options.param_dtype)


class _Recurrence(LC.Checked):
    """What both recurrences do: check the options once, check and run a call or a step."""

    def _params(self, x: Any) -> dict[str, Any]:
        raise NotImplementedError

    @nn.compact
    def _run(self, x: Any, state: Any, decode: bool, segment_pos: Any = None) -> Any:
        return self.options.run(x, self._params(x), state, decode, segment_pos)

    def _checked_run(self, x: Any, state: Any, decode: bool, segment_pos: Any = None) -> Any:
        self.options.check(x, state, decode, segment_pos)
        return self._run(x, state, decode, segment_pos)


class RGLRU(R.RGLRUCalls, _Recurrence):
    r"""The Real-Gated Linear Recurrent Unit of Griffin (De et al. 2024), as recurrentgemma runs it.

    .. math::
      r_t = \sigma(\mathrm{BD}_a(x_t)), \quad i_t = \sigma(\mathrm{BD}_x(x_t)), \quad
      \log a_t = -c\, r_t \operatorname{softplus}(a_{param}), \\
      h_t = a_t \circ h_{t-1} + \sqrt{1 - a_t^2} \circ (i_t \circ x_t),

    over the time axis of ``x`` ``[..., T, features]`` by :func:`hadamard_jax.linear_scan`,
    with block-diagonal gates ``BD`` of ``num_heads`` blocks; the derivative of the square root
    is bounded by 1000 near ``a_t = 1``. At ``segment_pos == 0`` the state resets and the
    square-root factor is 1. The Linen counterpart of :class:`hadamard_jax.nnx.RGLRU` (see
    there for the initialisation of ``a_param`` and the segments). Its parameter tree is
    recurrentgemma's: ``{"a_param": [d], "input_gate": {"w": [H, d/H, d/H], "b": [H, d/H]},
    "a_gate": {...}}``, so ``layer.apply({"params": their_params}, ...)`` runs their weights.
    ``__call__(x, initial_state=None, *, segment_pos=None) -> (states, last state)``;
    ``step(state, x_t, *, segment_pos=None) -> (new state, output)`` is the decode form.

    Attributes:
      features: input and state size ``d``.
      num_heads: the number of diagonal blocks of the gates (divides ``features``; 1: dense).
      c: the constant ``c`` (8 in Griffin).
      min_rad: inner radius of the initial base decay's ring (0.9).
      max_rad: outer radius (0.999).
      dtype: computation dtype (default: inferred from inputs and params).
      param_dtype: parameter dtype.
      precision: ``jax.lax.Precision`` of the matmuls.
      kernel_init, bias_init: initializers of the gates' ``w`` ``[H, d/H, d/H]`` and ``b``
        ``[H, d/H]``.
      mesh_axis: the mesh axis (or axes) the time axis is split over under ``jax.set_mesh``;
        ``None``: detected under Explicit mesh axes.

    Example::

      >>> import jax, jax.numpy as jnp
      >>> from hadamard_jax.linen import RGLRU
      >>> layer = RGLRU(4, num_heads=2)
      >>> x = jnp.ones((2, 5, 4))
      >>> variables = layer.init(jax.random.key(0), x)
      >>> variables["params"]["a_gate"]["w"].shape
      (2, 2, 2)
      >>> h, last = layer.apply(variables, x, segment_pos=jnp.broadcast_to(jnp.arange(5), (2, 5)))
      >>> state, y = layer.apply(variables, last, x[:, 0], method="step")
      >>> h.shape, state.shape
      ((2, 5, 4), (2, 4))
    """

    features: int
    num_heads: int = 1
    c: float = R.RGLRU_C
    min_rad: float = R.RGLRU_MIN_RAD
    max_rad: float = R.RGLRU_MAX_RAD
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    precision: PrecisionLike = None
    kernel_init: Initializer = options.default_kernel_init
    bias_init: Initializer = options.default_bias_init
    mesh_axis: str | tuple[str, ...] | None = None

    _options = R.RGLRUOptions

    def _params(self, x: Any) -> dict[str, Any]:
        del x
        opts = self.options
        params = LC.build(self, opts.specs(), opts.param_dtype)
        for name in ("input_gate", "a_gate"):
            params[name] = _BlockDiagonalGate(opts, name=name)()
        return params

    # Flax wraps the methods a Linen class defines itself (scopes, intercepts, intermediates).
    __call__ = R.RGLRUCalls.__call__
    step = R.RGLRUCalls.step


class MinGRU(R.MinGRUCalls, _Recurrence):
    r"""minGRU (Feng et al. 2024, "Were RNNs all we needed?") in its log-space parallel form.

    .. math::
      z_t = \sigma(x_t W_z + b_z), \quad \tilde h_t = x_t W_h + b_h, \quad
      h_t = (1 - z_t) \circ h_{t-1} + z_t \circ g(\tilde h_t),

    ``g(x) = x + 0.5`` for ``x >= 0``, ``sigmoid(x)`` below (positive states from a zero
    start), run in log space by :func:`hadamard_jax.log_linear_scan`; an initial state (any
    real values) is added in linear space; ``step`` is the same recurrence in linear space,
    one step at a time. The initial state is the state ``h_{-1}`` itself in both forms (the
    paper's parallel form from ``g(h_0)`` is ``initial_state=g(h_0)``). The Linen counterpart
    of :class:`hadamard_jax.nnx.MinGRU` (the input size is inferred).

    Attributes:
      hidden_features: state size ``n``.
      use_bias: biases ``b_z`` (``gate_bias``), ``b_h`` (``candidate_bias``).
      dtype: computation dtype (default: inferred from inputs and params).
      param_dtype: parameter dtype.
      precision: ``jax.lax.Precision`` of the matmuls.
      kernel_init, bias_init: initializers of ``gate_kernel``/``candidate_kernel`` ``[d, n]``
        and the biases ``[n]``.
      mesh_axis: as in :class:`RGLRU`.

    Example::

      >>> import jax, jax.numpy as jnp
      >>> from hadamard_jax.linen import MinGRU
      >>> layer = MinGRU(8)
      >>> x = jnp.ones((2, 5, 3))
      >>> variables = layer.init(jax.random.key(0), x)
      >>> h, last = layer.apply(variables, x)
      >>> variables["params"]["gate_kernel"].shape, h.shape
      ((3, 8), (2, 5, 8))
    """

    hidden_features: int
    use_bias: bool = True
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    precision: PrecisionLike = None
    kernel_init: Initializer = options.default_kernel_init
    bias_init: Initializer = options.default_bias_init
    mesh_axis: str | tuple[str, ...] | None = None

    _options = R.MinGRUOptions

    def _params(self, x: Any) -> dict[str, Any]:
        opts = self.options
        return LC.build(self, opts.specs(jnp.shape(x)[-1]), opts.param_dtype)

    __call__ = R.MinGRUCalls.__call__
    step = R.MinGRUCalls.step
