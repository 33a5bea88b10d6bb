"""The gated linear recurrences of ``RGLRU`` and ``MinGRU``, shared by NNX and Linen.

One home for everything the two front ends share about these layers: the options, checked once
(:class:`RGLRUOptions`, :class:`MinGRUOptions`, built on :mod:`hadamard_jax._layers.options` and
:mod:`hadamard_jax._src.checks`), which also hold the parameter tables (:mod:`.params`), the
initialiser of the RG-LRU's decay parameter
(:func:`rglru_a_param_init`), the square root with a bounded derivative, and the pure layer
functions: the parallel (training) form over a whole sequence and the decode step, for each.

Shapes: inputs ``[..., T, d]`` (time at axis ``-2``, usually ``[batch, T, d]``), states
``[..., T, n]``, the carried state ``[..., n]``. The parallel forms run the recurrence with
:func:`hadamard_jax.linear_scan` (RG-LRU) and :func:`hadamard_jax.log_linear_scan` (minGRU);
the decode steps compute one time step of the same equations directly.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import jax
import jax.numpy as jnp
from flax.typing import PrecisionLike
from jax import lax

import hadamard_jax as hj
from hadamard_jax._layers import functional as F
from hadamard_jax._layers import options
from hadamard_jax._layers import params as P
from hadamard_jax._src import checks

Params = Mapping[str, Any]

#: Griffin's constant ``c`` in ``log a_t = -c r_t softplus(a_param)`` (recurrentgemma: 8).
RGLRU_C = 8.0
#: The ring ``[min_rad, max_rad]`` that the RG-LRU's base decay ``a`` is drawn from at init.
RGLRU_MIN_RAD, RGLRU_MAX_RAD = 0.9, 0.999
#: The bound on the derivative of ``sqrt(1 - a_t^2)`` (recurrentgemma's ``max_gradient``).
MAX_SQRT_GRADIENT = 1000.0

#: The parameters of ``RGLRU`` and ``MinGRU``, by name. RGLRU's are recurrentgemma's:
#: ``a_param`` ``[d]`` and two block-diagonal gates (``BlockDiagonalLinear``), each with ``w``
#: ``[heads, d / heads, d / heads]`` and ``b`` ``[heads, d / heads]``.
RGLRU_PARAMS = ("a_param", "input_gate", "a_gate")
MIN_GRU_PARAMS = ("gate_kernel", "gate_bias", "candidate_kernel", "candidate_bias")


# --- the public calls, the same in both front ends ----------------------------------------------


class _Calls:
    """A front end's recurrence provides ``_checked_run``: check the call, then run the
    parallel form (``decode=False``) or one decode step."""

    if TYPE_CHECKING:

        def _checked_run(
            self, x: Any, state: Any, decode: bool, segment_pos: Any = None
        ) -> Any: ...


class RGLRUCalls(_Calls):
    """``RGLRU``'s ``__call__`` and ``step`` (NNX and Linen)."""

    def __call__(
        self,
        x: jax.Array,
        initial_state: jax.Array | None = None,
        *,
        segment_pos: jax.Array | None = None,
    ) -> tuple[jax.Array, jax.Array]:
        """``x [..., T, d]``, ``initial_state [..., d]`` (``None``: zeros), ``segment_pos
        [..., T]`` (``None``: no resets) -> ``(states [..., T, d], last state [..., d])``.

        An empty sequence (``T = 0``) gives ``([..., 0, d], initial_state)``."""
        return self._checked_run(x, initial_state, False, segment_pos)

    def step(
        self,
        state: jax.Array | None,
        x_t: jax.Array,
        *,
        segment_pos: jax.Array | None = None,
    ) -> tuple[jax.Array, jax.Array]:
        """One decode step: ``state [..., d]`` (``None``: zeros), ``x_t [..., d]``,
        ``segment_pos [...]`` (``x_t``'s position; 0 resets; ``None``: no reset) ->
        ``(new state, output)``, both ``[..., d]`` (the output is the new state)."""
        return self._checked_run(x_t, state, True, segment_pos)


