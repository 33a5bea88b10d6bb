"""Gated linear recurrences: ``RGLRU`` (Griffin) and ``MinGRU`` (Feng et al. 2024)."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from flax import nnx
from flax.typing import Dtype, Initializer, PrecisionLike

from hadamard_jax._layers import options
from hadamard_jax._layers import recurrent as R
from hadamard_jax.nnx import _common as C

__all__ = ["MinGRU", "RGLRU"]


class BlockDiagonalGate(C.Table):
    """The parameters of one RG-LRU gate: recurrentgemma's ``BlockDiagonalLinear``.

    ``w`` ``[heads, width / heads, width / heads]`` and ``b`` ``[heads, width / heads]``
    (:meth:`hadamard_jax._layers.recurrent.RGLRUOptions.gate_specs`): the gate's pre-activation
    is ``x`` in ``heads`` blocks, each times its block of ``w`` plus its row of ``b``
    (:func:`hadamard_jax._layers.recurrent.block_diagonal`). A part of :class:`RGLRU`
    (``layer.input_gate``, ``layer.a_gate``), not a layer of its own.
    """

    def __init__(self, options: R.RGLRUOptions, *, rngs: nnx.Rngs):
        self._build_table(options.gate_specs(), rngs, options.param_dtype)

    def params(self) -> dict[str, Any]:
        """``{"w": ..., "b": ...}``."""
        return self._params()


class _Recurrence(C.Table):
    """What both recurrences do: keep the checked options, check and run a call or a step."""

    options: Any

    def _checked_run(self, x: Any, state: Any, decode: bool, segment_pos: Any = None) -> Any:
        self.options.check(x, state, decode, segment_pos)
        return self.options.run(x, self._params(), state, decode, segment_pos)


class RGLRU(R.RGLRUCalls, _Recurrence):
    r"""The Real-Gated Linear Recurrent Unit of Griffin (De et al. 2024), as recurrentgemma runs it.

    For inputs ``x`` ``[..., T, features]`` (usually ``[batch, T, features]``):

    .. math::
      r_t = \sigma(\mathrm{BD}_a(x_t)), \quad i_t = \sigma(\mathrm{BD}_x(x_t)), \quad
      \log a_t = -c\, r_t \operatorname{softplus}(\Lambda'), \\
      h_t = a_t \circ h_{t-1} + \sqrt{1 - a_t^2} \circ (i_t \circ x_t),

    run over the time axis by :func:`hadamard_jax.linear_scan` (its derivative rule keeps
    ``a``, ``h0`` and the states). ``BD`` is a block-diagonal linear map with ``num_heads``
    blocks (recurrentgemma's ``BlockDiagonalLinear``; ``num_heads=1`` is a dense layer).
    ``\Lambda'`` is ``a_param``, recurrentgemma's parameter (the paper's ``a = sigmoid(Lambda)``
    is ``Lambda = -a_param``): at initialisation the base decay ``a = exp(-softplus(a_param))``
    lies on the ring ``[min_rad, max_rad]`` = ``[0.9, 0.999]`` with ``a^2`` uniform
    (recurrentgemma's ``rnn_param_init``, which the code applies to ``a``; the paper's text
    says ``a^c``), so the decay at a fully open gate, ``a^c``, starts in ``[0.43, 0.992]`` for
    ``c = 8``. The derivative of ``sqrt(1 - a_t^2)`` is bounded by 1000 near ``a_t = 1``
    (recurrentgemma's ``sqrt_bound_derivative``).

    Segments: with ``segment_pos`` ``[..., T]`` (each token's position in its document,
    recurrentgemma's argument; usually ``arange(T)``), a token at position 0 starts a new
    segment: the state resets (``a_t = 0``, so ``initial_state`` is not used there) and its
    input is not scaled by ``sqrt(1 - a_t^2)`` (the factor is 1). ``None``: no resets, the
    first token scaled like the others (a continuation).

    Parameters, named and shaped as recurrentgemma's ``RGLRU`` so that its checkpoint arrays
    load as they are (``nnx.update(layer, params)`` with its ``params`` dict):
    ``a_param`` ``[d]``; ``input_gate.w``, ``a_gate.w`` ``[num_heads, d / num_heads,
    d / num_heads]``; ``input_gate.b``, ``a_gate.b`` ``[num_heads, d / num_heads]``.

    :meth:`step` is the decode form, one time step of the same equations (recurrentgemma's
    sampler); running it over the sequence gives the states of ``__call__``.

    Args:
      features: input and state size ``d`` (recurrentgemma's ``lru_width``).
      num_heads: the number of diagonal blocks of the two gates; must divide ``features``.
      c: the constant ``c`` (8 in Griffin).
      min_rad, max_rad: the initial ring of the base decay, ``0 < min_rad <= max_rad < 1``.
      dtype, param_dtype, precision: as ``nnx.Linear``.
      kernel_init, bias_init: initializers of the gates' ``w`` (called with the shape
        ``[num_heads, d / num_heads, d / num_heads]``) and ``b`` (``[num_heads, d / num_heads]``).
      mesh_axis: the mesh axis (or axes) the time axis is split over under ``jax.set_mesh``
        (Auto axes); ``None``: detected from the inputs under Explicit axes
        (:func:`hadamard_jax.linear_scan`).
      rngs: ``nnx.Rngs``.

    Example::

      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from hadamard_jax.nnx import RGLRU
      >>> layer = RGLRU(4, num_heads=2, rngs=nnx.Rngs(0))
      >>> layer.input_gate.w.shape, layer.a_param.shape
      ((2, 2, 2), (4,))
      >>> x = jnp.ones((2, 5, 4))  # [batch, time, features]
      >>> h, last = layer(x, segment_pos=jnp.broadcast_to(jnp.arange(5), (2, 5)))
      >>> h.shape, last.shape
      ((2, 5, 4), (2, 4))
      >>> state, y = layer.step(last, jnp.ones((2, 4)), segment_pos=jnp.array([5, 5]))
      >>> state.shape
      (2, 4)
    """

    def __init__(
        self,
        features: int,
        *,
        num_heads: int = 1,
        c: float = R.RGLRU_C,
        min_rad: float = R.RGLRU_MIN_RAD,
        max_rad: float = R.RGLRU_MAX_RAD,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        precision: PrecisionLike = None,
        kernel_init: Initializer = options.default_kernel_init,
        bias_init: Initializer = options.default_bias_init,
        mesh_axis: str | tuple[str, ...] | None = None,
        rngs: nnx.Rngs,
    ):
        C.store(self, R.RGLRUOptions.of(locals()))
        self._build_table(self.options.specs(), rngs, param_dtype)
        self.input_gate = BlockDiagonalGate(self.options, rngs=rngs)
        self.a_gate = BlockDiagonalGate(self.options, rngs=rngs)

    def _params(self) -> dict[str, Any]:
        gates = {"input_gate": self.input_gate.params(), "a_gate": self.a_gate.params()}
        return {**super()._params(), **gates}


class MinGRU(R.MinGRUCalls, _Recurrence):
    r"""minGRU (Feng et al. 2024, "Were RNNs all we needed?"), in its log-space parallel form.

    For inputs ``x`` ``[..., T, in_features]``:

    .. math::
      z_t = \sigma(k_t),\ k_t = x_t W_z + b_z, \quad \tilde h_t = x_t W_h + b_h, \quad
      h_t = (1 - z_t) \circ h_{t-1} + z_t \circ g(\tilde h_t),

    with the paper's positive activation ``g(x) = x + 0.5`` for ``x >= 0`` and ``sigmoid(x)``
    below (the choice of the paper's log-space minGRU, continuous at 0), so the states from a
    zero start are positive and the recurrence runs in log space by
    :func:`hadamard_jax.log_linear_scan`: ``log(1 - z) = -softplus(k)``,
    ``log z = -softplus(-k)``, ``log h_t = logaddexp(log(1 - z_t) + log h_{t-1},
    log z_t + log g(h~_t))``. The states are linear in the initial state, which is added in
    linear space (``h0`` times the running product of ``1 - z``, by
    :func:`hadamard_jax.linear_scan`): any real ``initial_state`` works, and ``0`` has exact
    gradients. :meth:`step`, the decode form, computes the same ``h_t`` in linear space (with
    the same ``g``), one step at a time.

    The initial state is the state itself: ``initial_state`` (and ``step``'s ``state``) is
    ``h_{-1}``, used as given, in both forms, so the last state of one call continues in the
    next call or step. The paper's parallel form starts from ``g(h_0)`` (its
    ``log_h_0 = log_g(h_0)``, ``h_0`` a pre-activation); to run that, pass
    ``initial_state=g(h_0)`` with ``g(v) = jnp.where(v >= 0, v + 0.5, jax.nn.sigmoid(v))``.

    Args:
      in_features: input size ``d``.
      hidden_features: state size ``n``.
      use_bias: biases ``b_z``, ``b_h``.
      dtype, param_dtype, precision, kernel_init, bias_init: as ``nnx.Linear``.
      mesh_axis: as in :class:`RGLRU` (sequence sharding).
      rngs: ``nnx.Rngs``.

    Parameters: ``gate_kernel`` (``W_z``), ``candidate_kernel`` (``W_h``) ``[d, n]`` and, with
    ``use_bias``, ``gate_bias``, ``candidate_bias`` ``[n]``.

    Example::

      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from hadamard_jax.nnx import MinGRU
      >>> layer = MinGRU(3, 8, rngs=nnx.Rngs(0))
      >>> h, last = layer(jnp.ones((2, 5, 3)))
      >>> h.shape, bool((h > 0).all())
      ((2, 5, 8), True)
      >>> layer.step(last, jnp.ones((2, 3)))[0].shape
      (2, 8)
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        *,
        use_bias: bool = True,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        precision: PrecisionLike = None,
        kernel_init: Initializer = options.default_kernel_init,
        bias_init: Initializer = options.default_bias_init,
        mesh_axis: str | tuple[str, ...] | None = None,
        rngs: nnx.Rngs,
    ):
        C.store(self, R.MinGRUOptions.of(locals()))
        self._build_table(self.options.specs(in_features), rngs, param_dtype)
