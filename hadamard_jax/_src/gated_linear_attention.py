r"""Gated linear attention: a matrix state gated element-wise, computed chunk by chunk.

.. math::
  S_t = \operatorname{diag}(e^{\log g_t})\, S_{t-1} + k_t v_t^\top, \qquad
  o_t = \text{scale}\cdot S_t^\top q_t,

with ``S_t`` of shape ``[K, V]`` per batch and head: GLA (Yang et al. 2024, a gate per key
dimension) or, with one gate per head, Mamba2's SSD and RetNet/lightning attention.

**The chunkwise-parallel form.** The time axis is cut into chunks of ``C = chunk_size`` tokens
(the end padded with zero ``k, v`` and gate 0, which leave the state unchanged). Sums of
log-gates are cumulative sums over ranges of positions; the only differences taken are of
in-chunk sums of finite, non-reset gates, where the result is ``<= 0`` for gates ``<= 0`` (no
``exp`` of a positive sum, no ``-inf - (-inf)``), and a reset in a range is a mask. Then,
per chunk:

* ``Qa_i = q_i * exp(sum_{s <= m <= i} log g_m)`` (the decay from the chunk's start ``s``),
* ``Ke_j = k_j * exp(sum_{j < m <= e} log g_m)`` (the decay to its end ``e``),
* ``U = Ke^T v``, ``gamma = exp(sum log g)``: the chunk's state update ``S' = gamma S + U``,
* the diagonal block ``A_ij = sum_K q_i k_j exp(sum_{j < m <= i} log g_m)`` for ``j <= i``,
  ``Od = A v``: for a gate per head from the ``[C, C]`` pairwise decays; for a gate per key
  dimension as one matmul of ``q e^{cs - mid}`` and ``k e^{mid - cs}`` (``cs`` the in-chunk
  cumulative sum, ``mid`` the middle of its range) when no chunk holds a reset and its
  log-decays span at most ``-log(tiny) / 2`` (43 in float32), else from the exact
  ``[C, C, K]`` pairwise decays, a few blocks at a time (a ``lax.cond`` per chunk).

One ``lax.scan`` over the chunks runs it: each step slices its chunk out of the inputs, computes
the quantities above, emits ``o = scale * (Qa S + Od)`` and steps the state (an element-wise
update of ``[B, H, K, V]``), so one chunk's quantities are live at a time. Gates
``log g <= log(tiny)`` (``-inf`` included) are exact resets: ``exp`` of them is 0 in the compute
dtype anyway.

**The rule** (:mod:`hadamard_jax._src.rules`): a ``jax.custom_jvp`` whose tangent is computed
chunkwise and is linear in the tangents: a scan over the chunks carrying ``dS``, whose body
(under ``jax.checkpoint``) takes the chunk quantities' tangents (``jax.jvp`` of the per-chunk
function), emits ``do = scale (dQa S + Qa dS + dOd)`` and steps
``dS' = gamma dS + (dgamma S + dU)``. The whole tangent is evaluated under ``jax.checkpoint`` with
the states at the chunk starts ``[T/C, B, H, K, V]`` as the only residual besides the inputs:
reverse mode (JAX's transpose of the tangent, a reverse scan) recomputes one chunk's quantities
at a time and never keeps per-token states or attention matrices.

**Sequence sharding** (:func:`hadamard_jax._src.chunked.sharded`): a shard's tokens map the
state ``S`` to ``diag(exp(sum log g)) S + S_local``; :func:`_carry` computes that pair in one
contraction, the pairs of all shards are exchanged, and :func:`_gla` (the op and its rule) runs
on each shard from its incoming state.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from hadamard_jax._src import activations, checks, chunked, rules

OP = "gated_linear_attention"
STEP_OP = "gated_linear_attention_step"


class _Config(NamedTuple):
    """Everything static about one call (hashable: a ``nondiff_argnum`` and a jit key)."""

    length: int  # T, unpadded
    chunk: int  # C
    scalar: bool  # one gate per head ([B, T, H]) rather than per key dimension
    scale: float


def _reset_floor(dtype) -> float:
    """``log`` of the smallest normal number of ``dtype``: gates at or below it are resets."""
    return float(np.log(np.finfo(dtype).tiny))


# --- layout (the shared chunk layout: :mod:`hadamard_jax._src.chunked`) ---------------------------


def _padded_length(cfg: _Config) -> int:
    return chunked.num_chunks(cfg.length, cfg.chunk) * cfg.chunk


def _to_blocks(cfg: _Config, x: jax.Array) -> jax.Array:
    """``[B, T, H, ...]`` -> ``[N, B, H, C, ...]`` (chunk major), padded with zeros."""
    return chunked.to_blocks(x, cfg.length, cfg.chunk)


def _from_blocks(cfg: _Config, x: jax.Array) -> jax.Array:
    """``[N, B, H, c, V]`` -> ``[B, T, H, V]`` (the padding sliced off)."""
    return chunked.from_blocks(x, cfg.length)


def _gate_blocks(cfg: _Config, log_g: jax.Array) -> jax.Array:
    """``log_g`` as ``[N, B, H, C, G]`` with ``G = 1`` (scalar gate) or ``K``."""
    if cfg.scalar:
        log_g = log_g[..., None]
    return _to_blocks(cfg, log_g)


# --- the per-chunk quantities ---- ----------------------------------------------------------------


def _exclusive_reverse_cumsum(x: jax.Array, axis: int) -> jax.Array:
    """``y_j = sum_{m > j} x_m`` along ``axis``, by shifting (no subtraction: ``-inf`` is safe)."""
    shifted = jnp.concatenate(
        [
            lax.slice_in_dim(x, 1, None, axis=axis),
            jnp.zeros_like(lax.slice_in_dim(x, 0, 1, axis=axis)),
        ],
        axis=axis,
    )
    return jnp.flip(jnp.cumsum(jnp.flip(shifted, axis), axis=axis), axis)


def _span_limit(dtype) -> float:
    """The largest span of log-decays inside a chunk that the factorised diagonal takes.

    Half of ``-log(tiny)`` (43 in float32): ``exp`` of each factor's exponent, at most half the
    span from the chunk's midpoint, stays far from overflow and from denormals.
    """
    return -0.5 * _reset_floor(dtype)


def _diagonal_pairwise(q, k, g, floor: float, scalar: bool):
    """The diagonal blocks from the pairwise decays ``exp(cs_i - cs_j)``: exact for any gates.

    The log-decay from ``j`` to ``i`` is the sum of the gates in ``(j, i]``: ``cs_i - cs_j`` of
    the cumulative sum of the non-reset gates (finite numbers), and ``-inf`` where a reset lies
    in ``(j, i]`` or ``j > i``. A ``[..., c, c, G]`` tensor: ``G = K`` costs ``c K`` ``exp`` per
    token.
    """
    c = g.shape[-2]
    reset = g <= floor
    cs = jnp.cumsum(jnp.where(reset, jnp.zeros_like(g), g), axis=-2)
    resets = jnp.cumsum(reset.astype(jnp.int32), axis=-2)
    same = resets[..., :, None, :] == resets[..., None, :, :]  # [..., i, j, G]
    causal = jnp.broadcast_to(
        (jnp.arange(c)[:, None] >= jnp.arange(c)[None, :])[:, :, None], same.shape
    )
    expo = jnp.where(same & causal, cs[..., :, None, :] - cs[..., None, :, :], -jnp.inf)
    decay = jnp.exp(expo)
    if scalar:
        return jnp.einsum("...ik,...jk->...ij", q, k) * decay[..., 0]
    return jnp.sum(q[..., :, None, :] * k[..., None, :, :] * decay, axis=-1)


def _diagonal_factorised(q, k, g):
    """The diagonal blocks as one matmul: ``(q_i e^{cs_i - m}) . (k_j e^{m - cs_j})``, masked.

    ``m`` is the midpoint of each chunk's range of ``cs`` (per key dimension), so each
    factor's exponent is at most half the span: valid when there is no reset and the span is
    below :func:`_span_limit` (checked by the caller). ``2 C K`` ``exp`` per chunk.
    """
    c = g.shape[-2]
    cs = jnp.cumsum(g, axis=-2)
    mid = lax.stop_gradient(0.5 * (jnp.max(cs, axis=-2) + jnp.min(cs, axis=-2)))[..., None, :]
    a = jnp.einsum("...ik,...jk->...ij", q * jnp.exp(cs - mid), k * jnp.exp(mid - cs))
    causal = jnp.broadcast_to(jnp.arange(c)[:, None] >= jnp.arange(c)[None, :], a.shape)
    return jnp.where(causal, a, jnp.zeros_like(a))


def _diagonal(q, k, g, floor: float, scalar: bool):
    """The in-chunk attention ``A_ij = sum_K q_i k_j exp(log-decay j -> i)``, ``j <= i``.

    ``q, k: [..., c, K]``, ``g: [..., c, G]``; returns ``[..., c, c]``. One gate per head: the
    pairwise decays (``[c, c]``, cheap). A gate per key dimension: the factorised matmul when
    every chunk is free of resets and its log-decays span less than :func:`_span_limit`
    (a ``lax.cond`` per call of this function: per chunk in the scans), else the exact
    pairwise form.
    """
    if scalar:
        return _diagonal_pairwise(q, k, g, floor, scalar)
    cs = jnp.cumsum(g, axis=-2)
    span = jnp.max(cs, axis=-2) - jnp.min(cs, axis=-2)
    safe = jnp.all(g > floor) & jnp.all(span <= _span_limit(g.dtype))
    return lax.cond(safe, _diagonal_factorised, functools.partial(_pairwise_map, floor), q, k, g)


#: Elements of the ``[c, c, K]`` decays the pairwise fallback holds at once (1 MiB in float32).
PAIRWISE_ELEMENTS = 2**18


def _pairwise_map(floor: float, q, k, g):
    """:func:`_diagonal_pairwise` for a gate per key dimension, a few blocks at a time.

    A ``lax.map`` over the chunks of every batch row and head with a checkpointed body, so
    neither the forward pass nor the backward pass holds more than about
    :data:`PAIRWISE_ELEMENTS` of ``[c, c, K]`` decays.
    """
    lead, (c, kd) = q.shape[:-2], q.shape[-2:]
    flat = [x.reshape(-1, *x.shape[-2:]) for x in (q, k, g)]
    batch = max(1, min(flat[0].shape[0], PAIRWISE_ELEMENTS // (c * c * kd)))
    body = jax.checkpoint(lambda x: _diagonal_pairwise(x[0], x[1], x[2], floor, False))
    return lax.map(body, tuple(flat), batch_size=batch).reshape(*lead, c, c)


def _chunk_terms(floor: float, scalar: bool, q, k, v, g):
    """``(Qa, U, gamma, Od)`` of every chunk (``[N, B, H, C, .]`` inputs).

    ``Qa: [..., c, K]``, ``U: [..., K, V]``, ``gamma: [..., G, 1]``, ``Od: [..., c, V]``.
    """
    g_inf = jnp.where(g <= floor, jnp.full_like(g, -jnp.inf), g)
    qa = q * jnp.exp(jnp.cumsum(g_inf, axis=-2))
    ke = k * jnp.exp(_exclusive_reverse_cumsum(g_inf, axis=-2))
    u = jnp.einsum("...ck,...cv->...kv", ke, v)
    gamma = jnp.exp(jnp.sum(g_inf, axis=-2))[..., None]
    od = jnp.einsum("...ij,...jv->...iv", _diagonal(q, k, g, floor, scalar), v)
    return qa, u, gamma, od


# --- states -------------------------------------------------------------------------------------


def _states(u, gamma, h0):
    """The states before every chunk, ``[N, B, H, K, V]``, and the final state.

    ``H_0 = h0``, ``H_{n+1} = gamma_n H_n + U_n``: one ``lax.scan`` of element-wise updates.
    """

    def step(h, x):
        gam, un = x
        return gam * h + un, h

    last, hs = lax.scan(step, h0, (gamma, u))
    return hs, last


# --- the op and its rule ------------------------------------------------------------------------


def _forward_batched(cfg: _Config, q, k, v, g, h0):
    """``(o, final_state, chunk states)``, every chunk's quantities at once.

    The chunked algorithm in plain JAX (no rule; the benchmark's "chunked, plain autodiff"
    baseline): all chunks' ``Qa, U, gamma, Od`` as batched matmuls, then a ``lax.scan`` of
    element-wise state updates. Holds every chunk's quantities.
    """
    floor = _reset_floor(q.dtype)
    qb, kb, vb = (_to_blocks(cfg, x) for x in (q, k, v))
    gb = _gate_blocks(cfg, g)
    qa, u, gamma, od = _chunk_terms(floor, cfg.scalar, qb, kb, vb, gb)
    hs, last = _states(u, gamma, h0)
    o = cfg.scale * (jnp.einsum("...ck,...kv->...cv", qa, hs) + od)
    return _from_blocks(cfg, o), last, hs


def _padded(cfg: _Config, x: jax.Array) -> jax.Array:
    """``[B, T, H, ...]`` padded with zeros to whole chunks along time."""
    return chunked.padded(x, cfg.length, cfg.chunk)


def _chunk_of(cfg: _Config, x: jax.Array, n) -> jax.Array:
    """Chunk ``n`` of a padded ``[B, Tp, H, ...]`` array as ``[B, H, C, ...]``."""
    return chunked.chunk_of(x, n, cfg.chunk)


def _gates(cfg: _Config, g: jax.Array) -> jax.Array:
    """``log_g`` as ``[B, T, H, G]``."""
    return g[..., None] if cfg.scalar else g


def _forward(cfg: _Config, q, k, v, g, h0):
    """``(o, final_state, chunk states [N, B, H, K, V])`` of compute-dtype inputs.

    A ``lax.scan`` over the chunks: each step slices its chunk out of the inputs, computes its
    quantities (:func:`_chunk_terms`), its output ``scale (Qa S + Od)`` and the next state.
    """
    floor = _reset_floor(q.dtype)
    xs = [_padded(cfg, x) for x in (q, k, v, _gates(cfg, g))]

    def step(state, n):
        qa, u, gamma, od = _chunk_terms(floor, cfg.scalar, *(_chunk_of(cfg, x, n) for x in xs))
        o = cfg.scale * (jnp.einsum("...ck,...kv->...cv", qa, state) + od)
        return gamma * state + u, (o, state)

    n = _padded_length(cfg) // cfg.chunk
    last, (o, hs) = lax.scan(step, h0, jnp.arange(n))
    return _from_blocks(cfg, o), last, hs


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _gla(cfg: _Config, q, k, v, g, h0):
    o, last, _ = _forward(cfg, q, k, v, g, h0)
    return o, last


def _tangent(cfg: _Config, primals, tangents):
    """``(do, dS_final)``: linear in ``tangents`` (``None`` for a zero tangent).

    A ``lax.scan`` over the chunks carrying ``dS``; its body, under ``jax.checkpoint``, takes
    the tangents of one chunk's quantities (``jax.jvp`` of :func:`_chunk_terms`), emits
    ``do = scale (dQa S + Qa dS + dOd)`` and steps ``dS' = gamma dS + (dgamma S + dU)``. JAX's
    transpose of it (reverse mode) is a reverse scan that recomputes one chunk at a time.
    """
    q, k, v, g, h0, hs = primals
    floor = _reset_floor(q.dtype)
    xs = [_padded(cfg, x) for x in (q, k, v, _gates(cfg, g))]
    live = [i for i in range(4) if tangents[i] is not None]
    dblocks = tuple(
        _gate_blocks(cfg, tangents[i]) if i == 3 else _to_blocks(cfg, tangents[i]) for i in live
    )
    dh0 = jnp.zeros_like(h0) if tangents[4] is None else tangents[4]

    def body(ds, x):
        n, dxb, s = x
        xb = tuple(_chunk_of(cfg, a, n) for a in xs)
        full = [jnp.zeros_like(a) for a in xb]
        for i, t in zip(live, dxb):
            full[i] = t
        (qa, _, gamma, _), (dqa, du, dgamma, dod) = jax.jvp(
            functools.partial(_chunk_terms, floor, cfg.scalar), xb, tuple(full)
        )
        do = cfg.scale * (
            jnp.einsum("...ck,...kv->...cv", dqa, s)
            + jnp.einsum("...ck,...kv->...cv", qa, ds)
            + dod
        )
        return gamma * ds + (dgamma * s + du), do

    dlast, do = lax.scan(jax.checkpoint(body), dh0, (jnp.arange(hs.shape[0]), dblocks, hs))
    return _from_blocks(cfg, do), dlast


@functools.partial(_gla.defjvp, symbolic_zeros=True)
def _gla_jvp(cfg, primals, tangents):
    o, last, hs = _forward(cfg, *primals)
    live = [i for i, t in enumerate(tangents) if not rules.is_zero(t)]

    def fn(xs, live_tangents):
        full: list[Any] = [None] * len(tangents)
        for i, t in zip(live, live_tangents):
            full[i] = t
        return _tangent(cfg, xs, full)

    if not live:
        return (o, last), (jnp.zeros_like(o), jnp.zeros_like(last))
    dout = jax.checkpoint(fn)([*primals, hs], [tangents[i] for i in live])
    return (o, last), dout


_gla_jit = jax.jit(_gla, static_argnums=(0,))


# --- sequence sharding (:func:`hadamard_jax._src.chunked.sharded`) -------------------------------


def _carry(cfg: _Config, q, k, v, g):
    """One shard's ``(decay, S_local)``, the affine map its tokens apply to the state.

    ``decay = exp(sum_t log g_t)``, ``[B, H, G, 1]``; ``S_local = sum_t (k_t * exp(sum_{m > t}
    log g_m)) v_t^T``, ``[B, H, K, V]``: the state reached from zero, as one contraction over
    the shard's tokens (every exponent a sum of gates, ``<= 0`` for decaying gates; a reset is
    ``-inf``, an exact 0). ``q`` is not used.
    """
    del q
    floor = _reset_floor(k.dtype)
    g = _gates(cfg, g)
    g_inf = jnp.where(g <= floor, jnp.full_like(g, -jnp.inf), g)
    to_end = jnp.exp(_exclusive_reverse_cumsum(g_inf, axis=1))
    s = jnp.einsum("bthk,bthv->bhkv", k * to_end, v)
    return jnp.exp(jnp.sum(g_inf, axis=1))[..., None], s


def _decay(decay, h):
    return decay * h


def _gla_sharded(cfg: _Config, shards: chunked.Shards, q, k, v, g, h0):
    """``(o, final_state)`` with the time axis split over ``shards``: each shard's
    ``(decay, S_local)`` exchanged, then :func:`_gla` (the rule) on each shard from its incoming
    state. ``T / n`` need not be a multiple of the chunk size (each shard pads its own end)."""
    span = cfg.length // shards.devices
    local_cfg = cfg._replace(length=span, chunk=min(cfg.chunk, span))

    def local(q, k, v, g, h):
        return _gla(local_cfg, q, k, v, g, h)[0]

    carry = functools.partial(_carry, local_cfg)
    return chunked.sharded(shards, carry, _decay, local, [q, k, v, g], h0)


_gla_sharded_jit = jax.jit(_gla_sharded, static_argnums=(0, 1))


# --- argument checks ----------------------------------------------------------------------------


def _shape_text(names, arrays) -> str:
    return ", ".join(f"{n}.shape={tuple(jnp.shape(x))}" for n, x in zip(names, arrays))


def _check(op: str, q, k, v, log_g, state, state_name: str, *, time_axis: bool):
    """Checks the arrays; returns them (unwrapped) with ``(B, [T,] H, K, V)`` and ``scalar``."""
    names = ["q", "k", "v", "log_g"] + ([state_name] if state is not None else [])
    arrays = checks.real_arrays(
        [q, k, v, log_g] + ([state] if state is not None else []), names, op
    )
    q, k, v, log_g = arrays[:4]
    state = arrays[4] if state is not None else None
    rank = 4 if time_axis else 3
    layout = "[B, T, H, K]" if time_axis else "[B, H, K]"
    if jnp.ndim(q) != rank:
        raise ValueError(f"{op}: q must have rank {rank}, {layout}, got q.shape={jnp.shape(q)}.")
    qs = tuple(jnp.shape(q))
    if tuple(jnp.shape(k)) != qs:
        raise ValueError(f"{op}: k must have q's shape {layout}: {_shape_text(names[:2], [q, k])}.")
    vs = tuple(jnp.shape(v))
    if jnp.ndim(v) != rank or vs[:-1] != qs[:-1]:
        raise ValueError(
            f"{op}: v must be {layout[:-2]}V] with q's leading dimensions: "
            f"{_shape_text(['q', 'v'], [q, v])}."
        )
    gs = tuple(jnp.shape(log_g))
    if gs == qs:
        scalar = False
    elif gs == qs[:-1]:
        scalar = True
    else:
        raise ValueError(
            f"{op}: log_g must be q's shape {qs} (a gate per key dimension) or {qs[:-1]} (one "
            f"per head), got log_g.shape={gs}."
        )
    b, h, kd, vd = qs[0], qs[-2], qs[-1], vs[-1]
    if state is not None and tuple(jnp.shape(state)) != (b, h, kd, vd):
        raise ValueError(
            f"{op}: {state_name} must be [B, H, K, V] = {(b, h, kd, vd)}, got "
            f"{state_name}.shape={tuple(jnp.shape(state))}."
        )
    return (q, k, v, log_g, state), scalar


def _dtypes(q, k, v, log_g, state) -> tuple[np.dtype, np.dtype, np.dtype]:
    """``(out, compute, state)`` dtypes: ``o`` in ``result_type(q, k, v, log_g)`` (floating),
    accumulated in float32 for 16-bit inputs; the state in the compute dtype promoted with
    ``initial_state``'s."""
    out, _ = checks.result_type([q, k, v, log_g], floating=True)
    compute = activations.compute_dtype(out)
    if state is not None:
        compute = jnp.promote_types(compute, jnp.result_type(state))
    return out, jnp.dtype(compute), jnp.dtype(compute)