class MinGRUCalls(_Calls):
    """``MinGRU``'s ``__call__`` and ``step`` (NNX and Linen)."""

    def __call__(
        self, x: jax.Array, initial_state: jax.Array | None = None
    ) -> tuple[jax.Array, jax.Array]:
        """``x [..., T, d]``, ``initial_state [..., n]`` (``None``: zeros) ->
        ``(states [..., T, n], last state [..., n])``."""
        return self._checked_run(x, initial_state, False)

    def step(self, state: jax.Array | None, x_t: jax.Array) -> tuple[jax.Array, jax.Array]:
        """One decode step: ``state [..., n]`` (``None``: zeros), ``x_t [..., d]`` ->
        ``(new state, output)``, both ``[..., n]``."""
        return self._checked_run(x_t, state, True)


# --- argument checks ----------------------------------------------------------------------------


def mesh_axis(value: Any, op: str) -> None:
    """``mesh_axis``: ``None``, a mesh axis name or a non-empty tuple of names."""
    if value is None or isinstance(value, str):
        return
    if isinstance(value, tuple) and value and all(isinstance(s, str) for s in value):
        return
    raise TypeError(
        f"{op}: mesh_axis must be None, a mesh axis name or a tuple of names, got "
        f"{type(value).__name__} ({value!r:.60})."
    )


@dataclasses.dataclass(frozen=True)
class _Options(P.Options):
    """What both recurrences take: dtypes, initialisers and the sequence-sharding axis."""

    op: ClassVar[str] = ""

    dtype: Any
    param_dtype: Any
    precision: Any
    kernel_init: Any
    bias_init: Any
    mesh_axis: Any

    def _check_projections(self) -> None:
        options.dtypes(self.dtype, self.param_dtype, self.op)
        options.function(self.kernel_init, "kernel_init", self.op)
        options.function(self.bias_init, "bias_init", self.op)
        mesh_axis(self.mesh_axis, self.op)

    def sizes(self) -> tuple[int | None, int]:
        """``(input size or None if inferred, state size)``."""
        raise NotImplementedError

    def check(self, x: Any, state: Any, decode: bool, segment_pos: Any = None) -> None:
        """A call's (:func:`check_call`) or a decode step's (:func:`check_step`) shapes."""
        if decode:
            check_step(self.op, state, x, *self.sizes(), segment_pos)
        else:
            check_call(self.op, x, state, *self.sizes(), segment_pos)


@dataclasses.dataclass(frozen=True)
class RGLRUOptions(_Options):
    """``RGLRU``'s options, checked once (``c``, ``min_rad``, ``max_rad`` made floats).

    ``features >= 1``; ``num_heads >= 1`` dividing ``features``; ``c > 0``;
    ``0 < min_rad <= max_rad < 1``.
    """

    op: ClassVar[str] = "RGLRU"

    features: int
    num_heads: int
    c: float
    min_rad: float
    max_rad: float

    def __post_init__(self) -> None:
        op, features, num_heads = self.op, self.features, self.num_heads
        options.size(features, "features", op)
        options.size(num_heads, "num_heads", op)
        if features % num_heads:
            raise ValueError(
                f"{op}: num_heads={num_heads} must divide features={features} (the gates are "
                "block-diagonal, one [features / num_heads]^2 block per head)."
            )
        c = checks.static_real(self.c, "c", op, lambda v: v > 0, "a finite number > 0")
        lo = checks.static_real(self.min_rad, "min_rad", op, lambda v: 0 < v < 1, "in (0, 1)")
        hi = checks.static_real(self.max_rad, "max_rad", op, lambda v: 0 < v < 1, "in (0, 1)")
        if lo > hi:
            raise ValueError(f"{op}: min_rad={lo} must be <= max_rad={hi}.")
        self._check_projections()
        self.set(c=c, min_rad=lo, max_rad=hi)

    def sizes(self) -> tuple[int | None, int]:
        return self.features, self.features

    def specs(self) -> tuple[P.Spec, ...]:
        """``a_param`` ``[d]`` (recurrentgemma's ``rnn_param_init``); the gates are
        :meth:`gate_specs`, one submodule each (``input_gate``, ``a_gate``, in this order)."""
        init = rglru_a_param_init(self.min_rad, self.max_rad)
        return (P.Spec("a_param", (self.features,), init),)

    def gate_specs(self) -> tuple[P.Spec, ...]:
        """One gate's ``w`` ``[heads, d / heads, d / heads]`` and ``b`` ``[heads, d / heads]``
        (recurrentgemma's ``BlockDiagonalLinear``)."""
        h, block = self.num_heads, self.features // self.num_heads
        return (
            P.Spec("w", (h, block, block), self.kernel_init),
            P.Spec("b", (h, block), self.bias_init),
        )

    def run(self, x: Any, params: Params, state: Any, decode: bool, segment_pos: Any = None) -> Any:
        """:func:`rglru` (``x [..., T, d]``) or :func:`rglru_step` (``x [..., d]``)."""
        if decode:
            return rglru_step(state, x, params, segment_pos=segment_pos, options=self)
        return rglru(x, params, state, segment_pos=segment_pos, options=self)


