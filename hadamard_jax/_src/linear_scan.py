"""The element-wise linear recurrence ``h_t = a_t * h_{t-1} + b_t`` and its log-space form.

The Hadamard-product core of gated recurrent layers (Griffin's RG-LRU, minGRU, LRU, Mamba's
diagonal state update), with one derivative rule in this library's design
(:mod:`hadamard_jax._src.rules`): a ``jax.custom_jvp`` whose tangent is itself a linear
recurrence in the tangents,

.. math::
  dh_t = a_t\\, dh_{t-1} + (da_t\\, h_{t-1} + db_t), \\qquad dh_{-1} = dh_0,

evaluated under ``jax.checkpoint`` with the primal states ``h`` as a residual. Forward mode is
that scan; reverse mode is JAX's transpose of it, the backward recurrence
``g_t = ct_t + a_{t+1} g_{t+1}``, ``db = g``, ``da_t = g_t h_{t-1}``, ``dh0 = a_0 g_0``. The
backward pass keeps ``a``, ``h0`` and ``h`` (not ``b``, and never the levels of a parallel scan);
no logarithm or division of ``a`` is taken, so exact zeros (resets) and ``|a| > 1`` are exact.

The log-space form (minGRU's stable parallel form) has the tangent

.. math::
  d\\ell_t = w_t\\, (d\\ell_{t-1} + d\\log a_t) + v_t\\, d\\log b_t, \\qquad
  w_t = e^{\\log a_t + \\ell_{t-1} - \\ell_t}, \\quad v_t = e^{\\log b_t - \\ell_t},

again a linear recurrence (with coefficients ``w``), so both ops share one scan.

How the scan runs is chosen in one place, :func:`_time_major`: the ``ALGORITHMS`` table
(:func:`choose_algorithm`, one device), or, for a time axis sharded over a mesh
(:func:`_mesh_axes` decides), ``jax.shard_map`` with a carry correction across shards
(:func:`_sharded`). The rules never look at the algorithm: every algorithm is a
function of ``(a, b, h0)`` linear in ``(b, h0)``, which is all the tangent needs.

Under Explicit mesh axes the arrays of one call get one layout (:func:`_layout`: each dimension
takes the sharding of ``b``, else ``a``, else ``h0``, the time axis first) and each array is
resharded to it where it differs (:func:`_place`, in the ``_prep_*`` functions that the primal
and the tangent share; ``reshard`` is linear, so the tangent stays linear in the tangents).
An empty time axis short-cuts to an empty result in :func:`_time_major`.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import AxisType
from jax.sharding import PartitionSpec as P
from jax.typing import ArrayLike

from hadamard_jax._src import activations, checks, rules
from hadamard_jax._src.checks import Shape

#: ``(dtype, weak)``: the result dtype and whether the result is weakly typed.
ResultType = tuple[np.dtype, bool]

# --- the forward algorithms ---------------------------------------------------------------------

#: The one-device forward algorithm per backend (:func:`choose_algorithm`).
#:
#: * ``"sequential"``: one ``lax.scan`` over the time axis, ``T`` steps of ``prod(S)`` elements.
#:   Measured fastest on CPU (2 cores, jax 0.10.2, fp32 fwd+bwd: 0.4-0.8x the time of
#:   ``lax.scan`` autodiff and 0.1-0.25x ``lax.associative_scan``;
#:   ``python -m hadamard_jax.bench.recurrence``). Unrolling (``unroll=4, 8``) and stepping two
#:   to eight time steps per iteration were slower there.
#: * ``"chunked"``: the time axis cut into about ``sqrt(T)`` chunks scanned side by side from
#:   zero, then the carry correction of the sharded path (:func:`_chunked`): ``sqrt(T)`` loop
#:   steps of ``sqrt(T) prod(S)`` elements, the usual shape of a GPU/TPU path (a sequential loop
#:   there costs a kernel launch per step). On CPU it measured 2-4x slower than ``lax.scan`` and
#:   its backward pass keeps ~6 ``[T, ...]`` arrays; with no accelerator to measure it on, no
#:   backend selects it yet: it is the place where such a path plugs in, tested for values and
#:   derivatives.
#:
#: A further path (a Pallas kernel) is a new entry here and in ``_LOCAL``; the rules do not change.
#: Public as ``hadamard_jax.linear_scan.ALGORITHMS``; ``algorithm=`` of the ops overrides it.
ALGORITHMS: dict[str, str] = {"cpu": "sequential", "gpu": "sequential", "tpu": "sequential"}


def choose_algorithm(backend: str | None = None) -> str:
    """The one-device forward algorithm for ``backend`` (default: JAX's default backend).

    Examples:
      >>> from hadamard_jax._src.linear_scan import choose_algorithm
      >>> choose_algorithm("cpu")
      'sequential'
    """
    return ALGORITHMS.get(backend or jax.default_backend(), "sequential")


class _Semiring(NamedTuple):
    """``h_t = plus(times(a_t, h_{t-1}), b_t)``: the linear form or its log-space form."""

    times: Callable[[Any, Any], Any]
    plus: Callable[[Any, Any], Any]
    zero: Callable[[Any], Any]  # the additive identity, shaped like its argument
    one: Callable[[Any], Any]  # the multiplicative identity


_LINEAR = _Semiring(operator.mul, operator.add, jnp.zeros_like, jnp.ones_like)
_LOG = _Semiring(operator.add, jnp.logaddexp, lambda x: jnp.full_like(x, -jnp.inf), jnp.zeros_like)


class _Plan(NamedTuple):
    """How the time-major scan runs: a local algorithm, optionally per shard of a mesh axis."""

    algorithm: str  # a key of _LOCAL
    mesh: Any = None  # a jax.sharding.AbstractMesh when the time axis is sharded
    mesh_axes: tuple[str, ...] = ()


def _sequential(sr: _Semiring, a, b, h0, length: int, reverse: bool):
    """``h`` of shape ``[T, *S]``: one ``lax.scan`` over the leading (time) axis.

    ``a`` is ``[T, *S]``, or ``[1, *S]`` when time-invariant; ``b`` is ``[T, *S]`` or ``None``
    (zero); ``h0`` is ``[*S]`` or ``None`` (zero).
    """
    invariant = a.shape[0] != length
    if h0 is None:
        h0 = sr.zero(a[0] if b is None else b[0])

    def step(h, x):
        a_t = a[0] if invariant else x[0]
        h = sr.times(a_t, h)
        if x[1] is not None:
            h = sr.plus(h, x[1])
        return h, h

    return lax.scan(step, h0, (None if invariant else a, b), length=length, reverse=reverse)[1]


def _from_zero(sr: _Semiring, a, b, length: int, reverse: bool):
    """One chunk scanned from zero: ``(h, prod)``, each ``[L, *S]``, and the chunk's carry.

    ``prod_t`` is the running ``times``-product of ``a`` from the chunk's start (in scan order),
    so that the states from an incoming ``h_in`` are ``plus(h_t, times(prod_t, h_in))``.
    ``h`` is ``None`` when ``b`` is. Returns ``(h, prod, (prod_last, h_last))``.
    """
    a = jnp.broadcast_to(a, (length, *a.shape[1:]))
    init_h = None if b is None else sr.zero(b[0])

    def step(carry, x):
        h, p = carry
        a_t, b_t = x
        p = sr.times(a_t, p)
        if b_t is not None:
            h = sr.plus(sr.times(a_t, h), b_t)
        return (h, p), (h, p)

    (h_last, p_last), (h, p) = lax.scan(
        step, (init_h, sr.one(a[0])), (a, b), length=length, reverse=reverse
    )
    return h, p, (p_last, h_last)


def _carries_in(sr: _Semiring, p_last, h_last, h0, reverse: bool):
    """The incoming state of every chunk, ``[n, *S]``: an exclusive scan over the carries.

    ``in_0 = h0`` and ``in_{k+1} = plus(times(p_last_k, in_k), h_last_k)`` (in scan order).
    """
    if h0 is None:
        h0 = sr.zero(p_last[0])

    def step(h, x):
        p, hl = x
        nxt = sr.times(p, h)
        return (nxt if hl is None else sr.plus(nxt, hl)), h

    return lax.scan(step, h0, (p_last, h_last), reverse=reverse)[1]


def _correct(sr: _Semiring, h, p, h_in):
    """``plus(h, times(p, h_in))``, the carry correction (``h`` may be ``None``: zero)."""
    carried = sr.times(p, h_in)
    return carried if h is None else sr.plus(h, carried)


def _num_chunks(length: int) -> int:
    """The divisor of ``length`` closest to ``sqrt(length)`` (1 for a prime length)."""
    best = 1
    for c in range(1, math.isqrt(length) + 1):
        if length % c == 0:
            best = c
    return best


def _chunked(sr: _Semiring, a, b, h0, length: int, reverse: bool):
    """The ``"chunked"`` algorithm: chunks scanned side by side, then the carry correction."""
    chunks = _num_chunks(length)
    if chunks == 1:
        return _sequential(sr, a, b, h0, length, reverse)
    span = length // chunks
    a = jnp.broadcast_to(a, (length, *a.shape[1:]))

    def split(x):
        return None if x is None else x.reshape(chunks, span, *x.shape[1:])

    h, p, (p_last, h_last) = jax.vmap(lambda a, b: _from_zero(sr, a, b, span, reverse))(
        split(a), split(b)
    )
    h_in = _carries_in(sr, p_last, h_last, h0, reverse)
    out = _correct(sr, h, p, h_in[:, None])
    return out.reshape(length, *out.shape[2:])


#: The one-device algorithms by name (:data:`ALGORITHMS`).
_LOCAL: dict[str, Callable[..., Any]] = {"sequential": _sequential, "chunked": _chunked}


def _devices(plan: _Plan) -> int:
    """How many shards the time axis is split into."""
    return math.prod(plan.mesh.shape[name] for name in plan.mesh_axes)


def _gather(tree, axes, n: int):
    """Every shard's ``[*S]`` leaves stacked to ``[n, *S]`` on every shard.

    A ``psum`` of each shard's leaves placed in its own row (an all-reduce of ``n`` states):
    the same data as ``all_gather``, whose transpose (a reduce-scatter) fails to lower under
    Explicit mesh axes in jax 0.10.2, while ``psum`` transposes to a no-op broadcast.
    """
    index = lax.axis_index(axes)

    def stack(x):
        rows = (jnp.arange(n) == index).astype(x.dtype).reshape(n, *(1,) * x.ndim)
        return lax.psum(rows * x[None], axes)

    return jax.tree.map(stack, tree)


def _on_shards(plan: _Plan, local: Callable[..., Any], args: list[Any], leads: list[str]):
    """``local(*args)`` per shard via ``jax.shard_map``; returns a time-major ``[T, *S]`` array.

    ``leads[i]`` says how ``args[i]`` is laid out: ``"time"`` (``[T, *S]``, time split over
    ``plan.mesh_axes``), ``"one"`` (``[1, *S]``) or ``"state"`` (``[*S]``); the last two are
    whole on every shard of those axes. ``None`` arguments reach ``local`` as ``None``.

    The shard_map is manual over the time's mesh axes and every Explicit mesh axis: under
    Explicit axes the state dimensions keep the shardings of the arguments' types (a spec
    naming only the time's axes would all-gather them); Auto axes stay with the compiler.
    """
    mesh = plan.mesh
    explicit = [n for n, t in zip(mesh.axis_names, mesh.axis_types) if t == AxisType.Explicit]
    names = set(plan.mesh_axes) | set(explicit)
    live = [i for i, x in enumerate(args) if x is not None]

    def state_entries(x, lead):
        rank = x.ndim - (lead != "state")
        if not explicit:
            return [None] * rank
        spec = list(jax.typeof(x).sharding.spec)
        spec += [None] * (x.ndim - len(spec))
        return spec[x.ndim - rank :]

    def spec(i):
        x, lead = args[i], leads[i]
        head = {"time": [plan.mesh_axes], "one": [None], "state": []}[lead]
        return P(*head, *state_entries(x, lead))

    ref = next((i for i in live if leads[i] == "time"), live[0])
    out_spec = P(plan.mesh_axes, *state_entries(args[ref], leads[ref]))

    def body(*xs):
        full: list[Any] = [None] * len(args)
        for i, x in zip(live, xs):
            full[i] = x
        return local(*full)

    return jax.shard_map(
        body,
        mesh=mesh,
        in_specs=tuple(spec(i) for i in live),
        out_specs=out_spec,
        axis_names=names,
    )(*(args[i] for i in live))


def _sharded(sr: _Semiring, plan: _Plan, a, b, h0, length: int, reverse: bool):
    """The time axis split over ``plan.mesh_axes``: a local scan per shard, then the carries.

    Each shard scans its part from zero (:func:`_from_zero`); the shards' carries
    ``(prod a, h_last)`` -- one ``[*S]`` pair each -- are gathered (:func:`_gather`, an
    all-reduce of ``n`` state pairs: the only communication of the forward pass), an exclusive
    scan over them gives each shard its incoming state, and one element-wise correction
    ``h = h_local + prod * h_in`` finishes.
    """
    axes = plan.mesh_axes
    n = _devices(plan)
    span = length // n

    def local(a, b, h0):
        h, p, carry = _from_zero(sr, a, b, span, reverse)
        p_all, h_all = _gather(carry, axes, n)
        h_in = _carries_in(sr, p_all, h_all, h0, reverse)
        mine = h_in[lax.axis_index(axes)]
        return _correct(sr, h, p, mine[None])

    a_lead = "one" if a.shape[0] != length else "time"
    return _on_shards(plan, local, [a, b, h0], [a_lead, "time", "state"])


def _time_major(sr: _Semiring, plan: _Plan, a, b, h0, length: int, reverse: bool):
    """The recurrence along axis 0, by ``plan``; linear in ``(b, h0)`` for the linear form.

    An empty time axis (``length == 0``) gives an empty ``[0, *S]`` result, as ``lax.scan``.
    """
    if length == 0:
        ref = a if b is None else b
        return jnp.zeros((0, *ref.shape[1:]), ref.dtype)
    if plan.mesh_axes:
        return _sharded(sr, plan, a, b, h0, length, reverse)
    return _LOCAL[plan.algorithm](sr, a, b, h0, length, reverse)


# --- static configuration and layout ------------------------------------------------------------


class _Layout(NamedTuple):
    """One sharding for every array of a call under Explicit mesh axes (:func:`_layout`)."""

    mesh: Any  # the jax.sharding.AbstractMesh of the arguments' types
    spec: tuple[Any, ...]  # a PartitionSpec entry per dimension of the result shape


class _Config(NamedTuple):
    """Everything static about one call (hashable: a ``nondiff_argnum`` and a jit key)."""

    shape: Shape  # the result shape
    axis: int  # the time axis, normalised
    reverse: bool
    a_invariant: bool  # a has size 1 (or no axis) along the time axis: constant in time
    has_h0: bool
    result: ResultType
    plan: _Plan
    layout: _Layout | None = None


def _compute_dtype(cfg: _Config) -> np.dtype:
    return activations.compute_dtype(cfg.result[0])


def _to_time_major(x, axis: int):
    return x if axis == 0 else jnp.moveaxis(x, axis, 0)


def _from_time_major(x, axis: int):
    return x if axis == 0 else jnp.moveaxis(x, 0, axis)


def _state_shape(cfg: _Config) -> Shape:
    return cfg.shape[: cfg.axis] + cfg.shape[cfg.axis + 1 :]


def _place(cfg: _Config, x, time_major: bool):
    """``x`` resharded to the call's common layout (:func:`_layout`), when it differs.

    ``x`` is time-major ``[T, *S]`` (or ``[1, *S]``: then unsharded along time) when
    ``time_major``, else a state ``[*S]``. Without Explicit mesh axes ``x`` is returned as is.
    """
    layout = cfg.layout
    if layout is None:
        return x
    spec = layout.spec
    state = spec[: cfg.axis] + spec[cfg.axis + 1 :]
    if time_major:
        want = ((spec[cfg.axis] if x.shape[0] == cfg.shape[cfg.axis] else None), *state)
    else:
        want = state
    have = tuple(jax.typeof(x).sharding.spec)
    have = have + (None,) * (x.ndim - len(have))
    if have == tuple(want):
        return x
    return jax.sharding.reshard(x, jax.sharding.NamedSharding(layout.mesh, P(*want)))


def _prep_a(cfg: _Config, a):
    """``a`` in the compute dtype, time-major: ``[T, *S]``, or ``[1, *S]`` if time-invariant."""
    shape = cfg.shape
    if cfg.a_invariant:
        shape = shape[: cfg.axis] + (1,) + shape[cfg.axis + 1 :]
    a = _to_time_major(checks.broadcast_cast(a, shape, _compute_dtype(cfg)), cfg.axis)
    return _place(cfg, a, True)


def _prep_full(cfg: _Config, x) -> jax.Array:
    """``x`` broadcast to the result shape, in the compute dtype, time-major: ``[T, *S]``."""
    x = _to_time_major(checks.broadcast_cast(x, cfg.shape, _compute_dtype(cfg)), cfg.axis)
    return _place(cfg, x, True)


def _prep_b(cfg: _Config, b) -> jax.Array | None:
    return None if b is None else _prep_full(cfg, b)


def _prep_h0(cfg: _Config, h0):
    if h0 is None:
        return None
    return _place(cfg, checks.broadcast_cast(h0, _state_shape(cfg), _compute_dtype(cfg)), False)


def _prep_h(cfg: _Config, h):
    return _place(cfg, _to_time_major(jnp.asarray(h).astype(_compute_dtype(cfg)), cfg.axis), True)


def _finish(cfg: _Config, h):
    return checks.cast(_from_time_major(h, cfg.axis), *cfg.result)


def _shift(h, first, reverse: bool):
    """``h`` moved one step along time (axis 0), ``first`` (``[1, *S]``) entering."""
    if reverse:
        return jnp.concatenate([h[1:], first], axis=0)
    return jnp.concatenate([first, h[:-1]], axis=0)


def _previous(cfg: _Config, h, h0, fill):
    """``h_{t-1}`` for every ``t`` (time-major), ``h_{-1} = h0`` (``fill(h[0])`` if ``None``).

    On a sharded time axis each shard shifts its own part and takes the boundary state of its
    neighbour from the gathered boundary states (:func:`_gather`: ``n`` states).
    """
    plan = cfg.plan
    if h.shape[0] == 0:
        return h
    if not plan.mesh_axes:
        return _shift(h, fill(h[:1]) if h0 is None else h0[None], cfg.reverse)
    axes = plan.mesh_axes

    def local(h, h0):
        edge = h[0] if cfg.reverse else h[-1]
        edges = _gather(edge, axes, _devices(plan))
        first = fill(edge) if h0 is None else h0
        if cfg.reverse:  # shard i takes shard i + 1's first state; the last shard takes h0
            edges = jnp.concatenate([edges[1:], first[None]], axis=0)
        else:  # shard i takes shard i - 1's last state; the first shard takes h0
            edges = jnp.concatenate([first[None], edges[:-1]], axis=0)
        mine = edges[lax.axis_index(axes)]
        return _shift(h, mine[None], cfg.reverse)

    return _on_shards(plan, local, [h, h0], ["time", "state"])


def _linear_tangent_scan(cfg: _Config, coeff, rhs, dh0):
    """The tangent recurrence ``dh_t = coeff_t dh_{t-1} + rhs_t`` (linear in rhs and dh0)."""
    return _time_major(_LINEAR, cfg.plan, coeff, rhs, dh0, cfg.shape[cfg.axis], cfg.reverse)


# --- linear_scan: the rule ----------------------------------------------------------------------


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _linear_scan(cfg: _Config, a: Any, b: Any, *h0: Any) -> jax.Array:
    h0_c = _prep_h0(cfg, h0[0]) if h0 else None
    h = _time_major(
        _LINEAR, cfg.plan, _prep_a(cfg, a), _prep_b(cfg, b), h0_c, cfg.shape[cfg.axis], cfg.reverse
    )
    return _finish(cfg, h)


@functools.partial(_linear_scan.defjvp, symbolic_zeros=True)
def _linear_scan_jvp(cfg, primals, tangents):
    a, _, *h0 = primals
    out = _linear_scan(cfg, *primals)

    def tangent_fn(xs, ts):
        # dh_t = a_t dh_{t-1} + (da_t h_{t-1} + db_t), dh_{-1} = dh0: a linear scan in the
        # tangents, with the primal states h as its only [T, ...] residual.
        a, h, *h0 = xs
        da, db, *dh0 = ts
        a_c = _prep_a(cfg, a)
        term_a = None
        if da is not None:
            h_prev = _previous(cfg, _prep_h(cfg, h), _prep_h0(cfg, h0[0]) if h0 else None, _zeros)
            term_a = _prep_full(cfg, da) * h_prev
        rhs = rules.sum_terms([term_a, _prep_b(cfg, db)])
        dh0_c = _prep_h0(cfg, dh0[0]) if dh0 else None
        return _finish(cfg, _linear_tangent_scan(cfg, a_c, rhs, dh0_c))

    return out, rules.checkpointed_tangent(tangent_fn, (a, out, *h0), tangents, out)


def _zeros(x):
    return jnp.zeros_like(x)


_linear_scan_jit = jax.jit(_linear_scan, static_argnums=(0,))


# --- log_linear_scan: the rule ------------------------------------------------------------------


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _log_scan(cfg: _Config, log_a: Any, log_b: Any, *log_h0: Any) -> jax.Array:
    h0_c = _prep_h0(cfg, log_h0[0]) if log_h0 else None
    lh = _time_major(
        _LOG,
        cfg.plan,
        _prep_a(cfg, log_a),
        _prep_b(cfg, log_b),
        h0_c,
        cfg.shape[cfg.axis],
        cfg.reverse,
    )
    return _finish(cfg, lh)


def _log_weights(cfg: _Config, log_a, log_b, lh, lh0):
    """``(w, v)``, time-major: the tangent's coefficients, 0 where ``log h_t = -inf``.

    ``w_t = exp(log a_t + l_{t-1} - l_t)`` and ``v_t = exp(log b_t - l_t)`` are the shares of
    the two terms of ``h_t = a_t h_{t-1} + b_t`` (``w + v = 1``). Where ``h_t = 0`` exactly the
    log-state is ``-inf`` whatever the inputs' finite perturbations, so its tangent is 0; the
    exponents are masked before ``exp`` so no derivative of any order sees ``-inf - -inf``.
    """
    la = _prep_a(cfg, log_a)
    lb = _prep_full(cfg, log_b)
    lh = _prep_h(cfg, lh)
    lh_prev = _previous(cfg, lh, _prep_h0(cfg, lh0), lambda x: jnp.full_like(x, -jnp.inf))
    dead = lh == -jnp.inf
    zero = jnp.zeros_like(lh)
    w = jnp.where(dead, zero, jnp.exp(jnp.where(dead, zero, (la + lh_prev) - lh)))
    v = jnp.where(dead, zero, jnp.exp(jnp.where(dead, zero, lb - lh)))
    return w, v


@functools.partial(_log_scan.defjvp, symbolic_zeros=True)
def _log_scan_jvp(cfg, primals, tangents):
    out = _log_scan(cfg, *primals)

    def tangent_fn(xs, ts):
        # dl_t = w_t dl_{t-1} + (w_t dlog_a_t + v_t dlog_b_t): a linear scan with coefficients w.
        log_a, log_b, lh, *lh0 = xs
        dla, dlb, *dlh0 = ts
        w, v = _log_weights(cfg, log_a, log_b, lh, lh0[0] if lh0 else None)
        rhs = rules.sum_terms(
            [
                None if dla is None else w * _prep_full(cfg, dla),
                None if dlb is None else v * _prep_full(cfg, dlb),
            ]
        )
        dh0_c = _prep_h0(cfg, dlh0[0]) if dlh0 else None
        return _finish(cfg, _linear_tangent_scan(cfg, w, rhs, dh0_c))

    log_a, log_b, *log_h0 = primals
    return out, rules.checkpointed_tangent(tangent_fn, (log_a, log_b, out, *log_h0), tangents, out)


_log_scan_jit = jax.jit(_log_scan, static_argnums=(0,))


# --- argument checks ----------------------------------------------------------------------------


def _layout(arrays: list[Any], shape: Shape, axis: int) -> _Layout | None:
    """The one sharding of a call's arrays under Explicit mesh axes; ``None`` without them.

    Under Explicit axes every array carries its sharding in its type, and the scan needs them to
    agree: a replicated ``h0`` (``zeros((B, D))``) with a batch-sharded ``b``, or only one of
    ``a``, ``b`` sharded along time, would meet mismatched shards inside ``lax.scan`` or
    ``shard_map``. Each dimension of the result takes the first sharded entry among ``b``,
    ``a``, ``h0`` (in that order; a broadcast dimension of size 1 has none), unless its mesh
    axes are taken by an earlier dimension; every array is then resharded to that layout
    (:func:`_place`). Arrays that are not ``jax.Array`` (NumPy, Python numbers) are replicated.
    """
    ndim = len(shape)
    state_dims = [d for d in range(ndim) if d != axis]
    order = [1, 0, 2] if len(arrays) > 2 else [1, 0]
    mesh = None
    candidates: list[list[Any]] = [[] for _ in range(ndim)]
    for i in order:
        x = arrays[i]
        if not isinstance(x, jax.Array):
            continue
        sharding = jax.typeof(x).sharding
        x_mesh = sharding.mesh
        if x_mesh.empty or AxisType.Explicit not in x_mesh.axis_types:
            continue
        if mesh is None:
            mesh = x_mesh
        elif x_mesh != mesh:
            continue
        spec = tuple(sharding.spec) + (None,) * (x.ndim - len(sharding.spec))
        dims = state_dims if i == 2 else list(range(ndim))
        dims = dims[len(dims) - x.ndim :]  # right-aligned, as broadcasting
        for d, entry, size in zip(dims, spec, x.shape):
            if entry is not None and size == shape[d]:
                candidates[d].append(entry)
    if mesh is None:
        return None
    used: set[str] = set()
    merged: list[Any] = [None] * ndim
    for d in [axis, *state_dims]:  # the time axis first: its sharding picks the algorithm
        for entry in candidates[d]:
            names = {entry} if isinstance(entry, str) else set(entry)
            if not names & used:
                merged[d] = entry
                used |= names
                break
    if all(entry is None for entry in merged):
        return None
    return _Layout(mesh, tuple(merged))


def _with_time_axes(
    layout: _Layout | None, mesh: Any, axis: int, axes: tuple[str, ...], ndim: int
) -> _Layout | None:
    """``layout`` with the time axis split over ``axes`` (``mesh_axis=`` named them) and those
    mesh axes taken off the other dimensions. Without a layout (no argument sharded under
    Explicit axes), one is made when ``axes`` are Explicit axes of ``mesh``; under Auto axes
    the layout stays ``None`` (the compiler places the arguments)."""
    if not axes:
        return layout
    if layout is None:
        types = dict(zip(mesh.axis_names, mesh.axis_types))
        if not any(types[name] == AxisType.Explicit for name in axes):
            return None
        layout = _Layout(mesh, (None,) * ndim)
    entry = axes[0] if len(axes) == 1 else axes
    if layout.spec[axis] == entry:
        return layout

    def without(e):
        names = () if e is None else ((e,) if isinstance(e, str) else tuple(e))
        kept = tuple(n for n in names if n not in axes)
        return None if not kept else (kept[0] if len(kept) == 1 else kept)

    spec = tuple(entry if d == axis else without(e) for d, e in enumerate(layout.spec))
    return _Layout(layout.mesh, spec)


def _mesh_axes(
    layout: _Layout | None, axis: int, mesh_axis: Any, length: int, op: str
) -> tuple[Any, tuple]:
    """``(mesh, axes)`` of a sharded time axis, or ``(None, ())`` for one device (or ``T = 0``).

    ``mesh_axis`` names the mesh axis (or axes) that the time axis is split over, in the mesh
    set by ``jax.set_mesh``; ``None`` takes it from the call's layout under Explicit mesh axes
    (:func:`_layout`).
    """
    if mesh_axis is None:
        if layout is None or layout.spec[axis] is None:
            return None, ()
        mesh, entry = layout.mesh, layout.spec[axis]
        axes = (entry,) if isinstance(entry, str) else tuple(entry)
    else:
        if isinstance(mesh_axis, str):
            axes = (mesh_axis,)
        elif (
            isinstance(mesh_axis, tuple)
            and mesh_axis
            and all(isinstance(s, str) for s in mesh_axis)
        ):
            axes = mesh_axis
        else:
            raise TypeError(
                f"{op}: mesh_axis must be None, a mesh axis name or a tuple of names, got "
                f"{type(mesh_axis).__name__} ({mesh_axis!r:.60})."
            )
        mesh = jax.sharding.get_abstract_mesh()
        if mesh.empty:
            raise ValueError(
                f"{op}: mesh_axis={mesh_axis!r} needs a mesh: call it under "
                "`with jax.set_mesh(mesh):`."
            )
        missing = [s for s in axes if s not in mesh.axis_names]
        if missing:
            raise ValueError(
                f"{op}: mesh_axis={mesh_axis!r} names {missing}, not axes of the mesh "
                f"{tuple(mesh.axis_names)}."
            )
    n = math.prod(mesh.shape[s] for s in axes)
    if n == 1 or length == 0:
        return None, ()
    if length % n:
        raise ValueError(
            f"{op}: the time axis (axis={axis}, length {length}) is split over mesh axes "
            f"{axes} of {n} devices; its length must be a multiple of {n}."
        )
    return mesh, axes


def _config(
    op: str,
    a: Any,
    b: Any,
    h0: Any,
    names: tuple[str, str, str],
    *,
    axis: Any,
    reverse: Any,
    broadcast: Any,
    mesh_axis: Any,
    algorithm: Any,
    allow_complex: bool,
) -> tuple[_Config, list[Any]]:
    """Checks the arguments; returns the static configuration and the arrays to scan."""
    if algorithm is not None and (not isinstance(algorithm, str) or algorithm not in _LOCAL):
        raise ValueError(
            f"{op}: algorithm must be None or one of {sorted(_LOCAL)}, got {algorithm!r:.60}."
        )
    reverse = checks.check_bool(reverse, "reverse", op)
    broadcast = checks.check_bool(broadcast, "broadcast", op)
    arrays = [checks.as_array(a, names[0], op), checks.as_array(b, names[1], op)]
    if h0 is not None:
        arrays.append(checks.as_array(h0, names[2], op))
    for x, name in zip(arrays, names):
        dtype = jnp.result_type(x)
        if not allow_complex and jnp.issubdtype(dtype, jnp.complexfloating):
            raise TypeError(
                f"{op}: argument {name!r} has complex dtype {dtype}; the log-space recurrence "
                "is for positive real states (use linear_scan for complex ones)."
            )
    shape = checks.result_shape([jnp.shape(x) for x in arrays[:2]], names[:2], op, broadcast)
    if not shape:
        raise ValueError(
            f"{op}: {names[0]} and {names[1]} are scalars (shape ()); the recurrence needs "
            "a time axis."
        )
    axis = checks.check_axis(axis, len(shape), "axis", op)
    a_shape = (1,) * (len(shape) - jnp.ndim(arrays[0])) + tuple(jnp.shape(arrays[0]))
    a_invariant = a_shape[axis] == 1 and shape[axis] != 1
    state = shape[:axis] + shape[axis + 1 :]
    if h0 is not None:
        h0_shape = tuple(jnp.shape(arrays[2]))
        if broadcast:
            try:
                ok = np.broadcast_shapes(h0_shape, state) == state
            except ValueError:
                ok = False
        else:
            ok = h0_shape == state
        if not ok:
            raise ValueError(
                f"{op}: {names[2]}.shape={h0_shape} must be the state shape {state}: the shape "
                f"of the result {shape} without axis={axis}"
                + (" (or broadcast to it)." if broadcast else ".")
            )
    result = checks.result_type(arrays, floating=True)
    layout = _layout(arrays, shape, axis)
    mesh, axes = _mesh_axes(layout, axis, mesh_axis, shape[axis], op)
    layout = _with_time_axes(layout, mesh, axis, axes, len(shape))
    plan = _Plan(choose_algorithm() if algorithm is None else algorithm, mesh, axes)
    cfg = _Config(shape, axis, reverse, a_invariant, h0 is not None, result, plan, layout)
    return cfg, arrays


# --- the public functions -----------------------------------------------------------------------


def linear_scan(
    a: ArrayLike,
    b: ArrayLike,
    *,
    h0: ArrayLike | None = None,
    axis: int = 0,
    reverse: bool = False,
    broadcast: bool = False,
    mesh_axis: str | tuple[str, ...] | None = None,
    algorithm: str | None = None,
) -> jax.Array:
    r"""The element-wise linear recurrence ``h_t = a_t * h_{t-1} + b_t`` along ``axis``.

    .. math::
      h_t = a_t \circ h_{t-1} + b_t, \qquad h_{-1} = h_0 \ (0 \text{ if None}),

    for ``t = 0 .. T-1`` along ``axis`` (``t = T-1 .. 0`` with ``reverse=True``, where
    ``h_t = a_t h_{t+1} + b_t`` and ``h_T = h_0``). The Hadamard-product core of gated
    recurrent layers: Griffin's RG-LRU, minGRU, LRU (complex ``a``), Mamba's diagonal state
    update.

    The derivative rule is a ``jax.custom_jvp`` whose tangent is again such a recurrence,
    ``dh_t = a_t dh_{t-1} + da_t h_{t-1} + db_t``, so forward mode (``jvp``, ``jacfwd``,
    ``hessian``, ``jvp`` of ``grad``) works; reverse mode is its transpose, the backward
    recurrence ``g_t = ct_t + a_{t+1} g_{t+1}`` with ``db = g``, ``da_t = g_t h_{t-1}``,
    ``dh0 = a_0 g_0``. The backward pass keeps ``a``, ``h0`` and the states ``h``: one
    ``[T, ...]`` array besides the inputs (differentiating ``lax.scan`` keeps two, and
    ``lax.associative_scan`` every level of its tree). No logarithm or division of ``a`` is
    taken: exact zeros (resets) give exact gradients and ``|a| > 1`` works.

    Dtypes: ``jnp.result_type(a, b, h0)``, real floating or complex; integer and boolean inputs
    promote to the default float dtype (as ``jax.nn`` functions do; a boolean reset mask is a
    valid ``a``). bfloat16/float16 inputs are accumulated in float32 and the states rounded
    once to the input dtype. Complex inputs follow JAX's convention: the VJP is the transpose,
    not the adjoint (as ``jnp.multiply``).

    Sequence sharding: when the time axis is split over a mesh axis, each device scans its
    part and only per-shard carries (one state-sized pair per device) move between devices:
    ``jax.shard_map`` with a carry correction. It is used when ``b`` (or ``a``) is sharded
    along ``axis`` under Explicit mesh axes (detected from its type), or when ``mesh_axis``
    names the mesh axis (under ``jax.set_mesh``; Auto axes). Otherwise the recurrence runs as
    on one device. Under Explicit mesh axes the arguments may be sharded differently (a
    replicated ``h0 = zeros((B, D))`` with a batch- and time-sharded ``b``, or only one of
    ``a``, ``b`` sharded along time): each dimension takes the sharding that ``b``, else ``a``,
    else ``h0`` gives it, and the others are resharded to it (``jax.sharding.reshard``) before
    the scan; the result has that sharding.

    Algorithms: on one device (or per shard) the scan runs by ``algorithm``, one of
    ``"sequential"`` (one ``lax.scan`` over time) and ``"chunked"`` (about ``sqrt(T)`` chunks
    scanned side by side, then a carry correction: the shape of an accelerator path). ``None``
    picks the backend's entry of the table ``linear_scan.ALGORITHMS`` (backend name ->
    algorithm; ``"sequential"`` on CPU, GPU and TPU, the fastest measured) by
    ``linear_scan.choose_algorithm()``. Every algorithm has the same derivative rule.

    An empty time axis (``T = 0``) gives an empty result of the result's shape and dtype, as
    ``lax.scan`` does, and zero gradients.

    Args:
      a: the decays, shape ``[..., T, ...]`` (``T`` at ``axis``), equal to ``b``'s shape; with
        ``broadcast=True`` any shape that broadcasts against ``b``, e.g. ``[D]`` for a
        time-invariant decay (then not materialised along time).
      b: the inputs, shape ``[..., T, ...]``.
      h0: the initial state, the result's shape without ``axis``; ``None`` for zeros.
      axis: the time axis.
      reverse: run from the end of the axis to its start.
      broadcast: allow ``a``, ``b`` (and ``h0`` against the state shape) to broadcast
        NumPy-style; gradients come back in each input's own shape.
      mesh_axis: the mesh axis name (or tuple of names) the time axis is split over, in the
        mesh set by ``jax.set_mesh``; ``None`` detects it under Explicit axes.
      algorithm: ``None`` (the backend's entry of ``linear_scan.ALGORITHMS``),
        ``"sequential"`` or ``"chunked"``: how the scan runs on one device or shard.

    Returns:
      The states ``h``, the shape of ``a`` and ``b`` (their broadcast shape), dtype
      ``jnp.result_type(a, b, h0)`` promoted to floating.

    Raises:
      ValueError: shapes differ without ``broadcast`` or do not broadcast; ``h0`` has the wrong
        shape; ``axis`` out of range; ``a`` and ``b`` are scalars; the sharded time axis is not
        a multiple of the number of devices; ``mesh_axis`` is not an axis of the mesh;
        ``algorithm`` is not ``None``, ``"sequential"`` or ``"chunked"``.
      TypeError: an argument is not an array or a number; ``axis`` is not an int; a flag is not
        a bool; ``mesh_axis`` is not a name.

    Examples:
      >>> import jax.numpy as jnp
      >>> from hadamard_jax import linear_scan
      >>> linear_scan(jnp.array([0.5, 0.5, 0.0, 2.0]), jnp.array([1.0, 1.0, 1.0, 1.0]))
      Array([1. , 1.5, 1. , 3. ], dtype=float32)
      >>> decay = jnp.array([0.5, 0.25])  # time-invariant, one per feature
      >>> linear_scan(decay, jnp.ones((3, 2)), broadcast=True)
      Array([[1.    , 1.    ],
             [1.5   , 1.25  ],
             [1.75  , 1.3125]], dtype=float32)

    See also:
      :func:`log_linear_scan` for positive states in log space.
    """
    op = "linear_scan"
    cfg, arrays = _config(
        op,
        a,
        b,
        h0,
        ("a", "b", "h0"),
        axis=axis,
        reverse=reverse,
        broadcast=broadcast,
        mesh_axis=mesh_axis,
        algorithm=algorithm,
        allow_complex=True,
    )
    return _linear_scan_jit(cfg, *arrays)


def log_linear_scan(
    log_a: ArrayLike,
    log_b: ArrayLike,
    *,
    log_h0: ArrayLike | None = None,
    axis: int = 0,
    reverse: bool = False,
    broadcast: bool = False,
    mesh_axis: str | tuple[str, ...] | None = None,
    algorithm: str | None = None,
) -> jax.Array:
    r"""``log h`` of the positive recurrence ``h_t = a_t h_{t-1} + b_t``, computed in log space.

    .. math::
      \ell_t = \log h_t = \operatorname{logaddexp}(\log a_t + \ell_{t-1},\ \log b_t),
      \qquad \ell_{-1} = \log h_0 \ (-\infty \text{ if None}),

    minGRU's numerically stable form (Feng et al. 2024, "Were RNNs all we needed?"), where
    ``log a = -softplus(k)`` and ``log b = log(1 - z) + log h~`` come straight from the
    pre-activations. ``-inf`` is zero: ``log_b = -inf`` means ``b = 0``, ``log_a = -inf`` a
    reset. The derivative rule is a ``jax.custom_jvp`` whose tangent is a linear recurrence,

    .. math::
      d\ell_t = w_t\, (d\ell_{t-1} + d\log a_t) + v_t\, d\log b_t, \quad
      w_t = e^{\log a_t + \ell_{t-1} - \ell_t},\ v_t = e^{\log b_t - \ell_t},

    run by the same scan as :func:`linear_scan` (forward mode works; reverse mode is its
    transpose). The backward pass keeps the inputs and the output (``w`` and ``v`` are
    recomputed). Where ``h_t = 0`` exactly (``-inf``), the tangent is 0: no NaN gradients.
    Mixed shardings under Explicit mesh axes and an empty time axis are handled as in
    :func:`linear_scan`.

    Args:
      log_a: ``log`` of the decays, shape ``[..., T, ...]``, or broadcastable with
        ``broadcast=True`` (e.g. ``[D]``, time-invariant).
      log_b: ``log`` of the inputs, shape ``[..., T, ...]``.
      log_h0: ``log`` of the initial state, the result's shape without ``axis``; ``None``
        for ``h0 = 0``.
      axis: the time axis.
      reverse: run from the end of the axis to its start.
      broadcast: allow NumPy broadcasting of the inputs.
      mesh_axis: as in :func:`linear_scan` (sequence sharding).
      algorithm: as in :func:`linear_scan` (its table ``log_linear_scan.ALGORITHMS`` is the
        same).

    Returns:
      ``log h``, the shape of ``log_a`` and ``log_b``, real floating dtype (integers promote to
      the default float dtype; 16-bit inputs accumulate in float32).

    Raises:
      ValueError, TypeError: as :func:`linear_scan`; complex inputs are a ``TypeError``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from hadamard_jax import log_linear_scan
      >>> a, b = jnp.array([0.5, 0.5, 0.5]), jnp.array([1.0, 2.0, 0.0])
      >>> jnp.exp(log_linear_scan(jnp.log(a), jnp.log(b)))
      Array([1.  , 2.5 , 1.25], dtype=float32)
    """
    op = "log_linear_scan"
    cfg, arrays = _config(
        op,
        log_a,
        log_b,
        log_h0,
        ("log_a", "log_b", "log_h0"),
        axis=axis,
        reverse=reverse,
        broadcast=broadcast,
        mesh_axis=mesh_axis,
        algorithm=algorithm,
        allow_complex=False,
    )
    return _log_scan_jit(cfg, *arrays)


# The per-backend table and its chooser, reachable from the public functions (``algorithm=``).
for _fn in (linear_scan, log_linear_scan):
    _fn.ALGORITHMS = ALGORITHMS  # pyright: ignore[reportFunctionMemberAccess]
    _fn.choose_algorithm = choose_algorithm  # pyright: ignore[reportFunctionMemberAccess]
del _fn