def _scale(scale, kd: int, op: str) -> float:
    if scale is None:
        return kd**-0.5
    return checks.static_real(scale, "scale", op)


# --- the public functions -----------------------------------------------------------------------


def gated_linear_attention(
    q: ArrayLike,
    k: ArrayLike,
    v: ArrayLike,
    log_g: ArrayLike,
    *,
    initial_state: ArrayLike | None = None,
    scale: float | None = None,
    chunk_size: int = 64,
    mesh_axis: str | tuple[str, ...] | None = None,
) -> tuple[jax.Array, jax.Array]:
    r"""Gated linear attention, chunkwise-parallel, with a forward- and reverse-mode rule.

    .. math::
      S_t = \operatorname{diag}\big(e^{\log g_t}\big)\, S_{t-1} + k_t v_t^\top, \qquad
      o_t = \text{scale}\cdot S_t^\top q_t, \qquad S_{-1} = S_0,

    per batch and head, with a matrix state ``S_t`` of shape ``[K, V]``. ``log_g`` of shape
    ``[B, T, H, K]`` is GLA's gate per key dimension (Yang et al. 2024); ``[B, T, H]`` is one gate
    per head: Mamba2's SSD (``log_g = dt * A``) or RetNet/lightning attention (a constant).

    The time axis runs in chunks of ``chunk_size`` tokens: attention-like matmuls inside a
    chunk, with decays from sums of log-gates over ranges of positions (never ``exp`` of a
    positive sum, never ``-inf - (-inf)``), and a ``lax.scan`` of the state across chunks,
    accumulated in float32 for 16-bit inputs. A gate ``log_g = -inf`` (or below ``log`` of the
    smallest normal number of the compute dtype) is an exact reset: ``S_t = k_t v_t^T``. Positive
    gates (a growing state) are computed as written; nothing overflows for ``log_g <= 0``, but
    ``exp`` of a large positive sum over a chunk can (as the recurrence itself would).

    The derivative rule is a ``jax.custom_jvp`` whose tangent is computed chunkwise and is
    linear in the tangents, evaluated under ``jax.checkpoint``: ``jvp``, ``jacfwd``,
    ``hessian`` and forward-over-reverse work, and reverse mode keeps only the inputs and the
    states at the chunk starts (``[T / chunk_size, B, H, K, V]``), never per-token states or
    the chunks' attention matrices.

    Sequence sharding: when the time axis is split over a mesh axis, each device runs the
    chunks of its part from a zero state and only one ``[B, H, K, V]`` state and one decay
    ``exp(sum log g)`` (``[B, H, K]``, or ``[B, H]``) per device move between devices (an
    all-reduce of ``n`` such pairs); each device then reruns its chunks from its incoming state
    (the one-device algorithm and rule, with ``initial_state`` entering the first device).
    It is used when ``q`` (else ``k``, else ``v``) is sharded along ``T`` under Explicit mesh
    axes (detected from its type), or when ``mesh_axis`` names the mesh axis (under
    ``jax.set_mesh``; Auto axes), as :func:`~hadamard_jax.linear_scan` does. ``T`` must be a
    multiple of the number of devices; ``T / n`` need not be a multiple of ``chunk_size``.
    Derivatives of any order work as on one device, and their communication is again ``n``
    state-sized pairs.

    Args:
      q: queries, ``[B, T, H, K]``.
      k: keys, ``[B, T, H, K]``.
      v: values, ``[B, T, H, V]``.
      log_g: log-gates, ``[B, T, H, K]`` or ``[B, T, H]``; ``<= 0`` for a decaying state.
      initial_state: ``S_0``, ``[B, H, K, V]``; ``None`` for zeros.
      scale: the output scale, a static number; ``None`` for ``K ** -0.5``.
      chunk_size: tokens per chunk, a static positive int; ``T`` need not be a multiple of it.
        A gate per key dimension with resets (``-inf``) or log-decays spanning more than 43
        inside a chunk takes an exact but slower path (``[C, C, K]`` decays): a smaller
        ``chunk_size`` makes it cheaper.
      mesh_axis: the mesh axis name (or tuple of names) the time axis is split over, in the
        mesh set by ``jax.set_mesh``; ``None`` detects it under Explicit mesh axes.

    Returns:
      ``(o, final_state)``: ``o`` of shape ``[B, T, H, V]`` in ``result_type(q, k, v, log_g)``
      (promoted to floating), ``final_state = S_{T-1}`` of shape ``[B, H, K, V]`` in the compute
      dtype (float32 for 16-bit inputs, promoted with ``initial_state``'s dtype).

    Raises:
      TypeError: an argument is not a real array (complex dtypes are refused); ``chunk_size`` is
        not an int; ``scale`` is not a static number; ``mesh_axis`` is not a name.
      ValueError: ``q`` is not rank 4; ``k``, ``v``, ``log_g`` or ``initial_state`` do not match
        ``q``'s shape; ``chunk_size < 1``; ``scale`` is not finite; ``mesh_axis`` is given
        without a mesh or is not an axis of it; the sharded ``T`` is not a multiple of the
        number of devices.

    Examples:
      >>> import jax.numpy as jnp
      >>> from hadamard_jax import gated_linear_attention
      >>> q = k = jnp.ones((1, 3, 1, 2))
      >>> v = jnp.arange(3.0).reshape(1, 3, 1, 1)
      >>> log_g = jnp.log(jnp.full((1, 3, 1), 0.5))  # one gate per head
      >>> o, state = gated_linear_attention(q, k, v, log_g, scale=1.0)
      >>> o[0, :, 0, 0]  # 2 * (0, 0 / 2 + 1, 1 / 2 + 2)
      Array([0., 2., 5.], dtype=float32)
      >>> state.shape
      (1, 1, 2, 1)

    See also:
      :func:`gated_linear_attention_step` for one token (decoding).
    """
    op = OP
    chunk = checks.static_int(chunk_size, "chunk_size", op, lo=1)
    (q, k, v, log_g, h0), scalar = _check(
        op, q, k, v, log_g, initial_state, "initial_state", time_axis=True
    )
    b, t, h, kd = jnp.shape(q)
    vd = jnp.shape(v)[-1]
    scale_ = _scale(scale, kd, op)
    out, compute, state_dtype = _dtypes(q, k, v, log_g, h0)
    q, k, v, log_g = (jnp.asarray(x).astype(compute) for x in (q, k, v, log_g))
    h0 = jnp.zeros((b, h, kd, vd), compute) if h0 is None else jnp.asarray(h0).astype(compute)
    shards = chunked.time_shards(op, [q, k, v], mesh_axis, t)
    if t == 0:
        return jnp.zeros((b, 0, h, vd), out), h0.astype(state_dtype)
    cfg = _Config(t, min(chunk, t), scalar, scale_)
    if shards is not None:
        o, last = _gla_sharded_jit(cfg, shards, q, k, v, log_g, h0)
    else:
        o, last = _gla_jit(cfg, q, k, v, log_g, h0)
    return o.astype(out), last.astype(state_dtype)