@dataclasses.dataclass(frozen=True)
class MinGRUOptions(_Options):
    """``MinGRU``'s options, checked once (``in_features``: NNX only; Linen infers it)."""

    op: ClassVar[str] = "MinGRU"

    hidden_features: int
    use_bias: bool
    in_features: int | None = None

    def __post_init__(self) -> None:
        op = self.op
        if self.in_features is not None:
            options.size(self.in_features, "in_features", op)
        options.size(self.hidden_features, "hidden_features", op)
        options.flag(self.use_bias, "use_bias", op)
        self._check_projections()

    def sizes(self) -> tuple[int | None, int]:
        return self.in_features, self.hidden_features

    def specs(self, in_features: int) -> tuple[P.Spec, ...]:
        """``gate_kernel`` (``W_z``), ``candidate_kernel`` (``W_h``) ``[d, n]``, then (with
        ``use_bias``) ``gate_bias``, ``candidate_bias`` ``[n]``: NNX's creation order."""
        d, n = in_features, self.hidden_features
        kernels = (P.Spec(f"{k}_kernel", (d, n), self.kernel_init) for k in ("gate", "candidate"))
        biases = (
            P.Spec(f"{k}_bias", (n,), self.bias_init, present=self.use_bias)
            for k in ("gate", "candidate")
        )
        return (*kernels, *biases)

    def run(self, x: Any, params: Params, state: Any, decode: bool, segment_pos: Any = None) -> Any:
        """:func:`min_gru` (``x [..., T, d]``) or :func:`min_gru_step` (``x [..., d]``);
        ``segment_pos`` must be ``None`` (as :meth:`check` requires)."""
        if decode:
            return min_gru_step(state, x, params, options=self)
        return min_gru(x, params, state, options=self)


def check_sequence(op: str, x: Any, features: int | None) -> None:
    """Raises ``ValueError`` unless ``x`` is ``[..., T, features]`` (rank >= 2)."""
    if jnp.ndim(x) < 2:
        raise ValueError(
            f"{op}: expected a sequence [..., time, features] (rank >= 2), got "
            f"x.shape={jnp.shape(x)}."
        )
    F.check_features(op, x, features)


def check_state(op: str, state: Any, batch: tuple[int, ...], n: int, name: str) -> None:
    """Raises ``ValueError`` unless ``state`` is ``None`` or has shape ``[*batch, n]``."""
    if state is None:
        return
    want = (*batch, n)
    if tuple(jnp.shape(state)) != want:
        raise ValueError(f"{op}: {name}.shape={jnp.shape(state)} must be {want} ([..., {n}]).")


def check_segment_pos(op: str, segment_pos: Any, want: tuple[int, ...]) -> None:
    """Raises unless ``segment_pos`` is ``None`` or an integer array of shape ``want``."""
    if segment_pos is None:
        return
    if not hasattr(segment_pos, "dtype"):
        raise TypeError(
            f"{op}: segment_pos must be an integer array, got {type(segment_pos).__name__}."
        )
    dtype = jnp.result_type(segment_pos)
    if not jnp.issubdtype(dtype, jnp.integer):
        raise TypeError(f"{op}: segment_pos must be an integer array, got dtype {dtype}.")
    if tuple(jnp.shape(segment_pos)) != want:
        raise ValueError(
            f"{op}: segment_pos.shape={jnp.shape(segment_pos)} must be {want}, the inputs' "
            "shape without the feature axis."
        )


def check_call(
    op: str, x: Any, initial_state: Any, d: int | None, n: int, segment_pos: Any = None
) -> None:
    """A sequence call's shapes: ``x [..., T, d]``, ``initial_state [..., n]`` or ``None``,
    ``segment_pos [..., T]`` or ``None``."""
    check_sequence(op, x, d)
    check_state(op, initial_state, tuple(jnp.shape(x))[:-2], n, "initial_state")
    check_segment_pos(op, segment_pos, tuple(jnp.shape(x))[:-1])


def check_step(
    op: str, state: Any, x_t: Any, d: int | None, n: int, segment_pos: Any = None
) -> None:
    """A decode step's shapes: ``x_t [..., d]`` (rank >= 1), ``state [..., n]`` or ``None``,
    ``segment_pos [...]`` or ``None``."""
    if jnp.ndim(x_t) < 1:
        raise ValueError(f"{op}: expected x_t of shape [..., features], got a scalar.")
    F.check_features(op, x_t, d)
    check_state(op, state, tuple(jnp.shape(x_t))[:-1], n, "state")
    check_segment_pos(op, segment_pos, tuple(jnp.shape(x_t))[:-1])


# --- initialisation and the bounded square root -------------------------------------------------


def rglru_a_param_init(min_rad: float = RGLRU_MIN_RAD, max_rad: float = RGLRU_MAX_RAD):
    """recurrentgemma's ``rnn_param_init``: ``a_param`` with ``softplus(a_param) = -log a``.

    The base decay ``a`` (the decay of one step at full gate, before the power ``c``) is drawn
    uniformly on the ring ``min_rad <= |a| <= max_rad`` by area: ``a^2 ~ U[min_rad^2,
    max_rad^2]``; then ``a_param = softplus^{-1}(-log a) = log(exp(-log a) - 1)``. In the
    paper's notation ``a = sigmoid(Lambda)``, so ``Lambda = -a_param``.
    """

    def init(key: jax.Array, shape: Any, dtype: Any = jnp.float32) -> jax.Array:
        unif = jax.random.uniform(key, shape, jnp.float32)
        log_a = 0.5 * jnp.log(unif * (max_rad**2 - min_rad**2) + min_rad**2)
        return jnp.log(jnp.expm1(-log_a)).astype(dtype)

    return init


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def sqrt_bound_derivative(x: Any, max_gradient: float) -> jax.Array:
    """``sqrt(x)`` whose derivative ``1 / (2 sqrt(x))`` is bounded by ``max_gradient``.

    The derivative is ``1 / (2 sqrt(max(x, 1 / (4 max_gradient^2))))``: recurrentgemma's
    ``sqrt_bound_derivative``, as a ``custom_jvp`` (forward mode too) whose tangent is linear.
    """
    return jnp.sqrt(x)


@sqrt_bound_derivative.defjvp
def _sqrt_bound_jvp(max_gradient, primals, tangents):
    (x,), (dx,) = primals, tangents
    x = jnp.asarray(x)
    floor = jnp.asarray(1.0 / (4.0 * max_gradient**2), x.dtype)
    return jnp.sqrt(x), dx * (0.5 * lax.rsqrt(jnp.maximum(x, floor)))