def gated_linear_attention_step(
    q: ArrayLike,
    k: ArrayLike,
    v: ArrayLike,
    log_g: ArrayLike,
    state: ArrayLike,
    *,
    scale: float | None = None,
) -> tuple[jax.Array, jax.Array]:
    r"""One token of :func:`gated_linear_attention` (decoding): ``(o_t, S_t)`` from ``S_{t-1}``.

    .. math::
      S_t = \operatorname{diag}\big(e^{\log g_t}\big)\, S_{t-1} + k_t v_t^\top, \qquad
      o_t = \text{scale}\cdot S_t^\top q_t.

    Stepping it over ``t`` gives the parallel form's ``o`` and ``final_state`` (to rounding).
    It is a handful of element-wise products and a contraction, differentiated by JAX as
    written (nothing is worth saving for one token).

    Args:
      q: ``[B, H, K]``.
      k: ``[B, H, K]``.
      v: ``[B, H, V]``.
      log_g: ``[B, H, K]`` or ``[B, H]`` (one gate per head).
      state: ``S_{t-1}``, ``[B, H, K, V]``.
      scale: as in :func:`gated_linear_attention`; ``None`` for ``K ** -0.5``.

    Returns:
      ``(o, new_state)``: ``o`` of shape ``[B, H, V]`` and dtype as in
      :func:`gated_linear_attention`, ``new_state`` of shape ``[B, H, K, V]`` in the compute
      dtype promoted with ``state``'s.

    Raises:
      TypeError, ValueError: as :func:`gated_linear_attention`.

    Examples:
      >>> import jax.numpy as jnp
      >>> from hadamard_jax import gated_linear_attention_step
      >>> state = jnp.zeros((1, 1, 2, 1))
      >>> q = k = jnp.ones((1, 1, 2))
      >>> log_g = jnp.zeros((1, 1))
      >>> o, state = gated_linear_attention_step(q, k, jnp.ones((1, 1, 1)), log_g, state, scale=1.0)
      >>> o[0, 0], state[0, 0, :, 0]
      (Array([2.], dtype=float32), Array([1., 1.], dtype=float32))
    """
    op = STEP_OP
    arrays, scalar = _check(op, q, k, v, log_g, state, "state", time_axis=False)
    scale_ = _scale(scale, jnp.shape(arrays[0])[-1], op)
    out, compute, _ = _dtypes(*arrays)
    return _step_jit(scalar, scale_, out, *(jnp.asarray(x).astype(compute) for x in arrays))


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _step_jit(scalar: bool, scale: float, out, q, k, v, log_g, state):
    decay = jnp.exp(log_g)[..., None] if scalar else jnp.exp(log_g)
    state = decay[..., None] * state + k[..., :, None] * v[..., None, :]
    o = scale * jnp.einsum("bhk,bhkv->bhv", q, state)
    return o.astype(out), state