def last_state(h: jax.Array, h0: Any = None) -> jax.Array:
    """``h[..., -1, :]``, the last state of ``h`` ``[..., T, n]``.

    For an empty time axis (``T = 0``) the last state is the initial one, ``h0`` (zeros for
    ``None``), in ``h``'s dtype, as ``lax.scan`` returns its initial carry. Under an Explicit
    mesh axis that splits the time axis, a slice of one step is not defined (jax 0.10.2
    refuses it); there the last step is selected with a mask and summed over time, an
    all-reduce of one state per device, instead of gathering ``h``.
    """
    axis = h.ndim - 2
    if h.shape[axis] == 0:
        shape = h.shape[:axis] + h.shape[axis + 1 :]
        if h0 is None:
            return jnp.zeros(shape, h.dtype)
        return jnp.broadcast_to(jnp.asarray(h0), shape).astype(h.dtype)
    spec = getattr(jax.typeof(h).sharding, "spec", ())
    if axis >= len(spec) or spec[axis] is None:
        return h[..., -1, :]
    length = h.shape[axis]
    is_last = (jnp.arange(length) == length - 1).reshape((1,) * axis + (length, 1))
    return jnp.sum(jnp.where(is_last, h, jnp.zeros_like(h)), axis=axis)


# --- RG-LRU ------------------------------------------------------------------------------------


def block_diagonal(x: jax.Array, w: jax.Array, b: jax.Array, precision: PrecisionLike) -> jax.Array:
    """recurrentgemma's ``BlockDiagonalLinear``: ``x [..., d]`` in ``heads`` blocks of
    ``d / heads``, each times its own block of ``w [heads, d / heads, d / heads]`` plus its row
    of ``b [heads, d / heads]``.

    With one head it is the dense ``x @ w[0] + b[0]``.
    """
    heads, width = w.shape[0], w.shape[1]
    xh = x.reshape(*x.shape[:-1], heads, width)
    y = jnp.einsum("...hi,hij->...hj", xh, w, precision=precision)
    y = y + jnp.broadcast_to(b, y.shape)
    return y.reshape(*x.shape[:-1], heads * width)


def _rglru_coefficients(
    x: Any, params: Params, segment_pos: Any, o: RGLRUOptions
) -> tuple[jax.Array, jax.Array]:
    """``(a, b)`` of ``h_t = a_t h_{t-1} + b_t`` for the inputs ``x`` ``[..., d]``.

    recurrentgemma's ``RGLRU``: ``log a = -c * sigmoid(a_gate(x)) * softplus(a_param)``,
    ``b = x * sigmoid(input_gate(x)) * sqrt(1 - a^2)``; where ``segment_pos == 0`` (a reset)
    ``a = 0`` and the factor ``sqrt(1 - a^2)`` is 1.
    """
    gx, ga = params["input_gate"], params["a_gate"]
    x, a_param, wx, bx, wa, ba = F.promote(
        (x, params["a_param"], gx["w"], gx["b"], ga["w"], ga["b"]), o.dtype
    )
    gate_a = jax.nn.sigmoid(block_diagonal(x, wa, ba, o.precision))
    log_a = -o.c * gate_a * jnp.broadcast_to(jax.nn.softplus(a_param), gate_a.shape)
    a = jnp.exp(log_a)
    multiplier = sqrt_bound_derivative(1.0 - jnp.exp(2.0 * log_a), MAX_SQRT_GRADIENT)
    if segment_pos is not None:
        reset = (jnp.asarray(segment_pos) == 0)[..., None]
        multiplier = jnp.where(reset, jnp.ones_like(multiplier), multiplier)
        a = jnp.where(reset, jnp.zeros_like(a), a)
    b = hj.glu(block_diagonal(x, wx, bx, o.precision), x) * multiplier
    return a, b


def rglru(
    x: Any, params: Params, h0: Any = None, *, segment_pos: Any = None, options: RGLRUOptions
) -> tuple[jax.Array, jax.Array]:
    """The RG-LRU over a sequence ``x`` ``[..., T, d]``: ``(h [..., T, d], h_last [..., d])``.

    ``params``: ``a_param`` ``[d]``; ``input_gate``, ``a_gate``: ``{"w": [heads, d/heads,
    d/heads], "b": [heads, d/heads]}``; ``h0`` ``[..., d]`` or ``None`` (zeros);
    ``segment_pos`` ``[..., T]`` or ``None`` (no resets).
    """
    a, b = _rglru_coefficients(x, params, segment_pos, options)
    h = hj.linear_scan(a, b, h0=h0, axis=b.ndim - 2, mesh_axis=options.mesh_axis)
    return h, last_state(h, h0)


def rglru_step(
    state: Any, x_t: Any, params: Params, *, segment_pos: Any = None, options: RGLRUOptions
) -> tuple[jax.Array, jax.Array]:
    """One RG-LRU step, ``x_t`` ``[..., d]``: ``(h_t, h_t)`` with ``h_t = a_t h + b_t``.

    ``segment_pos`` ``[...]`` (the position of ``x_t``) or ``None``: at position 0 the state
    resets (``a_t = 0``) and ``b_t`` is not scaled by ``sqrt(1 - a_t^2)``, as recurrentgemma's
    sampler runs it.
    """
    a, b = _rglru_coefficients(x_t, params, segment_pos, options)
    h = b if state is None else a * state + b
    return h, h


# --- minGRU ------------------------------------------------------------------------------------


def g(x: jax.Array) -> jax.Array:
    """minGRU's positive activation: ``x + 0.5`` for ``x >= 0``, ``sigmoid(x)`` below."""
    return jnp.where(x >= 0, jax.nn.relu(x) + 0.5, jax.nn.sigmoid(x))


def log_g(x: jax.Array) -> jax.Array:
    """``log g(x)``, without ``log`` of a small number: ``-softplus(-x)`` for ``x < 0``."""
    return jnp.where(x >= 0, jnp.log(jax.nn.relu(x) + 0.5), -jax.nn.softplus(-x))


def _min_gru_pre(x: Any, params: Params, o: MinGRUOptions) -> tuple[jax.Array, jax.Array]:
    """``(k, h~)``: the gate's and the candidate's pre-activations, ``[..., n]`` each."""
    x, kz, bz, kh, bh = F.promote((x, *(params.get(k) for k in MIN_GRU_PARAMS)), o.dtype)
    return F.dense(x, kz, bz, o.precision), F.dense(x, kh, bh, o.precision)


def min_gru(
    x: Any, params: Params, h0: Any = None, *, options: MinGRUOptions
) -> tuple[jax.Array, jax.Array]:
    """minGRU over ``x`` ``[..., T, d]`` in log space: ``(h [..., T, n], h_last [..., n])``.

    ``h = exp(log_linear_scan(-softplus(k), -softplus(-k) + log g(h~)))``, the states from
    zero, all positive. The recurrence is linear in the initial state, so ``h0`` ``[..., n]``
    (any real values; ``None`` for zeros) is added in linear space, ``h0`` carried by the
    decays: ``+ linear_scan(1 - z, 0, h0=h0)``. No ``log h0`` is taken, so ``h0 = 0`` has
    exact gradients and ``h0 < 0`` works, as in the decode step. ``h0`` is the state itself
    (the paper's ``g(h_0)`` start is ``h0 = g(h_0)``), as ``state`` is in :func:`min_gru_step`.
    """
    k, cand = _min_gru_pre(x, params, options)
    axis, mesh_axis = k.ndim - 2, options.mesh_axis
    log_h = hj.log_linear_scan(
        -jax.nn.softplus(k), -jax.nn.softplus(-k) + log_g(cand), axis=axis, mesh_axis=mesh_axis
    )
    h = jnp.exp(log_h)
    if h0 is not None:
        keep = jax.nn.sigmoid(-k)  # 1 - z
        h = h + hj.linear_scan(keep, jnp.zeros_like(keep), h0=h0, axis=axis, mesh_axis=mesh_axis)
    return h, last_state(h, h0)


def min_gru_step(
    state: Any, x_t: Any, params: Params, *, options: MinGRUOptions
) -> tuple[jax.Array, jax.Array]:
    """One minGRU step in linear space: ``h_t = (1 - z_t) h + z_t g(h~_t)``; ``(h_t, h_t)``."""
    k, cand = _min_gru_pre(x_t, params, options)
    new = jax.nn.sigmoid(k) * g(cand)
    h = new if state is None else jax.nn.sigmoid(-k) * state + new
    return h, h
